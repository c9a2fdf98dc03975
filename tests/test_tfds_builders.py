"""face_detection / face_landmarks TFDS builders: array_record written and read without TensorFlow."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tensorflow_datasets as tfds

from data_pipelines import records
from data_pipelines.tfds import common
from data_pipelines.tfds import face_detection  # pylint: disable=unused-import  # Registers.
from data_pipelines.tfds import face_landmarks  # pylint: disable=unused-import  # Registers.
from data_pipelines import images

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "fixtures" / "tfds_src"
ATTRS = ("blur", "occlusion")


def read_fixture(root, split=None):
  """The test's own reader of tests/fixtures/tfds_src/faces.txt (see the file's header)."""
  path = os.path.join(root, "faces.txt")
  out, current = [], None

  def close():
    if current is None:
      return
    faces = current.pop("faces")
    points = [f[3] for f in faces]
    has_points = any(p is not None for p in points)
    lm = mask = None
    if has_points:
      lm = np.array([p if p is not None else np.full((5, 2), np.nan) for p in points])
      mask = np.isfinite(lm).all(-1)
    file = current.pop("file")
    out.append(records.FaceRecord(
        image=os.path.join(root, file), boxes=np.array([f[0] for f in faces]).reshape(-1, 4),
        landmarks=lm, landmark_scheme="five" if has_points else None, landmark_mask=mask,
        attributes={a: np.array([f[2][i] for f in faces], np.int8) for i, a in enumerate(ATTRS)},
        ignore=np.array([f[1] for f in faces], bool), image_id=current["image_id"],
        meta={"image_size": images.read_size(os.path.join(root, file)), "file": file,
              "line": current["line"]}))

  with open(path) as f:
    for number, line in enumerate(f, 1):
      tokens = line.split()
      if not tokens or tokens[0].startswith("#"):
        continue
      if tokens[0] == "image":
        close()
        current = None
        if split is None or tokens[1] == split:
          current = {"file": tokens[2], "image_id": tokens[3], "line": number, "faces": []}
      elif tokens[0] == "face" and current is not None:
        box = records.parse_floats(tokens[1:5], path, number)
        attrs = [-1 if t == "-" else int(t) for t in tokens[6:8]]
        pts = None if tokens[8] == "none" else np.array(
            [np.nan if t == "-" else float(t) for t in tokens[8:18]]).reshape(5, 2)
        current["faces"].append((box, tokens[5] == "1", attrs, pts))
  close()
  return out


def _as_built(record: records.FaceRecord, with_landmarks: bool) -> records.FaceRecord:
  """What the builder must give back: image bytes, and points only in face_landmarks."""
  data = pathlib.Path(record.image).read_bytes()
  kw = {} if with_landmarks else dict(landmarks=None, landmark_scheme=None, landmark_mask=None)
  return records.FaceRecord(**{**record.__dict__, "image": data, **kw})


def _assert_same(got: records.FaceRecord, want: records.FaceRecord):
  assert got.image_id == want.image_id
  if want.image.startswith((b"\xff\xd8\xff", b"\x89PNG")):
    assert got.image == want.image  # JPEG / PNG bytes stored untouched.
  else:
    assert got.image.startswith(b"\x89PNG")  # Anything else: a lossless PNG of the pixels.
  np.testing.assert_array_equal(images.decode(got.image), images.decode(want.image))
  np.testing.assert_array_equal(got.boxes, want.boxes)
  assert got.boxes.dtype == np.float32
  np.testing.assert_array_equal(got.ignore, want.ignore)
  assert got.attributes.keys() == want.attributes.keys()
  for name, values in want.attributes.items():
    np.testing.assert_array_equal(got.attributes[name], values)
    assert got.attributes[name].dtype == np.int8
  assert got.landmark_scheme == want.landmark_scheme
  if want.landmarks is None:
    assert got.landmarks is None and got.landmark_mask is None
  else:
    np.testing.assert_array_equal(got.landmarks, want.landmarks)
    np.testing.assert_array_equal(got.landmark_mask, want.landmark_mask)
  assert got.meta == want.meta
  assert type(got.meta["image_size"]) is tuple


@pytest.fixture(scope="module")
def fixture_records():
  return {"train": read_fixture(str(SRC), "train"), "test": read_fixture(str(SRC), "test")}


def test_fixture_reader_reads_what_the_file_says(fixture_records):
  train, test = fixture_records["train"], fixture_records["test"]
  assert [r.image_id for r in train + test] == ["photos/a", "photos/b", "photos/c", "photos/d"]
  a = train[0]
  np.testing.assert_array_equal(a.boxes, [[10, 8, 30, 32], [40, 5, 60, 25]])
  np.testing.assert_array_equal(a.landmark_mask[1], [True, True, False, True, True])
  assert train[1].landmarks is None and train[1].ignore.tolist() == [True]
  assert test[0].num_faces == 0
  assert test[1].image_size == (48, 32)  # EXIF orientation 6 swaps the stored 48x32.


@pytest.mark.parametrize("kind", ["face_detection", "face_landmarks"])
def test_build_and_read_back_every_field(tmp_path, fixture_records, kind):
  with_landmarks = kind == "face_landmarks"
  builder = common.build(kind, read_fixture, str(SRC), str(tmp_path), ["train", "test"],
                         name="fixture")
  assert builder.info.features["boxes"].shape == (None, 4)
  assert sorted(builder.info.features["attributes"].keys()) == list(ATTRS)
  if with_landmarks:
    assert builder.info.features["landmarks"].shape == (None, 5, 2)
  for split in ("train", "test"):
    source = tfds.data_source(f"{kind}/fixture", split=split, data_dir=str(tmp_path))
    back = [common.example_to_record(source[i]) for i in range(len(source))]
    want = [_as_built(r, with_landmarks) for r in fixture_records[split]]
    assert len(back) == len(want)  # disable_shuffling: example i is record i.
    for got, expected in zip(back, want):
      _assert_same(got, expected)
  # Sizes come from the decoded picture: d.jpg is stored 48x32 but shown 32 wide, 48 tall.
  example = tfds.data_source(f"{kind}/fixture", split="test", data_dir=str(tmp_path))[1]
  assert (example["height"], example["width"]) == (48, 32)
  # The same records through the folder-based reader.
  folder = tmp_path / kind / "fixture" / "1.0.0"
  assert common.record_source(str(folder), "train")[0].image_id == "photos/a"
  # Prepared data is reused unless overwrite=True.
  def only_d(root, split=None):
    del split
    return read_fixture(root, "test")[1:]

  common.build(kind, only_d, str(SRC), str(tmp_path), ["test"], name="fixture")
  assert len(tfds.data_source(f"{kind}/fixture", split="test", data_dir=str(tmp_path))) == 2
  common.build(kind, only_d, str(SRC), str(tmp_path), ["test"], name="fixture", overwrite=True)
  source = tfds.data_source(f"{kind}/fixture", split="test", data_dir=str(tmp_path))
  assert len(source) == 1 and common.example_to_record(source[0]).image_id == "photos/d"


def _cmu6_compatible(root, **kw):
  """The fixture's records that fit face_landmarks/cmu_mit: no points (theirs are "five")."""
  return [records.FaceRecord(**{**r.__dict__, "attributes": {}})
          for r in read_fixture(root, **kw) if r.landmarks is None]


