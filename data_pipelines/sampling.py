"""Training crops for the cascades: the MTCNN rule and negatives from face-free scenes, with the
crop cutting and bookkeeping every sampler shares (data_pipelines.sliding holds the FaceCraft
sliding-window rule and hard-negative mining through any scorer, on the same helpers).

Geometry. A window is an xyxy box in source-image pixels (origin at the top-left pixel corner). Its
crop of side S maps a source point p to (p - window[:2]) * S / (window[2:] - window[:2]); the
matched face box and five landmarks are stored in crop pixels through that map (records.CropSet),
so the regression target is encoded later against the crop box (0, 0, S, S).

Pixels. `crop_resize` resamples with PIL bilinear on a float box, which follows the same corner
convention and low-pass filters when shrinking (no aliasing from big faces squeezed to 12 px); an
integer S x S window is an exact copy. Where a window leaves the image the outside reads as zeros,
as MTCNN's inference pads boxes that cross the border. The sliding rule crops S x S windows from
pyramid levels made by the same antialiased resize, so its crops are exact slices of a level.

Unlabelled faces. Some sets label only some faces (Caltech WebFaces: frontal, not-too-small
faces only), so a "negative" cut from their images can show an unlabelled face and teach the
detector to reject faces. `negatives_from_face_images` (a fraction in [0, 1]; True = 1, False = 0)
sets how many negatives may come from images that hold faces; with 0 take them from face-free
scenes (`sample_negatives_from_scenes`, or face-free records passed alongside).

Every function takes an np.random.Generator; each image draws from its own child stream, so the
same seed gives the same crops. Undecodable images are logged with their id, skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from data_pipelines import records as records_lib
from data_pipelines import geometry
from data_pipelines import images as images_lib

log = logging.getLogger(__name__)

POSITIVE, NEGATIVE, PART, LANDMARK = (records_lib.POSITIVE, records_lib.NEGATIVE, records_lib.PART,
                                      records_lib.LANDMARK)
LABEL_NAMES = {POSITIVE: "positive", NEGATIVE: "negative", PART: "part", LANDMARK: "landmark"}
Scorer = Callable[[np.ndarray], Any]  # uint8 [B, S, S, 3] -> face scores [B]


@dataclasses.dataclass
class SampleResult:
  """Crops plus where they came from: windows float64 [M, 4] in source pixels, per-label stats,
  ids of images that could not be decoded, and (mining only) the scorer's scores [M]."""

  crops: records_lib.CropSet
  windows: np.ndarray
  stats: dict[str, int]
  skipped: list[str]
  scores: np.ndarray | None = None


@dataclasses.dataclass
class MtcnnConfig:
  """MTCNN's sampling (Zhang et al. 2016, §III-A; counts from its released gen_*_data scripts).

  Negatives: max IoU over ALL faces (ignored ones too) < neg_iou. Part: part_iou <= IoU <=
  pos_iou; positive: IoU > pos_iou (IoU with the best non-ignored face, which is the stored box).
  Windows with IoU in [neg_iou, part_iou) are dropped. Landmark faces: jittered crops with IoU >
  landmark_iou to a face with landmarks whose annotated points all fall inside the crop.
  """

  negatives_per_image: int = 50  # random squares anywhere, side in [S, min(h, w) / 2]
  negatives_near_face: int = 5  # per face, overlapping it partially; kept only if IoU < neg_iou
  face_tries: int = 20  # jittered windows per face, labelled positive / part / dropped
  landmark_tries: int = 10  # jittered windows per face with landmarks
  pos_iou: float = 0.65
  part_iou: float = 0.4
  neg_iou: float = 0.3
  landmark_iou: float = 0.65
  min_face_size: float = 20.0  # faces with a shorter side give no positives (MTCNN skips them)
  shift: float = 0.2  # centre jitter, fraction of the face width / height
  side_range: tuple[float, float] = (0.8, 1.25)  # side in [0.8 min(w, h), 1.25 max(w, h)]
  ignore_overlap: float = 0.05  # a negative may cover at most this of an ignore region (or v.v.)
  negatives_from_face_images: float = 1.0
  oversample: int = 4  # random negative candidates drawn per negative wanted


