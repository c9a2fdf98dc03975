"""CMU+MIT reader on a fixture in the course-release layout (CRLF, absent-image landmark lines)."""

import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import cmu_mit

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "cmu_mit"


def _by_id(recs):
  return {r.image_id: r for r in recs}


def _copy(tmp_path):
  root = tmp_path / "cmu"
  shutil.copytree(FIXTURE, root)
  return root


def test_boxes_inclusive_corners_and_landmarks_as_written():
  recs = cmu_mit.load(str(FIXTURE))
  # Box-file order first, then face-free pictures from images/.
  assert [r.image_id for r in recs] == ["group", "single", "scenery"]
  group, single, scenery = recs
  # Inclusive pixel corners: x_max + 1, y_max + 1.
  np.testing.assert_array_equal(group.boxes, [[10, 12, 30, 34], [45, 8, 71, 36]])
  np.testing.assert_array_equal(single.boxes, [[5, 6, 35, 41]])
  assert group.boxes.dtype == np.float32
  assert group.landmark_scheme == "cmu6" and group.landmarks.shape == (2, 6, 2)
  # Landmarks unshifted; paired line by line with the boxes, absent-image lines skipped.
  np.testing.assert_array_equal(group.landmarks[1], [[52, 18], [62, 17], [57, 23], [53, 28],
                                                     [57.5, 29], [61, 28]])
  np.testing.assert_array_equal(single.landmarks[0, 0], [13.5, 19.0])
  assert group.landmark_mask.all()
  assert group.image_size == (60, 80) and single.image_size == (50, 40)
  assert group.image.endswith("images/group.jpg")
  assert scenery.num_faces == 0 and scenery.landmarks.shape == (0, 6, 2)
  assert scenery.image_size == (30, 30)


def test_face_only_boxes():
  recs = _by_id(cmu_mit.load(str(FIXTURE), boxes="face_only", check_images=False))
  np.testing.assert_array_equal(recs["group"].boxes, [[13, 16, 27, 31], [49, 13, 67, 32]])
  assert "image_size" not in recs["group"].meta
  # Landmarks stay paired with the faces.
  np.testing.assert_array_equal(recs["single"].landmarks[0, 2], [19.0, 25.5])


def test_without_landmarks():
  recs = cmu_mit.load(str(FIXTURE), landmarks=False)
  assert all(r.landmarks is None and r.landmark_scheme is None for r in recs)


def test_bad_arguments():
  with pytest.raises(ValueError, match="boxes must be"):
    cmu_mit.load(str(FIXTURE), boxes="tight")
  with pytest.raises(ValueError, match="single split"):
    cmu_mit.load(str(FIXTURE), split="train")
  with pytest.raises(FileNotFoundError):
    cmu_mit.load(str(FIXTURE / "nowhere"))


def test_malformed_line_names_file_and_line(tmp_path):
  root = _copy(tmp_path)
  path = root / "ground_truth_bboxes.txt"
  path.write_bytes(path.read_bytes() + b"single.jpg 1 2 x 4\r\nsingle.jpg 1 2\r\n")
  with pytest.raises(records.AnnotationError, match=r"ground_truth_bboxes.txt:4: not a number"):
    cmu_mit.load(str(root))
  recs = cmu_mit.load(str(root), on_error="skip")
  assert len(recs.skipped) == 2 and ":5:" in recs.skipped[1]
  assert _by_id(recs)["single"].num_faces == 1


def test_landmark_count_mismatch_drops_only_points(tmp_path):
  root = _copy(tmp_path)
  path = root / "ground_truth_landmarks.txt"
  lines = path.read_bytes().split(b"\r\n")
  path.write_bytes(b"\r\n".join(line for line in lines if not line.startswith(b"single.jpg")))
  with pytest.raises(records.AnnotationError, match="0 landmark lines for 1 faces"):
    cmu_mit.load(str(root))
  recs = _by_id(cmu_mit.load(str(root), on_error="skip"))
  assert recs["single"].num_faces == 1 and not recs["single"].landmark_mask.any()
  assert recs["group"].landmark_mask.all()
  assert len(recs) == 3


def test_missing_image_and_box_off_image(tmp_path):
  root = _copy(tmp_path)
  (root / "images" / "single.jpg").unlink()
  with pytest.raises(ValueError, match="single.jpg"):
    cmu_mit.load(str(root))
  recs = cmu_mit.load(str(root), on_error="skip")
  assert [r.image_id for r in recs] == ["group", "scenery"] and len(recs.skipped) == 1
  # Without header checks the record stays (the image is not looked at).
  assert len(cmu_mit.load(str(root), check_images=False)) == 3
  root2 = _copy(tmp_path / "b")
  (root2 / "ground_truth_bboxes.txt").write_bytes(b"group.jpg 90 1 99 9\r\n")
  with pytest.raises(records.AnnotationError, match=r"ground_truth_bboxes.txt:1: .*outside"):
    cmu_mit.load(str(root2), landmarks=False)


def test_real_data(shared_data):
  root = shared_data / "cmu_mit_frontal"
  if not root.is_dir():
    pytest.skip("cmu_mit_frontal not in the shared data")
  recs = cmu_mit.load(str(root))  # With image headers: catches any missing picture.
  assert len(recs) == 130 and sum(r.num_faces for r in recs) == 511
  assert sum(r.num_faces == 0 for r in recs) == 13 and not recs.skipped
  assert all(r.landmark_mask.all() for r in recs)
  voyager = _by_id(recs)["voyager"]
  np.testing.assert_array_equal(voyager.boxes[0], [106, 22, 153, 81])
  np.testing.assert_array_equal(voyager.landmarks[0, 0], [122, 43])
  # Every face's points lie inside its box, and upright faces have the left eye on the left.
  for r in recs:
    inside = ((r.landmarks >= r.boxes[:, None, :2]) & (r.landmarks <= r.boxes[:, None, 2:]))
    assert inside.all(), r.image_id
  eyes_left = np.concatenate([r.landmarks[:, 0, 0] < r.landmarks[:, 1, 0] for r in recs])
  assert eyes_left.sum() == 507  # The 4 exceptions are upside-down playing-card faces.
  face_only = cmu_mit.load(str(root), boxes="face_only", check_images=False)
  assert sum(r.num_faces for r in face_only) == 511