def test_predefined_config_with_a_custom_reader_reads_back_by_name(tmp_path):
  builder = tfds.builder("face_landmarks/cmu_mit", data_dir=str(tmp_path), root=str(SRC),
                         reader=_cmu6_compatible)
  builder.download_and_prepare(file_format="array_record")
  assert builder.info.features["landmarks"].shape == (None, 6, 2)
  source = common.record_source("face_landmarks/cmu_mit", "test", data_dir=str(tmp_path))
  assert [r.image_id for r in source] == ["photos/b", "photos/c"]
  assert all(r.landmarks is None and r.attributes == {} for r in source)


def test_config_attribute_set_is_fixed(fixture_records):
  record = fixture_records["train"][0]
  example = common.record_to_example(record, ("blur", "occlusion", "pose"))
  np.testing.assert_array_equal(example["attributes"]["pose"], [-1, -1])  # Missing: unknown.
  with pytest.raises(records.AnnotationError, match=r"\['blur', 'occlusion'\]"):
    common.record_to_example(record, ())  # ... and refuses attributes it would lose.


def test_scheme_mismatch_and_size_mismatch_are_errors(fixture_records):
  record = fixture_records["train"][0]
  with pytest.raises(records.AnnotationError, match="scheme 'five'.*'ibug68'"):
    common.record_to_example(record, ATTRS, "ibug68", with_landmarks=True)
  wrong = records.FaceRecord(**{**record.__dict__, "meta": {"image_size": (50, 64)}})
  with pytest.raises(records.AnnotationError, match=r"\(50, 64\) but the image is \(48, 64\)"):
    common.record_to_example(wrong, ATTRS)


