"""facecraft.models.rpn: anchors by hand, RoIAlign against a float64 numpy reference, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from facecraft.models import rpn


def roi_align_reference(features, rois, stride, out, ratio):
  """Detectron2's ROIAlign (aligned=True), a plain float64 loop."""
  features = np.asarray(features, np.float64)
  h, w, c = features.shape
  res = np.zeros((len(rois), out, out, c))

  def bilinear(y, x):
    if y < -1.0 or y > h or x < -1.0 or x > w:
      return np.zeros(c)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
      y_low = y_high = h - 1
      y = float(y_low)
    else:
      y_high = y_low + 1
    if x_low >= w - 1:
      x_low = x_high = w - 1
      x = float(x_low)
    else:
      x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * features[y_low, x_low] + hy * lx * features[y_low, x_high] +
            ly * hx * features[y_high, x_low] + ly * lx * features[y_high, x_high])

  for r, (x1, y1, x2, y2) in enumerate(np.asarray(rois, np.float64)):
    sx, sy = x1 / stride - 0.5, y1 / stride - 0.5
    bw, bh = (x2 - x1) / stride / out, (y2 - y1) / stride / out
    for ph in range(out):
      for pw in range(out):
        acc = np.zeros(c)
        for iy in range(ratio):
          for ix in range(ratio):
            acc += bilinear(sy + ph * bh + (iy + 0.5) * bh / ratio,
                            sx + pw * bw + (ix + 0.5) * bw / ratio)
        res[r, ph, pw] = acc / ratio ** 2
  return res


ROIS = np.array([[0, 0, 88, 72],        # the whole image
                 [10.3, 5.7, 41.9, 30.2],
                 [-20, -12, 25, 18],      # over the top-left border
                 [70, 60, 130, 95],       # over the bottom-right border
                 [33, 33, 35.5, 34],      # smaller than a cell
                 [200, 200, 260, 240]],   # wholly outside: zeros
                np.float32)


def test_roi_align_matches_the_float64_reference():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(9, 11, 3)).astype(np.float32)  # an 88 x 72 image at stride 8
  for out, ratio in ((7, 2), (3, 1), (2, 3)):
    got = np.asarray(rpn.roi_align(jnp.asarray(feats), jnp.asarray(ROIS), 8, out, ratio))
    want = roi_align_reference(feats, ROIS, 8, out, ratio)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.all(got[-1] == 0)


def test_roi_align_is_exact_on_a_linear_map_inside_the_image():
  """Bilinear interpolation reproduces a linear function: each bin is the function at the
  bin's centre (in feature coordinates: pixel / stride - 0.5)."""
  ys, xs = np.meshgrid(np.arange(9.0), np.arange(11.0), indexing="ij")
  feats = np.stack([2 * ys + 0.5 * xs, -xs], -1).astype(np.float32)
  roi = np.array([[12.0, 10.0, 60.0, 50.0]], np.float32)
  got = np.asarray(rpn.roi_align(jnp.asarray(feats), jnp.asarray(roi), 8, 4, 2))[0]
  centres = (np.arange(4) + 0.5) / 4
  cy = (10 + centres * 40) / 8 - 0.5
  cx = (12 + centres * 48) / 8 - 0.5
  np.testing.assert_allclose(got[..., 0], 2 * cy[:, None] + 0.5 * cx[None, :], atol=1e-5)
  np.testing.assert_allclose(got[..., 1], np.broadcast_to(-cx[None, :], (4, 4)), atol=1e-5)


def test_roi_align_batch_equals_per_image_and_jits():
  rng = np.random.default_rng(1)
  feats = rng.normal(size=(2, 9, 11, 4)).astype(np.float32)
  rois = np.stack([ROIS, ROIS[::-1] * 0.5])
  fn = jax.jit(lambda f, r: rpn.roi_align_batch(f, r, 8, 5, 2))
  got = np.asarray(fn(feats, rois))
  for b in range(2):
    np.testing.assert_allclose(got[b], roi_align_reference(feats[b], rois[b], 8, 5, 2),
                               rtol=1e-5, atol=1e-5)


def test_anchor_grid_by_hand():
  a = rpn.anchor_grid((2, 3), stride=8, sizes=(16.0,), ratios=(1.0, 4.0))
  assert a.shape == (2 * 3 * 2, 4) and a.dtype == np.float32
  # Cell (0, 0) is centred at (4, 4): a 16 x 16 square, then 8 wide x 32 tall (ratio h/w = 4).
  np.testing.assert_allclose(a[0], [-4, -4, 12, 12])
  np.testing.assert_allclose(a[1], [0, -12, 8, 20])
  # Cell (1, 2), the last: centre (20, 12).
  np.testing.assert_allclose(a[-2], [12, 4, 28, 20])
  w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
  np.testing.assert_allclose(np.sqrt(w * h), 16.0, rtol=1e-6)  # the size is sqrt(area)


def test_network_shapes_follow_the_anchor_grid():
  cfg = rpn.RPNConfig(trunk_channels=(4, 8, 8), rpn_channels=8, anchor_sizes=(16.0, 32.0),
                      anchor_ratios=(1.0, 1.25), roi_size=3, head_fc=16)
  assert cfg.stride == 4 and cfg.num_anchors == 4
  model = rpn.RPNFastRCNN(cfg)
  images = jnp.zeros((2, 32, 40, 3))
  rois = jnp.tile(jnp.asarray([[0.0, 0.0, 16.0, 20.0]]), (2, 5, 1))
  params = model.init(jax.random.PRNGKey(0), images, rois)
  out = model.apply(params, images, rois)
  anchors = rpn.anchor_grid((8, 10), cfg.stride, cfg.anchor_sizes, cfg.anchor_ratios)
  assert out["rpn_logits"].shape == (2, len(anchors))
  assert out["rpn_deltas"].shape == (2, len(anchors), 4)
  assert out["head_logits"].shape == (2, 5, 2) and out["head_deltas"].shape == (2, 5, 4)


def test_context_levels_keep_the_map_and_widen_what_it_sees():
  # A context trunk returns the same stride-s map; a pixel far outside the plain trunk's ~38 px
  # receptive field moves the context trunk's centre cell, never the plain one's.
  plain = rpn.Trunk((4, 8, 8, 8))
  wide = rpn.Trunk((4, 8, 8, 8), context=(8, 8))
  images = jax.random.normal(jax.random.PRNGKey(0), (1, 200, 136, 3))
  p_plain = plain.init(jax.random.PRNGKey(1), images)
  p_wide = wide.init(jax.random.PRNGKey(1), images)
  assert plain.apply(p_plain, images).shape == wide.apply(p_wide, images).shape == (1, 25, 17, 8)
  far = images.at[0, 30:40, 30:40].add(5.0)  # 60-70 px from the centre cell (12, 8) at (100, 68)
  centre = lambda m, p, x: np.asarray(m.apply(p, x))[0, 12, 8]  # noqa: E731
  np.testing.assert_array_equal(centre(plain, p_plain, far), centre(plain, p_plain, images))
  assert np.abs(centre(wide, p_wide, far) - centre(wide, p_wide, images)).max() > 0
