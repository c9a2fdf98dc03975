"""Public API: Detector.from_pretrained(name) -> detect(image) / detect_batch(images).

    det = facecraft.Detector.from_pretrained("mtcnn", min_face_size=20)
    dets = det.detect("photo.jpg")  # Detections(boxes [N, 4], scores [N], landmarks [N, 5, 2])
    many = det.detect_batch(paths, batch_size=8)

Boxes are xyxy float32 pixel corners; landmarks are (x, y) of the left eye, right eye, nose tip,
left and right mouth corner (image left/right). Images are paths, encoded bytes or arrays,
decoded by data_pipelines.images (gray, RGBA, 16-bit, EXIF orientation all handled).

Batching: images are grouped by bucket (plan.BucketLadder by default, or `buckets=[(H, W), ...]`),
placed in its top-left corner (the padding is never read) and run `batch_size` at a time (with
`mesh`, a 1-D jax.sharding.Mesh, the batch is split over its devices). One compiled function per
(bucket, batch size, capacity tier) is cached (the `max_compiled` most recent), and its compile
time kept in `compile_times`. An image's result does not depend on its batch companions, its
bucket or the batch size: detect_batch equals detect one by one (bit for bit, tested). An image
whose candidates overflow the stage capacities is re-run with 4x larger ones (up to `max_tiers`
tiers), so results equal the uncapped algorithm.

Size limits: a 10000 x 10000 picture works (CPU, 2 cores: ~18 s, ~10 GB of host memory at peak,
its own bucket compiled in ~10 s); above `max_image_pixels` (default 1e8) detect raises a
ValueError that says so. Pictures smaller than min_face_size have no pyramid level: no faces.

crop_mode: "pad" (default) follows the original MATLAB MTCNN, which zero-pads candidate windows
that leave the image, so a face at the border keeps its position and scale in the crop; "clip"
follows facenet-pytorch, which resizes only the part inside the image (use it for parity with
facenet-pytorch, as tests/test_mtcnn_parity.py does).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import images as images_lib
from facecraft.infer import ops
from facecraft.infer import plan as plan_lib
from facecraft.infer.cascade import CascadeConfig, CascadeSpec, jit_cascade, resolve_capacities
from facecraft.models import cascade as cascade_models
from facecraft.models import mtcnn as mtcnn_models
from facecraft.models import pretrained

log = logging.getLogger(__name__)

# 10000 x 10000 works (measured: ~10 GB of host memory at peak); beyond this a clear error asks
# for a downscale or a larger limit.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


@dataclasses.dataclass
class Detections:
  """Faces found in one image, best first. `error` is set (and the arrays empty) for an input that
  could not be read; `truncated` when even the largest capacities cut candidates off."""

  boxes: np.ndarray
  scores: np.ndarray
  landmarks: np.ndarray | None
  error: str | None = None
  truncated: bool = False

  def __len__(self) -> int:
    return len(self.scores)

  @classmethod
  def empty(cls, landmarks: bool = True, error: str | None = None) -> Detections:
    return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
               np.zeros((0, 5, 2), np.float32) if landmarks else None, error)


# ------------------------------------------------------------------------ MTCNN stage functions


def _prelu(x, p):
  return jnp.where(x >= 0, x, p["alpha"] * x)


def _whc(x):
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)  # Caffe's (W, H, C) flatten.


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


# The networks below compute what facecraft.models.mtcnn's modules compute (tested), with the
# layer implementations that XLA's CPU backend runs fastest (ops.conv2d / ops.max_pool).


def _face_prob(logits):
  """softmax(logits)[..., 1] for two classes, elementwise (the same operations as softmax)."""
  top = jnp.maximum(logits[..., 0], logits[..., 1])
  e0, e1 = jnp.exp(logits[..., 0] - top), jnp.exp(logits[..., 1] - top)
  return e1 / (e0 + e1)


def mtcnn_pnet(variables, x, level_hw, s2d: bool = False):
  """P-Net on a canvas where each image is valid only in its top-left level_hw.

  Pixels past that are masked out of the first (ceil-mode) pooling, so the last row/column of
  cells sees exactly what P-Net sees on the unpadded image. s2d: x comes in the 2x2
  space-to-depth layout of ops.pyramid_resize(s2d=True).
  """
  p = variables["params"]
  y = ops.conv3x3_prelu_pool2(x, p["conv1"], p["prelu1"]["alpha"], level_hw, s2d_input=s2d)
  y = _prelu(ops.conv2d(y, p["conv2"]), p["prelu2"])
  y = _prelu(ops.conv2d(y, p["conv3"]), p["prelu3"])
  return _face_prob(ops.conv2d(y, p["conv4_2"])), ops.conv2d(y, p["conv4_1"])


def mtcnn_rnet(variables, crops):
  p = variables["params"]
  x = ops.max_pool(_prelu(ops.conv2d(crops, p["conv1"], "auto"), p["prelu1"]), 3, 2)
  x = ops.max_pool(_prelu(ops.conv2d(x, p["conv2"]), p["prelu2"]), 3, 2, ceil=False)
  x = _prelu(ops.conv2d(x, p["conv3"]), p["prelu3"])
  x = _prelu(_dense(_whc(x), p["fc4"]), p["prelu4"])
  return _face_prob(_dense(x, p["fc5_2"])), _dense(x, p["fc5_1"])


def mtcnn_onet(variables, crops):
  p = variables["params"]
  x = ops.max_pool(_prelu(ops.conv2d(crops, p["conv1"], "auto"), p["prelu1"]), 3, 2)
  x = ops.max_pool(_prelu(ops.conv2d(x, p["conv2"]), p["prelu2"]), 3, 2, ceil=False)
  x = ops.max_pool(_prelu(ops.conv2d(x, p["conv3"]), p["prelu3"]), 2, 2)
  x = _prelu(ops.conv2d(x, p["conv4"]), p["prelu4"])
  x = _prelu(_dense(_whc(x), p["fc5"]), p["prelu5"])
  points = _dense(x, p["fc6_2"])
  points = jnp.stack([points[:, :5], points[:, 5:]], axis=-1)  # (x1..x5, y1..y5) -> [N, 5, 2]
  return _face_prob(_dense(x, p["fc6_3"])), _dense(x, p["fc6_1"]), points


def mtcnn_spec(weights: dict[str, Any] | None = None) -> CascadeSpec:
  """The original MTCNN (released weights) with the released code's box arithmetic."""
  w = weights or mtcnn_models.load_original_weights()
  return CascadeSpec(name="mtcnn", stage1=functools.partial(mtcnn_pnet, s2d=True),
                     stage2=mtcnn_rnet, stage3=mtcnn_onet, stage1_s2d=True,
                     params={"stage1": w["pnet"], "stage2": w["rnet"], "stage3": w["onet"]},
                     normalize=mtcnn_models.normalize, cell=12, stride=2, crop_sizes=(24, 48),
                     cell_overhang=1, coding="mtcnn")


