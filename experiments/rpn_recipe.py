r"""Runs one RPN + Fast R-CNN recipe end to end (issue #15): every step, resumable, then a bundle.

  python -m experiments.rpn_recipe --recipe joint --workdir runs/rpn_joint \
      [--config_arg extra=DIR] [--steps 20000] [--set data.root=../shared/data ...]
  python -m experiments.rpn_recipe --recipe four_step --workdir runs/rpn_four_step

  joint      1 rpn (scratch); 2 joint (init 1, RoIs from 1's RPN)                  FaceCraft §5
  four_step  1 rpn (scratch); 2 frcnn (scratch, RoIs from 1); 3 rpn (init 2, trunk frozen);
             4 frcnn (init 3, trunk frozen, RoIs from 3)                         Ren et al.

Steps live in WORKDIR/<k>_<stage>; a killed run is rerun with the same command: finished steps
return at once (their checkpoints say so), the interrupted one resumes. A SIGTERM ends the
recipe with exit status 3 after the step's checkpoint: no later step and no bundle. Both recipes
give every step the same --steps (the budget per step; joint has two steps, four_step four: the paper's
"2x faster" is the step count). The last step is bundled as WORKDIR/<name>.npz.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

from experiments import launch
from experiments.configs import rpn_frcnn

_RECIPE = flags.DEFINE_enum("recipe", "joint", ["joint", "four_step"], "Which recipe.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the steps and the bundle.")
_ARG = flags.DEFINE_string("config_arg", "", "Extra words for rpn_frcnn.get_config (extra=DIR, "
                           "smoke).")
_STEPS = flags.DEFINE_integer("steps", 0, "Steps per recipe step (0: the config's).")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE config overrides for every step "
                                 "(a Python literal or a string), e.g. data.root=../shared/data.")
_NAME = flags.DEFINE_string("name", "", "Bundle name (default rpn-<recipe>).")
flags.mark_flags_as_required(["workdir"])


def steps(recipe: str, workdir: str) -> list[dict]:
  """[{dir, arg, init, proposals}] of a recipe, in order."""
  d = lambda k, s: os.path.join(workdir, f"{k}_{s}")  # noqa: E731
  if recipe == "joint":
    return [dict(dir=d(1, "rpn"), arg="rpn", init="", proposals=""),
            dict(dir=d(2, "joint"), arg="joint", init=d(1, "rpn"), proposals=d(1, "rpn"))]
  return [dict(dir=d(1, "rpn"), arg="rpn", init="", proposals=""),
          dict(dir=d(2, "frcnn"), arg="frcnn", init="", proposals=d(1, "rpn")),
          dict(dir=d(3, "rpn"), arg="rpn,frozen_trunk", init=d(2, "frcnn"), proposals=""),
          dict(dir=d(4, "frcnn"), arg="frcnn,frozen_trunk", init=d(3, "rpn"),
               proposals=d(3, "rpn"))]


def step_config(step: dict, extra_arg: str, num_steps: int, overrides: list[str]):
  import ast  # pylint: disable=g-import-not-at-top
  config = rpn_frcnn.get_config(",".join(w for w in (step["arg"], extra_arg) if w))
  config.init.from_workdir = step["init"]
  config.rpn.proposals_from = step["proposals"]
  if num_steps:
    boundary = config.lr.boundaries[0] / config.num_steps
    config.num_steps = num_steps
    config.lr.boundaries = (max(1, int(round(num_steps * boundary))),)
    config.checkpoint.every = min(config.checkpoint.every, num_steps)
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node = config
    for part in key.split(".")[:-1]:
      node = node[part]
    node[key.split(".")[-1]] = value
  return config


def run_recipe(recipe: str, workdir: str, config_arg: str = "", num_steps: int = 0,
               overrides: list[str] = (), name: str = "") -> str:
  """Trains every step of `recipe` in order (finished steps return at once), then bundles the
  last one; returns the bundle path. A SIGTERM'd step raises SystemExit(3), nothing bundled."""
  from facecraft.train import config_schema  # pylint: disable=g-import-not-at-top
  from facecraft.train.rpn_frcnn import schedule  # pylint: disable=g-import-not-at-top
  plan = steps(recipe, workdir)
  config = None
  for k, step in enumerate(plan, 1):
    config = step_config(step, config_arg, num_steps, list(overrides))
    config_schema.validate(config)
    print(f"[{recipe} step {k}/{len(plan)}] {step['arg']} -> {step['dir']}", flush=True)
    result = schedule.run(config, step["dir"])
    if result.preempted:  # a later step must not start, nor a bundle be made, from a cut step
      print(f"[{recipe} step {k}/{len(plan)}] stopped at step {result.step} of "
            f"{config.num_steps} (SIGTERM; checkpointed): rerun the same command to resume",
            flush=True)
      raise SystemExit(3)
  name = name or f"rpn-{recipe.replace('_', '-')}"
  path = schedule.export(config, plan[-1]["dir"], os.path.join(workdir, f"{name}.npz"))
  print(json.dumps({"recipe": recipe, "bundle": path, "steps": [s["dir"] for s in plan]}))
  return path


def main(argv) -> None:
  del argv
  run_recipe(_RECIPE.value, _WORKDIR.value, _ARG.value, _STEPS.value, _SET.value, _NAME.value)


if __name__ == "__main__":
  app.run(main, flags_parser=launch.flags_parser)
