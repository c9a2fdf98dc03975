"""Training and validation crops of the FaceCraft cascade schedules (cascade_joint, cascade_greedy).

  data = cascade_data.build(config, workdir)   # CascadeData: train / val CropSets, counts, key
  it = cascade_data.train_iterator(data.train, config.batch_size, seed, config.data)

Sources (config.data, under data.root = ../shared/data by default):
  positives / part faces  Caltech WebFaces + 300-W training faces, 48x48 crops labelled by the
                          FaceCraft rule (positive IoU > pos_iou = 0.8, part [part_iou, pos_iou]).
  negatives               nonface_scenes only (IoU < neg_iou = 0.5 with every face, trivially):
                          Caltech and 300-W pictures hold unlabelled faces (profiles, people in
                          the background), so a window cut from them may be a face. A fraction
                          `negatives_from_face_images` (default 0) may come from those pictures,
                          kept clear of every labelled face grown `face_clearance` times.
  validation              CMU+MIT (cmu_mit_frontal, never trained on): jittered crops around its
                          faces and `val_negatives` random windows clear of them (IoU < 0.3).

Boxes. Caltech boxes come from its four points by caltech_webfaces.boxes_from_points. 300-W
boxes are made the SAME way: Caltech-style points from the 68 (eye centres = mean of 36-41 and of
42-47, nose = 33, mouth centre = mean of the 20 mouth points 48-67) through the same rule, so the
two sets agree on what a face box is. `box_scale` grows both about their centres; its default
1.4 matches CMU+MIT's ground-truth boxes, which are 1.39x wider and 1.55x taller than the rule's
box (the rule applied to CMU+MIT's own points: mean IoU with its boxes 0.48 at scale 1.0, 0.83 at
1.4; see box_rule_agreement).

Samplers (data.sampler): "sliding" = the paper's sliding windows (stride 8, 5 levels per octave,
down to 1/32), which give a positive (IoU > 0.8) to only 57% of the Caltech faces and 77% of the
300-W faces and no part faces; "mtcnn" = MTCNN-style squares jittered around each face
(jitter_shift, jitter_side; 95% / 99% of the faces get positives), labelled by the same IoU
thresholds; "both" (default). Part faces are subsampled to part_ratio x positives; negatives make
up 1 - positive_ratio of the classification crops (at most max_negatives).

Cache: crops are saved as <cache_dir>/cascade-<key>-{train,val}.npz (+ -summary.json) where key
hashes every data setting that changes the crops, so a resumed run or an ablation with the same
data settings reuses identical crops. Augmentation (flip, colour) happens in the loader.

Without the real data (data.source "auto" and no data.root) the EMBEDDED DEFAULT is used and
announced loudly on stderr: synthetic scenes with the bundled sample face (facecraft/assets)
pasted at random sizes; it runs end to end but trains no real face detector.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import sys
import time
import warnings
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from data_pipelines import augment
from data_pipelines import loader as loader_lib
from data_pipelines import records as records_lib
from data_pipelines import sampling
from data_pipelines.formats import caltech_webfaces, cmu_mit, facecraft_json, pts68
from data_pipelines import geometry

CACHE_VERSION = 1
SAMPLERS = ("sliding", "mtcnn", "both")
SOURCES = ("auto", "real", "embedded")
TRAIN_SETS = ("caltech_webfaces", "300w_train")
SCENES, VALIDATION = "nonface_scenes", "cmu_mit_frontal"
TRAIN_KEYS = ("image", "cls_target", "cls_mask", "box_target", "box_mask")
LANDMARK_KEYS = ("landmark_target", "landmark_mask", "landmark_point_mask")
BOX_LABELS = (records_lib.POSITIVE, records_lib.PART)
# Data settings that do not change the cached crops (the loader applies them).
_NOT_IN_KEY = ("cache_dir", "workers", "flip_prob", "brightness", "contrast", "saturation",
               "grayscale_prob")
ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@dataclasses.dataclass
class CascadeData:
  train: records_lib.CropSet
  val: records_lib.CropSet
  counts: dict[str, Any]       # per source and per label, box-rule agreement, timings
  key: str                     # cache key (hash of the data settings)
  embedded: bool               # True: the synthetic embedded default, not real faces
  prep_time_s: float           # sampling time (0 when loaded from the cache)
  cached: bool                 # loaded from the cache


# ------------------------------------------------------------------------------ box rule


def caltech4_from_ibug68(points: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Caltech-style points [N, 4, 2] (left eye, right eye, nose, mouth centre) from iBUG 68;
  means over the annotated points (NaN where none of a group is annotated)."""
  p = np.asarray(points, np.float64).reshape(-1, 68, 2).copy()
  if mask is not None:
    p[~np.asarray(mask, bool).reshape(-1, 68)] = np.nan
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a group with no annotated point
    return np.stack([np.nanmean(p[:, 36:42], 1), np.nanmean(p[:, 42:48], 1), p[:, 33],
                     np.nanmean(p[:, 48:68], 1)], 1)


