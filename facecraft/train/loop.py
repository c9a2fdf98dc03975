"""The generic training loop: one jitted step, checkpoints, resume, metrics, eval, SIGTERM.

  result = loop.train(config, workdir, init_fn, loss_fn, data_iter_fn, eval_fn)

init_fn(rng) -> params                      ((params, extra) with uses_extra=True)
loss_fn(params, batch, rng, step) -> (loss, metrics)
    with uses_extra=True: loss_fn(params, batch, rng, step, extra) -> (loss, (metrics, extra))
    (extra: non-trained state, e.g. regression statistics read or batch-norm statistics updated)
data_iter_fn() -> iterator (or iterable) of batches: dicts of numpy arrays of fixed shapes.
    With get_state()/set_state() (grain DatasetIterator, data_pipelines.loader) its position
    is saved with every checkpoint and a resumed run sees exactly the next batch; without them
    a resumed run fast-forwards by drawing the batches already used.
eval_fn(state) -> {name: float}             (optional; every config.eval.every steps and at the end)

Keys read: seed, num_steps, log_every, progress_bar, optimizer.*, lr.*, frozen,
checkpoint.{every, keep, async_save}, eval.{every, best_metric, best_mode} (common.py).

Reproducibility: the init and step keys come from config.seed alone, the step is compiled once
(AOT, which also measures the compile time) and every leaf of the state is checkpointed, so on
CPU a run resumed from any checkpoint ends bit for bit where an uninterrupted run ends.
Non-finite loss or gradient norm (or parameters at a save): NonFiniteLossError naming the step;
metrics are checked before every save, so no checkpoint ever holds the diverged state.
SIGTERM: the loop finishes the current step, saves and returns with preempted=True (the
launcher then exits 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from facecraft.train import checkpoint as checkpoint_lib
from facecraft.train import metrics as metrics_lib
from facecraft.train import state as state_lib

PyTree = Any
InitFn = Callable[[jax.Array], Any]
LossFn = Callable[..., tuple[jax.Array, Any]]
EvalFn = Callable[[state_lib.TrainState], Mapping[str, float]]
_LAST_VALUE_METRICS = ("lr",)  # Logged at the window's last step; everything else is averaged.


class NonFiniteLossError(FloatingPointError):
  """The loss (or gradient norm) became NaN/inf; the last good checkpoint is left as it was."""

  def __init__(self, step: int, name: str, value: float, checkpoint_step: int | None,
               checkpoint_dir: str):
    self.step, self.name, self.value, self.checkpoint_step = step, name, value, checkpoint_step
    kept = (f"the last good checkpoint is step {checkpoint_step} in {checkpoint_dir}"
            if checkpoint_step is not None else "no checkpoint had been saved yet")
    super().__init__(f"non-finite {name} ({value}) at step {step}: training stopped and nothing "
                     f"after it was saved; {kept}")


@dataclasses.dataclass
class TrainResult:
  state: state_lib.TrainState
  step: int                          # updates applied
  preempted: bool                    # stopped early by SIGTERM (a checkpoint holds `step`)
  eval_metrics: dict[str, float]     # the last eval (empty without eval_fn)
  best: dict | None                  # {"metric", "value", "step"} of workdir/best
  compile_time_s: float | None       # None when the run was already complete
  samples_per_sec: float | None      # over the whole run, compile and eval/save pauses excluded
  workdir: str


def _global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


@jax.jit
def _all_finite(tree) -> jax.Array:
  if not jax.tree.leaves(tree):
    return jnp.bool_(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(loss_fn: LossFn, uses_extra: bool = False,
                    lr_schedule: optax.Schedule | None = None):
  """(state, batch) -> (state, metrics): the loss's metrics plus loss, grad_norm and lr."""

  def train_step(state: state_lib.TrainState, batch):
    rng = state.step_rng()

    def objective(params):
      if uses_extra:
        loss, (aux, extra) = loss_fn(params, batch, rng, state.step, state.extra)
      else:
        (loss, aux), extra = loss_fn(params, batch, rng, state.step), state.extra
      return loss, (aux, extra)

    (loss, (aux, extra)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    metrics = {**dict(aux or {}), "loss": loss, "grad_norm": _global_norm(grads)}
    if lr_schedule is not None:
      metrics["lr"] = lr_schedule(state.step)
    return state.apply_gradients(grads, extra=extra), metrics

  return train_step


@contextlib.contextmanager
def sigterm_flag():
  """A threading.Event set by SIGTERM while inside (only the main thread can install it)."""
  event = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield event
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
  try:
    yield event
  finally:
    signal.signal(signal.SIGTERM, previous)


def _batch_size(batch) -> int:
  leaves = jax.tree.leaves(batch)
  return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


def _save_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() != text:
        logging.warning("%s differs from this run's config (overrides changed?); keeping the old "
                        "one as config.json.prev", path)
        os.replace(path, path + ".prev")
  with open(path, "w") as f:
    f.write(text)


def _host_metrics(pending) -> list[tuple[int, dict[str, float]]]:
  return [(step, {k: float(v) for k, v in m.items()}) for step, m in jax.device_get(pending)]


def _window_summary(window: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
  keys = window[-1][1].keys()
  return {f"train/{k}": (window[-1][1][k] if k in _LAST_VALUE_METRICS else
                         float(np.mean([m[k] for _, m in window]))) for k in keys}


def _is_better(value: float, best: float | None, mode: str) -> bool:
  if best is None or math.isnan(best):
    return not math.isnan(value)
  return value > best if mode == "max" else value < best


def train(config, workdir: str, init_fn: InitFn, loss_fn: LossFn,
          data_iter_fn: Callable[[], Iterator], eval_fn: EvalFn | None = None, *,
          uses_extra: bool = False, frozen: state_lib.FrozenPredicate | None = None,
          jit_init: bool = True) -> TrainResult:
  """Trains (or resumes, or just restores a finished run in) `workdir`; see the module doc.

  uses_extra: loss_fn takes and returns `extra` (and init_fn returns (params, extra)).
  frozen: predicate on parameter paths held still; None uses the regexes in config.frozen.
  jit_init: run init_fn under jit (one compile). Pass False when init_fn loads big arrays
    (e.g. checkpoint.load_params of an earlier stage): under jit they become HLO constants.
  """
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # SIGTERM is caught from here on: one during setup or compilation stops after the first step.
  with sigterm_flag() as terminated:
    ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.checkpoint.keep,
                                       async_save=config.checkpoint.async_save)
    try:
      return _train(config, workdir, ckpt, terminated, init_fn, loss_fn, data_iter_fn, eval_fn,
                    uses_extra, frozen, jit_init)
    finally:
      ckpt.wait()
      ckpt.close()


def _train(config, workdir, ckpt, terminated, init_fn, loss_fn, data_iter_fn, eval_fn,
           uses_extra, frozen, jit_init) -> TrainResult:
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))

  def fresh_state():
    out = init_fn(init_rng)
    params, extra = out if uses_extra else (out, None)
    return state_lib.create_train_state(config, params, train_rng, extra, frozen)

  data_state = None
  if ckpt.latest_step() is not None:
    state, data_state, _ = ckpt.restore(jax.eval_shape(fresh_state))
    logging.info("resumed %s at step %d", workdir, int(state.step))
  else:
    state = jax.jit(fresh_state)() if jit_init else fresh_state()
  start = int(jax.device_get(state.step))
  num_steps = int(config.num_steps)
  best_metric, best_mode = config.eval.best_metric, config.eval.best_mode
  best = ckpt.best_meta() if best_metric else None
  result = TrainResult(state, start, False, {}, best and {k: best[k] for k in (
      "metric", "value", "step")}, None, None, workdir)
  _save_config(config, workdir)
  if start >= num_steps:
    logging.info("%s is already at step %d >= num_steps %d: nothing to train", workdir, start,
                 num_steps)
    return result

  iterator = data_iter_fn()
  if not hasattr(iterator, "__next__"):  # An iterable such as a grain IterDataset.
    iterator = iter(iterator)
  if data_state:
    iterator.set_state(data_state)
  elif start > 0:
    logging.warning("the data iterator has no saved state: fast-forwarding %d batches", start)
    for _ in range(start):
      next(iterator)
  checkpointable = callable(getattr(iterator, "get_state", None))

  lr_schedule = state_lib.learning_rate_schedule(config.lr)
  jitted = jax.jit(make_train_step(loss_fn, uses_extra, lr_schedule), donate_argnums=0)
  batch = next(iterator)
  t0 = time.perf_counter()
  step_fn = jitted.lower(state, batch).compile()
  result.compile_time_s = compile_time = time.perf_counter() - t0
  logging.info("train step compiled in %.2f s", compile_time)

  log_every, ckpt_every = int(config.log_every), int(config.checkpoint.every)
  eval_every = int(config.eval.every)
  pending: list = []
  total_samples, total_time = 0, 0.0
  window_samples, window_t0 = 0, time.perf_counter()
  first_log = True
  writer = metrics_lib.MetricWriter(workdir, resume_step=start)

  def flush(done: int, check_params: bool) -> None:
    """Logs the steps since the last flush; raises if any of them diverged."""
    nonlocal pending, window_samples, window_t0, total_samples, total_time, first_log
    window = _host_metrics(pending)  # Blocks until the window's steps have run.
    elapsed = time.perf_counter() - window_t0
    pending = []
    for step, m in window:
      for name in ("loss", "grad_norm"):
        if not math.isfinite(m[name]):
          raise NonFiniteLossError(step, name, m[name], ckpt.latest_step(), ckpt.latest_dir)
    if check_params and not bool(_all_finite(state.params)):  # A finite loss can still overflow.
      raise NonFiniteLossError(done, "parameters", math.nan, ckpt.latest_step(), ckpt.latest_dir)
    scalars = _window_summary(window)
    scalars["train/samples_per_sec"] = window_samples / max(elapsed, 1e-9)
    scalars["train/steps_per_sec"] = len(window) / max(elapsed, 1e-9)
    if first_log:
      scalars["train/compile_time_s"] = compile_time
      first_log = False
    total_samples, total_time = total_samples + window_samples, total_time + elapsed
    writer.write(done, scalars)
    bar.set_postfix(loss=f"{scalars['train/loss']:.4g}",
                    samples_per_s=f"{scalars['train/samples_per_sec']:.0f}")
    window_samples = 0

  def evaluate(done: int) -> None:
    metrics = jax.device_get(dict(eval_fn(state)))
    result.eval_metrics = {k: float(v) for k, v in metrics.items()}
    writer.write(done, {f"eval/{k}": v for k, v in result.eval_metrics.items()})
    if not best_metric:
      return
    if best_metric not in result.eval_metrics:
      raise KeyError(f"config.eval.best_metric {best_metric!r} is not among the eval metrics "
                     f"{sorted(result.eval_metrics)}")
    value = result.eval_metrics[best_metric]
    if _is_better(value, result.best and result.best["value"], best_mode):
      result.best = {"metric": best_metric, "value": value, "step": done}
      ckpt.save_best(state, dict(result.best))

  try:
    with tqdm(total=num_steps, initial=start, unit="step", dynamic_ncols=True,
              disable=not config.progress_bar) as bar:
      for done in range(start + 1, num_steps + 1):
        if done > start + 1:
          batch = next(iterator)
        state, step_metrics = step_fn(state, batch)
        pending.append((done, step_metrics))
        window_samples += _batch_size(batch)
        bar.update(1)
        last = done == num_steps
        do_eval = eval_fn is not None and (last or (eval_every > 0 and done % eval_every == 0))
        do_save = last or done % ckpt_every == 0 or terminated.is_set()
        if last or do_eval or do_save or done % log_every == 0:
          # Raises on NaN before anything below can save the diverged state.
          flush(done, check_params=do_eval or do_save)
        if do_eval:
          evaluate(done)
        if do_save:
          ckpt.save(state, iterator.get_state() if checkpointable else None, {
              "why": "preempted" if terminated.is_set() and not last else "periodic",
              "wall_time": time.time(), "best": result.best})
        if not pending:  # Flushed (then maybe evaluated, saved): the next window starts now.
          window_t0 = time.perf_counter()
        if terminated.is_set() and not last:
          logging.warning("SIGTERM: saved step %d in %s; run the same command to resume", done,
                          ckpt.latest_dir)
          result.preempted = True
          break
    result.state, result.step = state, int(jax.device_get(state.step))
    result.samples_per_sec = total_samples / total_time if total_time > 0 else None
    return result
  finally:
    writer.close()
