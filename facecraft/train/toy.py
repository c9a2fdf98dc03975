"""Toy schedule: a small MLP (or linear) classifier on synthetic Gaussian data, trained through
the real loop with a grain iterator. For tests and smoke runs (experiments/configs/toy.py).

Data: x ~ N(0, I) in `dim` dimensions, y = argmax(x W + noise) for a fixed random W, both fixed
by data.seed, so the problem is learnable to high accuracy. The step key adds input noise
(model.input_noise) so that the per-step rng path is exercised too.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from facecraft.train import ConfigError
from facecraft.train import loop

CONFIG_SECTIONS = ("data", "model")


def make_data(seed: int, split: int, num_examples: int, dim: int, num_classes: int,
              label_noise: float) -> tuple[np.ndarray, np.ndarray]:
  """Examples of one split (0 train, 1 eval); the labelling W depends on the seed only."""
  weights = np.random.default_rng(seed).normal(size=(dim, num_classes))
  rng = np.random.default_rng([seed, split])
  x = rng.normal(size=(num_examples, dim)).astype(np.float32)
  logits = x @ weights + label_noise * rng.normal(size=(num_examples, num_classes))
  return x, np.argmax(logits, axis=1).astype(np.int32)


class ArraySource:
  """Random access to {"x", "y"} examples (a grain data source)."""

  def __init__(self, x: np.ndarray, y: np.ndarray):
    self.x, self.y = x, y

  def __len__(self) -> int:
    return len(self.x)

  def __getitem__(self, index: int) -> dict:
    return {"x": self.x[index], "y": self.y[index]}


class SlowIterator:
  """Sleeps before each batch (data.delay_s): lets tests signal a run at a known stage."""

  def __init__(self, iterator, delay_s: float):
    self._it, self._delay = iterator, delay_s

  def __iter__(self):
    return self

  def __next__(self):
    time.sleep(self._delay)
    return next(self._it)

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)


def data_iterator(config):
  """A checkpointable grain iterator of shuffled training batches (repeating forever)."""
  import grain  # pylint: disable=g-import-not-at-top
  d = config.data
  x, y = make_data(d.seed, 0, d.num_examples, d.dim, config.model.num_classes,
                   d.label_noise)
  ds = grain.MapDataset.source(ArraySource(x, y)).shuffle(seed=config.seed).repeat(None)
  ds = ds.batch(config.batch_size, drop_remainder=True)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))
  return SlowIterator(it, d.delay_s) if d.delay_s > 0 else it


class MLP(nn.Module):
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    if self.hidden > 0:
      x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def model_of(config) -> MLP:
  return MLP(hidden=config.model.hidden, num_classes=config.model.num_classes)


def make_init_fn(config):
  model = model_of(config)
  return lambda rng: model.init(rng, jnp.zeros((1, config.data.dim), jnp.float32))["params"]


def make_loss_fn(config):
  model, noise = model_of(config), config.model.input_noise

  def loss_fn(params, batch, rng, step):
    del step
    x = batch["x"] + noise * jax.random.normal(rng, batch["x"].shape)
    logits = model.apply({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  return loss_fn


def make_eval_fn(config):
  model = model_of(config)
  d = config.data
  x, y = make_data(d.seed, 1, d.num_eval, d.dim, config.model.num_classes, d.label_noise)

  @jax.jit
  def evaluate(params):
    logits = model.apply({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

  return lambda state: evaluate(state.params)


def validate_config(config) -> None:
  d, m = config.data, config.model
  for key, value, low in (("data.num_examples", d.num_examples, 1), ("data.dim", d.dim, 1),
                          ("data.num_eval", d.num_eval, 1), ("model.num_classes", m.num_classes, 2),
                          ("model.hidden", m.hidden, 0)):
    if value < low:
      raise ConfigError(f"config.{key}", f"must be >= {low}, got {value}")
  if config.batch_size > d.num_examples:
    raise ConfigError("config.batch_size",
                      f"{config.batch_size} > data.num_examples {d.num_examples}")
  for key, value in (("data.delay_s", d.delay_s), ("data.label_noise", d.label_noise),
                     ("model.input_noise", m.input_noise)):
    if value < 0:
      raise ConfigError(f"config.{key}", f"must be >= 0, got {value}")


def run(config, workdir: str) -> loop.TrainResult:
  return loop.train(config, workdir, make_init_fn(config), make_loss_fn(config),
                    lambda: data_iterator(config), make_eval_fn(config))
