"""Orbax checkpoints of a TrainState, the data iterator's position and run metadata.

Layout of a workdir:

  checkpoints/<step>/model   {"params", "extra"}         (StandardSave: all the model needs)
                     train   {"step", "opt_state", "rng"}
                     data    JSON: the data iterator's get_state() ({} when it has none)
                     meta    JSON: step, best-so-far, wall time, why it was saved
  best/<step>/model, meta    the checkpoint with the best eval metric (params only)

Orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save (SIGKILL) leaves the previous checkpoint intact; the manager removes the leftovers the
next time it opens the folder.
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from facecraft.train import state as state_lib

LATEST, BEST = "checkpoints", "best"


class _OrbaxInfoFilter(std_logging.Filter):
  """Drops orbax's INFO chatter (tens of lines per save); its warnings and errors still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logs() -> None:
  """Installs _OrbaxInfoFilter on absl's handler (launchers call it; idempotent)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
    handler.addFilter(_OrbaxInfoFilter())


def _manager(directory: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _abstract(tree):
  # Restore targets: shapes and dtypes (and the structure, namedtuples included) of a fresh state.
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """The latest-N and best checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = os.fspath(workdir)
    self.latest = _manager(os.path.join(self.workdir, LATEST), keep, async_save)
    self.best = _manager(os.path.join(self.workdir, BEST), 1, False)

  @property
  def latest_dir(self) -> str:
    return os.path.join(self.workdir, LATEST)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.latest.all_steps())

  def save(self, state: state_lib.TrainState, data_state: dict | None, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in self.latest.all_steps():  # Already saved (e.g. SIGTERM right after a save).
      return
    self.latest.save(step, force=True, args=ocp.args.Composite(
        model=ocp.args.StandardSave({"params": state.params, "extra": state.extra}),
        train=ocp.args.StandardSave(
            {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave({**meta, "step": step})))

  def save_best(self, state: state_lib.TrainState, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in self.best.all_steps():
      self.best.delete(step)
    self.best.save(step, force=True, args=ocp.args.Composite(
        model=ocp.args.StandardSave({"params": state.params, "extra": state.extra}),
        meta=ocp.args.JsonSave({**meta, "step": step})))

  def restore(self, target: state_lib.TrainState, step: int | None = None
              ) -> tuple[state_lib.TrainState, dict, dict]:
    """(state, data_state, meta) of `step` (default latest) into the structure of `target`.

    target: a TrainState of the right structure, e.g. jax.eval_shape of the fresh state.
    """
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.latest_dir}")
    restored = self.latest.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract({"params": target.params,
                                                  "extra": target.extra})),
        train=ocp.args.StandardRestore(_abstract(
            {"step": target.step, "opt_state": target.opt_state, "rng": target.rng})),
        data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    model, train = restored.model, restored.train
    state = target.replace(step=train["step"], params=model["params"],
                           opt_state=train["opt_state"], rng=train["rng"], extra=model["extra"])
    return state, dict(restored.data or {}), dict(restored.meta or {})

  def best_meta(self) -> dict | None:
    step = self.best.latest_step()
    if step is None:
      return None
    return dict(self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _step_of(manager: ocp.CheckpointManager, step: int | None, where: str) -> int:
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"no checkpoint {'' if step is None else step} in {where}")
  return step


def load_params(workdir: str, which: str = LATEST, step: int | None = None
                ) -> tuple[Any, Any, int]:
  """(params, extra, step) of a run, without its optimizer: for evaluation, export or to start
  the next stage of a schedule. which: "checkpoints" (latest) or "best". Arrays are numpy."""
  if which not in (LATEST, BEST):
    raise ValueError(f"which must be {LATEST!r} or {BEST!r}, got {which!r}")
  directory = os.path.abspath(os.path.join(os.fspath(workdir), which))
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False)) as manager:
    step = _step_of(manager, step, directory)
    model = manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore())).model
  model = jax.device_get(model)
  return model["params"], model.get("extra", {}), step


def load_tree(workdir: str, step: int | None = None) -> dict:
  """Every item of a latest-N checkpoint as plain nested dicts of numpy arrays (for tests and
  inspection: model, train, data, meta)."""
  directory = os.path.abspath(os.path.join(os.fspath(workdir), LATEST))
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False)) as manager:
    step = _step_of(manager, step, directory)
    restored = manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(), train=ocp.args.StandardRestore(),
        data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
  return {name: jax.device_get(restored[name]) for name in ("model", "train", "data", "meta")}
