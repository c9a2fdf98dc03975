"""FaceCraft's joint cascade (Qin et al. 2016, §4): x12 / x12-x24 / x12-x24-x48 branches in one net.

Training sees one 48x48 crop per sample; every branch looks at an average-pooled copy of it:

  crop48 ─pool2─► crop24 ─pool2─► crop12 ─► x12 trunk (fully conv) ─► f12 [16] ─► x12 heads
     │               └──────► x24 trunk ─► 24fc [128] ─┐
     │                            concat(f12, 24fc) = 12-24fc [144] ─► x24 heads
     └─► x48 trunk ─► 48fc [256] ─► concat(48fc, 12-24fc) = 12-24-48fc [400] ─► x48 heads

The paper calls the concatenation itself `12-24fc` (no extra layer); `CascadeConfig.fuse24/fuse48`
optionally add an fc + ReLU after each concatenation. ReLU everywhere; dropout right before the
heads (on a copy: the concatenations take the features before dropout). Heads: 2 logits (softmax
channel 1 = face) and 4 box offsets (R-CNN centre/log-size deltas in the normalised space of
`losses.RegressionStats`); x48 optionally 10 landmark values (x1, y1, x2, y2, ..., x5, y5) / 48,
the loader's "flat" layout.

Inference (the #4 engine, stride 2, windows 12 / 24 / 48), all via `model.apply(variables, x,
method=...)` or the plain functions of `stage_fns`:
  stage1(level)  [B, H, W, 3] pyramid level -> logits [B, H', W', 2], box [B, H', W', 4] with
                 H' = (H - 12) // 2 + 1; cell (i, j) scores the window (2j, 2i, 2j + 12, 2i + 12).
                 Max pooling rounds DOWN so every cell sees exactly its own 12x12 window.
  stage2(crops)  [N, 24, 24, 3] crops; recomputes f12 from their 2x2 average pool.
  stage3(crops)  [N, 48, 48, 3] crops; recomputes f12 and 24fc from their pools.
These equal the training forward's x12 / x24 / x48 outputs on the same (pooled) crops, because the
training forward pools 48 -> 24 -> 12 in the same two steps. Inputs use the loader's scaling
(x - 127.5) / 128. `engine_stages` wraps them in infer.cascade.CascadeSpec's signatures
(probabilities, corner offsets, de-normalised boxes).

The threshold-control layers that gate the later branches' losses during training, and their
temperature schedule, live with the losses (facecraft.losses).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from data_pipelines import geometry
from data_pipelines.loader import DEFAULT_NORMALIZE
from facecraft.models.layers import max_pool_ceil

# The training loader's input scaling, (x - 127.5) / 128: crop scoring and bundles use these.
INPUT_MEAN, INPUT_DIVISOR = DEFAULT_NORMALIZE


def normalize(x):
  """uint8/float RGB in [0, 255] -> the scale FaceCraft models are trained on, in float32."""
  return (x.astype(jnp.float32) - jnp.float32(INPUT_MEAN)) / jnp.float32(INPUT_DIVISOR)

WINDOWS = (12, 24, 48)  # Input size of each stage at inference.
STRIDE = 2  # Stage-1 score-map stride in pyramid-level pixels.


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """Channel counts of the three trunks (tests use tiny ones) and the dropout rate."""

  x12_channels: tuple[int, int, int] = (16, 32, 16)  # Last one is the paper's 1x16x1x1 layer.
  x24_channels: tuple[int, int, int] = (28, 48, 64)
  x24_fc: int = 128  # 24fc
  x48_channels: tuple[int, int, int, int] = (32, 64, 64, 128)
  x48_fc: int = 256  # 48fc
  fuse24: int | None = None  # fc width after concat(f12, 24fc); None = the paper (concat only).
  fuse48: int | None = None  # fc width after concat(48fc, 12-24fc).
  dropout: float = 0.25
  landmarks: bool = False  # x48 also predicts five landmarks (10 values).

  def __post_init__(self):
    if len(self.x12_channels) != 3 or len(self.x24_channels) != 3 or len(self.x48_channels) != 4:
      raise ValueError("x12_channels/x24_channels need 3 entries, x48_channels 4")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def avg_pool(x, factor: int):
  """Non-overlapping factor x factor average pool of [B, H, W, C] (H, W multiples of factor)."""
  b, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"avg_pool by {factor} needs H, W multiples of {factor}, got {(h, w)}")
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def _conv(features: int, kernel: int, name: str):
  return nn.Conv(features, (kernel, kernel), padding="VALID", name=name)


def _check_input(x, size: int | None, what: str):
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"{what} expects [B, H, W, 3] images, got shape {x.shape}")
  if size is None:
    if min(x.shape[1:3]) < WINDOWS[0]:
      raise ValueError(f"{what} needs H, W >= {WINDOWS[0]}, got {x.shape[1:3]}")
  elif x.shape[1:3] != (size, size):
    raise ValueError(f"{what} expects {size}x{size} crops, got {x.shape[1:3]}")


class X12Trunk(nn.Module):
  """conv3-ReLU-maxpool2-conv3-ReLU-conv3-ReLU: 12x12 -> 1x1xC; fully conv, stride 2, field 12."""

  channels: tuple[int, int, int]

  @nn.compact
  def __call__(self, x):
    c1, c2, c3 = self.channels
    x = nn.relu(_conv(c1, 3, "conv1")(x))
    # Floor rounding (VALID): an odd edge row is dropped instead of padded, so every output cell
    # sees exactly one full 12x12 window and the map is translation consistent.
    x = nn.max_pool(x, (2, 2), (2, 2), padding="VALID")
    x = nn.relu(_conv(c2, 3, "conv2")(x))
    return nn.relu(_conv(c3, 3, "conv3")(x))


class X24Trunk(nn.Module):
  """24x24 -> 24fc (R-Net-like: conv3-pool3/2-conv3-pool3/2-conv2-fc, ReLU)."""

  channels: tuple[int, int, int]
  fc: int

  @nn.compact
  def __call__(self, x):
    c1, c2, c3 = self.channels
    x = max_pool_ceil(nn.relu(_conv(c1, 3, "conv1")(x)), 3, 2)  # 22 -> 11
    x = nn.max_pool(nn.relu(_conv(c2, 3, "conv2")(x)), (3, 3), (2, 2))  # 9 -> 4
    x = nn.relu(_conv(c3, 2, "conv3")(x))  # 3x3
    return nn.relu(nn.Dense(self.fc, name="fc")(x.reshape(x.shape[0], -1)))


class X48Trunk(nn.Module):
  """48x48 -> 48fc (O-Net-like: four convs with pooling, then fc, ReLU)."""

  channels: tuple[int, int, int, int]
  fc: int

  @nn.compact
  def __call__(self, x):
    c1, c2, c3, c4 = self.channels
    x = max_pool_ceil(nn.relu(_conv(c1, 3, "conv1")(x)), 3, 2)  # 46 -> 23
    x = nn.max_pool(nn.relu(_conv(c2, 3, "conv2")(x)), (3, 3), (2, 2))  # 21 -> 10
    x = max_pool_ceil(nn.relu(_conv(c3, 3, "conv3")(x)), 2, 2)  # 8 -> 4
    x = nn.relu(_conv(c4, 2, "conv4")(x))  # 3x3
    return nn.relu(nn.Dense(self.fc, name="fc")(x.reshape(x.shape[0], -1)))


class Heads(nn.Module):
  """Sibling outputs on the last axis (a Dense on [B, H, W, C] is a 1x1 convolution)."""

  landmarks: bool = False

  @nn.compact
  def __call__(self, x):
    out = {"logits": nn.Dense(2, name="logits")(x), "box": nn.Dense(4, name="box")(x)}
    if self.landmarks:
      out["landmarks"] = nn.Dense(10, name="landmarks")(x)
    return out


class FaceCraft(nn.Module):
  """The joint cascade. Params: x12, x12_head, x24, [x24_fuse], x24_head, x48, [x48_fuse], x48_head."""

  config: CascadeConfig = CascadeConfig()

  def setup(self):
    cfg = self.config
    self.x12 = X12Trunk(cfg.x12_channels)
    self.x12_head = Heads()
    self.x24 = X24Trunk(cfg.x24_channels, cfg.x24_fc)
    self.x24_head = Heads()
    self.x48 = X48Trunk(cfg.x48_channels, cfg.x48_fc)
    self.x48_head = Heads(landmarks=cfg.landmarks)
    self.x24_fuse = nn.Dense(cfg.fuse24) if cfg.fuse24 else None
    self.x48_fuse = nn.Dense(cfg.fuse48) if cfg.fuse48 else None
    self.drop = nn.Dropout(cfg.dropout)

  # -- the three feature paths, shared by training and inference --------------------------------

  def _f12(self, crop12):
    return self.x12(crop12).reshape(crop12.shape[0], -1)  # [B, 1, 1, C] -> [B, C]

  def _f24(self, crop24, f12):
    f = jnp.concatenate([f12, self.x24(crop24)], axis=-1)
    return nn.relu(self.x24_fuse(f)) if self.x24_fuse is not None else f

  def _f48(self, crop48, f24):
    f = jnp.concatenate([self.x48(crop48), f24], axis=-1)
    return nn.relu(self.x48_fuse(f)) if self.x48_fuse is not None else f

  def _branch(self, head, feature, deterministic: bool):
    out = dict(head(self.drop(feature, deterministic=deterministic)))
    out["feature"] = feature
    return out

  # -- training ----------------------------------------------------------------------------------

  def __call__(self, x, deterministic: bool = True):
    """x: [B, 48, 48, 3] crops -> {"x12"|"x24"|"x48": {"logits" [B,2], "box" [B,4], "feature"}}.

    Dropout needs rngs={"dropout": key} when deterministic=False.
    """
    _check_input(x, WINDOWS[2], "FaceCraft")
    crop24 = avg_pool(x, 2)
    crop12 = avg_pool(crop24, 2)
    f12 = self._f12(crop12)
    f24 = self._f24(crop24, f12)
    f48 = self._f48(x, f24)
    return {"x12": self._branch(self.x12_head, f12, deterministic),
            "x24": self._branch(self.x24_head, f24, deterministic),
            "x48": self._branch(self.x48_head, f48, deterministic)}

  # -- inference ---------------------------------------------------------------------------------

  def stage1(self, level):
    """[B, H, W, 3] -> {"logits" [B, H', W', 2], "box" [B, H', W', 4]}, H' = (H - 12) // 2 + 1."""
    _check_input(level, None, "stage1")
    return dict(self.x12_head(self.x12(level)))

  def stage2(self, crops):
    """[N, 24, 24, 3] -> {"logits" [N, 2], "box" [N, 4]}."""
    _check_input(crops, WINDOWS[1], "stage2")
    return dict(self.x24_head(self._f24(crops, self._f12(avg_pool(crops, 2)))))

  def stage3(self, crops):
    """[N, 48, 48, 3] -> {"logits" [N, 2], "box" [N, 4][, "landmarks" [N, 10]]}."""
    _check_input(crops, WINDOWS[2], "stage3")
    crop24 = avg_pool(crops, 2)
    f24 = self._f24(crop24, self._f12(avg_pool(crop24, 2)))
    return dict(self.x48_head(self._f48(crops, f24)))


