"""The one interface between `Detector` and a detection engine (a pyramid cascade, an anchor
detector, ...): plan a batch, run the jitted function, map the results back to the images.

Detector owns everything generic: decoding, grouping images by bucket, batching, asynchronous
dispatch, the compile cache (one entry per (bucket, batch, tier)), retries at larger capacity
tiers, progress and per-item errors. An engine owns the model and its static shapes:

  bucket(height, width)          -> a hashable static input shape for an image of that size
  merge_buckets(counts)          -> optional: {bucket: the bucket it runs in} for a whole run
  batch_size(batch)              -> the batch actually compiled (e.g. rounded up to a mesh)
  compile(bucket, batch, tier)   -> an XLA-compiled fn(params, *inputs) -> device outputs
  executable_key(bucket, batch, tier) -> optional: a key that lets Detector store and reload
                                    the compiled fn without tracing (facecraft.infer.executables)
  inputs(arrays, bucket, batch)  -> the numpy inputs of one batch (padding never read)
  outputs(host, count)           -> [(Detections, overflowed)] for the first `count` images;
                                    overflowed asks Detector to re-run that image at tier + 1
  params                         -> the argument of every compiled fn: new weights (a training
                                    run's evaluations) need no recompile

A new engine subclasses Engine, and its family registers a builder (bundle -> engine) in
facecraft.infer.registry.FAMILIES; Detector is not edited.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from facecraft.infer.detections import Detections


def padded_batch(arrays: Sequence[np.ndarray], bucket, batch: int, clear: bool = False):
  """(images uint8 [batch, *bucket, 3], sizes int32 [batch, 2]): each array at the top left of
  its slot, its (h, w) in sizes. clear=True zeroes the padding (for an engine whose networks
  see it); otherwise it is left unset."""
  images = (np.zeros if clear else np.empty)((batch, *bucket, 3), np.uint8)
  sizes = np.zeros((batch, 2), np.int32)
  for i, a in enumerate(arrays):
    images[i, :a.shape[0], :a.shape[1]] = a
    sizes[i] = a.shape[:2]
  return images, sizes


class Engine(abc.ABC):
  """A jitted, static-shape detection engine (see the module doc)."""

  name: str = "engine"
  has_landmarks: bool = False
  landmark_scheme: str | None = None
  num_points: int = 0
  max_tiers: int = 1
  params: Any = None

  @abc.abstractmethod
  def bucket(self, height: int, width: int) -> Hashable:
    """The static input shape an image of this size runs in."""

  def batch_size(self, batch: int) -> int:
    return batch

  @abc.abstractmethod
  def compile(self, bucket: Hashable, batch: int, tier: int) -> Callable:
    """fn(params, *inputs) compiled for this bucket, batch and capacity tier."""

  @abc.abstractmethod
  def inputs(self, arrays: Sequence[np.ndarray], bucket: Hashable, batch: int) -> tuple:
    """The numpy inputs of one batch of at most `batch` uint8 RGB images of this bucket."""

  @abc.abstractmethod
  def outputs(self, host: Any, count: int) -> list[tuple[Detections, bool]]:
    """(detections in image pixels, overflowed) of the first `count` images of a fetched batch."""

  def executable_key(self, bucket: Hashable, batch: int, tier: int) -> str | None:
    """A key that determines compile(bucket, batch, tier) completely (executables.make_key),
    so that Detector may load it from an ExecutableStore; None (default): always compile."""
    del bucket, batch, tier
    return None

  def merge_buckets(self, counts: dict[Hashable, int]) -> dict[Hashable, Hashable]:
    """The bucket each of a run's buckets (with its image count) runs in. Default: its own; an
    engine whose results do not depend on the bucket may merge rare ones into larger ones when
    padding them costs less than compiling them."""
    return {b: b for b in counts}

  def overflow_message(self, bucket: Hashable, tier: int) -> str:
    return f"candidates exceed the largest capacities of bucket {bucket} (tier {tier})"

  def empty(self, error: str | None = None) -> Detections:
    return Detections.empty(self.has_landmarks, error, self.num_points or 5,
                            self.landmark_scheme)
