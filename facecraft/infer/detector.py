"""Public API: Detector.from_pretrained(name) -> detect(image) / detect_batch(images).

    det = facecraft.Detector.from_pretrained("mtcnn", min_face_size=20)
    dets = det.detect("photo.jpg")  # Detections(boxes [N, 4], scores [N], landmarks [N, 5, 2])
    many = det.detect_batch(paths, batch_size=8)
    det = Detector.from_pretrained("facecraft", align="mtcnn-onet")  # + five points per face

Boxes are xyxy float32 pixel corners; landmarks are (x, y) of the left eye, right eye, nose tip,
left and right mouth corner (image left/right). Images are paths, encoded bytes or arrays,
decoded by data_pipelines.images (gray, RGBA, 16-bit, EXIF orientation all handled).

A Detector runs any engine (facecraft.infer.engine: the pyramid cascade today) and optionally an
aligner (facecraft.infer.aligners). from_pretrained reads the model's family and every inference
setting from its bundle (facecraft.models.pretrained); keyword arguments override them.

Batching: images are grouped by the engine's bucket and run `batch_size` at a time. One compiled
function per (bucket, batch size, capacity tier) is cached (the `max_compiled` most recent), and
its compile time kept in `compile_times`. An image's result does not depend on its batch
companions, its bucket or the batch size (pyramid engine on CPU: bit for bit, tested). An image
whose candidates overflow the engine's capacities is re-run at the next tier (up to the engine's
max_tiers), so results equal the uncapped algorithm.

Size limits: a 10000 x 10000 picture works (CPU, 2 cores: ~18 s, ~10 GB of host memory at peak,
its own bucket compiled in ~10 s); above `max_image_pixels` (default 1e8) detect raises a
ValueError that says so. Pictures smaller than min_face_size have no pyramid level: no faces.

crop_mode (pyramid engine): "pad" (default) follows the original MATLAB MTCNN, which zero-pads
candidate windows that leave the image; "clip" follows facenet-pytorch, which resizes only the
part inside the image (use it for parity with facenet-pytorch, as tests/test_mtcnn_parity.py does).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Iterable

import jax
import numpy as np

from data_pipelines import images as images_lib
from facecraft.infer import registry
from facecraft.infer.aligners import Aligner
from facecraft.infer.detections import Detections
from facecraft.infer.engine import Engine
from facecraft.infer import executables as executables_lib
from facecraft.infer.executables import ExecutableStore

log = logging.getLogger(__name__)

# 10000 x 10000 works (measured: ~10 GB of host memory at peak); beyond this a clear error asks
# for a downscale or a larger limit.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


def _batch_for(n: int, batch_size: int) -> int:
  """batch_size, or for fewer images the next power of two: few compiles, little padding."""
  if n >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(n - 1, 0).bit_length())


class Detector:
  """An engine (+ optional aligner) and a cache of compiled functions per (bucket, batch, tier)."""

  def __init__(self, engine: Engine, aligner: Aligner | None = None,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_compiled: int = 24,
               executables: ExecutableStore | None = None):
    self.engine, self.aligner = engine, aligner
    # Compiled functions kept on disk between runs (None: compile, or let JAX's cache answer).
    self.executables = executables
    self.max_image_pixels = int(max_image_pixels)
    self.compile_times: dict[tuple, float] = {}
    # Every compile, evictions' recompiles included (what a run reports at its end).
    self.compile_count, self.compile_seconds = 0, 0.0
    # LRU: every compiled function holds its machine code (about 1.5k memory maps on CPU; the
    # kernel allows 65k), so only the most recent `max_compiled` are kept.
    self._compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
    self.max_compiled = max(int(max_compiled), 1)

  @classmethod
  def from_pretrained(cls, name: str = "mtcnn", align: str | Aligner | None = None,
                      max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_compiled: int = 24,
                      executables: ExecutableStore | None = None, **options) -> Detector:
    """A detector of a bundled or registered model ("mtcnn" = the original weights, "facecraft"
    = our jointly trained cascade, see facecraft/weights/MODEL_CARD.md) or of a bundle path.

    options override the bundle's inference settings (thresholds, min_face_size, factor,
    crop_mode, stage1_nms, ...) or set the engine's runtime options (pyramid engine: buckets,
    max_tiers, mesh, capacities, max_detections, batch_invariant, precision, maxpool_kernel,
    merge_compile_s: > 0 pads a run's rare bucket into a larger one when cheaper than a compile);
    None keeps the bundle's value. batch_invariant defaults to True on CPU (results independent
    of the batch size); precision: e.g. "highest" on GPUs for parity (JAX's default is TF32).
    align: an aligner name (registry.ALIGNERS, e.g. "mtcnn-onet") or an Aligner; None: the
    bundle's own (inference.aligner, if it names one); "none": no aligner.
    executables: an ExecutableStore: compiled functions are loaded from it (no tracing, no
    compile) and saved to it (`facecraft detect` keeps one beside the compilation cache).
    """
    bundle = registry.load_bundle(name)
    settings = {**bundle.inference, **{k: v for k, v in options.items() if v is not None}}
    default_aligner = settings.pop("aligner", None)  # a bundle may name its landmark aligner
    engine = registry.FAMILIES.get(bundle.family)(bundle, settings)
    if align is None:
      align = default_aligner
    if align == "none":
      align = None
    if isinstance(align, str):
      align = registry.ALIGNERS.get(align)(box_convention=settings["box_convention"])
    return cls(engine, align, max_image_pixels=max_image_pixels, max_compiled=max_compiled,
               executables=executables)

  # ----------------------------------------------------------------------------- internals

  def _function(self, bucket, batch: int, tier: int):
    key = (bucket, batch, tier)
    if key in self._compiled:
      self._compiled.move_to_end(key)
    else:
      while len(self._compiled) >= self.max_compiled:
        self._compiled.popitem(last=False)
      start = time.perf_counter()
      stored = self.executables and self.engine.executable_key(bucket, batch, tier)
      fn = self.executables.load(stored) if stored else None
      loaded = fn is not None
      if not loaded and stored:  # compiled here, not taken from JAX's cache: see executables
        fn = executables_lib.compile_uncached(lambda: self.engine.compile(bucket, batch, tier))
        self.executables.save(stored, fn)
      elif not loaded:
        fn = self.engine.compile(bucket, batch, tier)
      self._compiled[key] = fn
      self.compile_times[key] = time.perf_counter() - start
      self.compile_count += 1
      self.compile_seconds += self.compile_times[key]
      log.info("%s bucket %s batch %d tier %d in %.1f s",
               "loaded" if loaded else "compiled",
               bucket, batch, tier, self.compile_times[key])
    return self._compiled[key]

  def bucket(self, height: int, width: int):
    """The engine's bucket for an image of this size (callers group a run's images by it)."""
    return self.engine.bucket(int(height), int(width))

  def merge_buckets(self, counts: dict) -> dict:
    """{bucket: bucket to run it in} for a run's bucket counts (the engine's choice)."""
    return self.engine.merge_buckets(dict(counts))

  def warmup(self, bucket, batch: int) -> float:
    """Compiles the first-tier function of (bucket, batch) ahead of a run; its seconds."""
    before = self.compile_seconds
    self._function(bucket, self.engine.batch_size(batch), 0)
    return self.compile_seconds - before

  def _run(self, arrays: list[np.ndarray], bucket, batch: int,
           tier: int) -> list[tuple[Detections, bool]]:
    """Runs images of one bucket, `batch` at a time (the last batch padded)."""
    batch = self.engine.batch_size(batch)
    fn = self._function(bucket, batch, tier)
    pending, out = [], []
    for start in range(0, len(arrays), batch):
      chunk = arrays[start:start + batch]
      inputs = self.engine.inputs(chunk, bucket, batch)
      # Dispatch is asynchronous: the next batch is prepared while this one runs; results are
      # fetched one batch behind.
      pending.append((len(chunk), fn(self.engine.params, *inputs)))
      if len(pending) > 1:
        n, res = pending.pop(0)
        out += self.engine.outputs(jax.device_get(res), n)
    for n, res in pending:
      out += self.engine.outputs(jax.device_get(res), n)
    return out

  def decode(self, image) -> np.ndarray:
    """uint8 RGB of a path, bytes or array; ImageDecodeError / ValueError (too large) if not."""
    return self._decode(image)

  def _decode(self, image) -> np.ndarray:
    arr = images_lib.decode(image)
    if arr.shape[0] * arr.shape[1] > self.max_image_pixels:
      raise ValueError(f"image of {arr.shape[0]}x{arr.shape[1]} pixels exceeds max_image_pixels="
                       f"{self.max_image_pixels}; downscale it (and min_face_size with it) or "
                       "raise max_image_pixels")
    return arr

  def _aligned(self, array: np.ndarray, found: Detections) -> Detections:
    if self.aligner is None:
      return found
    found.landmarks = self.aligner.align(array, found.boxes)
    found.landmark_scheme = self.aligner.scheme
    return found

  @property
  def has_landmarks(self) -> bool:
    return self.aligner is not None or self.engine.has_landmarks

  def empty(self, error: str | None = None) -> Detections:
    if self.aligner is not None:
      return Detections.empty(True, error, self.aligner.num_points, self.aligner.scheme)
    return self.engine.empty(error)

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
    out = [self.empty(errors.get(i)) for i in range(len(items))]
    for i, r in zip(good, results):
      out[i] = r
    return out

  def detect_arrays(self, arrays: list[np.ndarray], batch_size: int = 8,
                    progress: bool = False, pad_batch: bool = False,
                    merged: dict | None = None) -> list[Detections]:
    """detect_batch on decoded uint8 RGB arrays.

    pad_batch: run fewer images than batch_size at batch_size (padded) rather than at a smaller
    power of two, so that a caller feeding one bucket in chunks compiles it once.
    merged: {bucket: bucket it runs in} (merge_buckets of a whole run); an image whose bucket
    is not in it runs in its own.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
      own = self.engine.bucket(*a.shape[:2])
      groups.setdefault((merged or {}).get(own, own), []).append(i)
    results: list[Detections | None] = [None] * len(arrays)
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=len(arrays), unit="img", desc="detect")
    for bucket, idx in sorted(groups.items()):
      if bar is not None:  # Shows what runs (and compiles) before any image of it is done.
        bar.set_postfix_str(f"bucket {bucket}, {len(idx)} images", refresh=True)
      pending, tier = idx, 0
      while pending:
        batch = batch_size if pad_batch and tier == 0 else _batch_for(len(pending), batch_size)
        raw = self._run([arrays[i] for i in pending], bucket, batch, tier)
        last = tier + 1 >= self.engine.max_tiers
        retry = []
        for i, (found, overflow) in zip(pending, raw):
          if overflow and not last:
            retry.append(i)
            continue
          if overflow:
            log.warning("image %d: %s", i, self.engine.overflow_message(bucket, tier))
          results[i] = self._aligned(arrays[i], found)
          if bar is not None:
            bar.update(1)
        pending, tier = retry, tier + 1
    if bar is not None:
      bar.close()
    return results
