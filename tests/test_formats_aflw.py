"""AFLW reader on a fixture sqlite in the release's schema (tests/fixtures/aflw/generate.py)."""

import shutil
import sqlite3

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import aflw
from data_pipelines import geometry

NAMES = aflw.AFLW21_NAMES


@pytest.fixture()
def root(fixtures_dir):
  return str(fixtures_dir / "aflw")


@pytest.fixture()
def copy(fixtures_dir, tmp_path):
  """A writable copy of the fixture; returns (root, a function running SQL on its database)."""
  dst = tmp_path / "aflw"
  shutil.copytree(fixtures_dir / "aflw", dst)

  def sql(statement, *args):
    conn = sqlite3.connect(dst / "data" / "aflw.sqlite")
    conn.execute(statement, args)
    conn.commit()
    conn.close()
  return str(dst), sql


def _unit_face(x0, y0, s):
  """The generator's 21-point layout (tests/fixtures/aflw/generate.py, face_points)."""
  unit = [(0.10, 0.25), (0.25, 0.20), (0.40, 0.25), (0.60, 0.25), (0.75, 0.20), (0.90, 0.25),
          (0.15, 0.35), (0.25, 0.35), (0.35, 0.35), (0.65, 0.35), (0.75, 0.35), (0.85, 0.35),
          (0.00, 0.45), (0.40, 0.60), (0.50, 0.62), (0.60, 0.60), (1.00, 0.45), (0.30, 0.78),
          (0.50, 0.77), (0.70, 0.78), (0.50, 0.98)]
  return np.array([(x0 + s * u, y0 + s * v) for u, v in unit])


def _mirror_name(name):
  return name.replace("Left", "@").replace("Right", "Left").replace("@", "Right")


def _on_left(name):
  """True when the part the name first places is the left one (LeftBrowRightCorner, NoseLeft)."""
  left, right = name.find("Left"), name.find("Right")
  return left >= 0 and (right < 0 or left < right)


def test_records_group_faces_of_an_image(root):
  recs = aflw.load(root)
  assert [r.image_id for r in recs] == ["flickr/0/image00002", "flickr/2/image00013",
                                        "flickr/3/image00020"]
  r = recs[0]
  assert r.image.endswith("data/flickr/0/image00002.jpg") and r.image_size == (90, 120)
  # FaceRect (x, y, w, h) -> (x, y, x + w, y + h), no shift; the second runs past the left border.
  np.testing.assert_array_equal(r.boxes, [[10, 8, 50, 52], [-4, 30, 26, 64]])
  np.testing.assert_array_equal(r.meta["face_id"], [39341, 39342])
  assert r.landmark_scheme == "aflw21" and r.landmarks.shape == (2, 21, 2)


def test_points_are_used_as_stored_and_absent_points_are_masked(root):
  recs = aflw.load(root)
  np.testing.assert_allclose(recs[0].landmarks[0], _unit_face(12.25, 10.5, 36.0), atol=1e-5)
  assert recs[0].landmark_mask[0].all()
  np.testing.assert_allclose(recs[0].landmarks[0, NAMES.index("LeftEyeCenter")], [21.25, 23.1],
                             atol=1e-5)
  visible = [2, 3, 4, 5, 8, 9, 10, 11, 14, 15, 16, 18, 19, 20, 21]
  np.testing.assert_array_equal(np.flatnonzero(recs[0].landmark_mask[1]), np.array(visible) - 1)
  want = _unit_face(-2.0, 32.0, 26.0)
  got = recs[0].landmarks[1]
  np.testing.assert_allclose(got[recs[0].landmark_mask[1]], want[np.array(visible) - 1], atol=1e-5)
  np.testing.assert_array_equal(got[~recs[0].landmark_mask[1]], 0)


def test_attributes_and_pose(root):
  recs = aflw.load(root)
  np.testing.assert_array_equal(recs[0].attributes["male"], [1, 0])
  np.testing.assert_array_equal(recs[0].attributes["glasses"], [1, 0])
  np.testing.assert_array_equal(recs[0].attributes["occluded"], [0, 1])
  assert recs[0].attributes["male"].dtype == np.int8
  assert recs[1].attributes["male"][0] == -1 and recs[1].attributes["glasses"][0] == 0
  for name in ("male", "glasses", "occluded"):  # No FaceMetaData row: unknown.
    assert recs[2].attributes[name][0] == -1
  # Radians in the database, degrees in meta.
  np.testing.assert_allclose(recs[0].meta["pose"], [[2, -5, 10], [-1.5, 0, -30]], atol=1e-5)
  np.testing.assert_allclose(recs[1].meta["pose"], [[0, 12, 45]], atol=1e-5)
  assert np.isnan(recs[2].meta["pose"]).all()


