"""Joint-vs-greedy ablation (#6): the runs, their training, their evaluation.

experiments/ablate.py is the launcher; experiments/ablation_report.py writes the tables and plots.
Each run is `<workdir>/runs/<variant>-s<seed>`; it is trained by `python -m experiments.train`
subprocesses (so a killed ablation resumes each run from its last checkpoint), and counts as
trained once its final checkpoint is at the budget (trained.json records the wall time). The
evaluation loads the final parameters into ONE compiled inference engine shared by every run
(the parameters are an argument of the compiled cascade) and writes eval.json. Finished runs
are never redone; `--worker i/n` splits the runs over processes or machines.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import types
from typing import Any, Sequence

from absl import logging
import ml_collections
import numpy as np

from data_pipelines import records as records_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "experiments", "configs")
# variant -> (gate.mode, gate.gradient). "*_gated_loss": the soft gates learning from the gated
# losses' own gradient, the formulation that collapsed (facecraft/losses.py, joint_loss).
JOINT_MODES = {"joint_hard": ("hard", "decision"), "joint_sigmoid": ("sigmoid", "decision"),
               "joint_straight_through": ("straight_through", "decision"),
               "joint_sigmoid_gated_loss": ("sigmoid", "loss"),
               "joint_straight_through_gated_loss": ("straight_through", "loss")}
KNOWN_VARIANTS = ("greedy", *JOINT_MODES, "joint_from_greedy", "greedy_full")


class RunFailed(RuntimeError):
  """A training subprocess of one run failed (the message holds its log's tail)."""


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int

  @property
  def name(self) -> str:
    return f"{self.variant}-s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Phase:
  """One `experiments.train` invocation: config file (with its arg), workdir, overrides."""
  config_file: str
  workdir: str
  overrides: dict
  num_steps: int


def plan(cfg) -> list[Run]:
  unknown = [v for v in cfg.variants if v not in KNOWN_VARIANTS]
  if unknown:
    raise ValueError(f"config.variants: unknown {unknown}; known: {list(KNOWN_VARIANTS)}")
  if not cfg.seeds:
    raise ValueError("config.seeds is empty")
  # Seed-major: a partial ablation holds every variant of the first seeds.
  return [Run(v, int(s)) for s in cfg.seeds for v in cfg.variants]


def shard(runs: Sequence[Run], worker: str) -> list[Run]:
  """worker "i/n": every n-th run starting at i (0-based)."""
  try:
    i, n = (int(x) for x in worker.split("/"))
  except ValueError:
    raise ValueError(f"--worker must be i/n (e.g. 0/2), got {worker!r}") from None
  if not 0 <= i < n:
    raise ValueError(f"--worker {worker!r}: need 0 <= i < n")
  return list(runs[i::n])


def run_dir(workdir: str, run: Run) -> str:
  return os.path.join(workdir, "runs", run.name)


def base_overrides(cfg, workdir: str, seed: int, num_steps: int) -> dict:
  """What every run shares: budget, data, seed, the lr drop at lr_drop_fraction of the run."""
  b = cfg.budget
  ov = {"seed": seed, "data.seed": 0, "batch_size": b.batch_size, "num_steps": num_steps,
        "lr.rates": tuple(b.lr_rates), "lr.warmup_steps": 0,
        "lr.boundaries": (max(1, int(round(num_steps * b.lr_drop_fraction))),),
        "gate.temperature.steps": num_steps,
        "data.root": cfg.data_root,
        "data.cache_dir": cfg.data_cache_dir or os.path.join(os.path.abspath(workdir), "data"),
        "checkpoint.every": num_steps, "eval.every": 0, "eval.best_metric": ""}
  ov.update(flatten(cfg.train_overrides.to_dict()))
  return ov


def flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def phases(cfg, workdir: str, run: Run) -> list[Phase]:
  n = int(cfg.budget.num_steps)
  here = run_dir(workdir, run)
  joint = os.path.join(CONFIG_DIR, "joint_cascade.py")
  greedy = os.path.join(CONFIG_DIR, "greedy_cascade.py")
  if run.variant == "greedy":
    return [Phase(greedy, here, base_overrides(cfg, workdir, run.seed, n), n)]
  if run.variant == "greedy_full":  # every stage gets the whole budget: 3x the samples
    return [Phase(greedy, here, base_overrides(cfg, workdir, run.seed, 3 * n), 3 * n)]
  if run.variant in JOINT_MODES:
    mode, gradient = JOINT_MODES[run.variant]
    return [Phase(f"{joint}:{mode}", here,
                  {**base_overrides(cfg, workdir, run.seed, n), "gate.gradient": gradient}, n)]
  first = int(round(n * float(cfg.from_greedy_fraction)))
  if not 3 <= first <= n - 1:
    raise ValueError(f"config.from_greedy_fraction={cfg.from_greedy_fraction} leaves "
                     f"{first} greedy and {n - first} joint steps of {n}")
  init = os.path.join(here, "greedy_init")
  tune = base_overrides(cfg, workdir, run.seed, n - first)
  tune["init.from_workdir"] = init
  return [Phase(greedy, init, base_overrides(cfg, workdir, run.seed, first), first),
          Phase(f"{joint}:hard", here, tune, n - first)]


# ----------------------------------------------------------------------------- configs


def load_config_file(config_file: str) -> ml_collections.ConfigDict:
  path, _, arg = config_file.partition(":")
  spec = importlib.util.spec_from_file_location("_ablation_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def build_config(phase: Phase, check_init: bool = True) -> ml_collections.ConfigDict:
  """The phase's training config, overrides applied and checked (facecraft.train.config_schema).
  check_init=False leaves init.from_workdir out: an earlier phase has not written it yet."""
  from facecraft.train import config_schema  # pylint: disable=g-import-not-at-top
  config = load_config_file(phase.config_file)
  for key, value in phase.overrides.items():
    if key == "init.from_workdir" and not check_init:
      continue
    parent = config
    for part in key.split(".")[:-1]:
      if part not in parent:
        raise ValueError(f"train_overrides: unknown key config.{key}")
      parent = parent[part]
    leaf = key.split(".")[-1]
    if leaf not in parent:
      raise ValueError(f"train_overrides: unknown key config.{key}")
    parent[leaf] = tuple(value) if isinstance(parent[leaf], tuple) else value
  config_schema.validate(config)
  return config


def _literal(value: Any) -> str:
  return repr(tuple(value)) if isinstance(value, (tuple, list)) else str(value)


def train_command(phase: Phase) -> list[str]:
  return ([sys.executable, "-m", "experiments.train", f"--config={phase.config_file}",
           f"--workdir={phase.workdir}"] +
          [f"--config.{k}={_literal(v)}" for k, v in sorted(phase.overrides.items())])


def final_step(workdir: str) -> int | None:
  """The newest checkpoint step in workdir/checkpoints (orbax names them by step), or None."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps) if steps else None


def is_trained(workdir: str, run: Run) -> bool:
  return os.path.exists(os.path.join(run_dir(workdir, run), "trained.json"))


def is_evaluated(workdir: str, run: Run) -> bool:
  return os.path.exists(os.path.join(run_dir(workdir, run), "eval.json"))


def metric_dirs(phase: Phase) -> list[str]:
  """Where a phase's metrics.csv files are: its greedy stages in order, or the phase itself."""
  stages = [os.path.join(phase.workdir, f"stage_{b}") for b in ("x12", "x24", "x48")]
  return [d for d in stages if os.path.isdir(d)] or [phase.workdir]


def train_stats(phs: Sequence[Phase]) -> dict[str, float]:
  """Samples/s (sample-weighted over every stage) and summed step-compile time, from the CSVs."""
  from facecraft.train import metrics  # pylint: disable=g-import-not-at-top
  samples = seconds = compile_s = 0.0
  for phase in phs:
    for d in metric_dirs(phase):
      m = metrics.read_csv(d)
      sps, steps = m.get("train/samples_per_sec"), m.get("step")
      if sps is not None:
        ok = np.isfinite(sps)
        if ok.any():
          span = np.diff(np.r_[0.0, steps])[ok] * float(phase.overrides["batch_size"])
          samples += span.sum()
          seconds += (span / sps[ok]).sum()
      c = m.get("train/compile_time_s")
      if c is not None and np.isfinite(c).any():
        compile_s += float(np.nanmax(c))
  return {"samples_per_sec": samples / seconds if seconds else math.nan,
          "compile_time_s": compile_s}


def train_run(cfg, workdir: str, run: Run) -> dict:
  """Trains (or resumes) every phase of `run`; writes and returns trained.json's content."""
  here = run_dir(workdir, run)
  os.makedirs(here, exist_ok=True)
  phs = phases(cfg, workdir, run)
  for phase in phs:
    build_config(phase, check_init=False)  # a bad override fails here, before any training
  wall_path = os.path.join(here, "wall_s.json")  # accumulated over interrupted attempts
  wall = 0.0
  if os.path.exists(wall_path):
    with open(wall_path) as f:
      wall = float(json.load(f))
  for phase in phs:
    if final_step(phase.workdir) == phase.num_steps:
      continue
    os.makedirs(phase.workdir, exist_ok=True)
    log_path = phase.workdir.rstrip("/") + ".log"
    logging.info("ablation: %s: training %s (log %s)", run.name, phase.workdir, log_path)
    t0 = time.time()
    with open(log_path, "a") as log:
      rc = subprocess.run(train_command(phase), stdout=log, stderr=subprocess.STDOUT,
                          cwd=REPO_ROOT,
                          check=False).returncode
    wall += time.time() - t0
    with open(wall_path, "w") as f:
      json.dump(wall, f)
    if rc != 0 or final_step(phase.workdir) != phase.num_steps:
      with open(log_path) as f:
        tail = f.read()[-3000:]
      raise RunFailed(f"{run.name}: experiments.train exited {rc} at step "
                      f"{final_step(phase.workdir)} of {phase.num_steps}; {log_path}:\n{tail}")
  info = {"run": run.name, "variant": run.variant, "seed": run.seed,
          "samples": sum(p.num_steps for p in phs) * int(cfg.budget.batch_size),
          "train_wall_s": wall, **train_stats(phs)}
  with open(os.path.join(here, "trained.json"), "w") as f:
    json.dump(info, f, indent=1)
  return info


# ----------------------------------------------------------------------------- evaluation


def threshold_for_recall(scores: np.ndarray, recall: float) -> float:
  """The highest t with mean(scores >= t) >= recall."""
  scores = np.sort(np.asarray(scores, np.float64))[::-1]
  if not len(scores):
    return math.nan
  return float(scores[max(1, int(math.ceil(recall * len(scores) - 1e-9))) - 1])


def pass_rates(probs: np.ndarray, labels: np.ndarray, recalls: Sequence[float]) -> dict:
  """How many negative candidates x12, then x12 + x24, let through at the same face recall:
  x12's threshold keeps recalls[0] of the positives, x24's keeps recalls[1] of all positives
  among those x12 passed."""
  r12, r24 = (float(r) for r in recalls)
  if not 0 < r24 <= r12 <= 1:
    raise ValueError(f"pass recalls must satisfy 0 < x24 <= x12 <= 1, got {recalls}")
  pos, neg = labels == records_lib.POSITIVE, labels == records_lib.NEGATIVE
  t12 = threshold_for_recall(probs[pos, 0], r12)
  pass12 = probs[:, 0] >= t12
  t24 = threshold_for_recall(np.where(pass12, probs[:, 1], -np.inf)[pos], r24)
  pass24 = pass12 & (probs[:, 1] >= t24)
  return {"x12_threshold": t12, "x12_recall": float(pass12[pos].mean()),
          "x12_pass": float(pass12[neg].mean()), "x24_threshold": t24,
          "x24_recall": float(pass24[pos].mean()), "x24_pass": float(pass24[neg].mean()),
          "negatives": int(neg.sum()), "positives": int(pos.sum())}


class Evaluator:
  """Scores trained runs: CMU+MIT detection through one compiled engine, crop-level pass rates."""

  def __init__(self, cfg, workdir: str):
    # pylint: disable=g-import-not-at-top
    from data_pipelines import synthetic
    from experiments import cascade_eval
    from facecraft.train.cascade import data as cascade_data
    from facecraft.train.cascade import joint as cascade_joint
    self.cfg, self.cj = cfg, cascade_joint
    config = build_config(phases(cfg, workdir, Run("joint_hard", 0))[0])
    self.sets = tuple(cfg.eval.get("sets", ()))
    with config.unlocked():
      config.val.thresholds = tuple(cfg.eval.thresholds)
      config.val.iou = float(cfg.eval.iou)
      config.val.max_images = int(cfg.eval.max_images)
      config.val.max_tiers = int(cfg.eval.get("max_tiers", 1))
      if self.sets:  # each set a config.evals preset, scored under its own name
        from experiments.configs import joint_cascade  # pylint: disable=g-import-not-at-top
        joint_cascade.add_evals(config, self.sets)
        for name in self.sets:  # eval.max_images caps every set (a quick check)
          config.evals[name].max_images = int(cfg.eval.max_images)
        if cfg.eval.test_set not in self.sets:
          raise ValueError(f"eval.test_set {cfg.eval.test_set!r} is not in eval.sets {self.sets}")
    self.config = config
    self.data = cascade_data.build(config, config.data.cache_dir)
    self.model = cascade_joint.model_of(config)
    records = None
    if self.data.embedded:  # no CMU+MIT: the embedded validation scenes stand in (announced)
      d = config.data
      records = synthetic.embedded_records(d.embedded_val_images, d.seed + 2, True,
                                           d.box_scale)
    self.set_name = (cfg.eval.test_set if self.sets else
                     "embedded_val" if self.data.embedded else cascade_eval.VALIDATION)
    self.detection = cascade_eval.DetectionEval(config, cascade_eval.engine_modules(), records)
    self.scorer: dict = {}

  def evaluate(self, workdir: str, run: Run) -> dict:
    from facecraft.train import checkpoint  # pylint: disable=g-import-not-at-top
    here = run_dir(workdir, run)
    params, extra, step = checkpoint.load_params(here)
    state = types.SimpleNamespace(params=params, extra=extra)
    t0 = time.perf_counter()
    sets = {}
    if self.sets:  # every set through one detector; the test set fills the main columns
      from experiments import cascade_eval  # pylint: disable=g-import-not-at-top
      predict = self.detection.predict_fn(state)
      for name, ev in self.detection.evaluators.items():
        metrics = ev.run(predict)
        sets.update(cascade_eval.flatten(name, metrics))
        if name == self.cfg.eval.test_set:
          result, self.detection.metrics = ev.result, metrics
    else:
      result, _ = self.detection.run(state)  # the CMU+MIT evaluator (facecraft.eval.evaluators)
    det_s = time.perf_counter() - t0
    fp, tpr = result.roc()
    probs, boxes = self.cj.crop_scores(self.model, params, self.data.val.images,
                                       int(self.config.val.batch_size), self.scorer)
    crop = self.cj.crop_metrics(probs, boxes, self.data.val, self.cj.stats_of(extra),
                                tuple(self.config.gate.thresholds))
    out = {"run": run.name, "variant": run.variant, "seed": run.seed, "step": int(step),
           "set": self.set_name, "iou": float(self.cfg.eval.iou), "ap": float(result.ap),
           "num_faces": int(result.num_positives),
           "detections_per_image": self.detection.metrics["detections_per_image"],
           "truncated_images": self.detection.metrics["truncated_images"],
           "detect_s": det_s, "crop_auc": crop["crop/cascade_auc"],
           **{f"tpr_at_{k}fp": v for k, v in result.tpr_at_fp(
               tuple(int(k) for k in self.cfg.eval.fp_points)).items()},
           "sets": sets,
           "pass": pass_rates(probs, self.data.val.labels, tuple(self.cfg.eval.pass_recalls)),
           "roc": {"fp": fp.tolist(), "tpr": tpr.tolist()}}
    with open(os.path.join(here, "eval.json"), "w") as f:
      json.dump(out, f)
    return out
