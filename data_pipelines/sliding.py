"""FaceCraft's sliding-window training crops (paper §4.2) and hard-negative mining through any
scorer, on data_pipelines.sampling's crop cutting and bookkeeping (its docstring states the
window geometry, pixels and seeding that hold here too).

  res = sliding.sample_sliding(records, 48, rng, sliding.SlidingConfig(pos_iou=0.8))
  res = sliding.mine_hard_negatives(scenes, 48, scorer, count, threshold, rng)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np
from PIL import Image

from data_pipelines import records as records_lib
from data_pipelines.sampling import (NEGATIVE, POSITIVE, SampleResult, Scorer, _Collector,
                                     _as_records, _fraction, _random_squares, _stochastic_round,
                                     best_match, crop_resize, negative_ok)


@dataclasses.dataclass
class SlidingConfig:
  """FaceCraft's sliding windows (§4.2): an S x S window every `stride` level pixels on a pyramid
  of scales max_scale * 2^(-k / interval) down to min_scale; positive if max IoU with a
  non-ignored face > pos_iou, negative if max IoU with every face (ignored too) < neg_iou.
  Negatives are subsampled so that positives make `positive_ratio` of the crops (running totals
  over the images, at most `max_negatives_per_image` each); None keeps the per-image cap only."""

  stride: int = 8
  interval: int = 5
  min_scale: float = 1.0 / 32
  max_scale: float = 1.0
  pos_iou: float = 0.8
  neg_iou: float = 0.5
  positive_ratio: float | None = 0.05
  max_negatives_per_image: int = 200
  max_positives_per_image: int | None = None
  ignore_overlap: float = 0.05
  negatives_from_face_images: float = 1.0



# ------------------------------------------------------------------------- the FaceCraft rule


def pyramid_windows(height: int, width: int, size: int, cfg: SlidingConfig):
  """Every sliding window of the pyramid, vectorised per level.

  Returns (windows float64 [N, 4] in source pixels, level int [N], level_xy int [N, 2] top-left
  corner in level pixels, level_shapes [(h, w)]). A level has integer size floor(h * s + 0.5) x
  floor(w * s + 0.5), so its true scales are w_l / w and h_l / h; windows use those exact factors.
  """
  count = int(np.floor(cfg.interval * np.log2(cfg.max_scale / cfg.min_scale) + 1e-9)) + 1
  wins, levels, xys, shapes = [], [], [], []
  for k in range(count):
    s = cfg.max_scale * 2.0 ** (-k / cfg.interval)
    lh, lw = int(np.floor(height * s + 0.5)), int(np.floor(width * s + 0.5))
    if lh < size or lw < size:
      break
    ys, xs = np.meshgrid(np.arange(0, lh - size + 1, cfg.stride),
                         np.arange(0, lw - size + 1, cfg.stride), indexing="ij")
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    scale = np.array([lw / width, lh / height])
    wins.append(np.concatenate([xy / scale, (xy + size) / scale], 1))
    levels.append(np.full(len(xy), len(shapes)))
    xys.append(xy)
    shapes.append((lh, lw))
  if not wins:
    return np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 2), int), shapes
  return np.concatenate(wins), np.concatenate(levels), np.concatenate(xys), shapes


def _pyramid_crops(image: np.ndarray, shapes, level: np.ndarray, xy: np.ndarray,
                   size: int) -> np.ndarray:
  """S x S slices of the pyramid levels (each level made by antialiased bilinear resizing)."""
  out = np.zeros((len(level), size, size, 3), np.uint8)
  span = np.arange(size)
  for k in np.unique(level):
    lh, lw = shapes[k]
    img = image if (lh, lw) == image.shape[:2] else np.asarray(
        Image.fromarray(image).resize((lw, lh), Image.BILINEAR))
    sel = np.flatnonzero(level == k)
    rows, cols = xy[sel, 1, None] + span, xy[sel, 0, None] + span
    out[sel] = img[rows[:, :, None], cols[:, None, :]]
  return out


def sample_sliding(records: Iterable[records_lib.FaceRecord], size: int, rng: np.random.Generator,
                   config: SlidingConfig | None = None, *, progress: bool = True) -> SampleResult:
  """FaceCraft's sliding-window crops: positives (never from ignored faces) and negatives."""
  cfg = config or SlidingConfig()
  frac = _fraction(cfg.negatives_from_face_images)
  if cfg.positive_ratio is not None and not 0 < cfg.positive_ratio < 1:
    raise ValueError(f"positive_ratio must be in (0, 1), got {cfg.positive_ratio}")
  out = _Collector(size)
  recs = _as_records(records)
  n_pos = n_neg = 0
  for index, record, image, r in out.images_of(recs, rng, progress, f"sliding windows {size}"):
    wins, level, xy, shapes = pyramid_windows(image.shape[0], image.shape[1], size, cfg)
    iou, match = best_match(wins, record)
    pos = np.flatnonzero(iou > cfg.pos_iou)
    cap = cfg.max_positives_per_image
    if cap is not None and len(pos) > cap:
      pos = np.sort(r.choice(pos, cap, replace=False))
    n_pos += len(pos)
    quota = cfg.max_negatives_per_image
    if cfg.positive_ratio is not None:  # running totals keep the whole set near the ratio
      want = int(np.ceil(n_pos * (1 - cfg.positive_ratio) / cfg.positive_ratio - 1e-9))
      quota = min(quota, max(0, want - n_neg))
    if record.num_faces:
      quota = _stochastic_round(r, quota * frac)
    neg = np.flatnonzero(negative_ok(wins, record, cfg.neg_iou, cfg.ignore_overlap))
    neg = np.sort(r.choice(neg, min(quota, len(neg)), replace=False))
    n_neg += len(neg)
    pick = np.concatenate([pos, neg])
    labels = np.concatenate([np.full(len(pos), POSITIVE), np.full(len(neg), NEGATIVE)])
    matched = np.concatenate([match[pos], np.full(len(neg), -1)])
    crops = _pyramid_crops(image, shapes, level[pick], xy[pick], size)
    out.add(image, record, index, wins[pick], labels, matched, crops=crops)
  return out.result()



