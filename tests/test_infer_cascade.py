"""The jitted cascade and the Detector: batching, capacities, bad input, sharding, stage nets."""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from data_pipelines import geometry
from data_pipelines import images as images_lib
from facecraft.infer import Detections, Detector
from facecraft.infer import pyramid
from facecraft.models import layers
from facecraft.models import mtcnn

REPO = pathlib.Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "facecraft" / "assets" / "astronaut.jpg"
BUCKETS = [(128, 128)]  # One small bucket keeps compiles few and fast.


def _resize(a, w, h):
  return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def pictures():
  full = images_lib.decode(ASTRONAUT)
  return {"whole": _resize(full, 128, 128),           # The 512 px portrait at 1/4.
          "face": _resize(full[20:260, 110:350], 128, 128),
          "wide": _resize(full[20:270, 90:390], 120, 100),
          "noise": np.random.default_rng(0).integers(0, 256, (90, 128, 3)).astype(np.uint8)}


@pytest.fixture(scope="module")
def det():
  return Detector.from_pretrained("mtcnn", crop_mode="clip", buckets=BUCKETS)


def _same(a: Detections, b: Detections):
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(a.scores, b.scores)
  np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_finds_the_annotated_face(det, pictures):
  dets = det.detect(pictures["whole"])
  assert len(dets) == 1 and dets.scores[0] > 0.99
  truth = np.array([[181.0, 76.0, 270.0, 172.0]]) / 4  # facecraft/assets/sample.json at 1/4.
  assert geometry.pairwise_iou(dets.boxes, truth)[0, 0] > 0.6
  points = np.array([[205.0, 101.0], [246.5, 103.0], [225.5, 127.0], [205.75, 142.5],
                     [242.0, 142.5]]) / 4
  assert np.abs(dets.landmarks[0] - points).max() < 3  # Pixels at 128 px.


def test_detect_batch_equals_detect_one_by_one(det, pictures):
  batch = [pictures["face"], pictures["wide"], pictures["noise"], pictures["whole"],
           np.zeros((1, 1, 3), np.uint8)]
  together = det.detect_batch(batch, batch_size=4)  # 4 + 1 (padded) in the same bucket.
  assert [len(d) for d in together] == [1, 1, 0, 1, 0]
  for image, dets in zip(batch, together):
    _same(dets, det.detect(image))
  assert ((128, 128), 4, 0) in det.compile_times


def test_bad_input_never_crashes_a_batch(det, pictures, tmp_path):
  assert det.detect_batch([]) == []
  assert len(det.detect(np.zeros((1, 1, 3), np.uint8))) == 0
  text = tmp_path / "notes.jpg"
  text.write_text("not a picture")
  with pytest.raises(images_lib.ImageDecodeError, match="notes.jpg"):
    det.detect(str(text))
  nan = pictures["face"].astype(np.float32)
  nan[3, 4, 1] = np.nan
  with pytest.raises(images_lib.ImageDecodeError, match="NaN"):
    det.detect(nan)
  out = det.detect_batch([pictures["face"], str(text), nan, str(tmp_path / "missing.png"),
                          pictures["wide"]], batch_size=1)
  assert [d.error is None for d in out] == [True, False, False, False, True]
  assert "notes.jpg" in out[1].error and "NaN" in out[2].error and "no such file" in out[3].error
  assert len(out[1]) == 0 and out[1].landmarks.shape == (0, 5, 2)
  _same(out[0], det.detect(pictures["face"]))
  _same(out[4], det.detect(pictures["wide"]))


def test_gray_rgba_and_16_bit_pictures(det, pictures, tmp_path):
  gray = np.asarray(Image.fromarray(pictures["face"]).convert("L"))
  rgb = np.repeat(gray[..., None], 3, axis=-1)
  _same(det.detect(gray), det.detect(rgb))
  rgba = np.concatenate([pictures["face"], np.full((128, 128, 1), 255, np.uint8)], -1)
  _same(det.detect(rgba), det.detect(pictures["face"]))
  path = tmp_path / "gray16.png"
  Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # 8-bit values scaled to 16 bits.
  _same(det.detect(str(path)), det.detect(rgb))
  assert len(det.detect(str(path))) == 1


def test_image_size_limit_is_a_clear_error():
  small = Detector.from_pretrained("mtcnn", buckets=BUCKETS, max_image_pixels=1000)
  with pytest.raises(ValueError, match="max_image_pixels=1000"):
    small.detect(np.zeros((40, 30, 3), np.uint8))
  assert small.detect_batch([np.zeros((40, 30, 3), np.uint8)])[0].error.startswith("image of")


def test_capacity_overflow_is_rerun_exactly(det, pictures):
  # Capacities far below the candidate counts (~24, ~9, ~6): the Detector re-runs with 4x.
  tiny = Detector.from_pretrained("mtcnn", crop_mode="clip", buckets=BUCKETS,
                                  capacities=(8, 4, 2), max_tiers=2)
  for name in ("whole", "face"):
    _same(tiny.detect(pictures[name]), det.detect(pictures[name]))
  assert any(key[2] == 1 for key in tiny.compile_times)
  tiny.engine.max_tiers = 1  # Overflow with no larger tier left: results are cut, and say so.
  assert tiny.detect(pictures["face"]).truncated


def test_pad_mode_and_maxpool_suppression_find_the_face(det, pictures):
  other = Detector.from_pretrained("mtcnn", crop_mode="pad", stage1_nms="maxpool",
                                   buckets=BUCKETS)
  a, b = other.detect(pictures["face"]), det.detect(pictures["face"])
  assert len(a) == len(b) == 1
  assert geometry.pairwise_iou(a.boxes, b.boxes)[0, 0] > 0.9
  with pytest.raises(ValueError, match="crop_mode"):
    Detector.from_pretrained("mtcnn", crop_mode="zero")
  with pytest.raises(ValueError, match="unknown model"):
    Detector.from_pretrained("nope")


