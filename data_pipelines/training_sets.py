"""Which data a detection training run uses, and its crop pools, cached by their settings.

  data = training_sets.build(config.data, cache_dir, progress)   # CropData: train / val CropSets

`d` is the run's data section (config.data); every key of it that changes the crops is part of
the cache key. Sources, under d.root (../shared/data by default):

  face sets    d.train_sets: folder names under d.root, each declared by its reader in
               data_pipelines.formats (`folders`, task "detection", `rule_boxes`): Caltech
               WebFaces and 300-W by default. Every set's boxes follow the SAME rule, Caltech's
               (geometry.caltech4_boxes; 300-W through geometry.ibug68_boxes), grown by
               d.box_scale about their centres: 1.4 matches CMU+MIT's ground truth boxes, which
               are 1.39x wider and 1.55x taller than the rule's (box_rule_agreement).
               d.rule_box_shape = (width, height, shift_y) reshapes them further, e.g. to
               WIDER FACE's forehead-to-chin boxes (experiments/configs/facecraft_wider.py).
  native sets  d.native_sets: "FORMAT:PATH:SPLIT" entries (PATH under d.root unless absolute) of
               sets trained on their OWN boxes, e.g. WIDER FACE's forehead-to-chin boxes
               ("wider_face:wider_face_subset:train"); their ignored faces (invalid, zero-size)
               only keep negatives away.
  negatives    SCENES (nonface_scenes): pictures without faces. Caltech and 300-W pictures hold
               unlabelled faces, so by default no negative comes from them.
  validation   VALIDATION (cmu_mit_frontal, never trained on), or d.val_set ("FORMAT:PATH:SPLIT",
               e.g. "wider_face:wider_face_subset:val", so that CMU+MIT stays a test).

Crops are sampled by data_pipelines.training_crops and saved as
<cache_dir>/<prefix>-<key>-{train,val}.npz (+ -summary.json), so a resumed run or an ablation
with the same data settings reuses identical crops. Without the real data (d.source "auto" and
no folders at d.root) the EMBEDDED DEFAULT (data_pipelines.synthetic) is used and announced
loudly on stderr; it runs end to end but trains no real face detector.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from data_pipelines import formats
from data_pipelines import geometry
from data_pipelines import loader as loader_lib
from data_pipelines import records as records_lib
from data_pipelines import synthetic
from data_pipelines import training_crops

CACHE_VERSION = 1
SOURCES = ("auto", "real", "embedded")
DEFAULT_TRAIN_SETS = ("caltech_webfaces", "300w_train")
SCENES, VALIDATION = training_crops.SCENES, "cmu_mit_frontal"
# Data settings that do not change the cached crops (the loader applies them).
NOT_IN_KEY = ("cache_dir", "workers", "flip_prob", "brightness", "contrast", "saturation",
              "grayscale_prob", "rotation_deg", "jpeg_prob", "blur_prob", "occlusion_prob",
              "extra_crops", "mined_first_branch")


@dataclasses.dataclass
class CropData:
  train: records_lib.CropSet
  val: records_lib.CropSet
  counts: dict[str, Any]       # per source and per label, box-rule agreement, timings
  key: str                     # cache key (hash of the data settings)
  embedded: bool               # True: the synthetic embedded default, not real faces
  prep_time_s: float           # sampling time (0 when loaded from the cache)
  cached: bool                 # loaded from the cache


# ------------------------------------------------------------------------------ which sets


def detection_sets() -> tuple[str, ...]:
  """Folder names a detection run can train on: declared by a reader with task "detection"
  that can give its faces the shared box rule."""
  out = []
  for name in formats.FORMATS:
    r = formats.reader(name)
    if "detection" in r.tasks and r.rule_boxes is not None:
      out.extend(r.folders)
  return tuple(out)


def _subset(recs: list, max_images: int, seed: int, stream: int) -> list:
  if not max_images or len(recs) <= max_images:
    return list(recs)
  keep = np.sort(np.random.default_rng([seed, 99, stream]).permutation(len(recs))[:max_images])
  return [recs[i] for i in keep]


def load_face_set(root: str, folder: str, box_scale: float,
                  box_shape: tuple = ()) -> list[records_lib.FaceRecord]:
  """The train split of a detection set, boxes by the shared rule at box_scale, then (when
  box_shape = (width, height, shift_y) is given) reshaped by geometry.reshape_boxes."""
  name = formats.format_of_folder(folder)
  r = formats.reader(name)
  if r.rule_boxes is None or "detection" not in r.tasks:
    raise ValueError(f"{folder} ({name}) is not a detection training set; known: "
                     f"{detection_sets()}")
  recs = list(formats.load(name, os.path.join(root, folder), split=r.splits.get("train"),
                           on_error="skip", box_scale=box_scale, **r.rule_boxes))
  if not box_shape:
    return recs
  if len(box_shape) != 3:
    raise ValueError(f"box_shape must be (width, height, shift_y), got {box_shape!r}")
  return [dataclasses.replace(x, boxes=geometry.reshape_boxes(x.boxes, *box_shape)
                              .astype(np.float32)) for x in recs]


def parse_set(entry: str) -> tuple[str, str, str | None]:
  """"FORMAT:PATH:SPLIT" -> (format, path, split or None); a ValueError says what is wrong."""
  parts = str(entry).split(":")
  if len(parts) != 3 or not parts[0] or not parts[1]:
    raise ValueError(f"{entry!r} is not FORMAT:PATH:SPLIT (e.g. wider_face:wider_face_subset:train)")
  if parts[0] not in formats.FORMATS:
    raise ValueError(f"{entry!r}: unknown format {parts[0]!r}; known: {formats.FORMATS.names()}")
  if "detection" not in formats.reader(parts[0]).tasks:
    raise ValueError(f"{entry!r}: {parts[0]} has no face boxes to train a detector on")
  return parts[0], parts[1], parts[2] or None


def _set_path(root: str, path: str) -> str:
  path = os.path.expanduser(path)
  return path if os.path.isabs(path) else os.path.join(root, path)


def load_native_set(root: str, entry: str) -> list[records_lib.FaceRecord]:
  """A "FORMAT:PATH:SPLIT" set with its own boxes."""
  name, path, split = parse_set(entry)
  return list(formats.load(name, _set_path(root, path), split=split, on_error="skip"))


def load_native_sets(root: str, entries, max_images: int = 0) -> list[records_lib.FaceRecord]:
  """The photos of several "FORMAT:PATH:SPLIT" sets in order, the first max_images of each
  (0: all): what mining and whole-scene training read."""
  out = []
  for entry in entries:
    found = load_native_set(root, entry)
    out += found[:max_images] if max_images else found
  return out


def load_train_records(root: str, d) -> dict[str, list[records_lib.FaceRecord]]:
  """{set name: records} of the face sets (d.train_sets by the shared box rule, then
  d.native_sets with their own boxes), each subsampled to d.max_images."""
  shape = tuple(d.get("rule_box_shape", ()))
  out = {folder: _subset(load_face_set(root, folder, d.box_scale, shape), d.max_images, d.seed, k)
         for k, folder in enumerate(d.train_sets)}
  for k, entry in enumerate(d.get("native_sets", ())):
    out[entry] = _subset(load_native_set(root, entry), d.max_images, d.seed, 100 + k)
  return out


def scene_paths(root: str) -> list[str]:
  folder = os.path.join(root, SCENES)
  paths = sorted(p for ext in ("jpg", "jpeg", "png") for p in glob.glob(os.path.join(folder,
                                                                                     f"*.{ext}")))
  if not paths:
    raise FileNotFoundError(f"no negative scenes (*.jpg, *.png) in {folder}")
  return paths


def load_val_records(root: str, d) -> list[records_lib.FaceRecord]:
  if d.get("val_set", ""):
    return _subset(load_native_set(root, d.val_set), d.val_max_images, d.seed, 50)
  name = formats.format_of_folder(VALIDATION)
  recs = list(formats.load(name, os.path.join(root, VALIDATION),
                           split=formats.reader(name).splits.get("val"), on_error="skip"))
  return _subset(recs, d.val_max_images, d.seed, 50)


def box_rule_agreement(cmu_records, box_scale: float) -> dict[str, float]:
  """IoU of the rule's box (from CMU+MIT's own eyes / nose / mouth centre) with its GT boxes."""
  full = [r for r in cmu_records if r.num_faces and r.landmark_mask is not None
          and r.landmark_mask.all()]
  if not full:
    return {}
  c4 = np.concatenate([r.landmarks for r in full]).astype(np.float64)[:, [0, 1, 2, 4]]
  gt = np.concatenate([r.boxes for r in full]).astype(np.float64)
  ious = lambda s: np.diag(geometry.pairwise_iou(  # noqa: E731
      geometry.caltech4_boxes(c4, s).astype(np.float64), gt))
  scales = np.round(np.arange(1.0, 1.81, 0.01), 2)
  means = [ious(s).mean() for s in scales]
  at1, at = ious(1.0), ious(box_scale)
  return {"faces": int(len(gt)), "iou_mean_scale1": float(at1.mean()),
          "iou_median_scale1": float(np.median(at1)), "box_scale": float(box_scale),
          "iou_mean": float(at.mean()), "iou_median": float(np.median(at)),
          "frac_iou_above_0.5": float((at > 0.5).mean()),
          "best_scale": float(scales[int(np.argmax(means))]), "best_iou_mean": float(max(means))}


# ------------------------------------------------------------------------------ real or embedded


def _announce_embedded(why: str) -> None:
  bar = "!" * 100
  print(f"\n{bar}\n!!! FACECRAFT: {why}: training on the EMBEDDED DEFAULT\n!!! (synthetic "
        "scenes with the one bundled sample face). This runs end to end but is NOT a face "
        "detector.\n!!! Point --config.data.root at the shared data (caltech_webfaces, "
        f"300w_train, nonface_scenes, cmu_mit_frontal).\n{bar}\n", file=sys.stderr, flush=True)
  logging.warning("training data: EMBEDDED DEFAULT (%s)", why)


def missing_data(root: str, d) -> list[str]:
  """The folders a real-data run needs that are not there (empty: all present)."""
  needed = [os.path.join(root, n) for n in (*d.train_sets, SCENES)]
  needed += [_set_path(root, parse_set(e)[1]) for e in d.get("native_sets", ())]
  val_set = d.get("val_set", "")
  needed.append(_set_path(root, parse_set(val_set)[1]) if val_set else
                os.path.join(root, VALIDATION))
  return [p for p in needed if not os.path.isdir(p)]


def has_real_data(root: str, d) -> bool:
  return not missing_data(root, d)


def resolve_source(d) -> tuple[str, bool]:
  """(root, embedded): the data root and whether the embedded default stands in for it."""
  root = os.path.expanduser(d.root)
  if d.source == "embedded":
    _announce_embedded("config.data.source='embedded'")
    return root, True
  missing = missing_data(root, d)
  if not missing:
    return root, False
  if d.source == "real":
    raise FileNotFoundError(f"config.data.root={d.root!r}: missing {missing} "
                            "(config.data.source='real')")
  _announce_embedded(f"no real data at {os.path.abspath(root)!r} (missing: {missing})")
  return root, True


def scenes(d) -> list:
  """The negative scenes of a run: image paths, or the embedded default's empty scenes."""
  root, embedded = resolve_source(d)
  if embedded:
    return synthetic.embedded_records(d.embedded_scenes, d.seed + 1, False)
  return scene_paths(root)


