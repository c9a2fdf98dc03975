"""The official WIDER FACE protocol on the fixture of tests/fixtures/eval/wider.

The case (boxes x, y, w, h; keep lists 1-based; see make_fixtures.py):
  0--Parade/0_Parade_a   F1 (10,10,49,49) F2 (100,10,49,49) F3 (200,10,5,5)
                         easy/medium keep F1 F2, hard keeps all three
  0--Parade/0_Parade_b   F4 (10,10,49,49): easy keeps none, medium/hard keep F4
  1--Handshaking/..._c   F5 (50,50,29,29), kept everywhere, NO prediction file
  1--Handshaking/..._d   no face; one prediction (skipped by the official tool, not a FP)
Predictions (raw score -> normalised (s - .3) / .6):
  a: p1 = F1 .9 -> 1; p2 (202,10,5,5) .8 -> .833: IoU with F3 is 0.5 only with the "+1" widths
     (24 / 48; 15 / 35 = .43 without); p3 far away .75 -> .75 (FP); p4 = F1 again .3 -> 0 (FP).
  b: p5 = F4 .7 -> .667.   d: .6 -> .5.
Hand-computed, per threshold band (proposals, recalled) and the envelope AP:
  easy (3 faces): p2 and p5 hit unkept faces -> not proposals. Recall stays 1/3 with precision 1
    at the top: AP = 1/3.
  medium (4): P = 1 (R 1/4) until p3; p5 then gives R 1/2 at P 2/3: AP = 1/4 + 1/4 * 2/3 = 5/12.
  hard (5): p1, p2 recall F1, F3 (R 2/5, P 1); p3 FP; p5: R 3/5, P 3/4: AP = 2/5 + 1/5 * 3/4 = .55.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy import io as sio

from data_pipelines.records import AnnotationError
from facecraft.eval import detection, wider

HAND_AP = {"easy": 1 / 3, "medium": 5 / 12, "hard": 0.55}


@pytest.fixture(scope="module")
def gt(fixtures_dir):
  return wider.load_wider_eval_gt(str(fixtures_dir / "eval" / "wider"))


@pytest.fixture(scope="module")
def preds(fixtures_dir):
  return wider.read_pred_dir(str(fixtures_dir / "eval" / "wider" / "pred"))


def test_load_official_mat_structure(gt, fixtures_dir):
  raw = sio.loadmat(str(fixtures_dir / "eval" / "wider" / "wider_face_val.mat"))
  # The nesting the official files have and the official tools index into.
  assert str(raw["event_list"][1][0][0]) == "1--Handshaking"
  assert str(raw["file_list"][0][0][1][0][0]) == "0_Parade_b"
  assert gt.image_ids == ["0--Parade/0_Parade_a", "0--Parade/0_Parade_b",
                          "1--Handshaking/1_Handshaking_c", "1--Handshaking/1_Handshaking_d"]
  np.testing.assert_array_equal(gt.boxes[0][2], [200, 10, 205, 15])  # (x, y, x + w, y + h).
  assert gt.boxes[3].shape == (0, 4)
  np.testing.assert_array_equal(gt.keep["hard"][0], [0, 1, 2])  # 1-based -> 0-based.
  assert [gt.num_faces(s) for s in wider.SETTINGS] == [3, 4, 5]


def test_read_pred_dir(preds):
  assert set(preds) == {"0--Parade/0_Parade_a", "0--Parade/0_Parade_b",
                        "1--Handshaking/1_Handshaking_d"}
  boxes, scores = preds["0--Parade/0_Parade_a"]
  np.testing.assert_array_equal(boxes[1], [202, 10, 207, 15])
  np.testing.assert_array_equal(scores, [0.9, 0.8, 0.75, 0.3])


def test_hand_computed_ap_with_ignored_faces(gt, preds):
  result = wider.evaluate_wider(gt, preds)
  for setting, ap in HAND_AP.items():
    assert result[setting] == pytest.approx(ap, abs=1e-12), setting
  assert result["num_faces"] == {"easy": 3, "medium": 4, "hard": 5}
  recall, precision = result["curves"]["hard"]
  assert recall.shape == precision.shape == (1000,)
  # Threshold 1 - 1/1000: only p1 -> P 1, R 1/5. Threshold 0: everything -> P 3/5, R 3/5.
  assert (precision[0], recall[0]) == (1.0, 0.2)
  assert precision[-1] == pytest.approx(3 / 5) and recall[-1] == pytest.approx(3 / 5)
  # Between .75 and .667 (t = .7): p1 p2 p3 of image a -> P 2/3, R 2/5.
  assert precision[299] == pytest.approx(2 / 3) and recall[299] == pytest.approx(2 / 5)


def test_score_normalisation_makes_any_affine_score_scale_equal(gt, preds):
  # Raw scores far outside [0, 1]: the set-wide min/max normalisation gives the same APs.
  scaled = {k: (b, 10 * s + 5) for k, (b, s) in preds.items()}
  result = wider.evaluate_wider(gt, scaled)
  for setting, ap in HAND_AP.items():
    assert result[setting] == pytest.approx(ap, abs=1e-12)


def test_images_without_faces_do_not_count_false_positives(gt, preds):
  loud = dict(preds)
  loud["1--Handshaking/1_Handshaking_d"] = (np.array([[0, 0, 30, 30], [40, 0, 70, 30]]),
                                            np.array([0.85, 0.6]))
  result = wider.evaluate_wider(gt, loud)
  for setting, ap in HAND_AP.items():
    assert result[setting] == pytest.approx(ap, abs=1e-12)


def test_plus_one_iou_decides_the_small_face(gt, preds):
  # Move p2 one more pixel: "+1" IoU (3*6) / (72 - 18) = 1/3 < .5, p2 becomes a plain FP.
  moved = dict(preds)
  boxes, scores = preds["0--Parade/0_Parade_a"]
  boxes = boxes.copy()
  boxes[1] += [1, 0, 1, 0]
  moved["0--Parade/0_Parade_a"] = (boxes, scores)
  result = wider.evaluate_wider(gt, moved)
  # easy: p2 is now a proposal right after p1: P 1/2 from there on, recall stays 1/3 -> AP 1/3.
  assert result["easy"] == pytest.approx(1 / 3)
  # hard: p1 (R 1/5, P 1), p2 FP, p3 FP, p5 (R 2/5, P 2/4) -> AP 1/5 + 1/5 * 1/2 = .3.
  assert result["hard"] == pytest.approx(0.3)
  assert wider.iou_plus_one([[202, 10, 207, 15]], [[200, 10, 205, 15]])[0, 0] == 0.5


def test_vectorised_protocol_matches_a_loop_reference():
  """The official per-prediction loop, written out, on random sets."""
  rng = np.random.default_rng(0)
  for _ in range(10):
    ids, boxes, keeps, dets = [], [], {s: [] for s in wider.SETTINGS}, {}
    for j in range(12):
      k = int(rng.integers(0, 5))
      xy = np.round(rng.uniform(0, 200, (k, 2)))
      g = np.c_[xy, xy + np.round(rng.uniform(4, 40, (k, 2)))]
      ids.append(f"e/{j}")
      boxes.append(g)
      hard = np.sort(rng.permutation(k)[:k - int(rng.integers(0, 2)) if k else 0])
      for s, kk in zip(wider.SETTINGS, (hard[:max(len(hard) - 2, 0)], hard[:max(len(hard) - 1, 0)],
                                        hard)):
        keeps[s].append(kk)
      m = int(rng.integers(0, 8))
      src = g[rng.integers(0, k, m)] if k else np.tile([50.0, 50, 80, 80], (m, 1))
      d = src + rng.normal(0, 3, (m, 4))
      d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
      dets[f"e/{j}"] = (d, np.round(rng.uniform(0, 1, m), 3))
    gt = wider.WiderEvalGT(ids, boxes, keeps)
    got = wider.evaluate_wider(gt, dets)
    lo = min(s.min() for _, s in dets.values() if len(s))
    hi = max(s.max() for _, s in dets.values() if len(s))
    for setting in wider.SETTINGS:
      pr = np.zeros((1000, 2))
      for image_id, g, keep in zip(ids, boxes, keeps[setting]):
        d, s = dets[image_id]
        if not len(g) or not len(d):
          continue
        order = np.argsort(-s, kind="stable")
        d, s = d[order], (s[order] - lo) / (hi - lo)
        status = np.zeros(len(g))  # 0 unseen, 1 recalled, -1 ignored
        recalled, proposal = np.zeros(len(d)), np.ones(len(d))
        for h in range(len(d)):
          ov = wider.iou_plus_one(d[h:h + 1], g)[0]
          f = int(np.argmax(ov))
          if ov[f] >= 0.5:
            if f not in keep:
              status[f], proposal[h] = -1, -1
            elif status[f] == 0:
              status[f] = 1
          recalled[h] = (status == 1).sum()
        for t in range(1000):
          above = np.nonzero(s >= 1 - (t + 1) / 1000)[0]
          if len(above):
            r = above[-1]
            pr[t] += [(proposal[:r + 1] == 1).sum(), recalled[r]]
      with np.errstate(invalid="ignore", divide="ignore"):
        ap = detection.voc_ap(pr[:, 1] / gt.num_faces(setting), pr[:, 1] / pr[:, 0])
      assert got[setting] == pytest.approx(ap, abs=1e-12)


def test_empty_detections_give_zero_ap_with_a_warning(gt):
  with pytest.warns(detection.EvaluationWarning, match="no detections"):
    result = wider.evaluate_wider(gt, {})
  assert result["easy"] == result["medium"] == result["hard"] == 0.0


def test_bad_input(gt, preds, tmp_path, fixtures_dir):
  with pytest.raises(ValueError, match=r"not in the dataset.*'0--Parade/nope'"):
    wider.evaluate_wider(gt, {"0--Parade/nope": ([[0, 0, 1, 1]], [1.0])})
  with pytest.raises(ValueError, match="not finite"):
    wider.evaluate_wider(gt, {"0--Parade/0_Parade_a": ([[0, 0, 1, 1]], [math.nan])})
  with pytest.raises(ValueError, match="x2 < x1"):
    wider.evaluate_wider(gt, {"0--Parade/0_Parade_a": ([[5, 0, 1, 1]], [1.0])})
  with pytest.raises(FileNotFoundError, match="wider_face_val.mat"):
    wider.load_wider_eval_gt(str(tmp_path))
  # A prediction file whose count disagrees with its lines names the file and the line.
  pred = tmp_path / "pred" / "0--Parade"
  pred.mkdir(parents=True)
  (pred / "0_Parade_a.txt").write_text("0_Parade_a.jpg\n3\n1 2 3 4 0.5\n")
  with pytest.raises(AnnotationError, match=r"0_Parade_a.txt:2: .*3 boxes but has 1"):
    wider.read_pred_dir(str(tmp_path / "pred"))
  (pred / "0_Parade_a.txt").write_text("0_Parade_a.jpg\n1\n1 2 3 4 nan\n")
  with pytest.raises(AnnotationError, match=r"0_Parade_a.txt:3: non-finite"):
    wider.read_pred_dir(str(tmp_path / "pred"))
  # Keep indices outside the image's faces are an error of the .mat file.
  src = fixtures_dir / "eval" / "wider"
  for name in ("wider_face_val.mat", "wider_medium_val.mat", "wider_hard_val.mat"):
    shutil.copy(src / name, tmp_path / name)
  bad = sio.loadmat(str(src / "wider_easy_val.mat"))["gt_list"]
  bad[0][0][0][0] = np.array([[1.0], [4.0]])
  sio.savemat(str(tmp_path / "wider_easy_val.mat"), {"gt_list": bad})
  with pytest.raises(ValueError, match=r"0_Parade_a: face indices \[1, 4\]"):
    wider.load_wider_eval_gt(str(tmp_path))


def test_write_and_read_pred_dir_round_trip(preds, tmp_path):
  wider.write_pred_dir(preds, str(tmp_path))
  back = wider.read_pred_dir(str(tmp_path))
  assert set(back) == set(preds)
  for k in preds:
    np.testing.assert_allclose(back[k][0], preds[k][0])
    np.testing.assert_array_equal(back[k][1], preds[k][1])


def test_equal_scores_are_normalised_to_one_with_a_warning(gt, preds):
  flat = {k: (b, np.full(len(s), 0.4)) for k, (b, s) in preds.items()}
  with pytest.warns(detection.EvaluationWarning, match="all prediction scores equal"):
    result = wider.evaluate_wider(gt, flat)
  # Everything enters at the first threshold. hard: 5 proposals (p1..p4, p5), 3 recalled.
  recall, precision = result["curves"]["hard"]
  assert (precision[0], recall[0]) == (3 / 5, 3 / 5)
  assert result["hard"] == pytest.approx(3 / 5 * 3 / 5)