def _facecraft_normalize(x):
  # The training loader's scaling, (x - 127.5) / 128, in float32.
  return (x.astype(jnp.float32) - jnp.float32(127.5)) / jnp.float32(128.0)


def facecraft_cascade_spec(model: cascade_models.FaceCraft, params, box_stats,
                           name: str = "facecraft") -> CascadeSpec:
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
      params={"stage1": tree, "stage2": tree, "stage3": tree}, normalize=_facecraft_normalize,
      cell=cascade_models.WINDOWS[0], stride=cascade_models.STRIDE,
      crop_sizes=cascade_models.WINDOWS[1:], cell_overhang=0, coding="corner",
      has_landmarks=bool(model.config.landmarks))


def bundled_spec(name: str) -> CascadeSpec:
  """The FaceCraft model bundled as facecraft/weights/<name>.npz."""
  b = pretrained.load(name)
  return facecraft_cascade_spec(b.model, b.params, b.box_stats, name)


# name -> factory of a CascadeSpec: the original MTCNN and every bundled FaceCraft model.
MODELS: dict[str, Callable[[], CascadeSpec]] = {"mtcnn": mtcnn_spec}
# name -> from_pretrained defaults recommended for that model (a bundle's meta["detector"]).
MODEL_DEFAULTS: dict[str, dict] = {"mtcnn": {"thresholds": (0.6, 0.7, 0.7)}}


def register_model(name: str, factory: Callable[[], CascadeSpec],
                   defaults: dict | None = None) -> None:
  MODELS[name] = factory
  MODEL_DEFAULTS[name] = dict(defaults or {})


def _register_bundled() -> None:
  # Runs at import: reads each bundle's meta only; the weights load in from_pretrained.
  for name in pretrained.available():
    try:
      meta = pretrained.read_meta(name)
    except (OSError, ValueError, KeyError) as e:  # A broken file must not break the package.
      log.warning("bundled model %s is unreadable: %s", name, e)
      continue
    register_model(name, functools.partial(bundled_spec, name), meta.get("detector", {}))


_register_bundled()


# ------------------------------------------------------------------------------------ Detector


def _batch_for(n: int, batch_size: int) -> int:
  """batch_size, or for fewer images the next power of two: few compiles, little padding."""
  if n >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(n - 1, 0).bit_length())