# ------------------------------------------------------------------------------- helpers


def crop_resize(image: np.ndarray, windows: np.ndarray, size: int,
                resample=Image.BILINEAR) -> np.ndarray:
  """Crops windows [M, 4] (source pixels, any real values) of an [H, W, 3] uint8 image and
  resizes each to size x size with PIL's `resample` filter: uint8 [M, size, size, 3]; zeros
  outside the image."""
  windows = np.asarray(windows, np.float64).reshape(-1, 4)
  out = np.zeros((len(windows), size, size, 3), np.uint8)
  h, w = image.shape[:2]
  for i, win in enumerate(windows):
    # A margin of image pixels lets the shrinking filter see past the window's edge (PIL clamps
    # at the patch border); beyond the image only the window itself is zero-filled.
    margin = int(np.ceil((win[2:] - win[:2]).max() / size)) + 1
    lo, hi = np.floor(win[:2]).astype(int), np.ceil(win[2:]).astype(int)
    lo = np.minimum(lo, np.maximum(lo - margin, 0))
    hi = np.maximum(hi, np.minimum(hi + margin, [w, h]))
    patch = np.zeros((hi[1] - lo[1], hi[0] - lo[0], 3), np.uint8)
    a, b = np.maximum(lo, 0), np.minimum(hi, [w, h])
    if (b > a).all():
      patch[a[1] - lo[1]:b[1] - lo[1], a[0] - lo[0]:b[0] - lo[0]] = image[a[1]:b[1], a[0]:b[0]]
    x, y = win[:2] - lo
    if win[2] - win[0] == size == win[3] - win[1] and x == int(x) and y == int(y):  # exact copy
      out[i] = patch[int(y):int(y) + size, int(x):int(x) + size]
    else:
      box = (float(x), float(y), float(x + win[2] - win[0]), float(y + win[3] - win[1]))
      out[i] = np.asarray(Image.fromarray(patch).resize((size, size), resample, box=box))
  return out


def to_crop_coordinates(points: np.ndarray, windows: np.ndarray, size: int) -> np.ndarray:
  """Maps points [M, K, 2] of source pixels into the size x size crops of windows [M, 4]."""
  windows = np.asarray(windows, np.float64).reshape(-1, 4)
  scale = size / (windows[:, 2:] - windows[:, :2])
  moved = (np.asarray(points, np.float64) - windows[:, None, :2]) * scale[:, None]
  return moved.astype(np.float32)


def _five(record: records_lib.FaceRecord) -> tuple[np.ndarray, np.ndarray]:
  n = record.num_faces
  if record.landmarks is None:
    return np.zeros((n, 5, 2), np.float32), np.zeros((n, 5), bool)
  return geometry.to_five(record.landmarks, record.landmark_scheme, record.landmark_mask)


def _ignore_regions(record: records_lib.FaceRecord) -> np.ndarray:
  extra = np.asarray(record.meta.get("ignore_regions", np.zeros((0, 4))), np.float64).reshape(-1, 4)
  return np.concatenate([record.boxes[record.ignore].astype(np.float64), extra])


def negative_ok(windows: np.ndarray, record: records_lib.FaceRecord, neg_iou: float,
                ignore_overlap: float) -> np.ndarray:
  """bool [M]: max IoU with every face (ignored too) < neg_iou, and no ignored face or
  meta["ignore_regions"] box shares more than `ignore_overlap` of its or the window's area."""
  windows = np.asarray(windows, np.float64).reshape(-1, 4)
  ok = np.ones(len(windows), bool)
  if record.num_faces:
    ok &= geometry.pairwise_iou(windows, record.boxes.astype(np.float64)).max(1) < neg_iou
  regions = _ignore_regions(record)
  if len(regions):
    inter_a = geometry.pairwise_iou(regions, windows, "b").max(0)  # fraction of the window covered
    inter_b = geometry.pairwise_iou(windows, regions, "b").max(1)  # fraction of a region covered
    ok &= np.maximum(inter_a, inter_b) <= ignore_overlap
  return ok


