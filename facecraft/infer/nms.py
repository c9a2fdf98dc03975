"""Static-shape NMS of the pyramid engine: the greedy NMS (facecraft.nms, re-exported here) and
`grid_nms_keep`, the same greedy NMS for stage-1 cells: a level's boxes sit on a grid, and a
cell can only be suppressed by neighbours within a radius that `grid_radius` proves from the box
tables, so every round is a few shifted array ops over the score map (all levels at once, laid
out in one mosaic with gaps wider than the radius).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# pylint: disable=unused-import,g-importing-member
from facecraft.nms import _check, _fixed_point, greedy_keep, nms, overlap, priority_order


# ------------------------------------------------------------------------ grid NMS (stage 1)


def interval_overlap_1d(lo, hi, d: int, mode: str, plus_one: bool) -> np.ndarray:
  """1-D overlap of intervals j and j + d along one axis of a level's grid (float64)."""
  one = 1.0 if plus_one else 0.0
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  a_lo, a_hi, b_lo, b_hi = lo[:-d], hi[:-d], lo[d:], hi[d:]
  inter = np.maximum(0.0, np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo) + one)
  la, lb = a_hi - a_lo + one, b_hi - b_lo + one
  if mode == "min":
    denom = np.minimum(la, lb)
  else:
    denom = la + lb - inter
  return np.where(denom > 0, inter / np.where(denom > 0, denom, 1.0), 0.0)


def grid_radius(lo, hi, threshold: float, mode: str = "union", plus_one: bool = False) -> int:
  """Largest grid distance at which two cells on this axis can overlap by more than threshold.

  2-D IoU (and IoM) never exceeds the 1-D overlap along either axis, so cells farther apart than
  this radius on one axis can never suppress each other: grid NMS within it is exact.
  """
  _check(mode)
  radius = 0
  for d in range(1, len(lo)):
    o = interval_overlap_1d(lo, hi, d, mode, plus_one)
    if o.size == 0 or not np.any(o > 0):
      break  # Intervals are sorted: farther ones cannot overlap either.
    if np.any(o > threshold - 1e-6):  # Margin: a larger radius is still exact, only slower.
      radius = d
  return radius


def _shift(x, di: int, dj: int, fill):
  """y[..., i, j] = x[..., i + di, j + dj], `fill` outside."""
  h, w = x.shape[-2:]
  pad = [(0, 0)] * (x.ndim - 2) + [(max(-di, 0), max(di, 0)), (max(-dj, 0), max(dj, 0))]
  x = jnp.pad(x, pad, constant_values=fill)
  i0, j0 = max(di, 0), max(dj, 0)
  return x[..., i0:i0 + h, j0:j0 + w]


def grid_nms_keep(scores, valid, boxes: np.ndarray, threshold: float, radius: tuple[int, int],
                  mode: str = "union", plus_one: bool = False):
  """Greedy NMS over a map of stage-1 cells, ordered by score, then row-major position.

  scores, valid: [..., H, W]; boxes: [H, W, 4], the box of every cell (the same for the whole
  batch); radius
  (ry, rx): cells farther apart never overlap by more than the threshold (`grid_radius`). Several
  levels may share one map if their regions are more than the radius apart. Returns keep.
  """
  _check(mode)
  ry, rx = radius
  boxes = jnp.asarray(boxes, jnp.float32)
  inside = jnp.ones(boxes.shape[:2], bool)
  scores = scores.astype(jnp.float32)
  offsets, can_suppress = [], []
  for di in range(-ry, ry + 1):
    for dj in range(-rx, rx + 1):
      if di == 0 and dj == 0:
        continue
      n_boxes = jnp.stack([_shift(boxes[..., c], di, dj, 0.0) for c in range(4)], axis=-1)
      close = _shift(inside, di, dj, False) & (overlap(n_boxes, boxes, mode, plus_one)
                                               > jnp.float32(threshold))
      n_scores, n_valid = _shift(scores, di, dj, -jnp.inf), _shift(valid, di, dj, False)
      before = (di, dj) < (0, 0)  # The neighbour comes first in row-major order.
      wins = (n_scores > scores) | ((n_scores == scores) & before)
      offsets.append((di, dj))
      can_suppress.append(close & n_valid & valid & wins)
  if not offsets:
    return valid

  def suppressed(keep):
    out = jnp.zeros_like(keep)
    for (di, dj), c in zip(offsets, can_suppress):
      out = out | (_shift(keep, di, dj, False) & c)
    return out

  return _fixed_point(valid, suppressed)


def maxpool_keep(scores, valid, kernel: int):
  """FaceCraft's response-map pooling (§6.5): keep a cell iff it is the maximum of its k x k
  neighbourhood (ties all survive). scores, valid: [..., H, W]."""
  if kernel < 1:
    raise ValueError(f"max-pool kernel must be >= 1, got {kernel}")
  masked = jnp.where(valid, scores.astype(jnp.float32), -jnp.inf)
  dims = (1,) * (scores.ndim - 2) + (kernel, kernel)
  pooled = jax.lax.reduce_window(masked, -jnp.inf, jax.lax.max, dims, (1,) * scores.ndim, "SAME")
  return valid & (masked >= pooled)