class Detector:
  """A cascade, its settings, and a cache of compiled functions per (bucket, batch, tier)."""

  def __init__(self, spec: CascadeSpec, config: CascadeConfig | None = None,
               min_face_size: float = 20.0, factor: float = 0.709, buckets=None,
               max_tiers: int = 3, mesh=None,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_compiled: int = 24):
    self.spec, self.config = spec, config or CascadeConfig()
    self.min_face_size, self.factor = float(min_face_size), float(factor)
    plan_lib.make_plan((1, 1), self.min_face_size, self.factor)  # Validates both.
    self.bucket_for = plan_lib.bucket_policy(buckets)
    self.max_tiers, self.mesh, self.max_image_pixels = int(max_tiers), mesh, int(max_image_pixels)
    self.compile_times: dict[tuple, float] = {}
    # LRU: every compiled function holds its machine code (about 1.5k memory maps on CPU; the
    # kernel allows 65k), so only the most recent `max_compiled` are kept.
    self._compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
    self.max_compiled = max(int(max_compiled), 1)
    self._plans: dict[tuple[int, int], plan_lib.PyramidPlan] = {}

  @classmethod
  def from_pretrained(cls, name: str = "mtcnn", min_face_size: float | None = None,
                      thresholds: Sequence[float] | None = None, factor: float = 0.709,
                      crop_mode: str = "pad", max_detections: int | None = None, buckets=None,
                      stage1_nms: str = "nms", maxpool_kernel: int = 3,
                      capacities: Sequence[int] | None = None, batch_invariant: bool | None = None,
                      precision: str | None = None, **kwargs) -> Detector:
    """A detector with bundled weights: name in `MODELS` ("mtcnn" = the original weights,
    "facecraft" = our jointly trained cascade, facecraft/weights/MODEL_CARD.md).

    thresholds / min_face_size default to the model's recommended ones (MODEL_DEFAULTS; MTCNN:
    (0.6, 0.7, 0.7) and 20 px).

    batch_invariant (default: True on CPU, False on accelerators): run the networks image by
    image so that results do not depend on batch size (see cascade._per_image). precision: for
    matmuls/convolutions, e.g. "highest" on GPUs for parity (JAX's default there is TF32).
    Other keyword arguments go to Detector (max_tiers, mesh, max_image_pixels, max_compiled).
    """
    if name not in MODELS:
      raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    defaults = MODEL_DEFAULTS.get(name, {})
    if thresholds is None:
      thresholds = tuple(defaults.get("thresholds", (0.6, 0.7, 0.7)))
    if min_face_size is None:
      min_face_size = float(defaults.get("min_face_size", 20.0))
    if len(thresholds) != 3:
      raise ValueError(f"thresholds must be three numbers, got {thresholds!r}")
    config = CascadeConfig(thresholds=tuple(float(t) for t in thresholds), stage1_nms=stage1_nms,
                           maxpool_kernel=int(maxpool_kernel), crop_mode=crop_mode,
                           capacities=None if capacities is None else tuple(map(int, capacities)),
                           max_detections=None if max_detections is None else int(max_detections),
                           batch_invariant=(jax.default_backend() == "cpu"
                                            if batch_invariant is None else bool(batch_invariant)),
                           precision=precision)
    return cls(MODELS[name](), config, min_face_size=min_face_size, factor=factor,
               buckets=buckets, **kwargs)

  # ----------------------------------------------------------------------------- internals

  def plan(self, bucket: tuple[int, int]) -> plan_lib.PyramidPlan:
    if bucket not in self._plans:
      self._plans[bucket] = plan_lib.make_plan(bucket, self.min_face_size, self.factor,
                                               self.spec.cell)
    return self._plans[bucket]

  def _tier_config(self, tier: int, bucket) -> CascadeConfig:
    if tier == 0:
      return self.config
    base = resolve_capacities(self.config, self.plan(bucket))
    return dataclasses.replace(self.config, capacities=tuple(c * 4 ** tier for c in base))

  def _function(self, bucket, batch: int, tier: int, dtype):
    key = (bucket, batch, tier, np.dtype(dtype).name)
    if key in self._compiled:
      self._compiled.move_to_end(key)
    else:
      while len(self._compiled) >= self.max_compiled:
        self._compiled.popitem(last=False)
      plan = self.plan(bucket)
      fn = jit_cascade(self.spec, self._tier_config(tier, bucket), plan, self.mesh)
      shapes = (jax.ShapeDtypeStruct((batch, *bucket, 3), dtype),
                jax.ShapeDtypeStruct((batch, 2), jnp.int32),
                jax.ShapeDtypeStruct((batch, plan.num_levels, 2), jnp.int32))
      start = time.perf_counter()
      self._compiled[key] = fn.lower(self.spec.params, *shapes).compile()
      self.compile_times[key] = time.perf_counter() - start
      log.info("compiled bucket %s batch %d tier %d in %.1f s", bucket, batch, tier,
               self.compile_times[key])
    return self._compiled[key]

  def _run(self, arrays: list[np.ndarray], bucket, batch: int, tier: int) -> list[dict]:
    """Runs images of one bucket, `batch` at a time (the last batch padded with empty images)."""
    plan = self.plan(bucket)
    if self.mesh is not None:
      batch = -(-batch // self.mesh.size) * self.mesh.size
    fn = self._function(bucket, batch, tier, np.uint8)
    pending, out = [], []
    for start in range(0, len(arrays), batch):
      chunk = arrays[start:start + batch]
      imgs = np.empty((batch, *bucket, 3), np.uint8)  # Padding is never read: no need to clear.
      sizes = np.zeros((batch, 2), np.int32)
      for i, a in enumerate(chunk):
        imgs[i, :a.shape[0], :a.shape[1]] = a
        sizes[i] = a.shape[:2]
      # Dispatch is asynchronous: the next batch is prepared while this one runs; results are
      # fetched one batch behind.
      pending.append((len(chunk), fn(self.spec.params, imgs, sizes, plan.level_sizes(sizes))))
      if len(pending) > 1:
        out += self._fetch(*pending.pop(0))
    for n, res in pending:
      out += self._fetch(n, res)
    return out

  @staticmethod
  def _fetch(n: int, res) -> list[dict]:
    res = jax.device_get(res)
    return [{k: v[i] for k, v in res.items()} for i in range(n)]

  def _to_detections(self, r: dict, truncated: bool) -> Detections:
    v = r["valid"]
    points = np.asarray(r["landmarks"][v], np.float32) if self.spec.has_landmarks else None
    return Detections(np.asarray(r["boxes"][v], np.float32), np.asarray(r["scores"][v], np.float32),
                      points, truncated=truncated)

  def _decode(self, image) -> np.ndarray:
    arr = images_lib.decode(image)
    if arr.shape[0] * arr.shape[1] > self.max_image_pixels:
      raise ValueError(f"image of {arr.shape[0]}x{arr.shape[1]} pixels exceeds max_image_pixels="
                       f"{self.max_image_pixels}; downscale it (and min_face_size with it) or "
                       "raise max_image_pixels")
    return arr

  # ------------------------------------------------------------------------------ public API

  def detect(self, image) -> Detections:
    """Faces in one image (path, bytes or array). Bad input raises ImageDecodeError/ValueError."""
    return self.detect_arrays([self._decode(image)], batch_size=1)[0]

  def detect_batch(self, images: Iterable, batch_size: int = 8,
                   progress: bool = False) -> list[Detections]:
    """Faces in many images of any sizes; a bad item gives Detections(error=...), the rest go on."""
    items = list(images)
    decoded: list[np.ndarray | None] = []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
      try:
        decoded.append(self._decode(item))
      except (images_lib.ImageDecodeError, ValueError) as e:
        errors[i] = str(e)
        decoded.append(None)
        log.warning("skipping item %d: %s", i, e)
    good = [i for i, a in enumerate(decoded) if a is not None]
    results = self.detect_arrays([decoded[i] for i in good], batch_size, progress)
    out = [Detections.empty(self.spec.has_landmarks, errors.get(i)) for i in range(len(items))]
    for i, r in zip(good, results):
      out[i] = r
    return out

  def detect_arrays(self, arrays: list[np.ndarray], batch_size: int = 8,
                    progress: bool = False) -> list[Detections]:
    """detect_batch on decoded uint8 RGB arrays."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arrays):
      groups.setdefault(self.bucket_for(*a.shape[:2]), []).append(i)
    results: list[Detections | None] = [None] * len(arrays)
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=len(arrays), unit="img")
    for bucket, idx in sorted(groups.items()):
      pending, tier = idx, 0
      while pending:
        raw = self._run([arrays[i] for i in pending], bucket, _batch_for(len(pending), batch_size),
                        tier)
        last = tier + 1 >= self.max_tiers
        retry = []
        for i, r in zip(pending, raw):
          if bool(r["overflow"]) and not last:
            retry.append(i)
            continue
          if bool(r["overflow"]):
            log.warning("image %d: candidates exceed the largest capacities %s; results are cut",
                        i, resolve_capacities(self._tier_config(tier, bucket), self.plan(bucket)))
          results[i] = self._to_detections(r, truncated=bool(r["overflow"]))
          if bar is not None:
            bar.update(1)
        pending, tier = retry, tier + 1
    if bar is not None:
      bar.close()
    return results
