"""Checks a training config before anything trains: every key and value, named by its dotted key.

  config_schema.validate(config)          # ConfigError("config.lr.rates: ...") on the first fault
  config_schema.check_overrides(argv)     # --config.a.b=v names against the config file

Config files (experiments/configs/*.py) import only ml_collections, so the schema lives here, next
to the training code that reads the keys:

- the COMMON keys (read by loop.py and state.py) must all be there with their types (an int where
  a float is expected is fine), and the common sections hold no other keys;
- top-level keys outside COMMON and the schedule's CONFIG_SECTIONS are unknown;
- values in range (lr > 0, batch_size >= 1, known schedule and optimizer names, ...);
- then the schedule's own validate_config(config), if it has one.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections

from facecraft import train as train_lib
from facecraft.train import ConfigError

# Key -> type (a dict is a section). float accepts ints; tuple accepts lists.
COMMON: dict[str, Any] = {
    "seed": int, "schedule": str, "batch_size": int, "num_steps": int, "log_every": int,
    "progress_bar": bool, "frozen": tuple,
    "optimizer": dict(name=str, momentum=float, nesterov=bool, weight_decay=float,
                      weight_decay_mode=str, decay_biases=bool, clip_grad_norm=float),
    "lr": dict(rates=tuple, boundaries=tuple, warmup_steps=int),
    "checkpoint": dict(every=int, keep=int, async_save=bool),
    "eval": dict(every=int, best_metric=str, best_mode=str),
}


def check(ok: bool, key: str, message: str) -> None:
  """Raises ConfigError("config.<key>: message") unless ok."""
  if not ok:
    raise ConfigError(f"config.{key}", message)


def _type_ok(value, kind) -> bool:
  if kind is bool or isinstance(value, bool):
    return kind is bool and isinstance(value, bool)
  if kind is float:
    return isinstance(value, (int, float))
  if kind is tuple:
    return isinstance(value, (tuple, list))
  return isinstance(value, kind)


def suggest(key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def check_section(node, schema: Mapping[str, Any], prefix: str, closed: bool = True) -> None:
  """Every key of `schema` is in `node` with its type; with `closed`, nothing else is."""
  if closed:
    for key in node.keys():
      if key not in schema:
        raise ConfigError(f"{prefix}.{key}", "unknown config key" + suggest(key, schema))
  for key, kind in schema.items():
    name = f"{prefix}.{key}"
    if key not in node:
      raise ConfigError(name, "missing (start from a config file in experiments/configs)")
    value = node[key]
    if isinstance(kind, Mapping):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(name, f"must be a section, got {type(value).__name__}")
      check_section(value, kind, name)
    elif not _type_ok(value, kind):
      raise ConfigError(name, f"must be {kind.__name__}, got {type(value).__name__} {value!r}")


def _check_top_level(config, schedule) -> None:
  check_section(config, COMMON, "config", closed=False)
  sections = getattr(schedule, "CONFIG_SECTIONS", None)
  if sections is None:
    return
  allowed = set(COMMON) | set(sections) | {"evals"}
  for key in config.keys():
    if key not in allowed:
      raise ConfigError(f"config.{key}", f"unknown config key for schedule {config.schedule!r}"
                        + suggest(key, allowed))


def _check_run(config) -> None:
  check(0 <= config.seed < 2**32, "seed", f"must be in [0, 2**32), got {config.seed}")
  for key in ("batch_size", "num_steps", "log_every"):
    check(config[key] >= 1, key, f"must be >= 1, got {config[key]}")
  check(len(config.frozen) == 0 or all(isinstance(p, str) for p in config.frozen), "frozen",
        f"must be a tuple of regexes, got {config.frozen!r}")
  for pattern in config.frozen:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError("config.frozen", f"bad regex {pattern!r}: {e}") from e


def _check_optimizer(opt) -> None:
  from facecraft.train import state as state_lib  # pylint: disable=g-import-not-at-top  # optax
  check(opt.name in state_lib.OPTIMIZERS, "optimizer.name",
        f"must be one of {state_lib.OPTIMIZERS}, got {opt.name!r}")
  check(0 <= opt.momentum < 1, "optimizer.momentum", f"must be in [0, 1), got {opt.momentum}")
  check(math.isfinite(opt.weight_decay) and opt.weight_decay >= 0, "optimizer.weight_decay",
        f"must be >= 0, got {opt.weight_decay}")
  check(opt.weight_decay_mode in state_lib.WEIGHT_DECAY_MODES, "optimizer.weight_decay_mode",
        f"must be one of {state_lib.WEIGHT_DECAY_MODES}, got {opt.weight_decay_mode!r}")
  check(opt.clip_grad_norm >= 0, "optimizer.clip_grad_norm",
        f"must be >= 0 (0: off), got {opt.clip_grad_norm}")


def _check_lr(lr) -> None:
  rates, boundaries = tuple(lr.rates), tuple(lr.boundaries)
  check(len(rates) >= 1 and all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                and math.isfinite(r) and r > 0 for r in rates),
        "lr.rates", f"must be learning rates > 0, got {rates}")
  check(all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in boundaries)
        and list(boundaries) == sorted(set(boundaries)), "lr.boundaries",
        f"must be increasing steps > 0, got {boundaries}")
  check(len(rates) == len(boundaries) + 1, "lr.rates",
        f"needs len(lr.boundaries) + 1 = {len(boundaries) + 1} rates, got {len(rates)}")
  check(lr.warmup_steps >= 0, "lr.warmup_steps", f"must be >= 0, got {lr.warmup_steps}")


def _check_checkpoint_and_eval(config) -> None:
  check(config.checkpoint.every >= 1, "checkpoint.every",
        f"must be >= 1, got {config.checkpoint.every}")
  check(config.checkpoint.keep >= 1, "checkpoint.keep",
        f"must be >= 1, got {config.checkpoint.keep}")
  check(config.eval.every >= 0, "eval.every",
        f"must be >= 0 (0: at the end), got {config.eval.every}")
  check(config.eval.best_mode in ("max", "min"), "eval.best_mode",
        f"must be 'max' or 'min', got {config.eval.best_mode!r}")


def _check_evals(config) -> None:
  """config.evals (optional, big_vision style): NAME -> {type: an evaluator type, settings}."""
  if "evals" not in config:
    return
  from facecraft.eval import evaluators  # pylint: disable=g-import-not-at-top  # a lazy registry
  for name, entry in config.evals.items():
    check(isinstance(entry, ml_collections.ConfigDict) and isinstance(entry.get("type"), str),
          f"evals.{name}", "must be a section with a type (an evaluator: "
          f"{', '.join(evaluators.EVALUATORS.names())})")
    check(entry.type in evaluators.EVALUATORS, f"evals.{name}.type",
          f"unknown evaluator {entry.type!r}; known: {', '.join(evaluators.EVALUATORS.names())}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first unknown key or bad value (see the module doc)."""
  schedule = train_lib.get_schedule(config.get("schedule", ""))
  _check_top_level(config, schedule)
  _check_evals(config)
  _check_run(config)
  _check_optimizer(config.optimizer)
  _check_lr(config.lr)
  _check_checkpoint_and_eval(config)
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
        raise ConfigError(f"{walked}.{part}", "unknown config key" + suggest(part, known))
      node, walked = node[part], f"{walked}.{part}"
