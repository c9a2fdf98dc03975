r"""Joint vs greedy training of the FaceCraft cascade (paper §4.3), several seeds each.

  python -m experiments.ablate --config experiments/configs/ablation_joint_vs_greedy.py \
      --workdir runs/ablation --config.data_root ../shared/data

Every run trains the SAME model on the SAME crops (one shared data cache) for the SAME number of
samples (budget.num_steps x budget.batch_size), from the same seed's initial parameters:

  greedy                   x12; freeze; filter; x24; freeze; filter; x48 (cascade_greedy)
  joint_hard               the paper's threshold-control layers (cascade_joint, gate hard)
  joint_sigmoid            soft gates σ((s − t)/T), T annealed over the run, learning from the
                           cascade's final decision (gate.gradient "decision", losses.joint_loss)
  joint_straight_through   hard forward, sigmoid backward, same decision term
  joint_*_gated_loss       (optional) the soft gates learning from the gated losses' own
                           gradient: the formulation that collapsed in the first ablation
  joint_from_greedy        the paper's recipe: greedy for from_greedy_fraction of the budget, then
                           joint (gate hard) from those branches for the rest: same total samples
  greedy_full              greedy with the whole budget for EACH stage: 3x the samples (a joint
                           step updates all three branches, a greedy step one), about the compute
                           of one joint run

`train_overrides` holds config values (nested as in the joint / greedy config files) set for every
run on top of those files.

In the wild (issue #14), `:wild` (`:wild,extra=DIR` adds the photos of ../shared/tools/
wider_extra.py): every run trains on facecraft_wider.py's data (the WIDER subset's train split,
Caltech and 300-W landmark faces, non-face scenes) with its model (P-Net-wide x12, landmark head);
each run is scored on the WIDER subset's val split (official easy / medium / hard AP: the
selection set) and on CMU+MIT (the test set: its AP and ROC are the table's main columns).

Evaluation (default): the CMU+MIT detection
AP / TPR at eval.fp_points FP (IoU eval.iou) through the inference engine, and each stage's pass
rate on the validation crops at the same recall (eval.pass_recalls: x12 alone, then x12 + x24).
"""

from __future__ import annotations

import ml_collections

VARIANTS = ("greedy", "joint_hard", "joint_sigmoid", "joint_straight_through",
            "joint_from_greedy", "greedy_full")


# facecraft_wider.py's data settings a wild run takes (root, cache and seed stay the ablation's).
NOT_COPIED = ("root", "cache_dir", "seed")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """arg "smoke": a two-minute check on the embedded synthetic data (no ../shared needed);
  "wild" (+ ",extra=DIR"): the in-the-wild ablation of issue #14."""
  words = [w for w in arg.split(",") if w]
  extra = [w for w in words if w.startswith("extra=")]
  words = [w for w in words if not w.startswith("extra=")]
  c = ml_collections.ConfigDict()
  c.variants = VARIANTS
  c.seeds = (0, 1)
  c.data_root = "../shared/data"
  c.data_cache_dir = ""           # "" = <workdir>/data, one crop cache shared by every run
  c.from_greedy_fraction = 0.5    # joint_from_greedy: this share of the budget is greedy

  c.budget = ml_collections.ConfigDict()
  c.budget.num_steps = 700        # CPU-sized (2 cores); the paper trains ~100x longer
  c.budget.batch_size = 128
  c.budget.lr_rates = (1e-2, 1e-3)
  c.budget.lr_drop_fraction = 0.8  # the lr drops after this share of each run

  # Keys of the joint / greedy config files set for every run (nested like the config files).
  c.train_overrides = ml_collections.ConfigDict(dict(
      optimizer=dict(clip_grad_norm=20.0),
      log_every=50,
      progress_bar=False,
      val=dict(detection=False),  # ablate evaluates afterwards: one compiled engine for all runs
  ))

  c.eval = ml_collections.ConfigDict()
  c.eval.iou = 0.5
  c.eval.fp_points = (10, 50, 100)
  c.eval.thresholds = (0.1, 0.003, 0.01)  # the engine's per-stage thresholds at test time
  c.eval.max_images = 0                   # CMU+MIT pictures (0 = all 130)
  c.eval.pass_recalls = (0.95, 0.90)      # recall kept after x12, after x12 + x24
  c.eval.roc_max_fp = 200
  # Detection sets scored per run (joint_cascade.add_evals presets), the first the selection set;
  # () = CMU+MIT only, from the joint config's val settings (the first ablation).
  c.eval.sets = ()
  c.eval.test_set = "cmu_mit"             # its AP / TPR / ROC fill the main columns
  c.eval.max_tiers = 1                    # > 1: overflowing pictures re-run with larger capacities

  if words == ["smoke"]:
    c.seeds = (0,)
    c.variants = ("greedy", "joint_hard")
    c.budget.num_steps = 12
    c.budget.batch_size = 16
    c.train_overrides.data = dict(source="embedded", embedded_images=8, embedded_val_images=4,
                                  embedded_scenes=4)
    c.train_overrides.log_every = 4
    c.train_overrides.val.batch_size = 64
    c.eval.max_images = 0
  elif words == ["wild"]:
    wild(c, extra[0].split("=", 1)[1] if extra else "")
  elif words:
    raise ValueError(f"unknown config argument {arg!r} (use '', 'smoke' or 'wild[,extra=DIR]')")
  return c


def wild(c: ml_collections.ConfigDict, extra: str) -> None:
  """Issue #14: facecraft_wider's data and model in every run, WIDER val + CMU+MIT scored."""
  from experiments.configs import facecraft_wider  # pylint: disable=g-import-not-at-top
  w = facecraft_wider.get_config(f"extra={extra}" if extra else "")
  c.train_overrides.data = {k: v for k, v in w.data.to_dict().items() if k not in NOT_COPIED}
  c.train_overrides.model = dict(x12_channels=tuple(w.model.x12_channels),
                                 landmarks=bool(w.model.landmarks))
  c.train_overrides.loss = dict(landmark_weight=float(w.loss.landmark_weight))
  c.seeds = (0, 1, 2)
  # 2,000 steps x 128 samples per run: the bundled model's round 1 moved its WIDER-val hard AP
  # most in its first few thousand steps; at ~0.75 s per joint step on 2 cores the 18 runs cost
  # ~7.5 h, sharded over sessions with --worker i/n.
  c.budget.num_steps = 2_000
  c.eval.sets = ("wider", "cmu_mit")
  c.eval.thresholds = (0.4, 0.2, 0.01)  # the bundled model's region: no capacity overflow
  c.eval.max_tiers = 3
