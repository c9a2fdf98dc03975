"""facecraft.train: optimizer math against hand computations, the generic loop on the toy problem,
metrics files, best checkpoint, frozen parameters and NaN handling (in-process, CPU)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import toy as toy_config
from facecraft.train import checkpoint
from facecraft.train import loop
from facecraft.train import metrics
from facecraft.train import state as state_lib
from facecraft.train import toy


def _toy(**overrides) -> ml_collections.ConfigDict:
  config = toy_config.get_config()
  config.progress_bar = False
  config.num_steps = 40
  config.checkpoint.every = 10
  config.eval.every = 20
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("toy"))
  return toy.run(_toy(), workdir), workdir


# ------------------------------------------------------------------------- optimizer


def _opt_config(mode: str, warmup: int = 0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      optimizer=dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.01,
                     weight_decay_mode=mode, decay_biases=False, clip_grad_norm=0.0),
      lr=dict(rates=(0.1, 0.01), boundaries=(2,), warmup_steps=warmup), frozen=()))


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_sgd_momentum_weight_decay_matches_hand_computation(mode):
  params = {"dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5, 0.25])}}
  grads = [{"dense": {"kernel": jnp.array([[0.3, 0.1]]), "bias": jnp.array([-0.2, 0.4])}},
           {"dense": {"kernel": jnp.array([[-0.1, 0.2]]), "bias": jnp.array([0.1, 0.1])}},
           {"dense": {"kernel": jnp.array([[0.05, -0.3]]), "bias": jnp.array([0.3, -0.1])}}]
  state = state_lib.create_train_state(_opt_config(mode), params, jax.random.PRNGKey(0))
  for g in grads:
    state = state.apply_gradients(g)
  # float64 reference: lr 0.1 for updates 0, 1 and 0.01 from update 2 (boundary 2).
  for leaf, decayed in (("kernel", True), ("bias", False)):
    w = np.asarray(params["dense"][leaf], np.float64)
    v = np.zeros_like(w)
    for step, g in enumerate(grads):
      g = np.asarray(g["dense"][leaf], np.float64)
      lr = 0.1 if step < 2 else 0.01
      wd = 0.01 * w if decayed else 0.0
      if mode == "l2":  # Caffe: decay joins the gradient inside the momentum.
        v = 0.9 * v + g + wd
        w = w - lr * v
      else:
        v = 0.9 * v + g
        w = w - lr * (v + wd)
    np.testing.assert_allclose(np.asarray(state.params["dense"][leaf]), w, rtol=1e-6, atol=1e-7)
  assert int(state.step) == 3


def test_learning_rate_schedule_boundaries_and_warmup():
  lr = state_lib.learning_rate_schedule(ml_collections.ConfigDict(
      dict(rates=(1e-3, 1e-4, 1e-5), boundaries=(10, 20), warmup_steps=4)))
  got = [float(lr(s)) for s in (0, 1, 3, 4, 9, 10, 19, 20, 100)]
  want = [1e-3 / 4, 2e-3 / 4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_clipping_and_frozen_mask():
  config = _opt_config("l2")
  config.optimizer.clip_grad_norm = 1.0
  config.optimizer.weight_decay = 0.0
  config.optimizer.momentum = 0.0
  params = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2,))}}
  state = state_lib.create_train_state(config, params, jax.random.PRNGKey(0),
                                       frozen=state_lib.frozen_predicate(["^a/"]))
  state = state.apply_gradients({"a": {"kernel": jnp.full((2, 2), 100.0)},
                                 "b": {"kernel": jnp.array([3.0, 4.0])}})
  np.testing.assert_array_equal(state.params["a"]["kernel"], np.ones((2, 2)))
  # The norm counts trainable leaves only: [3, 4] / 5 -> [0.6, 0.8], times lr 0.1.
  np.testing.assert_allclose(state.params["b"]["kernel"], [1 - 0.06, 1 - 0.08], rtol=1e-6)
  assert state_lib.param_paths(params) == {"a": {"kernel": "a/kernel"}, "b": {"kernel": "b/kernel"}}


# ------------------------------------------------------------------------- the loop


def test_toy_run_learns_and_checkpoints(toy_run):
  result, workdir = toy_run
  assert result.step == 40 and not result.preempted
  assert result.compile_time_s > 0 and result.samples_per_sec > 0
  table = metrics.read_csv(workdir)
  train_rows = ~np.isnan(table["train/loss"])
  losses = table["train/loss"][train_rows]
  assert losses[-1] < 0.5 * losses[0]
  assert result.eval_metrics["accuracy"] > 0.85
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "30", "40"]  # keep 3
  tree = checkpoint.load_tree(workdir)
  assert int(tree["train"]["step"]) == 40 and tree["meta"]["step"] == 40
  assert tree["data"], "the grain iterator state travels with the checkpoint"
  for a, b in zip(jax.tree.leaves(tree["model"]["params"]), jax.tree.leaves(result.state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_metrics_csv_and_tensorboard_events(toy_run):
  result, workdir = toy_run
  table = metrics.read_csv(workdir)
  assert set(table) == {
      "step", "wall_time", "train/loss", "train/accuracy", "train/grad_norm", "train/lr",
      "train/samples_per_sec", "train/steps_per_sec", "train/compile_time_s", "eval/loss",
      "eval/accuracy"}
  np.testing.assert_array_equal(table["step"], [10, 20, 30, 40])  # Eval shares its step's row.
  train_rows = ~np.isnan(table["train/loss"])
  assert train_rows.all()
  eval_rows = ~np.isnan(table["eval/accuracy"])
  np.testing.assert_array_equal(table["step"][eval_rows], [20, 40])
  assert table["eval/accuracy"][eval_rows][-1] == result.eval_metrics["accuracy"]
  np.testing.assert_allclose(table["train/lr"][train_rows], 0.1, rtol=1e-6)

  events = metrics.read_events(os.path.join(workdir, metrics.TENSORBOARD_DIR))
  steps, values = zip(*events["train/loss"])
  assert list(steps) == [10, 20, 30, 40]
  np.testing.assert_array_equal(np.float32(values), np.float32(table["train/loss"][train_rows]))
  assert [s for s, _ in events["eval/accuracy"]] == [20, 40]


def test_tensorboard_loader_reads_events(toy_run):
  loader_module = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  _, workdir = toy_run
  folder = os.path.join(workdir, metrics.TENSORBOARD_DIR)
  (name,) = os.listdir(folder)
  scalars = {}
  for event in loader_module.EventFileLoader(os.path.join(folder, name)).Load():
    for value in event.summary.value:
      # The loader migrates simple_value to a scalar tensor, as TensorBoard shows it.
      scalars.setdefault(value.tag, []).append(
          (event.step, float(tensor_util.make_ndarray(value.tensor))))
  assert scalars == metrics.read_events(folder)


def test_best_checkpoint_holds_best_eval(toy_run):
  result, workdir = toy_run
  table = metrics.read_csv(workdir)
  rows = ~np.isnan(table["eval/accuracy"])
  best_step = int(table["step"][rows][np.argmax(table["eval/accuracy"][rows])])
  assert result.best["step"] == best_step and result.best["metric"] == "accuracy"
  params, _, step = checkpoint.load_params(workdir, which="best")
  assert step == best_step
  assert os.listdir(os.path.join(workdir, "best")) == [str(best_step)]
  assert jax.tree.structure(params) == jax.tree.structure(jax.device_get(result.state.params))


def test_frozen_parameters_do_not_move(tmp_path):
  config = _toy(num_steps=10, frozen=("^hidden/",))
  config.eval.every = 0
  result = toy.run(config, str(tmp_path))
  init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
  initial = jax.jit(toy.make_init_fn(config))(init_rng)
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(result.state.params["hidden"][leaf], initial["hidden"][leaf])
    assert not np.array_equal(result.state.params["head"][leaf], initial["head"][leaf])


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  config = _toy(num_steps=30, log_every=100)
  config.checkpoint.every = 5
  base_loss = toy.make_loss_fn(config)

  def loss_fn(params, batch, rng, step):
    loss, aux = base_loss(params, batch, rng, step)
    return jnp.where(step >= 13, jnp.nan, loss), aux  # The 14th update (step 13 -> 14) diverges.

  with pytest.raises(loop.NonFiniteLossError, match=r"at step 14\b.*checkpoint is step 10") as e:
    loop.train(config, str(tmp_path), toy.make_init_fn(config), loss_fn,
               lambda: toy.data_iterator(config), toy.make_eval_fn(config))
  assert e.value.step == 14 and e.value.checkpoint_step == 10
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "5"]
  tree = checkpoint.load_tree(str(tmp_path))
  assert int(tree["train"]["step"]) == 10
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree["model"]["params"]))


def test_extra_state_is_threaded_through_steps_and_checkpoints(tmp_path):
  config = _toy(num_steps=6)
  config.eval.every, config.checkpoint.every = 0, 4
  init_params, base_loss = toy.make_init_fn(config), toy.make_loss_fn(config)

  def init_fn(rng):
    return init_params(rng), {"seen": jnp.zeros((), jnp.int32), "x_sum": jnp.zeros(())}

  def loss_fn(params, batch, rng, step, extra):
    loss, aux = base_loss(params, batch, rng, step)
    extra = {"seen": extra["seen"] + len(batch["x"]), "x_sum": extra["x_sum"] + batch["x"].sum()}
    return loss, (aux, extra)

  result = loop.train(config, str(tmp_path), init_fn, loss_fn, lambda: toy.data_iterator(config),
                      uses_extra=True)
  assert int(result.state.extra["seen"]) == 6 * config.batch_size
  _, extra, step = checkpoint.load_params(str(tmp_path))
  assert step == 6 and int(extra["seen"]) == 6 * config.batch_size
  np.testing.assert_array_equal(extra["x_sum"], np.asarray(result.state.extra["x_sum"]))
