r"""Joint-vs-greedy ablation: trains every (variant, seed), evaluates each, writes the report.

  python -m experiments.ablate --config experiments/configs/ablation_joint_vs_greedy.py \
      --workdir runs/ablation [--config.seeds='(0,1,2)'] [--worker 0/2] [--phase all]

Rerunning the same command resumes: trained runs (trained.json) are not retrained, evaluated
ones (eval.json) not re-evaluated, and a run killed mid-training resumes from its checkpoint.
--worker i/n takes every n-th run, so n processes (or machines sharing the workdir) split the
work; then one `--phase report` writes the tables and plots (--out, default <workdir>/results).
A run that fails is reported with its log's tail and the others go on (exit status 1 at the end).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import ablation
from experiments import ablation_report
from experiments import launch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Ablation config (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Runs, their evaluations and the results.")
_WORKER = flags.DEFINE_string("worker", "0/1", "i/n: this process takes every n-th run from i.")
_PHASE = flags.DEFINE_enum("phase", "all", ["all", "train", "evaluate", "report"],
                           "train: train only; evaluate: train + evaluate; all: + report.")
_OUT = flags.DEFINE_string("out", "", "Where the report goes (default <workdir>/results).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  runs = ablation.plan(cfg)
  mine = ablation.shard(runs, _WORKER.value)
  failed = []
  if _PHASE.value != "report":
    for i, run in enumerate(mine):
      if ablation.is_trained(workdir, run):
        logging.info("ablation: %s already trained", run.name)
        continue
      print(f"[ablation] training {run.name} ({i + 1}/{len(mine)})", flush=True)
      try:
        info = ablation.train_run(cfg, workdir, run)
        print(f"[ablation] {run.name}: trained in {info['train_wall_s']:.0f} s, "
              f"{info['samples_per_sec']:.0f} samples/s", flush=True)
      except (ablation.RunFailed, ValueError) as e:
        print(f"[ablation] FAILED {e}", file=sys.stderr, flush=True)
        failed.append(run.name)
  if _PHASE.value in ("evaluate", "all"):
    todo = [r for r in mine if ablation.is_trained(workdir, r)
            and not ablation.is_evaluated(workdir, r)]
    evaluator = ablation.Evaluator(cfg, workdir) if todo else None
    for i, run in enumerate(todo):
      out = evaluator.evaluate(workdir, run)
      print(f"[ablation] evaluated {run.name} ({i + 1}/{len(todo)}): AP {out['ap']:.3f}, "
            f"x12 pass {out['pass']['x12_pass']:.4f}, x24 pass {out['pass']['x24_pass']:.4f}",
            flush=True)
  if _PHASE.value in ("all", "report"):
    result = ablation_report.write(cfg, workdir, _OUT.value or os.path.join(workdir, "results"))
    print(ablation_report.fmt_summary(result), flush=True)
  if failed:
    print(f"[ablation] {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=launch.flags_parser)
