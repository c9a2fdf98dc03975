"""Static-shape greedy NMS, exact, on masks: the one copy shared by every layer that needs it
(the inference engines, the anchor family's proposal layer in training and inference).

Greedy NMS over candidates sorted by priority keeps candidate i iff no *kept* earlier candidate
overlaps it by more than the threshold. That rule has exactly one solution, and iterating
    keep <- valid & ~any_j(keep[j] & suppresses[j, i])
from keep = valid reaches it: after t rounds the first t candidates are final, and a round that
changes nothing has found the unique solution. So `greedy_keep` runs rounds (a while loop) until
nothing changes: exact, and in practice a handful of vectorised rounds instead of K serial steps.

Overlap conventions: mode "union" (IoU) or "min" (intersection over the smaller area, MTCNN's
last NMS); plus_one=True measures widths as x2 - x1 + 1 (MATLAB / numpy MTCNN code, which
facenet-pytorch uses for its last NMS), False as x2 - x1 (torchvision). Suppression is strict:
overlap > threshold. Formulas follow those implementations operation for operation, so float32
results match theirs bit for bit. Equal scores keep index order (a stable sort, as torchvision);
facenet-pytorch's last NMS uses numpy's unstable argsort, whose order of exact ties is
implementation-defined.

(It lived in facecraft.infer.nms, which still re-exports it; it moved here because training
may not import infer, and the anchor family's joint schedule proposes RoIs with it.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(mode: str):
  if mode not in ("union", "min"):
    raise ValueError(f"NMS mode must be 'union' or 'min', got {mode!r}")


def overlap(a, b, mode: str = "union", plus_one: bool = False):
  """Elementwise overlap of boxes a and b ([..., 4], broadcastable); a is the suppressor."""
  _check(mode)
  xp = jnp if isinstance(a, jax.Array) or isinstance(b, jax.Array) else np
  one = 1.0 if plus_one else 0.0
  area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
  area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
  w = xp.maximum(0.0, xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]) + one)
  h = xp.maximum(0.0, xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]) + one)
  inter = w * h
  if mode == "min":
    return inter / xp.minimum(area_a, area_b)
  return inter / (area_a + area_b - inter)


def priority_order(scores, valid, ties: str = "first"):
  """Indices sorting valid candidates by descending score, invalid ones last.

  ties="first": equal scores keep index order (stable sort, torchvision); "last": the later index
  goes first (numpy's argsort(scores)[::-1] in the original MTCNN code).
  """
  if ties not in ("first", "last"):
    raise ValueError(f"ties must be 'first' or 'last', got {ties!r}")
  key = jnp.where(valid, -scores.astype(jnp.float32), jnp.inf)
  if ties == "first":
    return jnp.argsort(key, axis=-1, stable=True).astype(jnp.int32)
  n = scores.shape[-1]  # Stable sort of the reversed list, mapped back: later index first.
  order = n - 1 - jnp.argsort(jnp.flip(key, axis=-1), axis=-1, stable=True)
  return order.astype(jnp.int32)


def _fixed_point(valid, suppressors_of):
  """Iterates keep <- valid & ~suppressors_of(keep) until it stops changing."""
  def cond(state):
    return state[1]

  def body(state):
    keep, _ = state
    new = valid & ~suppressors_of(keep)
    return new, jnp.any(new != keep)

  keep, _ = jax.lax.while_loop(cond, body, (valid, jnp.any(valid)))
  return keep


def greedy_keep(boxes, valid, threshold: float, mode: str = "union", plus_one: bool = False):
  """Greedy NMS over candidates already in priority order: boxes [K, 4], valid [K] -> keep [K]."""
  k = boxes.shape[0]
  over = overlap(boxes[:, None, :], boxes[None, :, :], mode, plus_one)  # [suppressor, suppressed]
  earlier = jnp.arange(k)[:, None] < jnp.arange(k)[None, :]
  suppresses = earlier & (over > jnp.float32(threshold)) & valid[:, None]
  return _fixed_point(valid, lambda keep: jnp.any(keep[:, None] & suppresses, axis=0))


def nms(boxes, scores, valid, threshold: float, mode: str = "union", plus_one: bool = False,
        ties: str = "first"):
  """Greedy NMS of one set: returns (order [K], keep [K] in that order).

  order sorts candidates by priority; boxes[order][keep] are the survivors, best first.
  """
  order = priority_order(scores, valid, ties)
  keep = greedy_keep(boxes[order], valid[order], threshold, mode, plus_one)
  return order, keep
