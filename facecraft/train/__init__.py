"""Training: TrainState + optax (state.py), the generic jitted loop (loop.py), orbax checkpoints
(checkpoint.py), metric writers (metrics.py) and one schedule module per training method.

A schedule is a module with

  run(config: ml_collections.ConfigDict, workdir: str) -> loop.TrainResult   (required)
  validate_config(config) -> None        (optional; raises ConfigError naming the key)
  CONFIG_SECTIONS: tuple[str, ...]       (optional; its own top-level config keys, e.g. "model",
                                          "data"; any other key outside the common schema fails)

`experiments.train` picks it by `config.schedule`. The registry holds module paths so that
importing this package stays cheap and a schedule's dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SCHEDULES: dict[str, str] = {
    # Written with issue #5 (the joint FaceCraft cascade and its greedy baseline).
    "cascade_joint": "facecraft.train.cascade_joint",
    "cascade_greedy": "facecraft.train.cascade_greedy",
    # A linear/MLP classifier on synthetic data through the real loop: tests and smoke runs.
    "toy": "facecraft.train.toy",
}


class ConfigError(ValueError):
  """A config key is unknown or holds a bad value; `key` is its dotted name (config.lr.values)."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(f"{key}: {message}")


def get_schedule(name: str) -> ModuleType:
  """The schedule module registered under `name` (ConfigError naming config.schedule if unknown)."""
  if name not in SCHEDULES:
    raise ConfigError("config.schedule",
                      f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
  try:
    module = importlib.import_module(SCHEDULES[name])
  except ModuleNotFoundError as e:
    if e.name != SCHEDULES[name]:
      raise
    raise ConfigError("config.schedule",
                      f"schedule {name!r} is registered as {SCHEDULES[name]} but that module "
                      "does not exist yet") from e
  if not callable(getattr(module, "run", None)):
    raise TypeError(f"schedule module {module.__name__} has no run(config, workdir)")
  return module
