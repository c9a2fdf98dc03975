"""Static pyramid plans and input-size buckets for the jitted cascade.

MTCNN's pyramid depends only on min_face_size and factor: scale_k = m * factor**k with
m = cell / min_face_size, and level k is used for an image while min(h, w) * scale_k >= cell.
`pyramid_scales` is that loop, with the same float64 operations in the same order as
facenet-pytorch (so the level count and the resized sizes int(h * s + 1) agree exactly).

Inside jit every shape is static, so a plan is made for a *bucket* (Hb, Wb): every level gets a
canvas sized for the bucket, and each image of the batch uses the top-left int(h*s+1) x
int(w*s+1) part of it (`level_sizes`, computed here in Python, 0 for levels it does not have).

Buckets (`BucketLadder`): H and W are each rounded up to the next rung of a ladder (256, 512,
768, 1024, 1536, 2048), then multiples of 512 (a bucket of its own size, rounded up). Chosen by
measurement (issue #13; 1 CPU core, MTCNN, batch 8): a bucket compiles in 10-30 s, while a
picture costs about 0.5 us per padded pixel (256x256: 31 ms, 512x512: 125 ms, 1024x1024: 256 ms).
On real folders the coarse ladder trades padding for compiles: CMU+MIT (130 photos) 15 buckets
instead of 42 with the finer FINE_RUNGS (padded/real area 1.59 vs 1.27), Caltech WebFaces (400
photos <= 480 px) 4 instead of 33 (1.78 vs 1.22), WIDER val (222 photos, 1024 px wide) 5 instead
of 8 (1.15 vs 1.11). Measured end to end (experiments/results/bench_folders_cpu_1core.md): 300
Caltech photos in 98 s cold (4 compiles, 74 s) where 100 took 12 min 39 s with the fine ladder
and input-order batches (issue #13). Results do not depend on the bucket. Pass
`buckets=BucketLadder(FINE_RUNGS)` for less padding when a folder is large and its compiles
cached, or `buckets=[(H, W), ...]` for a fixed set (e.g. one size for a video stream).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Sequence

import numpy as np


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float,
                   cell: int = 12) -> list[float]:
  """The scales MTCNN uses for an image (facenet-pytorch's loop, float for float)."""
  m = float(cell) / min_face_size
  minl = min(height, width) * m
  scale, scales = m, []
  while minl >= cell:
    scales.append(scale)
    scale = scale * factor
    minl = minl * factor
  return scales


def scaled_size(n: int, scale: float) -> int:
  """Side of a pyramid level: int(n * scale + 1), as the original code resizes."""
  return int(n * scale + 1)


@dataclasses.dataclass(frozen=True)
class PyramidPlan:
  """Static pyramid for one bucket.

  scales: the level scales (python floats, facenet's sequence).
  canvases: (H_k, W_k) canvas of each level, sized for the bucket.
  """

  bucket_hw: tuple[int, int]
  min_face_size: float
  factor: float
  cell: int
  scales: tuple[float, ...]
  canvases: tuple[tuple[int, int], ...]

  @property
  def num_levels(self) -> int:
    return len(self.scales)

  def level_sizes(self, sizes: np.ndarray) -> np.ndarray:
    """[B, 2] (h, w) -> int32 [B, L, 2]: each image's level sizes, (0, 0) for levels it lacks."""
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    out = np.zeros((len(sizes), self.num_levels, 2), np.int32)
    for b, (h, w) in enumerate(sizes):
      if h > self.bucket_hw[0] or w > self.bucket_hw[1]:
        raise ValueError(f"image {h}x{w} does not fit the bucket {self.bucket_hw}")
      if h < 1 or w < 1:
        continue
      used = len(pyramid_scales(int(h), int(w), self.min_face_size, self.factor, self.cell))
      for k in range(used):
        out[b, k] = (scaled_size(int(h), self.scales[k]), scaled_size(int(w), self.scales[k]))
    return out


def make_plan(bucket_hw: Sequence[int], min_face_size: float, factor: float,
              cell: int = 12) -> PyramidPlan:
  """The plan for a bucket; its levels cover every image that fits the bucket."""
  hb, wb = int(bucket_hw[0]), int(bucket_hw[1])
  if min_face_size <= 0 or not 0 < factor < 1:
    raise ValueError(f"need min_face_size > 0 and 0 < factor < 1, got {min_face_size}, {factor}")
  scales = tuple(pyramid_scales(hb, wb, min_face_size, factor, cell))
  canvases = tuple((scaled_size(hb, s), scaled_size(wb, s)) for s in scales)
  return PyramidPlan((hb, wb), float(min_face_size), float(factor), cell, scales, canvases)


DEFAULT_RUNGS = (256, 512, 768, 1024, 1536, 2048)
# The ladder before issue #13: less padding, three times as many compiles on a real folder.
FINE_RUNGS = (64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048)


@dataclasses.dataclass(frozen=True)
class BucketLadder:
  """Rounds each side up to the next rung; beyond the last rung, to a multiple of `beyond`."""

  rungs: tuple[int, ...] = DEFAULT_RUNGS
  beyond: int = 512

  def side(self, n: int) -> int:
    if n < 1:
      raise ValueError(f"image side must be >= 1, got {n}")
    i = bisect.bisect_left(self.rungs, n)
    if i < len(self.rungs):
      return self.rungs[i]
    return int(math.ceil(n / self.beyond) * self.beyond)

  def __call__(self, height: int, width: int) -> tuple[int, int]:
    return self.side(int(height)), self.side(int(width))


@dataclasses.dataclass(frozen=True)
class FixedBuckets:
  """A user-given list of (H, W) buckets: the smallest-area one that holds the image.

  Images that fit none get a bucket of their own size rounded up by `fallback`.
  """

  buckets: tuple[tuple[int, int], ...]
  fallback: BucketLadder = BucketLadder()

  def __call__(self, height: int, width: int) -> tuple[int, int]:
    fits = [b for b in self.buckets if b[0] >= height and b[1] >= width]
    if fits:
      return min(fits, key=lambda b: (b[0] * b[1], b))
    return self.fallback(height, width)


def bucket_policy(buckets) -> BucketLadder | FixedBuckets:
  """None -> the default ladder; a list of (H, W) -> FixedBuckets; a policy -> itself."""
  if buckets is None:
    return BucketLadder()
  if callable(buckets):
    return buckets
  pairs = tuple((int(h), int(w)) for h, w in buckets)
  if not pairs or any(h < 1 or w < 1 for h, w in pairs):
    raise ValueError(f"buckets must be a non-empty list of positive (H, W), got {buckets!r}")
  return FixedBuckets(pairs)


def pack_shelves(shapes: Sequence[tuple[int, int]], gap: int
                 ) -> tuple[list[tuple[int, int]], tuple[int, int]]:
  """Packs rectangles (h, w) into one canvas, `gap` apart (first-fit decreasing-height shelves).

  Used to lay every pyramid level's stage-1 map out in one mosaic so that per-level suppression
  runs once for all levels. Returns each rectangle's (y, x) and the canvas (H, W).
  """
  if not shapes:
    return [], (0, 0)
  widths = sorted((w for _, w in shapes), reverse=True)
  strip = widths[0] + (gap + widths[1] if len(widths) > 1 else 0)
  order = sorted(range(len(shapes)), key=lambda i: (-shapes[i][0], i))
  shelves: list[list[int]] = []  # [y, height, used width]
  where: dict[int, tuple[int, int]] = {}
  for i in order:
    h, w = shapes[i]
    for shelf in shelves:
      if shelf[2] + gap + w <= strip and h <= shelf[1]:
        where[i] = (shelf[0], shelf[2] + gap)
        shelf[2] += gap + w
        break
    else:
      y = shelves[-1][0] + shelves[-1][1] + gap if shelves else 0
      shelves.append([y, h, w])
      where[i] = (y, 0)
  height = shelves[-1][0] + shelves[-1][1]
  width = max(x + shapes[i][1] for i, (_, x) in where.items())
  return [where[i] for i in range(len(shapes))], (height, width)
