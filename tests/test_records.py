"""FaceRecord / CropSet invariants and the on_error policy."""

import numpy as np
import pytest

from data_pipelines import records


def test_face_record_normalises_and_defaults():
  r = records.FaceRecord("x.jpg", [[1, 2, 3, 4], [5, 6, 7, 8]], image_id="x")
  assert r.boxes.dtype == np.float32 and r.boxes.shape == (2, 4)
  assert r.ignore.tolist() == [False, False] and r.landmarks is None and r.num_faces == 2
  empty = records.FaceRecord("y.jpg", np.zeros((0, 4)))
  assert empty.num_faces == 0 and empty.boxes.shape == (0, 4)


def test_landmark_mask_from_nan_and_zeroed():
  lm = np.array([[[1, 2], [np.nan, np.nan], [5, 6], [7, 8]]], np.float32)
  r = records.FaceRecord("x.jpg", [[0, 0, 10, 10]], landmarks=lm, landmark_scheme="caltech4")
  assert r.landmark_mask.tolist() == [[True, False, True, True]]
  assert np.isfinite(r.landmarks).all() and (r.landmarks[0, 1] == 0).all()


@pytest.mark.parametrize("kw,match", [
    (dict(boxes=[[0, 0, np.nan, 4]]), "non-finite"),
    (dict(boxes=[[5, 0, 4, 4]]), "x2 < x1"),
    (dict(boxes=[[0, 0, 4, 4]], landmarks=np.zeros((1, 5, 2))), "without a landmark_scheme"),
    (dict(boxes=[[0, 0, 4, 4]], landmarks=np.zeros((1, 5, 2)), landmark_scheme="cmu6"), "6 points"),
    (dict(boxes=[[0, 0, 4, 4]], attributes={"blur": [1, 2]}), "attribute 'blur'"),
    (dict(boxes=[[100, 0, 140, 4]], meta={"image_size": (50, 100)}), "outside the 100x50"),
])
def test_face_record_rejects_bad_annotations(kw, match):
  with pytest.raises(records.AnnotationError, match=match):
    records.FaceRecord("x.jpg", **kw)


def test_box_partly_outside_is_kept():
  r = records.FaceRecord("x.jpg", [[-5, -5, 20, 20]], meta={"image_size": (10, 10)})
  assert r.boxes[0, 0] == -5


def test_select_keeps_fields_aligned():
  r = records.FaceRecord("x.jpg", [[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]],
                         attributes={"pose": [0, 1, 2]}, ignore=[False, True, False])
  s = r.select(np.array([False, True, True]))
  assert s.boxes[:, 2].tolist() == [2, 3] and s.attributes["pose"].tolist() == [1, 2]
  assert s.ignore.tolist() == [True, False]
  r.meta["pose"] = np.array([[0.0], [1.0], [2.0]])
  r.meta["image_size"] = (3, 3)
  s = r.select(np.array([True, False, True]))
  assert s.meta["pose"][:, 0].tolist() == [0, 2] and s.meta["image_size"] == (3, 3)


def test_error_policy():
  with pytest.raises(ValueError, match="on_error"):
    records.ErrorPolicy("ignore", "t")
  policy = records.ErrorPolicy("skip", "t")
  assert policy.run(lambda: 1) == 1
  assert policy.run(lambda: records.parse_floats(["1", "x"], "f.txt", 7)) is None
  out = policy.finish([1])
  assert out == [1] and out.skipped == ["f.txt:7: not a number in '1 x'"]
  with pytest.raises(records.AnnotationError, match="f.txt:3: expected 4 numbers"):
    records.ErrorPolicy("raise", "t").run(lambda: records.parse_floats(["1"], "f.txt", 3, 4))


def test_parse_floats_rejects_nan():
  with pytest.raises(records.AnnotationError, match="non-finite"):
    records.parse_floats(["1", "nan"], "a", 1)


def test_cropset_round_trip(tmp_path):
  m = 3
  crops = records.CropSet(images=np.zeros((m, 12, 12, 3)), labels=[1, 0, -1],
                          boxes=np.ones((m, 4)), landmarks=np.zeros((m, 5, 2)),
                          landmark_mask=np.zeros((m, 5)), source=[0, 1, 2])
  assert crops.size == 12 and len(crops) == 3 and crops[1]["label"] == 0
  crops.save(str(tmp_path / "c.npz"))
  back = records.CropSet.load(str(tmp_path / "c.npz"))
  both = records.CropSet.concatenate([crops, back])
  assert len(both) == 6 and both.labels.tolist() == [1, 0, -1, 1, 0, -1]
  with pytest.raises(ValueError, match="sizes"):
    records.CropSet.concatenate([crops, records.CropSet(np.zeros((1, 24, 24, 3)), [1], np.zeros((1, 4)),
                                                        np.zeros((1, 5, 2)), np.zeros((1, 5)), [0])])