# ---------------------------------------------------------------------- hard-negative mining


def _score(scorer: Scorer, crops: np.ndarray, batch_size: int) -> np.ndarray:
  scores = []
  for start in range(0, len(crops), batch_size):
    batch = crops[start:start + batch_size]
    s = np.asarray(scorer(batch), np.float64)
    if s.size != len(batch):
      raise ValueError(f"scorer returned shape {s.shape} for a batch of {len(batch)}")
    scores.append(s.reshape(-1))
  return np.concatenate(scores) if scores else np.zeros(0)


def mine_hard_negatives(sources: Iterable[Any], size: int, scorer: Scorer, count: int,
                        threshold: float, rng: np.random.Generator, *, windows: str = "sliding",
                        config: SlidingConfig | None = None, random_per_image: int = 500,
                        max_candidates_per_image: int = 4000, select: str = "hardest",
                        batch_size: int = 256, progress: bool = True) -> SampleResult:
  """Negatives that `scorer` (any callable: uint8 [B, S, S, 3] -> scores [B]) scores above
  `threshold`, e.g. windows that pass the earlier stages of a greedily trained cascade.

  Candidates are the sliding windows of `config` (or `random_per_image` log-uniform squares with
  windows="random") that are negatives by `config.neg_iou` / `config.ignore_overlap`, at most
  `max_candidates_per_image` per image. Of those above the threshold, keeps `count`: the highest
  scores first (select="hardest") or a uniform random subset in random order (select="random").
  """
  if windows not in ("sliding", "random") or select not in ("hardest", "random"):
    raise ValueError(f"windows must be 'sliding'/'random', select 'hardest'/'random'; got "
                     f"{windows!r}, {select!r}")
  cfg = config or SlidingConfig()
  frac = _fraction(cfg.negatives_from_face_images)
  out = _Collector(size)
  out.extra = {"candidates": 0, "passed": 0}
  recs = _as_records(sources)
  pending = 0
  for index, record, image, r in out.images_of(recs, rng, progress, f"mining {size}"):
    h, w = image.shape[:2]
    if windows == "sliding":
      wins, level, xy, shapes = pyramid_windows(h, w, size, cfg)
    elif min(h, w) >= size:
      wins = _random_squares(r, random_per_image, size, min(h, w), h, w, log=True)
    else:
      continue
    ok = negative_ok(wins, record, cfg.neg_iou, cfg.ignore_overlap)
    if record.num_faces and frac < 1:
      ok &= r.random(len(wins)) < frac
    cand = np.flatnonzero(ok)
    if len(cand) > max_candidates_per_image:
      cand = np.sort(r.choice(cand, max_candidates_per_image, replace=False))
    crops = (_pyramid_crops(image, shapes, level[cand], xy[cand], size) if windows == "sliding"
             else crop_resize(image, wins[cand], size))
    scores = _score(scorer, crops, batch_size)
    passed = np.flatnonzero(scores > threshold)
    keys = -scores[passed] if select == "hardest" else r.random(len(passed))
    out.extra["candidates"] += len(cand)
    out.extra["passed"] += len(passed)
    out.add(image, record, index, wins[cand[passed]], NEGATIVE, crops=crops[passed],
            scores=scores[passed], keys=keys)
    pending += len(passed)
    if pending > 2 * count:  # amortised pruning keeps memory near `count` crops
      pending = out.keep_smallest_keys(count)
  out.keep_smallest_keys(count)
  return out.result(with_scores=True)
