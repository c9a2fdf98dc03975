"""data_pipelines.sampling on synthetic images with known faces, checked in float64 by hand."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from data_pipelines import records, sampling, sliding
from data_pipelines import images

MARKER_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]],
                          np.uint8)


def _iou(a, b) -> float:
  """Plain float64 IoU of two xyxy boxes, independent of data_pipelines.geometry."""
  a, b = [float(v) for v in a], [float(v) for v in b]
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _inter_area(a, b) -> float:
  return (max(0.0, min(a[2], b[2]) - max(a[0], b[0])) *
          max(0.0, min(a[3], b[3]) - max(a[1], b[1])))


def _area(b) -> float:
  return (b[2] - b[0]) * (b[3] - b[1])


def _scene(seed, hw, faces, ignore=None, marker_radius=0, ignore_regions=None):
  """Noise with a bright square per face and coloured markers at five landmark points."""
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 90, hw + (3,), dtype=np.uint8)
  faces = np.asarray(faces, np.float32).reshape(-1, 4)
  pts = []
  for x1, y1, x2, y2 in faces.astype(int):
    img[y1:y2, x1:x2] = 200
    w, h = x2 - x1, y2 - y1
    # Points on pixel centres: (x + 0.5, y + 0.5) lies inside pixel (x, y).
    p = np.array([[x1 + w // 3, y1 + h // 3], [x1 + 2 * w // 3, y1 + h // 3],
                  [x1 + w // 2, y1 + h // 2], [x1 + w // 3, y1 + 3 * h // 4],
                  [x1 + 2 * w // 3, y1 + 3 * h // 4]])
    for (px, py), colour in zip(p, MARKER_COLOURS):
      r = marker_radius
      img[py - r:py + r + 1, px - r:px + r + 1] = colour
    pts.append(p + 0.5)
  meta = {"image_size": hw}
  if ignore_regions is not None:
    meta["ignore_regions"] = ignore_regions
  rec = records.FaceRecord(
      image=images.encode_png(img), boxes=faces,
      landmarks=np.asarray(pts, np.float32).reshape(-1, 5, 2) if len(faces) else None,
      landmark_scheme="five" if len(faces) else None, ignore=ignore, image_id=f"scene{seed}",
      meta=meta)
  return img, rec


def _reproject(result, i, size):
  """Stored crop box mapped back to source pixels through the crop's window."""
  win = result.windows[i]
  scale = np.array([win[2] - win[0], win[3] - win[1]] * 2) / size
  return np.array([win[0], win[1], win[0], win[1]]) + result.crops.boxes[i] * scale


def _check_crop_boxes(result, rec, size):
  """Every matched crop stores exactly (1e-3 px) a labelled face; returns its index per crop."""
  faces = rec.boxes.astype(np.float64)
  matched = np.full(len(result.crops), -1)
  for i, label in enumerate(result.crops.labels):
    if label == records.NEGATIVE:
      assert not result.crops.boxes[i].any() and not result.crops.landmark_mask[i].any()
      continue
    err = np.abs(faces - _reproject(result, i, size)).max(1)
    j = int(err.argmin())
    assert err[j] < 1e-3, (i, err[j])
    assert not rec.ignore[j]
    matched[i] = j
  return matched


def _max_iou(window, boxes):
  return max([_iou(window, b) for b in boxes], default=0.0)


def test_crop_resize_exact_copy_and_zero_padding():
  img, _ = _scene(0, (40, 50), [])
  wins = np.array([[5, 7, 17, 19], [-3, -4, 9, 8], [44, 30, 56, 42]], np.float64)
  got = sampling.crop_resize(img, wins, 12)
  padded = np.zeros((60, 80, 3), np.uint8)
  padded[10:50, 10:60] = img
  for crop, (x, y, _, _) in zip(got, wins.astype(int)):
    np.testing.assert_array_equal(crop, padded[y + 10:y + 22, x + 10:x + 22])


@pytest.mark.parametrize("window", [(10.5, 3.0, 58.5, 51.0), (20.25, 10.0, 23.75, 13.5),
                                    (7.0, 0.0, 31.0, 24.0)])
