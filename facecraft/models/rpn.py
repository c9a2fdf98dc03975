"""RPN + Fast R-CNN (FaceCraft §5): a compact trunk shared by a region proposal branch and a
Fast R-CNN branch over RoIAlign features, plus the static anchor grid and RoIAlign they use.

  anchors = anchor_grid((h, w), stride=8, sizes=(16, 32), ratios=(1.25,))  # [h * w * A, 4]
  feats = roi_align(fmap, rois, stride=8, output_size=7)                   # [R, 7, 7, C]
  model = RPNFastRCNN(RPNConfig())
  out = model.apply(params, images, rois)  # rpn logits / deltas per anchor, frcnn per RoI

Pixels are corners (pixel k spans [k, k + 1]); a feature cell (i, j) at stride s looks at the
image around ((j + 0.5) s, (i + 0.5) s), which is where its anchors are centred and where
RoIAlign samples it (Detectron's aligned=True convention). Box deltas are R-CNN's
(data_pipelines.geometry.encode_rcnn / decode_rcnn). Everything has static shapes: the anchor
grid is computed in Python for a bucket's feature size; RoIAlign takes a fixed number of RoIs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import geometry
from facecraft import nms as nms_lib


# ------------------------------------------------------------------------------ anchors


def anchor_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
  """[A, 2] (width, height) per anchor: every size (the square root of the area) at every
  height / width ratio (faces are taller than wide: WIDER's median is about 1.25)."""
  out = [(s / np.sqrt(r), s * np.sqrt(r)) for s in sizes for r in ratios]
  return np.asarray(out, np.float64)


def anchor_grid(feature_hw: tuple[int, int], stride: int, sizes: Sequence[float],
                ratios: Sequence[float] = (1.0,)) -> np.ndarray:
  """[H * W * A, 4] xyxy float32 anchors, cell-major (cell (i, j) then its A shapes), centred at
  ((j + 0.5) stride, (i + 0.5) stride)."""
  h, w = feature_hw
  shapes = anchor_shapes(sizes, ratios)
  cy, cx = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride,
                       indexing="ij")
  centres = np.stack([cx, cy], -1).reshape(-1, 1, 2)
  half = shapes[None] / 2
  boxes = np.concatenate([centres - half, centres + half], -1)
  return boxes.reshape(-1, 4).astype(np.float32)


# ------------------------------------------------------------------------------ RoIAlign


def _sample_points(lo, hi, bins: int, ratio: int):
  """[R, bins * ratio] sample coordinates: `ratio` evenly spaced points inside each of `bins`
  equal bins of [lo, hi] (bin centres of a regular sub-grid)."""
  size = (hi - lo) / bins
  steps = (jnp.arange(bins * ratio, dtype=jnp.float32) + 0.5) / ratio
  return lo[:, None] + steps[None, :] * size[:, None]


def _axis_weights(coords, length: int):
  """Bilinear (low index, high index, low weight, high weight, inside) of feature coordinates
  along one axis: Detectron's rule (outside [-1, length] counts zero; [-1, 0) clamps to 0)."""
  inside = (coords >= -1.0) & (coords <= length)
  c = jnp.clip(coords, 0.0, length - 1)
  lo = jnp.floor(c).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, length - 1)
  frac = c - lo
  return lo, hi, 1.0 - frac, frac, inside


def roi_align(features, rois, stride: float, output_size: int = 7, sampling_ratio: int = 2):
  """Bilinear RoIAlign of one image: features [H, W, C], rois [R, 4] xyxy image pixels ->
  [R, output_size, output_size, C], each bin the mean of sampling_ratio^2 bilinear samples."""
  h, w = features.shape[:2]
  boxes = rois.astype(jnp.float32) / stride - 0.5  # feature coordinates of pixel centres
  ys = _sample_points(boxes[:, 1], boxes[:, 3], output_size, sampling_ratio)
  xs = _sample_points(boxes[:, 0], boxes[:, 2], output_size, sampling_ratio)
  y0, y1, wy0, wy1, iny = _axis_weights(ys, h)
  x0, x1, wx0, wx1, inx = _axis_weights(xs, w)

  def gather(yi, xi):  # [R, a] x [R, b] -> [R, a, b, C]
    return features[yi[:, :, None], xi[:, None, :]]

  wy0, wy1 = (wy0 * iny)[..., None, None], (wy1 * iny)[..., None, None]
  wx0, wx1 = (wx0 * inx)[:, None, :, None], (wx1 * inx)[:, None, :, None]
  samples = (wy0 * wx0 * gather(y0, x0) + wy0 * wx1 * gather(y0, x1) +
             wy1 * wx0 * gather(y1, x0) + wy1 * wx1 * gather(y1, x1))
  r, c = rois.shape[0], features.shape[-1]
  samples = samples.reshape(r, output_size, sampling_ratio, output_size, sampling_ratio, c)
  return samples.mean(axis=(2, 4))


