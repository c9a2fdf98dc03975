r"""Joint vs four-step (issue #15): training curves of each recipe and one table from the reports.

  python -m experiments.rpn_report --recipes joint=runs/rpn_joint,four_step=runs/rpn_four_step \
      --wider experiments/results/rpn_frcnn/wider_val.json \
      --cmu experiments/results/rpn_frcnn/cmu_mit.json \
      --bench experiments/results/rpn_frcnn/bench_vga_cpu_1thread.csv \
      --models rpn-joint=rpn-joint,rpn-four-step=rpn-four-step,facecraft=facecraft,mtcnn=mtcnn \
      --out experiments/results/rpn_frcnn

A recipe's curve runs over its steps in order (experiments.rpn_recipe's WORKDIR/<k>_<stage>),
the x axis counting every step's iterations (the budget the recipes are compared at). --models
maps a row label to the model's name in each report: the WIDER and CMU+MIT json keys
(experiments.wider_report / model_report) and the bench CSV's `system` column (a bench system's
label, matched by substring). Writes recipes.md and recipe_loss.png.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re

from absl import app
from absl import flags
import numpy as np

from facecraft.eval import plots
from facecraft.train import metrics as metrics_lib

_RECIPES = flags.DEFINE_list("recipes", [], "NAME=WORKDIR of experiments.rpn_recipe runs.")
_WIDER = flags.DEFINE_list("wider", [], "wider_val.json files of experiments.wider_report "
                          "(merged; a later file's model wins).")
_CMU = flags.DEFINE_list("cmu", [], "cmu_mit.json files of experiments.model_report (merged).")
_BENCH = flags.DEFINE_string("bench", "", "CSV of experiments.bench (VGA, 1 thread).")
_MODELS = flags.DEFINE_list("models", [], "LABEL=NAME_IN_REPORTS[=BENCH_LABEL_SUBSTRING].")
_OUT = flags.DEFINE_string("out", "experiments/results/rpn_frcnn", "Output folder.")

LOSSES = (("train/rpn_cls", "RPN cls"), ("train/head_cls", "Fast R-CNN cls"))


def recipe_curves(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"<k>_<stage> <loss>": (cumulative step, value)} over the recipe's steps in order."""
  steps = sorted(glob.glob(os.path.join(workdir, "[0-9]_*")),
                 key=lambda p: int(re.match(r"(\d+)_", os.path.basename(p)).group(1)))
  curves, offset = {}, 0
  for step_dir in steps:
    if not os.path.exists(os.path.join(step_dir, metrics_lib.CSV_NAME)):
      continue
    m = metrics_lib.read_csv(step_dir)
    for key, label in LOSSES:
      if key in m and np.isfinite(m[key]).any():
        curves[f"{os.path.basename(step_dir)} {label}"] = (offset + m["step"], m[key])
    offset += int(np.nanmax(m["step"]))
  return curves


def merged(paths: list[str]) -> dict:
  out = {}
  for path in paths:
    with open(path) as f:
      out.update(json.load(f))
  return out


def bench_rows(path: str) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def table(models: list[tuple[str, str, str]], wider: dict, cmu: dict, bench: list[dict]) -> str:
  lines = ["| model | WIDER val AP easy / medium / hard | WIDER TPR@1000FP | CMU+MIT AP | "
           "CMU+MIT AP@0.3 | CMU+MIT TPR@10 / 50 / 100 FP | ms / VGA image, 1 core | compile s |",
           "|---|---|---|---|---|---|---|---|"]
  for label, name, bench_label in models:
    w, c = wider.get(name), cmu.get(name)
    b = next((r for r in bench if bench_label and bench_label in r["system"]), None)
    cells = [label,
             " / ".join(f"{w[f'ap_{s}']:.3f}" for s in ("easy", "medium", "hard")) if w else "-",
             f"{w['tpr@1000fp']:.3f}" if w else "-",
             f"{c['ap@0.5']:.3f}" if c else "-", f"{c['ap@0.3']:.3f}" if c else "-",
             " / ".join(f"{c[f'tpr@{k}fp']:.3f}" for k in (10, 50, 100)) if c else "-",
             b["ms/image"] if b else "-", b["compile s"] if b else "-"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def parse_models(items: list[str]) -> list[tuple[str, str, str]]:
  out = []
  for item in items:
    parts = item.split("=")
    if len(parts) not in (2, 3) or not all(parts):
      raise ValueError(f"--models item {item!r} is not LABEL=NAME[=BENCH_LABEL]")
    out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
  return out


def main(argv) -> None:
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  curves = {}
  for item in _RECIPES.value:
    name, _, workdir = item.partition("=")
    curves.update({f"{name} {k}": v for k, v in recipe_curves(workdir).items()})
  if curves:
    plots.plot_curves(curves, os.path.join(_OUT.value, "recipe_loss.png"),
                      "RPN + Fast R-CNN recipes: training loss", "iterations (all steps)",
                      "loss", log_y=True)
  text = table(parse_models(_MODELS.value), merged(_WIDER.value), merged(_CMU.value),
               bench_rows(_BENCH.value) if _BENCH.value else [])
  with open(os.path.join(_OUT.value, "recipes.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
