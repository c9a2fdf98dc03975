"""Schedule cascade_joint: FaceCraft's three branches trained at once through threshold gates.

  result = cascade_joint.run(config, workdir, hooks=None)

Loss (paper Eq. 6): λ1·L12 + λ2·L24 + λ3·L48 (losses.joint_loss), the x24 terms gated per sample
by x12's face probability > t1 = 0.1 and the x48 terms by x12 AND x24 (> t2 = 0.003). Gate modes
(config.gate.mode): "hard" (the paper), "sigmoid" (soft, temperature annealed by
config.gate.temperature from `start` to `end` over `steps`) and "straight_through".

Regression targets are R-CNN deltas normalised by statistics of the training targets (their
mirror images included when flipping): computed once from the crops and kept in
state.extra["box_stats"] = {"mean", "std"}, so they are checkpointed with the params and travel
with the model (cascade.engine_stages(model, stats) de-normalises at inference).

config.init.from_workdir: start from a finished run's params (e.g. a cascade_greedy workdir, the
paper's "initialise the joint network with separately trained weights").

Evaluation: crop-level metrics on the CMU+MIT validation crops, always (see crop_eval_fn); a
launcher may add more through hooks={"eval_fn": fn(state) -> {name: float}} (experiments/train.py
adds the CMU+MIT detection AP through the inference engine, which facecraft.train must not import).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.stats

from data_pipelines import records as records_lib
from data_pipelines import geometry
from facecraft import losses
from facecraft.models import cascade
from facecraft.train import ConfigError
from facecraft.train import cascade_data
from facecraft.train import checkpoint
from facecraft.train import loop

CONFIG_SECTIONS = ("model", "data", "gate", "loss", "init", "val")
Hooks = Mapping[str, Callable]
STATS_KEY = "box_stats"


def config_sections() -> ml_collections.ConfigDict:
  """Every knob of the cascade schedules with its default (experiments/configs use these)."""
  c = ml_collections.ConfigDict()
  c.model = dict(x12_channels=(16, 32, 16), x24_channels=(28, 48, 64), x24_fc=128,
                 x48_channels=(32, 64, 64, 128), x48_fc=256,
                 fuse24=0, fuse48=0,        # 0: the paper (concatenation only)
                 dropout=0.25, landmarks=False)
  c.data = dict(
      root="../shared/data", source="auto",  # auto | real | embedded (synthetic, announced)
      train_sets=cascade_data.TRAIN_SETS, cache_dir="", seed=0, size=48,
      box_scale=1.4,                # 1.4 matches CMU+MIT's boxes (cascade_data docstring)
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
      workers=0, embedded_images=64, embedded_val_images=16, embedded_scenes=16)
  c.gate = dict(mode="hard", thresholds=(0.1, 0.003), space="logit",
                temperature=dict(start=1.0, end=0.05, steps=10_000, kind="exponential"))
  c.loss = dict(lambdas=(1.0, 1.0, 1.0), box_weight=1.0, landmark_weight=0.0, beta=1.0,
                ohem_ratio=0.0)
  c.init = dict(from_workdir="", which="checkpoints")
  c.val = dict(batch_size=512,
               detection=True,      # launcher: CMU+MIT detection AP when facecraft.infer imports
               min_face_size=20.0, factor=0.709, thresholds=(0.1, 0.003, 0.01),
               capacities=(2048, 512, 128), max_tiers=1, stage1_nms="nms", max_images=0,
               iou=0.5, fp_points=(10, 50, 100), image_batch=4)
  return c


# ------------------------------------------------------------------------- config checks


def _check(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}", message)


def check_closed(config, sections) -> None:
  """Every key of the schedule's sections exists, has the default's type, and nothing else."""
  reference = config_sections()
  for name in sections:
    if name not in reference:
      continue
    _check(name in config and isinstance(config[name], ml_collections.ConfigDict), name,
           "missing section (start from cascade_joint.config_sections())")

    def walk(node, ref, prefix):
      for key in node.keys():
        _check(key in ref, f"{prefix}.{key}", "unknown config key")
      for key in ref.keys():
        _check(key in node, f"{prefix}.{key}", "missing")
        if isinstance(ref[key], ml_collections.ConfigDict):
          walk(node[key], ref[key], f"{prefix}.{key}")
        elif isinstance(ref[key], bool) != isinstance(node[key], bool) or (
            isinstance(ref[key], (int, float)) and not isinstance(node[key], (int, float))) or (
                isinstance(ref[key], str) and not isinstance(node[key], str)) or (
                    isinstance(ref[key], tuple) and not isinstance(node[key], (tuple, list))):
          _check(False, f"{prefix}.{key}", f"must be {type(ref[key]).__name__}, got "
                 f"{node[key]!r}")

    walk(config[name], reference[name], name)


def validate_config(config) -> None:
  check_closed(config, CONFIG_SECTIONS)
  validate_common(config)
  _check(config.init.which in ("checkpoints", "best"), "init.which",
         f"must be 'checkpoints' or 'best', got {config.init.which!r}")
  _check(not config.init.from_workdir or os.path.isdir(config.init.from_workdir),
         "init.from_workdir", f"no such run folder {config.init.from_workdir!r}")


def validate_common(config) -> None:
  """Checks shared by cascade_joint and cascade_greedy."""
  m, d, g, lo, v = config.model, config.data, config.gate, config.loss, config.val
  _check(len(m.x12_channels) == 3, "model.x12_channels", "needs 3 entries")
  _check(len(m.x24_channels) == 3, "model.x24_channels", "needs 3 entries")
  _check(len(m.x48_channels) == 4, "model.x48_channels", "needs 4 entries")
  for key in ("x12_channels", "x24_channels", "x48_channels"):
    _check(all(int(c) >= 1 for c in m[key]), f"model.{key}", f"must be >= 1, got {m[key]}")
  _check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
  _check(d.source in cascade_data.SOURCES, "data.source", f"must be one of {cascade_data.SOURCES}")
  _check(d.sampler in cascade_data.SAMPLERS, "data.sampler",
         f"must be one of {cascade_data.SAMPLERS}, got {d.sampler!r}")
  _check(d.size == cascade.WINDOWS[2], "data.size",
         f"the model trains on 48x48 crops, got {d.size}")
  _check(all(s in cascade_data.TRAIN_SETS for s in d.train_sets) and len(d.train_sets) > 0,
         "data.train_sets", f"must be a non-empty subset of {cascade_data.TRAIN_SETS}")
  _check(d.box_scale > 0, "data.box_scale", f"must be > 0, got {d.box_scale}")
  _check(0 < d.part_iou <= d.pos_iou < 1, "data.pos_iou", "need 0 < part_iou <= pos_iou < 1")
  _check(0 < d.neg_iou <= d.pos_iou, "data.neg_iou", "need 0 < neg_iou <= pos_iou")
  _check(0 < d.positive_ratio < 1, "data.positive_ratio", f"must be in (0, 1), got "
         f"{d.positive_ratio}")
  _check(0 <= d.negatives_from_face_images <= 1, "data.negatives_from_face_images",
         "must be in [0, 1]")
  _check(d.face_clearance >= 1, "data.face_clearance", "must be >= 1")
  _check(len(d.jitter_side) == 2 and 0 < d.jitter_side[0] <= d.jitter_side[1], "data.jitter_side",
         f"must be (lo, hi) with 0 < lo <= hi, got {d.jitter_side}")
  for key in ("max_images", "face_tries", "landmark_tries", "max_negatives", "val_face_tries",
              "val_negatives", "val_max_images", "workers", "embedded_images", "embedded_scenes",
              "embedded_val_images", "max_positives_per_image", "part_ratio", "jitter_shift",
              "min_face_size"):
    _check(d[key] >= 0, f"data.{key}", f"must be >= 0, got {d[key]}")
  _check(d.sliding_stride >= 1 and d.sliding_interval >= 1 and 0 < d.sliding_min_scale <= 1,
         "data.sliding_stride", "need stride >= 1, interval >= 1, 0 < min_scale <= 1")
  for key in ("flip_prob", "grayscale_prob"):
    _check(0 <= d[key] <= 1, f"data.{key}", f"must be in [0, 1], got {d[key]}")
  _check(g.mode in cascade.GATE_MODES, "gate.mode", f"must be one of {cascade.GATE_MODES}, got "
         f"{g.mode!r}")
  _check(g.space in cascade.GATE_SPACES, "gate.space", f"must be one of {cascade.GATE_SPACES}")
  _check(len(g.thresholds) == 2 and all(0 < t < 1 for t in g.thresholds), "gate.thresholds",
         f"must be two probabilities in (0, 1), got {g.thresholds}")
  t = g.temperature
  _check(t.kind in cascade.SCHEDULE_KINDS, "gate.temperature.kind",
         f"must be one of {cascade.SCHEDULE_KINDS}, got {t.kind!r}")
  _check(t.start > 0 and t.end > 0 and t.steps >= 1, "gate.temperature",
         "need start > 0, end > 0, steps >= 1")
  _check(len(lo.lambdas) == 3 and all(x >= 0 for x in lo.lambdas) and sum(lo.lambdas) > 0,
         "loss.lambdas", f"must be three weights >= 0, not all 0, got {lo.lambdas}")
  _check(0 <= lo.ohem_ratio <= 1, "loss.ohem_ratio", "must be in [0, 1] (0: off)")
  for key in ("box_weight", "landmark_weight", "beta"):
    _check(lo[key] >= 0, f"loss.{key}", f"must be >= 0, got {lo[key]}")
  _check(not (m.landmarks and lo.landmark_weight > 0) or d.landmark_tries > 0,
         "data.landmark_tries", "must be > 0 to train landmarks (model.landmarks, "
         "loss.landmark_weight > 0)")
  _check(v.batch_size >= 1, "val.batch_size", "must be >= 1")
  _check(len(v.thresholds) == 3 and all(0 <= t < 1 for t in v.thresholds), "val.thresholds",
         f"must be three probabilities in [0, 1), got {v.thresholds}")
  _check(len(v.capacities) == 3 and min(v.capacities) >= 1, "val.capacities",
         f"must be three counts >= 1, got {v.capacities}")
  _check(v.stage1_nms in ("nms", "maxpool"), "val.stage1_nms", "must be 'nms' or 'maxpool'")
  _check(0 < v.iou < 1 and v.min_face_size > 0 and 0 < v.factor < 1, "val.iou",
         "need 0 < val.iou < 1, val.min_face_size > 0, 0 < val.factor < 1")
  _check(all(int(k) >= 1 for k in v.fp_points) and v.max_tiers >= 1 and v.image_batch >= 1,
         "val.fp_points", "need fp_points >= 1, max_tiers >= 1, image_batch >= 1")


# ------------------------------------------------------------------------- model and loss


def model_of(config) -> cascade.FaceCraft:
  m = config.model
  return cascade.FaceCraft(cascade.CascadeConfig(
      x12_channels=tuple(m.x12_channels), x24_channels=tuple(m.x24_channels), x24_fc=m.x24_fc,
      x48_channels=tuple(m.x48_channels), x48_fc=m.x48_fc, fuse24=m.fuse24 or None,
      fuse48=m.fuse48 or None, dropout=m.dropout, landmarks=m.landmarks))


def loss_config(config) -> losses.LossConfig:
  lo, g = config.loss, config.gate
  return losses.LossConfig(
      branch_weights=tuple(lo.lambdas), box_weight=lo.box_weight,
      landmark_weight=lo.landmark_weight, beta=lo.beta, gate_mode=g.mode,
      thresholds=tuple(g.thresholds), gate_space=g.space, ohem_ratio=lo.ohem_ratio or None)


def temperature(config, step):
  t = config.gate.temperature
  return cascade.temperature_schedule(step, t.start, t.end, t.steps, t.kind)


def box_stats(data: cascade_data.CascadeData, config) -> dict[str, np.ndarray]:
  """Regression statistics of the training targets (mirrors included when flipping)."""
  targets = cascade_data.box_targets(data.train, config.data.flip_prob > 0)
  stats = losses.regression_stats(targets, np.ones(len(targets), bool))
  return stats.to_dict()


def stats_of(extra) -> losses.RegressionStats:
  return losses.RegressionStats(extra[STATS_KEY]["mean"], extra[STATS_KEY]["std"])


def forward(model, params, batch, rng, train: bool = True):
  return model.apply({"params": params}, batch["image"], deterministic=not train,
                     rngs={"dropout": rng} if train else None)


def numpy_init(shapes, seed) -> Any:
  """Flax's default init drawn with numpy: kernels lecun_normal (truncated at 2 sigma, std
  sqrt(1 / fan_in) after truncation), biases 0. Same distribution as model.init, but compiling
  that (threefry per parameter) takes ~10 s on a CPU; this takes milliseconds."""
  rng = np.random.default_rng(seed)

  def draw(leaf):
    if len(leaf.shape) < 2:
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    z = rng.standard_normal(leaf.shape)
    while (bad := np.abs(z) > 2).any():
      z[bad] = rng.standard_normal(int(bad.sum()))
    return (z * np.sqrt(1.0 / fan_in) / 0.87962566103423978).astype(leaf.dtype)

  return jax.tree.map(draw, shapes)


def make_init_fn(config, model, stats: dict, init_params=None):
  """(params, {"box_stats": stats}): fresh (numpy_init seeded by the key), or `init_params`.

  Use with loop.train(..., jit_init=False). Under jax.eval_shape (the loop's restore) the key is
  abstract and only the shapes matter.
  """
  extra = {STATS_KEY: {k: jnp.asarray(v) for k, v in stats.items()}}

  def init_fn(rng):
    shapes = jax.eval_shape(lambda r: cascade.init(model, r)["params"], rng)
    if init_params is None:
      try:
        typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
        seed = np.asarray(jax.random.key_data(rng) if typed else rng).tolist()
      except jax.errors.TracerArrayConversionError:  # abstract: only the shapes matter
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), extra
      params = numpy_init(shapes, seed)
    else:
      if jax.tree.structure(init_params) != jax.tree.structure(shapes):
        raise ValueError(f"config.init.from_workdir={config.init.from_workdir!r}: its params "
                         "do not have this model's layout (different config.model?)")
      params = init_params
    return jax.tree.map(lambda s, p: jnp.asarray(p, s.dtype), shapes, params), extra

  return init_fn


def make_loss_fn(config, model):
  loss_cfg = loss_config(config)

  def loss_fn(params, batch, rng, step, extra):
    out = forward(model, params, batch, rng)
    temp = temperature(config, step)
    loss, metrics = losses.joint_loss(out, batch, stats_of(extra), loss_cfg, temp)
    metrics["gate/temperature"] = temp
    return loss, (metrics, extra)

  return loss_fn


# ------------------------------------------------------------------------- crop validation


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
  if not len(pos) or not len(neg):
    return float("nan")
  ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))  # average ranks of ties
  u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
  return float(u / (len(pos) * len(neg)))


def crop_scores(model, params, images: np.ndarray, batch_size: int, fn_cache: dict):
  """(probabilities [M, 3] of x12, x24, x48, boxes {branch: [M, 4]}) of uint8 48x48 crops."""
  if "fn" not in fn_cache:
    @jax.jit
    def fn(params, x):
      x = (x.astype(jnp.float32) - jnp.float32(127.5)) / jnp.float32(128.0)
      out = model.apply({"params": params}, x, deterministic=True)
      probs = jnp.stack([cascade.face_probability(out[b]["logits"]) for b in losses.BRANCHES], -1)
      return probs, {b: out[b]["box"] for b in losses.BRANCHES}
    fn_cache["fn"] = fn
  probs, boxes = [], []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    p, b = jax.device_get(fn_cache["fn"](params, chunk))
    probs.append(p[:batch_size - pad])
    boxes.append({k: v[:batch_size - pad] for k, v in b.items()})
  return (np.concatenate(probs),
          {k: np.concatenate([b[k] for b in boxes]) for k in losses.BRANCHES})


def crop_metrics(probs, boxes, crops: records_lib.CropSet, stats: losses.RegressionStats,
                 thresholds) -> dict[str, float]:
  """Crop-level validation: per-branch accuracy, recall / rejection at the gate thresholds,
  the cascade's AUC, and box regression quality (IoU after regression vs. the window's)."""
  t1, t2 = thresholds
  labels = crops.labels
  pos, neg = labels == records_lib.POSITIVE, labels == records_lib.NEGATIVE
  cls = pos | neg
  out = {}
  for i, b in enumerate(losses.BRANCHES):
    out[f"crop/{b}_accuracy"] = float(((probs[cls, i] > 0.5) == pos[cls]).mean())
  pass12 = probs[:, 0] > t1
  pass24 = pass12 & (probs[:, 1] > t2)
  for name, passed in (("x12", pass12), ("x24", pass24), ("x48", pass24 & (probs[:, 2] > 0.5))):
    out[f"crop/{name}_recall"] = float(passed[pos].mean()) if pos.any() else float("nan")
    out[f"crop/{name}_reject"] = float(1 - passed[neg].mean()) if neg.any() else float("nan")
  score = np.where(pass24, probs[:, 2], 0.0)  # what the test-time cascade outputs
  out["crop/cascade_auc"] = _auc(score[pos], score[neg])
  out["crop/x48_auc"] = _auc(probs[pos, 2], probs[neg, 2])
  has = np.isin(labels, cascade_data.BOX_LABELS)
  if has.any():
    window = np.array([0, 0, crops.size, crops.size], np.float64)
    gt = crops.boxes[has].astype(np.float64)
    out["crop/window_iou"] = float(np.diag(geometry.pairwise_iou(
        np.broadcast_to(window, gt.shape), gt)).mean())
    for b in losses.BRANCHES:
      deltas = np.asarray(stats.denormalize(boxes[b][has]), np.float64)
      pred = geometry.decode_rcnn(window, deltas)
      out[f"crop/{b}_box_iou"] = float(np.diag(geometry.pairwise_iou(pred, gt)).mean())
  return out


def crop_eval_fn(config, model, val: records_lib.CropSet, cache: dict | None = None):
  """eval_fn(state) -> crop_metrics on the validation crops (`cache` holds the jitted scorer)."""
  cache = {} if cache is None else cache

  def eval_fn(state) -> dict[str, float]:
    probs, boxes = crop_scores(model, state.params, val.images, int(config.val.batch_size), cache)
    return crop_metrics(probs, boxes, val, stats_of(jax.device_get(state.extra)),
                        tuple(config.gate.thresholds))

  return eval_fn


def combine_eval(*fns):
  fns = [f for f in fns if f is not None]
  return lambda state: {k: v for f in fns for k, v in dict(f(state)).items()}


# ------------------------------------------------------------------------- the schedule


def run(config, workdir: str, hooks: Hooks | None = None) -> loop.TrainResult:
  data = cascade_data.build(config, workdir)
  model = model_of(config)
  stats = box_stats(data, config)
  init_params = None
  if config.init.from_workdir:
    init_params, extra, step = checkpoint.load_params(config.init.from_workdir, config.init.which)
    logging.info("cascade_joint: initialised from %s (%s, step %d)", config.init.from_workdir,
                 config.init.which, step)
    theirs = (extra or {}).get(STATS_KEY)
    if theirs is not None and not all(np.allclose(theirs[k], stats[k], atol=1e-5) for k in stats):
      logging.warning("cascade_joint: %s was trained with other box statistics %s (now %s): "
                      "its box heads start off-scale", config.init.from_workdir, theirs, stats)
  eval_fn = combine_eval(crop_eval_fn(config, model, data.val), (hooks or {}).get("eval_fn"))
  return loop.train(
      config, workdir, make_init_fn(config, model, stats, init_params), make_loss_fn(config, model),
      lambda: cascade_data.train_iterator(data.train, config.batch_size, config.seed, config.data,
                                          config.model.landmarks),
      eval_fn, uses_extra=True, jit_init=False)
