"""facecraft.models.pretrained bundles (format 2 and the older format 1) and
Detector.from_pretrained reading every inference setting from them."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from facecraft.infer import Detector
from facecraft.infer import registry
from facecraft.models import cascade
from facecraft.models import pretrained

TINY = cascade.CascadeConfig(x12_channels=(4, 4, 4), x24_channels=(4, 4, 4), x24_fc=8,
                             x48_channels=(4, 4, 4, 4), x48_fc=8, dropout=0.0)


def _tiny_params(seed=0):
  model = cascade.FaceCraft(TINY)
  variables = model.init(jax.random.PRNGKey(seed), np.zeros((1, 48, 48, 3), np.float32))
  return model, jax.tree_util.tree_map(np.asarray, variables["params"])


def test_round_trip_keeps_params_stats_config_and_meta(tmp_path):
  model, params = _tiny_params()
  stats = {"mean": np.arange(4, dtype=np.float32), "std": np.full(4, 0.5, np.float32)}
  path = pretrained.save(str(tmp_path / "m.npz"), params, stats, TINY,
                         {"detector": {"thresholds": [0.2, 0.1, 0.9]}})
  b = pretrained.load(path)
  assert b.model.config == TINY
  jax.tree_util.tree_map(np.testing.assert_array_equal, b.params, params)
  np.testing.assert_array_equal(b.box_stats["std"], stats["std"])
  assert b.meta["detector"]["thresholds"] == [0.2, 0.1, 0.9]
  assert pretrained.read_meta(path) == b.meta
  x = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
  same = jax.tree_util.tree_map(np.testing.assert_array_equal,
                                b.model.apply({"params": b.params}, x, deterministic=True),
                                model.apply({"params": params}, x, deterministic=True))
  del same


def test_load_errors_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="no bundled model 'nope'.*available"):
    pretrained.load("nope")
  np.savez(tmp_path / "other.npz", a=np.zeros(3))
  with pytest.raises(ValueError, match="not a FaceCraft model bundle"):
    pretrained.load(str(tmp_path / "other.npz"))
  with pytest.raises(ValueError, match=r"lack \['min_face_size', 'box_convention'"):
    pretrained.save_bundle(str(tmp_path / "x.npz"), "mtcnn", {}, {"thresholds": [0.5] * 3})


def _format1(path, params, stats, detector):
  """A bundle as issue #5 wrote them: no family, no inference block."""
  meta = {"model_config": dataclasses.asdict(TINY), "detector": detector}
  flat = {"meta_json": np.array(json.dumps(meta))}
  for name, tree in (("params", params), ("box_stats", stats)):
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      flat["/".join([name] + [k.key for k in keys])] = np.asarray(leaf)
  np.savez_compressed(path, **flat)