# ------------------------------------------------------------------------------ build / cache


def cache_key(d, root: str, embedded: bool) -> str:
  settings = {k: v for k, v in d.to_dict().items() if k not in NOT_IN_KEY}
  if not settings.get("rule_box_shape", True):
    del settings["rule_box_shape"]  # added later: runs without it keep their cached crops
  settings.update(version=CACHE_VERSION, embedded=embedded,
                  root="" if embedded else os.path.abspath(root))
  text = json.dumps(settings, sort_keys=True, default=list)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_atomic(crops: records_lib.CropSet, path: str) -> None:
  tmp = path[:-len(".npz")] + f".tmp{os.getpid()}.npz"
  crops.save(tmp)
  os.replace(tmp, path)


def _load_cached(paths: dict, summary_path: str, key: str, embedded: bool) -> CropData:
  t0 = time.perf_counter()
  train, val = (loader_lib.load_crops(paths[n]) for n in ("train", "val"))
  with open(summary_path) as f:
    counts = json.load(f)
  logging.info("training data: reusing %s (%d train, %d val crops) in %.1f s",
               os.path.dirname(summary_path), len(train), len(val), time.perf_counter() - t0)
  return CropData(train, val, counts, key, embedded, 0.0, True)


def _sources(root: str, d, embedded: bool) -> tuple[dict, list, list]:
  """(face sets, negative scenes, validation records)."""
  if embedded:
    return ({"embedded_faces": synthetic.embedded_records(d.embedded_images, d.seed, True,
                                                          d.box_scale)},
            synthetic.embedded_records(d.embedded_scenes, d.seed + 1, False),
            synthetic.embedded_records(d.embedded_val_images, d.seed + 2, True, d.box_scale))
  return load_train_records(root, d), scene_paths(root), load_val_records(root, d)


