"""experiments.export_model: a run becomes a bundle whose inference settings come from the run
(its selection set's F1-best last threshold, its data's box convention, a default aligner)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import ml_collections

import conftest
from facecraft.infer import Detector
from facecraft.models import pretrained
from facecraft.train.cascade import joint

REPO = pathlib.Path(__file__).resolve().parents[1]
LOSSES = conftest.fixture_generator("training_losses")


def test_a_run_selected_on_its_evals_set_exports_its_convention_and_aligner(tmp_path):
  from experiments.configs import joint_cascade  # pylint: disable=g-import-not-at-top
  config = joint_cascade.get_config()
  for key, value in {**LOSSES.OVERRIDES, "data.cache_dir": str(tmp_path / "crops"),
                     "num_steps": 6, "checkpoint.every": 6, "eval.every": 6}.items():
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
      node = node[name]
    node[leaf] = value
  with config.unlocked():  # the selection set: a tiny fixture in the facecraft-json format
    config.evals.sel = ml_collections.ConfigDict(dict(
        type="box_ap", reader="facecraft_json", max_images=0,
        root=str(REPO / "tests" / "fixtures" / "eval_runner" / "facecraft_json")))
    # Native boxes make the exported convention "wider"; with data.source "embedded" (the
    # fixture overrides) the run trains on synthetic faces and never reads this set.
    config.data.native_sets = ("facecraft_json:x:y",)
  workdir = tmp_path / "run"
  joint.run(config.copy_and_resolve_references(), str(workdir))  # hooks-free: crop metrics
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["evals"]["sel"]["type"] == "box_ap"  # what the exporter selects on
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.export_model", f"--workdir={workdir}",
       "--which=checkpoints", f"--out_dir={tmp_path}", "--name=exported",
       "--aligner=mtcnn-onet"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  bundle = pretrained.load(str(tmp_path / "exported.npz"))
  assert bundle.family == "facecraft_cascade" and bundle.inference["box_convention"] == "wider"
  assert bundle.inference["aligner"] == "mtcnn-onet" and "sel" in bundle.meta
  assert bundle.inference["thresholds"][:2] == list(config.val.thresholds[:2])
  det = Detector.from_pretrained(str(tmp_path / "exported.npz"), buckets=[(128, 128)])
  assert det.aligner is not None
