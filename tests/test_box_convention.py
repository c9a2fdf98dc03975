"""facecraft.eval.box_convention: how a detector's boxes compare with the ground truth's."""

import logging

import numpy as np
import pytest

from data_pipelines import geometry
from data_pipelines import records
from facecraft.eval import box_convention
from facecraft.eval import evaluators

TRUTH = np.array([[10, 10, 50, 60], [100, 20, 130, 60], [200, 200, 240, 250]], np.float32)


def _records():
  ignore = np.array([False, False, True])  # the third face is ignored: it never enters
  return [records.FaceRecord(image="a.jpg", boxes=TRUTH, ignore=ignore, image_id="a")]


def test_same_convention_is_one_and_scaled_boxes_are_measured():
  same = box_convention.box_convention(_records(), {"a": (TRUTH[:2], np.array([0.9, 0.8]))})
  assert same["matched"] == 2 and same["scale"] == pytest.approx(1.0)
  assert same["center_dx"] == pytest.approx(0.0) and same["center_dy"] == pytest.approx(0.0)
  big = geometry.scale_boxes(TRUTH[:2].astype(np.float64), 1.4)
  shifted = big + np.array([4, 0, 4, 0])  # 4 px right: 0.1 and 0.133 of the widths
  check = box_convention.box_convention(_records(), {"a": (shifted, np.array([0.9, 0.8]))})
  assert check["scale"] == pytest.approx(1.4) and check["width_ratio"] == pytest.approx(1.4)
  assert check["center_dx"] == pytest.approx(np.median([4 / 40, 4 / 30]))


def test_low_score_clutter_and_far_boxes_do_not_enter(caplog):
  big = geometry.scale_boxes(TRUTH[:2].astype(np.float64), 1.4)
  clutter = np.array([[0, 0, 300, 300], [12, 12, 48, 58]], np.float64)  # scored below the faces
  dets = {"a": (np.concatenate([big, clutter]), np.array([0.9, 0.8, 0.1, 0.05]))}
  check = box_convention.box_convention(_records(), dets)
  assert check["matched"] == 2 and check["scale"] == pytest.approx(1.4)
  with caplog.at_level(logging.WARNING):
    assert box_convention.warn_if_mismatched("cmu", check)
  assert "1.40x the ground truth" in caplog.text
  assert not box_convention.warn_if_mismatched("cmu", {**check, "scale": 1.1})
  none = box_convention.box_convention(_records(), {"a": (np.array([[300., 300, 310, 310]]),
                                                         np.array([0.9]))})
  assert none["matched"] == 0 and np.isnan(none["scale"])


def test_evaluators_report_it_beside_ap():
  ev = evaluators.create(type="box_ap", name="toy", records=_records(), fp_points=(1,))
  big = geometry.scale_boxes(TRUTH[:2].astype(np.float64), 1.5)  # IoU 1 / 2.25: every face missed
  out = ev.score({"a": (big, np.array([0.9, 0.8]))})
  assert out["box_convention"]["scale"] == pytest.approx(1.5) and out["ap"] == 0.0
