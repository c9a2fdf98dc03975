"""AFW reader on fixtures in the released formats (v7.3 anno.mat, its v5 copy, toolbox struct)."""

import importlib.util
import pathlib
import re
import shutil

import h5py
import numpy as np
import pytest
import scipy.io

from data_pipelines import records
from data_pipelines.formats import afw

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "afw"
ANNO = FIXTURE / "testimages" / "anno.mat"
ANNO_V5 = FIXTURE / "annotations" / "anno2.mat"
TOOLBOX = FIXTURE / "annotations" / "new_annotations_AFW.mat"


def _generator():
  spec = importlib.util.spec_from_file_location("afw_fixture", FIXTURE / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_fixture_is_v73_and_reads_like_community_code():
  # scipy refuses it exactly as it refuses the real file; h5py access as morghulis / RCN do it.
  assert scipy.io.matlab.matfile_version(str(ANNO)) == (2, 0)
  with pytest.raises(NotImplementedError, match="v7.3"):
    scipy.io.loadmat(str(ANNO))
  with h5py.File(ANNO, "r") as f:
    anno = f["anno"]
    assert anno.shape == (4, 3)
    assert "".join(chr(c) for c in f[anno[0][0]][:].ravel()) == "1004109301.jpg"
    assert len(f[anno[1][0]]) == 2
    box = f[f[anno[1][0]][1][0]]
    assert (box[0, 0], box[1, 0], box[0, 1], box[1, 1]) == (60, 20, 90, 60)
    points = f[f[anno[3][0]][0][0]]
    assert (points[0, 2], points[1, 2]) == (26, 33)  # Nose (x, y).


@pytest.mark.parametrize("annotation", [None, str(ANNO), str(ANNO_V5)])
def test_boxes_landmarks_pose(annotation):
  recs = afw.load(str(FIXTURE), annotation=annotation)
  assert [r.image_id for r in recs] == ["1004109301", "1051618982", "111076519"]
  a, profile, full = recs
  # [x1 y1; x2 y2], 1-based inclusive -> (x1 - 1, y1 - 1, x2, y2).
  np.testing.assert_array_equal(a.boxes, [[10, 12, 40, 50], [59, 19, 90, 60]])
  np.testing.assert_array_equal(full.boxes, [[0, 0, 64, 48]])  # The whole 64x48 image.
  assert a.landmark_scheme == "cmu6" and a.landmarks.shape == (2, 6, 2)
  # MATLAB pixel-centre coordinates -> minus half a pixel.
  np.testing.assert_array_equal(
      a.landmarks[0], [[20, 24.5], [31.5, 25], [25.5, 32.5], [20.5, 40.5], [26, 41.5],
                       [30.5, 40.5]])
  # -1 (left eye) and NaN (mouth centre) are missing points.
  assert a.landmark_mask[1].tolist() == [False, True, True, True, False, True]
  np.testing.assert_array_equal(a.landmarks[1, 1], [74.5, 34.5])
  assert not profile.landmark_mask.any() and profile.landmarks.shape == (1, 6, 2)
  np.testing.assert_array_equal(a.meta["pose"], np.float32([[-15, 0, 3.5], [45, -5, 0]]))
  np.testing.assert_array_equal(profile.meta["pose"], [[90, 0, 0]])
  assert a.image == str(FIXTURE / "testimages" / "1004109301.jpg")
  assert a.image_size == (72, 96) and profile.image_size == (64, 80)
  assert not any(r.ignore.any() for r in recs)


def test_five_point_conversion_of_cmu6():
  from data_pipelines import geometry
  a = afw.load(str(FIXTURE))[0]
  five, mask = geometry.to_five(a.landmarks, a.landmark_scheme, a.landmark_mask)
  # The five points drop the mouth centre: corners are points 3 and 5 of cmu6.
  np.testing.assert_array_equal(five[0], a.landmarks[0, [0, 1, 2, 3, 5]])
  assert mask[1].tolist() == [False, True, True, True, True]


def test_toolbox_struct_annotations():
  recs = afw.load(str(FIXTURE), annotation=str(TOOLBOX))
  assert [r.image_id for r in recs] == ["1004109301", "1051618982", "111076519"]
  np.testing.assert_array_equal(recs[0].boxes, [[10, 12, 40, 50], [59, 19, 90, 60]])
  assert recs[0].landmarks is None and recs[0].ignore.tolist() == [False, True]
  assert recs[0].meta["dataset"] == "afw"


def _write_v73(tmp_path, edit):
  root = tmp_path / "afw"
  shutil.copytree(FIXTURE, root)
  generator = _generator()
  cell = generator.anno_cell()
  edit(cell)
  generator.write_v73(root / "testimages" / "anno.mat", "anno", cell)
  return root


@pytest.mark.parametrize("edit, reason", [
    (lambda c: c[1, 1].__setitem__((0, 0), np.array([[30.0, 10.0, 60.0, 44.0]])), "2 x 2 matrix"),
    (lambda c: c[1, 3].__setitem__((0, 0), np.ones((5, 2))), "landmarks must be 6 x 2"),
    (lambda c: c[1, 2].__setitem__((0, 0), np.array([[90.0, 0.0]])), "pose is"),
    (lambda c: c[1, 1].__setitem__((0, 0), np.array([[30.0, 10], [20, 44]])), "x2 < x1"),
    (lambda c: c[1, 1].__setitem__((0, 0), np.array([[30.0, np.nan], [60, 44]])), "non-finite"),
    (lambda c: c[1, 1].__setitem__((0, 0), np.array([[90.0, 10], [99, 44]])), "outside the 80x64"),
    (lambda c: c.__setitem__((1, 0), np.array([[1.0, 2.0]])), "expected a string"),
])
def test_malformed_entries(tmp_path, edit, reason):
  root = _write_v73(tmp_path, edit)
  where = re.escape("anno.mat: anno{2,:}")
  with pytest.raises(records.AnnotationError, match=f"{where}.*{reason}"):
    afw.load(str(root))
  recs = afw.load(str(root), on_error="skip")
  assert [r.image_id for r in recs] == ["1004109301", "111076519"]
  assert len(recs.skipped) == 1 and "anno{2,:}" in recs.skipped[0]


def test_count_mismatch_between_boxes_and_landmarks(tmp_path):
  def edit(cell):
    cell[0, 3] = cell[0, 3][:, :1]
  root = _write_v73(tmp_path, edit)
  with pytest.raises(records.AnnotationError, match="2 boxes but 2 poses and 1 landmark"):
    afw.load(str(root))


def test_missing_image_files_and_split(tmp_path):
  root = tmp_path / "afw"
  shutil.copytree(FIXTURE, root)
  (root / "testimages" / "111076519.jpg").unlink()
  recs = afw.load(str(root), on_error="skip")
  assert len(recs) == 2 and "111076519.jpg" in recs.skipped[0]
  assert len(afw.load(str(root), check_images=False)) == 3
  with pytest.raises(ValueError, match="only split"):
    afw.load(str(root), split="train")
  with pytest.raises(FileNotFoundError, match="anno.mat"):
    afw.load(str(tmp_path / "empty"))
  scipy.io.savemat(root / "other.mat", {"something": np.zeros(3)})
  with pytest.raises(records.AnnotationError, match="no variable anno or Annotations"):
    afw.load(str(root), annotation=str(root / "other.mat"))


def test_images_next_to_annotation_or_given(tmp_path):
  # Flat layout: images and anno.mat directly in root.
  root = tmp_path / "flat"
  shutil.copytree(FIXTURE / "testimages", root)
  rec = afw.load(str(root))[2]
  assert rec.image == str(root / "111076519.jpg") and rec.image_size == (48, 64)
  recs = afw.load(str(FIXTURE), annotation=str(ANNO_V5), image_dir=str(root))
  assert recs[0].image == str(root / "1004109301.jpg")