def best_match(windows: np.ndarray, record: records_lib.FaceRecord):
  """(max IoU float64 [M], index of that face [M]) over the non-ignored faces; 0 / -1 if none."""
  windows = np.asarray(windows, np.float64).reshape(-1, 4)
  labelled = np.flatnonzero(~record.ignore)
  if not len(labelled):
    return np.zeros(len(windows)), np.full(len(windows), -1)
  iou = geometry.pairwise_iou(windows, record.boxes[labelled].astype(np.float64))
  j = iou.argmax(1)
  return iou[np.arange(len(windows)), j], labelled[j]


def _stochastic_round(rng: np.random.Generator, x: float) -> int:
  return int(np.floor(x) + (rng.random() < x - np.floor(x)))


def _random_squares(rng, n: int, lo: int, hi: int, h: int, w: int, log: bool = False):
  """n integer squares inside an h x w image, sides uniform (MTCNN) or log-uniform (so that
  every scale gets its share) in [lo, hi]."""
  if log:
    side = np.clip(np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), n))), lo, hi).astype(int)
  else:
    side = rng.integers(lo, hi + 1, n)
  x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
  return np.stack([x, y, x + side, y + side], 1).astype(np.float64).reshape(-1, 4)


def _around(rng, boxes: np.ndarray, tries: int, cfg: MtcnnConfig) -> np.ndarray:
  """MTCNN's jitter around each box: `tries` integer squares per box."""
  b = np.repeat(np.asarray(boxes, np.float64).reshape(-1, 4), tries, 0)
  bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  lo = np.maximum(np.ceil(cfg.side_range[0] * np.minimum(bw, bh)), 1)
  hi = np.maximum(lo, np.ceil(cfg.side_range[1] * np.maximum(bw, bh)))
  side = np.minimum(np.floor(rng.uniform(lo, hi + 1)), hi)
  cx = 0.5 * (b[:, 0] + b[:, 2]) + rng.uniform(-cfg.shift, cfg.shift, len(b)) * bw
  cy = 0.5 * (b[:, 1] + b[:, 3]) + rng.uniform(-cfg.shift, cfg.shift, len(b)) * bh
  x, y = np.round(cx - side / 2), np.round(cy - side / 2)
  return np.stack([x, y, x + side, y + side], 1)


def _as_records(items: Iterable[Any]) -> list[records_lib.FaceRecord]:
  """FaceRecords as they are; paths or encoded bytes become face-free records."""
  out = []
  for item in items:
    if not isinstance(item, records_lib.FaceRecord):
      name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<image {len(out)}>"
      item = records_lib.FaceRecord(
          image=os.fspath(item) if isinstance(item, os.PathLike) else item,
          boxes=np.zeros((0, 4), np.float32), image_id=name)
    out.append(item)
  return out


def load_or_skip(record: records_lib.FaceRecord, index: int, skipped: list) -> np.ndarray | None:
  """The record's picture, or None (logged, its name appended to `skipped`) when it cannot be
  read: one unreadable picture never stops a pass over a training set."""
  try:
    return record.load_image()
  except (images_lib.ImageDecodeError, OSError, ValueError) as e:
    name = record.image_id or (record.image if isinstance(record.image, str) else "<bytes>")
    log.warning("sampling: skipped image %s (record %d): %s", name, index, e)
    skipped.append(str(name))
    return None