def _conv(x, p):
  return jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]


def _prelu(x, p):
  return jnp.where(x >= 0, x, p["alpha"] * x)


def _pool(x, window, stride):  # floor rounding, as nn.max_pool
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                               (1, stride, stride, 1), "VALID")


def _textbook(net, p, x):
  """The MTCNN networks written plainly (lax.conv, reduce_window, Caffe's ceil pooling): the
  reference for the one definition in models.mtcnn that engine and training share."""
  ceil = layers.max_pool_ceil
  if net == "pnet":
    x = _prelu(_conv(ceil(_prelu(_conv(x, p["conv1"]), p["prelu1"]), 2, 2), p["conv2"]), p["prelu2"])
    x = _prelu(_conv(x, p["conv3"]), p["prelu3"])
    return {"logits": _conv(x, p["conv4_2"]), "box": _conv(x, p["conv4_1"])}
  x = ceil(_prelu(_conv(x, p["conv1"]), p["prelu1"]), 3, 2)
  x = _pool(_prelu(_conv(x, p["conv2"]), p["prelu2"]), 3, 2)
  if net == "onet":
    x = ceil(_prelu(_conv(x, p["conv3"]), p["prelu3"]), 2, 2)
    x = _prelu(_conv(x, p["conv4"]), p["prelu4"])
    x = _prelu(layers.flatten_whc(x) @ p["fc5"]["kernel"] + p["fc5"]["bias"], p["prelu5"])
    heads = {"logits": "fc6_3", "box": "fc6_1", "landmarks": "fc6_2"}
  else:
    x = _prelu(_conv(x, p["conv3"]), p["prelu3"])
    x = _prelu(layers.flatten_whc(x) @ p["fc4"]["kernel"] + p["fc4"]["bias"], p["prelu4"])
    heads = {"logits": "fc5_2", "box": "fc5_1"}
  return {k: x @ p[v]["kernel"] + p[v]["bias"] for k, v in heads.items()}


def test_mtcnn_networks_equal_their_textbook_form_in_engine_and_training():
  weights = mtcnn.load_original_weights()
  rng = np.random.default_rng(5)
  for net, module, size in (("rnet", mtcnn.RNet(), 24), ("onet", mtcnn.ONet(), 48)):
    x = rng.normal(size=(3, size, size, 3)).astype(np.float32)
    ref = jax.jit(functools.partial(_textbook, net))(weights[net]["params"], x)
    trained = jax.jit(module.apply)(weights[net], x)  # the Flax module training uses
    for key, value in ref.items():
      np.testing.assert_allclose(trained[key], value, atol=2e-5, err_msg=f"{net} {key}")
  stage = jax.jit(pyramid._onet_stage)(weights["onet"], x)  # pylint: disable=protected-access
  np.testing.assert_allclose(stage[0], jax.nn.softmax(ref["logits"])[:, 1], atol=1e-6)
  np.testing.assert_allclose(stage[2][..., 0], ref["landmarks"][:, :5], atol=2e-5)
  np.testing.assert_allclose(stage[2][..., 1], ref["landmarks"][:, 5:], atol=2e-5)
  # P-Net on a padded canvas (the engine's s2d layout) equals P-Net on the unpadded image, on
  # every cell it has.
  canvas = rng.normal(size=(1, 40, 50, 3)).astype(np.float32)
  s2d = canvas.reshape(1, 20, 2, 25, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 20, 25, 12)
  for hw in ((40, 50), (31, 41), (30, 40)):
    ref = jax.jit(functools.partial(_textbook, "pnet"))(weights["pnet"]["params"],
                                                        canvas[:, :hw[0], :hw[1]])
    prob, box = jax.jit(pyramid._pnet_stage)(weights["pnet"], s2d, jnp.asarray([hw]))  # pylint: disable=protected-access
    h, w = ref["logits"].shape[1:3]
    np.testing.assert_allclose(prob[:, :h, :w], jax.nn.softmax(ref["logits"])[..., 1], atol=1e-6)
    np.testing.assert_allclose(box[:, :h, :w], ref["box"], atol=2e-5)


_SHARDED = textwrap.dedent("""
    import numpy as np, jax
    from jax.sharding import Mesh
    from data_pipelines import images
    from facecraft.infer import Detector
    assert jax.device_count() == 2, jax.devices()
    full = images.decode("facecraft/assets/astronaut.jpg")
    batch = [full[::4, ::4], full[40:168, 100:228], full[::5, ::4][:100]]
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    kw = dict(crop_mode="clip", buckets=[(128, 128)])
    plain = Detector.from_pretrained("mtcnn", **kw).detect_batch(batch, batch_size=4)
    shard = Detector.from_pretrained("mtcnn", mesh=mesh, **kw).detect_batch(batch, batch_size=4)
    assert [len(d) for d in plain] == [len(d) for d in shard] and sum(map(len, plain)) >= 2
    for a, b in zip(plain, shard):
      np.testing.assert_array_equal(a.boxes, b.boxes)
      np.testing.assert_array_equal(a.scores, b.scores)
      np.testing.assert_array_equal(a.landmarks, b.landmarks)
    print("sharded ok", [len(d) for d in plain])
""")


def test_batch_sharded_over_two_devices_equals_unsharded():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SHARDED], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sharded ok" in proc.stdout