def ibug68_boxes(points: np.ndarray, box_scale: float, mask: np.ndarray | None = None
                 ) -> np.ndarray:
  """300-W face boxes by Caltech WebFaces' rule (see the module docstring); a face missing an
  eye or the mouth gets the square around its annotated points instead."""
  c4 = caltech4_from_ibug68(points, mask)
  boxes = caltech_webfaces.boxes_from_points(np.nan_to_num(c4), box_scale)
  bad = ~np.isfinite(c4[:, [0, 1, 3]]).all((1, 2))
  if bad.any():
    fallback = geometry.scale_boxes(geometry.square_boxes(geometry.landmark_bbox(
        np.asarray(points, np.float32).reshape(-1, 68, 2)[bad],
        None if mask is None else np.asarray(mask, bool).reshape(-1, 68)[bad])), box_scale)
    boxes[bad] = fallback
  return boxes


def box_rule_agreement(cmu_records, box_scale: float) -> dict[str, float]:
  """IoU of the rule's box (from CMU+MIT's own eyes / nose / mouth centre) with its GT boxes."""
  full = [r for r in cmu_records if r.num_faces and r.landmark_mask is not None
          and r.landmark_mask.all()]
  if not full:
    return {}
  c4 = np.concatenate([r.landmarks for r in full]).astype(np.float64)[:, [0, 1, 2, 4]]
  gt = np.concatenate([r.boxes for r in full]).astype(np.float64)
  ious = lambda s: np.diag(geometry.pairwise_iou(  # noqa: E731
      caltech_webfaces.boxes_from_points(c4, s).astype(np.float64), gt))
  scales = np.round(np.arange(1.0, 1.81, 0.01), 2)
  means = [ious(s).mean() for s in scales]
  at1, at = ious(1.0), ious(box_scale)
  return {"faces": int(len(gt)), "iou_mean_scale1": float(at1.mean()),
          "iou_median_scale1": float(np.median(at1)), "box_scale": float(box_scale),
          "iou_mean": float(at.mean()), "iou_median": float(np.median(at)),
          "frac_iou_above_0.5": float((at > 0.5).mean()),
          "best_scale": float(scales[int(np.argmax(means))]), "best_iou_mean": float(max(means))}


# ------------------------------------------------------------------------------ records


def _subset(recs: list, max_images: int, seed: int, stream: int) -> list:
  if not max_images or len(recs) <= max_images:
    return list(recs)
  keep = np.sort(np.random.default_rng([seed, 99, stream]).permutation(len(recs))[:max_images])
  return [recs[i] for i in keep]


def load_train_records(root: str, d) -> dict[str, list[records_lib.FaceRecord]]:
  """{set name: records} of the face sets, boxes by the shared rule at d.box_scale."""
  out = {}
  for k, name in enumerate(d.train_sets):
    folder = os.path.join(root, name)
    if name == "caltech_webfaces":
      recs = list(caltech_webfaces.load(folder, on_error="skip", box_scale=d.box_scale))
    elif name == "300w_train":
      recs = [dataclasses.replace(r, boxes=ibug68_boxes(r.landmarks, d.box_scale,
                                                         r.landmark_mask))
              for r in pts68.load(folder, on_error="skip")]
    else:
      raise ValueError(f"config.data.train_sets: unknown set {name!r}; known: {TRAIN_SETS}")
    out[name] = _subset(recs, d.max_images, d.seed, k)
  return out