class _Collector:
  """Accumulates crops image by image; iterates decodable images with progress and skipping."""

  def __init__(self, size: int):
    if int(size) != size or size < 1:
      raise ValueError(f"crop size must be a positive integer, got {size!r}")
    self.size, self.parts, self.skipped, self.images = int(size), [], [], 0
    self.extra: dict[str, int] = {}

  def images_of(self, recs: Sequence[records_lib.FaceRecord], rng: np.random.Generator,
                progress: bool, desc: str) -> Iterator[tuple[int, Any, np.ndarray, Any]]:
    seeds = rng.integers(0, 2**63 - 1, len(recs))  # one child stream per image
    for index, record in enumerate(tqdm(recs, desc=desc, disable=not progress, unit="img")):
      image = load_or_skip(record, index, self.skipped)
      if image is None:
        continue
      self.images += 1
      yield index, record, image, np.random.default_rng(seeds[index])

  def add(self, image, record, index, windows, labels, match=-1, crops=None, scores=None,
          keys=None) -> None:
    """Adds crops of `windows` labelled `labels` and matched to faces `match` (-1: none)."""
    windows = np.asarray(windows, np.float64).reshape(-1, 4)
    if not len(windows):
      return
    match = np.broadcast_to(np.asarray(match, int), len(windows))
    has = match >= 0
    m = np.where(has, match, 0)
    boxes = np.zeros((len(windows), 4), np.float32)
    five, mask = np.zeros((len(windows), 5, 2), np.float32), np.zeros((len(windows), 5), bool)
    if record.num_faces:
      pts5, mask5 = _five(record)
      face = record.boxes[m].reshape(-1, 2, 2)
      boxes = to_crop_coordinates(face, windows, self.size).reshape(-1, 4) * has[:, None]
      mask = mask5[m] & has[:, None]
      five = np.where(mask[..., None], to_crop_coordinates(pts5[m], windows, self.size), 0)
    if crops is None:
      crops = crop_resize(image, windows, self.size)
    labels = np.broadcast_to(np.asarray(labels, np.int8), len(windows))
    self.parts.append(dict(images=crops, labels=labels, boxes=boxes,
                           landmarks=five, landmark_mask=mask,
                           source=np.full(len(windows), index, np.int32), windows=windows,
                           scores=None if scores is None else np.asarray(scores, np.float32),
                           keys=None if keys is None else np.asarray(keys, np.float64)))

  def keep_smallest_keys(self, count: int) -> int:
    """Keeps the `count` crops with the smallest keys, in key order (mining); returns how many."""
    if not self.parts:
      return 0
    keys = np.concatenate([p["keys"] for p in self.parts])
    order = np.argsort(keys, kind="stable")[:count]
    self.parts = [{k: np.concatenate([p[k] for p in self.parts])[order] for k in self.parts[0]}]
    return len(order)

  def result(self, with_scores: bool = False) -> SampleResult:
    def cat(key, shape, dtype):
      vals = [p[key] for p in self.parts]
      return np.concatenate(vals) if vals else np.zeros(shape, dtype)
    s = self.size
    crops = records_lib.CropSet(
        images=cat("images", (0, s, s, 3), np.uint8), labels=cat("labels", (0,), np.int8),
        boxes=cat("boxes", (0, 4), np.float32), landmarks=cat("landmarks", (0, 5, 2), np.float32),
        landmark_mask=cat("landmark_mask", (0, 5), bool), source=cat("source", (0,), np.int32))
    stats = {name: int((crops.labels == label).sum()) for label, name in LABEL_NAMES.items()}
    stats.update(crops=len(crops), images=self.images, skipped=len(self.skipped), **self.extra)
    scores = cat("scores", (0,), np.float32) if with_scores else None
    windows = cat("windows", (0, 4), np.float64)
    return SampleResult(crops, windows, stats, list(self.skipped), scores)


def _fraction(value: float | bool) -> float:
  value = float(value)
  if not 0 <= value <= 1:
    raise ValueError(f"negatives_from_face_images must be in [0, 1], got {value}")
  return value


# ------------------------------------------------------------------------------ the MTCNN rule