def build(d, cache_dir: str, progress: bool = True, prefix: str = "cascade") -> CropData:
  """Training and validation crops of data settings `d`, from the cache when it holds them,
  plus the CropSet files of d.extra_crops (e.g. experiments/mine_negatives.py's hard
  negatives), appended to the training crops after the cache (they are files of their own)."""
  data = _build(d, cache_dir, progress, prefix)
  extra = tuple(d.get("extra_crops", ()))
  if not extra:
    return data
  parts, counts = [data.train], dict(data.counts)
  for path in extra:
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.data.extra_crops: no crop file {path}")
    crops = records_lib.CropSet.load(path)
    if crops.images.shape[1:3] != data.train.images.shape[1:3]:
      raise ValueError(f"config.data.extra_crops: {path} holds {crops.images.shape[1:3]} crops, "
                       f"the run's are {data.train.images.shape[1:3]}")
    crops.source[:] = records_lib.MINED_SOURCE  # not records of this run's sets
    parts.append(crops)
    counts.setdefault("extra_crops", {})[path] = training_crops.label_counts(crops)
  train = records_lib.CropSet.concatenate(parts)
  counts["train"] = training_crops.label_counts(train)
  logging.info("training data: + %s", json.dumps(counts["extra_crops"]))
  return dataclasses.replace(data, train=train, counts=counts)


