"""dlib imglab XML reader: xywh boxes, 0-based parts, ignore flags, split and xml= selection."""

import pathlib
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import dlib_xml

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "dlib_xml"


def _by_id(recs):
  return {r.image_id: r for r in recs}


def _parts(xml_name, image_index, box_index):
  box = ET.parse(FIXTURE / xml_name).getroot().find("images").findall("image")[image_index] \
      .findall("box")[box_index]
  return {int(p.get("name")): (int(p.get("x")), int(p.get("y"))) for p in box.findall("part")}


def test_training_split_reads_the_landmark_file():
  recs = dlib_xml.load(str(FIXTURE), split="training")
  assert [r.image_id for r in recs] == ["2008_000001", "2008_000002"]
  one, two = recs
  assert one.meta["source"].endswith("training_with_face_landmarks.xml")
  assert one.meta["split"] == "training"
  # (left, top, width, height) -> (left, top, left + width, top + height).
  np.testing.assert_array_equal(one.boxes, [[8, 10, 38, 41], [50, 5, 70, 25]])
  assert one.ignore.tolist() == [False, True]
  assert one.landmark_scheme == "ibug68" and one.landmarks.shape == (2, 68, 2)
  parts = _parts("training_with_face_landmarks.xml", 0, 0)
  # 0-based pixel centres -> corner coordinates: plus 0.5.
  np.testing.assert_array_equal(one.landmarks[0], np.array([parts[i] for i in range(68)]) + 0.5)
  np.testing.assert_array_equal(one.landmarks[0, 0], [12.5, 22.5])
  # The ignored box has no parts: masked, stored as zeros.
  assert one.landmark_mask[0].all() and not one.landmark_mask[1].any()
  assert not one.landmarks[1].any()
  # A part missing from a box is masked out.
  assert two.landmark_mask[0].sum() == 67 and not two.landmark_mask[0, 5]
  assert one.image_size == (60, 80) and one.image.endswith("dlib_xml/2008_000001.jpg")


def test_plain_files_and_both_splits():
  recs = _by_id(dlib_xml.load(str(FIXTURE)))
  assert sorted(recs) == ["2008_000001", "2008_000002", "2009_000003"]
  test = recs["2009_000003"]
  assert test.landmarks is None and test.landmark_scheme is None
  np.testing.assert_array_equal(test.boxes, [[30, -3, 52, 22]])  # Runs past the top: kept.
  plain = dlib_xml.load(str(FIXTURE), xml="training.xml")
  assert all(r.landmarks is None for r in plain) and plain[0].ignore.tolist() == [False, True]
  assert len(dlib_xml.load(str(FIXTURE / "testing.xml"))) == 1
  with pytest.raises(ValueError, match="split must be"):
    dlib_xml.load(str(FIXTURE), split="validation")


def test_no_image_check_uses_xml_size():
  recs = dlib_xml.load(str(FIXTURE), split="testing", check_images=False)
  assert recs[0].image_size == (40, 50)


def test_bad_entries(tmp_path):
  root = tmp_path / "dlib"
  shutil.copytree(FIXTURE, root)
  path = root / "testing.xml"
  text = path.read_text(encoding="ISO-8859-1")
  path.write_text(text.replace("width='22'", "width='wide'"), encoding="ISO-8859-1")
  with pytest.raises(records.AnnotationError, match=r"testing.xml: .*width='wide' is not a number"):
    dlib_xml.load(str(root), split="testing")
  recs = dlib_xml.load(str(root), split="testing", on_error="skip")
  assert len(recs) == 0 and len(recs.skipped) == 1
  path.write_text(text.replace("</images>", ""), encoding="ISO-8859-1")
  with pytest.raises(records.AnnotationError, match="invalid XML"):
    dlib_xml.load(str(root), split="testing")
  path.write_text(text.replace("left='30'", "left='90'"), encoding="ISO-8859-1")
  with pytest.raises(records.AnnotationError, match="outside"):
    dlib_xml.load(str(root), split="testing")
  lm = root / "training_with_face_landmarks.xml"
  lm.write_text(lm.read_text(encoding="ISO-8859-1").replace("name='07'", "name='99'", 1),
                encoding="ISO-8859-1")
  with pytest.raises(records.AnnotationError, match="part '99' outside 00..67"):
    dlib_xml.load(str(root), split="training")
  (root / "2008_000002.jpg").unlink()
  recs = dlib_xml.load(str(root), xml="training.xml", on_error="skip")
  assert [r.image_id for r in recs] == ["2008_000001"] and len(recs.skipped) == 1


def test_real_data(shared_data):
  root = shared_data / "dlib_faces" / "examples" / "faces"
  if not root.is_dir():
    pytest.skip("dlib_faces not in the shared data")
  recs = dlib_xml.load(str(root), check_images=False)
  assert len(recs) == 9 and sum(r.num_faces for r in recs) == 43 and not recs.skipped
  assert all(r.landmark_mask.all() for r in recs)
  assert sum(r.num_faces for r in dlib_xml.load(str(root), split="training")) == 18
  plain = dlib_xml.load(str(root), xml="testing.xml", check_images=False)
  assert sum(r.num_faces for r in plain) == 25
  # The landmark file repeats the plain file's boxes exactly.
  boxes = {r.image_id: r.boxes for r in recs}
  for r in plain:
    np.testing.assert_array_equal(r.boxes, boxes[r.image_id])
