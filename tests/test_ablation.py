"""experiments.ablation / ablation_report / ablate: plan, budgets, pass rates, report, resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import records as records_lib
from experiments import ablation
from experiments import ablation_report
from experiments.configs import ablation_joint_vs_greedy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def _cfg(**kw):
  cfg = ablation_joint_vs_greedy.get_config()
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def test_plan_is_seed_major_and_shards_partition_it():
  cfg = _cfg(seeds=(0, 1))
  runs = ablation.plan(cfg)
  n = len(ablation_joint_vs_greedy.VARIANTS)
  assert [r.name for r in runs[:n]] == [f"{v}-s0" for v in ablation_joint_vs_greedy.VARIANTS]
  assert len(runs) == 2 * n
  a, b = ablation.shard(runs, "0/2"), ablation.shard(runs, "1/2")
  assert sorted(r.name for r in a + b) == sorted(r.name for r in runs)
  assert not set(a) & set(b)
  for bad in ("2/2", "x", "1"):
    with pytest.raises(ValueError, match="worker"):
      ablation.shard(runs, bad)
  with pytest.raises(ValueError, match="unknown"):
    ablation.plan(_cfg(variants=("joint_hard", "joint_magic")))


def test_every_variant_gets_the_same_budget_and_valid_configs(tmp_path):
  cfg = _cfg(seeds=(3,))
  n, batch = cfg.budget.num_steps, cfg.budget.batch_size
  for run in ablation.plan(cfg):
    phs = ablation.phases(cfg, str(tmp_path), run)
    assert sum(p.num_steps for p in phs) == (3 * n if run.variant == "greedy_full" else n)
    for p in phs:
      config = ablation.build_config(p, check_init=False)  # validated as experiments.train does
      assert config.num_steps == p.num_steps and config.batch_size == batch
      assert config.seed == 3 and config.data.seed == 0  # same crops for every seed
      assert config.lr.boundaries == (round(p.num_steps * cfg.budget.lr_drop_fraction),)
      assert config.val.detection is False
  mode = {r.variant: ablation.phases(cfg, str(tmp_path), r)[-1].config_file.rsplit(":", 1)[-1]
          for r in ablation.plan(cfg)}
  assert mode["joint_sigmoid"] == "sigmoid" and mode["joint_straight_through"] == "straight_through"
  for variant, gradient in (("joint_sigmoid", "decision"), ("joint_sigmoid_gated_loss", "loss")):
    (ph,) = ablation.phases(cfg, str(tmp_path), ablation.Run(variant, 3))
    assert ablation.build_config(ph, check_init=False).gate.gradient == gradient
  (full,) = ablation.phases(cfg, str(tmp_path), ablation.Run("greedy_full", 3))
  assert full.num_steps == 3 * n and "greedy_cascade" in full.config_file
  first, tune = ablation.phases(cfg, str(tmp_path), ablation.Run("joint_from_greedy", 3))
  assert "greedy_cascade" in first.config_file and first.num_steps == round(n * 0.5)
  assert tune.overrides["init.from_workdir"] == first.workdir


def test_bad_override_names_the_key(tmp_path):
  cfg = _cfg()
  with cfg.unlocked():
    cfg.train_overrides.model = {"dropoot": 0.1}
  with pytest.raises(ValueError, match="config.model.dropoot"):
    ablation.build_config(ablation.phases(cfg, str(tmp_path), ablation.Run("joint_hard", 0))[0])


def test_threshold_for_recall_and_pass_rates_by_hand():
  assert ablation.threshold_for_recall([0.9, 0.1, 0.5, 0.7], 0.5) == 0.7
  assert ablation.threshold_for_recall([0.9, 0.1, 0.5, 0.7], 0.51) == 0.5
  assert ablation.threshold_for_recall([0.9, 0.1, 0.5, 0.7], 1.0) == 0.1
  P, N = records_lib.POSITIVE, records_lib.NEGATIVE
  labels = np.array([P, P, P, P, N, N, N, N])
  probs = np.array([[0.9, 0.9, 0], [0.8, 0.2, 0], [0.7, 0.8, 0], [0.1, 0.9, 0],
                    [0.95, 0.1, 0], [0.75, 0.85, 0], [0.5, 0.99, 0], [0.05, 0.99, 0]])
  out = ablation.pass_rates(probs, labels, (0.75, 0.5))
  # x12 keeps 3 of 4 faces at t = 0.7: negatives 0.95 and 0.75 pass -> 2 / 4.
  assert out["x12_threshold"] == 0.7 and out["x12_pass"] == 0.5 and out["x12_recall"] == 0.75
  # x24 among x12's faces (0.9, 0.2, 0.8): 2 of 4 faces at t = 0.8; negative 0.85 passes.
  assert out["x24_threshold"] == 0.8 and out["x24_pass"] == 0.25 and out["x24_recall"] == 0.5
  with pytest.raises(ValueError, match="recalls"):
    ablation.pass_rates(probs, labels, (0.5, 0.9))


def test_mean_roc_reads_steps_and_averages():
  a = {"fp": [0, 2, 5], "tpr": [0.2, 0.5, 0.6]}
  b = {"fp": [1, 3], "tpr": [0.4, 0.8]}
  x, y = ablation_report.mean_roc([a, b], 5)
  np.testing.assert_allclose(x, [0, 1, 2, 3, 4, 5])
  np.testing.assert_allclose(y, [(0.2 + 0) / 2, (0.2 + 0.4) / 2, (0.5 + 0.4) / 2,
                                 (0.5 + 0.8) / 2, (0.5 + 0.8) / 2, (0.6 + 0.8) / 2])


def test_mean_pr_is_interpolated_precision_from_the_roc():
  # 4 faces; thresholds give (tp, fp) = (1, 0), (2, 2), (3, 2): precision 1, 0.5, 0.6.
  curve = {"fp": [0, 2, 2], "tpr": [0.25, 0.5, 0.75]}
  x, y = ablation_report.mean_pr([curve], 4, points=5)
  np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(y, [1.0, 1.0, 0.6, 0.6, 0.0])
  _, y = ablation_report.mean_pr([curve, {"fp": [], "tpr": []}], 4, points=5)  # no detections
  np.testing.assert_allclose(y, [0.5, 0.5, 0.3, 0.3, 0.0])


def test_markdown_mean_and_sample_std():
  cfg = _cfg(seeds=(0, 1), variants=("greedy",))
  rows = [dict(run=f"greedy-s{s}", variant="greedy", seed=s, set="cmu", num_faces=10,
               samples=100, ap=ap, tpr_at_10fp=0.1, tpr_at_50fp=0.2, tpr_at_100fp=0.3,
               x12_pass=0.5, x24_pass=0.1, crop_auc=0.9, samples_per_sec=100.0,
               train_step_s=1.0) for s, ap in ((0, 0.4), (1, 0.6))]
  md = ablation_report.markdown(cfg, rows, ["joint_hard-s0"])
  assert f"| greedy | 2 | 100 ± 0 | 0.500 ± {np.std([0.4, 0.6], ddof=1):.3f} |" in md
  assert "| greedy-s1 | 100 | 0.600 |" in md and "NOT YET EVALUATED (1): joint_hard-s0" in md


def test_smoke_ablation_trains_evaluates_reports_and_resumes(tmp_path):
  cmd = [sys.executable, "-m", "experiments.ablate", "--config",
         "experiments/configs/ablation_joint_vs_greedy.py:smoke",
         "--config.variants=('joint_hard',)", f"--workdir={tmp_path}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  run = tmp_path / "runs" / "joint_hard-s0"
  ev = json.loads((run / "eval.json").read_text())
  assert ev["set"] == "embedded_val" and 0.0 <= ev["ap"] <= 1.0 and ev["step"] == 12
  assert 0 <= ev["pass"]["x24_pass"] <= ev["pass"]["x12_pass"] <= 1
  results = tmp_path / "results"
  for name in ("ablation.csv", "ablation.md", "ablation_roc.png", "ablation_pr.png",
               "ablation_pass_rates.png", "ablation_train_x48.png"):
    assert (results / name).stat().st_size > 0, name
  stamp = (run / "trained.json").stat().st_mtime_ns, (run / "eval.json").stat().st_mtime_ns
  again = subprocess.run(cmd + ["--phase=evaluate"], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "training joint_hard" not in again.stdout
  assert ((run / "trained.json").stat().st_mtime_ns, (run / "eval.json").stat().st_mtime_ns) == stamp
  if not os.path.isdir(os.path.join(SHARED, "wider_face_subset")):
    return  # the in-the-wild scoring below reads ../shared (CI has it)
  (run / "eval.json").unlink()  # scored again, now on WIDER val and CMU+MIT (two pictures each)
  wild = subprocess.run(cmd + ["--config.eval.sets=('wider','cmu_mit')",
                               "--config.eval.max_images=2", f"--config.data_root={SHARED}"],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert wild.returncode == 0, wild.stderr[-3000:]
  assert "training joint_hard" not in wild.stdout  # trained runs are kept; only scored again
  ev = json.loads((run / "eval.json").read_text())
  assert ev["set"] == "cmu_mit" and ev["sets"]["cmu_mit/num_images"] == 2
  assert ev["sets"]["wider/num_images"] == 2 and 0 <= ev["sets"]["wider/ap/hard"] <= 1
  assert ev["ap"] == ev["sets"]["cmu_mit/ap"]
  assert "WIDER val hard" in (results / "ablation.md").read_text()


def test_the_wild_ablation_trains_every_variant_on_facecraft_wider_data(tmp_path):
  """Issue #14: every run (joint and greedy configs alike) takes facecraft_wider's data and
  model, keeps the ablation's own data root, cache and crop seed, and is scored on WIDER val
  and CMU+MIT."""
  from experiments.configs import ablation_joint_vs_greedy
  from experiments.configs import facecraft_wider
  cfg = ablation_joint_vs_greedy.get_config("wild,extra=/somewhere/wider_extra")
  cfg.data_root = str(tmp_path / "shared")
  wider = facecraft_wider.get_config("extra=/somewhere/wider_extra")
  assert cfg.seeds == (0, 1, 2) and cfg.eval.sets == ("wider", "cmu_mit")
  assert cfg.eval.test_set in cfg.eval.sets
  for run in ablation.plan(cfg):
    for p in ablation.phases(cfg, str(tmp_path), run):
      config = ablation.build_config(p, check_init=False)
      assert config.data.native_sets == wider.data.native_sets
      assert "wider_face:/somewhere/wider_extra:val" in config.data.native_sets
      assert config.data.val_set == "wider_face:wider_face_subset:val"
      assert config.data.rule_box_shape == wider.data.rule_box_shape
      assert config.model.x12_channels == (10, 16, 32) and config.model.landmarks
      assert config.data.root == cfg.data_root and config.data.seed == 0
      assert config.data.cache_dir == str(tmp_path / "data")
  with pytest.raises(ValueError, match="unknown config argument"):
    ablation_joint_vs_greedy.get_config("wilder")
  cols = [k for k, _, _ in ablation_report.columns(cfg)]
  assert {"wider/ap/easy", "wider/ap/medium", "wider/ap/hard", "ap"} <= set(cols)
