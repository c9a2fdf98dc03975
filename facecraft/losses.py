"""Detection losses: softmax CE, smooth-L1 on normalised targets, landmarks, OHEM, FaceCraft's joint loss.

Sample kinds (data_pipelines.loader batches): classification on positives + negatives (`cls_mask`),
box regression on positives + part faces (`box_mask`), landmarks on landmark faces
(`landmark_mask`, `landmark_point_mask`).

Normalisation. Every term is a weighted mean over the samples it applies to:
  L = Σ_i w_i m_i l_i / Σ_i w_i m_i
with m the kind mask and w the per-sample weight: 1 for x12, the threshold gate for x24 / x48.
Dividing by the gated count (not the batch size) makes a gated branch see exactly the loss it
would see in the greedy schedule, where its batches hold only the samples that passed the earlier
stages: learning rates and λs then mean the same in the joint and greedy runs, whatever the pass
rate (with /B a 5% pass rate would silently scale x48's learning rate by 0.05). With soft gates the
gradient reaching the gate, (l_i - L) / Σ w m, moves weight from the samples that branch finds
harder than average to the easier ones; it cannot shrink the loss by gating everything out.

Threshold-control layers (FaceCraft §4.1): `Gates` holds config.gate as the loss reads it (mode,
thresholds, space and the temperature schedule); its mode keeps one name from the config to the
jitted step and is checked once, when the config is validated (train/cascade/config.py).

Regression targets are normalised (paper §4.1): t' = (t - mean) / std with `RegressionStats`
from the training targets; the model predicts t' and inference de-normalises (cascade.stage_fns).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from facecraft.models import cascade

BRANCHES = ("x12", "x24", "x48")
GATE_MODES = ("hard", "sigmoid", "straight_through")
GATE_SPACES = ("prob", "logit")
# How a soft gate learns (see joint_loss): "decision" (the cascade's final decision is scored and
# the gated branch losses do not move the gate) or "loss" (the gated losses' own gradient, which
# collapses: kept as the ablation's baseline).
GATE_GRADIENTS = ("decision", "loss")
SCHEDULE_KINDS = ("exponential", "linear", "constant")


# ------------------------------------------------------------------------- regression statistics


@flax.struct.dataclass
class RegressionStats:
  """Per-coordinate mean and std of the box targets; a pytree saved next to the params."""

  mean: Any  # [4]
  std: Any  # [4]

  @classmethod
  def identity(cls) -> RegressionStats:
    return cls(np.zeros(4, np.float32), np.ones(4, np.float32))

  def normalize(self, targets):
    return (targets - jnp.asarray(self.mean)) / jnp.asarray(self.std)

  def denormalize(self, predictions):
    return predictions * jnp.asarray(self.std) + jnp.asarray(self.mean)

  def to_dict(self) -> dict[str, np.ndarray]:
    return {"mean": np.asarray(self.mean, np.float32), "std": np.asarray(self.std, np.float32)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> RegressionStats:
    mean, std = np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)
    if mean.shape != (4,) or std.shape != (4,) or not (np.all(np.isfinite(mean)) and
                                                       np.all(std > 0)):
      raise ValueError(f"bad regression stats: mean {mean}, std {std}")
    return cls(mean, std)


def regression_stats(box_targets, box_mask, min_std: float = 1e-6) -> RegressionStats:
  """Mean / std (float64, population) of the masked rows of box_targets [N, 4].

  A coordinate whose std is below min_std (e.g. a single sample) gets std 1 so nothing divides
  by ~0.
  """
  t = np.asarray(box_targets, np.float64).reshape(-1, 4)
  m = np.asarray(box_mask, bool).reshape(-1)
  if m.shape[0] != t.shape[0]:
    raise ValueError(f"box_mask has {m.shape[0]} rows, box_targets {t.shape[0]}")
  if not m.any():
    raise ValueError("regression_stats: no sample has a box target (box_mask all False)")
  t = t[m]
  if not np.all(np.isfinite(t)):
    raise ValueError("regression_stats: non-finite box targets")
  std = t.std(axis=0)
  std = np.where(std < min_std, 1.0, std)
  return RegressionStats(t.mean(axis=0).astype(np.float32), std.astype(np.float32))


# ------------------------------------------------------------------------- per-sample losses


def softmax_cross_entropy(logits, labels):
  """-log softmax(logits)[label] per sample; logits [..., C], labels int [...]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def smooth_l1(x, beta: float = 1.0):
  """Elementwise 0.5 x² / β where |x| < β, else |x| - 0.5 β (Fast R-CNN: β = 1)."""
  ax = jnp.abs(x)
  if beta <= 0:
    return ax
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def box_loss(pred, target, stats: RegressionStats | None = None, beta: float = 1.0):
  """Per-sample Σ over the 4 coordinates of smooth-L1(pred - normalised target)."""
  if stats is not None:
    target = stats.normalize(target)
  return smooth_l1(pred - target, beta).sum(axis=-1)