def init(model: FaceCraft, rng, batch_size: int = 1) -> dict[str, Any]:
  """Variables {"params": ...} of every branch (initialised through the training forward)."""
  return model.init(rng, jnp.zeros((batch_size, WINDOWS[2], WINDOWS[2], 3), jnp.float32))


def _mean_std(stats) -> tuple[Any, Any]:
  if isinstance(stats, Mapping):
    return jnp.asarray(stats["mean"]), jnp.asarray(stats["std"])
  return jnp.asarray(stats.mean), jnp.asarray(stats.std)


def stage_fns(model: FaceCraft, stats=None) -> dict[str, Callable[[Any, Any], dict]]:
  """Plain functions for the engine: {"stage1"|"stage2"|"stage3": fn(params, x) -> outputs}.

  `params` is the "params" tree (variables["params"]). With `stats` (losses.RegressionStats or a
  {"mean", "std"} dict) the box outputs are de-normalised to R-CNN deltas (geometry.decode_rcnn
  against the input window); without, they stay in the normalised training space.
  """
  def make(method):
    def fn(params, x):
      out = model.apply({"params": params}, x, method=method)
      if stats is not None:
        mean, std = _mean_std(stats)
        out["box"] = out["box"] * std + mean
      return out
    return fn
  return {"stage1": make(FaceCraft.stage1), "stage2": make(FaceCraft.stage2),
          "stage3": make(FaceCraft.stage3)}


