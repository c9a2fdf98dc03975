"""Grain loaders: deterministic, checkpointable numpy batches of training crops.

  loader = make_crop_loader(crops, batch_size=64, seed=0, augment=my_augment)
  it = iter(loader)
  batch = next(it)                       # dict of numpy arrays, see encode_crop
  blob = save_state(it)                  # bytes (JSON); store it next to the model checkpoint
  it = iter(make_crop_loader(crops, batch_size=64, seed=0, augment=my_augment))
  restore_state(it, blob)                # the next batches are exactly those that would follow

Determinism: the order is grain's index shuffle, different per epoch, fixed by (seed, epoch);
each crop's augmentation uses np.random.default_rng([seed, epoch, index]) where index is the
crop's index in the source, so a crop is augmented the same way whatever the worker count, the
shard layout or where the run was restarted. Batches run across epoch boundaries (the stream is
one long repeat), so every batch is full unless num_epochs ends it.

grain is imported inside the functions: importing it loads jax when jax is installed (grain's
tree utilities prefer jax.tree_util), and this module must import without jax.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_pipelines import records
from data_pipelines import geometry

Augment = Callable[[dict, np.random.Generator], dict]
DEFAULT_NORMALIZE = (127.5, 128.0)  # (x - 127.5) / 128, MTCNN's input scaling.
ENCODINGS = ("corners", "rcnn")
LANDMARK_LAYOUTS = ("flat", "points")


# ------------------------------------------------------------------------- one example


def encode_crop(item: Mapping[str, Any], encode: str = "corners",
                normalize: tuple[float, float] | None = DEFAULT_NORMALIZE,
                landmark_layout: str = "flat",
                landmark_labels: Sequence[int] = (records.LANDMARK,)) -> dict[str, np.ndarray]:
  """Training targets of one crop (a CropSet item), relative to the crop box (0, 0, S, S).

  Returns:
    image: float32 [S, S, 3] (x - mean) / scale, or the uint8 crop when normalize is None.
    label: int32 sample kind (POSITIVE 1, NEGATIVE 0, PART -1, LANDMARK -2).
    cls_target: int32, 1 for positives, 0 otherwise.
    box_target: float32 [4], geometry.encode_corners / encode_rcnn of the face box against the
      crop box; zeros where box_mask is False.
    landmark_target: float32 [10] (x1, y1, x2, y2, ...) or [5, 2]: points / S; zeros where
      the point is not used.
    cls_mask (positives and negatives), box_mask (positives and parts), landmark_mask (kinds in
    landmark_labels with at least one point): bool; landmark_point_mask: bool [5].
    source: int32, the record the crop came from.
  """
  if encode not in ENCODINGS:
    raise ValueError(f"encode must be one of {ENCODINGS}, got {encode!r}")
  if landmark_layout not in LANDMARK_LAYOUTS:
    raise ValueError(f"landmark_layout must be one of {LANDMARK_LAYOUTS}, got {landmark_layout!r}")
  image = np.asarray(item["image"])
  size = image.shape[0]
  if image.shape != (size, size, 3):
    raise ValueError(f"crop image must be [S, S, 3], got {image.shape}")
  label = int(item["label"])
  cls_mask = label in (records.POSITIVE, records.NEGATIVE)
  box_mask = label in (records.POSITIVE, records.PART)
  box_target = np.zeros(4, np.float32)
  if box_mask:
    crop_box = np.array([0, 0, size, size], np.float64)
    box = np.asarray(item["box"], np.float64)
    fn = geometry.encode_corners if encode == "corners" else geometry.encode_rcnn
    box_target = fn(crop_box, box).astype(np.float32)
  point_mask = np.asarray(item["landmark_mask"], bool).reshape(5)
  landmark_mask = label in tuple(landmark_labels) and bool(point_mask.any())
  point_mask = point_mask & landmark_mask
  points = np.asarray(item["landmarks"], np.float64).reshape(5, 2) / size
  points = np.where(point_mask[:, None], points, 0).astype(np.float32)
  if normalize is None:
    image = image.astype(np.uint8)
  else:
    image = (image.astype(np.float32) - np.float32(normalize[0])) / np.float32(normalize[1])
  return {
      "image": image, "label": np.int32(label), "cls_target": np.int32(label == records.POSITIVE),
      "box_target": box_target,
      "landmark_target": points.reshape(10) if landmark_layout == "flat" else points,
      "cls_mask": np.bool_(cls_mask), "box_mask": np.bool_(box_mask),
      "landmark_mask": np.bool_(landmark_mask), "landmark_point_mask": point_mask,
      "source": np.int32(item["source"]),
  }


class _IndexedSource:
  """A random-access source whose items also carry their own index (it seeds augmentation)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    # Copies: an augmentation that works in place must not change the source.
    item = {k: np.array(v) for k, v in self._source[int(index)].items()}
    item["index"] = int(index)
    return item


