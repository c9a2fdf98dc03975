"""CelebA reader on a fixture in the official layout (tests/fixtures/celeba, see generate.py)."""

import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import celeba
from data_pipelines import geometry


@pytest.fixture()
def root(fixtures_dir):
  return str(fixtures_dir / "celeba")


@pytest.fixture()
def copy(fixtures_dir, tmp_path):
  """A writable copy of the fixture, for corrupting one line at a time."""
  dst = tmp_path / "celeba"
  shutil.copytree(fixtures_dir / "celeba", dst)
  return dst


def _by_id(recs):
  return {r.image_id: r for r in recs}


def _replace_line(path, line, text):
  lines = path.read_text().split("\n")
  lines[line - 1] = text
  path.write_text("\n".join(lines))


def test_in_the_wild_boxes_and_points_are_exact(root):
  recs = celeba.load(root)
  assert [r.image_id for r in recs] == ["000001", "000002", "000003", "000004", "000005"]
  r = recs[0]
  # `000001.jpg    20  24  50  60`: 0-based pixel columns 20..69 -> corner frame (20, 24, 70, 84).
  np.testing.assert_array_equal(r.boxes, [[20, 24, 70, 84]])
  # Integer landmark pixels -> pixel centres (+0.5).
  np.testing.assert_array_equal(
      r.landmarks[0], [[34.5, 46.5], [56.5, 45.5], [45.5, 58.5], [36.5, 70.5], [55.5, 71.5]])
  assert r.landmark_scheme == "five" and r.landmark_mask.all()
  assert r.image.endswith("Img/img_celeba/000001.jpg")
  assert r.image_size == (112, 96)
  assert r.meta["line"] == 3
  np.testing.assert_array_equal(_by_id(recs)["000004"].boxes, [[30, 5, 60, 41]])


def test_lefteye_is_the_eye_on_the_image_left(root):
  for r in celeba.load(root) + celeba.load(root, aligned=True):
    five = r.landmarks[0]
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0], r.image_id


def test_attributes_are_one_and_zero(root):
  recs = celeba.load(root)
  names = list(recs[0].attributes)
  assert len(names) == 40 and names[0] == "5_o_Clock_Shadow" and names[-1] == "Young"
  for i, r in enumerate(recs):
    got = np.array([r.attributes[n][0] for n in names])
    assert r.attributes[names[0]].dtype == np.int8
    np.testing.assert_array_equal(got, [(i + j) % 3 == 0 for j in range(40)])
  assert celeba.load(root, attributes=False)[0].attributes == {}


@pytest.mark.parametrize("split,ids", [
    ("train", ["000001", "000002"]), ("val", ["000003"]), ("test", ["000004", "000005"]),
    ("mafl_train", ["000001", "000002"]), ("mafl_test", ["000005"]),
    (None, ["000001", "000002", "000003", "000004", "000005"])])
def test_splits(root, split, ids):
  recs = celeba.load(root, split=split, check_images=False)
  assert [r.image_id for r in recs] == ids
  if split in ("train", "val", "test"):
    assert {r.meta["partition"] for r in recs} == {split}


def test_unknown_split_is_refused(root):
  with pytest.raises(ValueError, match="split"):
    celeba.load(root, split="validation")


def test_aligned_box_is_the_wild_box_carried_by_the_fitted_similarity(root):
  recs = _by_id(celeba.load(root, aligned=True))
  r = recs["000001"]
  # Aligned = 2 * wild + (-1, 5) on the integer values. In the corner frame the centre (45, 54)
  # maps to 2 * 45 - 1 - 0.5 = 88.5, 2 * 54 + 5 - 0.5 = 112.5; the 50x60 box doubles.
  np.testing.assert_allclose(r.boxes, [[38.5, 52.5, 138.5, 172.5]], atol=1e-4)
  np.testing.assert_array_equal(r.landmarks[0, 0], [67.5, 97.5])
  assert r.image.endswith("Img/img_align_celeba/000001.jpg") and r.image_size == (218, 178)
  # 000002: a = 1 + i (45 degrees, scale sqrt 2), t = (60, 40): the centre (30, 34) goes to
  # (1 + i)(30 + 34i) + 60 + 40i + (1 - (1 + i)) * 0.5 (1 + i) = 56.5 + 103.5i.
  h = np.sqrt(2) * np.array([20, 22])
  np.testing.assert_allclose(recs["000002"].boxes[0], [56.5 - h[0], 103.5 - h[1],
                                                       56.5 + h[0], 103.5 + h[1]], atol=1e-4)


