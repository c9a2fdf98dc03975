"""The cascade's batches: its crop pools (data_pipelines.training_sets), box targets, flips.

  data = cascade.data.build(config, workdir)      # training_sets.CropData: train / val CropSets
  it = cascade.data.train_iterator(data.train, config.batch_size, seed, config.data)

What is cascade-specific lives here: 48x48 crops with R-CNN box targets (the regression
statistics are computed from them, mirrors included when flipping), the loader's flip and colour
augmentation, and the batch keys the cascade's step reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import augment
from data_pipelines import geometry
from data_pipelines import loader as loader_lib
from data_pipelines import records as records_lib
from data_pipelines import training_sets
from facecraft import cache

TRAIN_KEYS = ("image", "cls_target", "cls_mask", "box_target", "box_mask")
LANDMARK_KEYS = ("landmark_target", "landmark_mask", "landmark_point_mask")
BOX_LABELS = (records_lib.POSITIVE, records_lib.PART)


def build(config, workdir: str, progress: bool | None = None) -> training_sets.CropData:
  """The run's crops, cached in data.cache_dir under "cascade-<key>" (the key hashes every data
  setting and the data root). Default: facecraft.cache.crop_cache_dir() (~/.cache/facecraft/crops
  or $FACECRAFT_CACHE/crops), shared by every run, so that a new run with the same data settings
  loads the crops instead of spending minutes and gigabytes rebuilding them in its own folder."""
  del workdir  # The crops belong to their settings, not to a run.
  d = config.data
  progress = config.get("progress_bar", True) if progress is None else progress
  cache_dir = d.cache_dir or cache.crop_cache_dir()
  return training_sets.build(d, cache_dir, progress, prefix="cascade")


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
  """Loader augmentation of 48x48 crops: horizontal flip (the paper's), then, each optional:
  rotation up to +-rotation_deg with JPEG re-compression (jpeg_prob), boxes and landmarks moved
  with the pixels and positives / part faces relabelled by the IoU rule (pos_iou); colour
  jitter; low resolution (blur_prob: down-scaled to 0.25-0.75 and back); an occluding
  rectangle (occlusion_prob). With all of them off the random draws are the flip's and the
  colour's only, as before they existed (seeded runs reproduce)."""

  flip_prob: float = 0.5
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  grayscale_prob: float = 0.0
  rotation_deg: float = 0.0
  jpeg_prob: float = 0.0
  blur_prob: float = 0.0
  occlusion_prob: float = 0.0
  pos_iou: float = 0.65

  def _relabel(self, label: int, iou: float) -> int:
    # A rotated positive whose window no longer holds the face well trains the box only.
    return records_lib.POSITIVE if iou >= self.pos_iou else records_lib.PART

  def __call__(self, item: dict, rng: np.random.Generator) -> dict:
    if rng.random() < self.flip_prob:
      image, box, pts, mask = augment.hflip(item["image"], item["box"][None],
                                            item["landmarks"][None], "five",
                                            item["landmark_mask"][None])
      has_box = int(item["label"]) in BOX_LABELS  # negatives keep their all-zero box
      item = dict(item, image=image, box=box[0] if has_box else item["box"], landmarks=pts[0],
                  landmark_mask=mask[0])
    if self.rotation_deg or self.jpeg_prob:
      geo = augment.Augmenter(max_rotation_deg=self.rotation_deg, jpeg_prob=self.jpeg_prob)
      item = dict(item, **augment.augment_crop(item, geo, rng, self._relabel))
    if self.brightness or self.contrast or self.saturation or self.grayscale_prob:
      item = dict(item, image=augment.color_jitter(item["image"], rng, self.brightness,
                                                   self.contrast, self.saturation,
                                                   self.grayscale_prob))
    if self.blur_prob:
      factor = rng.uniform(0.25, 0.75)
      if rng.random() < self.blur_prob:
        item = dict(item, image=augment.low_resolution(item["image"], factor))
    if self.occlusion_prob:
      occluded = augment.occlude(item["image"], rng)
      if rng.random() < self.occlusion_prob:
        item = dict(item, image=occluded)
    return item


def crop_augment(d) -> CropAugment:
  """The loader augmentation of a run's data section."""
  return CropAugment(d.flip_prob, d.brightness, d.contrast, d.saturation, d.grayscale_prob,
                     d.get("rotation_deg", 0.0), d.get("jpeg_prob", 0.0),
                     d.get("blur_prob", 0.0), d.get("occlusion_prob", 0.0), d.pos_iou)


class BatchIterator:
  """Keeps only the batch keys the step uses; get_state / set_state pass through (resume).

  mined_first_branch k > 0 adds "first_branch" [B] int32: k for crops mined through a model
  (records.MINED_SOURCE), 0 for the rest; losses.joint_loss trains a crop on branches >= its
  first branch only.
  """

  def __init__(self, iterator, keys, mined_first_branch: int = 0):
    self._it, self._keys = iterator, tuple(keys)
    self._mined_first = int(mined_first_branch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    out = {k: batch[k] for k in self._keys}
    if self._mined_first:
      mined = np.asarray(batch["source"]) == records_lib.MINED_SOURCE
      out["first_branch"] = np.where(mined, self._mined_first, 0).astype(np.int32)
    return out

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)


def train_iterator(crops, batch_size: int, seed: int, d, landmarks: bool = False):
  """Shuffled, flipped, endlessly repeating batches (rcnn box targets) of a crop source.

  d.mined_first_branch (MTCNN's routing: P-Net never trains on the negatives mined through
  the cascade, R-Net and O-Net do): 1 keeps mined crops out of x12's loss, so the 6.6k-parameter
  first stage is not pushed to reject what only the later stages can tell from a face.
  """
  aug = crop_augment(d)
  ds = loader_lib.make_crop_loader(crops, batch_size, seed, augment=aug, encode="rcnn",
                                   worker_count=int(d.workers))
  first = int(d.get("mined_first_branch", 0))
  if not 0 <= first <= 2:
    raise ValueError(f"data.mined_first_branch must be 0, 1 or 2, got {first}")
  return BatchIterator(iter(ds), TRAIN_KEYS + (LANDMARK_KEYS if landmarks else ()), first)
