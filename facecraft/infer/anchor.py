"""The anchor two-stage engine (family "rpn_frcnn", FaceCraft §5): one jitted function from a
batch of images to faces, with static shapes, behind the same Detector as the pyramid cascade.

Per image, inside jit: normalise; the shared trunk; RPN scores and deltas on the bucket's static
anchor grid (facecraft.models.rpn.anchor_grid); proposals = decoded anchors whose centre lies in
the image, clipped to it, at least `min_box` pixels wide and tall, the `pre_nms` best, greedy NMS
at `rpn_nms`, the `post_nms` best (padded with invalid ones); the Fast R-CNN branch on their
RoIAlign features; its boxes decoded, clipped, scored by softmax, kept above thresholds[1],
greedy NMS at `final_nms`, the `max_detections` best. thresholds[0] is the RPN score a proposal
needs. Multi-scale anchors replace the image pyramid: one trunk pass per image.

Settings (a bundle's inference dict, overridable in Detector.from_pretrained): thresholds (2),
min_face_size (proposals smaller are dropped, in the trunk's pixels), pre_nms, post_nms, rpn_nms,
final_nms, max_detections, box_convention, input_mean, input_scale, upscale (the photo is
resized by it inside the jitted function: the smallest anchor then reaches faces upscale times
smaller, for upscale^2 the time); runtime: buckets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import geometry
from facecraft.infer import executables
from facecraft.infer import plan as plan_lib
from facecraft.infer.detections import Detections
from facecraft.infer.engine import Engine, padded_batch
from facecraft.models import rpn


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
  """Static settings of the anchor engine (part of the compile key)."""

  thresholds: tuple[float, float] = (0.0, 0.5)
  min_box: float = 8.0
  pre_nms: int = 2000
  post_nms: int = 300
  rpn_nms: float = 0.7
  final_nms: float = 0.3
  max_detections: int = 200
  input_mean: float = rpn.INPUT_MEAN
  input_scale: float = 1.0 / rpn.INPUT_DIVISOR
  upscale: float = 1.0  # the photo is resized by this before the trunk: smaller faces, more time

  def __post_init__(self):
    if len(self.thresholds) != 2:
      raise ValueError(f"rpn_frcnn thresholds are (rpn, final), got {self.thresholds!r}")
    if min(self.pre_nms, self.post_nms, self.max_detections) < 1:
      raise ValueError("pre_nms, post_nms and max_detections must be >= 1")
    if not (np.isfinite(self.upscale) and 0.25 <= self.upscale <= 4.0):
      raise ValueError(f"upscale must lie in [0.25, 4], got {self.upscale!r}")


def scaled_shape(bucket, upscale: float, stride: int) -> tuple[int, int]:
  """The trunk's input shape for a bucket: bucket x upscale, rounded up to the stride."""
  return tuple(-(-int(round(n * upscale)) // stride) * stride for n in bucket)


def run_anchor(model: rpn.RPNFastRCNN, config: AnchorConfig, anchors: np.ndarray, params,
               images, sizes):
  """images [B, H, W, 3] uint8, sizes [B, 2] valid (h, w) -> batched outputs (see module doc).
  anchors: the grid of the upscaled shape (scaled_shape); boxes come back in photo pixels."""
  x = (images.astype(jnp.float32) - config.input_mean) * config.input_scale
  b, h, w, _ = images.shape
  sh, sw = scaled_shape((h, w), config.upscale, model.config.stride)
  factor = jnp.asarray([sw / w, sh / h, sw / w, sh / h], jnp.float32)
  if (sh, sw) != (h, w):  # bilinear, antialiased when shrinking
    x = jax.image.resize(x, (b, sh, sw, 3), "linear")
  sizes = sizes * jnp.asarray([sh / h, sw / w], jnp.float32)  # float: clip at the exact edge
  fmap = model.apply(params, x, method=model.features)
  logits, deltas = model.apply(params, fmap, method=model.rpn)
  anchors = jnp.asarray(anchors)

  def proposals(logit, delta, hw):
    return rpn.propose(anchors, logit, delta, hw, config.thresholds[0], config.min_box,
                       config.pre_nms, config.rpn_nms, config.post_nms)

  rois, _, roi_valid = jax.vmap(proposals)(logits, deltas, sizes)
  head_logits, head_deltas = model.apply(params, fmap, rois, method=model.head)

  def faces(roi, valid, logit, delta, hw):
    boxes = geometry.clip_boxes(geometry.decode_rcnn(roi, delta), hw[0], hw[1])
    score = jax.nn.softmax(logit)[:, 1]
    ok = valid & (score >= config.thresholds[1]) & jnp.all(jnp.isfinite(boxes), axis=1)
    return rpn.nms_top(boxes, score, ok, config.final_nms, config.max_detections)

  boxes, scores, valid = jax.vmap(faces)(rois, roi_valid, head_logits, head_deltas, sizes)
  boxes = boxes / factor
  return {"boxes": jnp.where(valid[..., None], boxes, 0.0),
          "scores": jnp.where(valid, scores, 0.0), "valid": valid}


class AnchorEngine(Engine):
  """Engine of the rpn_frcnn family (see the module doc)."""

  has_landmarks = False
  landmark_scheme = None
  num_points = 0
  max_tiers = 1

  def __init__(self, model: rpn.RPNFastRCNN, params, config: AnchorConfig, name: str = "rpn",
               buckets=None):
    self.model, self.params, self.config, self.name = model, params, config, name
    self.bucket_for = plan_lib.bucket_policy(buckets)

  def bucket(self, height: int, width: int):
    h, w = self.bucket_for(height, width)
    s = self.model.config.stride  # the trunk's map must tile the bucket exactly
    return -(-h // s) * s, -(-w // s) * s

  def anchors(self, bucket) -> np.ndarray:
    """The anchor grid of the trunk's input: the bucket upscaled (scaled_shape)."""
    cfg, s = self.model.config, self.model.config.stride
    h, w = scaled_shape(bucket, self.config.upscale, s)
    return rpn.anchor_grid((h // s, w // s), s, cfg.anchor_sizes, cfg.anchor_ratios)

  def compile(self, bucket, batch: int, tier: int):
    del tier
    anchors = self.anchors(bucket)
    fn = jax.jit(lambda p, im, hw: run_anchor(self.model, self.config, anchors, p, im, hw))
    shapes = (jax.ShapeDtypeStruct((batch, *bucket, 3), np.uint8),
              jax.ShapeDtypeStruct((batch, 2), jnp.int32))
    return fn.lower(self.params, *shapes).compile()

  def executable_key(self, bucket, batch: int, tier: int) -> str | None:
    static = repr((self.model.config, self.config, tuple(bucket), int(batch), int(tier),
                   "anchor"))
    return executables.make_key(static, self.params)

  def inputs(self, arrays, bucket, batch: int) -> tuple:
    return padded_batch(arrays, bucket, batch, clear=True)  # the trunk sees the padding

  def outputs(self, host: Mapping[str, np.ndarray], count: int) -> list[tuple[Detections, bool]]:
    out = []
    for i in range(count):
      v = host["valid"][i]
      out.append((Detections(np.asarray(host["boxes"][i][v], np.float32),
                             np.asarray(host["scores"][i][v], np.float32), None,
                             landmark_scheme=None), False))
    return out


def config_from(settings: Mapping[str, Any]) -> AnchorConfig:
  known = {f.name for f in dataclasses.fields(AnchorConfig)}
  values = {k: settings[k] for k in known if k in settings and settings[k] is not None}
  values["thresholds"] = tuple(float(t) for t in settings["thresholds"])
  values["min_box"] = float(settings.get("min_face_size", AnchorConfig.min_box))
  return AnchorConfig(**values)


# merge_compile_s (`facecraft detect`'s bucket merging) is accepted and not used: the trunk sees
# a bucket's padding, so a photo run in a larger bucket could get (slightly) other faces, and the
# pyramid engine's rule is that merging never changes results. Each bucket compiles in seconds.
RUNTIME_OPTIONS = ("buckets", "merge_compile_s")
_KNOWN = {f.name for f in dataclasses.fields(AnchorConfig)} | set(RUNTIME_OPTIONS) | {
    "min_face_size", "box_convention"}


def rpn_frcnn_engine(bundle, settings: Mapping[str, Any]) -> AnchorEngine:
  """Family "rpn_frcnn": RPNFastRCNN params in bundle.trees["params"]."""
  unknown = sorted(set(settings) - _KNOWN)
  if unknown:
    raise ValueError(f"model {bundle.name!r}: unknown options {unknown}; known: {sorted(_KNOWN)}")
  model = rpn.RPNFastRCNN(rpn.RPNConfig.from_dict(bundle.model_config))
  params = jax.tree.map(jnp.asarray, bundle.trees["params"])
  return AnchorEngine(model, {"params": params}, config_from(settings), bundle.name,
                      settings.get("buckets"))