def test_crop_resize_samples_where_the_window_says(window):
  # value = 2 * column index: an output pixel centre (i + 0.5) sits at source x = x1 + (i + 0.5)
  # * w / S, i.e. at column index x - 0.5; a window off by one pixel would be 2 levels away.
  ramp = np.tile((2 * np.arange(100)).astype(np.uint8)[None, :, None], (60, 1, 3))
  s = 12
  crop = sampling.crop_resize(ramp, np.array([window]), s)[0]
  want = 2 * (window[0] + (np.arange(s) + 0.5) * (window[2] - window[0]) / s - 0.5)
  np.testing.assert_allclose(crop[s // 2, :, 0], want, atol=0.6)
  col = sampling.crop_resize(ramp.transpose(1, 0, 2).copy(), np.array([window])[:, [1, 0, 3, 2]], s)
  np.testing.assert_allclose(col[0][:, s // 2, 0], want, atol=0.6)


def test_crop_resize_reads_no_zeros_inside_the_image():
  # Shrunk windows that touch the border: only pixels beyond the image may read as zero.
  flat = np.full((50, 60, 3), 200, np.uint8)
  crops = sampling.crop_resize(flat, np.array([[0, 0, 48, 48], [12.5, 2.0, 60.0, 49.5]]), 12)
  assert (crops == 200).all()
  half_out = sampling.crop_resize(flat, np.array([[-24.0, 0.0, 24.0, 48.0]]), 12)[0]
  assert (half_out[:, :5] == 0).all() and (half_out[:, 7:] == 200).all()


@pytest.mark.parametrize("jitter", ["mtcnn", "wide"])
def test_mtcnn_labels_boxes_and_negatives_agree_with_float64_iou(jitter):
  faces = [[20, 24, 60, 64], [90, 30, 122, 62], [40, 90, 70, 120]]
  _, rec = _scene(1, (140, 150), faces, ignore=[False, False, True],
                  ignore_regions=[[120, 100, 150, 140]])
  cfg = sampling.MtcnnConfig(negatives_per_image=60, face_tries=40, min_face_size=12)
  if jitter == "wide":  # reaches every IoU band; no ignore-overlap rule, so IoU alone decides
    cfg = sampling.MtcnnConfig(negatives_per_image=400, face_tries=200, min_face_size=12,
                               shift=0.5, side_range=(0.6, 1.6), ignore_overlap=1.0)
  res = sampling.sample_mtcnn([rec], 12, np.random.default_rng(0), cfg, progress=False)
  counts = res.stats
  assert min(counts["positive"], counts["part"], counts["negative"], counts["landmark"]) > 0
  assert counts["crops"] == len(res.crops) == len(res.windows)
  matched = _check_crop_boxes(res, rec, 12)
  labelled = [b for b, ig in zip(rec.boxes, rec.ignore) if not ig]
  regions = [rec.boxes[2], np.array([120, 100, 150, 140])]
  for i, label in enumerate(res.crops.labels):
    win = res.windows[i]
    if label == records.NEGATIVE:
      assert _max_iou(win, rec.boxes) < 0.3  # ignored faces count for negatives
      for reg in regions:
        inter = _inter_area(win, reg)
        assert (inter <= cfg.ignore_overlap * _area(win) + 1e-9 and
                inter <= cfg.ignore_overlap * _area(reg) + 1e-9)
      continue
    own = _iou(win, rec.boxes[matched[i]])
    if label == records.LANDMARK:
      assert own > 0.65
      pts = res.crops.landmarks[i]
      assert res.crops.landmark_mask[i].all() and ((pts >= 0) & (pts <= 12)).all()
    else:
      assert own == pytest.approx(_max_iou(win, labelled), abs=1e-12)  # the best face is stored
      assert (own > 0.65) if label == records.POSITIVE else (0.4 <= own <= 0.65)
  assert (res.crops.source == 0).all()


def test_landmark_faces_keep_every_point_inside_the_crop():
  img, rec = _scene(9, (100, 100), [[30, 30, 70, 70]])
  pts = rec.landmarks.copy()
  pts[0, 0] = [30.5, 30.5]  # a point in the face box's corner pixel: easily cut off by jitter
  rec = records.FaceRecord(image=rec.image, boxes=rec.boxes, landmarks=pts, landmark_scheme="five")
  cfg = sampling.MtcnnConfig(negatives_per_image=0, negatives_near_face=0, face_tries=0,
                             landmark_tries=200)
  res = sampling.sample_mtcnn([rec], 24, np.random.default_rng(0), cfg, progress=False)
  assert 0 < res.stats["landmark"] < 200
  got = res.crops.landmarks
  assert ((got >= 0) & (got <= 24)).all()
  # The stored points are the annotation mapped into the crop (1e-3 px back in the source).
  scale = (res.windows[:, 2:] - res.windows[:, :2])[:, None] / 24
  np.testing.assert_allclose(res.windows[:, None, :2] + got * scale,
                             np.broadcast_to(pts, got.shape), atol=1e-3)


@pytest.mark.parametrize("size,face,radius", [(24, 24, 0), (24, 96, 8)])
def test_landmarks_land_on_their_marker_pixels(size, face, radius):
  x0, y0 = 30, 26
  img, rec = _scene(2, (170, 170), [[x0, y0, x0 + face, y0 + face]], marker_radius=radius)
  # side_range (1, 1): every window is face-sized, so at face == size crops are exact copies.
  cfg = sampling.MtcnnConfig(negatives_per_image=0, negatives_near_face=0, face_tries=0,
                             landmark_tries=20, side_range=(1.0, 1.0))
  res = sampling.sample_mtcnn([rec], size, np.random.default_rng(3), cfg, progress=False)
  assert res.stats["landmark"] > 3
  for i in range(len(res.crops)):
    crop = res.crops.images[i]
    for pt, colour in zip(res.crops.landmarks[i], MARKER_COLOURS):
      px, py = np.floor(pt).astype(int)
      tol = 0 if face == size else 40
      np.testing.assert_allclose(crop[py, px].astype(int), colour, atol=tol)
    if face == size:
      x, y = res.windows[i, :2].astype(int)
      np.testing.assert_array_equal(crop, img[y:y + size, x:x + size])


def _sliding_records():
  recs = []
  for seed in range(4):
    # Faces on the stride-4 grid at level 0 (12 px) and level 5 (scale 1/2, 24 px).
    faces = [[8 + 4 * seed, 16, 20 + 4 * seed, 28], [48, 40, 72, 64]]
    recs.append(_scene(10 + seed, (96, 120), faces)[1])
  return recs


def test_sliding_labels_pixels_and_positive_ratio():
  recs = _sliding_records()
  for ratio in (0.05, 0.2):
    cfg = sliding.SlidingConfig(stride=4, positive_ratio=ratio, max_negatives_per_image=1000)
    res = sliding.sample_sliding(recs, 12, np.random.default_rng(0), cfg, progress=False)
    pos, neg = res.stats["positive"], res.stats["negative"]
    assert pos >= 8 and res.stats["part"] == res.stats["landmark"] == 0
    assert pos / (pos + neg) == pytest.approx(ratio, abs=0.01)
  for i, label in enumerate(res.crops.labels):
    rec = recs[res.crops.source[i]]
    win = res.windows[i]
    best = _max_iou(win, rec.boxes)
    assert best > 0.8 if label == records.POSITIVE else best < 0.5
    if win[2] - win[0] == 12:  # scale-1 level: the crop is an exact copy of the source pixels
      x, y = win[:2].astype(int)
      src = images.decode(rec.image)
      np.testing.assert_array_equal(res.crops.images[i], src[y:y + 12, x:x + 12])
  for i in np.flatnonzero(res.crops.labels == records.POSITIVE):
    err = np.abs(recs[res.crops.source[i]].boxes - _reproject(res, i, 12)).max(1).min()
    assert err < 1e-3


def test_pyramid_windows_map_to_integer_level_pixels():
  cfg = sliding.SlidingConfig(stride=8)
  wins, level, xy, shapes = sliding.pyramid_windows(100, 130, 12, cfg)
  assert shapes[0] == (100, 130) and shapes[5] == (50, 65)
  assert np.sum(level == 0) == ((130 - 12) // 8 + 1) * ((100 - 12) // 8 + 1)
  for k, (lh, lw) in enumerate(shapes):
    sel = level == k
    back = wins[sel] * np.array([lw / 130, lh / 100] * 2)
    np.testing.assert_allclose(back[:, :2], xy[sel], atol=1e-9)
    np.testing.assert_allclose(back[:, 2:] - back[:, :2], 12, atol=1e-9)
  # 100 * 2^(-15/5) = 12.5 -> 13 rows is the last level of at least 12; 2^(-16/5) gives 10.9.
  assert len(shapes) == 16 and shapes[-1] == (13, 16)


def test_ignored_faces_and_regions_never_touched_by_negatives():
  # The second face is ignored; at scale 1/2 it is a 12 px square on the stride-4 grid.
  faces = [[16, 16, 40, 40], [64, 24, 88, 48]]
  _, rec = _scene(4, (96, 120), faces, ignore=[False, True], ignore_regions=[[0, 60, 40, 96]])
  regions = [rec.boxes[1], np.array([0, 60, 40, 96])]
  cfg_s = sliding.SlidingConfig(stride=4, positive_ratio=None, ignore_overlap=0.0)
  cfg_m = sampling.MtcnnConfig(ignore_overlap=0.0, min_face_size=12)
  rng = np.random.default_rng(5)
  results = [sliding.sample_sliding([rec], 12, rng, cfg_s, progress=False),
             sampling.sample_mtcnn([rec], 12, rng, cfg_m, progress=False),
             sampling.sample_negatives_from_scenes([rec], 12, 200, rng, ignore_overlap=0.0,
                                                   progress=False)]
  assert results[0].stats["positive"] > 0 and results[1].stats["positive"] > 0
  for res in results:
    neg = res.windows[res.crops.labels == records.NEGATIVE]
    assert len(neg) > 20
    assert all(_inter_area(w, r) == 0 for w in neg for r in regions)
    # Positives and parts never come from the ignored face (it is a perfect 24 px square).
    for i in np.flatnonzero(res.crops.labels != records.NEGATIVE):
      assert np.abs(_reproject(res, i, 12) - rec.boxes[1]).max() > 1e-3


def test_negatives_only_from_scenes_when_asked():
  _, face_rec = _scene(6, (80, 80), [[20, 20, 50, 50]])
  _, scene = _scene(7, (80, 80), [])
  cfg = sampling.MtcnnConfig(negatives_from_face_images=False, min_face_size=12)
  res = sampling.sample_mtcnn([face_rec, scene], 12, np.random.default_rng(0), cfg,
                              progress=False)
  neg_sources = res.crops.source[res.crops.labels == records.NEGATIVE]
  assert len(neg_sources) == cfg.negatives_per_image and (neg_sources == 1).all()
  assert res.stats["positive"] > 0
  scfg = sliding.SlidingConfig(stride=4, negatives_from_face_images=0.0)
  res = sliding.sample_sliding(_sliding_records() + [scene], 12, np.random.default_rng(0), scfg,
                                progress=False)
  assert (res.crops.source[res.crops.labels == records.NEGATIVE] == 4).all()
  assert res.stats["negative"] > 0
  mined = sliding.mine_hard_negatives([face_rec, scene], 12, _brightness, 100, 0.0,
                                       np.random.default_rng(0), config=scfg, progress=False)
  assert mined.stats["negative"] > 0 and (mined.crops.source == 1).all()


def test_scene_negatives_spread_count_and_stay_inside(tmp_path):
  paths = []
  for k, hw in enumerate([(60, 80), (90, 50), (40, 40)]):
    img, _ = _scene(20 + k, hw, [])
    paths.append(tmp_path / f"s{k}.png")
    paths[-1].write_bytes(images.encode_png(img))
  res = sampling.sample_negatives_from_scenes(paths, 24, 31, np.random.default_rng(0),
                                              progress=False)
  assert res.stats["negative"] == 31 and sorted(np.bincount(res.crops.source)) == [10, 10, 11]
  for win, src in zip(res.windows, res.crops.source):
    h, w = [(60, 80), (90, 50), (40, 40)][src]
    side = win[2] - win[0]
    assert side == win[3] - win[1] and 24 <= side <= min(h, w)
    assert win[0] >= 0 and win[1] >= 0 and win[2] <= w and win[3] <= h


def _brightness(batch):
  assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[1:] == (12, 12, 3)
  return batch.astype(np.float64).mean((1, 2, 3)) / 255.0


def test_hard_negative_mining_with_a_brightness_scorer():
  recs = []
  for seed in range(3):
    img, rec = _scene(30 + seed, (72, 96), [[8, 8, 32, 32]])
    img[40:70, 50:90] = 230  # a bright lamp: face-like to the toy scorer, negative by IoU
    recs.append(records.FaceRecord(image=images.encode_png(img), boxes=rec.boxes,
                                   image_id=rec.image_id))
  cfg = sliding.SlidingConfig(stride=4)
  everything = sliding.mine_hard_negatives(recs, 12, _brightness, 10**6, 0.5,
                                            np.random.default_rng(0), config=cfg, progress=False)
  assert 0 < everything.stats["passed"] == len(everything.crops) < everything.stats["candidates"]
  np.testing.assert_allclose(_brightness(everything.crops.images), everything.scores, atol=1e-5)
  assert (everything.scores > 0.5).all() and (everything.crops.labels == records.NEGATIVE).all()
  for win, src in zip(everything.windows, everything.crops.source):
    assert _max_iou(win, recs[src].boxes) < 0.5
  hardest = sliding.mine_hard_negatives(recs, 12, _brightness, 25, 0.5, np.random.default_rng(0),
                                         config=cfg, batch_size=7, progress=False)
  np.testing.assert_allclose(hardest.scores, np.sort(everything.scores)[::-1][:25], atol=1e-6)
  rand = sliding.mine_hard_negatives(recs, 12, _brightness, 25, 0.5, np.random.default_rng(0),
                                      config=cfg, select="random", windows="random",
                                      progress=False)
  assert len(rand.crops) == 25 and (rand.scores > 0.5).all()
  for win, src in zip(rand.windows, rand.crops.source):
    assert _max_iou(win, recs[src].boxes) < 0.5


def test_same_seed_same_crops_and_bad_images_are_skipped(caplog):
  recs = _sliding_records()[:2]
  bad = records.FaceRecord(image=b"not an image", boxes=[[1, 1, 9, 9]], image_id="broken/001")
  recs.insert(1, bad)
  runs = {}
  for name, fn in [
      ("mtcnn", lambda rng: sampling.sample_mtcnn(recs, 12, rng, progress=False)),
      ("sliding", lambda rng: sliding.sample_sliding(recs, 12, rng, progress=False)),
      ("scenes", lambda rng: sampling.sample_negatives_from_scenes(recs, 12, 40, rng,
                                                                   progress=False)),
      ("mining", lambda rng: sliding.mine_hard_negatives(
          recs, 12, _brightness, 30, 0.2, rng, select="random", progress=False))]:
    with caplog.at_level(logging.WARNING):
      a, b, c = (fn(np.random.default_rng(s)) for s in (7, 7, 8))
    assert "broken/001" in caplog.text and a.stats["skipped"] == 1 and a.skipped == ["broken/001"]
    assert a.stats["images"] == 2 and 1 not in set(a.crops.source)
    for field in ("images", "labels", "boxes", "landmarks", "landmark_mask", "source"):
      np.testing.assert_array_equal(getattr(a.crops, field), getattr(b.crops, field))
    np.testing.assert_array_equal(a.windows, b.windows)
    assert a.stats == b.stats
    runs[name] = (a, c)
  for name in ("mtcnn", "scenes", "mining"):
    a, c = runs[name]
    assert len(a.windows) != len(c.windows) or not np.array_equal(a.windows, c.windows), name


def test_empty_inputs_and_bad_arguments():
  res = sampling.sample_mtcnn([], 24, np.random.default_rng(0), progress=False)
  assert res.crops.images.shape == (0, 24, 24, 3) and res.stats["crops"] == 0
  with pytest.raises(ValueError):
    sliding.sample_sliding([], 0, np.random.default_rng(0))
  with pytest.raises(ValueError):
    sampling.sample_mtcnn([], 12, np.random.default_rng(0),
                          sampling.MtcnnConfig(negatives_from_face_images=1.5))
  _, rec = _scene(40, (40, 40), [])
  with pytest.raises(ValueError, match="scorer returned"):
    sliding.mine_hard_negatives([rec], 12, lambda b: np.zeros(3), 5, 0.0,
                                 np.random.default_rng(0), progress=False)


def test_moved_sliding_names_still_resolve_from_sampling():
  assert sampling.sample_sliding is sliding.sample_sliding
  assert sampling.SlidingConfig is sliding.SlidingConfig
  with pytest.raises(AttributeError):
    sampling.no_such_sampler  # pylint: disable=pointless-statement