def rcnn_to_corners(deltas):
  """R-CNN deltas against a window -> geometry.encode_corners offsets against the same window.

  Both are relative to the window's size, so the unit window converts them for every window.
  """
  unit = jnp.array([0.0, 0.0, 1.0, 1.0], jnp.float32)
  return geometry.decode_rcnn(unit, deltas) - unit


def engine_stages(model: FaceCraft, stats=None, box_coding: str = "rcnn") -> dict[str, Callable]:
  """stage1/2/3 in the signatures of infer.cascade.CascadeSpec (coding="corner").

    stage1(params, level [B, H, W, 3], level_hw [B, 2]) -> (prob [B, h, w], offsets [B, h, w, 4])
    stage2(params, crops [N, 24, 24, 3]) -> (prob [N], offsets [N, 4])
    stage3(params, crops [N, 48, 48, 3]) -> (prob [N], offsets [N, 4], landmarks [N, 5, 2] | None)
  Offsets are corner offsets (de-normalised with `stats`, converted from R-CNN deltas when the
  model was trained with box_coding="rcnn"; "corners" when trained on corner targets). level_hw
  is unused: with floor pooling a cell depends only on its own 12x12 window, so cells inside the
  valid size are exact (cell_overhang=0). Spec: cell=12, stride=2, crop_sizes=(24, 48), the same
  params tree for all three stages, normalize = the loader's (x - 127.5) / 128.
  """
  if box_coding not in ("rcnn", "corners"):
    raise ValueError(f"box_coding must be 'rcnn' or 'corners', got {box_coding!r}")
  fns = stage_fns(model, stats)
  convert = rcnn_to_corners if box_coding == "rcnn" else (lambda d: d)

  def stage1(params, level, level_hw=None):
    del level_hw
    out = fns["stage1"](params, level)
    return face_probability(out["logits"]), convert(out["box"])

  def stage2(params, crops):
    out = fns["stage2"](params, crops)
    return face_probability(out["logits"]), convert(out["box"])

  def stage3(params, crops):
    out = fns["stage3"](params, crops)
    points = out["landmarks"].reshape(-1, 5, 2) if "landmarks" in out else None
    return face_probability(out["logits"]), convert(out["box"]), points

  return {"stage1": stage1, "stage2": stage2, "stage3": stage3}


# ------------------------------------------------------------------------- scores


def face_probability(logits):
  """Softmax channel 1 of [..., 2] logits."""
  return jax.nn.softmax(logits, axis=-1)[..., 1]
