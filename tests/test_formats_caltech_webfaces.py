"""Caltech WebFaces reader: 1-based points, the documented box rule, grouping, bad lines."""

import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import caltech_webfaces
from data_pipelines import geometry

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "caltech_webfaces"


def _copy(tmp_path):
  root = tmp_path / "caltech"
  shutil.copytree(FIXTURE, root)
  return root


def test_points_shifted_and_box_rule_by_hand():
  recs = caltech_webfaces.load(str(FIXTURE))
  assert [r.image_id for r in recs] == ["pic00001", "pic00002"]
  one, two = recs
  assert one.landmark_scheme == "caltech4"
  # 1-based pixel indices -> corner coordinates: minus 0.5.
  np.testing.assert_allclose(one.landmarks[0], [[20, 24.5], [40, 24.5], [30, 34.5], [30, 40.5]])
  # Eyes' midpoint (30, 24.5), iod 20, eye-mouth 16: side max(2.2 * 20, 2.0 * 16) = 44,
  # centre (30, 24.5 + 0.6 * 16) = (30, 34.1).
  np.testing.assert_allclose(one.boxes[0], [8, 12.1, 52, 56.1], atol=1e-5)
  assert one.image_size == (64, 64)
  # Two lines of one picture become one record with two faces, in file order.
  assert two.num_faces == 2 and two.meta["lines"] == [2, 3]
  np.testing.assert_allclose(two.landmarks[1, 0], [59.5, 21.5])
  # The mouth-dominated case: iod 10, eye-mouth 12 -> side 24 about (24.5, 19.5 + 0.6 * 12).
  np.testing.assert_allclose(two.boxes[0], [12.5, 14.7, 36.5, 38.7], atol=1e-5)


def test_box_rule_is_rotation_equivariant_and_scalable():
  pts = np.array([[[20, 24.5], [40, 24.5], [30, 34.5], [30, 40.5]]], np.float64)
  box = caltech_webfaces.boxes_from_points(pts)[0]
  # Rotating the face by 90 degrees about the eye midpoint keeps side and centre distance.
  c = np.array([30, 24.5])
  rotated = (pts - c) @ np.array([[0, 1], [-1, 0]]) + c
  rbox = caltech_webfaces.boxes_from_points(rotated)[0]
  np.testing.assert_allclose(rbox[2] - rbox[0], box[2] - box[0], rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm((rbox[:2] + rbox[2:]) / 2 - c),
                             np.linalg.norm((box[:2] + box[2:]) / 2 - c), rtol=1e-6)
  big = caltech_webfaces.boxes_from_points(pts, box_scale=1.5)[0]
  np.testing.assert_allclose(big, geometry.scale_boxes(box[None], 1.5)[0], atol=1e-5)


def test_five_point_conversion_masks_mouth_corners():
  one = caltech_webfaces.load(str(FIXTURE), check_images=False)[0]
  five, mask = geometry.to_five(one.landmarks, one.landmark_scheme, one.landmark_mask)
  assert mask[0].tolist() == [True, True, True, False, False]
  np.testing.assert_allclose(five[0, 0], [20, 24.5])


def test_malformed_lines(tmp_path):
  root = _copy(tmp_path)
  path = root / "WebFaces_GroundThruth.txt"
  path.write_text(path.read_text() + "pic00001.jpg 1 2 3 4 5 6 7\npic00001.jpg 1 2 3 4 5 6 7 nan\n")
  with pytest.raises(records.AnnotationError, match=r"WebFaces_GroundThruth.txt:4: expected"):
    caltech_webfaces.load(str(root))
  recs = caltech_webfaces.load(str(root), on_error="skip")
  assert len(recs.skipped) == 2 and ":5: non-finite" in recs.skipped[1]
  assert sum(r.num_faces for r in recs) == 3


def test_missing_image(tmp_path):
  root = _copy(tmp_path)
  (root / "images" / "pic00002.jpg").unlink()
  with pytest.raises(ValueError, match="pic00002.jpg"):
    caltech_webfaces.load(str(root))
  recs = caltech_webfaces.load(str(root), on_error="skip")
  assert [r.image_id for r in recs] == ["pic00001"] and len(recs.skipped) == 1


def test_bad_arguments():
  with pytest.raises(ValueError, match="no splits"):
    caltech_webfaces.load(str(FIXTURE), split="train")
  with pytest.raises(FileNotFoundError):
    caltech_webfaces.load(str(FIXTURE / "missing"))


def test_real_data(shared_data):
  root = shared_data / "caltech_webfaces"
  if not root.is_dir():
    pytest.skip("caltech_webfaces not in the shared data")
  recs = caltech_webfaces.load(str(root), check_images=False)
  assert len(recs) == 7092 and sum(r.num_faces for r in recs) == 10524 and not recs.skipped
  pts = np.concatenate([r.landmarks for r in recs])
  boxes = np.concatenate([r.boxes for r in recs])
  assert (pts[:, 0, 0] < pts[:, 1, 0]).all()  # "left eye" is the image's left.
  inside = (pts >= boxes[:, None, :2]) & (pts <= boxes[:, None, 2:])
  assert inside.all()