def roi_align_batch(features, rois, stride: float, output_size: int = 7,
                    sampling_ratio: int = 2):
  """roi_align over a batch: features [B, H, W, C], rois [B, R, 4] -> [B, R, P, P, C]."""
  return jax.vmap(lambda f, r: roi_align(f, r, stride, output_size, sampling_ratio))(
      features, rois)


# ------------------------------------------------------------------------------ proposals


def _top(scores, valid, k: int):
  """Indices of the k best valid scores (invalid ones last) and their validity."""
  k = min(k, scores.shape[0])
  _, idx = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf), k)
  return idx, valid[idx]


def nms_top(boxes, scores, valid, threshold: float, k: int):
  """Greedy NMS, then the k best survivors: (boxes, scores, valid) of static length k."""
  order, keep = nms_lib.nms(boxes, scores, valid, threshold)
  b, s, v = boxes[order], scores[order], keep
  idx, v = _top(jnp.where(v, s, -jnp.inf), v, k)
  pad = k - idx.shape[0]
  b, s = b[idx], s[idx]
  if pad > 0:  # fewer candidates than k: invalid padding keeps the shape static
    b = jnp.concatenate([b, jnp.zeros((pad, 4), b.dtype)])
    s = jnp.concatenate([s, jnp.full((pad,), -jnp.inf, s.dtype)])
    v = jnp.concatenate([v, jnp.zeros((pad,), bool)])
  return b, s, v


def propose(anchors, logit, delta, hw, score_floor: float, min_box: float, pre_nms: int,
            nms_threshold: float, post_nms: int):
  """One image's proposals: (boxes [post_nms, 4], scores, valid), best first.

  anchors [A, 4] (anchor_grid), logit [A] and delta [A, 4] from the RPN, hw the valid image:
  decoded anchors whose centre lies in the image, clipped to it, at least min_box wide and tall,
  scored at least score_floor (sigmoid); the pre_nms best, greedy NMS, the post_nms best. The
  engine and the joint schedule both propose with this (the paper's "RPN test")."""
  centres = (anchors[:, :2] + anchors[:, 2:]) / 2
  inside = (centres[:, 0] < hw[1]) & (centres[:, 1] < hw[0])
  boxes = geometry.clip_boxes(geometry.decode_rcnn(anchors, delta), hw[0], hw[1])
  big = ((boxes[:, 2] - boxes[:, 0]) >= min_box) & ((boxes[:, 3] - boxes[:, 1]) >= min_box)
  score = jax.nn.sigmoid(logit)
  valid = inside & big & (score >= score_floor)
  idx, v = _top(score, valid, pre_nms)
  return nms_top(boxes[idx], score[idx], v, nms_threshold, post_nms)


# ------------------------------------------------------------------------------ networks


