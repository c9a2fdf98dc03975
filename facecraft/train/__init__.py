"""Training: TrainState + optax (state.py), the generic jitted loop (loop.py), orbax checkpoints
(checkpoint.py), metric writers (metrics.py), config checks (config_schema.py) and one package
per model family with its schedules (cascade/: joint, greedy).

A schedule is a module with

  run(config: ml_collections.ConfigDict, workdir: str[, hooks]) -> loop.TrainResult   (required)
  validate_config(config) -> None        (optional; raises ConfigError naming the key)
  CONFIG_SECTIONS: tuple[str, ...]       (optional; its own top-level config keys, e.g. "model",
                                          "data"; any other key outside the common schema fails)

`experiments.train` picks it by `config.schedule`. The registry holds module paths so that
importing this package stays cheap and a schedule's dependencies load only when it runs.
"""

from __future__ import annotations

from types import ModuleType

from data_pipelines import registry

# A new family: write facecraft/train/<family>/<schedule>.py and add one line here.
SCHEDULES = registry.Registry("schedule")
SCHEDULES.register("cascade_joint", "facecraft.train.cascade.joint")    # issue #5: FaceCraft
SCHEDULES.register("cascade_greedy", "facecraft.train.cascade.greedy")  # its greedy baseline
SCHEDULES.register("rpn_frcnn", "facecraft.train.rpn_frcnn.schedule")  # issue #15: §5
SCHEDULES.register("toy", "facecraft.train.toy")  # an MLP on synthetic data: tests, smoke runs


class ConfigError(ValueError):
  """A config key is unknown or holds a bad value; `key` is its dotted name (config.lr.values)."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(f"{key}: {message}")


def get_schedule(name: str) -> ModuleType:
  """The schedule module registered under `name` (ConfigError naming config.schedule if unknown)."""
  if name not in SCHEDULES:
    raise ConfigError("config.schedule",
                      f"unknown schedule {name!r}; known: {', '.join(SCHEDULES.names())}")
  target = SCHEDULES.target(name)
  try:
    module = SCHEDULES.get(name)
  except ModuleNotFoundError as e:
    if e.name != target:
      raise
    raise ConfigError("config.schedule", f"schedule {name!r} is registered as {target} but "
                      "that module does not exist yet") from e
  if not callable(getattr(module, "run", None)):
    raise TypeError(f"schedule module {module.__name__} has no run(config, workdir)")
  return module
