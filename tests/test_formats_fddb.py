"""FDDB reader on a fixture in the official layout (10 fold ellipse lists + originalPics/)."""

import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import fddb

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "fddb"
FOLD1 = "FDDB-folds/FDDB-fold-01-ellipseList.txt"


def _copy(tmp_path):
  root = tmp_path / "fddb"
  shutil.copytree(FIXTURE, root)
  return root


def _set_line(path, number, text):
  lines = path.read_text().split("\n")
  lines[number - 1] = text
  path.write_text("\n".join(lines))


def _brute_force_box(ra, rb, theta, cx, cy, n=400_001):
  """Extremes of the ellipse's points (the rotation FDDB's evaluation draws), float64."""
  t = np.linspace(0, 2 * np.pi, n)
  x = cx + ra * np.cos(t) * np.cos(theta) - rb * np.sin(t) * np.sin(theta)
  y = cy + ra * np.cos(t) * np.sin(theta) + rb * np.sin(t) * np.cos(theta)
  return np.array([x.min(), y.min(), x.max(), y.max()])


def test_fold_one_exact_boxes_and_ellipses():
  recs = fddb.load(str(FIXTURE), split=1)
  assert [r.image_id for r in recs] == ["2002/08/11/big/img_591", "2002/08/26/big/img_265"]
  a, b = recs
  assert a.image.endswith("originalPics/2002/08/11/big/img_591.jpg")
  assert a.image_size == (72, 96) and b.image_size == (72, 104)
  assert a.meta["fold"] == 1 and a.meta["ellipses"].dtype == np.float32
  np.testing.assert_array_equal(
      b.meta["ellipses"], np.float32([[20, 12, 0, 30, 25], [15, 10, -0.785398, 70, 30],
                                      [12, 8, 1.570796, 5, 50]]))
  # Unrotated: cx +- ra, cy +- rb exactly.
  np.testing.assert_array_equal(b.boxes[0], [10, 13, 50, 37])
  # 45 degrees: both half-sizes are sqrt((15^2 + 10^2) / 2).
  half = np.sqrt((15 ** 2 + 10 ** 2) / 2)
  np.testing.assert_allclose(b.boxes[1], [70 - half, 30 - half, 70 + half, 30 + half], atol=2e-5)
  # Quarter turn: the axes swap; the face runs past the left border and is kept as annotated.
  np.testing.assert_allclose(b.boxes[2], [-3, 38, 13, 62], atol=2e-5)
  assert not a.ignore.any() and a.landmarks is None


def test_boxes_match_brute_force_ellipse_extremes():
  recs = fddb.load(str(FIXTURE), check_images=False)
  assert len(recs) == 11 and sum(r.num_faces for r in recs) == 14
  for r in recs:
    for box, ellipse in zip(r.boxes, r.meta["ellipses"].astype(np.float64)):
      reference = _brute_force_box(*ellipse)
      np.testing.assert_allclose(box, reference, atol=5e-5)
      # One pixel off anywhere would be far outside the tolerance.
      assert np.abs(box - reference).max() < 1e-3


def test_circle_box_ignores_angle():
  rec = fddb.load(str(FIXTURE), split=2)[0]
  np.testing.assert_allclose(rec.boxes[1], [0, 0, 20, 20], atol=1e-5)
  np.testing.assert_allclose(fddb.ellipse_boxes([[10, 10, t, 10, 10] for t in (0, 1, 2, 3)]),
                             [[0, 0, 20, 20]] * 4, atol=1e-12)


def test_fold_selection():
  everything = fddb.load(str(FIXTURE), check_images=False)
  assert [r.meta["fold"] for r in everything] == [1, 1] + list(range(2, 11))
  picked = fddb.load(str(FIXTURE), split=[10, 2], check_images=False)
  assert [r.meta["fold"] for r in picked] == [10, 2]
  assert [r.image_id for r in fddb.load(str(FIXTURE), split="3")] == ["2003/03/04/big/img_103"]
  for bad in (0, 11, True, 2.0, "fold1"):
    with pytest.raises(ValueError, match="1..10"):
      fddb.load(str(FIXTURE), split=bad)


def test_images_directly_under_root(tmp_path):
  root = _copy(tmp_path)
  for year in ("2002", "2003"):
    (root / "originalPics" / year).rename(root / year)
  (root / "originalPics").rmdir()
  rec = fddb.load(str(root), split=1)[0]
  assert rec.image == str(root / "2002/08/11/big/img_591.jpg") and rec.image_size == (72, 96)
  # Fold files next to the images (no FDDB-folds/ folder) are found too.
  for f in (root / "FDDB-folds").iterdir():
    f.rename(root / f.name)
  assert len(fddb.load(str(root), split=2)) == 1


@pytest.mark.parametrize("line, text, reason", [
    (6, "20.0 12.0 0.0 30.0 x  1", "not a number"),
    (6, "20.0 12.0 0.0 30.0", "expected 'ra rb theta cx cy 1'"),
    (6, "-20.0 12.0 0.0 30.0 25.0  1", "radii must be positive"),
    (6, "20.0 12.0 0.0 nan 25.0  1", "non-finite"),
    (5, "three", "expected the number of faces"),
])
def test_malformed_lines(tmp_path, line, text, reason):
  root = _copy(tmp_path)
  _set_line(root / FOLD1, line, text)
  with pytest.raises(records.AnnotationError,
                     match=rf"FDDB-fold-01-ellipseList.txt:{line}: .*{reason}"):
    fddb.load(str(root), split=1)
  recs = fddb.load(str(root), split=[1, 2], on_error="skip")
  assert [r.image_id for r in recs] == ["2002/08/11/big/img_591", "2003/01/13/big/img_1087"]
  assert len(recs.skipped) == 1 and f"ellipseList.txt:{line}:" in recs.skipped[0]


def test_count_mismatch_and_missing_image(tmp_path):
  root = _copy(tmp_path)
  _set_line(root / FOLD1, 2, "2")  # Says 2, one ellipse line follows, then the next name.
  with pytest.raises(records.AnnotationError, match=r"ellipseList.txt:2: .*says 2 faces but 1"):
    fddb.load(str(root), split=1)
  (root / "originalPics/2002/08/26/big/img_265.jpg").unlink()
  recs = fddb.load(str(root), split=1, on_error="skip")
  assert recs == [] and len(recs.skipped) == 2 and "img_265.jpg" in recs.skipped[1]


def test_box_entirely_off_the_image(tmp_path):
  root = _copy(tmp_path)
  _set_line(root / FOLD1, 3, "10.0 5.0 0.0 200.0 30.0  1")  # x1 = 190 > width 96.
  with pytest.raises(records.AnnotationError, match=r"ellipseList.txt:1: .*outside the 96x72"):
    fddb.load(str(root), split=1)


def test_missing_fold_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="FDDB-fold-04-ellipseList.txt"):
    fddb.load(str(tmp_path), split=4)