def sample_mtcnn(records: Iterable[records_lib.FaceRecord], size: int, rng: np.random.Generator,
                 config: MtcnnConfig | None = None, *, progress: bool = True) -> SampleResult:
  """Random crops labelled by MTCNN's IoU rule; face-free records give negatives only."""
  cfg = config or MtcnnConfig()
  frac = _fraction(cfg.negatives_from_face_images)
  out = _Collector(size)
  recs = _as_records(records)
  for index, record, image, r in out.images_of(recs, rng, progress, f"mtcnn crops {size}"):
    h, w = image.shape[:2]
    keep = 1.0 if record.num_faces == 0 else frac
    side = record.boxes[:, 2:] - record.boxes[:, :2]
    faces = np.flatnonzero(~record.ignore & (side.min(1) >= cfg.min_face_size))
    if min(h, w) >= size:
      hi = max(size, min(h, w) // 2)
      quota = _stochastic_round(r, cfg.negatives_per_image * keep)
      cand = _random_squares(r, quota * cfg.oversample, size, hi, h, w)
      cand = cand[negative_ok(cand, record, cfg.neg_iou, cfg.ignore_overlap)][:quota]
      out.add(image, record, index, cand, NEGATIVE)
      # Near-face negatives: squares that overlap a face a little, which random ones rarely do.
      b = np.repeat(record.boxes[faces].astype(int), cfg.negatives_near_face, 0)
      s = r.integers(size, hi + 1, len(b))
      xy = np.clip(b[:, :2] + r.integers(-s[:, None], np.maximum(b[:, 2:] - b[:, :2], 1) + 1),
                   0, np.stack([w - s, h - s], 1))
      cand = np.concatenate([xy, xy + s[:, None]], 1).astype(np.float64)
      ok = negative_ok(cand, record, cfg.neg_iou, cfg.ignore_overlap) & (r.random(len(cand)) < keep)
      out.add(image, record, index, cand[ok], NEGATIVE)
    # Positives and part faces: jittered squares around each labelled face, labelled by the
    # best non-ignored face; [neg_iou, part_iou) is too ambiguous for either class.
    cand = _around(r, record.boxes[faces], cfg.face_tries, cfg)
    iou, match = best_match(cand, record)
    labels = np.where(iou > cfg.pos_iou, POSITIVE, np.where(iou >= cfg.part_iou, PART, NEGATIVE))
    ok = labels != NEGATIVE
    out.add(image, record, index, cand[ok], labels[ok], match[ok])
    # Landmark faces: jittered crops of faces with landmarks, all annotated points inside.
    pts5, mask5 = _five(record)
    marked = faces[mask5[faces].any(1)]
    cand = _around(r, record.boxes[marked], cfg.landmark_tries, cfg)
    own = np.repeat(marked, cfg.landmark_tries)
    if len(cand):
      iou = geometry.pairwise_iou(cand, record.boxes[own].astype(np.float64)).diagonal()
      rel = (pts5[own] - cand[:, None, :2]) / (cand[:, None, 2:] - cand[:, None, :2])
      inside = ((rel >= 0) & (rel <= 1)).all(-1) | ~mask5[own]
      ok = (iou > cfg.landmark_iou) & inside.all(1)
      out.add(image, record, index, cand[ok], LANDMARK, own[ok])
  return out.result()


# ---------------------------------------------------------------------------- scene negatives


def sample_negatives_from_scenes(sources: Iterable[Any], size: int, count: int,
                                 rng: np.random.Generator, *, neg_iou: float = 0.3,
                                 ignore_overlap: float = 0.05, oversample: int = 4,
                                 progress: bool = True) -> SampleResult:
  """`count` random negatives spread evenly over image paths, bytes or FaceRecords.

  Squares have log-uniform sides in [S, min(h, w)]. Face-free sources are all negative; records
  with faces keep only windows that pass `negative_ok`. Undecodable images lower the total.
  """
  out = _Collector(size)
  recs = _as_records(sources)
  per = np.full(len(recs), count // max(len(recs), 1))
  per[rng.permutation(len(recs))[:count % max(len(recs), 1)]] += 1
  for index, record, image, r in out.images_of(recs, rng, progress, f"scene negatives {size}"):
    h, w = image.shape[:2]
    if min(h, w) < size or per[index] == 0:
      continue
    crowded = record.num_faces or len(_ignore_regions(record))
    cand = _random_squares(r, per[index] * (oversample if crowded else 1), size, min(h, w), h, w,
                           log=True)
    cand = cand[negative_ok(cand, record, neg_iou, ignore_overlap)][:per[index]]
    out.add(image, record, index, cand, NEGATIVE)
  return out.result()


_MOVED = ("SlidingConfig", "pyramid_windows", "sample_sliding", "mine_hard_negatives")


def __getattr__(name: str):
  # The sliding-window rule and mining moved to data_pipelines.sliding; old names still work.
  if name in _MOVED:
    from data_pipelines import sliding  # pylint: disable=g-import-not-at-top
    return getattr(sliding, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
