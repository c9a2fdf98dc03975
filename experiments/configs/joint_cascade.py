r"""FaceCraft joint cascade (paper §4): x12 / x24 / x48 trained at once through threshold gates.

  python -m experiments.train --config experiments/configs/joint_cascade.py \
      --workdir runs/joint --config.data.root ../shared/data

  --config experiments/configs/joint_cascade.py:sigmoid      gate mode (hard | sigmoid |
                                                             straight_through), default hard
  --config.gate.gradient loss                                soft gates learn from the gated
                                                             losses (collapses; see losses.py)
  --config experiments/configs/joint_cascade.py:hard,wider   + select on WIDER FACE val
                                                             (easy / medium / hard AP, evals.wider)
  --config.init.from_workdir runs/greedy                     start from separately trained branches
  --config experiments/configs/joint_cascade.py:smoke        a first try: small nets, few steps,
                                                             few images; trains and scores CMU+MIT
                                                             on a few pictures in ~2 min on CPU

Every knob is a config value: sections() holds the schedule's sections and their defaults (model,
data, gate, loss, init, val; their schema is facecraft/train/cascade/config.py); the recipe
below sets the run-level values. Data: Caltech WebFaces + 300-W faces (positives, part faces),
non-face scenes (negatives), CMU+MIT (validation only); see data_pipelines/training_sets.py.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common


def sections() -> ml_collections.ConfigDict:
  """Every knob of the cascade schedules with its default (greedy_cascade.py uses these too)."""
  c = ml_collections.ConfigDict()
  c.model = dict(x12_channels=(16, 32, 16), x24_channels=(28, 48, 64), x24_fc=128,
                 x48_channels=(32, 64, 64, 128), x48_fc=256,
                 fuse24=0, fuse48=0,        # 0: the paper (concatenation only)
                 dropout=0.25, landmarks=False)
  c.data = dict(
      root="../shared/data", source="auto",  # auto | real | embedded (synthetic, announced)
      train_sets=("caltech_webfaces", "300w_train"),  # folders declared by detection readers
      native_sets=(),               # "FORMAT:PATH:SPLIT" sets trained on their own boxes (WIDER)
      val_set="",                   # "FORMAT:PATH:SPLIT" for the crop validation; "": CMU+MIT
      cache_dir="", seed=0, size=48,
      box_scale=1.4,                # 1.4 matches CMU+MIT's boxes (data_pipelines/training_sets)
      rule_box_shape=(),            # (w, h, shift_y): reshape rule boxes to another convention
      extra_crops=(),               # CropSet .npz files added to the training crops (mined)
      mined_first_branch=0,         # first branch the extra crops train (0: all; 1: x24, x48 only)
      sampler="both",               # sliding | mtcnn | both
      max_images=0,                 # per training set; 0 = all
      min_face_size=20.0,           # faces smaller than this give no jittered crops
      pos_iou=0.8, part_iou=0.4, neg_iou=0.5,
      face_tries=20, jitter_shift=0.12, jitter_side=(0.8, 1.25),
      part_ratio=1.0, landmark_tries=0,
      sliding_stride=8, sliding_interval=5, sliding_min_scale=1 / 32, max_positives_per_image=0,
      positive_ratio=0.05, max_negatives=400_000,
      negatives_from_face_images=0.0, face_clearance=3.0,
      val_face_tries=10, val_negatives=20_000, val_max_images=0,
      flip_prob=0.5, brightness=0.0, contrast=0.0, saturation=0.0, grayscale_prob=0.0,
      rotation_deg=0.0, jpeg_prob=0.0, blur_prob=0.0, occlusion_prob=0.0,  # loader only
      workers=0, embedded_images=64, embedded_val_images=16, embedded_scenes=16)
  c.gate = dict(mode="hard", thresholds=(0.1, 0.003), space="logit", gradient="decision",
                decision_weight=1.0,
                temperature=dict(start=1.0, end=0.05, steps=10_000, kind="exponential"))
  c.loss = dict(lambdas=(1.0, 1.0, 1.0), box_weight=1.0, landmark_weight=0.0, beta=1.0,
                ohem_ratio=0.0)
  c.init = dict(from_workdir="", which="checkpoints")
  c.val = dict(batch_size=512,
               detection=True,      # launcher: CMU+MIT detection AP when facecraft.infer imports
               min_face_size=20.0, factor=0.709, thresholds=(0.1, 0.003, 0.01),
               capacities=(2048, 512, 128), max_tiers=1, stage1_nms="nms", max_images=0,
               iou=0.5, fp_points=(10, 50, 100), image_batch=4,
               buckets=())          # ((H, W), ...): fixed inference buckets; (): the default ladder
  return c


def recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Run-level settings shared by the joint and greedy configs (the same budget for both)."""
  config.seed = 0
  config.batch_size = 128
  config.num_steps = 30_000           # ~7 epochs of the default crops (paper: 5 to 10)
  config.log_every = 100
  config.lr.rates = (1e-3, 1e-4)      # paper: 0.001, then 0.0001
  config.lr.boundaries = (24_000,)
  config.lr.warmup_steps = 0
  config.checkpoint.every = 2_000
  config.eval.every = 2_000
  config.eval.best_metric = "crop/cascade_auc"  # always there; "det/ap" with the detection hook
  config.eval.best_mode = "max"
  return config


