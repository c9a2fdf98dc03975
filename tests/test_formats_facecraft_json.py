"""FaceCraft's JSON format and the bundled sample."""

import json
import pathlib

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import facecraft_json

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "facecraft" / "assets"


def test_bundled_sample():
  recs = facecraft_json.load(str(ASSETS))
  assert len(recs) == 1 and recs[0].image_id == "astronaut"
  r = recs[0]
  assert r.image_size == (512, 512) and r.landmark_scheme == "five"
  img = r.load_image()
  assert img.shape == (512, 512, 3)
  # Hand annotation sanity: eyes above the nose above the mouth, all inside the box.
  lm = r.landmarks[0]
  assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
  assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
  x1, y1, x2, y2 = r.boxes[0]
  assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()


def test_round_trip(tmp_path):
  src = facecraft_json.load(str(ASSETS))
  rec = src[0]
  rec.landmark_mask[0, 3] = False
  rec.attributes = {"occlusion": np.array([2], np.int8)}
  out = tmp_path / "set.json"
  facecraft_json.dump([rec], str(out))
  back = facecraft_json.load(str(out))[0]
  np.testing.assert_array_equal(back.boxes, rec.boxes)
  np.testing.assert_array_equal(back.landmark_mask, rec.landmark_mask)
  np.testing.assert_array_equal(back.landmarks[0, [0, 1, 2, 4]], rec.landmarks[0, [0, 1, 2, 4]])
  assert back.attributes["occlusion"].tolist() == [2]
  assert pathlib.Path(back.image).resolve() == pathlib.Path(rec.image).resolve()


def _write(tmp_path, images):
  (tmp_path / "a.json").write_text(json.dumps({"format": "facecraft-json", "images": images}))
  return str(tmp_path)


def test_bad_entries(tmp_path):
  img = str(ASSETS / "astronaut.jpg")
  root = _write(tmp_path, [
      {"image": img, "faces": [{"box": [10, 10, 50, 50]}]},
      {"image": img, "faces": [{"box": [50, 10, 10, 50]}]},  # x2 < x1
      {"image": img, "faces": [{"box": [10, "nan", 50, 50]}]},
      {"image": str(tmp_path / "missing.jpg"), "faces": []},
      {"image": img, "faces": [{"box": [600, 600, 700, 700]}]},  # off the 512x512 image
  ])
  with pytest.raises(records.AnnotationError, match=r"a.json.*x2 < x1"):
    facecraft_json.load(root)
  recs = facecraft_json.load(root, on_error="skip")
  assert len(recs) == 1 and len(recs.skipped) == 4
  assert any("missing.jpg" in s for s in recs.skipped)
  assert any("outside" in s for s in recs.skipped)


def test_not_json(tmp_path):
  (tmp_path / "a.json").write_text("{oops")
  with pytest.raises(records.AnnotationError, match="a.json:1"):
    facecraft_json.load(str(tmp_path))
  with pytest.raises(FileNotFoundError):
    facecraft_json.load(str(tmp_path / "nowhere"))
