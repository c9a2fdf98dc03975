"""COFW reader on tiny MATLAB v7.3 files (tests/fixtures/cofw, see generate.py)."""

import importlib.util

import numpy as np
import pytest
import scipy.io

from data_pipelines import records
from data_pipelines.formats import cofw
from data_pipelines import geometry
from data_pipelines import images


@pytest.fixture(scope="module")
def gen(fixtures_dir):
  """The fixture generator, for the exact values it wrote."""
  spec = importlib.util.spec_from_file_location("cofw_generate",
                                                fixtures_dir / "cofw" / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture()
def root(fixtures_dir):
  return str(fixtures_dir / "cofw")


def _write(gen, tmp_path, split="train", edit=None):
  """Writes the fixture's files into tmp_path, after edit(ims, phis, boxes) on `split`."""
  for name, (filename, *names) in gen.VARIABLES.items():
    ims, phis, boxes = gen.faces(name)
    if name == split and edit is not None:
      ims, phis, boxes = edit(ims, phis, boxes)
    gen.write_v73(tmp_path / filename, names, ims, phis, boxes)
  return str(tmp_path)


def test_points_and_box_move_from_matlab_to_corner_frame(root, gen):
  r = cofw.load(root, split="train")[0]
  _, phis, boxes = gen.faces("train")
  # Box (3, 2, 14, 18) in MATLAB's 1-based frame -> (2.5, 1.5, 16.5, 19.5).
  np.testing.assert_array_equal(r.boxes, [[2.5, 1.5, 16.5, 19.5]])
  want = np.stack([phis[0, :29], phis[0, 29:58]], -1) - 0.5
  np.testing.assert_allclose(r.landmarks[0], want, atol=1e-5)
  np.testing.assert_allclose(r.landmarks[0, 0], [4 + 12 * 0.10 - 0.5, 3 + 12 * 0.20 - 0.5],
                             atol=1e-5)
  assert r.landmark_scheme == "cofw29" and r.image_id == "cofw_train/000001"
  assert r.meta["row"] == 1 and r.image_size == (24, 20)


def test_occluded_points_stay_annotated(root):
  r = cofw.load(root, split="train")[0]
  assert r.landmark_mask.all()
  assert r.meta["occluded"].shape == (1, 29) and r.meta["occluded"].dtype == bool
  np.testing.assert_array_equal(np.flatnonzero(r.meta["occluded"][0]), [16, 22])


def test_embedded_images_round_trip_through_png(root, gen):
  recs = cofw.load(root, split="train")
  ims, _, _ = gen.faces("train")
  assert isinstance(recs[0].image, bytes) and recs[0].image[:8] == b"\x89PNG\r\n\x1a\n"
  np.testing.assert_array_equal(images.decode(recs[0].image), ims[0])  # H x W x 3, untransposed.
  gray = images.decode(recs[1].image)
  assert recs[1].image_size == (16, 18) == gray.shape[:2]
  np.testing.assert_array_equal(gray, np.repeat(ims[1][..., None], 3, -1))


@pytest.mark.parametrize("split,ids", [
    ("train", ["cofw_train/000001", "cofw_train/000002", "cofw_train/000003"]),
    ("test", ["cofw_test/000001", "cofw_test/000002"])])
def test_splits(root, split, ids):
  assert [r.image_id for r in cofw.load(root, split=split)] == ids


def test_no_split_reads_train_then_test(root):
  assert len(cofw.load(root)) == 5
  with pytest.raises(ValueError, match="split"):
    cofw.load(root, split="val")


def test_v7_files_read_the_same(gen, tmp_path, root):
  ims, phis, boxes = gen.faces("test")
  cell = np.empty((len(ims), 1), object)
  for i, im in enumerate(ims):
    cell[i, 0] = im
  scipy.io.savemat(tmp_path / "COFW_test_color.mat", {"IsT": cell, "phisT": phis, "bboxesT": boxes})
  got, want = cofw.load(str(tmp_path), split="test"), cofw.load(root, split="test")
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.image == b.image


def _set(row, col, value, what="phis"):
  def edit(ims, phis, boxes):
    (phis if what == "phis" else boxes)[row, col] = value
    return ims, phis, boxes
  return edit


@pytest.mark.parametrize("edit,reason", [
    (_set(1, 3, np.nan), "non-finite"),
    (_set(1, 60, 2), "occlusion flags"),
    (_set(1, 2, 0, "boxes"), "width and height"),
    (_set(1, 0, 300, "boxes"), "outside"),
])
def test_bad_row_names_file_and_row_and_skip_counts(gen, tmp_path, edit, reason):
  root = _write(gen, tmp_path, edit=edit)
  with pytest.raises(records.AnnotationError, match=reason) as e:
    cofw.load(root, split="train")
  assert e.value.path.endswith("COFW_train_color.mat") and e.value.line == 2
  assert "row 2" in str(e.value)
  recs = cofw.load(root, split="train", on_error="skip")
  assert [r.image_id for r in recs] == ["cofw_train/000001", "cofw_train/000003"]
  assert len(recs.skipped) == 1


def test_malformed_files_are_clear_errors(gen, tmp_path):
  root = _write(gen, tmp_path, edit=lambda ims, phis, boxes: (ims, phis[:, :80], boxes))
  with pytest.raises(records.AnnotationError, match="do not fit 3 images"):
    cofw.load(root, split="train")
  root = _write(gen, tmp_path, edit=lambda ims, phis, boxes: ([ims[0].astype(float)] + ims[1:],
                                                              phis, boxes))
  with pytest.raises(records.AnnotationError, match="uint8"):
    cofw.load(root, split="train")
  (tmp_path / "COFW_test_color.mat").unlink()
  with pytest.raises(records.AnnotationError, match="missing COFW file"):
    cofw.load(root, split="test")


def test_cofw29_flip_lands_on_the_mirrored_semantic_points(root, gen):
  names = gen.PART_NAMES
  def mirror(n):
    return n.replace("left", "@").replace("right", "left").replace("@", "right")
  r = cofw.load(root, split="train")[0]
  pts, width = r.landmarks[0], r.image_size[1]
  for i, n in enumerate(names):  # The fixture's layout puts each left part on the image's left.
    if n.startswith("left"):
      assert pts[i, 0] < pts[names.index(mirror(n)), 0]
  flipped = geometry.flip_landmarks(pts, "cofw29", width)
  for i, n in enumerate(names):
    j = names.index(mirror(n))
    np.testing.assert_allclose(flipped[i], [width - pts[j, 0], pts[j, 1]], atol=1e-5, err_msg=n)
  np.testing.assert_allclose(geometry.flip_landmarks(flipped, "cofw29", width), pts, atol=1e-5)
  five, mask = geometry.to_five(pts, "cofw29")
  assert mask.all()
  np.testing.assert_array_equal(five, pts[[names.index(n) for n in (
      "left_pupil", "right_pupil", "nose_tip", "left_mouth", "right_mouth")]])
  np.testing.assert_allclose(geometry.to_five(flipped, "cofw29")[0],
                             geometry.flip_landmarks(five, "five", width), atol=1e-5)
