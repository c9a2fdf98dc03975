"""WIDER FACE reader on a fixture in the official layout (bbx_gt quirks + RetinaFace label.txt)."""

import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import wider_face

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "wider_face"
GT_TRAIN = "wider_face_split/wider_face_train_bbx_gt.txt"


def _by_id(recs):
  return {r.image_id: r for r in recs}


def _copy(tmp_path):
  root = tmp_path / "wider"
  shutil.copytree(FIXTURE, root)
  return root


def _set_line(path, number, text):
  lines = path.read_text().split("\n")
  lines[number - 1] = text
  path.write_text("\n".join(lines))


def test_train_boxes_attributes_and_quirks():
  recs = wider_face.load(str(FIXTURE), split="train")
  assert [r.image_id for r in recs] == [
      "0--Parade/0_Parade_marchingband_1_5", "0--Parade/0_Parade_Parade_0_7",
      "12--Group/12_Group_Group_12_Group_Group_12_3"]
  a, zero, group = recs
  # (x, y, w, h) -> (x, y, x + w, y + h), no shift.
  np.testing.assert_array_equal(a.boxes, [[10, 12, 30, 36], [40, 5, 55, 23], [60, 30, 60, 30]])
  assert a.boxes.dtype == np.float32
  assert a.attributes["blur"].tolist() == [0, 2, 1]
  assert a.attributes["expression"].tolist() == [0, 1, 0]
  assert a.attributes["invalid"].tolist() == [0, 0, 1]
  assert a.attributes["occlusion"].tolist() == [0, 1, 0]
  assert a.attributes["pose"].tolist() == [0, 1, 0]
  assert all(v.dtype == np.int8 for v in a.attributes.values())
  # The zero-size, invalid face is kept and ignored.
  assert a.ignore.tolist() == [False, False, True]
  assert a.image_size == (60, 80) and zero.image_size == (48, 64)
  # Zero-face quirk: "0" then an all-zero line, which must not become a face or eat a block.
  assert zero.num_faces == 0 and zero.attributes["blur"].shape == (0,)
  # The w = 0 box at x = 0 touches no pixel: dropped, counted; the invalid face is ignored; the
  # face running past the 80x60 border is kept as annotated.
  np.testing.assert_array_equal(group.boxes, [[5, 5, 35, 45], [70, 50, 90, 70]])
  assert group.meta["dropped_zero_size"] == 1
  assert group.ignore.tolist() == [True, False]
  assert group.attributes["illumination"].tolist() == [1, 0]
  assert group.attributes["occlusion"].tolist() == [2, 0]
  assert group.image.endswith("WIDER_train/images/12--Group/12_Group_Group_12_Group_Group_12_3.jpg")
  assert group.meta["event"] == "12--Group"


def test_retinaface_landmarks_matched_by_box():
  a, zero, group = wider_face.load(str(FIXTURE), split="train")
  assert a.landmark_scheme == "five"
  np.testing.assert_allclose(a.landmarks[0], [[14.5, 20.25], [24, 20], [19, 26.5], [15, 31],
                                              [23.5, 31.5]])
  # The occluded nose (flag 1.0) is annotated; faces written with -1 have no points.
  assert a.landmark_mask.tolist() == [[True] * 5, [False] * 5, [False] * 5]
  assert zero.landmarks.shape == (0, 5, 2)
  # label.txt lists this image's faces in another order and has one extra face.
  np.testing.assert_allclose(group.landmarks[1], [[75, 55.5], [84, 55.5], [79.5, 60.5], [76, 64],
                                                  [83, 64]])
  assert group.landmark_mask[0].tolist() == [True, True, False, True, False]
  np.testing.assert_allclose(group.landmarks[0, [0, 1, 3]], [[12, 18], [26, 18.5], [13, 35]])
  assert group.meta["unmatched_landmark_faces"] == 1


def test_no_landmarks_when_off_or_boxes_only(tmp_path):
  recs = wider_face.load(str(FIXTURE), split="train", landmarks=None)
  assert all(r.landmarks is None and r.landmark_scheme is None for r in recs)
  # val/label.txt has boxes only: no landmarks for val.
  val = wider_face.load(str(FIXTURE), split="val")
  assert all(r.landmarks is None for r in val)
  # An explicit path is used as given; a missing one is an error, not a silent fallback.
  root = _copy(tmp_path)
  moved = tmp_path / "elsewhere.txt"
  (root / "train" / "label.txt").rename(moved)
  assert wider_face.load(str(root), "train", check_images=False)[0].landmarks is None
  recs = wider_face.load(str(root), "train", check_images=False, landmarks=str(moved))
  assert recs[0].landmark_mask[0].all()
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    wider_face.load(str(root), "train", landmarks=str(tmp_path / "nope.txt"))


