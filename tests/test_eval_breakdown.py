"""facecraft.eval.breakdown: recall by attribute and width, counted by hand."""

from __future__ import annotations

import types

import numpy as np
import pytest

from facecraft.eval import breakdown


def _rec(image_id, boxes, **attributes):
  return types.SimpleNamespace(image_id=image_id, boxes=np.asarray(boxes, np.float64),
                               attributes={k: np.asarray(v) for k, v in attributes.items()})


def test_recall_by_attribute_and_width_by_hand():
  recs = [
      _rec("a", [[0, 0, 10, 10], [100, 100, 140, 140], [200, 0, 300, 100]],
           blur=[0, 2, 0], pose=[0, 1, 0], invalid=[0, 0, 0]),
      _rec("b", [[0, 0, 20, 20], [50, 50, 60, 60]], blur=[1, 0], pose=[0, 0], invalid=[0, 1]),
      _rec("c", [[0, 0, 30, 30]], blur=[0], pose=[1], invalid=[0]),  # no detections at all
  ]
  dets = {
      "a": (np.array([[0, 0, 10, 11], [100, 100, 120, 120], [205, 0, 300, 100]]), np.ones(3)),
      # IoU with [100, 100, 140, 140] is 400 / 1600 = 0.25: not found at 0.5, found at 0.2.
      "b": (np.array([[0, 0, 20, 20], [50, 50, 60, 60]]), np.ones(2)),  # 2nd face invalid
  }
  out = breakdown.recall_breakdown(recs, dets, iou=0.5)
  assert out["all"] == (5, pytest.approx(3 / 5))
  assert out["blur=clear"] == (3, pytest.approx(2 / 3))   # a0, a2 found; c0 not
  assert out["blur=heavy"] == (1, 0.0)
  assert out["blur=normal"] == (1, 1.0)
  assert out["pose=atypical"] == (2, 0.0)
  assert out["width 0-16"] == (1, 1.0)                    # a0 (width 10)
  assert out["width 16-32"] == (2, pytest.approx(1 / 2))  # b0 found, c0 not
  assert out["width 64-128"] == (1, 1.0)                  # a2 (width 100)
  loose = breakdown.recall_breakdown(recs, dets, iou=0.2)
  assert loose["blur=heavy"] == (1, 1.0)
  text = breakdown.markdown({"m": out, "loose": loose})
  assert "| 1 | blur=heavy | 0.000 | 1.000 |" in text


def test_records_without_attributes_give_all_and_width_only():
  recs = [types.SimpleNamespace(image_id="x", boxes=np.array([[0.0, 0, 50, 50]]), attributes={})]
  out = breakdown.recall_breakdown(recs, {}, iou=0.5)
  assert set(out) == {"all", "width 32-64"} and out["all"] == (1, 0.0)
