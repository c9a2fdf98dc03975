"""VOC matching, AP, discrete ROC: hand-computed cases, degenerate sets and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data_pipelines.records import FaceRecord
from facecraft.eval import detection


def _rec(image_id, boxes, ignore=None):
  return FaceRecord(image=f"{image_id}.jpg", boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    ignore=ignore, image_id=image_id)


def _hand_set():
  """img1: G1, G2 and an ignored G3; img2: G4; img3: no face. 3 positives.

  Detections, by score: .9 d1 = G1 (TP); .8 d2 on G1 again (IoU .818, duplicate: FP);
  .7 d3 = G3 (ignored: neither); .6 d5 = G4 (TP); .5 d6 in the empty image (FP); .4 d4 = G2 (TP).
  """
  records = [_rec("img1", [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 1]),
             _rec("img2", [[0, 0, 10, 10]]), _rec("img3", [])]
  dets = {"img1": ([[0, 0, 10, 10], [1, 0, 11, 10], [40, 0, 50, 10], [20, 0, 30, 10]],
                   [0.9, 0.8, 0.7, 0.4]),
          "img2": ([[0, 0, 10, 10]], [0.6]),
          "img3": ([[0, 0, 5, 5]], [0.5])}
  return records, dets


def test_hand_computed_voc_ap_with_ignored_face():
  records, dets = _hand_set()
  r = detection.evaluate(records, dets)
  # Counted detections: TP FP TP FP TP (the one on the ignored face is dropped).
  np.testing.assert_array_equal(r.scores, [0.9, 0.8, 0.6, 0.5, 0.4])
  np.testing.assert_array_equal(r.tp, [1, 1, 2, 2, 3])
  np.testing.assert_array_equal(r.fp, [0, 1, 1, 2, 2])
  np.testing.assert_allclose(r.precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
  np.testing.assert_allclose(r.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
  assert r.num_positives == 3 and r.num_ignored_detections == 1 and r.num_images == 3
  # All-point: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45 (precision envelope).
  assert r.ap == pytest.approx(34 / 45, abs=1e-12)
  # 11-point: t = 0..0.3 -> 1 (4 points), 0.4..0.6 -> 2/3 (3), 0.7..1.0 -> 3/5 (4).
  assert r.ap_11pt == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 0.6) / 11, abs=1e-12)


def test_ignored_face_changes_the_result():
  records, dets = _hand_set()
  records[0] = _rec("img1", records[0].boxes)  # G3 now counts: d3 is a TP, 4 positives.
  r = detection.evaluate(records, dets)
  np.testing.assert_array_equal(r.tp, [1, 1, 2, 3, 3, 4])
  assert r.num_positives == 4 and r.num_ignored_detections == 0


def test_discrete_roc_and_tpr_at_fp_by_hand():
  records, dets = _hand_set()
  r = detection.evaluate(records, dets)
  fp, tpr = r.roc()
  np.testing.assert_array_equal(fp, [0, 1, 1, 2, 2])
  np.testing.assert_allclose(tpr, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
  got = r.tpr_at_fp([0, 1, 2, 100])
  assert got == pytest.approx({0: 1 / 3, 1: 2 / 3, 2: 1.0, 100: 1.0})
  assert detection.tpr_at_fp([3, 5], [0.5, 0.7], [2, 4, 5]) == {2: 0.0, 4: 0.5, 5: 0.7}
  summary = json.loads(json.dumps(r.to_dict([1, 2])))
  assert summary["tpr_at_fp"] == pytest.approx({"1": 2 / 3, "2": 1.0})


def test_roc_groups_tied_scores():
  records = [_rec("a", [[0, 0, 10, 10]])]
  dets = {"a": ([[50, 50, 60, 60], [0, 0, 10, 10]], [0.5, 0.5])}  # FP listed first, same score.
  fp, tpr = detection.evaluate(records, dets).roc()
  np.testing.assert_array_equal(fp, [1])  # One threshold: both detections at once.
  np.testing.assert_allclose(tpr, [1.0])


def test_match_image_follows_the_devkit():
  gt = [[0, 0, 10, 10], [2, 0, 12, 10]]
  # Best IoU is the ignored face (1.0) although the other face has IoU .67: "neither".
  tp, ign = detection.match_image(gt, [False, True], [[2, 0, 12, 10]], [1.0], 0.5)
  assert not tp[0] and ign[0]
  # IoU exactly 0.5 counts (devkit `>=`).
  tp, _ = detection.match_image([[0, 0, 10, 10]], None, [[0, 0, 10, 20]], [1.0], 0.5)
  assert tp[0]
  # A detection whose best face is taken is a FP; it is not re-routed to its second-best face.
  gt = [[0, 0, 10, 10], [1, 0, 11, 10]]
  dets = [[0.4, 0, 10.4, 10], [0, 0, 10, 10]]  # Given low score first: results in input order.
  tp, ign = detection.match_image(gt, None, dets, [0.8, 0.9], 0.5)
  np.testing.assert_array_equal(tp, [False, True])
  assert not ign.any()


def test_perfect_detector_has_ap_one_and_empty_detector_zero():
  rng = np.random.default_rng(0)
  records = []
  for i in range(6):
    xy = rng.uniform(0, 300, (4, 2))
    records.append(_rec(f"im{i}", np.c_[xy, xy + rng.uniform(10, 50, (4, 2))]))
  perfect = {r.image_id: (r.boxes, rng.uniform(0, 1, r.num_faces)) for r in records}
  r = detection.evaluate(records, perfect)
  assert r.ap == pytest.approx(1.0, abs=1e-12) and r.ap_11pt == pytest.approx(1.0, abs=1e-12)
  assert r.tpr_at_fp([0]) == {0: 1.0}
  with pytest.warns(detection.EvaluationWarning, match="no detections"):
    empty = detection.evaluate(records, {})
  assert empty.ap == 0.0 and empty.ap_11pt == 0.0
  assert empty.tpr_at_fp([100]) == {100: 0.0}
  # Entries with zero boxes are no detections either; the faces are missed.
  with pytest.warns(detection.EvaluationWarning):
    zero = detection.evaluate(records, {"im0": (np.zeros((0, 4)), np.zeros(0))})
  assert zero.ap == 0.0


def test_no_positives_gives_nan_with_a_warning():
  records = [_rec("a", []), _rec("b", [[0, 0, 5, 5]], [True])]
  with pytest.warns(detection.EvaluationWarning, match="no positive"):
    r = detection.evaluate(records, {"a": ([[0, 0, 5, 5]], [0.3])})
  assert math.isnan(r.ap) and math.isnan(r.ap_11pt)
  assert all(math.isnan(v) for v in r.tpr_at_fp([100]).values())


def test_evaluate_ap_at_iou_05_and_03():
  records = [_rec("a", [[0, 0, 10, 10]])]
  dets = {"a": ([[0, 0, 10, 16]], [1.0])}  # IoU 100/160 = .625: TP at both.
  dets_04 = {"a": ([[0, 0, 10, 25]], [1.0])}  # IoU 100/250 = .4: TP only at 0.3.
  at = detection.evaluate_ap_at(records, dets)
  assert set(at) == {0.5, 0.3} and at[0.5].ap == 1.0 and at[0.3].ap == 1.0
  at = detection.evaluate_ap_at(records, dets_04)
  assert at[0.5].ap == 0.0 and at[0.3].ap == 1.0
  assert at[0.3].iou_threshold == 0.3


def test_voc_ap_matches_py_faster_rcnn_reference():
  # Reference loop transcribed from the devkit description, on random curves.
  rng = np.random.default_rng(1)
  for _ in range(20):
    rec = np.sort(rng.uniform(0, 1, 30))
    prec = rng.uniform(0, 1, 30)
    mrec = np.r_[0, rec, 1]
    mpre = np.r_[0, prec, 0]
    for i in range(len(mpre) - 1, 0, -1):
      mpre[i - 1] = max(mpre[i - 1], mpre[i])
    expected = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
                   if mrec[i + 1] != mrec[i])
    assert detection.voc_ap(rec, prec) == pytest.approx(expected, abs=1e-12)
    expected07 = sum((prec[rec >= t].max() if (rec >= t).any() else 0) / 11
                     for t in np.arange(0.0, 1.1, 0.1))
    assert detection.voc_ap(rec, prec, use_07_metric=True) == pytest.approx(expected07, abs=1e-12)


@pytest.mark.parametrize("dets, message", [
    ({"nope": ([[0, 0, 1, 1]], [1.0]), "zzz": ([], [])}, r"2 of 2 .*not in the dataset.*'nope'"),
    ({"a": ([[0, 0, 1, 1]], [float("nan")])}, r"'a': score #0 is nan"),
    ({"a": ([[0, 0, float("inf"), 1]], [1.0])}, r"'a': box #0 .* not finite"),
    ({"a": ([[0, 0, 1, 1], [5, 0, 4, 1]], [1.0, 0.5])}, r"'a': box #1 .*x2 < x1"),
    ({"a": ([[0, 0, 1, 1]], [1.0, 0.5])}, r"1 boxes but 2 scores"),
    ({"a": ([[0, 0, 1]], [1.0])}, r"expected \[n, 4\]"),
])
def test_bad_detections_raise_clear_errors(dets, message):
  with pytest.raises(ValueError, match=message):
    detection.evaluate([_rec("a", [[0, 0, 5, 5]])], dets)


def test_duplicate_record_ids_are_rejected():
  with pytest.raises(ValueError, match="share the image id"):
    detection.evaluate([_rec("a", []), _rec("a", [])], {})


def test_detections_from_json(tmp_path):
  path = tmp_path / "dets.json"
  path.write_text(json.dumps({"2002/08/11/big/img_591": [{"box": [1, 2, 3, 4], "score": 0.5}],
                              "x": []}))
  dets = detection.detections_from_json(str(path))
  boxes, scores = dets["2002/08/11/big/img_591"]
  np.testing.assert_array_equal(boxes, [[1, 2, 3, 4]])
  np.testing.assert_array_equal(scores, [0.5])
  assert dets["x"][0].shape == (0, 4)
  with pytest.raises(ValueError, match="box must have 4 numbers"):
    detection.detections_from_json({"a": [{"box": [1, 2, 3], "score": 1}]})
  with pytest.raises(ValueError, match="expected"):
    detection.detections_from_json({"a": [{"bbox": [1, 2, 3, 4]}]})
  path.write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    detection.detections_from_json(str(path))


def test_cmu_mit_real_data_perfect_and_shifted_detector(shared_data):
  from data_pipelines import formats
  root = shared_data / "cmu_mit_frontal"
  if not root.is_dir():
    pytest.skip("cmu_mit_frontal not in the shared data")
  records = formats.load("cmu_mit", str(root), check_images=False)
  assert len(records) == 130 and sum(r.num_faces for r in records) == 511
  perfect = {r.image_id: (r.boxes, np.linspace(1, 0.5, r.num_faces)) for r in records}
  at = detection.evaluate_ap_at(records, perfect)
  assert at[0.5].ap == pytest.approx(1.0, abs=1e-12) and at[0.5].num_positives == 511
  # Shifted by 60% of the width: IoU (1 - .6) / (1 + .6) = .25 with its own face, below both
  # thresholds; only a few shifted boxes land on a neighbour in the group photos.
  shift = {k: (b + np.c_[0.6 * (b[:, 2] - b[:, 0]), 0 * b[:, :1], 0.6 * (b[:, 2] - b[:, 0]),
                         0 * b[:, :1]], s) for k, (b, s) in perfect.items()}
  at = detection.evaluate_ap_at(records, shift)
  assert at[0.5].ap < 0.01 and at[0.5].tp[-1] < 10  # 5 of 511 measured.
  assert at[0.3].tp[-1] < 40  # 29 of 511 measured.


def test_best_f1_by_hand():
  # One image, two faces; detections 0.9 (hit), 0.8 (miss), 0.7 (hit).
  rec = FaceRecord(image="a", boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                   image_id="a")
  dets = {"a": (np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], np.float32),
                np.array([0.9, 0.8, 0.7]))}
  result = detection.evaluate([rec], dets, iou_threshold=0.5)
  # F1 after each: 1 hit of 2 faces (P 1, R .5) = .667; (P .5, R .5) = .5; (P .667, R 1) = .8.
  t, f1, p, r = result.best_f1()
  assert t == pytest.approx(0.7) and f1 == pytest.approx(0.8)
  assert p == pytest.approx(2 / 3) and r == pytest.approx(1.0)
