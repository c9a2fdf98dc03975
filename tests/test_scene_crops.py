"""data_pipelines.scene_crops: windows whose boxes still frame the same pixels."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import scene_crops


def _photo(boxes, hw=(300, 400)):
  """Dark noise with each face box filled white."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 40, (*hw, 3), dtype=np.uint8)
  for x1, y1, x2, y2 in np.asarray(boxes, int):
    image[y1:y2, x1:x2] = 255
  return image


BOXES = np.array([[40, 50, 100, 130], [250, 100, 270, 125], [300, 200, 380, 290]], np.float64)


def test_boxes_frame_the_same_pixels_after_scaling_cropping_and_flipping():
  image = _photo(BOXES)
  for seed in range(30):
    # Zoom at most 2x: bilinear edges then blur over at most 2 pixels (the margins below).
    s = scene_crops.scene_sample(np.random.default_rng(seed), image, BOXES, size=160,
                                 min_face=6.0, scale_range=(0.05, 2.0))
    assert s["image"].shape == (160, 160, 3) and s["image"].dtype == np.uint8
    kept = s["valid"] | s["ignore"]
    assert kept.any()  # the window is placed around a drawn face
    for box in s["boxes"][s["valid"]]:
      x1, y1, x2, y2 = box
      inner = s["image"][int(np.ceil(y1)) + 3:int(y2) - 3, int(np.ceil(x1)) + 3:int(x2) - 3]
      if inner.size:
        assert inner.min() >= 200, (seed, box)  # inside a mapped box: the white face
      # Just outside the (unclipped) box edge: not white, unless at the window border.
      cx = int((x1 + x2) / 2)
      if y2 + 4 < min(160, s["photo_box"][3]) and x2 < 160 and x1 > 0:
        assert s["image"][int(y2) + 3, cx].max() < 200, (seed, box)


def test_face_sides_follow_the_drawn_target_range():
  image = _photo(BOXES)
  sides = []
  for seed in range(200):
    s = scene_crops.scene_sample(np.random.default_rng(seed), image, BOXES[:1], size=320,
                                 face_sides=(16.0, 128.0), flip_prob=0.0)
    b = s["boxes"][s["valid"] | s["ignore"]]
    if len(b):
      sides.append(np.sqrt((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1])))
  sides = np.asarray(sides)
  assert len(sides) == 200  # the drawn face is always in its window
  # Unclipped faces have sqrt(area) in the range (clipping only makes them smaller).
  assert sides.max() <= 128.0 * 1.02 and np.median(sides) > 30


def test_static_shapes_small_faces_ignored_and_too_many_faces_cut():
  many = np.array([[x, 10, x + 5, 15] for x in range(0, 380, 6)] + [[10, 100, 90, 190]],
                  np.float64)
  s = scene_crops.scene_sample(np.random.default_rng(1), _photo(many), many, size=256,
                               face_sides=(80.0, 80.0), max_faces=8, min_face=8.0)
  assert s["boxes"].shape == (8, 4) and s["valid"].shape == (8,)
  assert not np.any(s["valid"] & s["ignore"])
  sides = np.minimum(s["boxes"][:, 2] - s["boxes"][:, 0], s["boxes"][:, 3] - s["boxes"][:, 1])
  assert np.all(sides[s["valid"]] >= 8.0) and np.all(sides[s["ignore"]] < 8.0)


def test_annotated_ignore_faces_stay_ignored_and_never_centre_the_window():
  for seed in range(10):
    s = scene_crops.scene_sample(np.random.default_rng(seed), _photo(BOXES), BOXES, size=400,
                                 face_sides=(60.0, 60.0), scale_range=(0.5, 2.0),
                                 ignore=[True, False, True])
    kept = s["valid"] | s["ignore"]
    assert s["valid"].sum() == 1  # face 1, the only one to learn (its window holds it)
    assert kept.sum() >= 1


def test_no_faces_and_bad_input():
  s = scene_crops.scene_sample(np.random.default_rng(0), _photo([]), np.zeros((0, 4)), size=64)
  assert not s["valid"].any() and s["image"].shape == (64, 64, 3)
  with pytest.raises(ValueError, match="RGB"):
    scene_crops.scene_sample(np.random.default_rng(0), np.zeros((5, 5), np.uint8), BOXES)
  with pytest.raises(ValueError, match="finite"):
    scene_crops.scene_sample(np.random.default_rng(0), _photo([]), [[0, 0, np.nan, 4]])
