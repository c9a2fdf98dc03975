"""Training and validation crop pools of a detection run, sampled from FaceRecords.

  train, counts = sample_train(face_sets, scenes, d, progress)   # d: the run's data settings
  val, counts = sample_val(records, d, progress)

Positives / part faces come from the face sets by data.sampler: "sliding" = the FaceCraft paper's
sliding windows (stride 8, 5 levels per octave, down to 1/32), "mtcnn" = squares jittered around
each face (jitter_shift, jitter_side), "both"; labelled by pos_iou / part_iou. Part faces are
subsampled to part_ratio x positives; negatives (from the scenes, and a share
negatives_from_face_images from the face pictures, kept clear of every labelled face grown
face_clearance times) make up 1 - positive_ratio of the classification crops (at most
max_negatives). Validation: jittered crops around each face plus val_negatives windows clear of
every face (IoU < 0.3). Every draw has its own seeded stream, so the pools are reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from data_pipelines import geometry
from data_pipelines import records as records_lib
from data_pipelines import sampling
from data_pipelines import sliding

SAMPLERS = ("sliding", "mtcnn", "both")
SCENES = "nonface_scenes"


def _jitter_config(d, tries: int) -> sampling.MtcnnConfig:
  return sampling.MtcnnConfig(
      negatives_per_image=0, negatives_near_face=0, face_tries=int(tries),
      landmark_tries=int(d.landmark_tries), pos_iou=d.pos_iou, part_iou=d.part_iou,
      neg_iou=min(d.neg_iou, d.part_iou), landmark_iou=d.pos_iou, min_face_size=d.min_face_size,
      shift=d.jitter_shift, side_range=tuple(d.jitter_side), negatives_from_face_images=0.0)


def faces_covered(result: sampling.SampleResult, recs) -> int:
  """Faces that got at least one positive crop."""
  pos = np.flatnonzero(result.crops.labels == records_lib.POSITIVE)
  seen = set()
  for i in pos:
    r = int(result.crops.source[i])
    _, face = sampling.best_match(result.windows[i:i + 1], recs[r])
    seen.add((r, int(face[0])))
  return len(seen)


def take(crops: records_lib.CropSet, index) -> records_lib.CropSet:
  """The crops at `index` (an index array or mask)."""
  return records_lib.CropSet(crops.images[index], crops.labels[index], crops.boxes[index],
                             crops.landmarks[index], crops.landmark_mask[index],
                             crops.source[index])


def _sliding(recs, d, stream: int, progress: bool, stats: dict) -> records_lib.CropSet:
  cfg = sliding.SlidingConfig(
      stride=d.sliding_stride, interval=d.sliding_interval, min_scale=d.sliding_min_scale,
      pos_iou=d.pos_iou, neg_iou=d.neg_iou, positive_ratio=None, max_negatives_per_image=0,
      max_positives_per_image=d.max_positives_per_image or None, negatives_from_face_images=0.0)
  res = sliding.sample_sliding(recs, int(d.size), np.random.default_rng([d.seed, 1, stream]),
                                cfg, progress=progress)
  stats["sliding_positives"] = res.stats["positive"]
  stats["faces_with_sliding_positive"] = faces_covered(res, recs)
  stats["skipped"] = res.stats["skipped"]
  return res.crops


def _jittered(recs, d, stream: int, progress: bool, stats: dict) -> records_lib.CropSet:
  res = sampling.sample_mtcnn(recs, int(d.size), np.random.default_rng([d.seed, 2, stream]),
                              _jitter_config(d, d.face_tries), progress=progress)
  stats["mtcnn_positives"] = res.stats["positive"]
  stats["faces_with_mtcnn_positive"] = faces_covered(res, recs)
  stats["skipped"] = res.stats["skipped"]
  return res.crops


def face_crops(recs, d, stream: int, progress: bool) -> tuple[records_lib.CropSet, dict]:
  """Positives (+ part and landmark faces) of one face set by data.sampler."""
  stats = {"images": len(recs), "faces": int(sum((~r.ignore).sum() for r in recs))}
  sets = []
  if d.sampler in ("sliding", "both"):
    sets.append(_sliding(recs, d, stream, progress, stats))
  if d.sampler in ("mtcnn", "both"):
    sets.append(_jittered(recs, d, stream, progress, stats))
  crops = records_lib.CropSet.concatenate(sets)
  # Part faces train only the box heads: keep part_ratio x positives of them.
  pos, part = crops.labels == records_lib.POSITIVE, np.flatnonzero(crops.labels == records_lib.PART)
  want = int(round(d.part_ratio * pos.sum()))
  drop = np.random.default_rng([d.seed, 3, stream]).permutation(part)[want:]
  crops = take(crops, np.setdiff1d(np.arange(len(crops)), drop))
  stats.update(positives=int(pos.sum()), parts=int((crops.labels == records_lib.PART).sum()),
               landmark_faces=int((crops.labels == records_lib.LANDMARK).sum()))
  return crops, stats


def _with_offset(crops: records_lib.CropSet, offset: int) -> records_lib.CropSet:
  crops.source = crops.source + np.int32(offset)
  return crops


def clear_of_faces(recs, clearance: float) -> list:
  """Face records whose labelled faces, grown `clearance` times, are no-negative regions."""
  return [dataclasses.replace(r, meta={**r.meta, "ignore_regions": geometry.scale_boxes(
      r.boxes.astype(np.float64), clearance)}) for r in recs if r.num_faces]


def _negative_count(n_pos: int, d) -> int:
  r = float(d.positive_ratio)
  n_neg = int(math.ceil(n_pos * (1 - r) / r - 1e-9))
  return min(n_neg, int(d.max_negatives)) if d.max_negatives else n_neg


def sample_train(face_sets: dict[str, list], scenes: list, d,
                 progress: bool) -> tuple[records_lib.CropSet, dict]:
  """The training CropSet and its counts (see the module docstring)."""
  parts, counts, offset = [], {}, 0
  for k, (name, recs) in enumerate(face_sets.items()):
    crops, counts[name] = face_crops(recs, d, 10 + k, progress)
    parts.append(_with_offset(crops, offset))
    offset += len(recs)
  n_neg = _negative_count(int(sum(c["positives"] for c in counts.values())), d)
  n_face = int(round(d.negatives_from_face_images * n_neg))
  if n_face:
    # Only sets with their own boxes label every face (WIDER): rule-box sets (Caltech, 300-W)
    # leave faces unlabelled, which would become negatives. Without native sets, all sets.
    native = [n for n in face_sets if n in tuple(d.get("native_sets", ()))]
    recs = clear_of_faces([x for n in (native or face_sets) for x in face_sets[n]],
                          d.face_clearance)
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
  """Validation crops: jittered faces, and windows clear of every face."""
  faces = sampling.sample_mtcnn(recs, int(d.size), np.random.default_rng([d.seed, 6]),
                                _jitter_config(d, d.val_face_tries), progress=progress)
  negs = sampling.sample_negatives_from_scenes(recs, int(d.size), int(d.val_negatives),
                                               np.random.default_rng([d.seed, 7]), neg_iou=0.3,
                                               progress=progress)
  val = records_lib.CropSet.concatenate([faces.crops, negs.crops])
  counts = {"images": len(recs), "faces": int(sum(r.num_faces for r in recs)),
            "faces_with_positive": faces_covered(faces, recs), **label_counts(val)}
  return val, counts


def mine_false_positives(recs, detect, size: int, count: int, neg_iou: float = 0.3,
                         min_score: float = 0.0, ignore_overlap: float = 0.05,
                         progress: bool = True) -> tuple[records_lib.CropSet, dict]:
  """Hard negatives mined through a whole detector: its detections on labelled pictures that
  overlap no face (IoU < neg_iou with every face, ignored ones too, and no ignored region), as
  size x size crops of their squared boxes (the window a cascade's last stage sees). Keeps the
  `count` highest-scoring ones above min_score.

  detect(image uint8 [H, W, 3]) -> (boxes [N, 4], scores [N]). Returns (CropSet of NEGATIVE
  crops, source = record index; stats: pictures, detections, false positives, kept, skipped).
  """
  crops, scores, sources, skipped = [], [], [], []
  stats = {"pictures": 0, "detections": 0, "false_positives": 0}
  bar = _progress(len(recs), "mining false positives", progress)
  for index, rec in enumerate(recs):
    bar.update(1)
    image = sampling.load_or_skip(rec, index, skipped)
    if image is None:
      continue
    boxes, found = detect(image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    found = np.asarray(found, np.float64).reshape(-1)
    stats["pictures"] += 1
    stats["detections"] += len(found)
    keep = (found >= min_score) & sampling.negative_ok(boxes, rec, neg_iou, ignore_overlap)
    if not keep.any():
      continue
    stats["false_positives"] += int(keep.sum())
    crops.append(sampling.crop_resize(image, geometry.square_boxes(boxes[keep]), size))
    scores.append(found[keep])
    sources.append(np.full(int(keep.sum()), index, np.int32))
  bar.close()
  all_scores = np.concatenate(scores) if scores else np.zeros(0)
  order = np.argsort(-all_scores, kind="stable")[:count]
  images_ = (np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8))[order]
  n = len(order)
  out = records_lib.CropSet(images_, np.full(n, records_lib.NEGATIVE, np.int8),
                            np.zeros((n, 4), np.float32), np.zeros((n, 5, 2), np.float32),
                            np.zeros((n, 5), bool),
                            (np.concatenate(sources) if sources else np.zeros(0, np.int32))[order])
  stats.update(kept=n, skipped=len(skipped), skipped_images=skipped)
  stats["min_kept_score"] = float(all_scores[order].min()) if n else None
  return out, stats


def _progress(total: int, desc: str, enabled: bool):
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def label_counts(crops: records_lib.CropSet) -> dict[str, Any]:
  out = {name: int((crops.labels == label).sum()) for label, name in sampling.LABEL_NAMES.items()}
  cls = out["positive"] + out["negative"]
  out.update(total=len(crops), positive_ratio=out["positive"] / cls if cls else 0.0)
  return out
