"""experiments/rpn_report.py end to end (a subprocess: its flags would clash with model_report's
in this process): curves over a recipe's steps in order, and the table from the reports."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _metrics(path: pathlib.Path, rows: list[dict]) -> None:
  path.mkdir(parents=True)
  names = sorted({k for r in rows for k in r})
  with open(path / "metrics.csv", "w", newline="") as f:
    w = csv.DictWriter(f, names)
    w.writeheader()
    w.writerows(rows)


def test_report_joins_steps_and_reports(tmp_path):
  run = tmp_path / "joint"
  _metrics(run / "1_rpn", [{"step": 50, "train/rpn_cls": 0.5}, {"step": 100, "train/rpn_cls": 0.2}])
  _metrics(run / "2_joint", [{"step": 50, "train/rpn_cls": 0.1, "train/head_cls": 0.3}])
  wider = {"rpn-joint": {"ap_easy": 0.5, "ap_medium": 0.4, "ap_hard": 0.2, "tpr@1000fp": 0.6}}
  cmu = {"rpn-joint": {"ap@0.5": 0.8, "ap@0.3": 0.9, "tpr@10fp": 0.1, "tpr@50fp": 0.2, "tpr@100fp": 0.3}}
  (tmp_path / "w.json").write_text(json.dumps(wider))
  (tmp_path / "c.json").write_text(json.dumps(cmu))
  with open(tmp_path / "b.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["system", "ms/image", "compile s"])
    w.writeheader()
    w.writerow({"system": "FaceCraft --bundle (batch 1)", "ms/image": "12.5", "compile s": "3.0"})
  out = tmp_path / "out"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  res = subprocess.run(
      [sys.executable, "-m", "experiments.rpn_report", f"--recipes=joint={run}",
       f"--wider={tmp_path / 'w.json'}", f"--cmu={tmp_path / 'c.json'}",
       f"--bench={tmp_path / 'b.csv'}", "--models=joint=rpn-joint=--bundle,mtcnn=mtcnn",
       f"--out={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  lines = (out / "recipes.md").read_text().splitlines()
  assert lines[2] == ("| joint | 0.500 / 0.400 / 0.200 | 0.600 | 0.800 | 0.900 | 0.100 / 0.200 / "
                      "0.300 | 12.5 | 3.0 |")
  assert lines[3] == "| mtcnn | - | - | - | - | - | - | - |"  # in no report: dashes, no crash
  assert (out / "recipe_loss.png").stat().st_size > 1000

  code = ("import json, sys; from experiments import rpn_report; c = rpn_report.recipe_curves("
          "sys.argv[1]); print(json.dumps({k: [list(map(float, x)), list(map(float, y))] "
          "for k, (x, y) in c.items()}))")
  res = subprocess.run([sys.executable, "-c", code, str(run)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  curves = json.loads(res.stdout)
  # The second step's iterations count after the first's 100.
  assert curves["1_rpn RPN cls"] == [[50, 100], [0.5, 0.2]]
  assert curves["2_joint RPN cls"] == [[150], [0.1]]
  assert curves["2_joint Fast R-CNN cls"] == [[150], [0.3]]