def test_format1_bundles_load_as_facecraft_cascades_with_the_old_defaults(tmp_path):
  _, params = _tiny_params(3)
  stats = {"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float32)}
  _format1(tmp_path / "old.npz", params, stats, {"thresholds": [0.1, 0.003, 0.9]})
  b = pretrained.load(str(tmp_path / "old.npz"))
  assert b.family == "facecraft_cascade" and b.model.config == TINY
  assert b.inference == {**pretrained.LEGACY_INFERENCE, "thresholds": [0.1, 0.003, 0.9]}
  jax.tree_util.tree_map(np.testing.assert_array_equal, b.params, params)
  new = pretrained.load(pretrained.upgrade(str(tmp_path / "old.npz"), str(tmp_path / "new.npz")))
  assert new.meta["format"] == pretrained.FORMAT and "detector" not in new.meta
  assert (new.family, new.inference, new.model_config) == (b.family, b.inference, b.model_config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, new.trees, b.trees)


def test_every_inference_setting_comes_from_the_bundle(tmp_path):
  _, params = _tiny_params(1)
  stats = {"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float32)}
  path = str(tmp_path / "tiny.npz")
  pretrained.save(path, params, stats, TINY,
                  inference={"thresholds": [0.0, 0.0, 0.0], "min_face_size": 30.0,
                             "factor": 0.6, "crop_mode": "clip", "input_scale": 0.5})
  registry.register_model("tiny-test", path)
  try:
    assert "tiny-test" in registry.model_names()
    det = Detector.from_pretrained("tiny-test", buckets=[(64, 64)], capacities=(64, 16, 8))
  finally:
    registry.MODELS.unregister("tiny-test")
  engine = det.engine
  assert engine.config.thresholds == (0.0, 0.0, 0.0) and engine.config.crop_mode == "clip"
  assert engine.min_face_size == 30.0 and engine.factor == 0.6  # not the old 0.709 default
  assert float(engine.spec.normalize(np.full((1,), 255, np.uint8))[0]) == (255 - 127.5) * 0.5
  image = np.random.default_rng(2).integers(0, 255, (60, 50, 3), np.uint8)
  found = det.detect(image)
  # Every window passes thresholds of 0: up to the stage-3 capacity survive the last NMS.
  assert 1 <= len(found) <= 8
  assert np.all((found.scores >= 0) & (found.scores <= 1))
  assert np.all(np.isfinite(found.boxes))
  explicit = Detector.from_pretrained(path, thresholds=(0.6, 0.7, 0.7))
  assert explicit.engine.config.thresholds == (0.6, 0.7, 0.7)
  with pytest.raises(ValueError, match="unknown model 'tiny-test'"):
    Detector.from_pretrained("tiny-test")


def test_mtcnn_is_a_bundle_too():
  b = pretrained.load("mtcnn")
  assert b.family == "mtcnn" and sorted(b.trees) == ["onet", "pnet", "rnet"]
  assert b.inference["thresholds"] == [0.6, 0.7, 0.7] and b.inference["factor"] == 0.709
  assert set(pretrained.INFERENCE_KEYS) <= set(pretrained.read_meta("facecraft")["inference"])


@pytest.mark.parametrize("name", [n for n in ("facecraft", "facecraft-cmu", "rpn-frcnn")
                                  if n in pretrained.available()])
def test_bundled_facecraft_models_find_the_astronaut(name):
  from data_pipelines.formats import facecraft_json  # pylint: disable=g-import-not-at-top
  from data_pipelines import geometry  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  sample = facecraft_json.load(os.path.join(os.path.dirname(cascade.__file__), "..", "assets"))[0]
  det = Detector.from_pretrained(name)
  found = det.detect(sample.load_image())
  assert len(found) >= 1
  b = pretrained.load(name)
  # A "cmu_mit" model was trained on box_scale x our face-tight rule (CMU+MIT's boxes); a
  # "wider" one on WIDER's own boxes, face-tight like the sample's.
  scale = b.meta["source"]["data"]["box_scale"] if b.inference["box_convention"] == "cmu_mit" else 1
  truth = geometry.scale_boxes(sample.boxes.astype(np.float64), scale)
  iou = geometry.pairwise_iou(found.boxes[:1].astype(np.float64), truth)
  assert iou.max() >= 0.5, (found, truth)
  if b.inference.get("aligner") or b.model_config.get("landmarks"):
    assert found.landmarks.shape == (len(found), 5, 2)
  if b.model_config.get("landmarks"):  # its own five points: near the annotated ones
    iod = np.linalg.norm(sample.landmarks[0, 1] - sample.landmarks[0, 0])
    error = np.linalg.norm(found.landmarks[0] - sample.landmarks[0], axis=-1).mean() / iod
    assert error < 0.25, (found.landmarks[0], sample.landmarks[0])


def test_a_bundle_may_name_its_default_aligner(tmp_path):
  _, params = _tiny_params(2)
  stats = {"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float32)}
  path = pretrained.save(str(tmp_path / "aligned.npz"), params, stats, TINY,
                         inference={"thresholds": [0.5, 0.5, 0.5], "aligner": "mtcnn-onet",
                                    "box_convention": "wider"})
  det = Detector.from_pretrained(path, buckets=[(64, 64)])
  assert det.aligner is not None and det.aligner.scale == 1.0 and det.has_landmarks
  assert Detector.from_pretrained(path, align="none", buckets=[(64, 64)]).aligner is None


def test_reports_name_a_model_by_its_name_or_its_bundle_file():
  assert registry.display_name("facecraft") == "facecraft"
  assert registry.display_name("runs/wider/candidate.npz") == "candidate"
  assert registry.display_name("/tmp/x/mtcnn.json") == "mtcnn"
