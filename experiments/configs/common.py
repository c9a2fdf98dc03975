"""Config pieces shared by every training config, and their validation.

A training config file is `get_config()` returning base_config() plus the schedule's own
sections (its module's CONFIG_SECTIONS, e.g. "model", "data"). validate() runs before any
training and raises facecraft.train.ConfigError naming the key (config.lr.rates, ...):

- the common keys must all be there with the schema's types (an int where a float is expected is
  fine), and the common sections (optimizer, lr, checkpoint, eval) hold no other keys;
- top-level keys outside the schema and outside the schedule's CONFIG_SECTIONS are unknown;
- values in range (lr > 0, batch_size >= 1, known schedule and optimizer names, ...);
- then the schedule's own validate_config(config), if it has one.

check_overrides() checks the `--config.a.b=v` names of a command line against the config file
before absl parses it, so that a misspelt key fails with its dotted name and a suggestion.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from typing import Sequence

import ml_collections

from facecraft import train as train_lib
from facecraft.train import ConfigError

COMMON_SECTIONS = ("optimizer", "lr", "checkpoint", "eval")


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the paper's Caffe recipe (SGD, momentum 0.9, L2 5e-4, lr 1e-3 then 1e-4)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.schedule = ""           # A name in facecraft.train.SCHEDULES.
  config.batch_size = 64
  config.num_steps = 10_000
  config.log_every = 100
  config.progress_bar = True
  config.frozen = ()             # Regexes on parameter paths ("x12/conv1/kernel") held still.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # "sgd" or "adam" (momentum is adam's b1).
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.weight_decay_mode = "l2"  # "l2": Caffe, added to the gradient; or "decoupled".
  config.optimizer.decay_biases = False
  config.optimizer.clip_grad_norm = 0.0      # 0: no clipping.

  config.lr = ml_collections.ConfigDict()
  config.lr.rates = (1e-3, 1e-4)             # rates[i] from boundaries[i - 1] on.
  config.lr.boundaries = (8_000,)
  config.lr.warmup_steps = 0

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every = 1_000
  config.checkpoint.keep = 3
  config.checkpoint.async_save = True

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 0           # 0: only at the end (when the schedule has an eval).
  config.eval.best_metric = ""    # e.g. "ap": keep workdir/best by this eval metric.
  config.eval.best_mode = "max"   # "max" or "min".
  return config


# ------------------------------------------------------------------------- schema


def _type_ok(value, reference) -> bool:
  if isinstance(reference, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(reference, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float))
  if isinstance(reference, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(reference))


def _suggest(key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def _check_schema(config, reference, prefix: str, closed: bool) -> None:
  for key in reference.keys():
    name = f"{prefix}.{key}"
    if key not in config:
      raise ConfigError(name, "missing (start the config from common.base_config())")
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(name, f"must be a section, got {type(value).__name__}")
      _check_schema(value, ref, name, closed=True)
    elif not _type_ok(value, ref):
      raise ConfigError(name, f"must be {type(ref).__name__}, got {type(value).__name__} "
                        f"{value!r}")
  if closed:
    for key in config.keys():
      if key not in reference:
        raise ConfigError(f"{prefix}.{key}", "unknown config key" + _suggest(key, reference))


def _check(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}", message)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first unknown key or bad value (see the module doc)."""
  schedule = train_lib.get_schedule(config.get("schedule", ""))
  reference = base_config()
  _check_schema(config, reference, "config", closed=False)
  sections = getattr(schedule, "CONFIG_SECTIONS", None)
  if sections is not None:
    allowed = set(reference.keys()) | set(sections)
    for key in config.keys():
      if key not in allowed:
        raise ConfigError(f"config.{key}", f"unknown config key for schedule {config.schedule!r}"
                          + _suggest(key, allowed))

  _check(0 <= config.seed < 2**32, "seed", f"must be in [0, 2**32), got {config.seed}")
  for key in ("batch_size", "num_steps", "log_every"):
    _check(config[key] >= 1, key, f"must be >= 1, got {config[key]}")
  _check(len(config.frozen) == 0 or all(isinstance(p, str) for p in config.frozen), "frozen",
         f"must be a tuple of regexes, got {config.frozen!r}")
  for pattern in config.frozen:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError("config.frozen", f"bad regex {pattern!r}: {e}") from e

  from facecraft.train import state as state_lib  # pylint: disable=g-import-not-at-top
  opt = config.optimizer
  _check(opt.name in state_lib.OPTIMIZERS, "optimizer.name",
         f"must be one of {state_lib.OPTIMIZERS}, got {opt.name!r}")
  _check(0 <= opt.momentum < 1, "optimizer.momentum", f"must be in [0, 1), got {opt.momentum}")
  _check(math.isfinite(opt.weight_decay) and opt.weight_decay >= 0, "optimizer.weight_decay",
         f"must be >= 0, got {opt.weight_decay}")
  _check(opt.weight_decay_mode in state_lib.WEIGHT_DECAY_MODES, "optimizer.weight_decay_mode",
         f"must be one of {state_lib.WEIGHT_DECAY_MODES}, got {opt.weight_decay_mode!r}")
  _check(opt.clip_grad_norm >= 0, "optimizer.clip_grad_norm",
         f"must be >= 0 (0: off), got {opt.clip_grad_norm}")

  rates, boundaries = tuple(config.lr.rates), tuple(config.lr.boundaries)
  _check(len(rates) >= 1 and all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                 and math.isfinite(r) and r > 0 for r in rates),
         "lr.rates", f"must be learning rates > 0, got {rates}")
  _check(all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in boundaries)
         and list(boundaries) == sorted(set(boundaries)), "lr.boundaries",
         f"must be increasing steps > 0, got {boundaries}")
  _check(len(rates) == len(boundaries) + 1, "lr.rates",
         f"needs len(lr.boundaries) + 1 = {len(boundaries) + 1} rates, got {len(rates)}")
  _check(config.lr.warmup_steps >= 0, "lr.warmup_steps",
         f"must be >= 0, got {config.lr.warmup_steps}")

  _check(config.checkpoint.every >= 1, "checkpoint.every",
         f"must be >= 1, got {config.checkpoint.every}")
  _check(config.checkpoint.keep >= 1, "checkpoint.keep",
         f"must be >= 1, got {config.checkpoint.keep}")
  _check(config.eval.every >= 0, "eval.every", f"must be >= 0 (0: at the end), got "
         f"{config.eval.every}")
  _check(config.eval.best_mode in ("max", "min"), "eval.best_mode",
         f"must be 'max' or 'min', got {config.eval.best_mode!r}")

  schedule_check = getattr(schedule, "validate_config", None)
  if schedule_check is not None:
    schedule_check(config)