def landmark_loss(pred, target, point_mask=None):
  """Per-sample mean squared error over the visible coordinates; pred/target [B, 10] or [B, 5, 2]."""
  b = pred.shape[0]
  err = jnp.square(pred - target).reshape(b, -1)
  if point_mask is None:
    return err.mean(axis=-1)
  m = jnp.repeat(point_mask.reshape(b, -1).astype(err.dtype), 2, axis=-1)
  return (err * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)


def weighted_mean(values, weights):
  """Σ w v / Σ w, 0 where Σ w = 0."""
  den = weights.sum()
  return jnp.where(den > 0, (weights * values).sum() / jnp.where(den > 0, den, 1.0), 0.0)


def ohem_mask(losses, valid, ratio: float):
  """Keeps the floor(ratio · n) (at least one) largest losses among the n valid samples.

  MTCNN's online hard example mining (ratio 0.7 on the classification loss). Ties go to the
  lower index. Static shapes: a rank per sample, compared with a traced count.
  """
  valid = valid.astype(bool)
  key = jnp.where(valid, jax.lax.stop_gradient(losses), -jnp.inf)
  order = jnp.argsort(-key, stable=True)  # Hardest first.
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  n = valid.sum()
  keep = jnp.maximum(jnp.floor(ratio * n.astype(jnp.float32) + 1e-4), 1).astype(n.dtype)
  return valid & (rank < keep)


# ------------------------------------------------------------------------- threshold control


def _log_odds(p, eps: float = 1e-7):
  p = jnp.clip(p, eps, 1.0 - eps)
  return jnp.log(p) - jnp.log1p(-p)


def threshold_gate(scores, threshold: float, mode: str = "hard", temperature=1.0,
                   space: str = "prob"):
  """Per-sample weight in [0, 1] that lets a sample's later-branch losses through.

  scores: earlier-branch face probabilities s. mode:
    hard              1[s > t], no gradient (the paper's threshold-control layer).
    sigmoid           σ((s - t) / T); gradients flow into s.
    straight_through  forward exactly 1[s > t], backward the sigmoid's gradient.
  space="logit" compares log-odds instead, σ((logit s - logit t) / T): the same T then means the
  same sharpness at t = 0.1 and t = 0.003 (in probability space 0.003 needs T ~ 1e-3).
  """
  scores = jnp.asarray(scores)
  hard = jax.lax.stop_gradient((scores > threshold).astype(scores.dtype))
  if mode == "hard":
    return hard
  soft = jax.nn.sigmoid(_gate_margin(scores, threshold, space) / temperature)
  if mode == "sigmoid":
    return soft
  # hard + (soft - soft) is bit-exactly `hard` forward while its derivative is the sigmoid's.
  return hard + (soft - jax.lax.stop_gradient(soft))


