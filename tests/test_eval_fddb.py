"""FDDB's official DiscROC / ContROC: region overlap, Hungarian matching, merging, files.

Hand case (tests/fixtures/eval/fddb), images 100 x 100:
  A (fold 1): ellipse ra 20, rb 10, theta pi/2 at (50, 50), area 200 pi.
     dA1 box (38, 28)-(62, 72) score .9 contains it: overlap 200 pi / 1056 = .594999 (> .5);
     dA2 box (0, 0)-(10, 10) score .8: overlap 0.
  B (fold 2): circles r 10 at (30, 30) and (70, 70), area 100 pi each.
     dB1 box (15, 15)-(45, 45) score .7: overlap 100 pi / 900 = .349066 (matched, not > .5);
     dB2 box (58, 58)-(82, 82) score .75: overlap 100 pi / 576 = .545415.
  3 faces; thresholds .7 .75 .8 .9:
     .9: A dA1 (TP)                      TP 1 FP 0   cont .594999
     .8: A dA1 dA2 (TP, FP); B nothing   TP 1 FP 1   cont .594999
     .75: A as at .8; B dB2 (TP)         TP 2 FP 1   cont .594999 + .545415
     .7: B dB1 matched at .349 -> FP     TP 2 FP 2   cont .594999 + .545415 + .349066
  TPR = TP / 3, continuous TPR = cont / 3.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from data_pipelines.records import AnnotationError, FaceRecord
from facecraft.eval import detection, fddb

IMG_A, IMG_B = "2002/08/11/big/img_591", "2002/08/26/big/img_265"


def _record(image_id, ellipses, fold, size=(100, 100)):
  ellipses = np.asarray(ellipses, np.float64).reshape(-1, 5)
  ra, rb, t, cx, cy = ellipses.T
  hw = np.sqrt((ra * np.cos(t)) ** 2 + (rb * np.sin(t)) ** 2)
  hh = np.sqrt((ra * np.sin(t)) ** 2 + (rb * np.cos(t)) ** 2)
  boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], 1)
  meta = {"ellipses": ellipses.astype(np.float32), "fold": fold}
  if size is not None:
    meta["image_size"] = size
  return FaceRecord(image=image_id + ".jpg", boxes=boxes, image_id=image_id, meta=meta)


def _hand_records():
  return [_record(IMG_A, [[20, 10, math.pi / 2, 50, 50]], 1),
          _record(IMG_B, [[10, 10, 0, 30, 30], [10, 10, 0, 70, 70]], 2)]


def _brute_force(ellipse, region, size, step=0.125, det_ellipse=False):
  """Pixel count on a grid of `step` px over the whole image (the tool's masks, finer)."""
  h, w = size
  ys, xs = np.mgrid[step / 2:h:step, step / 2:w:step]

  def inside_ellipse(e):
    ra, rb, t, cx, cy = e
    u = (xs - cx) * np.cos(t) + (ys - cy) * np.sin(t)
    v = -(xs - cx) * np.sin(t) + (ys - cy) * np.cos(t)
    return (u / ra) ** 2 + (v / rb) ** 2 <= 1

  a = inside_ellipse(ellipse)
  if det_ellipse:
    b = inside_ellipse(region)
  else:
    x1, y1, x2, y2 = region
    b = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
  return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("ellipse, box", [
    ((40, 20, 1.1, 100, 90), (70, 60, 130, 110)),       # rotated, partial overlap
    ((45, 30, -1.4, 60, 60), (20, 10, 95, 120)),        # big box
    ((30, 25, 0.3, 185, 20), (160, 0, 200, 50)),        # runs past the right and top borders
    ((25, 12, 2.5, 50, 50), (48, 20, 90, 60)),          # corner cut
])
def test_ellipse_rectangle_overlap_matches_pixel_count(ellipse, box):
  size = (100, 200)
  got = fddb.region_overlaps(np.array([ellipse]), np.array([box]), "rectangle", size)[0, 0]
  assert got == pytest.approx(_brute_force(ellipse, box, size), rel=0.01)


def test_ellipse_ellipse_overlap_matches_pixel_count():
  size = (120, 120)
  gt, det = (40, 25, 1.3, 60, 60), (35, 30, 0.2, 70, 55, 1.0)
  got = fddb.region_overlaps(np.array([gt]), np.array([det[:5]]), "ellipse", size)[0, 0]
  assert got == pytest.approx(_brute_force(gt, det[:5], size, det_ellipse=True), rel=0.01)


def test_angle_convention_major_axis_along_cos_sin_theta():
  # theta = pi/2: the ra axis is vertical, so a tall box fits and the wide one does not.
  e = np.array([[40, 20, math.pi / 2, 100, 100]])
  tall, wide = [80, 60, 120, 140], [60, 80, 140, 120]
  ov = fddb.region_overlaps(e, np.array([tall, wide]), "rectangle", None)[0]
  assert ov[0] == pytest.approx(math.pi * 800 / 3200, rel=1e-4)  # ellipse inside the box
  assert ov[1] < 0.5
  np.testing.assert_allclose(fddb.ellipse_polygon(e[0]).max(0), [120, 140], atol=0.01)


def test_regions_are_clipped_to_the_image():
  # A circle half outside the image; the box covers its visible half.
  e, box = np.array([[10, 10, 0, 0, 50]]), np.array([[0, 40, 10, 60]])
  clipped = fddb.region_overlaps(e, box, "rectangle", (100, 100))[0, 0]
  unclipped = fddb.region_overlaps(e, box, "rectangle", None)[0, 0]
  assert clipped == pytest.approx(50 * math.pi / 200, rel=1e-4)
  assert unclipped == pytest.approx(50 * math.pi / (100 * math.pi + 200 - 50 * math.pi), rel=1e-4)


def test_hungarian_maximises_total_overlap_not_greedy():
  # Faces x detections. Greedy would pair F1-X (.6); the tool pairs F1-Y, F2-X (sum 1.0).
  ov = np.array([[0.6, 0.45], [0.55, 0.0]])
  thr, disc, cont, fp = fddb.image_curve(ov, np.array([1.0, 1.0]))
  np.testing.assert_array_equal(thr, [1.0])
  assert (disc[0], fp[0]) == (1, 1) and cont[0] == pytest.approx(1.0)
  thr, disc, cont, fp = fddb.image_curve(ov, np.array([0.9, 0.5]))
  np.testing.assert_array_equal(thr, [0.5, 0.9])
  np.testing.assert_allclose(disc, [1, 1])
  np.testing.assert_allclose(cont, [1.0, 0.6])  # At .9 only X is valid: F1-X.
  np.testing.assert_allclose(fp, [1, 0])


def test_image_curve_matches_brute_force_assignment():
  rng = np.random.default_rng(0)
  for _ in range(30):
    nf, nd = int(rng.integers(0, 4)), int(rng.integers(1, 5))
    ov = rng.uniform(0, 1, (nf, nd)) * (rng.uniform(0, 1, (nf, nd)) < 0.6)
    scores = np.round(rng.uniform(0, 1, nd), 1)
    thr, disc, cont, fp = fddb.image_curve(ov, scores)
    np.testing.assert_array_equal(thr, np.unique(scores))
    for j, t in enumerate(thr):
      valid = scores >= t
      # Best total overlap over every one-to-one matching (zero-padded square matrix).
      n = max(nf, int(valid.sum()))
      square = np.zeros((n, n))
      square[:nf, :valid.sum()] = ov[:, valid]
      best = max(square[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))
      assert cont[j] == pytest.approx(best, abs=1e-12)
      assert fp[j] == valid.sum() - disc[j]


def test_hand_computed_roc_and_official_files(fixtures_dir, tmp_path):
  dets = fddb.read_fddb_detections(str(fixtures_dir / "eval" / "fddb" / "detections.txt"))
  np.testing.assert_array_equal(dets[IMG_A][0], [[38, 28, 62, 72], [0, 0, 10, 10]])
  result = fddb.evaluate_fddb(_hand_records(), dets)
  pi = math.pi
  a, b1, b2 = 200 * pi / 1056, 100 * pi / 900, 100 * pi / 576
  np.testing.assert_allclose(result.disc, [[2 / 3, 2, 0.7], [2 / 3, 1, 0.75], [1 / 3, 1, 0.8],
                                           [1 / 3, 0, 0.9]], rtol=1e-12)
  np.testing.assert_allclose(result.cont[:, 0], [(a + b1 + b2) / 3, (a + b2) / 3, a / 3, a / 3],
                             rtol=1e-4)
  np.testing.assert_array_equal(result.cont[:, 1], [2, 1, 1, 0])
  assert result.num_faces == 3 and result.num_images == 2
  assert result.tpr_at_fp("disc", [0, 1, 2]) == pytest.approx({0: 1 / 3, 1: 2 / 3, 2: 2 / 3})
  assert result.tpr_at_fp("cont", [0])[0] == pytest.approx(a / 3, rel=1e-4)
  disc_path, cont_path = fddb.write_rocs(str(tmp_path), result)
  expected = fixtures_dir / "eval" / "fddb"
  assert open(disc_path).read() == (expected / "DiscROC.txt").read_text()
  assert open(cont_path).read() == (expected / "ContROC.txt").read_text()


def test_per_fold_results():
  dets = {IMG_A: ([[38, 28, 62, 72], [0, 0, 10, 10]], [0.9, 0.8]),
          IMG_B: ([[15, 15, 45, 45], [58, 58, 82, 82]], [0.7, 0.75])}
  result = fddb.evaluate_fddb(_hand_records(), dets)
  assert set(result.per_fold) == {"1", "2"}
  np.testing.assert_allclose(result.per_fold["1"].disc, [[1, 1, 0.8], [1, 0, 0.9]])
  np.testing.assert_allclose(result.per_fold["2"].disc, [[0.5, 1, 0.7], [0.5, 0, 0.75]])
  custom = fddb.evaluate_fddb(_hand_records(), dets, folds={"b_only": [IMG_B]})
  np.testing.assert_allclose(custom.per_fold["b_only"].disc, result.per_fold["2"].disc)
  with pytest.raises(ValueError, match="not among the records"):
    fddb.evaluate_fddb(_hand_records(), dets, folds={"x": ["nope"]})


def test_image_without_detections_adds_the_dbl_max_point(tmp_path):
  records = _hand_records() + [_record("2003/01/01/big/img_1", [[10, 10, 0, 50, 50]], 1)]
  dets = {IMG_A: ([[38, 28, 62, 72]], [0.9])}
  result = fddb.evaluate_fddb(records, dets)
  np.testing.assert_allclose(result.disc, [[0.25, 0, 0.9], [0, 0, fddb.DBL_MAX]])
  path = fddb.write_roc(str(tmp_path / "DiscROC.txt"), result.disc)
  assert open(path).read() == "0.25 0 0.9\n0 0 1.79769e+308\n"


def test_empty_detections_warn_and_give_zero_tpr():
  with pytest.warns(detection.EvaluationWarning, match="no detections"):
    result = fddb.evaluate_fddb(_hand_records(), {})
  np.testing.assert_array_equal(result.disc, [[0, 0, fddb.DBL_MAX]])
  assert result.tpr_at_fp("disc", [100, 2000]) == {100: 0.0, 2000: 0.0}


def test_ellipse_detections():
  records = _hand_records()
  dets = {IMG_A: ([[20, 10, math.pi / 2, 50, 50]], [0.5])}  # The ground truth itself.
  result = fddb.evaluate_fddb(records, dets, det_format="ellipse")
  # IMG_B has no detection: the tool's DBL_MAX point follows.
  np.testing.assert_allclose(result.disc, [[1 / 3, 0, 0.5], [0, 0, fddb.DBL_MAX]])
  assert result.cont[0, 0] == pytest.approx(1 / 3, rel=1e-6)


def test_bad_input(fixtures_dir, tmp_path):
  records = _hand_records()
  with pytest.raises(ValueError, match=r"not in the dataset.*'img_nope'"):
    fddb.evaluate_fddb(records, {"img_nope": ([[0, 0, 1, 1]], [1.0])})
  with pytest.raises(ValueError, match="not finite"):
    fddb.evaluate_fddb(records, {IMG_A: ([[0, 0, 1, 1]], [float("nan")])})
  with pytest.raises(ValueError, match="x2 < x1"):
    fddb.evaluate_fddb(records, {IMG_A: ([[3, 0, 1, 1]], [1.0])})
  no_ellipses = FaceRecord(image="x.jpg", boxes=np.zeros((0, 4)), image_id="x")
  with pytest.raises(ValueError, match="meta\\['ellipses'\\]"):
    fddb.evaluate_fddb([no_ellipses], {})
  bad = tmp_path / "dets.txt"
  bad.write_text(f"{IMG_A}\n2\n1 2 3 4 0.5\n")
  with pytest.raises(AnnotationError, match=r"dets.txt:2: .*2 detections announced, 1 found"):
    fddb.read_fddb_detections(str(bad))
  bad.write_text(f"{IMG_A}\n1\n1 2 3 0.5\n")
  with pytest.raises(AnnotationError, match=r"dets.txt:3: expected 5 numbers"):
    fddb.read_fddb_detections(str(bad))


def test_with_the_fddb_reader(fixtures_dir):
  """Records from data_pipelines.formats.fddb: boxes = ellipse bounding boxes score as found."""
  from data_pipelines.formats import fddb as fddb_reader
  records = fddb_reader.load(str(fixtures_dir / "fddb"))
  dets = {r.image_id: (r.boxes, np.full(r.num_faces, 0.5)) for r in records}
  result = fddb.evaluate_fddb(records, dets)
  # A bounding box covers its (clipped) ellipse: overlap >= pi / 4 > .5, so every face is found.
  np.testing.assert_array_equal(result.disc, [[1.0, 0.0, 0.5]])
  assert result.num_faces == sum(r.num_faces for r in records)
  assert set(result.per_fold) == {str(r.meta["fold"]) for r in records}
  assert all(r.disc[0, 0] == 1.0 for r in result.per_fold.values())
