"""The pyramid-cascade engine (MTCNN-style families) and the builders of its two families.

    engine = PyramidEngine(spec, CascadeConfig(...), min_face_size=20, factor=0.709)
    Detector(engine).detect(image)

An image runs in a bucket (plan.BucketLadder by default, or `buckets=[(H, W), ...]`), placed in
its top-left corner (the padding is never read); one static PyramidPlan per bucket. Capacity
tiers: an image whose candidates overflow the stage capacities is re-run with 4x larger ones (up
to `max_tiers` tiers), so results equal the uncapped algorithm. With `mesh` (a 1-D
jax.sharding.Mesh) the batch is split over its devices.

Families (facecraft.infer.registry.FAMILIES): "mtcnn" (the released weights, the released code's
box arithmetic) and "facecraft_cascade" (our jointly trained x12/x24/x48 cascade). Each builder
takes a Bundle and its inference settings (thresholds, min face, pyramid factor, input
normalisation, crop mode, ...): the engine reads them from there and nowhere else.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from facecraft.infer import executables
from facecraft.infer import plan as plan_lib
from facecraft.infer.cascade import CascadeConfig, CascadeSpec, jit_cascade, resolve_capacities
from facecraft.infer.detections import Detections
from facecraft.infer.engine import Engine, padded_batch
from facecraft.models import cascade as cascade_models
from facecraft.models import mtcnn as mtcnn_models


# With merge_compile_s > 0 (`facecraft detect` by default: MERGE_COMPILE_S), a run's rare
# bucket is padded into a larger one when that costs less than compiling it. Measured on one CPU
# core (issue #13, MTCNN, batch 8): a compile takes 10-30 s, a picture about 0.5 us per padded
# pixel. Off in the engine and the Python API, and `--no-merge-buckets` turns it off in the CLI:
# a canvas of another size can change a coordinate in its last bit (XLA's
# CPU kernels round by shape: CMU+MIT's sarah4 gives x2 242.343475 in the (384, 384), (512, 512)
# and (512, 768) buckets, 242.343521 in (640, 640)). On all 130 CMU+MIT pictures the merged run
# (3 compiles) wrote the unmerged run's JSON (15 compiles; boxes to 0.001 px, scores exact).
MERGE_COMPILE_S, PIXEL_S = 10.0, 0.5e-6


class PyramidEngine(Engine):
  """A CascadeSpec run as one jitted image pyramid per (bucket, batch, capacity tier)."""

  landmark_scheme = "five"
  num_points = 5

  def __init__(self, spec: CascadeSpec, config: CascadeConfig | None = None,
               min_face_size: float = 20.0, factor: float = 0.709, buckets=None,
               max_tiers: int = 3, mesh=None, merge_compile_s: float = 0.0):
    self.spec, self.config = spec, config or CascadeConfig()
    self.name, self.has_landmarks = spec.name, spec.has_landmarks
    self.min_face_size, self.factor = float(min_face_size), float(factor)
    plan_lib.make_plan((1, 1), self.min_face_size, self.factor)  # Validates both.
    self.bucket_for = plan_lib.bucket_policy(buckets)
    self.max_tiers, self.mesh = int(max_tiers), mesh
    self.merge_compile_s = float(merge_compile_s)
    self._plans: dict[tuple[int, int], plan_lib.PyramidPlan] = {}

  @property
  def params(self):
    return self.spec.params

  @params.setter
  def params(self, value):
    self.spec = dataclasses.replace(self.spec, params=value)

  def plan(self, bucket: tuple[int, int]) -> plan_lib.PyramidPlan:
    if bucket not in self._plans:
      self._plans[bucket] = plan_lib.make_plan(bucket, self.min_face_size, self.factor,
                                               self.spec.cell)
    return self._plans[bucket]

  def bucket(self, height: int, width: int) -> tuple[int, int]:
    return self.bucket_for(height, width)

  def batch_size(self, batch: int) -> int:
    return batch if self.mesh is None else -(-batch // self.mesh.size) * self.mesh.size

  def merge_buckets(self, counts):
    """Largest first: a bucket runs in the smallest kept bucket that holds it when its images'
    padding there costs less than merge_compile_s, else it is kept (results never change)."""
    kept, out = [], {}
    for b in sorted(counts, key=lambda b: (-b[0] * b[1], b)):
      holders = [k for k in kept if k[0] >= b[0] and k[1] >= b[1]]
      best = min(holders, key=lambda k: (k[0] * k[1], k)) if holders else None
      if best is not None and (counts[b] * (best[0] * best[1] - b[0] * b[1]) * PIXEL_S
                               < self.merge_compile_s):
        out[b] = best
      else:
        kept.append(b)
        out[b] = b
    return out

  def tier_config(self, tier: int, bucket) -> CascadeConfig:
    if tier == 0:
      return self.config
    base = resolve_capacities(self.config, self.plan(bucket))
    return dataclasses.replace(self.config, capacities=tuple(c * 4 ** tier for c in base))

  def compile(self, bucket, batch: int, tier: int):
    plan = self.plan(bucket)
    fn = jit_cascade(self.spec, self.tier_config(tier, bucket), plan, self.mesh)
    shapes = (jax.ShapeDtypeStruct((batch, *bucket, 3), np.uint8),
              jax.ShapeDtypeStruct((batch, 2), jnp.int32),
              jax.ShapeDtypeStruct((batch, plan.num_levels, 2), jnp.int32))
    return fn.lower(self.spec.params, *shapes).compile()

  def executable_key(self, bucket, batch: int, tier: int) -> str | None:
    if self.mesh is not None or not self.spec.static_key:
      return None  # Sharded functions and specs of unknown callables are compiled every run.
    s = self.spec
    static = repr((s.static_key, s.name, s.cell, s.stride, s.crop_sizes, s.cell_overhang,
                   s.coding, s.stage1_s2d, s.has_landmarks, self.tier_config(tier, bucket),
                   self.plan(bucket), tuple(bucket), int(batch), "pyramid"))
    return executables.make_key(static, self.params)

  def inputs(self, arrays, bucket, batch: int) -> tuple:
    imgs, sizes = padded_batch(arrays, bucket, batch)  # Padding is never read: not cleared.
    return imgs, sizes, self.plan(bucket).level_sizes(sizes)

  def outputs(self, host: Mapping[str, np.ndarray], count: int) -> list[tuple[Detections, bool]]:
    out = []
    for i in range(count):
      v, overflow = host["valid"][i], bool(host["overflow"][i])
      points = (np.asarray(host["landmarks"][i][v], np.float32) if self.has_landmarks else None)
      out.append((Detections(np.asarray(host["boxes"][i][v], np.float32),
                             np.asarray(host["scores"][i][v], np.float32), points,
                             truncated=overflow,
                             landmark_scheme="five" if self.has_landmarks else None), overflow))
    return out

  def overflow_message(self, bucket, tier: int) -> str:
    caps = resolve_capacities(self.tier_config(tier, bucket), self.plan(bucket))
    return f"candidates exceed the largest capacities {caps}; results are cut"


# ------------------------------------------------------------------------------ families


def normalizer(mean: float, scale: float):
  """uint8/float RGB in [0, 255] -> (x - mean) * scale in float32 (a bundle's input scaling)."""
  def normalize(x):
    return (x.astype(jnp.float32) - jnp.float32(mean)) * jnp.float32(scale)
  return normalize


def _pnet_stage(variables, x, level_hw):
  out = mtcnn_models.pnet(variables["params"], x, level_hw, s2d=True)
  return mtcnn_models.face_probability(out["logits"]), out["box"]


def _rnet_stage(variables, crops):
  out = mtcnn_models.rnet(variables["params"], crops)
  return mtcnn_models.face_probability(out["logits"]), out["box"]


def _onet_stage(variables, crops):
  out = mtcnn_models.onet(variables["params"], crops)
  points = out["landmarks"]
  points = jnp.stack([points[:, :5], points[:, 5:]], axis=-1)  # (x1..x5, y1..y5) -> [N, 5, 2]
  return mtcnn_models.face_probability(out["logits"]), out["box"], points


def mtcnn_spec(weights: dict[str, Any] | None = None, mean: float = mtcnn_models.INPUT_MEAN,
               scale: float = mtcnn_models.INPUT_SCALE) -> CascadeSpec:
  """The original MTCNN (released weights) with the released code's box arithmetic."""
  w = weights or mtcnn_models.load_original_weights()
  return CascadeSpec(name="mtcnn", stage1=_pnet_stage, stage2=_rnet_stage, stage3=_onet_stage,
                     stage1_s2d=True,
                     params={"stage1": w["pnet"], "stage2": w["rnet"], "stage3": w["onet"]},
                     normalize=normalizer(mean, scale), cell=12, stride=2, crop_sizes=(24, 48),
                     cell_overhang=1, coding="mtcnn",
                     static_key=f"mtcnn_models original mean={mean!r} scale={scale!r}")


def facecraft_cascade_spec(model: cascade_models.FaceCraft, params, box_stats,
                           name: str = "facecraft", mean: float = cascade_models.INPUT_MEAN,
                           scale: float = 1 / cascade_models.INPUT_DIVISOR) -> CascadeSpec:
  """A CascadeSpec of a FaceCraft model whose params are {"params", "box_stats"}: both are
  arguments of the compiled cascade, so new weights (a training run's evals) need no recompile."""
  def stages(p):
    return cascade_models.engine_stages(model, p["box_stats"], box_coding="rcnn")

  tree = {"params": params, "box_stats": {k: jnp.asarray(v) for k, v in box_stats.items()}}
  return CascadeSpec(
      name=name,
      stage1=lambda p, level, hw: stages(p)["stage1"](p["params"], level, hw),
      stage2=lambda p, crops: stages(p)["stage2"](p["params"], crops),
      stage3=lambda p, crops: stages(p)["stage3"](p["params"], crops),
      params={"stage1": tree, "stage2": tree, "stage3": tree}, normalize=normalizer(mean, scale),
      cell=cascade_models.WINDOWS[0], stride=cascade_models.STRIDE,
      crop_sizes=cascade_models.WINDOWS[1:], cell_overhang=0, coding="corner",
      has_landmarks=bool(model.config.landmarks),
      static_key=f"facecraft {model.config!r} rcnn mean={mean!r} scale={scale!r}")


# Options a user may set on a pyramid engine beside the bundle's inference settings.
RUNTIME_OPTIONS = ("buckets", "max_tiers", "mesh", "capacities", "max_detections",
                   "batch_invariant", "precision", "maxpool_kernel", "merge_compile_s")


def cascade_config(settings: Mapping[str, Any]) -> CascadeConfig:
  thresholds = tuple(float(t) for t in settings["thresholds"])
  if len(thresholds) != 3:
    raise ValueError(f"thresholds must be three numbers, got {settings['thresholds']!r}")
  caps, most = settings.get("capacities"), settings.get("max_detections")
  invariant = settings.get("batch_invariant")
  return CascadeConfig(
      thresholds=thresholds, stage1_nms=settings.get("stage1_nms", "nms"),
      maxpool_kernel=int(settings.get("maxpool_kernel", 3)),
      crop_mode=settings.get("crop_mode", "pad"),
      capacities=None if caps is None else tuple(int(c) for c in caps),
      max_detections=None if most is None else int(most),
      batch_invariant=(jax.default_backend() == "cpu" if invariant is None else bool(invariant)),
      precision=settings.get("precision"))


# Inference settings a pyramid bundle must carry beside pretrained.INFERENCE_KEYS.
PYRAMID_KEYS = ("factor", "crop_mode", "stage1_nms")
_KNOWN = set(PYRAMID_KEYS) | set(RUNTIME_OPTIONS) | {
    "thresholds", "min_face_size", "box_convention", "input_mean", "input_scale"}


def _engine(spec: CascadeSpec, settings: Mapping[str, Any]) -> PyramidEngine:
  missing = [k for k in PYRAMID_KEYS if k not in settings]
  if missing:
    raise ValueError(f"model {spec.name!r}: a pyramid bundle's inference settings lack {missing}")
  unknown = sorted(set(settings) - _KNOWN)
  if unknown:
    raise ValueError(f"model {spec.name!r}: unknown options {unknown}; known: {sorted(_KNOWN)}")
  return PyramidEngine(spec, cascade_config(settings), min_face_size=settings["min_face_size"],
                       factor=settings["factor"], buckets=settings.get("buckets"),
                       max_tiers=int(settings.get("max_tiers", 3)), mesh=settings.get("mesh"),
                       merge_compile_s=float(settings.get("merge_compile_s") or 0.0))


def mtcnn_engine(bundle, settings: Mapping[str, Any]) -> PyramidEngine:
  """Family "mtcnn": P/R/O-Net weights in bundle.trees["pnet" | "rnet" | "onet"]."""
  weights = {net: bundle.trees[net] for net in ("pnet", "rnet", "onet")}
  return _engine(mtcnn_spec(weights, settings["input_mean"], settings["input_scale"]), settings)


def facecraft_engine(bundle, settings: Mapping[str, Any]) -> PyramidEngine:
  """Family "facecraft_cascade": FaceCraft x12/x24/x48 params + their box-target statistics."""
  model = cascade_models.FaceCraft(cascade_models.CascadeConfig(**bundle.model_config))
  spec = facecraft_cascade_spec(model, bundle.trees["params"], bundle.trees["box_stats"],
                                bundle.name, settings["input_mean"], settings["input_scale"])
  return _engine(spec, settings)


