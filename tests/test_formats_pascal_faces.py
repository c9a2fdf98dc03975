"""PASCAL faces reader on a fixture in the face-eval toolbox's format (v5 .mat struct array)."""

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest
import scipy.io

from data_pipelines import records
from data_pipelines.formats import pascal_faces
from data_pipelines import images

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "pascal_faces"
MAT = "Annotations_Face_PASCALLayout_large_fixed.mat"


def _generator():
  spec = importlib.util.spec_from_file_location("pascal_faces_fixture", FIXTURE / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _with_annotations(tmp_path, edit):
  """A copy of the fixture whose struct array went through edit(structs) first."""
  root = tmp_path / "pascal"
  shutil.copytree(FIXTURE, root)
  structs = _generator().annotations()
  edit(structs)
  scipy.io.savemat(root / MAT, {"Annotations": structs})
  return root


def test_boxes_flags_and_ids():
  recs = pascal_faces.load(str(FIXTURE))
  assert [r.image_id for r in recs] == ["2008_000003", "2008_000026", "2009_001234"]
  a, b, c = recs
  # 1-based inclusive corners (x1, y1, x2, y2) -> (x1 - 1, y1 - 1, x2, y2).
  np.testing.assert_array_equal(a.boxes, [[9, 11, 40, 45], [49, 7, 70, 30]])
  assert a.boxes.dtype == np.float32
  assert a.ignore.tolist() == [False, True]
  assert a.attributes["difficult"].tolist() == [0, 1]
  assert a.attributes["truncated"].tolist() == [0, 0]
  # A 4-column row: no flags, nothing ignored; pixel (1, 1) starts at the image corner.
  np.testing.assert_array_equal(b.boxes, [[0, 0, 20, 24]])
  assert b.attributes == {} and not b.ignore.any()
  # The last pixel column/row of an 80x60 image ends exactly at the border.
  np.testing.assert_array_equal(c.boxes, [[59, 39, 80, 60]])
  assert c.attributes["truncated"].tolist() == [1]
  assert a.image_size == (72, 96) and b.image_size == (48, 64) and c.image_size == (60, 80)
  assert a.image == str(FIXTURE / "images" / "2008_000003.jpg")
  assert records.summarize(recs)["faces"] == 4 and records.summarize(recs)["ignored"] == 1


def test_structure_matches_the_toolbox_reader():
  # The toolbox does: ann = loadmat(f)["Annotations"]; len(ann); ann[i]["imgname"][0][0];
  # rows of ann[i]["objects"][0]. Our fixture must read the same way.
  ann = scipy.io.loadmat(FIXTURE / MAT)["Annotations"]
  assert len(ann) == 3
  assert ann[0]["imgname"][0][0] == "2008_000003.jpg"
  assert len(ann[0]["objects"][0]) == 2 and list(ann[0]["objects"][0][1]) == [50, 8, 70, 30, 0, 1]


def test_image_locations(tmp_path):
  root = tmp_path / "voc"
  jpegs = root / "VOCdevkit" / "VOC2012" / "JPEGImages"
  shutil.copytree(FIXTURE / "images", jpegs)
  (root / "annotations").mkdir()
  shutil.copy(FIXTURE / MAT, root / "annotations" / MAT)
  recs = pascal_faces.load(str(root))
  assert recs[2].image == str(jpegs / "2009_001234.jpg") and recs[2].image_size == (60, 80)
  elsewhere = tmp_path / "pics"
  shutil.copytree(FIXTURE / "images", elsewhere)
  recs = pascal_faces.load(str(FIXTURE), image_dir=str(elsewhere))
  assert recs[0].image == str(elsewhere / "2008_000003.jpg")


def test_original_annotations_are_the_fallback(tmp_path):
  root = tmp_path / "p"
  shutil.copytree(FIXTURE, root)
  (root / MAT).rename(root / "Annotations_Face_PASCALLayout_large.mat")
  assert len(pascal_faces.load(str(root))) == 3


@pytest.mark.parametrize("edit, reason", [
    (lambda s: s[1, 0].__setitem__("objects", np.array([[1.0, 1.0, 20.0]])), "objects must be"),
    (lambda s: s[1, 0].__setitem__("imgname", np.array([3.0])), "expected a string"),
    (lambda s: s[1, 0].__setitem__("objects", np.array([[1, 1, np.nan, 24.0]])), "non-finite"),
    (lambda s: s[1, 0].__setitem__("objects", np.array([[30, 1, 20, 24.0]])), "x2 < x1"),
    (lambda s: s[1, 0].__setitem__("objects", np.array([[1, 1, 20, 24, 0, 0.5]])),
     "difficult flags must be integers"),
    (lambda s: s[1, 0].__setitem__("objects", np.array([[70, 1, 90, 24.0]])), "outside the 64x48"),
])
def test_malformed_entries(tmp_path, edit, reason):
  root = _with_annotations(tmp_path, edit)
  with pytest.raises(records.AnnotationError, match=rf"{MAT}: Annotations\(2\).*{reason}"):
    pascal_faces.load(str(root))
  recs = pascal_faces.load(str(root), on_error="skip")
  assert [r.image_id for r in recs] == ["2008_000003", "2009_001234"]
  assert len(recs.skipped) == 1 and "Annotations(2)" in recs.skipped[0]


def test_missing_image_and_files(tmp_path):
  root = tmp_path / "p"
  shutil.copytree(FIXTURE, root)
  (root / "images" / "2008_000026.jpg").unlink()
  with pytest.raises(images.ImageDecodeError, match="2008_000026.jpg"):
    pascal_faces.load(str(root))
  recs = pascal_faces.load(str(root), on_error="skip")
  assert len(recs) == 2 and len(recs.skipped) == 1
  assert len(pascal_faces.load(str(root), check_images=False)) == 3
  with pytest.raises(FileNotFoundError, match=MAT):
    pascal_faces.load(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="only split"):
    pascal_faces.load(str(root), split="train")
  (root / "other.mat").write_bytes(b"not a mat file")
  with pytest.raises(records.AnnotationError, match="other.mat"):
    pascal_faces.load(str(root), annotation=str(root / "other.mat"))
