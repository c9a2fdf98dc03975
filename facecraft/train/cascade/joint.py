"""Schedule cascade_joint: FaceCraft's three branches trained at once through threshold gates.

  result = cascade.joint.run(config, workdir, hooks=None)

Loss (paper Eq. 6): λ1·L12 + λ2·L24 + λ3·L48 (losses.joint_loss), the x24 terms gated per sample
by x12's face probability > t1 = 0.1 and the x48 terms by x12 AND x24 (> t2 = 0.003). Gate modes
(config.gate.mode, checked once by cascade.config and handed unchanged to losses.Gates):
"hard" (the paper), "sigmoid" (soft, temperature annealed by config.gate.temperature from
`start` to `end` over `steps`) and "straight_through". Soft gates learn from config.gate.gradient:
"decision" (default: a cross-entropy on the soft cascade's final decision, weight
gate.decision_weight, with the gated branch losses not moving the gates) or "loss" (the gated
losses' own gradient, which makes x12 reject faces: the ablation's baseline). losses.joint_loss
argues both.

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
import numpy as np
import scipy.stats

from data_pipelines import records as records_lib
from data_pipelines import geometry
from data_pipelines import training_sets
from facecraft import losses
from facecraft.models import cascade
from facecraft.train import checkpoint
from facecraft.train import loop
from facecraft.train.cascade import config as config_lib
from facecraft.train.cascade import data as cascade_data
from facecraft.train.config_schema import check

CONFIG_SECTIONS = ("model", "data", "gate", "loss", "init", "val")
Hooks = Mapping[str, Callable]
STATS_KEY = "box_stats"


def validate_config(config) -> None:
  config_lib.check_closed(config, CONFIG_SECTIONS)
  config_lib.validate_common(config)
  check(config.init.which in ("checkpoints", "best"), "init.which",
        f"must be 'checkpoints' or 'best', got {config.init.which!r}")
  check(not config.init.from_workdir or os.path.isdir(config.init.from_workdir),
        "init.from_workdir", f"no such run folder {config.init.from_workdir!r}")


# ------------------------------------------------------------------------- model and loss


def model_of(config) -> cascade.FaceCraft:
  m = config.model
  return cascade.FaceCraft(cascade.CascadeConfig(
      x12_channels=tuple(m.x12_channels), x24_channels=tuple(m.x24_channels), x24_fc=m.x24_fc,
      x48_channels=tuple(m.x48_channels), x48_fc=m.x48_fc, fuse24=m.fuse24 or None,
      fuse48=m.fuse48 or None, dropout=m.dropout, landmarks=m.landmarks))


def loss_config(config) -> losses.LossConfig:
  """config.loss and config.gate as the loss reads them (gate.mode passes through unrenamed)."""
  lo, g = config.loss, config.gate
  t = g.temperature
  gate = losses.Gates(mode=g.mode, thresholds=tuple(g.thresholds), space=g.space,
                      temperature=(t.start, t.end, t.steps, t.kind),
                      gradient=g.get("gradient", "decision"),
                      decision_weight=g.get("decision_weight", 1.0))
  return losses.LossConfig(
      branch_weights=tuple(lo.lambdas), box_weight=lo.box_weight,
      landmark_weight=lo.landmark_weight, beta=lo.beta, gate=gate,
      ohem_ratio=lo.ohem_ratio or None)


def box_stats(data: training_sets.CropData, config) -> dict[str, np.ndarray]:
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
    temp = loss_cfg.gate.temperature_at(step)
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
      x = cascade.normalize(x)
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