def test_val_test_and_default_splits():
  val = wider_face.load(str(FIXTURE), split="val")
  assert [r.num_faces for r in val] == [1, 0]
  np.testing.assert_array_equal(val[0].boxes, [[3, 4, 23, 26]])
  test = wider_face.load(str(FIXTURE), split="test")
  assert [r.image_id for r in test] == ["0--Parade/0_Parade_marchingband_1_9",
                                        "7--Cheering/7_Cheering_Cheering_7_1"]
  assert all(r.num_faces == 0 and r.attributes == {} for r in test)
  assert test[1].image_size == (36, 44)
  both = wider_face.load(str(FIXTURE))
  assert [r.meta["split"] for r in both] == ["train"] * 3 + ["val"] * 2
  summary = records.summarize(both)
  assert summary["faces"] == 5 + 1 and summary["ignored"] == 2
  with pytest.raises(ValueError, match="split"):
    wider_face.load(str(FIXTURE), split="validation")


def test_check_images_false_keeps_every_box():
  recs = wider_face.load(str(FIXTURE), split="train", check_images=False)
  group = recs[2]
  assert "image_size" not in group.meta
  # Without the image size nothing can be dropped: the x = w = 0 box stays, ignored.
  np.testing.assert_array_equal(group.boxes[0], [0, 0, 0, 10])
  assert group.ignore.tolist() == [True, True, False]


@pytest.mark.parametrize("line, text, reason", [
    (4, "40 5 15 x 2 1 0 0 1 1 ", "not a number"),
    (4, "40 5 15 18 2 1 0 0 1 ", "expected 10 numbers"),
    (4, "40 5 -15 18 2 1 0 0 1 1 ", "negative box size"),
    (4, "40 5 15 18 3 1 0 0 1 1 ", "blur must be an integer in 0..2"),
    (2, "three", "expected the number of faces"),
])
def test_malformed_face_lines(tmp_path, line, text, reason):
  root = _copy(tmp_path)
  _set_line(root / GT_TRAIN, line, text)
  where = f"wider_face_train_bbx_gt.txt:{line}: "
  with pytest.raises(records.AnnotationError, match=f"{where}.*{reason}"):
    wider_face.load(str(root), split="train")
  recs = wider_face.load(str(root), split="train", on_error="skip")
  # Only the bad image is lost; parsing resumes at the next image path.
  assert [r.image_id.split("/")[1] for r in recs] == [
      "0_Parade_Parade_0_7", "12_Group_Group_12_Group_Group_12_3"]
  assert len(recs.skipped) == 1 and f":{line}:" in recs.skipped[0]


def test_count_larger_than_face_lines(tmp_path):
  root = _copy(tmp_path)
  _set_line(root / GT_TRAIN, 2, "4")  # Three face lines follow, then the next image path.
  with pytest.raises(records.AnnotationError, match=r"bbx_gt.txt:2: .*says 4 faces but 3"):
    wider_face.load(str(root), split="train")
  recs = wider_face.load(str(root), split="train", on_error="skip")
  assert len(recs) == 2 and len(recs.skipped) == 1


def test_zero_face_placeholder_must_be_zero(tmp_path):
  root = _copy(tmp_path)
  _set_line(root / GT_TRAIN, 8, "1 0 0 0 0 0 0 0 0 0 ")
  with pytest.raises(records.AnnotationError, match=r"bbx_gt.txt:8: .*count is 0"):
    wider_face.load(str(root), split="train")


def test_bad_landmark_line_and_missing_image(tmp_path):
  root = _copy(tmp_path)
  _set_line(root / "train" / "label.txt", 2, "10 12 20 24 14.5 20.25 0.0")
  with pytest.raises(records.AnnotationError, match=r"label.txt:2: expected 4 or 20 numbers"):
    wider_face.load(str(root), split="train")
  (root / "WIDER_train/images/0--Parade/0_Parade_Parade_0_7.jpg").unlink()
  recs = wider_face.load(str(root), split="train", on_error="skip")
  assert [r.image_id for r in recs] == ["12--Group/12_Group_Group_12_Group_Group_12_3"]
  assert len(recs.skipped) == 2 and "0_Parade_Parade_0_7.jpg" in recs.skipped[1]
  # Without image checks the missing image is not noticed.
  assert len(wider_face.load(str(root), "train", "skip", check_images=False)) == 2


def test_missing_annotation_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="wider_face_train_bbx_gt.txt"):
    wider_face.load(str(tmp_path), split="train")


def test_retinaface_layout_images(tmp_path):
  # The RetinaFace repositories keep images in <root>/<split>/images/.
  root = _copy(tmp_path)
  (root / "WIDER_train" / "images").rename(root / "train" / "images")
  recs = wider_face.load(str(root), split="train")
  assert recs[0].image.endswith("train/images/0--Parade/0_Parade_marchingband_1_5.jpg")
  assert recs[0].image_size == (60, 80)
