"""Training data of the cascade: the shared box rule (geometry), crops by label and the
cache (data_pipelines.training_sets, training_crops), flips and batches (train.cascade.data)."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import augment
from data_pipelines import records
from data_pipelines import sampling
from data_pipelines import sliding
from data_pipelines.formats import caltech_webfaces
from data_pipelines import geometry
from data_pipelines import synthetic
from data_pipelines import training_crops
from data_pipelines import training_sets
from experiments.configs import joint_cascade
from facecraft.train.cascade import data as cascade_data


def small_config(**data):
  config = joint_cascade.sections()
  config.progress_bar = False
  d = config.data
  d.source, d.embedded_images, d.embedded_val_images, d.embedded_scenes = "embedded", 12, 4, 4
  d.face_tries, d.val_negatives, d.max_negatives, d.positive_ratio = 8, 60, 300, 0.2
  for key, value in data.items():
    d[key] = value
  return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("data")
  config = small_config()
  return config, workdir, cascade_data.build(config, str(workdir))


def _ibug68_with(le, re, mouth) -> np.ndarray:
  """68 points whose eye rings average to le / re and whose 20 mouth points average to mouth."""
  pts = np.zeros((68, 2))
  ring = np.array([[-2, 0], [-1, -1], [1, -1], [2, 0], [1, 1], [-1, 1]], np.float64)
  pts[36:42], pts[42:48] = le + ring, re + ring
  lips = np.stack([np.cos(np.arange(20) * np.pi / 10), np.sin(np.arange(20) * np.pi / 10)], 1)
  pts[48:68] = mouth + 5 * lips
  pts[33] = (le + re) / 2 + (0, 12)
  return pts


def test_300w_boxes_follow_the_caltech_rule_by_hand():
  pts = _ibug68_with(np.array([10.0, 10.0]), np.array([30.0, 10.0]), np.array([20.0, 30.0]))
  c4 = geometry.caltech4_from_ibug68(pts[None])[0]
  np.testing.assert_allclose(c4, [[10, 10], [30, 10], [20, 22], [20, 30]], atol=1e-12)
  # iod = 20, eyes-mouth = 20: centre (20, 10 + 0.6 * 20) = (20, 22), side max(2.2 * 20, 2 * 20).
  np.testing.assert_allclose(geometry.ibug68_boxes(pts[None], 1.0)[0], [-2, 0, 42, 44],
                             atol=1e-5)
  np.testing.assert_allclose(geometry.ibug68_boxes(pts[None], 1.5)[0], [-13, -11, 53, 55],
                             atol=1e-5)
  np.testing.assert_array_equal(geometry.ibug68_boxes(pts[None], 1.3),
                                caltech_webfaces.boxes_from_points(c4[None], 1.3))
  # A face with no left-eye point: the square around its annotated points (here the unset
  # points at 0 reach (0, 0); the mouth circle reaches y = 35, the right eye x = 32).
  mask = np.ones((1, 68), bool)
  mask[0, 36:42] = False
  np.testing.assert_allclose(geometry.ibug68_boxes(pts[None], 1.0, mask)[0],
                             [-1.5, 0, 33.5, 35], atol=1e-5)


def _cmu_record(points6, box):
  return records.FaceRecord("x.jpg", [box], landmarks=[points6], landmark_scheme="cmu6")


def test_box_rule_agreement_recovers_the_scale_of_the_ground_truth():
  pts = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [20, 30], [28, 30]], np.float64)
  rule = caltech_webfaces.boxes_from_points(pts[None, [0, 1, 2, 4]], 1.4)[0]
  stats = training_sets.box_rule_agreement([_cmu_record(pts, rule)], box_scale=1.4)
  assert stats["faces"] == 1 and stats["best_scale"] == pytest.approx(1.4)
  assert stats["iou_mean"] == pytest.approx(1.0, abs=1e-6)
  assert stats["iou_mean_scale1"] == pytest.approx(1 / 1.4**2, abs=1e-5)  # nested squares


def test_real_cmu_boxes_are_about_1_4_times_the_rule(shared_data):
  recs = training_sets.load_val_records(str(shared_data), small_config().data)
  stats = training_sets.box_rule_agreement(recs, box_scale=1.4)
  assert stats["faces"] == 511
  assert 0.45 < stats["iou_mean_scale1"] < 0.52 and stats["iou_mean"] > 0.8
  assert 1.35 <= stats["best_scale"] <= 1.45


def test_crops_by_label_and_negatives_only_from_scenes(built):
  config, _, data = built
  train, counts = data.train, data.counts
  assert data.embedded and not data.cached and counts["train"]["total"] == len(train)
  window = np.array([[0, 0, 48, 48]], np.float32)
  iou = geometry.pairwise_iou(train.boxes, window)[:, 0]
  pos, part, neg = (train.labels == v for v in (records.POSITIVE, records.PART, records.NEGATIVE))
  assert pos.sum() > 0 and part.sum() > 0 and neg.sum() > 0
  assert (iou[pos] > 0.8).all() and (iou[part] >= 0.4 - 1e-6).all() and (iou[part] <= 0.8).all()
  assert (train.boxes[neg] == 0).all()
  # Negatives: all from the scenes (their source ids follow the face records').
  faces = counts["embedded_faces"]["images"]
  assert (train.source[neg] >= faces).all() and (train.source[~neg] < faces).all()
  assert counts["nonface_scenes"]["negatives"] == neg.sum()
  # ceil(pos * (1 - r) / r) negatives, r = 0.2, under max_negatives.
  assert neg.sum() == min(300, int(np.ceil(pos.sum() * 4 - 1e-9)))
  assert part.sum() <= pos.sum()  # part_ratio 1
  assert data.val.labels.size and (data.val.labels == records.POSITIVE).any()


def test_negatives_from_face_images_keep_clear_of_labelled_faces():
  config = small_config(negatives_from_face_images=0.5, face_clearance=2.0)
  faces = synthetic.embedded_records(6, 0, True)
  scenes = synthetic.embedded_records(2, 1, False)
  train, counts = training_crops.sample_train({"embedded_faces": faces}, scenes, config.data, False)
  assert counts["face_image_negatives"] > 0
  clear = training_crops.clear_of_faces(faces, 2.0)
  grown = geometry.scale_boxes(faces[0].boxes.astype(np.float64), 2.0)
  np.testing.assert_allclose(clear[0].meta["ignore_regions"], grown)
  assert sampling.negative_ok(grown, clear[0], 0.5, 0.05).sum() == 0  # the face region itself


def test_face_image_negatives_come_only_from_sets_with_their_own_boxes(monkeypatch):
  # Rule-box sets (Caltech, 300-W) leave faces unlabelled; with a native set beside them, only
  # the native set's pictures give negatives.
  config = small_config(negatives_from_face_images=0.5, face_clearance=2.0,
                        native_sets=("wider_face:native:train",))
  rule = synthetic.embedded_records(4, 0, True)
  native = synthetic.embedded_records(4, 7, True)
  scenes = synthetic.embedded_records(2, 1, False)
  seen = []
  real = training_crops.clear_of_faces

  def spy(recs, clearance):
    seen.append(list(recs))
    return real(recs, clearance)

  monkeypatch.setattr(training_crops, "clear_of_faces", spy)
  training_crops.sample_train({"caltech_webfaces": rule, "wider_face:native:train": native},
                              scenes, config.data, False)
  assert [r.image_id for r in seen[0]] == [r.image_id for r in native]


def test_missing_data_names_absolute_and_relative_sets(tmp_path):
  root = tmp_path / "data"
  for name in ("caltech_webfaces", "nonface_scenes", "wider_face_subset"):
    (root / name).mkdir(parents=True)
  extra = tmp_path / "extra"
  extra.mkdir()
  config = small_config(train_sets=("caltech_webfaces",),
                        native_sets=("wider_face:wider_face_subset:train",
                                     f"wider_face:{extra}:val"),
                        val_set="wider_face:wider_face_subset:val")
  assert training_sets.missing_data(str(root), config.data) == []
  config.data.native_sets = ("wider_face:absent:train",)
  assert training_sets.missing_data(str(root), config.data) == [str(root / "absent")]
  config.data.source = "real"
  with pytest.raises(FileNotFoundError, match="absent"):
    training_sets.resolve_source(config.data)


def test_rule_box_shape_reshapes_rule_boxes_and_keys_the_cache(shared_data):
  plain = training_sets.load_face_set(str(shared_data), "300w_train", 1.0)[:5]
  wider = training_sets.load_face_set(str(shared_data), "300w_train", 1.0,
                                      (0.965, 1.265, -0.155))[:5]
  for a, b in zip(plain, wider):
    np.testing.assert_allclose(b.boxes, geometry.reshape_boxes(a.boxes, 0.965, 1.265, -0.155),
                               rtol=1e-6, atol=1e-4)
  base = training_sets.cache_key(small_config().data, "r", True)
  assert training_sets.cache_key(small_config(rule_box_shape=()).data, "r", True) == base
  assert training_sets.cache_key(small_config(rule_box_shape=(1, 1.2, 0)).data, "r", True) != base


def test_cache_is_reused_and_keyed_by_the_data_settings(built, monkeypatch):
  config, workdir, first = built

  def boom(*a, **k):
    raise AssertionError("resampled although the cache holds these crops")

  monkeypatch.setattr(sampling, "sample_mtcnn", boom)
  monkeypatch.setattr(sliding, "sample_sliding", boom)
  again = cascade_data.build(config, str(workdir))
  assert again.cached and again.key == first.key
  np.testing.assert_array_equal(again.train.images, first.train.images)
  np.testing.assert_array_equal(again.val.labels, first.val.labels)
  flip_only = small_config(flip_prob=0.0, workers=1)  # loader settings: same crops
  assert training_sets.cache_key(flip_only.data, "r", True) == first.key
  assert training_sets.cache_key(small_config(seed=1).data, "r", True) != first.key
  assert training_sets.cache_key(small_config(box_scale=1.2).data, "r", True) != first.key


def test_flip_moves_box_landmarks_and_keeps_negatives_zero():
  image = np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3)
  pts = np.array([[14, 20], [30, 21], [25, 28], [16, 36], [31, 37]], np.float32)
  item = {"image": image, "label": np.int8(records.POSITIVE),
          "box": np.array([10, 12, 40, 44], np.float32), "landmarks": pts,
          "landmark_mask": np.ones(5, bool), "source": np.int32(0)}
  flip = cascade_data.CropAugment(flip_prob=1.0)
  out = flip(dict(item), np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], image[:, ::-1])
  np.testing.assert_allclose(out["box"], [8, 12, 38, 44])
  # x -> 48 - x, then left eye <-> right eye and left <-> right mouth corner.
  np.testing.assert_allclose(out["landmarks"], [[18, 21], [34, 20], [23, 28], [17, 37], [32, 36]])
  neg = dict(item, label=np.int8(records.NEGATIVE), box=np.zeros(4, np.float32))
  np.testing.assert_array_equal(flip(neg, np.random.default_rng(0))["box"], np.zeros(4))
  same = cascade_data.CropAugment(flip_prob=0.0)(dict(item), np.random.default_rng(0))
  np.testing.assert_array_equal(same["image"], image)


def _face_item():
  image = np.random.default_rng(3).integers(0, 256, (48, 48, 3)).astype(np.uint8)
  pts = np.array([[14, 20], [30, 21], [25, 28], [16, 36], [31, 37]], np.float32)
  return {"image": image, "label": np.int8(records.POSITIVE),
          "box": np.array([10, 12, 38, 40], np.float32), "landmarks": pts,
          "landmark_mask": np.ones(5, bool), "source": np.int32(0)}


def test_rotation_turns_box_and_points_with_the_pixels_and_relabels():
  item = _face_item()
  rotate = cascade_data.CropAugment(flip_prob=0.0, rotation_deg=30.0, pos_iou=0.65)
  for seed in range(20):
    out = rotate(dict(item), np.random.default_rng(seed))
    # Rotation about the crop centre (24, 24) keeps distances to it: the points' distances.
    d0 = np.linalg.norm(item["landmarks"] - 24, axis=1)
    np.testing.assert_allclose(np.linalg.norm(out["landmarks"] - 24, axis=1), d0, atol=1e-3)
    iou = geometry.pairwise_iou(np.array([[0, 0, 48, 48]], np.float32), out["box"][None])[0, 0]
    want = records.POSITIVE if iou >= 0.65 else records.PART
    assert int(out["label"]) == want
  neg = dict(item, label=np.int8(records.NEGATIVE), box=np.zeros(4, np.float32))
  assert not rotate(neg, np.random.default_rng(0))["box"].any()


def test_blur_and_occlusion_change_pixels_not_targets():
  item = _face_item()
  out = cascade_data.CropAugment(flip_prob=0.0, blur_prob=1.0, occlusion_prob=1.0)(
      dict(item), np.random.default_rng(1))
  np.testing.assert_array_equal(out["box"], item["box"])
  np.testing.assert_array_equal(out["landmarks"], item["landmarks"])
  assert int(out["label"]) == records.POSITIVE
  # The occluder is one flat rectangle of at least (0.2 * 48)^2 pixels.
  _, counts = np.unique(out["image"].reshape(-1, 3), axis=0, return_counts=True)
  assert counts.max() >= int(0.2 * 48) ** 2
  blurred = augment.low_resolution(item["image"], 0.25)
  assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < \
      np.abs(np.diff(item["image"].astype(float), axis=1)).mean() / 2


def test_new_augmentations_off_draw_the_same_numbers_as_before():
  # Seeded runs written before these options existed must reproduce: the flip's draw, then the
  # colour jitter's, and nothing else (the code of that time, written out).
  item = _face_item()
  for seed in range(4):
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    a = cascade_data.CropAugment(flip_prob=0.5, brightness=0.2, contrast=0.2)(dict(item), rng_a)
    image = item["image"][:, ::-1] if rng_b.random() < 0.5 else item["image"]
    image = augment.color_jitter(image, rng_b, 0.2, 0.2, 0.0, 0.0)
    np.testing.assert_array_equal(a["image"], image)
    assert rng_a.random() == rng_b.random()


def test_box_targets_include_mirrors():
  crops = records.CropSet(np.zeros((2, 48, 48, 3)), [records.POSITIVE, records.NEGATIVE],
                          [[10, 12, 40, 44], [0, 0, 0, 0]], np.zeros((2, 5, 2)),
                          np.zeros((2, 5), bool), [0, 0])
  t = cascade_data.box_targets(crops, with_flips=True)
  # Box centre x 25 vs the window's 24: dx = 1 / 48; the mirror's centre 23: -1 / 48.
  np.testing.assert_allclose(t[:, 0], [1 / 48, -1 / 48], atol=1e-12)
  np.testing.assert_allclose(t[:, 2], [np.log(30 / 48)] * 2, atol=1e-12)
  assert cascade_data.box_targets(crops, with_flips=False).shape == (1, 4)


def test_batches_have_the_step_keys_and_resume_exactly(built):
  config, _, data = built
  it = cascade_data.train_iterator(data.train, 8, 0, config.data)
  first = next(it)
  assert set(first) == set(cascade_data.TRAIN_KEYS)
  assert first["image"].shape == (8, 48, 48, 3) and first["box_target"].shape == (8, 4)
  state = it.get_state()
  expected = next(it)
  fresh = cascade_data.train_iterator(data.train, 8, 0, config.data)
  fresh.set_state(state)
  got = next(fresh)
  for key in cascade_data.TRAIN_KEYS:
    np.testing.assert_array_equal(got[key], expected[key])


def test_mined_crops_get_their_first_branch(built):
  config, _, data = built
  mined = training_crops.take(data.train, np.flatnonzero(data.train.labels == records.NEGATIVE)[:6])
  d = config.data.copy_and_resolve_references()
  d.mined_first_branch = 1
  both = records.CropSet.concatenate([data.train, mined])
  both.source[len(data.train):] = records.MINED_SOURCE
  it = cascade_data.train_iterator(both, len(both), 0, d)
  batch = next(it)
  assert set(batch) == set(cascade_data.TRAIN_KEYS) | {"first_branch"}
  assert (batch["first_branch"] == 1).sum() == 6 and set(np.unique(batch["first_branch"])) <= {0, 1}
  with pytest.raises(ValueError, match="mined_first_branch"):
    d.mined_first_branch = 3
    cascade_data.train_iterator(both, 8, 0, d)


def test_mine_false_positives_keeps_the_best_scored_detections_clear_of_faces():
  image = np.random.default_rng(0).integers(0, 256, (120, 160, 3)).astype(np.uint8)
  rec = records.FaceRecord(image=image, boxes=np.array([[10, 10, 50, 60]], np.float32),
                           ignore=np.zeros(1, bool), image_id="p")
  found = np.array([[12, 12, 50, 58],      # the face: not a negative
                    [100, 20, 140, 60],    # clear: score 0.9
                    [60, 70, 80, 90],      # clear: score 0.5
                    [90, 80, 110, 100]],   # clear but under min_score
                   np.float32)
  scores = np.array([0.99, 0.9, 0.5, 0.1])
  crops, stats = training_crops.mine_false_positives([rec], lambda im: (found, scores), 48,
                                                     count=5, min_score=0.2, progress=False)
  assert stats["detections"] == 4 and stats["false_positives"] == 2 and stats["kept"] == 2
  assert (crops.labels == records.NEGATIVE).all() and not crops.boxes.any()
  # Highest score first; each crop is the squared detection cut the sampler's way.
  want = sampling.crop_resize(image, geometry.square_boxes(found[[1, 2]].astype(np.float64)), 48)
  np.testing.assert_array_equal(crops.images, want)
  top, _ = training_crops.mine_false_positives([rec], lambda im: (found, scores), 48, count=1,
                                               min_score=0.2, progress=False)
  np.testing.assert_array_equal(top.images, want[:1])


def test_mining_skips_an_unreadable_picture_and_names_it(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not a jpeg")
  image = np.zeros((60, 80, 3), np.uint8)
  recs = [records.FaceRecord(image=str(bad), boxes=np.zeros((0, 4), np.float32), image_id="bad"),
          records.FaceRecord(image=str(tmp_path / "missing.jpg"), boxes=np.zeros((0, 4), np.float32),
                             image_id="gone"),
          records.FaceRecord(image=image, boxes=np.zeros((0, 4), np.float32), image_id="ok")]
  found = np.array([[10, 10, 40, 40]], np.float32)
  crops, stats = training_crops.mine_false_positives(recs, lambda im: (found, np.ones(1)), 24,
                                                     count=5, progress=False)
  assert stats["pictures"] == 1 and stats["skipped"] == 2 and len(crops) == 1
  assert stats["skipped_images"] == ["bad", "gone"]
  assert crops.source.tolist() == [2]


def test_extra_crops_join_the_training_crops_after_the_cache(tmp_path):
  config = small_config()
  base = cascade_data.build(config, str(tmp_path / "cache"))
  extra = training_crops.take(base.train, np.flatnonzero(base.train.labels == records.NEGATIVE)[:7])
  extra.save(str(tmp_path / "mined.npz"))
  config.data.extra_crops = (str(tmp_path / "mined.npz"),)
  both = cascade_data.build(config, str(tmp_path / "cache"))
  assert both.cached and both.key == base.key  # the cache holds the run's own crops only
  assert len(both.train) == len(base.train) + 7
  np.testing.assert_array_equal(both.train.images[-7:], extra.images)
  assert (both.train.source[-7:] == records.MINED_SOURCE).all()
  assert both.counts["extra_crops"][str(tmp_path / "mined.npz")]["negative"] == 7
  config.data.extra_crops = (str(tmp_path / "absent.npz"),)
  with pytest.raises(FileNotFoundError, match="absent.npz"):
    cascade_data.build(config, str(tmp_path / "cache"))