def _gate_margin(scores, threshold: float, space: str):
  """s - t in the gate's space: probabilities, or log-odds for space="logit"."""
  if space == "logit":
    return _log_odds(scores) - _log_odds(jnp.asarray(threshold, scores.dtype))
  return scores - threshold


def log_soft_gate(scores, threshold: float, temperature=1.0, space: str = "prob"):
  """log σ((s - t) / T) computed stably: the log of the sigmoid gate's value."""
  return jax.nn.log_sigmoid(_gate_margin(jnp.asarray(scores), threshold, space) / temperature)


def cascade_decision_loss(outputs, batch, gates: "Gates", temperature=1.0):
  """Cross-entropy of the soft cascade's final decision, over the classification samples.

  q = g24 · g48 · p48 is the probability that the whole cascade accepts a window: it passes the
  x12 gate, the x24 gate and x48 calls it a face (g the sigmoid gates, in both soft modes: a
  straight-through forward would make log q = -inf for every rejected positive). For a face,
  -log q = -log g24 - log g48 - log p48, so rejecting it at ANY stage costs, and the gate's
  gradient raises a rejected face's x12 / x24 scores; for a non-face, -log(1 - q) lets any stage
  reject it. This is the term the branch losses lack: nothing else says what an early rejection
  of a face costs.
  """
  t24, t48 = gates.thresholds
  p12 = cascade.face_probability(outputs["x12"]["logits"])
  p24 = cascade.face_probability(outputs["x24"]["logits"])
  log_q = (log_soft_gate(p12, t24, temperature, gates.space)
           + log_soft_gate(p24, t48, temperature, gates.space)
           + jax.nn.log_softmax(outputs["x48"]["logits"], -1)[:, 1])
  log_not_q = jnp.log1p(-jnp.exp(jnp.minimum(log_q, -1e-6)))
  face = batch["cls_target"] == 1
  ce = -jnp.where(face, log_q, log_not_q)
  return weighted_mean(ce, batch["cls_mask"].astype(ce.dtype))


@dataclasses.dataclass(frozen=True)
class ThresholdGate:
  """Config-held gate: `gate(scores, temperature)` = threshold_gate with these settings."""

  threshold: float
  mode: str = "hard"
  space: str = "prob"

  def __post_init__(self):
    if self.mode not in GATE_MODES:
      raise ValueError(f"gate mode must be one of {GATE_MODES}, got {self.mode!r}")
    if self.space not in GATE_SPACES:
      raise ValueError(f"gate space must be one of {GATE_SPACES}, got {self.space!r}")

  def __call__(self, scores, temperature=1.0):
    return threshold_gate(scores, self.threshold, self.mode, temperature, self.space)


def cascade_gates(outputs, gate24: ThresholdGate, gate48: ThresholdGate, temperature=1.0):
  """(g24, g48) [B]: g24 gates the x24 losses by x12's score; g48 = g24 * gate(x24's score).

  The product mirrors the test-time cascade: only windows that passed x12 AND x24 reach x48.
  """
  g24 = gate24(cascade.face_probability(outputs["x12"]["logits"]), temperature)
  g48 = g24 * gate48(cascade.face_probability(outputs["x24"]["logits"]), temperature)
  return g24, g48