def add_evals(config: ml_collections.ConfigDict, names) -> None:
  """Named evaluator presets (config.evals; the hook reports NAME/<metric>)."""
  presets = {
      "wider": dict(type="wider", root="wider_face_subset", iou=0.5, fp_points=(100, 500, 1000),
                    cache_images=True, max_images=0),
      "cmu_mit": dict(type="cmu_mit", root="cmu_mit_frontal", iou=0.5, fp_points=(10, 50, 100),
                      cache_images=True, max_images=0),
  }
  for name in names:
    if name not in presets:
      raise ValueError(f"unknown config argument {name!r}: gate modes are hard, sigmoid, "
                       f"straight_through; evaluation presets {sorted(presets)}")
    config.evals[name] = presets[name]


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """arg: comma-separated gate mode (hard | sigmoid | straight_through) and evaluation presets
  (wider, cmu_mit: config.evals entries that replace the default CMU+MIT check)."""
  words = [w for w in arg.split(",") if w]
  modes = [w for w in words if w in ("hard", "sigmoid", "straight_through")]
  config = common.base_config()
  config.schedule = "cascade_joint"
  for name, section in sections().items():
    config[name] = section
  recipe(config)
  config.data.root = "../shared/data"
  config.data.sampler = "both"
  config.data.box_scale = 1.4
  config.data.positive_ratio = 0.05   # paper: ~5% positives
  config.gate.mode = modes[0] if modes else "hard"  # the paper's threshold-control layers
  config.gate.thresholds = (0.1, 0.003)
  config.gate.temperature.start = 1.0  # sigmoid / straight_through only (logit space)
  config.gate.temperature.end = 0.05
  config.gate.temperature.steps = 15_000
  config.loss.lambdas = (1.0, 1.0, 1.0)
  config.model.dropout = 0.25
  if "smoke" in words:
    smoke(config)
  add_evals(config, [w for w in words if w not in modes and w != "smoke"])
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """A run a new user can try in about two minutes on a CPU: everything small, nothing skipped
  (real crops, training, checkpoints, the CMU+MIT detection check on a few pictures)."""
  config.batch_size = 64
  config.num_steps = 150
  config.log_every = 25
  config.optimizer.name = "adam"      # SGD at the paper's rate learns nothing in 150 steps.
  config.lr.rates = (3e-3, 1e-3)
  config.lr.boundaries = (120,)
  config.checkpoint.every = 150
  config.eval.every = 150
  config.gate.temperature.steps = 150
  config.model.update(x12_channels=(8, 16, 8), x24_channels=(12, 24, 32), x24_fc=64,
                      x48_channels=(16, 24, 32, 64), x48_fc=96)
  config.data.update(max_images=60, face_tries=8, max_negatives=20_000, val_face_tries=4,
                     val_negatives=2_000, val_max_images=20)
  # The first four CMU+MIT pictures (up to 720 x 852) in one bucket: one compile of the detector.
  config.val.update(max_images=4, image_batch=2, buckets=((768, 1024),),
                    capacities=(1024, 256, 64))
