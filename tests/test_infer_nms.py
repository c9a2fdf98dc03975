"""Static-shape NMS against a plain Python greedy NMS; grid NMS on stage-1 cells; max-pool."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facecraft.infer import nms
from facecraft.infer.cascade import CascadeSpec, cell_tables


def _overlap(a, b, mode, plus_one):
  one = np.float32(1 if plus_one else 0)
  area = lambda x: (x[2] - x[0] + one) * (x[3] - x[1] + one)
  w = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]) + one)
  h = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]) + one)
  inter = w * h
  denom = min(area(a), area(b)) if mode == "min" else area(a) + area(b) - inter
  return inter / denom


def _greedy(boxes, scores, valid, threshold, mode, plus_one, ties="first"):
  """Textbook greedy NMS: returns kept indices, best first."""
  idx = [i for i in range(len(scores)) if valid[i]]
  key = (lambda i: (-scores[i], i)) if ties == "first" else (lambda i: (-scores[i], -i))
  order, kept = sorted(idx, key=key), []
  while order:
    i = order.pop(0)
    kept.append(i)
    order = [j for j in order if not _overlap(boxes[i], boxes[j], mode, plus_one) > threshold]
  return kept


def _random_boxes(rng, n, grid=False):
  xy = rng.uniform(0, 60, (n, 2))
  wh = rng.uniform(4, 30, (n, 2))
  boxes = np.concatenate([xy, xy + wh], 1)
  if grid:  # Integer coordinates make exact-threshold and equal-area cases common.
    boxes = np.round(boxes)
  return boxes.astype(np.float32)


@pytest.mark.parametrize("mode,plus_one", list(itertools.product(["union", "min"], [False, True])))
def test_nms_equals_python_greedy(mode, plus_one):
  rng = np.random.default_rng(0)
  fn = jax.jit(lambda b, s, v: nms.nms(b, s, v, 0.5, mode, plus_one))
  for trial in range(30):
    n = 40
    boxes = _random_boxes(rng, n, grid=trial % 2 == 0)
    scores = rng.integers(0, 8, n).astype(np.float32) / 8  # Many ties.
    valid = rng.uniform(size=n) < 0.8
    order, keep = fn(boxes, scores, valid)
    ours = np.asarray(order)[np.asarray(keep)].tolist()
    assert ours == _greedy(boxes, scores, valid, 0.5, mode, plus_one), trial


def test_ties_last_prefers_the_later_index():
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
  scores = np.array([0.9, 0.9, 0.5], np.float32)
  valid = np.ones(3, bool)
  for ties, expect in (("first", [0, 2]), ("last", [1, 2])):
    order, keep = nms.nms(boxes, scores, valid, 0.5, ties=ties)
    assert np.asarray(order)[np.asarray(keep)].tolist() == expect
    assert _greedy(boxes, scores, valid, 0.5, "union", False, ties) == expect


def test_chain_of_suppressions_needs_many_rounds():
  # Each box overlaps only its neighbours: greedy keeps 0, 2, 4, ...; a naive one-shot
  # "suppressed by any better box" would keep only box 0.
  boxes = np.array([[3 * i, 0, 3 * i + 10, 10] for i in range(12)], np.float32)
  scores = np.linspace(1, 0.5, 12).astype(np.float32)
  keep = nms.greedy_keep(jnp.asarray(boxes), jnp.ones(12, bool), 0.5)
  assert np.flatnonzero(np.asarray(keep)).tolist() == _greedy(boxes, scores, np.ones(12), 0.5,
                                                               "union", False)


def test_all_invalid_keeps_nothing():
  keep = nms.greedy_keep(jnp.zeros((5, 4)), jnp.zeros(5, bool), 0.5)
  assert not np.asarray(keep).any()


def _mtcnn_spec():
  return CascadeSpec(name="t", stage1=None, stage2=None, stage3=None, params=None,
                     normalize=None, coding="mtcnn")


@pytest.mark.parametrize("scale,threshold", [(0.6, 0.5), (0.6 * 0.709**3, 0.5), (1.0, 0.3),
                                             (0.2, 0.7)])
def test_grid_nms_equals_python_greedy_on_stage1_cells(scale, threshold):
  rng = np.random.default_rng(1)
  h, w = 9, 11
  x_lo, x_hi = cell_tables(w, scale, _mtcnn_spec())
  y_lo, y_hi = cell_tables(h, scale, _mtcnn_spec())
  boxes = np.stack(np.broadcast_arrays(x_lo[None, :], y_lo[:, None], x_hi[None, :],
                                       y_hi[:, None]), -1)
  radius = max(nms.grid_radius(x_lo, x_hi, threshold), nms.grid_radius(y_lo, y_hi, threshold))
  fn = jax.jit(lambda s, v: nms.grid_nms_keep(s, v, boxes, threshold, (radius, radius)))
  for trial in range(10):
    scores = (rng.integers(0, 6, (2, h, w)) / 6).astype(np.float32)  # Plenty of ties.
    valid = rng.uniform(size=(2, h, w)) < 0.7
    keep = np.asarray(fn(scores, valid))
    for b in range(2):
      kept = _greedy(boxes.reshape(-1, 4), scores[b].reshape(-1), valid[b].reshape(-1),
                     threshold, "union", False)
      assert sorted(kept) == np.flatnonzero(keep[b].reshape(-1)).tolist(), (trial, b)


def test_grid_radius_is_a_proof():
  # Every pair of cells farther apart than the radius overlaps by at most the threshold.
  for scale in (1.0, 0.6, 0.3, 0.05):
    lo, hi = cell_tables(40, scale, _mtcnn_spec())
    for threshold in (0.3, 0.5, 0.7):
      r = nms.grid_radius(lo, hi, threshold)
      for d in range(r + 1, 40):
        assert (nms.interval_overlap_1d(lo, hi, d, "union", False) <= threshold).all()
      if r:  # ...and the radius is not larger than needed.
        assert (nms.interval_overlap_1d(lo, hi, r, "union", False) > threshold - 1e-6).any()


def test_maxpool_keep_by_hand():
  scores = np.array([[0.1, 0.9, 0.2, 0.0],
                     [0.3, 0.4, 0.5, 0.8],
                     [0.7, 0.1, 0.1, 0.8],
                     [0.0, 0.6, 0.2, 0.3]], np.float32)
  valid = np.ones_like(scores, bool)
  valid[0, 1] = False  # An invalid cell neither survives nor suppresses.
  keep = np.asarray(nms.maxpool_keep(scores, valid, 3))
  expect = np.zeros((4, 4), bool)
  expect[1, 3] = expect[2, 3] = True  # A tie: both maxima survive.
  expect[2, 0] = True
  expect[0, 2] = False  # 0.2 < 0.5 next to it.
  np.testing.assert_array_equal(keep, expect)
