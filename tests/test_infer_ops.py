"""Area resize, pyramid resize and crop-and-resize against float64 numpy references; layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facecraft.infer import ops
from facecraft.models import layers
from facecraft.models.layers import max_pool_ceil


# The window sums are exact integers; we divide once by the pixel count where torch divides twice
# (sum / rows / cols), so averages may differ from torch's in the last bit or two.
ULPS = 2.5 * 2.0**-23


def _bounds(i, out, n):
  return (i * n) // out, -(-((i + 1) * n) // out)


def _area_ref(image, out_h, out_w):
  """Adaptive average pooling (torch's interpolate(mode="area")): the exact window sum in
  float64, then float32(sum) / rows / cols as torch's float32 CPU kernel rounds it."""
  h, w = image.shape[:2]
  out = np.zeros((out_h, out_w, image.shape[2]), np.float32)
  for i in range(out_h):
    y0, y1 = _bounds(i, out_h, h)
    for j in range(out_w):
      x0, x1 = _bounds(j, out_w, w)
      total = image[y0:y1, x0:x1].astype(np.float64).sum(axis=(0, 1)).astype(np.float32)
      out[i, j] = total / np.float32(y1 - y0) / np.float32(x1 - x0)
  return out


def _crop_ref(image, window, size, mode):
  """MATLAB-style zero padding ("pad") or facenet-style clipping ("clip"), then area resize."""
  h, w = image.shape[:2]
  x0, y0, x1, y1 = window
  if mode == "clip":
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    return _area_ref(image[y0:y1, x0:x1], size, size)
  canvas = np.zeros((y1 - y0, x1 - x0, image.shape[2]))
  sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
  canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
  return _area_ref(canvas, size, size)


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)


def test_integral_image_is_exact(image):
  integral = np.asarray(jax.jit(ops.integral_image)(image))
  ref = np.zeros((38, 54, 3), np.int64)
  ref[1:, 1:] = image.astype(np.int64).cumsum(0).cumsum(1)
  np.testing.assert_array_equal(integral, ref)


@pytest.mark.parametrize("out_hw", [(37, 53), (23, 31), (12, 12), (50, 70), (5, 60)])
def test_area_resize_matches_adaptive_average_pooling(image, out_hw):
  integral = ops.integral_image(image)
  fn = jax.jit(lambda i: ops.area_resize(i, (37, 53), out_hw, (60, 75)))
  out = np.asarray(fn(integral))
  ref = _area_ref(image, *out_hw)
  np.testing.assert_allclose(out[:out_hw[0], :out_hw[1]], ref, rtol=ULPS, atol=0)
  assert not out[out_hw[0]:].any() and not out[:, out_hw[1]:].any()  # Zero outside.


def test_area_resize_of_the_top_left_part_only():
  # A 20 x 30 image padded into a bigger buffer: the padding must not leak into the levels.
  rng = np.random.default_rng(1)
  buffer = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
  out = np.asarray(ops.area_resize(ops.integral_image(buffer), (20, 30), (9, 13), (10, 14)))
  np.testing.assert_allclose(out[:9, :13], _area_ref(buffer[:20, :30], 9, 13), rtol=ULPS, atol=0)


def test_pyramid_resize_equals_area_resize_per_level(image):
  integral = ops.integral_image(image)
  canvases = ((30, 40), (21, 29), (12, 17))
  level_hw = jnp.asarray([[23, 33], [16, 23], [0, 0]])  # The third level is absent.
  levels = jax.jit(lambda i, l: ops.pyramid_resize(i, (37, 53), l, canvases))(integral, level_hw)
  for k, canvas in enumerate(canvases):
    ref = ops.area_resize(integral, (37, 53), level_hw[k], canvas)
    np.testing.assert_array_equal(np.asarray(levels[k]), np.asarray(ref))
  assert not np.asarray(levels[2]).any()


def test_pyramid_resize_space_to_depth_layout(image):
  integral = ops.integral_image(image)
  canvases = ((30, 40), (13, 17))
  level_hw = jnp.asarray([[23, 33], [13, 17]])
  plain = ops.pyramid_resize(integral, (37, 53), level_hw, canvases)
  blocks = ops.pyramid_resize(integral, (37, 53), level_hw, canvases, s2d=True)
  for (h, w), a, b in zip(canvases, plain, blocks):
    bh, bw = ops.s2d_canvas((h, w))
    assert b.shape == (bh, bw, 12)
    # Block (I, J) holds pixels (2I + p, 2J + q) in (p, q, channel) order; zeros past the canvas.
    full = np.asarray(b).reshape(bh, bw, 2, 2, 3).transpose(0, 2, 1, 3, 4)
    full = full.reshape(2 * bh, 2 * bw, 3)
    np.testing.assert_array_equal(full[:h, :w], np.asarray(a))
    assert not full[h:].any() and not full[:, w:].any()