# ------------------------------------------------------------------------- command lines


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """get_config() of `path` or `path:arg`, as ml_collections' config_flags loads it."""
  path, _, arg = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config file {path}")
  module_spec = importlib.util.spec_from_file_location("_facecraft_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def override_keys(argv: Sequence[str], flag: str = "config") -> tuple[str | None, list[str]]:
  """(config file, dotted keys overridden) of a command line: --config=f --config.a.b=v ..."""
  spec, keys = None, []
  args = list(argv)
  for i, arg in enumerate(args):
    if arg == "--":
      break
    name = arg.lstrip("-").split("=", 1)[0] if arg.startswith("--") else None
    if name is None:
      continue
    if name == flag:
      spec = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else None)
    elif name.startswith(flag + ".") or name.startswith("no" + flag + "."):
      keys.append(name.split(".", 1)[1])
  return spec, keys


def check_overrides(argv: Sequence[str], flag: str = "config") -> None:
  """Loads the config file (FileNotFoundError if absent) and raises ConfigError naming the first
  --config.key that it does not have."""
  spec, keys = override_keys(argv, flag)
  if spec is None:
    return
  config = load_config_file(spec)
  for key in keys:
    node, walked = config, flag
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
        raise ConfigError(f"{walked}.{part}", "unknown config key" + _suggest(part, known))
      node, walked = node[part], f"{walked}.{part}"