@dataclasses.dataclass(frozen=True)
class _CropTransform:
  """Augments and encodes one crop; a module-level class so that grain workers can pickle it."""

  seed: int
  epoch_length: int
  augment: Augment | None
  encode_kw: dict

  def __call__(self, position: int, item: dict) -> dict:
    epoch = position // self.epoch_length
    index = item.pop("index")
    if self.augment is not None:
      rng = np.random.default_rng([self.seed, epoch, index])
      item = self.augment(item, rng)
    out = encode_crop(item, **self.encode_kw)
    out["index"], out["epoch"] = np.int64(index), np.int32(epoch)
    return out


# ------------------------------------------------------------------------- loaders


def shard_indices(num_items: int, shard: tuple[int, int] | None, drop_remainder: bool
                  ) -> tuple[int, int, int]:
  """(start, stop, step) of this shard: items start, start + step, ... below stop.

  With drop_remainder every shard gets exactly num_items // count items, so hosts stay in step.
  """
  index, count = shard or (0, 1)
  if not 0 <= index < count:
    raise ValueError(f"shard index {index} not in [0, {count})")
  stop = (num_items // count) * count if drop_remainder else num_items
  return index, stop, count


def make_crop_loader(crops, batch_size: int, seed: int, shuffle: bool = True,
                     num_epochs: int | None = None, augment: Augment | None = None,
                     encode: str = "corners", worker_count: int = 0,
                     shard: tuple[int, int] | None = None, drop_remainder: bool = True,
                     normalize: tuple[float, float] | None = DEFAULT_NORMALIZE,
                     landmark_layout: str = "flat",
                     landmark_labels: Sequence[int] = (records.LANDMARK,),
                     read_threads: int = 2, prefetch: int = 8):
  """A grain IterDataset of crop batches (see encode_crop for the fields, plus index, epoch).

  Args:
    crops: a records.CropSet or any random-access source (len + getitem) of CropSet-style dicts
      (image, label, box, landmarks, landmark_mask, source), e.g. ArrayRecordCrops.
    batch_size: examples per batch.
    seed: 0 <= seed < 2**32; fixes order and augmentation.
    shuffle: shuffle the order (differently each epoch).
    num_epochs: None repeats forever.
    augment: callable (crop dict, np.random.Generator) -> crop dict, applied before encoding.
    encode: "corners" (MTCNN) or "rcnn" box targets.
    worker_count: grain worker processes (0: threads in this process). The output does not
      depend on it. Workers need the source and augment to pickle.
    shard: (process index, process count) for multi-host runs, e.g.
      (jax.process_index(), jax.process_count()) in the training script.
    drop_remainder: drop the last partial batch (num_epochs set) and give every shard the same
      number of items.
    normalize: (mean, scale) or None for uint8 images.
    landmark_layout: "flat" [10] or "points" [5, 2].
    landmark_labels: sample kinds whose points are trained.
    read_threads, prefetch: grain ReadOptions of the in-process reader.
  """
  import grain  # pylint: disable=g-import-not-at-top  # Pulls in jax when installed: see above.

  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  start, stop, step = shard_indices(len(crops), shard, drop_remainder)
  ds = grain.MapDataset.source(_IndexedSource(crops))[start:stop:step]
  if len(ds) == 0:
    raise ValueError(f"no crops in shard {shard} of a source of {len(crops)}")
  epoch_length = len(ds)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  encode_kw = dict(encode=encode, normalize=normalize, landmark_layout=landmark_layout,
                   landmark_labels=tuple(landmark_labels))
  encode_crop(crops[0], **encode_kw)  # Bad options or items fail here, not in a worker.
  ds = ds.map_with_index(_CropTransform(seed, epoch_length, augment, encode_kw))
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                               prefetch_buffer_size=prefetch))
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags; libraries never parse argv.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it_ds


