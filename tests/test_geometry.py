"""data_pipelines.geometry against pixel counts, float64 references and round trips."""

import numpy as np
import pytest

from data_pipelines import geometry


def _pixel_mask(box, size=40):
  m = np.zeros((size, size), bool)
  x1, y1, x2, y2 = (int(v) for v in box)
  m[y1:y2, x1:x2] = True  # Pixel-corner convention: [x1, x2) columns.
  return m


def _random_int_boxes(rng, n, size=40):
  xy = rng.integers(0, size - 1, (n, 2))
  wh = rng.integers(1, size // 2, (n, 2))
  return np.concatenate([xy, np.minimum(xy + wh, size)], 1).astype(np.float32)


def test_iou_equals_pixel_count():
  rng = np.random.default_rng(0)
  a, b = _random_int_boxes(rng, 12), _random_int_boxes(rng, 9)
  got = geometry.pairwise_iou(a, b)
  for i in range(len(a)):
    for j in range(len(b)):
      ma, mb = _pixel_mask(a[i]), _pixel_mask(b[j])
      want = (ma & mb).sum() / (ma | mb).sum()
      assert got[i, j] == pytest.approx(want, abs=1e-6)


def test_iou_modes_by_hand():
  a = np.array([[0, 0, 10, 10]], np.float32)
  b = np.array([[5, 0, 25, 10]], np.float32)  # intersection 50, areas 100 and 200
  assert geometry.pairwise_iou(a, b)[0, 0] == pytest.approx(50 / 250)
  assert geometry.pairwise_iou(a, b, "min")[0, 0] == pytest.approx(50 / 100)
  assert geometry.pairwise_iou(a, b, "b")[0, 0] == pytest.approx(50 / 200)
  # A one-pixel shift changes the answer: 45 / 255.
  assert geometry.pairwise_iou(a, b + [1, 0, 1, 0])[0, 0] == pytest.approx(40 / 260)


def test_iou_zero_area_is_zero_not_nan():
  a = np.array([[3, 3, 3, 3]], np.float32)
  out = geometry.pairwise_iou(a, a)
  assert out[0, 0] == 0 and np.isfinite(out).all()
  with pytest.raises(ValueError):
    geometry.pairwise_iou(a, a, "max")


def test_iou_jax_matches_numpy_under_jit():
  jax = pytest.importorskip("jax")
  rng = np.random.default_rng(1)
  a, b = _random_int_boxes(rng, 7), _random_int_boxes(rng, 5)
  for mode in ("union", "min", "b"):
    got = jax.jit(lambda x, y, m=mode: geometry.pairwise_iou(x, y, m))(a, b)
    np.testing.assert_allclose(np.asarray(got), geometry.pairwise_iou(a, b, mode), rtol=1e-6)


def test_rcnn_encode_by_hand_and_round_trip():
  p = np.array([[10, 20, 30, 60]], np.float32)  # centre (20, 40), size (20, 40)
  g = np.array([[12, 16, 52, 56]], np.float32)  # centre (32, 36), size (40, 40)
  d = geometry.encode_rcnn(p, g)
  np.testing.assert_allclose(d, [[12 / 20, -4 / 40, np.log(2), 0]], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(geometry.decode_rcnn(p, d), g, atol=1e-4)


def test_corner_encode_by_hand_and_plus_one():
  p = np.array([[10, 20, 30, 60]], np.float32)
  g = np.array([[12, 16, 52, 56]], np.float32)
  np.testing.assert_allclose(geometry.encode_corners(p, g), [[2 / 20, -4 / 40, 22 / 20, -4 / 40]])
  np.testing.assert_allclose(geometry.encode_corners(p, g, plus_one=True),
                             [[2 / 21, -4 / 41, 22 / 21, -4 / 41]], rtol=1e-6)
  for plus_one in (False, True):
    np.testing.assert_allclose(
        geometry.decode_corners(p, geometry.encode_corners(p, g, plus_one), plus_one), g, atol=1e-4)


def test_square_clip_scale():
  b = np.array([[10, 20, 30, 60]], np.float32)
  np.testing.assert_allclose(geometry.square_boxes(b), [[0, 20, 40, 60]])
  np.testing.assert_allclose(geometry.clip_boxes(np.array([[-5, -1, 50, 70]], np.float32), 64, 48),
                             [[0, 0, 48, 64]])
  np.testing.assert_allclose(geometry.scale_boxes(b, 2.0), [[0, 0, 40, 80]])
  np.testing.assert_allclose(geometry.xyxy_to_xywh(geometry.xywh_to_xyxy(b)), b)


def test_reshape_boxes_by_hand():
  # Centre (20, 40), 20 wide, 40 tall -> 0.5x wide, 1.25x tall, centre up by 0.1 * 40 = 4.
  b = np.array([[10, 20, 30, 60]], np.float32)
  np.testing.assert_allclose(geometry.reshape_boxes(b, 0.5, 1.25, -0.1), [[15, 11, 25, 61]])
  np.testing.assert_allclose(geometry.reshape_boxes(b, 2.0, 2.0), geometry.scale_boxes(b, 2.0))


def test_flip_boxes_mirror_pixels():
  width = 40
  b = np.array([[3, 5, 10, 9]], np.float32)
  flipped = geometry.flip_boxes(b, width)
  np.testing.assert_array_equal(_pixel_mask(flipped[0])[:, :], _pixel_mask(b[0])[:, ::-1])
  np.testing.assert_allclose(geometry.flip_boxes(flipped, width), b)


@pytest.mark.parametrize("scheme", sorted(geometry.SCHEMES))
def test_flip_permutations_are_involutions(scheme):
  s = geometry.get_scheme(scheme)
  perm = np.array(s.flip)
  assert sorted(perm) == list(range(s.size))
  np.testing.assert_array_equal(perm[perm], np.arange(s.size))
  pts = np.random.default_rng(0).uniform(0, 50, (3, s.size, 2)).astype(np.float32)
  twice = geometry.flip_landmarks(geometry.flip_landmarks(pts, scheme, 50), scheme, 50)
  np.testing.assert_allclose(twice, pts, atol=1e-5)


def test_ibug68_flip_swaps_semantic_points():
  perm = geometry.get_scheme("ibug68").flip
  for a, b in [(36, 45), (39, 42), (0, 16), (8, 8), (30, 30), (48, 54), (17, 26), (31, 35)]:
    assert perm[a] == b and perm[b] == a


def test_flip_to_five_commutes():
  """Flipping 68 points then converting equals converting then flipping the five points."""
  pts = np.random.default_rng(2).uniform(0, 100, (2, 68, 2)).astype(np.float32)
  a, _ = geometry.to_five(geometry.flip_landmarks(pts, "ibug68", 100), "ibug68")
  b = geometry.flip_landmarks(geometry.to_five(pts, "ibug68")[0], "five", 100)
  np.testing.assert_allclose(a, b, atol=1e-4)


def test_to_five_conversions():
  ibug = np.zeros((68, 2), np.float32)
  ibug[36:42] = [10, 20]
  ibug[42:48] = [30, 22]
  ibug[30], ibug[48], ibug[54] = [20, 30], [12, 40], [28, 41]
  five, mask = geometry.to_five(ibug, "ibug68")
  np.testing.assert_allclose(five, [[10, 20], [30, 22], [20, 30], [12, 40], [28, 41]])
  assert mask.all()
  cmu = np.arange(12, dtype=np.float32).reshape(6, 2)
  five, mask = geometry.to_five(cmu, "cmu6")
  np.testing.assert_allclose(five, cmu[[0, 1, 2, 3, 5]])
  cal = np.arange(8, dtype=np.float32).reshape(4, 2)
  five, mask = geometry.to_five(cal, "caltech4")
  np.testing.assert_array_equal(mask, [True, True, True, False, False])
  np.testing.assert_allclose(five[:3], cal[:3])
  assert (five[3:] == 0).all()
  # A missing source point masks the derived point.
  m = np.ones(68, bool)
  m[40] = False
  assert not geometry.to_five(ibug, "ibug68", m)[1][0]
  with pytest.raises(ValueError, match="unknown landmark scheme"):
    geometry.to_five(cal, "nope")


def test_similarity_transform_recovers_known_transform():
  rng = np.random.default_rng(3)
  src = rng.uniform(0, 100, (5, 2))
  angle, scale, t = 0.3, 1.7, np.array([4.0, -9.0])
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  want = np.hstack([scale * rot, t[:, None]])
  dst = src @ want[:, :2].T + want[:, 2]
  np.testing.assert_allclose(geometry.similarity_transform(src, dst), want, atol=1e-9)
  mask = np.array([True, True, False, True, True])
  dst_bad = dst.copy()
  dst_bad[2] += 50  # Masked-out outlier must not matter.
  np.testing.assert_allclose(geometry.similarity_transform(src, dst_bad, mask), want, atol=1e-9)


def test_warp_affine_identity_and_integer_shift():
  img = np.random.default_rng(4).integers(0, 255, (12, 15, 3)).astype(np.uint8)
  ident = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
  np.testing.assert_array_equal(geometry.warp_affine(img, ident, (12, 15)), img)
  shift = np.array([[1, 0, 3], [0, 1, 2]], np.float64)  # content moves right 3, down 2
  out = geometry.warp_affine(img, shift, (12, 15))
  np.testing.assert_array_equal(out[2:, 3:], img[:10, :12])
  assert (out[:2] == 0).all() and (out[:, :3] == 0).all()


def test_warp_affine_pixel_lands_on_transformed_point():
  img = np.zeros((40, 40, 3), np.uint8)
  img[10, 25] = 255  # pixel centre (25.5, 10.5)
  angle = np.deg2rad(90)
  m = np.array([[np.cos(angle), -np.sin(angle), 40], [np.sin(angle), np.cos(angle), 0]])
  out = geometry.warp_affine(img, m, (40, 40))
  x, y = geometry.transform_points(np.array([25.5, 10.5]), m)
  assert out[int(y), int(x), 0] == 255


def test_align_five_puts_points_on_template():
  img = np.zeros((200, 200, 3), np.uint8)
  pts = geometry.FIVE_POINT_TEMPLATE_112 * 1.3 + [20, 35]
  crop, m = geometry.align_five(img, pts, size=112)
  assert crop.shape == (112, 112, 3)
  np.testing.assert_allclose(geometry.transform_points(pts, m), geometry.FIVE_POINT_TEMPLATE_112,
                             atol=1e-3)


def test_transform_boxes_and_landmark_bbox():
  b = np.array([[0, 0, 10, 20]], np.float32)
  m = np.array([[0, -1, 30], [1, 0, 5]], np.float64)  # rotate 90 degrees, then shift
  np.testing.assert_allclose(geometry.transform_boxes(b, m), [[10, 5, 30, 15]])
  pts = np.array([[[1, 2], [5, 9], [100, 100]]], np.float32)
  np.testing.assert_allclose(geometry.landmark_bbox(pts, np.array([[True, True, False]])),
                             [[1, 2, 5, 9]])
