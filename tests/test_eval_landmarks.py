"""Landmark metrics against hand computations."""

import numpy as np
import pytest

from data_pipelines import records
from facecraft.eval import landmarks


def _ibug_face(x0: float, iod: float) -> np.ndarray:
  """68 distinct points; outer eye corners 36 / 45 at (x0, 20) and (x0 + iod, 20)."""
  pts = np.stack([np.arange(68) * 0.5 + x0, np.arange(68) % 7 + 30.0], -1)
  pts[36:42] = [[x0, 20], [x0 + 2, 18], [x0 + 4, 18], [x0 + 6, 20], [x0 + 4, 22], [x0 + 2, 22]]
  pts[42:48] = pts[36:42] + [iod - 6, 0]
  return pts


def test_inter_ocular_two_faces_by_hand():
  gt = np.stack([_ibug_face(10, 40), _ibug_face(0, 80)])
  pred = gt.copy()
  pred[0] += [3, 4]  # Every point 5 px off: NME = 5 / 40.
  pred[1, 0] += [6, 8]  # One point 10 px off: NME = 10 / 68 / 80.
  out = landmarks.nme(pred, gt, None, "inter_ocular", "ibug68")
  np.testing.assert_allclose(out, [5 / 40, 10 / 68 / 80], rtol=1e-12)
  assert out.dtype == np.float64


def test_inter_pupil_uses_eye_centres():
  gt = _ibug_face(10, 40)[None]
  # Eye 36-41 has centre x0 + 3; eye 42-47 is the same shape shifted by iod - 6 = 34.
  pred = gt + [0, 3.4]
  np.testing.assert_allclose(landmarks.nme(pred, gt, None, "inter_pupil", "ibug68"), [0.1])
  # Five-point: eyes are points 0 and 1.
  five = np.array([[[0, 0], [20, 0], [10, 10], [3, 20], [17, 20]]], float)
  np.testing.assert_allclose(landmarks.nme(five + [1, 0], five, None, "inter_pupil", "five"),
                             [1 / 20])


def test_box_normalisers():
  gt = np.array([[[0, 0], [30, 0], [15, 20], [0, 40], [30, 40]]], float)
  pred = gt + [0, 5]
  # Tight box of the points is 30 x 40: diagonal 50, size sqrt(1200).
  np.testing.assert_allclose(landmarks.nme(pred, gt, None, "box_diagonal", "five"), [5 / 50])
  np.testing.assert_allclose(landmarks.nme(pred, gt, None, "box_size", "five"),
                             [5 / np.sqrt(1200)])
  # An explicit box wins: 60 x 80 -> diagonal 100.
  np.testing.assert_allclose(
      landmarks.nme(pred, gt, None, "box_diagonal", "five", boxes=[[0, 0, 60, 80]]), [5 / 100])


def test_masked_points_are_left_out():
  gt = np.array([[[0, 0], [20, 0], [10, 10], [3, 20], [17, 20]]], float)
  pred = gt.copy()
  pred[0, 2] += [0, 4]  # 4 px
  pred[0, 4] = [np.nan, np.nan]  # Unannotated: its prediction must not matter.
  mask = np.array([[True, True, True, True, False]])
  np.testing.assert_allclose(landmarks.nme(pred, gt, mask, "inter_pupil", "five"),
                             [4 / 20 / 4])
  errs = landmarks.point_errors(pred, gt, mask, "inter_pupil", "five")
  assert np.isnan(errs[0, 4]) and errs[0, 2] == pytest.approx(0.2)
  with pytest.raises(ValueError, match="non-finite predicted"):
    landmarks.nme(pred, gt, None, "inter_pupil", "five")


def test_impossible_normaliser_combinations():
  five = np.zeros((1, 5, 2))
  with pytest.raises(ValueError, match="not defined for the 'five' scheme"):
    landmarks.nme(five, five, None, "inter_ocular", "five")
  with pytest.raises(ValueError, match="unknown NME normaliser"):
    landmarks.nme(five, five, None, "interocular", "five")
  assert landmarks.available_norms("ibug68") == landmarks.NORMS
  assert "inter_ocular" not in landmarks.available_norms("caltech4")
  assert "inter_ocular" in landmarks.available_norms("cofw29")
  gt = _ibug_face(0, 40)[None]
  mask = np.ones((1, 68), bool)
  mask[0, 45] = False
  with pytest.raises(ValueError, match="eye points .* annotated"):
    landmarks.nme(gt, gt, mask, "inter_ocular", "ibug68")
  with pytest.raises(ValueError, match="zero or undefined"):
    landmarks.nme(five, five, None, "inter_pupil", "five")