def _build(d, cache_dir: str, progress: bool, prefix: str) -> CropData:
  root, embedded = resolve_source(d)
  key = cache_key(d, root, embedded)
  os.makedirs(cache_dir, exist_ok=True)
  paths = {n: os.path.join(cache_dir, f"{prefix}-{key}-{n}.npz") for n in ("train", "val")}
  summary_path = os.path.join(cache_dir, f"{prefix}-{key}-summary.json")
  if all(os.path.exists(p) for p in [*paths.values(), summary_path]):
    return _load_cached(paths, summary_path, key, embedded)

  t0 = time.perf_counter()
  face_sets, scene_list, val_recs = _sources(root, d, embedded)
  train, counts = training_crops.sample_train(face_sets, scene_list, d, progress)
  val, counts["val"] = training_crops.sample_val(val_recs, d, progress)
  if not embedded:
    counts["box_rule_cmu_mit"] = box_rule_agreement(val_recs, d.box_scale)
  prep = time.perf_counter() - t0
  counts.update(key=key, embedded=embedded, prep_time_s=prep)
  if counts["train"]["positive"] == 0 or counts["train"]["negative"] == 0:
    raise ValueError(f"training data: no positives or no negatives ({counts['train']}); check "
                     "config.data (sizes, thresholds, root)")
  for name, crops in (("train", train), ("val", val)):
    _save_atomic(crops, paths[name])
  with open(summary_path + ".tmp", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
  os.replace(summary_path + ".tmp", summary_path)
  logging.info("training data: %s prepared in %.1f s, cached in %s: %s", key, prep, cache_dir,
               json.dumps(counts, sort_keys=True))
  return CropData(train, val, counts, key, embedded, prep, False)
