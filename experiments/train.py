r"""Trains with a config file; rerun the same command to resume from --workdir.

  python -m experiments.train --config experiments/configs/joint_cascade.py \
      --workdir runs/joint --config.data.root ../shared/data

Any key is overridable (--config.lr.rates='(1e-3, 1e-4)'); the schedule comes from
config.schedule (facecraft.train.SCHEDULES). The config is checked before training: an unknown
key or a bad value stops with the key's dotted name.

Exit status: 0 trained to num_steps, or stopped by SIGTERM after saving (the log says so; the
same command resumes); 2 bad command line or config; 3 the loss became NaN/inf (the message
names the step; the last good checkpoint is kept). A SIGKILLed run resumes from its last
checkpoint and, on CPU, ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import json
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import launch
from facecraft import train as train_lib
from facecraft.train import checkpoint
from facecraft.train import config_schema
from facecraft.train import ConfigError

EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE = 0, 2, 3

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (get_config()), optionally path:arg.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Checkpoints, metrics.csv, TensorBoard events; an existing one is resumed.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str, code: int):
  print(f"experiments.train: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with override names checked first and config errors exiting with status 2."""
  launch.exit_on_help(argv)
  try:
    config_schema.check_overrides(argv[1:])
  except (ConfigError, FileNotFoundError) as e:
    _fail(f"config error: {e}", EXIT_CONFIG)
  except Exception as e:  # pylint: disable=broad-except  # The config file's own code failed.
    _fail(f"cannot load the config file: {type(e).__name__}: {e}", EXIT_CONFIG)
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(f"bad command line: {e}", EXIT_CONFIG)


def make_hooks(config, schedule) -> dict | None:
  """Launcher-built hooks for schedules whose run() takes them (the cascades: the CMU+MIT
  detection evaluation of experiments/cascade_eval.py, which needs the inference engine)."""
  if "hooks" not in inspect.signature(schedule.run).parameters:
    return None
  if config.schedule in ("cascade_joint", "cascade_greedy"):
    from experiments import cascade_eval  # pylint: disable=g-import-not-at-top
    return cascade_eval.make_hooks(config)
  return None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]}", EXIT_CONFIG)
  config = _CONFIG.value
  checkpoint.quiet_orbax_logs()
  try:
    config_schema.validate(config)
    schedule = train_lib.get_schedule(config.schedule)
  except ConfigError as e:
    _fail(f"config error: {e}", EXIT_CONFIG)
  from facecraft.train import loop  # pylint: disable=g-import-not-at-top
  hooks = make_hooks(config, schedule)
  try:
    result = (schedule.run(config, _WORKDIR.value) if hooks is None else
              schedule.run(config, _WORKDIR.value, hooks=hooks))
  except loop.NonFiniteLossError as e:
    _fail(str(e), EXIT_NONFINITE)
  summary = {"workdir": _WORKDIR.value, "step": getattr(result, "step", None),
             "preempted": getattr(result, "preempted", False),
             "best": getattr(result, "best", None),
             "eval": getattr(result, "eval_metrics", None),
             "compile_time_s": getattr(result, "compile_time_s", None),
             "samples_per_sec": getattr(result, "samples_per_sec", None)}
  if summary["preempted"]:
    logging.warning("stopped by SIGTERM at step %s after saving; rerun the same command to "
                    "resume", summary["step"])
  print(json.dumps(summary, sort_keys=True), flush=True)
  sys.exit(EXIT_OK)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
