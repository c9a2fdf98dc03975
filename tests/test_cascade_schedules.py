"""cascade_joint / cascade_greedy on the embedded default data with a tiny net (CPU, seconds):
the launcher trains joint-hard and the loss drops, every gate mode runs, the box statistics
travel in the checkpoint, greedy freezes earlier stages bit for bit and ends in the joint layout
with the same budget."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from experiments.configs import greedy_cascade
from experiments.configs import joint_cascade
from facecraft import losses
from facecraft.train import ConfigError
from facecraft.train import checkpoint
from facecraft.train import config_schema
from facecraft.train.cascade import data as cascade_data
from facecraft.train.cascade import greedy as cascade_greedy
from facecraft.train.cascade import joint as cascade_joint
from facecraft.train import metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 48
# Dotted overrides shared by every run here (also passed to the launcher on its command line).
OVERRIDES = {
    "model.x12_channels": (8, 16, 8), "model.x24_channels": (8, 16, 16), "model.x24_fc": 32,
    "model.x48_channels": (8, 16, 16, 16), "model.x48_fc": 32, "model.dropout": 0.1,
    "data.source": "embedded", "data.embedded_images": 24, "data.embedded_val_images": 6,
    "data.embedded_scenes": 6, "data.face_tries": 10, "data.positive_ratio": 0.25,
    "data.max_negatives": 600, "data.val_negatives": 150,
    "batch_size": 16, "num_steps": STEPS, "log_every": 4, "progress_bar": False,
    "lr.rates": (0.02, 0.002), "lr.boundaries": (36,), "checkpoint.every": 24,
    "checkpoint.async_save": False, "eval.every": 24, "val.batch_size": 128,
}


def configure(module, cache_dir, **extra) -> ml_collections.ConfigDict:
  config = module.get_config()
  for key, value in {**OVERRIDES, "data.cache_dir": str(cache_dir), **extra}.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  config_schema.validate(config)
  return config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("crops")


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, cache_dir):
  """joint-hard through the launcher, as a user runs it."""
  workdir = tmp_path_factory.mktemp("joint")
  argv = [sys.executable, "-m", "experiments.train",
          "--config", str(REPO / "experiments" / "configs" / "joint_cascade.py"),
          "--workdir", str(workdir), f"--config.data.cache_dir={cache_dir}"]
  argv += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "EMBEDDED DEFAULT" in proc.stderr  # announced loudly
  return configure(joint_cascade, cache_dir), str(workdir)


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory, cache_dir):
  workdir = str(tmp_path_factory.mktemp("greedy"))
  config = configure(greedy_cascade, cache_dir)
  return config, workdir, cascade_greedy.run(config, workdir)


def _eval_loss(config, params, batches, stats):
  model = cascade_joint.model_of(config)
  loss_cfg = cascade_joint.loss_config(config)

  @jax.jit
  def loss(params, batch):
    out = model.apply({"params": params}, batch["image"], deterministic=True)
    return losses.joint_loss(out, batch, stats, loss_cfg)[0]

  return float(np.mean([loss(params, b) for b in batches]))


def test_joint_trains_through_the_launcher_and_the_loss_drops(joint_run):
  config, workdir = joint_run
  data = cascade_data.build(config, workdir)
  assert data.cached  # the launcher's run left the crops in the shared cache
  params, extra, step = checkpoint.load_params(workdir)
  assert step == STEPS
  stats = cascade_joint.stats_of(extra)
  init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
  model = cascade_joint.model_of(config)
  init, _ = cascade_joint.make_init_fn(config, model, extra["box_stats"])(init_rng)
  it = cascade_data.train_iterator(data.train, 64, 123, config.data)
  batches = [next(it) for _ in range(3)]
  before, after = (_eval_loss(config, p, batches, stats) for p in (init, params))
  assert after < 0.85 * before, (before, after)  # measured: 7.10 -> 5.02
  csv = metrics.read_csv(workdir)
  assert np.isfinite(csv["eval/crop/cascade_auc"][-1]) and "train/gate24/pass" in csv


def test_box_statistics_travel_in_the_checkpoint(joint_run):
  config, workdir = joint_run
  _, extra, _ = checkpoint.load_params(workdir)
  data = cascade_data.build(config, workdir)
  has = np.isin(data.train.labels, cascade_data.BOX_LABELS)
  boxes = data.train.boxes[has].astype(np.float64)
  mirrored = np.stack([48 - boxes[:, 2], boxes[:, 1], 48 - boxes[:, 0], boxes[:, 3]], 1)
  b = np.concatenate([boxes, mirrored])
  w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  t = np.stack([((b[:, 0] + b[:, 2]) / 2 - 24) / 48, ((b[:, 1] + b[:, 3]) / 2 - 24) / 48,
                np.log(w / 48), np.log(h / 48)], 1)
  np.testing.assert_allclose(extra["box_stats"]["mean"], t.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(extra["box_stats"]["std"], t.std(0), rtol=1e-5)
  assert abs(extra["box_stats"]["mean"][0]) < 1e-6  # flips centre dx on 0


@pytest.mark.parametrize("mode", ["sigmoid", "straight_through"])
def test_soft_gate_modes_run(tmp_path, cache_dir, mode):
  config = configure(joint_cascade, cache_dir, **{"gate.mode": mode, "num_steps": 4,
                                                  "log_every": 1, "eval.every": 0,
                                                  "gate.temperature.steps": 4,
                                                  "gate.temperature.end": 0.5})
  result = cascade_joint.run(config, str(tmp_path))
  assert result.step == 4
  csv = metrics.read_csv(str(tmp_path))
  assert np.isfinite(csv["train/loss"]).all()
  temps = csv["train/gate/temperature"]
  np.testing.assert_allclose(temps[:4], 1.0 * 0.5 ** (np.arange(4) / 4), rtol=1e-5)
  weight = csv["train/gate24/weight"][:4]
  if mode == "sigmoid":  # soft: neither 0 nor 1 per sample, so the mean is strictly inside
    assert ((weight > 0) & (weight < 1 - 1e-4)).all()
  else:  # hard forward: a count of passing samples out of 16
    np.testing.assert_allclose(weight * 16, np.round(weight * 16), atol=1e-4)


def _branch(params, prefix):
  return {k: v for k, v in params.items() if k == prefix or k.startswith(prefix + "_")}


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_greedy_freezes_earlier_stages_bit_for_bit(greedy_run):
  config, workdir, result = greedy_run
  p = {s: checkpoint.load_params(os.path.join(workdir, f"stage_{s}"))[0]
       for s in cascade_greedy.STAGES}
  final, extra, step = checkpoint.load_params(workdir)
  assert step == STEPS and result.step == STEPS
  _assert_same(_branch(p["x12"], "x12"), _branch(p["x24"], "x12"))
  _assert_same(_branch(p["x12"], "x12"), _branch(final, "x12"))
  _assert_same(_branch(p["x24"], "x24"), _branch(p["x48"], "x24"))
  _assert_same(_branch(p["x48"], "x48"), _branch(final, "x48"))
  # Later branches rest at the shared init until their stage; each stage changes its own.
  model = cascade_joint.model_of(config)
  init, _ = cascade_joint.make_init_fn(config, model, extra["box_stats"])(
      jax.random.split(jax.random.PRNGKey(config.seed))[0])
  _assert_same(_branch(p["x12"], "x48"), _branch(init, "x48"))
  _assert_same(_branch(p["x24"], "x48"), _branch(init, "x48"))
  for stage in cascade_greedy.STAGES:
    kernel = lambda t, s=stage: np.asarray(t[s]["conv1"]["kernel"])  # noqa: E731
    assert not np.array_equal(kernel(p[stage]), kernel(init)), stage


def test_greedy_has_the_joint_layout_data_and_budget(greedy_run, joint_run):
  config, workdir, _ = greedy_run
  jconfig, jworkdir = joint_run
  gparams, gextra, _ = checkpoint.load_params(workdir)
  jparams, jextra, jstep = checkpoint.load_params(jworkdir)
  assert jax.tree.structure(gparams) == jax.tree.structure(jparams)
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)), gparams, jparams)
  _assert_same(gextra, jextra)  # same crops, same statistics
  steps = [checkpoint.load_params(os.path.join(workdir, f"stage_{s}"))[2]
           for s in cascade_greedy.STAGES]
  assert tuple(steps) == cascade_greedy.stage_steps(config) == (16, 16, 16)
  assert sum(steps) * config.batch_size == jstep * jconfig.batch_size  # the same samples
  for k in range(3):  # lr boundary 36 of 48 -> 12 of 16 in each stage
    assert tuple(cascade_greedy.stage_config(config, k).lr.boundaries) == (12,)
  # Stage x24's pool: exactly the crops whose x12 score (the training forward) passes t1.
  data = cascade_data.build(config, workdir)
  probs, _ = cascade_joint.crop_scores(cascade_joint.model_of(config), checkpoint.load_params(
      os.path.join(workdir, "stage_x12"))[0], data.train.images, 128, {})
  with np.load(os.path.join(workdir, "stage_x24", "pool.npz")) as z:
    np.testing.assert_array_equal(z["index"], np.flatnonzero(probs[:, 0] > 0.1))
  # The fast filter (x12 / x24 inference methods) agrees with the training forward.
  p24 = checkpoint.load_params(os.path.join(workdir, "stage_x24"))[0]
  probs, _ = cascade_joint.crop_scores(cascade_joint.model_of(config), p24, data.train.images,
                                       128, {})
  t = (float(np.median(probs[:, 0])), float(np.median(probs[:, 1])))
  passed, score = cascade_greedy.cascade_pass(cascade_joint.model_of(config), p24,
                                              data.train.images, 2, t, 128, {})
  clear = (np.abs(probs[:, 0] - t[0]) > 1e-5) & (np.abs(probs[:, 1] - t[1]) > 1e-5)
  np.testing.assert_array_equal(passed[clear], ((probs[:, 0] > t[0]) & (probs[:, 1] > t[1]))[clear])
  np.testing.assert_allclose(score[clear], np.where(probs[:, 0] > t[0], probs[:, 1], 0)[clear],
                             atol=1e-5)
  assert 0 < passed.sum() < len(passed)
  csv = metrics.read_csv(workdir)
  assert np.isfinite(csv["eval/crop/cascade_auc"][-1])


def test_stage_steps_split_the_budget():
  config = greedy_cascade.get_config()
  config.num_steps, config.greedy.stage_weights = 1000, (2.0, 1.0, 1.0)
  assert cascade_greedy.stage_steps(config) == (500, 250, 250)
  config.num_steps = 1001
  assert sum(cascade_greedy.stage_steps(config)) == 1001


@pytest.mark.parametrize("module,key,value,named", [
    (joint_cascade, "gate.mode", "soft", "config.gate.mode"),
    (joint_cascade, "data.sampler", "grid", "config.data.sampler"),
    (joint_cascade, "gate.thresholds", (0.1, 1.5), "config.gate.thresholds"),
    (joint_cascade, "data.positive_ratio", 0.0, "config.data.positive_ratio"),
    (greedy_cascade, "greedy.stage_weights", (1.0, 0.0, 1.0), "config.greedy.stage_weights"),
])
def test_bad_values_name_their_key(module, key, value, named):
  config = module.get_config()
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as e:
    config_schema.validate(config)
  assert e.value.key == named


def test_unknown_keys_in_schedule_sections_are_named():
  config = joint_cascade.get_config()
  config.data.sampelr = "both"
  with pytest.raises(ConfigError) as e:
    config_schema.validate(config)
  assert e.value.key == "config.data.sampelr"
  config = greedy_cascade.get_config()
  config.init = ml_collections.ConfigDict({"from_workdir": ""})  # joint-only section
  with pytest.raises(ConfigError, match="config.init"):
    config_schema.validate(config)