def test_failure_rate_ced_auc_by_hand():
  nmes = np.array([0.05, 0.08, 0.12, np.inf])
  assert landmarks.failure_rate(nmes, 0.08) == 0.5  # 0.08 itself is not a failure.
  assert landmarks.failure_rate(nmes, 0.10) == 0.5
  assert landmarks.failure_rate(nmes, 0.06) == 0.75
  x, y = landmarks.ced([0.015, 0.045], max_error=0.1, steps=10)
  np.testing.assert_allclose(x, np.linspace(0, 0.1, 11))
  np.testing.assert_array_equal(y, [0, 0, .5, .5, .5, 1, 1, 1, 1, 1, 1])
  assert landmarks.auc(np.zeros(7), 0.08) == 1.0
  assert landmarks.auc([0.09, 0.5, np.inf], 0.08) == 0.0
  # Each face adds (T - e) / T: (0.06 + 0.02) / 0.08 / 2 = 0.5.
  assert landmarks.auc([0.02, 0.06], 0.08) == pytest.approx(0.5)
  rng = np.random.default_rng(0)
  e = rng.gamma(2.0, 0.03, 300)
  gx, gy = landmarks.ced(e, 0.1, steps=100_000)
  assert landmarks.auc(e, 0.1) == pytest.approx(np.trapezoid(gy, gx) / 0.1, abs=1e-4)
  with pytest.raises(ValueError, match="no face errors"):
    landmarks.auc([], 0.1)


def _record(image_id, boxes, pts, scheme="ibug68", mask=None):
  return records.FaceRecord(image="x.jpg", boxes=np.array(boxes, np.float32),
                            landmarks=np.array(pts, np.float32), landmark_scheme=scheme,
                            landmark_mask=mask, image_id=image_id)


def test_evaluate_landmarks_in_order_and_by_iou():
  a, b = _ibug_face(10, 40), _ibug_face(100, 80)
  rec = _record("img", [[0, 0, 60, 60], [90, 0, 200, 100]], [a, b])
  pred = np.stack([a + [3, 4], b + [0, 8]])  # NMEs 5/40 = 0.125 and 8/80 = 0.1.
  out = landmarks.evaluate_landmarks([rec], {"img": pred})
  assert out["nme"] == pytest.approx((0.125 + 0.1) / 2)
  assert out["failure_rate"] == {"0.08": 1.0, "0.1": pytest.approx(0.5)}
  assert out["auc"]["0.1"] == pytest.approx(0, abs=1e-12) and out["num_faces"] == 2 and out["num_missed"] == 0
  np.testing.assert_allclose(out["per_landmark"], np.full(68, 0.1125))
  # Boxes given: the order no longer matters; a face without a match is missed (NME inf).
  out = landmarks.evaluate_landmarks(
      [rec], {"img": (pred[::-1], [[92, 2, 200, 100], [0, 0, 60, 60]])})
  assert out["nme"] == pytest.approx(0.1125)
  far = landmarks.evaluate_landmarks([rec], {"img": (pred[:1], [[0, 0, 60, 60]])})
  assert far["num_missed"] == 1 and far["nme"] == pytest.approx(0.125)
  assert far["failure_rate"]["0.1"] == 1.0
  with pytest.raises(ValueError, match="ground truth has 2 faces"):
    landmarks.evaluate_landmarks([rec], {"img": pred[:1]})
  with pytest.raises(ValueError, match="not in the ground truth"):
    landmarks.evaluate_landmarks([rec], {"img": pred, "other": pred})
  with pytest.raises(ValueError, match="no predictions for 1"):
    landmarks.evaluate_landmarks([rec], {})


def test_evaluate_landmarks_five_point_predictions_on_ibug68():
  gt = _ibug_face(10, 40)
  rec = _record("img", [[0, 0, 60, 60]], [gt])
  # Eye centres (13, 20) and (47, 20): inter-pupil 34; a 3.4 px shift of every point -> 0.1.
  five = np.array([[13, 20], [47, 20], gt[30], gt[48], gt[54]]) + [0, 3.4]
  out = landmarks.evaluate_landmarks([rec], {"img": five[None]}, norm="inter_pupil")
  assert out["scheme"] == "five" and out["nme"] == pytest.approx(0.1)
  with pytest.raises(ValueError, match="not defined for the 'five'"):
    landmarks.evaluate_landmarks([rec], {"img": five[None]}, norm="inter_ocular")


def test_evaluate_landmarks_record_box_and_unannotated_faces():
  pts = np.array([[0, 0], [30, 0], [15, 20], [0, 40], [30, 40]], float)
  mask = np.array([[True] * 5, [False] * 5])
  rec = _record("img", [[0, 0, 60, 80], [100, 100, 120, 120]], [pts, pts], "five", mask)
  pred = np.stack([pts + [0, 5], np.zeros((5, 2))])
  out = landmarks.evaluate_landmarks([rec], {"img": pred}, norm="box_diagonal", box_from="record")
  assert out["num_faces"] == 1 and out["nme"] == pytest.approx(0.05)
  out = landmarks.evaluate_landmarks([rec], {"img": pred}, norm="box_diagonal")
  assert out["nme"] == pytest.approx(0.1)
  with pytest.raises(ValueError, match="no ground-truth record has landmarks"):
    landmarks.evaluate_landmarks([records.FaceRecord("x.jpg", np.zeros((0, 4)))], {})


def test_default_norm():
  assert landmarks.default_norm("ibug68") == "inter_ocular"
  assert landmarks.default_norm("ibug68", pred_points=5) == "inter_pupil"
  assert landmarks.default_norm("ibug68", pred_points=68) == "inter_ocular"
  assert landmarks.default_norm("cmu6") == "inter_pupil"
  assert landmarks.default_norm("aflw21", by_box=True) == "box_size"
