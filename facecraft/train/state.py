"""TrainState and the optax optimizer built from a config.

Optimizer (config.optimizer, config.lr; defaults in experiments/configs/common.py):

  clip_by_global_norm (clip_grad_norm > 0)
  -> weight decay, mode "l2": g + wd * w BEFORE momentum (Caffe's weight_decay, the paper's
     setting), or mode "decoupled": added to the momentum-smoothed update (SGDW/AdamW style)
  -> momentum trace (sgd; nesterov optional) or adam moments (adam, b1 = momentum)
  -> -lr(step)

Caffe folds lr into its momentum buffer (v = m v + lr g), optax scales after it (v = m v + g;
w -= lr v): the two agree while lr is constant and differ only for a few steps after a drop.
Weight decay skips 1-D leaves (biases, PReLU slopes, BN scales) unless decay_biases.

Learning rate: rates[0] until boundaries[0], rates[1] until boundaries[1], ...; update number
`step` (0-based) uses rates[i] where i = number of boundaries <= step. A linear warmup over
warmup_steps multiplies it by (step + 1) / warmup_steps.

Frozen parameters (greedy training): a predicate on parameter paths ("x12/conv1/kernel", keys
joined by "/") or regexes (config.frozen, searched anywhere in the path). Frozen leaves get a
zero update through optax.multi_transform: no momentum, no decay, no change, bit for bit, and
their gradients do not count in the clipping norm.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any
FrozenPredicate = Callable[[str], bool]
OPTIMIZERS = ("sgd", "adam")
WEIGHT_DECAY_MODES = ("l2", "decoupled")


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: parameters, optimizer, step, rng and `extra`.

  step: int32 scalar, the number of updates applied.
  rng: raw uint32[2] key; update `step` uses fold_in(rng, step), so the key of every step is
    fixed by the seed alone (nothing to split and carry, nothing to get wrong on resume).
  extra: non-trained state that travels with the model (regression target statistics, batch
    norm statistics); any pytree of arrays, {} when unused.
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array
  extra: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array,
             extra: PyTree | None = None) -> TrainState:
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               rng=jnp.asarray(rng, jnp.uint32), extra={} if extra is None else extra, tx=tx)

  def step_rng(self) -> jax.Array:
    """The dropout/augmentation key of the update about to be applied."""
    return jax.random.fold_in(self.rng, self.step)

  def apply_gradients(self, grads: PyTree, **changes) -> TrainState:
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)


# ------------------------------------------------------------------------- parameter paths


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_paths(params: PyTree) -> PyTree:
  """A pytree like params whose leaves are their paths, keys joined by "/"."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(_key_name(k) for k in path), params)


def frozen_predicate(patterns: Sequence[str]) -> FrozenPredicate | None:
  """A predicate freezing every path in which one of the regexes matches (None: nothing frozen)."""
  if isinstance(patterns, str):
    patterns = (patterns,)
  compiled = [re.compile(p) for p in patterns]
  if not compiled:
    return None
  return lambda path: any(p.search(path) for p in compiled)


def frozen_mask(params: PyTree, frozen: FrozenPredicate | None) -> PyTree:
  """Bool pytree: True where the leaf is frozen."""
  return jax.tree.map(lambda path: bool(frozen and frozen(path)), param_paths(params))


# ------------------------------------------------------------------------- schedule, optimizer


def learning_rate_schedule(lr_config) -> optax.Schedule:
  """Piecewise-constant lr with optional linear warmup (see the module docstring)."""
  values = [float(v) for v in lr_config.rates]
  boundaries = [int(b) for b in lr_config.boundaries]
  warmup = int(lr_config.get("warmup_steps", 0))
  if len(values) != len(boundaries) + 1:
    raise ValueError(f"lr.rates needs len(lr.boundaries) + 1 = {len(boundaries) + 1} entries, "
                     f"got {len(values)}")

  def schedule(count):
    count = jnp.asarray(count)
    lr = jnp.full((), values[0], jnp.float32)
    for boundary, value in zip(boundaries, values[1:]):
      lr = jnp.where(count >= boundary, jnp.float32(value), lr)
    if warmup > 0:
      ramp = jnp.minimum(1.0, (count.astype(jnp.float32) + 1.0) / warmup)
      lr = lr * ramp
    return lr

  return schedule


def _decay_mask(params: PyTree, decay_biases: bool) -> PyTree:
  return jax.tree.map(lambda p: decay_biases or jnp.ndim(p) > 1, params)


def make_optimizer(config, params: PyTree, frozen: FrozenPredicate | None = None
                   ) -> optax.GradientTransformation:
  """The optax transformation of config.optimizer / config.lr, frozen leaves held still.

  Args:
    config: the run config (uses .optimizer, .lr).
    params: the parameters (for the masks only).
    frozen: predicate on parameter paths; None freezes nothing. (Callers pass
      frozen_predicate(config.frozen) unless a schedule decides otherwise.)
  """
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")
  mode = opt.get("weight_decay_mode", "l2")
  if mode not in WEIGHT_DECAY_MODES:
    raise ValueError(f"optimizer.weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, "
                     f"got {mode!r}")
  decay = None
  if opt.weight_decay > 0:
    decay = optax.add_decayed_weights(opt.weight_decay,
                                      mask=_decay_mask(params, opt.get("decay_biases", False)))
  chain = []
  if opt.get("clip_grad_norm", 0.0) > 0:
    chain.append(optax.clip_by_global_norm(opt.clip_grad_norm))
  if decay is not None and mode == "l2":
    chain.append(decay)
  if opt.name == "sgd":
    if opt.momentum > 0:
      chain.append(optax.trace(decay=opt.momentum, nesterov=opt.get("nesterov", False)))
  else:
    chain.append(optax.scale_by_adam(b1=opt.momentum))  # momentum doubles as adam's b1.
  if decay is not None and mode == "decoupled":
    chain.append(decay)
  chain.append(optax.scale_by_learning_rate(learning_rate_schedule(config.lr)))
  tx = optax.chain(*chain)
  if frozen is None:
    return tx
  labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen_mask(params, frozen))
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def create_train_state(config, params: PyTree, rng: jax.Array, extra: PyTree | None = None,
                       frozen: FrozenPredicate | None = None) -> TrainState:
  """A fresh TrainState; `frozen` defaults to config.frozen's regexes."""
  if frozen is None:
    frozen = frozen_predicate(config.get("frozen", ()))
  return TrainState.create(params, make_optimizer(config, params, frozen), rng, extra)