def steps_per_epoch(num_items: int, batch_size: int, shard: tuple[int, int] | None = None,
                    drop_remainder: bool = True) -> int:
  """Full batches one shard sees per epoch (batches straddle epochs when repeating forever)."""
  start, stop, step = shard_indices(num_items, shard, drop_remainder)
  return len(range(start, stop, step)) // batch_size


def save_state(iterator) -> bytes:
  """The iterator's position as JSON bytes (grain's get_state())."""
  return json.dumps(iterator.get_state(), sort_keys=True).encode("utf-8")


def restore_state(iterator, state: bytes | str | Mapping) -> None:
  """Moves a fresh iterator of an identically configured loader to a saved position."""
  if isinstance(state, (bytes, str)):
    state = json.loads(state)
  iterator.set_state(dict(state))


# ------------------------------------------------------------------------- caching to disk


def save_crops(crops: records.CropSet, path: str) -> str:
  """Saves crops to `path` (.npz, or .array_record for sets too big to load at once)."""
  path = os.fspath(path)
  if path.endswith(".array_record"):
    write_crops_array_record(crops, path)
    return path
  if not path.endswith(".npz"):
    path += ".npz"
  crops.save(path)
  return path


def load_crops(path: str):
  """A CropSet (.npz) or a lazy ArrayRecordCrops (.array_record); both feed make_crop_loader."""
  path = os.fspath(path)
  if path.endswith(".array_record"):
    return ArrayRecordCrops(path)
  if not os.path.exists(path) and os.path.exists(path + ".npz"):
    path += ".npz"
  if not os.path.exists(path):
    raise FileNotFoundError(f"no crop file {path}")
  return records.CropSet.load(path)


def _crop_dtype(size: int) -> np.dtype:
  # One packed record per crop; the size leads so that a reader can build the dtype from it.
  return np.dtype([("size", "<i4"), ("label", "i1"), ("source", "<i4"), ("box", "<f4", (4,)),
                   ("landmarks", "<f4", (5, 2)), ("landmark_mask", "?", (5,)),
                   ("image", "u1", (size, size, 3))])


def write_crops_array_record(crops: records.CropSet, path: str) -> None:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  dtype = _crop_dtype(crops.size)
  writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
  try:
    for i in range(len(crops)):
      row = np.zeros((), dtype)
      row["size"], row["label"], row["source"] = crops.size, crops.labels[i], crops.source[i]
      row["box"], row["landmarks"] = crops.boxes[i], crops.landmarks[i]
      row["landmark_mask"], row["image"] = crops.landmark_mask[i], crops.images[i]
      writer.write(row.tobytes())
  finally:
    writer.close()


class ArrayRecordCrops:
  """Random access to crops written by write_crops_array_record (CropSet-style dicts)."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    if not os.path.exists(self.path):
      raise FileNotFoundError(f"no crop file {self.path}")
    self._reader = None
    self._len = self._open().num_records()

  def _open(self):
    if self._reader is None:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      self._reader = array_record_module.ArrayRecordReader(self.path)
    return self._reader

  def __getstate__(self):  # The native reader does not pickle; workers reopen the file.
    return {"path": self.path, "_len": self._len, "_reader": None}

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -self._len <= index < self._len:
      raise IndexError(f"crop {index} out of range for {self._len} crops")
    data = self._open().read([index % self._len])[0]
    size = int(np.frombuffer(data[:4], "<i4")[0])
    row = np.frombuffer(data, _crop_dtype(size))[0]
    # Copies: frombuffer views are read-only and augmentations may work in place.
    return {"image": np.array(row["image"]), "label": np.int8(row["label"]),
            "box": np.array(row["box"]), "landmarks": np.array(row["landmarks"]),
            "landmark_mask": np.array(row["landmark_mask"]), "source": np.int32(row["source"])}

  def to_cropset(self) -> records.CropSet:
    items = [self[i] for i in range(len(self))]
    return records.CropSet(
        images=np.stack([x["image"] for x in items]), labels=[x["label"] for x in items],
        boxes=[x["box"] for x in items], landmarks=[x["landmarks"] for x in items],
        landmark_mask=[x["landmark_mask"] for x in items], source=[x["source"] for x in items])