@dataclasses.dataclass(frozen=True)
class RPNConfig:
  """The trunk (3x3 convs, a 2x2 max-pool after each stage but the last: stride 2^(n-1)), its
  context levels (each one more pool and 3x3 conv, projected back onto the last map), the
  anchors of the RPN on its last map, and the Fast R-CNN head on RoIAlign features."""

  trunk_channels: tuple[int, ...] = (16, 32, 64, 96)
  context_channels: tuple[int, ...] = ()
  rpn_channels: int = 96
  anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)
  anchor_ratios: tuple[float, ...] = (1.25,)
  roi_size: int = 7
  sampling_ratio: int = 2
  head_fc: int = 256

  @classmethod
  def from_dict(cls, values) -> RPNConfig:
    """From a bundle's model_config or a config's model section (lists become tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})

  @property
  def stride(self) -> int:
    return 2 ** (len(self.trunk_channels) - 1)

  @property
  def num_anchors(self) -> int:
    return len(self.anchor_sizes) * len(self.anchor_ratios)


INPUT_MEAN, INPUT_DIVISOR = 127.5, 128.0  # uint8 RGB -> about [-1, 1], as the cascade models


def _upsample_to(x, hw, factor: int):
  """Nearest-neighbour upsampling of [B, h, w, C] by factor, cropped to hw (SAME pools round
  up, so cell i of a level covers cells [factor i, factor (i + 1)) of the map)."""
  x = jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
  return x[:, :hw[0], :hw[1]]


class Trunk(nn.Module):
  """Shared convolutions: per stage one 3x3 conv + ReLU (SAME padding keeps the map aligned
  with the anchor grid), then a 2x2 max-pool, none after the last stage.

  Context levels (why: four 3x3 stages see only ~38 px of the photo, and a 128-256 px anchor
  must judge a face it sees a fifth of): each pools the previous level by 2 and convolves it;
  every level is projected by a 1x1 conv onto the stride-s map, upsampled and added to it, so
  the anchors, the RPN and RoIAlign keep one map at one stride. With two levels (stride 2s and
  4s) the map's receptive field grows from 38 to ~190 px for ~25% more multiply-adds at VGA."""

  channels: tuple[int, ...]
  context: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x):
    for k, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (3, 3), padding="SAME", name=f"conv{k + 1}")(x))
      if k < len(self.channels) - 1:
        x = nn.max_pool(x, (2, 2), (2, 2))
    if not self.context:
      return x
    level, out = x, x
    for k, c in enumerate(self.context):
      level = nn.max_pool(level, (2, 2), (2, 2), padding="SAME")
      level = nn.relu(nn.Conv(c, (3, 3), padding="SAME", name=f"context{k + 1}")(level))
      lateral = nn.Conv(x.shape[-1], (1, 1), name=f"lateral{k + 1}")(level)
      out = out + _upsample_to(lateral, x.shape[1:3], 2 ** (k + 1))
    return nn.relu(out)


class RPNFastRCNN(nn.Module):
  """One network, two sibling branches on the shared trunk (the paper's Fig. 2)."""

  config: RPNConfig

  def setup(self):
    cfg = self.config
    self.trunk = Trunk(cfg.trunk_channels, cfg.context_channels)
    self.rpn_conv = nn.Conv(cfg.rpn_channels, (3, 3), padding="SAME")
    self.rpn_logits = nn.Conv(cfg.num_anchors, (1, 1))     # face logit per anchor
    self.rpn_deltas = nn.Conv(4 * cfg.num_anchors, (1, 1))  # R-CNN deltas per anchor
    self.head_fc = nn.Dense(cfg.head_fc)
    self.head_logits = nn.Dense(2)  # background / face
    self.head_deltas = nn.Dense(4)

  def features(self, images):
    """images [B, H, W, 3] (already normalised) -> the shared map [B, H/s, W/s, C]."""
    return self.trunk(images)

  def rpn(self, fmap):
    """-> (logits [B, h * w * A], deltas [B, h * w * A, 4]) in anchor_grid's order."""
    b = fmap.shape[0]
    x = nn.relu(self.rpn_conv(fmap))
    return (self.rpn_logits(x).reshape(b, -1),
            self.rpn_deltas(x).reshape(b, -1, 4))

  def head(self, fmap, rois):
    """rois [B, R, 4] image pixels -> (logits [B, R, 2], deltas [B, R, 4])."""
    cfg = self.config
    feats = roi_align_batch(fmap, rois, cfg.stride, cfg.roi_size, cfg.sampling_ratio)
    b, r = rois.shape[:2]
    x = nn.relu(self.head_fc(feats.reshape(b, r, -1)))
    return self.head_logits(x), self.head_deltas(x)

  def __call__(self, images, rois):
    fmap = self.features(images)
    rpn_logits, rpn_deltas = self.rpn(fmap)
    head_logits, head_deltas = self.head(fmap, rois)
    return {"rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas,
            "head_logits": head_logits, "head_deltas": head_deltas}
