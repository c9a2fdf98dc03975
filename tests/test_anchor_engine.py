"""facecraft.infer.anchor: the rpn_frcnn family through Detector (random weights: the engine's
mechanics, not accuracy): shapes, clipping, ordering, NMS, batch invariance, stored executables."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import geometry
from facecraft.infer import Detector
from facecraft.infer import executables
from facecraft.models import pretrained
from facecraft.models import rpn

CONFIG = rpn.RPNConfig(trunk_channels=(8, 8, 16, 16), rpn_channels=16,
                       anchor_sizes=(16.0, 32.0, 64.0), anchor_ratios=(1.25,), roi_size=5,
                       head_fc=32)
INFERENCE = {"thresholds": (0.0, 0.0), "min_face_size": 4.0, "box_convention": "wider",
             "input_mean": 127.5, "input_scale": 1 / 128, "pre_nms": 400, "post_nms": 50,
             "rpn_nms": 0.7, "final_nms": 0.3, "max_detections": 20}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  model = rpn.RPNFastRCNN(CONFIG)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                         jnp.zeros((1, 2, 4)))
  params = jax.tree.map(np.asarray, variables["params"])
  path = str(tmp_path_factory.mktemp("rpn") / "rpn-test.npz")
  pretrained.save_bundle(path, "rpn_frcnn", {"params": params}, INFERENCE,
                         dataclasses.asdict(CONFIG), {"note": "random weights, for tests"})
  return path


def _images():
  rng = np.random.default_rng(0)
  return [rng.integers(0, 255, (100, 130, 3), dtype=np.uint8),
          rng.integers(0, 255, (61, 90, 3), dtype=np.uint8)]


def test_detections_are_clipped_sorted_and_suppressed(bundle):
  det = Detector.from_pretrained(bundle)
  assert not det.has_landmarks
  for image in _images():
    d = det.detect(image)
    h, w = image.shape[:2]
    assert 0 < len(d) <= 20 and d.landmarks is None
    assert np.all(d.boxes[:, [0, 2]] >= 0) and np.all(d.boxes[:, [0, 2]] <= w)
    assert np.all(d.boxes[:, [1, 3]] >= 0) and np.all(d.boxes[:, [1, 3]] <= h)
    assert np.all(np.diff(d.scores) <= 0) and np.all((d.scores >= 0) & (d.scores <= 1))
    iou = geometry.pairwise_iou(d.boxes, d.boxes)
    assert np.all(iou[~np.eye(len(d), dtype=bool)] <= 0.3 + 1e-6)


def test_results_do_not_depend_on_batch_companions(bundle):
  det = Detector.from_pretrained(bundle)
  images = _images()
  together = det.detect_batch(images, batch_size=2)
  for image, both in zip(images, together):
    alone = det.detect(image)
    np.testing.assert_allclose(both.boxes, alone.boxes, atol=1e-4)
    np.testing.assert_allclose(both.scores, alone.scores, atol=1e-6)


def test_thresholds_and_unknown_options(bundle):
  det = Detector.from_pretrained(bundle, thresholds=(0.0, 0.999999))
  assert all(len(d) == 0 for d in det.detect_batch(_images()))
  with pytest.raises(ValueError, match="unknown options"):
    Detector.from_pretrained(bundle, factor=0.7)
  # `facecraft detect` asks every model for bucket merging; this engine runs without it.
  merged = Detector.from_pretrained(bundle, merge_compile_s=30.0)
  assert merged.merge_buckets({(64, 96): 1, (128, 160): 5}) == {(64, 96): (64, 96),
                                                               (128, 160): (128, 160)}
  with pytest.raises(ValueError, match="rpn, final"):
    Detector.from_pretrained(bundle, thresholds=(0.1, 0.2, 0.3))


def test_buckets_tile_the_trunk_stride_and_stored_executables_reload(bundle, tmp_path):
  store = executables.ExecutableStore(str(tmp_path / "exe"))
  det = Detector.from_pretrained(bundle, executables=store)
  assert all(side % CONFIG.stride == 0 for side in det.bucket(100, 130))
  image = _images()[0]
  first = det.detect(image)
  again = Detector.from_pretrained(bundle, executables=executables.ExecutableStore(store.path))
  second = again.detect(image)
  assert store.saves == 1 and again.executables.loads == 1
  np.testing.assert_array_equal(first.boxes, second.boxes)


def test_upscale_is_the_engine_on_the_resized_photo_with_boxes_scaled_back():
  # Normalising is affine and bilinear resizing linear with weights summing to one, so the
  # engine at upscale 2 on a photo is exactly the engine at upscale 1 on the photo resized x2
  # (in float), its boxes halved.
  from facecraft.infer import anchor  # pylint: disable=g-import-not-at-top
  model = rpn.RPNFastRCNN(CONFIG)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 2, 4)))
  base = anchor.config_from(INFERENCE)
  up = dataclasses.replace(base, upscale=2.0)
  image = jnp.asarray(_images()[0][:96, :128])[None]
  hw = jnp.asarray([[96, 128]], jnp.int32)
  big = jax.image.resize(image.astype(jnp.float32), (1, 192, 256, 3), "linear")
  s = CONFIG.stride
  grid = lambda shape: rpn.anchor_grid((shape[0] // s, shape[1] // s), s,  # noqa: E731
                                       CONFIG.anchor_sizes, CONFIG.anchor_ratios)
  assert anchor.scaled_shape((96, 128), 2.0, 8) == (192, 256)
  assert anchor.scaled_shape((61, 90), 1.5, 8) == (96, 136)  # 92, 135 rounded up to the stride
  got = anchor.run_anchor(model, up, grid((192, 256)), params, image, hw)
  ref = anchor.run_anchor(model, base, grid((192, 256)), params, big, hw * 2)
  assert int(got["valid"].sum()) > 0
  np.testing.assert_array_equal(np.asarray(got["valid"]), np.asarray(ref["valid"]))
  np.testing.assert_allclose(np.asarray(got["boxes"]), np.asarray(ref["boxes"]) / 2, atol=1e-3)
  np.testing.assert_allclose(np.asarray(got["scores"]), np.asarray(ref["scores"]), atol=1e-5)
  with pytest.raises(ValueError, match="upscale"):
    dataclasses.replace(base, upscale=0.0)


def test_upscale_through_the_detector_keeps_boxes_on_the_photo(bundle):
  image = _images()[1]  # 61 x 90: its bucket, upscaled, is rounded to the stride
  d = Detector.from_pretrained(bundle, upscale=1.5).detect(image)
  assert len(d) > 0
  assert np.all(d.boxes[:, [0, 2]] <= 90 + 1e-3) and np.all(d.boxes[:, [1, 3]] <= 61 + 1e-3)
  assert np.all(d.boxes >= 0)
