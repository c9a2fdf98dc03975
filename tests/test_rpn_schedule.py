"""The rpn_frcnn schedule end to end on the WIDER fixture: the joint recipe's two steps and the
four-step recipe's frozen-trunk step train, checkpoint, and export a bundle the engine runs."""

from __future__ import annotations

import csv
import os

import jax
import numpy as np
import pytest

from experiments.configs import rpn_frcnn as rpn_config
from facecraft.train import ConfigError
from facecraft.train import checkpoint
from facecraft.train import config_schema
from facecraft.train.rpn_frcnn import schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _last_train_row(workdir) -> dict:
  with open(os.path.join(workdir, "metrics.csv")) as f:
    rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
  return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


def _config(arg, **rpn):
  c = rpn_config.get_config(arg)
  c.data.root = os.path.join(REPO, "tests", "fixtures")
  c.rpn.update(rpn)
  return c


def test_joint_recipe_trains_its_two_steps_and_frozen_trunk_stays_still(tmp_path):
  first = _config("rpn,smoke")
  config_schema.validate(first)
  res = schedule.run(first, str(tmp_path / "rpn"))
  row = _last_train_row(tmp_path / "rpn")
  assert res.step == 6 and np.isfinite(row["train/loss"])
  assert "train/rpn_cls" in row and "train/head_cls" not in row

  joint = _config("joint,smoke", proposals_from=str(tmp_path / "rpn"))
  joint.init.from_workdir = str(tmp_path / "rpn")
  config_schema.validate(joint)
  schedule.run(joint, str(tmp_path / "joint"))
  row = _last_train_row(tmp_path / "joint")
  assert {"train/rpn_cls", "train/head_cls", "train/head_box"} <= set(row)
  assert np.isfinite(row["train/loss"]) and row["train/head_faces_per_image"] > 0

  # The joint run, bundled, detects through the one Detector (random-ish weights: mechanics).
  from facecraft.infer import Detector  # pylint: disable=g-import-not-at-top
  path = schedule.export(joint, str(tmp_path / "joint"), str(tmp_path / "rpn-smoke.npz"),
                         inference={"thresholds": (0.0, 0.0)})
  image = os.path.join(REPO, "tests", "fixtures", "wider_face", "WIDER_train", "images",
                       "0--Parade", "0_Parade_Parade_0_7.jpg")
  found = Detector.from_pretrained(path).detect(image)
  assert len(found) > 0 and found.landmarks is None and np.all(np.isfinite(found.boxes))

  frozen = _config("rpn,frozen_trunk,smoke")
  frozen.init.from_workdir = str(tmp_path / "joint")
  schedule.run(frozen, str(tmp_path / "fs3"))
  before, _, _ = checkpoint.load_params(str(tmp_path / "joint"))
  after, _, _ = checkpoint.load_params(str(tmp_path / "fs3"))
  for a, b in zip(jax.tree.leaves(before["trunk"]), jax.tree.leaves(after["trunk"])):
    np.testing.assert_array_equal(a, b)
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["rpn_logits"]),
                                                     jax.tree.leaves(after["rpn_logits"]))]
  assert any(moved)


def test_config_errors_name_the_key():
  c = _config("frcnn,smoke")
  with pytest.raises(ConfigError, match="proposals_from"):
    schedule.validate_config(c)
  c = _config("rpn,smoke")
  c.data.size = 130
  with pytest.raises(ConfigError, match="data.size"):
    schedule.validate_config(c)
  with pytest.raises(ValueError, match="unknown config argument"):
    rpn_config.get_config("rpn,joint")


def test_recipe_launcher_runs_in_order_resumes_and_bundles(tmp_path):
  """experiments.rpn_recipe: the joint recipe's steps in order, a rerun trains nothing, a bundle
  (four_step's steps are the same schedule's stages, trained in the test above)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, "-m", "experiments.rpn_recipe", "--recipe", "joint",
         f"--workdir={tmp_path}", "--config_arg=smoke", "--steps=2",
         f"--set=data.root={os.path.join(REPO, 'tests', 'fixtures')}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.index("step 1/2] rpn") < first.stdout.index("step 2/2] joint")
  assert (tmp_path / "rpn-joint.npz").stat().st_size > 0
  for k, stage in enumerate(("rpn", "joint"), 1):
    assert (tmp_path / f"{k}_{stage}" / "metrics.csv").exists()
  stamp = (tmp_path / "2_joint" / "metrics.csv").stat().st_mtime_ns
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (tmp_path / "2_joint" / "metrics.csv").stat().st_mtime_ns == stamp  # nothing retrained
  from experiments import rpn_recipe  # pylint: disable=g-import-not-at-top
  four = rpn_recipe.steps("four_step", "W")
  assert [(s["arg"], s["init"], s["proposals"]) for s in four] == [
      ("rpn", "", ""), ("frcnn", "", "W/1_rpn"), ("rpn,frozen_trunk", "W/2_frcnn", ""),
      ("frcnn,frozen_trunk", "W/3_rpn", "W/3_rpn")]


def test_recipe_stops_without_a_bundle_when_a_step_is_preempted(tmp_path, monkeypatch):
  import types  # pylint: disable=g-import-not-at-top
  from experiments import rpn_recipe  # pylint: disable=g-import-not-at-top
  from facecraft.train.rpn_frcnn import schedule  # pylint: disable=g-import-not-at-top
  ran, exported = [], []
  monkeypatch.setattr(schedule, "run", lambda config, workdir: ran.append(workdir) or
                      types.SimpleNamespace(preempted=True, step=5))
  monkeypatch.setattr(schedule, "export", lambda *a: exported.append(a))
  with pytest.raises(SystemExit) as stop:
    rpn_recipe.run_recipe("joint", str(tmp_path), "smoke")
  assert stop.value.code == 3
  assert ran == [str(tmp_path / "1_rpn")] and not exported


def test_scene_batches_are_seeded_and_skip_unreadable_photos(tmp_path, caplog):
  from data_pipelines import records as records_lib  # pylint: disable=g-import-not-at-top
  from facecraft.train.rpn_frcnn import data as data_lib  # pylint: disable=g-import-not-at-top
  d = _config("rpn,smoke").data
  good = data_lib.load_records(d)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not a jpeg")
  recs = good + [records_lib.FaceRecord(image=str(bad), boxes=np.zeros((0, 4), np.float32))
                 for _ in good]  # half the photos unreadable
  a = data_lib.scene_batches(d, 4, recs, workers=2)
  b = data_lib.scene_batches(d, 4, recs, workers=1)
  for _ in range(3):
    x, y = next(a), next(b)
    assert x["image"].shape == (4, d.size, d.size, 3) and x["boxes"].shape == (4, d.max_faces, 4)
    for key in x:  # the same batches whatever the thread count
      np.testing.assert_array_equal(x[key], y[key])
  assert "skipping" in caplog.text and "broken.jpg" in caplog.text


def test_trunk_frozen_needs_every_trunk_parameter_held():
  c = _config("rpn,smoke")
  cfg = schedule.rpn_config(c)
  assert not schedule.trunk_frozen(c, cfg)
  c.frozen = ("trunk/conv",)  # the context levels still learn: gradients must flow
  assert not schedule.trunk_frozen(c, cfg)
  c.frozen = ("trunk",)
  assert schedule.trunk_frozen(c, cfg)
