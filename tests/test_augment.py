"""Augmentations move pixels, boxes and landmarks together, to a fraction of a pixel.

The geometric tests read images whose colours encode positions (a ramp: red = 4 * column,
green = 4 * row) or hold painted marks, so a half-pixel or one-pixel slip in any convention
shows up as a wrong coordinate.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import augment
from data_pipelines import records
from data_pipelines import geometry

RAMP_STEP = 4  # Grey levels per pixel: reading a ramp is exact to 0.5 / 4 pixel.
BACKENDS = ("pil", "numpy")


def _ramp(h: int = 60, w: int = 60) -> np.ndarray:
  """Red = 4 * column index, green = 4 * row index: linear, so bilinear sampling keeps it."""
  i, j = np.mgrid[0:h, 0:w]
  return np.stack([RAMP_STEP * j, RAMP_STEP * i, np.full_like(i, 77)], -1).astype(np.uint8)


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
  """float64 bilinear read at continuous pixel-corner coordinates (centre j + 0.5 -> pixel j)."""
  img = image.astype(np.float64)
  x, y = points[..., 0] - 0.5, points[..., 1] - 0.5
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1]) +
          fy * ((1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]))


def _read_ramp(image: np.ndarray, points: np.ndarray) -> np.ndarray:
  """The source position a ramp image shows at `points`."""
  rgb = _bilinear(image, points)
  return rgb[..., :2] / RAMP_STEP + 0.5


def _painted_box(mask_image: np.ndarray) -> np.ndarray:
  """The pixel-corner box around the pixels brighter than mid-grey."""
  on = np.argwhere(mask_image > 127)
  return np.array([on[:, 1].min(), on[:, 0].min(), on[:, 1].max() + 1, on[:, 0].max() + 1])


def _grid(rng, shape, hi, step=1 / 16):
  """Random coordinates on a 1/16-pixel grid (what annotations look like), in [1, hi - 1]."""
  return (np.round(rng.uniform(1, hi - 1, shape) / step) * step).astype(np.float32)


def _random_geometry(rng, h, w, n=3, scheme="ibug68"):
  k = geometry.scheme_size(scheme)
  xy1 = _grid(rng, (n, 2), min(h, w) / 2)
  boxes = np.concatenate([xy1, xy1 + _grid(rng, (n, 2), min(h, w) / 2)], -1)
  lm = np.stack([_grid(rng, (n, k), w), _grid(rng, (n, k), h)], -1)
  mask = rng.random((n, k)) < 0.8
  return boxes, np.where(mask[..., None], lm, 0).astype(np.float32), mask


# ------------------------------------------------------------------------------ flip


@pytest.mark.parametrize("seed", range(5))
def test_flip_twice_is_identity(seed):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (37, 52, 3), dtype=np.uint8)
  boxes, lm, mask = _random_geometry(rng, 37, 52)
  once = augment.hflip(image, boxes, lm, "ibug68", mask)
  twice = augment.hflip(*once[:3], "ibug68", once[3])
  assert not np.array_equal(once[0], image)
  np.testing.assert_array_equal(twice[0], image)
  np.testing.assert_array_equal(twice[1], boxes)
  np.testing.assert_array_equal(twice[2], lm)
  np.testing.assert_array_equal(twice[3], mask)


@pytest.mark.parametrize("seed", range(4))
def test_flipped_landmark_sits_on_the_mirrored_pixel(seed):
  rng = np.random.default_rng(seed)
  h, w = 23, 31
  image = np.zeros((h, w, 3), np.uint8)
  rows, cols = rng.choice(h, 5, replace=False), rng.choice(w, 5, replace=False)
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]])
  image[rows, cols] = colours
  # Anywhere inside the pixel, never on its border: floor() must find the pixel again.
  lm = np.stack([cols + rng.uniform(0.05, 0.95, 5), rows + rng.uniform(0.05, 0.95, 5)], -1)
  out_image, _, out_lm, _ = augment.hflip(image, np.zeros((0, 4)), lm[None].astype(np.float32),
                                          "five")
  perm = geometry.SCHEMES["five"].flip
  for i in range(5):
    col, row = np.floor(out_lm[0, i]).astype(int)
    np.testing.assert_array_equal(out_image[row, col], colours[perm[i]])
    assert col == w - 1 - cols[perm[i]] and row == rows[perm[i]]
  x1, y1 = rng.integers(0, 10, 2)
  box = np.array([[x1, y1, x1 + rng.integers(1, 20), y1 + rng.integers(1, 12)]], np.float32)
  painted = np.zeros((h, w), np.uint8)
  painted[int(box[0, 1]):int(box[0, 3]), int(box[0, 0]):int(box[0, 2])] = 255
  out_painted, out_boxes, _, _ = augment.hflip(painted, box)
  np.testing.assert_array_equal(_painted_box(out_painted), out_boxes[0])


def test_ibug68_flip_swaps_left_and_right_points():
  rng = np.random.default_rng(0)
  w = 200
  lm = np.stack([rng.uniform(0, w, 68), rng.uniform(0, 150, 68)], -1).astype(np.float32)[None]
  mask = np.zeros((1, 68), bool)
  mask[0, 45] = True
  lm_masked = np.where(mask[..., None], lm, 0)
  image = np.zeros((150, w, 3), np.uint8)
  _, _, out, _ = augment.hflip(image, np.zeros((1, 4)), lm, "ibug68")
  for a, b in [(36, 45), (45, 36), (0, 16), (16, 0), (48, 54), (39, 42), (17, 26), (31, 35)]:
    np.testing.assert_allclose(out[0, a], [w - lm[0, b, 0], lm[0, b, 1]], atol=1e-4)
  for centre in (8, 27, 30, 33, 51, 57, 62, 66):  # Chin, nose ridge and tip, mouth midline.
    np.testing.assert_allclose(out[0, centre], [w - lm[0, centre, 0], lm[0, centre, 1]], atol=1e-4)
  _, _, out_m, out_mask = augment.hflip(image, np.zeros((1, 4)), lm_masked, "ibug68", mask)
  assert out_mask[0].nonzero()[0].tolist() == [36]
  assert (out_m[0, np.arange(68) != 36] == 0).all()  # Unannotated points stay 0, not w.
  _, _, five, _ = augment.hflip(image, np.zeros((1, 4)), lm[:, :5], "five")
  np.testing.assert_allclose(five[0, :, 0], w - lm[0, [1, 0, 2, 4, 3], 0], atol=1e-4)
  with pytest.raises(ValueError, match="scheme"):
    augment.hflip(image, np.zeros((1, 4)), lm, None)


# ---------------------------------------------------------------------------- affine


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_affine_returns_the_image_exactly(backend):
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
  boxes, lm, mask = _random_geometry(rng, 33, 47)
  out = augment.affine(image, boxes, lm, np.eye(2, 3), (33, 47), landmark_mask=mask,
                       backend=backend)
  np.testing.assert_array_equal(out[0], image)
  np.testing.assert_array_equal(out[1], boxes)
  np.testing.assert_array_equal(out[2], lm)
  # The same through the resampler itself (the shortcut is skipped).
  np.testing.assert_array_equal(augment.warp_image(image, np.eye(2, 3), (33, 47), backend=backend),
                                image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_translation_moves_pixels_exactly(backend):
  image = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
  m = np.array([[1, 0, 3], [0, 1, -2]], np.float64)
  out = augment.warp_image(image, m, (30, 40), backend=backend)
  np.testing.assert_array_equal(out[:28, 3:], image[2:, :37])


# Strong transforms: a missed +0.5 shifts points by (A - I) (0.5, 0.5), which is >= 0.4 px here.
AFFINE_CASES = {
    "rot90": augment.rotation_matrix((30, 30), 90),
    "rot180": augment.rotation_matrix((30, 30), 180),
    "rot30_zoom2.5": augment.rotation_matrix((30, 30), 30, 2.5, (31.3, 28.9)),
    "zoom3_shift": np.array([[3.0, 0, -55.2], [0, 3.0, -61.7]]),
    "shrink0.4_rot-70": augment.rotation_matrix((30, 30), -70, 0.4, (25.0, 33.0)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_affine_landmarks_land_where_their_pixels_go(name, backend):
  m = AFFINE_CASES[name]
  rng = np.random.default_rng(3)
  image = _ramp()
  # Margins: every output pixel the reading touches must sample inside the source.
  pts = rng.uniform(5, 55, (400, 2)).astype(np.float32)
  moved = geometry.transform_points(pts, m)
  keep = ((moved >= 2) & (moved <= 58)).all(-1)
  assert keep.sum() >= 20
  pts, moved = pts[keep], moved[keep]
  # The test can tell the conventions apart: index-space warping would be this far off.
  wrong = geometry.transform_points(pts - 0.5, m) + 0.5
  assert np.abs(wrong - moved).max() >= 0.4
  out_image, _, out_lm, _ = augment.affine(image, np.zeros((0, 4)), pts[None], m, (60, 60),
                                           backend=backend)
  np.testing.assert_array_equal(out_lm[0], moved)
  np.testing.assert_allclose(_read_ramp(out_image, out_lm[0]), pts, atol=0.2)


@pytest.mark.parametrize("name", ["rot30_zoom2.5", "zoom3_shift", "rot90"])
def test_a_painted_blob_is_centred_on_the_moved_landmark(name):
  m = AFFINE_CASES[name]
  centre = np.array([[29.3, 31.6]], np.float32)
  ys, xs = np.mgrid[0:60, 0:60] + 0.5
  blob = 255 * np.exp(-((xs - centre[0, 0]) ** 2 + (ys - centre[0, 1]) ** 2) / (2 * 2.0 ** 2))
  image = np.repeat(np.rint(blob)[..., None], 3, -1).astype(np.uint8)
  out_image, _, out_lm, _ = augment.affine(image, np.zeros((0, 4)), centre[None], m, (60, 60))
  weight = out_image[..., 0].astype(np.float64)
  found = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
  np.testing.assert_allclose(found, out_lm[0, 0], atol=0.15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m, atol", [
    (np.array([[3.0, 0, -40], [0, 3.0, -50]]), 0),  # Corners land on pixel borders: exact.
    (augment.rotation_matrix((30, 30), 90), 0),
    (augment.rotation_matrix((30, 30), 180, 1.0, (31, 29)), 0),
    (augment.rotation_matrix((30, 30), 30, 1.5), 1.0),
])
def test_a_painted_rectangle_goes_to_the_moved_box(m, atol, backend):
  image = np.zeros((60, 60, 3), np.uint8)
  box = np.array([[17, 21, 33, 29]], np.float32)
  image[21:29, 17:33] = 255
  out_image, out_boxes, _, _ = augment.affine(image, box, None, m, (60, 60), backend=backend)
  np.testing.assert_allclose(_painted_box(out_image[..., 0]), out_boxes[0], atol=atol)


def test_ellipse_box_mode_bounds_the_rotated_ellipse():
  ys, xs = np.mgrid[0:80, 0:80] + 0.5
  box = np.array([[20, 30, 60, 50]], np.float32)  # A 40 x 20 ellipse.
  inside = ((xs - 40) / 20) ** 2 + ((ys - 40) / 10) ** 2 <= 1
  image = np.repeat((255 * inside)[..., None], 3, -1).astype(np.uint8)
  m = augment.rotation_matrix((40, 40), 35)
  out_image, ellipse_box, _, _ = augment.affine(image, box, None, m, (80, 80), box_mode="ellipse")
  _, corner_box, _, _ = augment.affine(image, box, None, m, (80, 80), box_mode="corners")
  np.testing.assert_allclose(_painted_box(out_image[..., 0]), ellipse_box[0], atol=1.0)
  assert (corner_box[0, 2:] - corner_box[0, :2] > ellipse_box[0, 2:] - ellipse_box[0, :2] + 8).all()
  # Without rotation the modes agree.
  shift = np.array([[1.5, 0, 3], [0, 0.5, -2]])
  for mode in ("ellipse", "landmarks"):
    np.testing.assert_allclose(augment.transform_boxes(box, shift, mode),
                               geometry.transform_boxes(box, shift), atol=1e-4)


def test_landmark_box_mode_follows_the_points():
  rng = np.random.default_rng(4)
  lm = rng.uniform(10, 50, (2, 68, 2)).astype(np.float32)
  tight = geometry.landmark_bbox(lm)
  boxes = tight + np.array([-3, -6, 2, 1], np.float32)  # Margins around the points.
  m = augment.rotation_matrix((30, 30), 25, 1.3, (28, 33))
  moved = geometry.transform_points(lm, m)
  out = augment.transform_boxes(tight, m, "landmarks", lm)
  np.testing.assert_allclose(out, geometry.landmark_bbox(moved), atol=1e-3)
  # Scale and translation only: margins scale with the face, as the corner rule says.
  zoom = np.array([[2.0, 0, 5], [0, 2.0, -7]])
  np.testing.assert_allclose(augment.transform_boxes(boxes, zoom, "landmarks", lm),
                             geometry.transform_boxes(boxes, zoom), atol=1e-3)
  few = np.zeros((2, 68), bool)
  few[:, :2] = True  # Two points: not enough, falls back to the ellipse rule.
  np.testing.assert_allclose(augment.transform_boxes(boxes, m, "landmarks", lm, few),
                             augment.transform_boxes(boxes, m, "ellipse"), atol=1e-4)
  with pytest.raises(ValueError, match="box mode"):
    augment.transform_boxes(boxes, m, "bogus")


def test_points_leaving_the_image_stay_exact_and_can_be_masked():
  lm = np.array([[[5, 5], [30, 30], [55, 10]]], np.float32)
  mask = np.array([[True, True, False]])
  m = np.array([[1, 0, -10.0], [0, 1, 0]])
  for mask_outside in (False, True):
    _, _, out, out_mask = augment.affine(np.zeros((60, 60, 3), np.uint8), np.zeros((1, 4)), lm, m,
                                         (60, 60), landmark_mask=mask, mask_outside=mask_outside)
    np.testing.assert_array_equal(out[0, :2], [[-5, 5], [20, 30]])
    np.testing.assert_array_equal(out[0, 2], [0, 0])  # Unannotated stays 0.
    assert out_mask[0].tolist() == ([False, True, False] if mask_outside else [True, True, False])


@pytest.mark.parametrize("seed", range(3))
def test_pil_and_numpy_backends_agree_inside(seed):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
  m = augment.random_affine_matrix(rng, (50, 50), None, 40, 0.1, (0.7, 1.4))
  pil = augment.warp_image(image, m, (50, 50), backend="pil").astype(int)
  ref = augment.warp_image(image, m, (50, 50), backend="numpy").astype(int)
  # Compare where the output samples lie a pixel inside the source (the borders differ by design).
  ys, xs = np.mgrid[0:50, 0:50] + 0.5
  src = geometry.transform_points(np.stack([xs, ys], -1), geometry.invert_affine(m))
  inner = ((src >= 1.5) & (src <= 48.5)).all(-1)
  assert inner.sum() > 500
  assert np.abs(pil - ref)[inner].max() <= 1


def test_rotation_direction_and_random_matrix_ranges():
  m = augment.rotation_matrix((10, 10), 90)
  np.testing.assert_allclose(geometry.transform_points([[20, 10]], m), [[10, 0]], atol=1e-5)
  for seed in range(20):
    m = augment.random_affine_matrix(np.random.default_rng(seed), (40, 60), None, 15, 0.0,
                                     (0.8, 1.25))
    scale = np.sqrt(np.linalg.det(m[:, :2]))
    angle = np.degrees(np.arctan2(m[0, 1], m[0, 0]))
    assert 0.8 - 1e-9 <= scale <= 1.25 + 1e-9 and abs(angle) <= 15
    np.testing.assert_allclose(geometry.transform_points([[30, 20]], m), [[30, 20]], atol=1e-4)
  # The random stream advances by the same amount whatever is switched on.
  a, b = np.random.default_rng(7), np.random.default_rng(7)
  augment.random_affine_matrix(a, (40, 60))
  augment.random_affine_matrix(b, (40, 60), (20, 20), 30, 0.2, (0.5, 2.0))
  assert a.random() == b.random()


# ---------------------------------------------------------------------- photometric


def _smooth_image(h=64, w=80):
  ys, xs = np.mgrid[0:h, 0:w]
  return np.stack([128 + 100 * np.sin(xs / 9), 128 + 90 * np.cos(ys / 7),
                   (xs + ys) * 255 / (h + w)], -1).astype(np.uint8)


def _psnr(a, b):
  return 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_jpeg_keeps_shape_and_stays_close():
  image = _smooth_image()
  high, low = augment.jpeg(image, 90), augment.jpeg(image, 10)
  assert high.shape == image.shape and high.dtype == np.uint8
  assert not np.array_equal(high, image)
  assert _psnr(high, image) > 32
  assert _psnr(low, image) < _psnr(high, image)
  with pytest.raises(ValueError, match="quality"):
    augment.jpeg(image, 0)


def test_color_adjustments():
  image = _smooth_image()
  np.testing.assert_array_equal(augment.adjust_colors(image), image)
  np.testing.assert_array_equal(
      augment.color_jitter(image, np.random.default_rng(0)), image)  # All amounts zero.
  np.testing.assert_array_equal(augment.adjust_colors(image, brightness=0.5),
                                np.rint(image * np.float32(0.5)).astype(np.uint8))
  gray = augment.adjust_colors(image, grayscale=True)
  primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
  np.testing.assert_array_equal(augment.adjust_colors(primaries, grayscale=True)[0, :, 0],
                                [76, 150, 29])  # ITU-R 601 luma, as PIL's convert("L").
  assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
  np.testing.assert_array_equal(augment.adjust_colors(image, saturation=0.0), gray)
  flat = augment.adjust_colors(image, contrast=0.0)
  assert np.ptp(flat) == 0 and abs(int(flat[0, 0, 0]) - (image @ [0.299, 0.587, 0.114]).mean()) < 1
  jittered = augment.color_jitter(image, np.random.default_rng(1), 0.4, 0.4, 0.4, 1.0)
  assert (jittered[..., 0] == jittered[..., 2]).all() and not np.array_equal(jittered, gray)


# ------------------------------------------------------------------------- composed

STRONG = augment.Augmenter(flip_prob=0.5, max_rotation_deg=25, max_translation=0.08,
                           scale_range=(0.8, 1.3))


def _ramp_sample(rng):
  lm = rng.uniform(18, 42, (2, 5, 2)).astype(np.float32)
  mask = np.array([[True] * 5, [True, False, True, True, False]])
  return {"image": _ramp(), "boxes": np.array([[15, 14, 45, 47], [20, 20, 30, 28]], np.float32),
          "landmarks": np.where(mask[..., None], lm, 0).astype(np.float32),
          "landmark_mask": mask, "scheme": "five", "image_id": "x"}


@pytest.mark.parametrize("seed", range(8))
def test_augmenter_moves_landmarks_with_their_pixels(seed):
  sample = _ramp_sample(np.random.default_rng(100 + seed))
  params = STRONG.sample_params(np.random.default_rng(seed), (60, 60))
  out = STRONG.apply(sample, params)
  assert set(out) == set(sample) and out["image_id"] == "x"
  assert out["image"].shape == (60, 60, 3) and out["image"].dtype == np.uint8
  perm = list(geometry.SCHEMES["five"].flip) if params.flip else list(range(5))
  expected_lm, expected_mask = sample["landmarks"][:, perm], sample["landmark_mask"][:, perm]
  np.testing.assert_array_equal(out["landmark_mask"], expected_mask)
  assert (out["landmarks"][~expected_mask] == 0).all()
  np.testing.assert_allclose(_read_ramp(out["image"], out["landmarks"][expected_mask]),
                             expected_lm[expected_mask], atol=0.25)
  boxes = geometry.flip_boxes(sample["boxes"], 60) if params.flip else sample["boxes"]
  np.testing.assert_allclose(out["boxes"], geometry.transform_boxes(boxes, params.matrix),
                             atol=1e-4)
  again = STRONG(sample, np.random.default_rng(seed))
  for key in out:
    np.testing.assert_array_equal(again[key], out[key])


def test_augmenter_is_deterministic_and_photometry_leaves_geometry_alone():
  full = augment.Augmenter(flip_prob=0.5, max_rotation_deg=10, max_translation=0.05,
                           scale_range=(0.9, 1.1), jpeg_prob=0.5, brightness=0.3, contrast=0.3,
                           saturation=0.3, grayscale_prob=0.2)
  sample = _ramp_sample(np.random.default_rng(0))
  a = full(sample, np.random.default_rng(42))
  b = full(sample, np.random.default_rng(42))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(full(sample, np.random.default_rng(s))["image"], a["image"])
             for s in range(43, 46))
  photo = augment.Augmenter(jpeg_prob=1.0, brightness=0.5, contrast=0.5, saturation=0.5,
                            grayscale_prob=0.5)
  for seed in range(3):
    out = photo(sample, np.random.default_rng(seed))
    assert not np.array_equal(out["image"], sample["image"])
    for key in ("boxes", "landmarks", "landmark_mask"):
      np.testing.assert_array_equal(out[key], sample[key])
  np.testing.assert_array_equal(augment.Augmenter()(sample, np.random.default_rng(0))["image"],
                                sample["image"])


@pytest.mark.parametrize("bad", [dict(flip_prob=1.5), dict(scale_range=(1.2, 0.9)),
                                 dict(jpeg_quality_range=(0, 90)), dict(box_mode="tight"),
                                 dict(max_rotation_deg=-1)])
def test_augmenter_rejects_bad_settings(bad):
  with pytest.raises(ValueError):
    augment.Augmenter(**bad)


def _crops():
  s = 48
  rng = np.random.default_rng(5)
  lm = rng.uniform(12, 36, (3, 5, 2)).astype(np.float32)
  mask = np.array([[True] * 5, [False] * 5, [True, True, True, False, False]])
  return records.CropSet(
      images=np.stack([_ramp(s, s)] * 3),
      labels=np.array([records.POSITIVE, records.NEGATIVE, records.LANDMARK]),
      boxes=np.array([[6, 5, 43, 44], [0, 0, 0, 0], [2, 3, 40, 45]], np.float32),
      landmarks=np.where(mask[..., None], lm, 0), landmark_mask=mask, source=[3, -1, 7])


@pytest.mark.parametrize("seed", range(4))
def test_augment_crop_keeps_size_keys_and_conventions(seed):
  crops = _crops()
  params = STRONG.sample_params(np.random.default_rng(seed), (48, 48))
  perm = list(geometry.SCHEMES["five"].flip) if params.flip else list(range(5))
  for index in range(len(crops)):
    item = crops[index]
    out = augment.augment_crop(item, STRONG, np.random.default_rng(seed))
    assert set(out) == set(item) and out["image"].shape == (48, 48, 3)
    assert out["label"] == item["label"] and out["label"].dtype == np.int8
    assert out["source"] == item["source"] and out["landmarks"].shape == (5, 2)
    box = geometry.flip_boxes(item["box"], 48) if params.flip else item["box"]
    expected_box = geometry.transform_boxes(box, params.matrix)[0] if index != 1 else np.zeros(4)
    np.testing.assert_allclose(out["box"], expected_box, atol=1e-4)  # Negatives keep zeros.
    known = item["landmark_mask"][perm]
    np.testing.assert_array_equal(out["landmark_mask"], known)
    assert (out["landmarks"][~known] == 0).all()
    np.testing.assert_allclose(_read_ramp(out["image"], out["landmarks"][known]),
                               item["landmarks"][perm][known], atol=0.25)
    again = augment.augment_crop(item, STRONG, np.random.default_rng(seed))
    for key in out:
      np.testing.assert_array_equal(again[key], out[key])


def test_augment_crop_relabels_by_iou():
  item = _crops()[0]
  seen = []

  def relabel(label, iou):
    seen.append((label, iou))
    return records.PART if iou < 0.65 else records.POSITIVE

  far = augment.Augmenter(max_translation=0.3, scale_range=(0.5, 0.5))
  out = augment.augment_crop(item, far, np.random.default_rng(0), relabel)
  iou = float(geometry.pairwise_iou(np.array([[0, 0, 48, 48]], np.float32), out["box"][None])[0, 0])
  assert seen == [(records.POSITIVE, pytest.approx(iou))] and iou < 0.65
  assert out["label"] == records.PART
  augment.augment_crop(_crops()[1], far, np.random.default_rng(0), relabel)
  assert len(seen) == 1  # Negatives are never relabelled.