def test_flip_of_five_swaps_eyes_and_mouth_corners(root):
  r = celeba.load(root, check_images=False)[0]
  flipped = geometry.flip_landmarks(r.landmarks[0], "five", 96)
  np.testing.assert_array_equal(flipped[0], [96 - 56.5, 45.5])  # new left eye = old right eye
  np.testing.assert_array_equal(flipped[3], [96 - 55.5, 71.5])
  assert flipped[0, 0] < flipped[1, 0]


def test_missing_file_is_one_clear_error(copy):
  (copy / "Anno" / "list_landmarks_celeba.txt").unlink()
  with pytest.raises(records.AnnotationError, match="list_landmarks_celeba.txt"):
    celeba.load(str(copy))


@pytest.mark.parametrize("text,reason", [
    ("000003.jpg  17  22  33  23  25  31  18  39  32", "found 10 fields"),
    ("000003.jpg  17  22  33  x23  25  31  18  39  32  40", "not a number"),
    ("000003.jpg  17  22  33  nan  25  31  18  39  32  40", "non-finite")])
def test_malformed_line_names_file_and_line(copy, text, reason):
  path = copy / "Anno" / "list_landmarks_celeba.txt"
  _replace_line(path, 5, text)
  with pytest.raises(records.AnnotationError, match=reason) as e:
    celeba.load(str(copy))
  assert e.value.path == str(path) and e.value.line == 5
  assert f"list_landmarks_celeba.txt:5:" in str(e.value)


def test_skip_mode_skips_and_counts_the_bad_row(copy):
  _replace_line(copy / "Anno" / "list_landmarks_celeba.txt", 5, "000003.jpg 1 2 3")
  recs = celeba.load(str(copy), on_error="skip")
  assert [r.image_id for r in recs] == ["000001", "000002", "000004", "000005"]
  assert len(recs.skipped) == 1 and ":5:" in recs.skipped[0]


def test_bad_attribute_value_names_its_line(copy):
  path = copy / "Anno" / "list_attr_celeba.txt"
  lines = path.read_text().split("\n")
  _replace_line(path, 4, lines[3].replace("-1", " 0", 1))
  with pytest.raises(records.AnnotationError, match="attribute") as e:
    celeba.load(str(copy))
  assert e.value.line == 4
  recs = celeba.load(str(copy), on_error="skip")
  assert "000002" not in _by_id(recs) and len(recs.skipped) == 1


def test_count_and_header_lines_are_checked(copy):
  path = copy / "Anno" / "list_bbox_celeba.txt"
  _replace_line(path, 1, "6")
  with pytest.raises(records.AnnotationError, match="count line") as e:
    celeba.load(str(copy))
  assert e.value.line == 1
  _replace_line(path, 1, "5")
  _replace_line(path, 2, "image_id x y w h")
  with pytest.raises(records.AnnotationError, match="header") as e:
    celeba.load(str(copy))
  assert e.value.line == 2


def test_partition_code_and_mafl_name_are_checked(copy):
  _replace_line(copy / "Eval" / "list_eval_partition.txt", 2, "000002.jpg 7")
  with pytest.raises(records.AnnotationError, match="partition") as e:
    celeba.load(str(copy), split="train")
  assert e.value.line == 2
  _replace_line(copy / "Eval" / "list_eval_partition.txt", 2, "000002.jpg 0")
  _replace_line(copy / "MAFL" / "testing.txt", 1, "999999.jpg")
  with pytest.raises(records.AnnotationError, match="not a CelebA image") as e:
    celeba.load(str(copy), split="mafl_test")
  assert e.value.path.endswith("testing.txt") and e.value.line == 1


def test_box_outside_image_names_bbox_line(copy):
  _replace_line(copy / "Anno" / "list_bbox_celeba.txt", 6, "000004.jpg   500   5  30  36")
  with pytest.raises(records.AnnotationError, match="outside") as e:
    celeba.load(str(copy))
  assert e.value.path.endswith("list_bbox_celeba.txt") and e.value.line == 6
  recs = celeba.load(str(copy), on_error="skip")
  assert len(recs) == 4 and len(recs.skipped) == 1
  assert len(celeba.load(str(copy), check_images=False)) == 5  # No size, no check.


def test_missing_image_is_skipped_and_counted(copy):
  (copy / "Img" / "img_celeba" / "000002.jpg").unlink()
  recs = celeba.load(str(copy), on_error="skip")
  assert "000002" not in _by_id(recs) and len(recs.skipped) == 1
  assert "image_size" not in celeba.load(str(copy), check_images=False)[0].meta


def test_crlf_and_wider_padding_read_the_same(copy, root):
  for path in (copy / "Anno").iterdir():
    text = path.read_text().replace("  ", "   \t")
    path.write_bytes(text.replace("\n", "\r\n").encode())
  got, want = celeba.load(str(copy)), celeba.load(root)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.attributes.keys() == b.attributes.keys()