def test_left_is_the_image_left_and_five_points_follow(root):
  pts = aflw.load(root)[0].landmarks[0]
  for name in NAMES:
    if _on_left(name):
      assert pts[NAMES.index(name), 0] < pts[NAMES.index(_mirror_name(name)), 0], name
  five, mask = geometry.to_five(pts, "aflw21")
  assert mask.all()
  np.testing.assert_array_equal(five, pts[[NAMES.index(n) for n in (
      "LeftEyeCenter", "RightEyeCenter", "NoseCenter", "MouthLeftCorner", "MouthRightCorner")]])


def test_aflw21_flip_lands_on_the_mirrored_semantic_points(root):
  width = 120
  pts = aflw.load(root)[0].landmarks[0]
  flipped = geometry.flip_landmarks(pts, "aflw21", width)
  for i, name in enumerate(NAMES):
    j = NAMES.index(_mirror_name(name))
    np.testing.assert_allclose(flipped[i], [width - pts[j, 0], pts[j, 1]], atol=1e-5, err_msg=name)
  # The mirrored face is again a face in AFLW's layout, and flipping twice is the identity.
  for name in NAMES:
    if _on_left(name):
      assert flipped[NAMES.index(name), 0] < flipped[NAMES.index(_mirror_name(name)), 0]
  np.testing.assert_allclose(geometry.flip_landmarks(flipped, "aflw21", width), pts, atol=1e-5)
  five, _ = geometry.to_five(pts, "aflw21")
  np.testing.assert_allclose(geometry.to_five(flipped, "aflw21")[0],
                             geometry.flip_landmarks(five, "five", width), atol=1e-5)


def test_split_must_be_none(root):
  with pytest.raises(ValueError, match="no official split"):
    aflw.load(root, split="train")


def test_root_may_be_the_data_folder_or_the_file(root):
  for where in (root, root + "/data", root + "/data/aflw.sqlite"):
    assert len(aflw.load(where)) == 3
  with pytest.raises(records.AnnotationError, match="aflw.sqlite"):
    aflw.load(root + "/data/flickr")


def test_bad_rect_names_table_row_and_face_and_skip_counts(copy):
  root, sql = copy
  sql("UPDATE FaceRect SET w = -3 WHERE face_id = 39343")
  with pytest.raises(records.AnnotationError, match=r"FaceRect row 3 \(face_id 39343\)") as e:
    aflw.load(root)
  assert e.value.path.endswith("aflw.sqlite")
  recs = aflw.load(root, on_error="skip")
  assert [r.image_id for r in recs] == ["flickr/0/image00002", "flickr/3/image00020"]
  assert len(recs.skipped) == 1 and "39343" in recs.skipped[0]


def test_bad_point_skips_the_whole_image(copy):
  root, sql = copy
  sql("UPDATE FeatureCoords SET x = 'abc' WHERE face_id = 39342 AND feature_id = 8")
  with pytest.raises(records.AnnotationError,
                     match=r"FeatureCoords row \d+ \(face_id 39342, LEC\)"):
    aflw.load(root)
  recs = aflw.load(root, on_error="skip")
  assert [r.image_id for r in recs] == ["flickr/2/image00013", "flickr/3/image00020"]
  assert len(recs.skipped) == 1


@pytest.mark.parametrize("statement,reason", [
    ("INSERT INTO FeatureCoords VALUES (39344, 3, 1.0, 2.0)", "given twice"),
    ("DELETE FROM FaceRect WHERE face_id = 39344", "no FaceRect row"),
    ("UPDATE FaceImages SET file_id = 'other.jpg' WHERE file_id = 'image00020.jpg'",
     "not in FaceImages"),
    ("UPDATE FaceMetaData SET sex = 'x' WHERE face_id = 39343", "sex must be"),
    ("UPDATE FacePose SET yaw = NULL WHERE face_id = 39343", "not a finite number"),
    ("UPDATE FaceRect SET x = 500 WHERE face_id = 39344", "outside"),
    ("DELETE FROM FeatureCoordTypes WHERE code = 'MC'", "lacks the codes"),
])
def test_malformed_rows_are_clear_errors(copy, statement, reason):
  root, sql = copy
  sql(statement)
  with pytest.raises(records.AnnotationError, match=reason):
    aflw.load(root)


def test_image_size_is_checked_against_the_database(copy):
  root, sql = copy
  sql("UPDATE FaceImages SET width = 121 WHERE file_id = 'image00002.jpg'")
  with pytest.raises(records.AnnotationError, match="FaceImages row 1.*database says 121x90"):
    aflw.load(root)
  assert aflw.load(root, check_images=False)[0].image_size == (90, 121)


def test_missing_image_is_skipped_and_counted(copy):
  root, _ = copy
  (__import__("pathlib").Path(root) / "data" / "flickr" / "2" / "image00013.jpg").unlink()
  recs = aflw.load(root, on_error="skip")
  assert len(recs) == 2 and len(recs.skipped) == 1
  assert len(aflw.load(root, check_images=False)) == 3