@pytest.mark.parametrize("mode", ["clip", "pad"])
def test_crop_and_resize_both_border_modes(image, mode):
  windows = np.array([[5, 4, 29, 28], [-6, -3, 18, 21], [40, 20, 64, 44], [10, 30, 13, 33],
                      [0, 0, 53, 37], [-2, 10, 60, 12]], np.int32)
  fn = jax.jit(lambda i, w: ops.crop_and_resize(i, (37, 53), w, 24, mode))
  out = np.asarray(fn(ops.integral_image(image), windows))
  for k, win in enumerate(windows):
    np.testing.assert_allclose(out[k], _crop_ref(image, win, 24, mode), rtol=ULPS, atol=0,
                               err_msg=f"window {win}")


def test_crop_of_an_empty_window_is_zero(image):
  out = ops.crop_and_resize(ops.integral_image(image), (37, 53),
                            np.array([[60, 0, 70, 10], [5, 5, 5, 9]], np.int32), 24, "clip")
  assert not np.asarray(out).any()


def test_integral_wraps_but_window_sums_stay_exact():
  # 3000 x 3000 white pixels sum to 2.3e9 > 2**31: the integral wraps, window sums must not.
  image = np.full((3000, 3000, 1), 255, np.uint8)
  integral = ops.integral_image(image)
  out = np.asarray(ops.crop_and_resize(integral, (3000, 3000),
                                       np.array([[2000, 2500, 2990, 2990]], np.int32), 4, "clip"))
  ref = np.float32(255 * 248 * 123) / np.float32(248) / np.float32(123)  # 990 / 4, 490 / 4.
  np.testing.assert_allclose(out, ref, rtol=ULPS, atol=0)


def test_float_input_is_rounded():
  image = np.array([[[0.4], [1.6]]], np.float32)
  np.testing.assert_array_equal(np.asarray(ops.integral_image(image))[1, 1:, 0], [0, 2])


# ---------------------------------------------------------------------------------- layers


def _conv_ref(x, kernel, bias):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias


def test_conv2d_im2col_equals_xla_conv():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 11, 13, 5)).astype(np.float32)
  p = {"kernel": rng.normal(size=(3, 2, 5, 7)).astype(np.float32),
       "bias": rng.normal(size=(7,)).astype(np.float32)}
  ref = _conv_ref(x, p["kernel"], p["bias"])
  for impl in ("xla", "im2col"):
    np.testing.assert_allclose(layers.conv2d(x, p, impl), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,stride,ceil", [(2, 2, True), (3, 2, True), (3, 2, False)])
def test_max_pool_matches_reduce_window(window, stride, ceil):
  x = np.random.default_rng(3).normal(size=(2, 11, 10, 3)).astype(np.float32)
  if ceil:
    ref = max_pool_ceil(x, window, stride)
  else:
    ref = jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, window, window, 1),
                                (1, stride, stride, 1), "VALID")
  np.testing.assert_array_equal(layers.max_pool(x, window, stride, ceil), ref)


@pytest.mark.parametrize("hw,valid", [((37, 53), (37, 53)), ((36, 52), (36, 52)),
                                      ((37, 53), (30, 41)), ((37, 53), (31, 40))])
def test_space_to_depth_conv_pool_equals_conv_then_ceil_pool(hw, valid):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1, *hw, 3)).astype(np.float32)
  conv = {"kernel": rng.normal(size=(3, 3, 3, 10)).astype(np.float32),
          "bias": rng.normal(size=(10,)).astype(np.float32)}
  alpha = rng.uniform(0, 0.5, 10).astype(np.float32)
  out = np.asarray(layers.conv3x3_prelu_pool2(x, conv, alpha, jnp.asarray([valid])))
  # The same from a space-to-depth input (as pyramid_resize(s2d=True) produces it).
  bh, bw = ops.s2d_canvas(hw)
  padded = np.zeros((1, 2 * bh, 2 * bw, 3), np.float32)
  padded[:, :hw[0], :hw[1]] = x
  s2d = padded.reshape(1, bh, 2, bw, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, bh, bw, 12)
  out2 = np.asarray(layers.conv3x3_prelu_pool2(s2d, conv, alpha, jnp.asarray([valid]), s2d_input=True))
  np.testing.assert_array_equal(out, out2)
  # Reference: the image cut to its valid size, conv, PReLU, Caffe ceil pooling.
  y = _conv_ref(x[:, :valid[0], :valid[1]], conv["kernel"], conv["bias"])
  ref = np.asarray(max_pool_ceil(jnp.where(y >= 0, y, alpha * y), 2, 2))
  np.testing.assert_allclose(out[:, :ref.shape[1], :ref.shape[2]], ref, rtol=1e-5, atol=1e-5)