def scene_paths(root: str) -> list[str]:
  folder = os.path.join(root, SCENES)
  paths = sorted(p for ext in ("jpg", "jpeg", "png") for p in glob.glob(os.path.join(folder,
                                                                                     f"*.{ext}")))
  if not paths:
    raise FileNotFoundError(f"no negative scenes (*.jpg, *.png) in {folder}")
  return paths


def load_val_records(root: str, d) -> list[records_lib.FaceRecord]:
  recs = list(cmu_mit.load(os.path.join(root, VALIDATION), on_error="skip"))
  return _subset(recs, d.val_max_images, d.seed, 50)


# ------------------------------------------------------------------------------ embedded


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  low = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
  img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
  yy, xx = np.mgrid[0:h, 0:w]
  stripes = rng.uniform(0, 40) * np.sin((xx * rng.normal() + yy * rng.normal()) / rng.uniform(2, 9))
  noise = rng.normal(0, rng.uniform(2, 15), (h, w, 1))
  return np.clip(img + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def embedded_records(count: int, seed: int, faces: bool, box_scale: float = 1.0) -> list:
  """Synthetic scenes, each with the bundled sample face pasted at a random size (or none)."""
  sample = facecraft_json.load(ASSET_DIR)[0]
  face_img, face_box, face_pts = sample.load_image(), sample.boxes[0], sample.landmarks[0]
  out = []
  for i in range(count):
    rng = np.random.default_rng([seed, i, int(faces)])
    h, w = int(rng.integers(96, 161)), int(rng.integers(96, 161))
    image = _background(rng, h, w)
    boxes, pts = np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)
    if faces:
      side = rng.uniform(24, 0.6 * min(h, w))
      scale = side / (face_box[2] - face_box[0])
      ctx = geometry.scale_boxes(face_box[None].astype(np.float64), 1.6)[0]  # face + context
      size = np.maximum(np.round((ctx[2:] - ctx[:2]) * scale).astype(int), 1)
      patch = np.asarray(Image.fromarray(face_img).resize(
          tuple(size), Image.BILINEAR, box=tuple(float(v) for v in ctx)), np.float32)
      patch = np.clip(patch * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
      x0 = int(rng.integers(0, max(w - size[0], 0) + 1))
      y0 = int(rng.integers(0, max(h - size[1], 0) + 1))
      ph, pw = min(size[1], h - y0), min(size[0], w - x0)
      image[y0:y0 + ph, x0:x0 + pw] = patch[:ph, :pw]
      move = lambda p: (p - ctx[:2]) * scale + (x0, y0)  # noqa: E731
      box = np.concatenate([move(face_box[:2]), move(face_box[2:])])
      boxes = geometry.scale_boxes(box[None], box_scale).astype(np.float32)
      pts = move(face_pts)[None].astype(np.float32)
    out.append(records_lib.FaceRecord(
        image=image, boxes=boxes, landmarks=pts, landmark_scheme="five",
        image_id=f"embedded-{seed}-{i}", meta={"image_size": (h, w)}))
  return out


def _announce_embedded(why: str) -> None:
  bar = "!" * 100
  print(f"\n{bar}\n!!! FACECRAFT: {why}: training on the EMBEDDED DEFAULT\n!!! (synthetic "
        "scenes with the one bundled sample face). This runs end to end but is NOT a face "
        "detector.\n!!! Point --config.data.root at the shared data (caltech_webfaces, "
        f"300w_train, nonface_scenes, cmu_mit_frontal).\n{bar}\n", file=sys.stderr, flush=True)
  logging.warning("cascade data: EMBEDDED DEFAULT (%s)", why)


def has_real_data(root: str, d) -> bool:
  needed = [*d.train_sets, SCENES, VALIDATION]
  return all(os.path.isdir(os.path.join(root, n)) for n in needed)


# ------------------------------------------------------------------------------ sampling


def _jitter_config(d, tries: int) -> sampling.MtcnnConfig:
  return sampling.MtcnnConfig(
      negatives_per_image=0, negatives_near_face=0, face_tries=int(tries),
      landmark_tries=int(d.landmark_tries), pos_iou=d.pos_iou, part_iou=d.part_iou,
      neg_iou=min(d.neg_iou, d.part_iou), landmark_iou=d.pos_iou, min_face_size=d.min_face_size,
      shift=d.jitter_shift, side_range=tuple(d.jitter_side), negatives_from_face_images=0.0)


def _faces_covered(result: sampling.SampleResult, recs) -> int:
  """Faces that got at least one positive crop."""
  pos = np.flatnonzero(result.crops.labels == records_lib.POSITIVE)
  seen = set()
  for i in pos:
    r = int(result.crops.source[i])
    _, face = sampling.best_match(result.windows[i:i + 1], recs[r])
    seen.add((r, int(face[0])))
  return len(seen)


def _face_crops(recs, d, stream: int, progress: bool) -> tuple[records_lib.CropSet, dict[str, int]]:
  """Positives (+ part and landmark faces) of one face set by data.sampler."""
  stats = {"images": len(recs), "faces": int(sum((~r.ignore).sum() for r in recs))}
  sets = []
  size = int(d.size)
  if d.sampler in ("sliding", "both"):
    cfg = sampling.SlidingConfig(
        stride=d.sliding_stride, interval=d.sliding_interval, min_scale=d.sliding_min_scale,
        pos_iou=d.pos_iou, neg_iou=d.neg_iou, positive_ratio=None, max_negatives_per_image=0,
        max_positives_per_image=d.max_positives_per_image or None, negatives_from_face_images=0.0)
    res = sampling.sample_sliding(recs, size, np.random.default_rng([d.seed, 1, stream]), cfg,
                                  progress=progress)
    stats["sliding_positives"] = res.stats["positive"]
    stats["faces_with_sliding_positive"] = _faces_covered(res, recs)
    stats["skipped"] = res.stats["skipped"]
    sets.append(res.crops)
  if d.sampler in ("mtcnn", "both"):
    res = sampling.sample_mtcnn(recs, size, np.random.default_rng([d.seed, 2, stream]),
                                _jitter_config(d, d.face_tries), progress=progress)
    stats["mtcnn_positives"] = res.stats["positive"]
    stats["faces_with_mtcnn_positive"] = _faces_covered(res, recs)
    stats["skipped"] = res.stats["skipped"]
    sets.append(res.crops)
  crops = records_lib.CropSet.concatenate(sets)
  # Part faces train only the box heads: keep part_ratio x positives of them.
  pos, part = crops.labels == records_lib.POSITIVE, np.flatnonzero(crops.labels == records_lib.PART)
  want = int(round(d.part_ratio * pos.sum()))
  drop = np.random.default_rng([d.seed, 3, stream]).permutation(part)[want:]
  keep = np.setdiff1d(np.arange(len(crops)), drop)
  crops = _take(crops, keep)
  stats.update(positives=int(pos.sum()), parts=int((crops.labels == records_lib.PART).sum()),
               landmark_faces=int((crops.labels == records_lib.LANDMARK).sum()))
  return crops, stats


def _take(crops: records_lib.CropSet, index) -> records_lib.CropSet:
  return records_lib.CropSet(crops.images[index], crops.labels[index], crops.boxes[index],
                             crops.landmarks[index], crops.landmark_mask[index],
                             crops.source[index])


def _with_offset(crops: records_lib.CropSet, offset: int) -> records_lib.CropSet:
  crops.source = crops.source + np.int32(offset)
  return crops


def _clear_of_faces(recs, clearance: float) -> list:
  """Face records whose labelled faces, grown `clearance` times, are no-negative regions."""
  return [dataclasses.replace(r, meta={**r.meta, "ignore_regions": geometry.scale_boxes(
      r.boxes.astype(np.float64), clearance)}) for r in recs if r.num_faces]


def sample_train(face_sets: dict[str, list], scenes: list, d,
                 progress: bool) -> tuple[records_lib.CropSet, dict]:
  """The training CropSet and its counts (see the module docstring)."""
  parts, counts, offset = [], {}, 0
  for k, (name, recs) in enumerate(face_sets.items()):
    crops, counts[name] = _face_crops(recs, d, 10 + k, progress)
    parts.append(_with_offset(crops, offset))
    offset += len(recs)
  n_pos = int(sum(c["positives"] for c in counts.values()))
  r = float(d.positive_ratio)
  n_neg = int(math.ceil(n_pos * (1 - r) / r - 1e-9))
  if d.max_negatives:
    n_neg = min(n_neg, int(d.max_negatives))
  n_face = int(round(d.negatives_from_face_images * n_neg))
  if n_face:
    recs = _clear_of_faces([x for v in face_sets.values() for x in v], d.face_clearance)
    res = sampling.sample_negatives_from_scenes(
        recs, int(d.size), n_face, np.random.default_rng([d.seed, 4]), neg_iou=d.neg_iou,
        progress=progress)
    counts["face_image_negatives"] = res.stats["negative"]
    parts.append(_with_offset(res.crops, 10**6))  # source ids of these are not record indices
  res = sampling.sample_negatives_from_scenes(scenes, int(d.size), n_neg - n_face,
                                              np.random.default_rng([d.seed, 5]),
                                              neg_iou=d.neg_iou, progress=progress)
  counts[SCENES] = {"images": len(scenes), "negatives": res.stats["negative"],
                    "skipped": res.stats["skipped"]}
  parts.append(_with_offset(res.crops, offset))
  train = records_lib.CropSet.concatenate(parts)
  counts["train"] = label_counts(train)
  return train, counts


def sample_val(recs: list, d, progress: bool) -> tuple[records_lib.CropSet, dict]:
  """Validation crops of CMU+MIT: jittered faces, and windows clear of every face."""
  faces = sampling.sample_mtcnn(recs, int(d.size), np.random.default_rng([d.seed, 6]),
                                _jitter_config(d, d.val_face_tries), progress=progress)
  negs = sampling.sample_negatives_from_scenes(recs, int(d.size), int(d.val_negatives),
                                               np.random.default_rng([d.seed, 7]), neg_iou=0.3,
                                               progress=progress)
  val = records_lib.CropSet.concatenate([faces.crops, negs.crops])
  counts = {"images": len(recs), "faces": int(sum(r.num_faces for r in recs)),
            "faces_with_positive": _faces_covered(faces, recs), **label_counts(val)}
  return val, counts


def label_counts(crops: records_lib.CropSet) -> dict[str, Any]:
  out = {name: int((crops.labels == label).sum()) for label, name in sampling.LABEL_NAMES.items()}
  cls = out["positive"] + out["negative"]
  out.update(total=len(crops), positive_ratio=out["positive"] / cls if cls else 0.0)
  return out


# ------------------------------------------------------------------------------ build / cache


def cache_key(d, root: str, embedded: bool) -> str:
  settings = {k: v for k, v in d.to_dict().items() if k not in _NOT_IN_KEY}
  settings.update(version=CACHE_VERSION, embedded=embedded,
                  root="" if embedded else os.path.abspath(root))
  text = json.dumps(settings, sort_keys=True, default=list)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_atomic(crops: records_lib.CropSet, path: str) -> None:
  tmp = path[:-len(".npz")] + f".tmp{os.getpid()}.npz"
  crops.save(tmp)
  os.replace(tmp, path)


def resolve_source(d) -> tuple[str, bool]:
  """(root, embedded): the data root and whether the embedded default stands in for it."""
  root = os.path.expanduser(d.root)
  if d.source == "embedded":
    _announce_embedded("config.data.source='embedded'")
    return root, True
  if has_real_data(root, d):
    return root, False
  if d.source == "real":
    raise FileNotFoundError(f"config.data.root={d.root!r} lacks one of "
                            f"{[*d.train_sets, SCENES, VALIDATION]} (config.data.source='real')")
  _announce_embedded(f"no real data at {os.path.abspath(root)!r}")
  return root, True


def build(config, workdir: str, progress: bool | None = None) -> CascadeData:
  """Training and validation crops, from the cache when it holds them (see the module doc)."""
  d = config.data
  progress = config.get("progress_bar", True) if progress is None else progress
  root, embedded = resolve_source(d)
  key = cache_key(d, root, embedded)
  cache_dir = d.cache_dir or os.path.join(os.fspath(workdir), "data")
  os.makedirs(cache_dir, exist_ok=True)
  paths = {n: os.path.join(cache_dir, f"cascade-{key}-{n}.npz") for n in ("train", "val")}
  summary_path = os.path.join(cache_dir, f"cascade-{key}-summary.json")
  if all(os.path.exists(p) for p in [*paths.values(), summary_path]):
    t0 = time.perf_counter()
    train, val = (loader_lib.load_crops(paths[n]) for n in ("train", "val"))
    with open(summary_path) as f:
      counts = json.load(f)
    logging.info("cascade data: reusing %s (%d train, %d val crops) in %.1f s", cache_dir,
                 len(train), len(val), time.perf_counter() - t0)
    return CascadeData(train, val, counts, key, embedded, 0.0, True)

  t0 = time.perf_counter()
  if embedded:
    face_sets = {"embedded_faces": embedded_records(d.embedded_images, d.seed, True, d.box_scale)}
    scenes = embedded_records(d.embedded_scenes, d.seed + 1, False)
    val_recs = embedded_records(d.embedded_val_images, d.seed + 2, True, d.box_scale)
  else:
    face_sets = load_train_records(root, d)
    scenes = scene_paths(root)
    val_recs = load_val_records(root, d)
  train, counts = sample_train(face_sets, scenes, d, progress)
  val, counts["val"] = sample_val(val_recs, d, progress)
  if not embedded:
    counts["box_rule_cmu_mit"] = box_rule_agreement(val_recs, d.box_scale)
  prep = time.perf_counter() - t0
  counts.update(key=key, embedded=embedded, prep_time_s=prep)
  if counts["train"]["positive"] == 0 or counts["train"]["negative"] == 0:
    raise ValueError(f"cascade data: no positives or no negatives ({counts['train']}); check "
                     "config.data (sizes, thresholds, root)")
  for name, crops in (("train", train), ("val", val)):
    _save_atomic(crops, paths[name])
  with open(summary_path + ".tmp", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
  os.replace(summary_path + ".tmp", summary_path)
  logging.info("cascade data: %s prepared in %.1f s, cached in %s: %s", key, prep, cache_dir,
               json.dumps(counts, sort_keys=True))
  return CascadeData(train, val, counts, key, embedded, prep, False)


# ------------------------------------------------------------------------------ batches


def box_targets(crops: records_lib.CropSet, with_flips: bool) -> np.ndarray:
  """R-CNN targets [M, 4] of the crops with a box (and of their mirror images when flipping)."""
  has = np.isin(crops.labels, BOX_LABELS)
  boxes = crops.boxes[has].astype(np.float64)
  window = np.array([0, 0, crops.size, crops.size], np.float64)
  t = [geometry.encode_rcnn(window, boxes)]
  if with_flips:
    t.append(geometry.encode_rcnn(window, geometry.flip_boxes(boxes, crops.size)))
  return np.concatenate(t).reshape(-1, 4)


@dataclasses.dataclass(frozen=True)
class CropAugment:
  """Loader augmentation: horizontal flip (the paper's) and optional colour jitter."""

  flip_prob: float = 0.5
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  grayscale_prob: float = 0.0

  def __call__(self, item: dict, rng: np.random.Generator) -> dict:
    if rng.random() < self.flip_prob:
      image, box, pts, mask = augment.hflip(item["image"], item["box"][None],
                                            item["landmarks"][None], "five",
                                            item["landmark_mask"][None])
      has_box = int(item["label"]) in BOX_LABELS  # negatives keep their all-zero box
      item = dict(item, image=image, box=box[0] if has_box else item["box"], landmarks=pts[0],
                  landmark_mask=mask[0])
    if self.brightness or self.contrast or self.saturation or self.grayscale_prob:
      item = dict(item, image=augment.color_jitter(item["image"], rng, self.brightness,
                                                   self.contrast, self.saturation,
                                                   self.grayscale_prob))
    return item


class BatchIterator:
  """Keeps only the batch keys the step uses; get_state / set_state pass through (resume)."""

  def __init__(self, iterator, keys):
    self._it, self._keys = iterator, tuple(keys)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    return {k: batch[k] for k in self._keys}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)


def train_iterator(crops, batch_size: int, seed: int, d, landmarks: bool = False):
  """Shuffled, flipped, endlessly repeating batches (rcnn box targets) of a crop source."""
  aug = CropAugment(d.flip_prob, d.brightness, d.contrast, d.saturation, d.grayscale_prob)
  ds = loader_lib.make_crop_loader(crops, batch_size, seed, augment=aug, encode="rcnn",
                                   worker_count=int(d.workers))
  return BatchIterator(iter(ds), TRAIN_KEYS + (LANDMARK_KEYS if landmarks else ()))
