"""Grain crop loaders: targets, masks, determinism, checkpoint restore, sharding, caching."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from data_pipelines import loader
from data_pipelines import records
from data_pipelines import geometry

S = 12
KINDS = [records.POSITIVE, records.NEGATIVE, records.PART, records.LANDMARK]


def make_crops(m: int = 23, size: int = S, seed: int = 0) -> records.CropSet:
  rng = np.random.default_rng(seed)
  labels = np.array([KINDS[i % 4] for i in range(m)], np.int8)
  x1y1 = rng.uniform(-2, size / 2, (m, 2))
  boxes = np.concatenate([x1y1, x1y1 + rng.uniform(size / 3, size, (m, 2))], 1)
  boxes[labels == records.NEGATIVE] = 0
  points = rng.uniform(0, size, (m, 5, 2))
  mask = rng.uniform(size=(m, 5)) > 0.2
  mask[labels != records.LANDMARK] = False
  mask[3] = False  # A landmark crop without any point.
  return records.CropSet(images=rng.integers(0, 256, (m, size, size, 3)), labels=labels,
                         boxes=boxes, landmarks=points, landmark_mask=mask,
                         source=np.arange(m) + 100)


def jitter(item: dict, rng: np.random.Generator, amount: float = 1.0) -> dict:
  """A toy augmentation: noise on the pixels, a shift of the box; uses only `rng`."""
  item = dict(item)
  noise = rng.integers(-20, 21, item["image"].shape)
  item["image"] = np.clip(item["image"].astype(int) + noise, 0, 255).astype(np.uint8)
  item["box"] = item["box"] + np.float32(amount * rng.uniform(-1, 1))
  return item


def in_place_jitter(item: dict, rng: np.random.Generator) -> dict:
  item["image"][...] = rng.integers(0, 256, item["image"].shape)  # Writes into what it got.
  return item


def take(it, n: int) -> list[dict]:
  return [next(it) for _ in range(n)]


def assert_batches_equal(a: list[dict], b: list[dict]):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ----------------------------------------------------------------------------- targets


def test_encode_crop_hand_computed():
  item = {"image": np.zeros((S, S, 3), np.uint8), "label": records.POSITIVE,
          "box": np.array([2, 3, 10, 12], np.float32), "landmarks": np.full((5, 2), 6.0),
          "landmark_mask": np.ones(5, bool), "source": 7}
  item["image"][0, 0] = 255
  out = loader.encode_crop(item)
  # Corner offsets over the crop (0, 0, 12, 12): (2/12, 3/12, (10-12)/12, (12-12)/12).
  np.testing.assert_allclose(out["box_target"], [2 / 12, 3 / 12, -2 / 12, 0], rtol=1e-6)
  assert out["image"].dtype == np.float32
  assert out["image"][0, 0, 0] == pytest.approx(127.5 / 128)
  assert out["image"][1, 1, 0] == pytest.approx(-127.5 / 128)
  assert (out["label"], out["cls_target"], out["source"]) == (1, 1, 7)
  assert out["cls_mask"] and out["box_mask"] and not out["landmark_mask"]
  np.testing.assert_array_equal(out["landmark_target"], np.zeros(10))  # Positives: no points.
  rcnn = loader.encode_crop(item, encode="rcnn", normalize=None)
  # Centre (6, 7.5) vs (6, 6), size 8x9 vs 12x12.
  np.testing.assert_allclose(rcnn["box_target"], [0, 1.5 / 12, np.log(8 / 12), np.log(9 / 12)],
                             rtol=1e-6, atol=1e-7)
  assert rcnn["image"].dtype == np.uint8 and rcnn["image"][0, 0, 0] == 255


@pytest.mark.parametrize("encode", ["corners", "rcnn"])
def test_box_targets_decode_back_to_the_crop_box(encode):
  crops = make_crops()
  decode = geometry.decode_corners if encode == "corners" else geometry.decode_rcnn
  crop_box = np.array([0, 0, S, S], np.float64)
  for i in range(len(crops)):
    out = loader.encode_crop(crops[i], encode=encode)
    if out["box_mask"]:
      np.testing.assert_allclose(decode(crop_box, out["box_target"].astype(np.float64)),
                                 crops.boxes[i], atol=1e-4)
    else:
      np.testing.assert_array_equal(out["box_target"], 0)


def test_masks_and_landmark_targets_by_label():
  crops = make_crops()
  for i in range(len(crops)):
    out = loader.encode_crop(crops[i], landmark_layout="points")
    label = int(crops.labels[i])
    assert out["cls_mask"] == (label in (1, 0))
    assert out["box_mask"] == (label in (1, -1))
    assert out["cls_target"] == (label == 1)
    has_points = label == records.LANDMARK and crops.landmark_mask[i].any()
    assert out["landmark_mask"] == has_points
    if has_points:
      np.testing.assert_array_equal(out["landmark_point_mask"], crops.landmark_mask[i])
      used = crops.landmark_mask[i]
      np.testing.assert_allclose(out["landmark_target"][used], crops.landmarks[i][used] / S,
                                 rtol=1e-6)
      np.testing.assert_array_equal(out["landmark_target"][~used], 0)
    else:
      assert not out["landmark_point_mask"].any() and not out["landmark_target"].any()
  flat = loader.encode_crop(crops[2 + 4])  # A landmark crop: x1, y1, x2, y2, ...
  np.testing.assert_array_equal(flat["landmark_target"],
                                loader.encode_crop(crops[6], landmark_layout="points")[
                                    "landmark_target"].reshape(10))


# ----------------------------------------------------------------------------- loaders


def test_batches_have_the_documented_shapes_and_epochs_are_permutations():
  crops = make_crops()
  it = iter(loader.make_crop_loader(crops, batch_size=5, seed=3))
  batches = take(it, 9)  # 45 items: epoch 0 (23) and most of epoch 1, across batch edges.
  b = batches[0]
  assert b["image"].shape == (5, S, S, 3) and b["image"].dtype == np.float32
  assert b["box_target"].shape == (5, 4) and b["landmark_target"].shape == (5, 10)
  assert b["label"].dtype == np.int32 and b["cls_mask"].dtype == bool
  index = np.concatenate([x["index"] for x in batches])
  epoch = np.concatenate([x["epoch"] for x in batches])
  assert sorted(index[:23]) == list(range(23)) and (epoch[:23] == 0).all()
  assert (epoch[23:] == 1).all() and len(set(index[23:])) == 22
  assert list(index[:23]) != list(range(23)) and list(index[:22]) != list(index[23:])
  labels = np.concatenate([x["label"] for x in batches])
  np.testing.assert_array_equal(labels, crops.labels[index])
  np.testing.assert_array_equal(np.concatenate([x["source"] for x in batches]), index + 100)


def test_same_seed_same_batches_other_seed_other_order():
  crops = make_crops()
  make = functools.partial(loader.make_crop_loader, crops, batch_size=4, augment=jitter)
  assert_batches_equal(take(iter(make(seed=1)), 8), take(iter(make(seed=1)), 8))
  a, b = take(iter(make(seed=1)), 2), take(iter(make(seed=2)), 2)
  assert a[0]["index"].tolist() != b[0]["index"].tolist()


def test_augmentation_depends_only_on_seed_epoch_and_index():
  crops = make_crops()
  seen = {}
  for shuffle in (True, False):
    it = iter(loader.make_crop_loader(crops, batch_size=23, seed=5, shuffle=shuffle,
                                      augment=jitter))
    for batch in take(it, 2):
      for j in range(23):
        key = (int(batch["epoch"][j]), int(batch["index"][j]))
        if key in seen:  # The same crop in the same epoch, at another position.
          np.testing.assert_array_equal(seen[key], batch["image"][j])
        seen[key] = batch["image"][j]
  assert len(seen) == 46
  assert not np.array_equal(seen[(0, 4)], seen[(1, 4)])  # Fresh randomness each epoch.


def test_in_place_augmentation_leaves_the_source_alone():
  crops = make_crops()
  before = crops.images.copy()
  next(iter(loader.make_crop_loader(crops, batch_size=8, seed=0, augment=in_place_jitter)))
  np.testing.assert_array_equal(crops.images, before)


@pytest.mark.parametrize("stop_after", [3, 5, 7])  # 23 items, batch 5: epoch 1 starts in batch 4.
def test_restore_mid_epoch_gives_the_same_batches(stop_after):
  crops = make_crops()
  make = functools.partial(loader.make_crop_loader, crops, batch_size=5, seed=11, augment=jitter)
  reference = take(iter(make()), 12)
  it = iter(make())
  take(it, stop_after)
  blob = loader.save_state(it)
  assert isinstance(blob, bytes) and json.loads(blob)
  take(it, 2)  # The old iterator moves on; the saved state must not.
  resumed = iter(make())
  loader.restore_state(resumed, blob)
  assert_batches_equal(take(resumed, 12 - stop_after), reference[stop_after:])


def test_finite_epochs_and_remainder():
  crops = make_crops()
  full = list(loader.make_crop_loader(crops, batch_size=5, seed=0, num_epochs=2))
  assert len(full) == 46 // 5
  tail = list(loader.make_crop_loader(crops, batch_size=5, seed=0, num_epochs=1,
                                      drop_remainder=False))
  assert [len(b["label"]) for b in tail] == [5, 5, 5, 5, 3]
  assert sorted(np.concatenate([b["index"] for b in tail])) == list(range(23))


def test_shards_split_the_data_evenly_and_disjointly():
  crops = make_crops()
  got = []
  for index in range(3):
    ds = loader.make_crop_loader(crops, batch_size=7, seed=0, shuffle=False, num_epochs=1,
                                 shard=(index, 3))
    got.append(np.concatenate([b["index"] for b in ds]))
    assert loader.steps_per_epoch(len(crops), 7, (index, 3)) == 1
  assert [len(g) for g in got] == [7, 7, 7]  # 23 // 3 = 7 each; the last 2 are dropped.
  assert sorted(np.concatenate(got)) == list(range(21))
  with pytest.raises(ValueError, match="shard index"):
    loader.make_crop_loader(crops, batch_size=2, seed=0, shard=(3, 3))


def test_worker_processes_give_the_same_batches(tmp_path):
  crops = make_crops()
  # Workers get a pickled source: an ArrayRecord file reopened in each worker.
  on_disk = loader.load_crops(loader.save_crops(crops, str(tmp_path / "c.array_record")))
  make = functools.partial(loader.make_crop_loader, batch_size=5, seed=4, augment=jitter)
  it = iter(make(on_disk, worker_count=2))
  try:
    assert_batches_equal(take(it, 6), take(iter(make(crops)), 6))
  finally:
    it.close()


# ----------------------------------------------------------------------------- caching


@pytest.mark.parametrize("suffix", [".npz", ".array_record"])
def test_saved_crops_load_back_and_feed_the_same_batches(tmp_path, suffix):
  crops = make_crops()
  path = loader.save_crops(crops, str(tmp_path / ("crops" + suffix)))
  back = loader.load_crops(path)
  assert len(back) == len(crops)
  for i in (0, 6, 22):
    for key, value in crops[i].items():
      np.testing.assert_array_equal(back[i][key], value, err_msg=key)
  make = functools.partial(loader.make_crop_loader, batch_size=6, seed=9, augment=jitter)
  assert_batches_equal(take(iter(make(back)), 5), take(iter(make(crops)), 5))
  if suffix == ".array_record":
    as_set = back.to_cropset()
    np.testing.assert_array_equal(as_set.images, crops.images)
    np.testing.assert_array_equal(as_set.landmark_mask, crops.landmark_mask)
  with pytest.raises(FileNotFoundError):
    loader.load_crops(str(tmp_path / ("missing" + suffix)))