def test_unreadable_image_raises_or_is_skipped(tmp_path, fixture_records):
  bad = records.FaceRecord(image=b"not an image", boxes=np.zeros((0, 4)), image_id="bad")
  good = fixture_records["train"][0]
  with pytest.raises(images.ImageDecodeError):
    common.build("face_detection", lambda root, **kw: [good, bad], None, str(tmp_path),
                 name="broken")
  builder = common.build("face_detection", lambda root, **kw: [bad, good], None,
                         str(tmp_path / "skip"), name="broken", on_error="skip")
  assert builder.info.splits["train"].num_examples == 1
  source = builder.as_data_source(split="train")
  assert common.example_to_record(source[0]).image_id == "photos/a"


def test_meta_json_round_trips_types_exactly():
  meta = {"image_size": (3, 4), "ellipses": np.arange(10, dtype=np.float64).reshape(2, 5) / 3,
          "empty": np.zeros((0, 5), np.float32), "score": np.float32(0.1), "raw": b"\x00\xff",
          "nested": {"fold": 7, "list": [1, (2, 3)], "none": None}}
  back = common.meta_from_json(common.meta_to_json(meta))
  assert back["image_size"] == (3, 4) and isinstance(back["image_size"], tuple)
  for key in ("ellipses", "empty"):
    np.testing.assert_array_equal(back[key], meta[key])
    assert back[key].dtype == meta[key].dtype and back[key].shape == meta[key].shape
  assert back["score"] == meta["score"] and back["score"].dtype == np.float32
  assert back["raw"] == b"\x00\xff" and back["nested"] == meta["nested"]
  with pytest.raises(TypeError, match="meta.bad"):
    common.meta_to_json({"bad": object()})


def test_build_refuses_a_predefined_config_name(tmp_path):
  with pytest.raises(ValueError, match="predefined config"):
    common.build("face_detection", read_fixture, str(SRC), str(tmp_path), name="cmu_mit")


def test_split_specs():
  assert common.normalize_splits(None) == {"train": {}}
  assert common.normalize_splits(["train", "val"]) == {"train": {"split": "train"},
                                                        "val": {"split": "val"}}
  assert common.normalize_splits({"validation": {"split": "val"}, "test": None}) == {
      "validation": {"split": "val"}, "test": {}}
  with pytest.raises(ValueError, match="split names"):
    common.normalize_splits(["fold-1"])


def test_reading_needs_no_tensorflow(tmp_path):
  """Build and read in a fresh interpreter: neither TensorFlow nor jax gets imported."""
  code = f"""
import sys, json
sys.path.insert(0, {str(HERE)!r})
from test_tfds_builders import read_fixture, SRC
from data_pipelines.tfds import common
import tensorflow_datasets as tfds
common.build("face_landmarks", read_fixture, str(SRC), {str(tmp_path)!r}, ["train"], name="sub")
source = tfds.data_source("face_landmarks/sub", split="train", data_dir={str(tmp_path)!r})
recs = [common.example_to_record(source[i]) for i in range(len(source))]
print(json.dumps({{"n": len(recs), "faces": sum(r.num_faces for r in recs),
                  "mods": sorted(m for m in sys.modules
                                 if m.split(".")[0] in ("tensorflow", "jax"))}}))
"""
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                       cwd=HERE.parent)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == {"n": 2, "faces": 3, "mods": []}


def test_real_cmu_mit_counts(tmp_path, shared_data):
  pytest.importorskip("data_pipelines.formats.cmu_mit")
  builder = tfds.builder("face_detection/cmu_mit", data_dir=str(tmp_path),
                         root=str(shared_data / "cmu_mit_frontal"))
  builder.download_and_prepare(file_format="array_record")
  source = common.record_source("face_detection/cmu_mit", "test", data_dir=str(tmp_path))
  assert len(source) == 130
  assert sum(r.num_faces for r in source) == 511
