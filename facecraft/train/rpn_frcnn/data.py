"""Training batches of the rpn_frcnn family: scene windows (data_pipelines.scene_crops) of the
photos of config.data.native_sets, decoded and cut in a thread pool, seeded and endless.

  it = scene_batches(config.data, batch_size, records)   # {"image" uint8 [B, S, S, 3], "boxes",
                                                        #  "valid", "ignore", "photo_box"}
A photo that cannot be decoded is skipped with a warning (once per photo), never fatal.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Iterator, Sequence

import numpy as np

from data_pipelines import images as images_lib
from data_pipelines import records as records_lib
from data_pipelines import scene_crops
from data_pipelines import training_sets

log = logging.getLogger(__name__)


def load_records(d) -> list[records_lib.FaceRecord]:
  """The photos of d.native_sets ("FORMAT:PATH:SPLIT", paths under d.root), d.max_images each."""
  out = training_sets.load_native_sets(d.root, d.native_sets, d.get("max_images") or 0)
  if not out:
    raise ValueError(f"config.data.native_sets {tuple(d.native_sets)} hold no photos")
  return out


def _sample(rec, seed: int, d) -> dict | None:
  rng = np.random.default_rng(seed)
  try:
    image = images_lib.decode(rec.image)
  except (images_lib.ImageDecodeError, OSError, ValueError) as e:
    log.warning("rpn_frcnn data: skipping %s (%s)", rec.image_id or rec.image, e)
    return None
  return scene_crops.scene_sample(rng, image, rec.boxes, d.size, tuple(d.face_sides),
                                  tuple(d.scale_range), d.min_face, d.max_faces, d.flip_prob,
                                  ignore=rec.ignore)


def scene_batches(d, batch_size: int, records: Sequence[records_lib.FaceRecord],
                  workers: int = 2) -> Iterator[dict]:
  """Endless batches; the k-th batch depends only on (d.seed, k), not on the thread timing."""
  rng = np.random.default_rng(d.seed)
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    while True:
      samples, tries = [], 0
      while len(samples) < batch_size:  # redraws replace photos that could not be read
        need = batch_size - len(samples)
        tries += need
        if tries > 20 * batch_size:  # nearly all photos broken: say so, not loop forever
          raise ValueError("rpn_frcnn data: too many photos could not be read")
        picks = rng.integers(len(records), size=need)
        seeds = rng.integers(2 ** 31, size=need)
        samples += [s for s in pool.map(lambda a: _sample(records[a[0]], int(a[1]), d),
                                        zip(picks, seeds)) if s is not None]
      yield {k: np.stack([s[k] for s in samples]) for k in samples[0]}