def temperature_schedule(step, t0: float, t1: float, steps: int, kind: str = "exponential"):
  """Gate temperature at `step`: t0 -> t1 over `steps` steps, then constant (jit-friendly)."""
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {kind!r}")
  if kind != "constant" and (t0 <= 0 or t1 <= 0 or steps <= 0):
    raise ValueError(f"need t0, t1 > 0 and steps > 0, got {t0}, {t1}, {steps}")
  if kind == "constant":
    return jnp.asarray(t0, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
  if kind == "linear":
    return t0 + (t1 - t0) * frac
  return t0 * (t1 / t0) ** frac


@dataclasses.dataclass(frozen=True)
class Gates:
  """config.gate as the joint loss reads it: one gate per later branch and their temperature.

  temperature: (start, end, steps, kind) of temperature_schedule; only soft modes use it.
  """

  mode: str = "hard"
  thresholds: tuple[float, float] = (0.1, 0.003)  # x12 -> x24, x24 -> x48
  space: str = "prob"
  temperature: tuple[float, float, int, str] = (1.0, 1.0, 1, "constant")
  gradient: str = "decision"     # soft modes only: GATE_GRADIENTS
  decision_weight: float = 1.0   # μ of the decision term (gradient "decision")

  def __post_init__(self):
    if len(self.thresholds) != 2:
      raise ValueError("thresholds needs 2 values")
    if self.gradient not in GATE_GRADIENTS:
      raise ValueError(f"gate gradient must be one of {GATE_GRADIENTS}, got {self.gradient!r}")
    if self.decision_weight < 0:
      raise ValueError(f"decision_weight must be >= 0, got {self.decision_weight}")

  @property
  def scores_decision(self) -> bool:
    return self.mode != "hard" and self.gradient == "decision" and self.decision_weight > 0

  def pair(self) -> tuple[ThresholdGate, ThresholdGate]:
    return tuple(ThresholdGate(t, self.mode, self.space) for t in self.thresholds)

  def temperature_at(self, step):
    return temperature_schedule(step, *self.temperature)


# ------------------------------------------------------------------------- branch and joint loss


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights of Eq. 1 and Eq. 6, smooth-L1 β, the gates and OHEM."""

  branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # λ1, λ2, λ3 (Eq. 6)
  box_weight: float = 1.0  # λ of Eq. 1
  landmark_weight: float = 0.0  # only used when the outputs carry "landmarks"
  beta: float = 1.0  # smooth-L1
  gate: Gates = Gates()
  ohem_ratio: float | None = None  # e.g. 0.7 (MTCNN); None keeps every sample

  def __post_init__(self):
    if self.ohem_ratio is not None and not 0.0 < self.ohem_ratio <= 1.0:
      raise ValueError(f"ohem_ratio must be in (0, 1], got {self.ohem_ratio}")
    if len(self.branch_weights) != 3:
      raise ValueError("branch_weights needs 3 values")


def branch_loss(out: Mapping[str, Any], batch: Mapping[str, Any],
                stats: RegressionStats | None = None, config: LossConfig = LossConfig(),
                weights=None) -> tuple[Any, dict[str, Any]]:
  """Eq. 1 over a batch: L_cls + λ L_loc (+ λ_lm L_landmarks), each a weighted masked mean.

  out: {"logits" [B, 2], "box" [B, 4][, "landmarks"]}; batch: loader keys cls_target, cls_mask,
  box_target, box_mask[, landmark_target, landmark_mask, landmark_point_mask]. weights [B]: the
  gate (None = 1). Returns (loss, {"cls", "box"[, "landmarks"], "accuracy"}).
  """
  logits = out["logits"]
  w = jnp.ones(logits.shape[0], logits.dtype) if weights is None else weights
  cls_valid = batch["cls_mask"].astype(bool)
  ce = softmax_cross_entropy(logits, batch["cls_target"])
  if config.ohem_ratio is not None:
    cls_valid = ohem_mask(ce, cls_valid & (w > 0), config.ohem_ratio)
  l_cls = weighted_mean(ce, w * cls_valid)
  l_box = weighted_mean(box_loss(out["box"], batch["box_target"], stats, config.beta),
                        w * batch["box_mask"])
  loss = l_cls + config.box_weight * l_box
  correct = (jnp.argmax(logits, -1) == batch["cls_target"]).astype(jnp.float32)
  metrics = {"cls": l_cls, "box": l_box,
             "accuracy": weighted_mean(correct, batch["cls_mask"].astype(jnp.float32))}
  if "landmarks" in out and config.landmark_weight and "landmark_target" in batch:
    lm = landmark_loss(out["landmarks"], batch["landmark_target"],
                       batch.get("landmark_point_mask"))
    metrics["landmarks"] = weighted_mean(lm, w * batch["landmark_mask"])
    loss = loss + config.landmark_weight * metrics["landmarks"]
  metrics["loss"] = loss
  return loss, metrics


def joint_loss(outputs: Mapping[str, Any], batch: Mapping[str, Any],
               stats: RegressionStats | None = None, config: LossConfig = LossConfig(),
               temperature=1.0) -> tuple[Any, dict[str, Any]]:
  """Eq. 6: λ1 L12 + λ2 L24 + λ3 L48, the x24 / x48 terms gated per sample, plus for soft gates
  with gradient "decision" μ · cascade_decision_loss (gates then weigh L24 / L48 without gradient).

  outputs: FaceCraft's training forward. batch["first_branch"] [B] (optional): branch i trains
  only on samples with first_branch <= i (mined negatives kept out of x12). temperature: the
  sigmoid gates' T (a traced scalar, so an annealing schedule does not recompile). Metrics: "<branch>/<cls|box|accuracy|loss>",
  "gate24|gate48/<pass|pass_pos|pass_neg|weight>" (pass = hard pass rate over classification
  samples, weight = mean gate value), "decision/loss" when scored, and "loss".
  """
  gate24, gate48 = config.gate.pair()
  g24, g48 = cascade_gates(outputs, gate24, gate48, temperature)
  total, metrics = 0.0, {}
  if config.gate.gradient == "decision":
    # The gates choose which samples x24 / x48 train on; their gradient comes from the decision
    # term alone. Left in, d(g · L24)/ds12 = g' · L24 >= 0 would push down x12's score of every
    # sample in proportion to its later loss: faces carry the box terms and the harder x24 / x48
    # classification, so x12 learns to reject them (the committed ablation's collapse).
    gw24, gw48 = jax.lax.stop_gradient(g24), jax.lax.stop_gradient(g48)
  else:
    gw24, gw48 = g24, g48
  if config.gate.scores_decision:
    decision = cascade_decision_loss(outputs, batch, config.gate, temperature)
    total = total + config.gate.decision_weight * decision
    metrics["decision/loss"] = decision
  weights = (None, gw24, gw48)
  if "first_branch" in batch:  # crops that train only later branches (mined negatives)
    first = batch["first_branch"]
    weights = tuple((first <= i).astype(jnp.float32) * (1.0 if w is None else w)
                    for i, w in enumerate(weights))
  for name, lam, w in zip(BRANCHES, config.branch_weights, weights):
    loss, m = branch_loss(outputs[name], batch, stats, config, w)
    total = total + lam * loss
    metrics.update({f"{name}/{k}": v for k, v in m.items()})
  p12 = cascade.face_probability(outputs["x12"]["logits"])
  p24 = cascade.face_probability(outputs["x24"]["logits"])
  hard24 = p12 > config.gate.thresholds[0]
  hard48 = hard24 & (p24 > config.gate.thresholds[1])
  cls = batch["cls_mask"].astype(bool)
  pos, neg = cls & (batch["cls_target"] == 1), cls & (batch["cls_target"] == 0)
  for name, hard, soft in (("gate24", hard24, g24), ("gate48", hard48, g48)):
    hard = hard.astype(jnp.float32)
    metrics[f"{name}/pass"] = weighted_mean(hard, cls.astype(jnp.float32))
    metrics[f"{name}/pass_pos"] = weighted_mean(hard, pos.astype(jnp.float32))
    metrics[f"{name}/pass_neg"] = weighted_mean(hard, neg.astype(jnp.float32))
    metrics[f"{name}/weight"] = jnp.mean(jax.lax.stop_gradient(soft))
  metrics["loss"] = total
  return total, metrics
