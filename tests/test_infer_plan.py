"""Pyramid plans, level sizes, buckets and the level mosaic packing."""

from __future__ import annotations

import numpy as np
import pytest

from facecraft.infer import plan as plan_lib


def _original_loop(h, w, minsize, factor):
  """The pyramid loop of the released MTCNN code (detect_face.m / facenet-pytorch), verbatim."""
  m = 12.0 / minsize
  minl = min(h, w) * m
  scales, scale = [], m
  while minl >= 12:
    scales.append(scale)
    scale = scale * factor
    minl = minl * factor
  return scales


@pytest.mark.parametrize("h,w,minsize,factor", [(512, 512, 20, 0.709), (480, 640, 20, 0.709),
                                                (75, 60, 20, 0.709), (1545, 1986, 40, 0.8),
                                                (33, 2000, 12, 0.5)])
def test_scales_equal_the_original_loop_float_for_float(h, w, minsize, factor):
  assert plan_lib.pyramid_scales(h, w, minsize, factor) == _original_loop(h, w, minsize, factor)


def test_astronaut_pyramid_by_hand():
  scales = plan_lib.pyramid_scales(512, 512, 20, 0.709)
  # 512 * 0.6 * 0.709**k >= 12 holds for k = 0..9 (307.2 ... 13.48), not for k = 10 (9.56).
  assert len(scales) == 10
  assert scales[0] == 0.6 and scales[1] == 0.6 * 0.709
  plan = plan_lib.make_plan((512, 512), 20, 0.709)
  assert plan.canvases[0] == (308, 308)  # int(512 * 0.6 + 1)
  assert plan.canvases[1] == (218, 218)  # int(512 * 0.4254 + 1) = int(218.8)


def test_exact_integer_product_still_gets_plus_one():
  # 500 * 0.6 = 300 exactly, and the original code resizes to int(300 + 1) = 301.
  assert plan_lib.scaled_size(500, 0.6) == 301


def test_level_sizes_per_image_and_missing_levels():
  plan = plan_lib.make_plan((128, 192), 20, 0.709)
  sizes = plan.level_sizes(np.array([[128, 192], [100, 50], [1, 1], [0, 0]]))
  assert sizes.shape == (4, plan.num_levels, 2)
  full = [(plan_lib.scaled_size(128, s), plan_lib.scaled_size(192, s)) for s in plan.scales]
  np.testing.assert_array_equal(sizes[0], full)
  used = len(plan_lib.pyramid_scales(100, 50, 20, 0.709))  # min side 50: 30, 21.3, 15.1 -> 3
  assert used == 3
  np.testing.assert_array_equal(sizes[1, :used], [(int(100 * s + 1), int(50 * s + 1))
                                                  for s in plan.scales[:used]])
  assert not sizes[1, used:].any() and not sizes[2].any() and not sizes[3].any()
  with pytest.raises(ValueError, match="does not fit"):
    plan.level_sizes(np.array([[129, 10]]))


def test_bucket_smaller_than_a_face_has_no_levels():
  assert plan_lib.make_plan((64, 64), 200, 0.709).num_levels == 0
  with pytest.raises(ValueError):
    plan_lib.make_plan((64, 64), 20, 1.5)


def test_bucket_ladder_rounds_each_side_up():
  ladder = plan_lib.BucketLadder()
  assert ladder(1, 1) == (256, 256)
  assert ladder(256, 257) == (256, 512)
  assert ladder(480, 640) == (512, 768)
  fine = plan_lib.BucketLadder(plan_lib.FINE_RUNGS)
  assert fine(1, 1) == (64, 64) and fine(64, 65) == (64, 96) and fine(480, 640) == (512, 640)
  assert ladder(2048, 2049) == (2048, 2560)  # Beyond the last rung: multiples of 512.
  assert ladder(10000, 10000) == (10240, 10240)
  with pytest.raises(ValueError):
    ladder(0, 5)


def test_fixed_buckets_pick_the_smallest_that_fits():
  policy = plan_lib.bucket_policy([(640, 640), (480, 640), (1280, 1280)])
  assert policy(480, 600) == (480, 640)
  assert policy(500, 600) == (640, 640)
  assert policy(700, 100) == (1280, 1280)
  assert policy(2000, 100) == plan_lib.BucketLadder()(2000, 100)
  with pytest.raises(ValueError):
    plan_lib.bucket_policy([])


def test_shelf_packing_keeps_rectangles_apart():
  rng = np.random.default_rng(0)
  for _ in range(20):
    shapes = [tuple(int(v) for v in rng.integers(1, 60, 2)) for _ in range(rng.integers(1, 12))]
    gap = int(rng.integers(0, 4))
    places, (height, width) = plan_lib.pack_shelves(shapes, gap)
    occupied = np.zeros((height + gap, width + gap), int)
    for (y, x), (h, w) in zip(places, shapes):
      assert y + h <= height and x + w <= width
      # Each rectangle grown by the gap (down/right) overlaps no other rectangle.
      assert not occupied[y:y + h, x:x + w].any()
      occupied[y:y + h + gap, x:x + w + gap] = 1
