"""The ablation's results: a CSV (one row per run), a markdown table (mean ± std per variant and
every seed's values), overlaid ROC curves, training curves and the stages' pass rates (PNG)."""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np

from experiments import ablation
from facecraft.eval import plots
from facecraft.train import metrics as metrics_lib

BRANCHES = ("x12", "x24", "x48")


def columns(cfg) -> list[tuple[str, str, str]]:
  """(key, header, format) of the numbers per run."""
  cols = [("samples", "samples", ".0f"), ("ap", f"AP@{cfg.eval.iou:g}", ".3f")]
  cols += [(f"tpr_at_{k}fp", f"TPR@{k}FP", ".3f") for k in cfg.eval.fp_points]
  if "wider" in tuple(cfg.eval.get("sets", ())):  # the selection set's official AP
    cols += [(f"wider/ap/{s}", f"WIDER val {s}", ".3f") for s in ("easy", "medium", "hard")]
  r12, r24 = cfg.eval.pass_recalls
  cols += [("x12_pass", f"x12 pass @R{r12:g}", ".4f"), ("x24_pass", f"x24 pass @R{r24:g}", ".4f"),
           ("crop_auc", "crop AUC", ".4f"), ("samples_per_sec", "samples/s", ".0f"),
           ("train_step_s", "step s", ".0f")]
  return cols


def load_rows(cfg, workdir: str) -> tuple[list[dict], list[str]]:
  """One flat dict per evaluated run (eval.json + trained.json), and the names still missing."""
  rows, missing = [], []
  for run in ablation.plan(cfg):
    here = ablation.run_dir(workdir, run)
    try:
      with open(os.path.join(here, "eval.json")) as f:
        ev = json.load(f)
      with open(os.path.join(here, "trained.json")) as f:
        tr = json.load(f)
    except FileNotFoundError:
      missing.append(run.name)
      continue
    row = {k: v for k, v in ev.items() if k not in ("pass", "roc", "sets")}
    row.update(ev.get("sets", {}))
    row.update({k: ev["pass"][k] for k in ("x12_pass", "x24_pass", "x12_recall", "x24_recall")})
    row.update({k: tr[k] for k in ("samples", "train_wall_s", "samples_per_sec",
                                   "compile_time_s")})
    # Time in training steps (samples / throughput): unlike the wall time, it does not count
    # evaluations, pool filtering or a run's interruptions.
    row["train_step_s"] = row["samples"] / row["samples_per_sec"]
    row["roc"] = ev["roc"]
    rows.append(row)
  return rows, missing


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def write_csv(rows: list[dict], path: str) -> None:
  keys = [k for k in rows[0] if k != "roc"]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


def markdown(cfg, rows: list[dict], missing: list[str]) -> str:
  cols = columns(cfg)
  variants = [v for v in cfg.variants if any(r["variant"] == v for r in rows)]
  lines = [f"Set: {rows[0]['set']} ({rows[0]['num_faces']} faces), IoU {cfg.eval.iou:g}. Budget per "
           f"run: {cfg.budget.num_steps} steps x {cfg.budget.batch_size} = "
           f"{cfg.budget.num_steps * cfg.budget.batch_size} samples (greedy_full: 3x). "
           f"Seeds: {list(cfg.seeds)}. Pass rates: share of "
           f"negative validation crops let through with x12 keeping {cfg.eval.pass_recalls[0]:g} "
           f"of faces, x12 + x24 keeping {cfg.eval.pass_recalls[1]:g}.", "",
           "| variant | n | " + " | ".join(h for _, h, _ in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
  for v in variants:
    mine = [r for r in rows if r["variant"] == v]
    cells = []
    for key, _, fmt in cols:
      m, s = mean_std([r[key] for r in mine])
      cells.append(f"{m:{fmt}} ± {s:{fmt}}")
    lines.append(f"| {v} | {len(mine)} | " + " | ".join(cells) + " |")
  lines += ["", "Per seed:", "", "| run | " + " | ".join(h for _, h, _ in cols) + " |",
            "|---|" + "---|" * len(cols)]
  for r in rows:
    lines.append(f"| {r['run']} | " + " | ".join(f"{r[k]:{fmt}}" for k, _, fmt in cols) + " |")
  if missing:
    lines += ["", f"NOT YET EVALUATED ({len(missing)}): {', '.join(missing)}"]
  return "\n".join(lines) + "\n"


def mean_roc(curves: Sequence[dict], max_fp: int) -> tuple[np.ndarray, np.ndarray]:
  """Seed-mean TPR at every FP count 0..max_fp (each discrete ROC read as a step function)."""
  grid = np.arange(max_fp + 1, dtype=np.float64)
  ys = []
  for c in curves:
    fp, tpr = np.asarray(c["fp"], np.float64), np.asarray(c["tpr"], np.float64)
    idx = np.searchsorted(fp, grid, side="right") - 1  # last threshold with fp <= x
    ys.append(np.where(idx >= 0, tpr[np.clip(idx, 0, None)] if len(tpr) else 0.0, 0.0))
  return grid, np.mean(ys, axis=0)


def mean_pr(curves: Sequence[dict], faces: int, points: int = 101):
  """Seed-mean interpolated precision (VOC: the best precision at recall >= r) on a recall grid,
  from each run's discrete ROC (tp = TPR x faces at every threshold)."""
  grid = np.linspace(0.0, 1.0, points)
  ys = []
  for c in curves:
    fp, tpr = np.asarray(c["fp"], np.float64), np.asarray(c["tpr"], np.float64)
    if not len(tpr):  # no detection at all
      ys.append(np.zeros_like(grid))
      continue
    tp = tpr * faces
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
    best = np.maximum.accumulate(prec[::-1])[::-1]  # max precision at this recall or beyond
    idx = np.searchsorted(tpr, grid, side="left")    # first threshold reaching recall r
    ys.append(np.where(idx < len(tpr), best[np.clip(idx, 0, len(tpr) - 1)], 0.0))
  return grid, np.mean(ys, axis=0)


def training_curves(cfg, workdir: str, runs, branch: str):
  """{variant: (samples seen, seed-mean train/<branch>/loss)}; greedy's stages follow each
  other, so its x24 / x48 curves start where the earlier stages' budgets end."""
  batch = int(cfg.budget.batch_size)
  out = {}
  for v in cfg.variants:
    per_seed = []
    for run in [r for r in runs if r.variant == v]:
      xs, ys, offset = [], [], 0
      for phase in ablation.phases(cfg, workdir, run):
        for d in ablation.metric_dirs(phase):  # the stages, in training order
          path = os.path.join(d, metrics_lib.CSV_NAME)
          if not os.path.exists(path):
            continue
          m = metrics_lib.read_csv(path)
          y = m.get(f"train/{branch}/loss")
          if y is not None:
            ok = np.isfinite(y)
            xs.append((m["step"][ok] + offset) * batch)
            ys.append(y[ok])
          offset += int(np.nanmax(m["step"]))
      if xs:
        per_seed.append((np.concatenate(xs), np.concatenate(ys)))
    if per_seed:
      n = min(len(x) for x, _ in per_seed)
      out[v] = (per_seed[0][0][:n], np.mean([y[:n] for _, y in per_seed], axis=0))
  return out


def write(cfg, workdir: str, out_dir: str) -> dict:
  """Writes ablation.csv / ablation.md / *.png into out_dir; returns {"rows", "missing", "files"}."""
  rows, missing = load_rows(cfg, workdir)
  if not rows:
    raise FileNotFoundError(f"no evaluated run under {workdir}/runs yet (missing: {missing})")
  os.makedirs(out_dir, exist_ok=True)
  files = {"csv": os.path.join(out_dir, "ablation.csv"), "md": os.path.join(out_dir, "ablation.md")}
  write_csv(rows, files["csv"])
  with open(files["md"], "w") as f:
    f.write(markdown(cfg, rows, missing))
  variants = [v for v in cfg.variants if any(r["variant"] == v for r in rows)]
  roc = {v: mean_roc([r["roc"] for r in rows if r["variant"] == v], int(cfg.eval.roc_max_fp))
         for v in variants}
  files["roc"] = plots.plot_roc(roc, os.path.join(out_dir, "ablation_roc.png"),
                                title=f"{rows[0]['set']}: ROC, mean over seeds",
                                max_fp=cfg.eval.roc_max_fp, key_fp=100)
  faces = int(rows[0]["num_faces"])
  pr = {}
  for v in variants:
    mine = [r for r in rows if r["variant"] == v]
    recall, precision = mean_pr([r["roc"] for r in mine], faces)
    pr[v] = (recall, precision, float(np.mean([r["ap"] for r in mine])))
  files["pr"] = plots.plot_pr(pr, os.path.join(out_dir, "ablation_pr.png"),
                              title=f"{rows[0]['set']}: precision-recall, mean over seeds "
                                    "(legend: mean AP)")
  bars, errs = {}, {}
  for v in variants:
    stats = [mean_std([r[k] for r in rows if r["variant"] == v]) for k in ("x12_pass", "x24_pass")]
    bars[v], errs[v] = [m for m, _ in stats], [s for _, s in stats]
  r12, r24 = cfg.eval.pass_recalls
  files["pass"] = plots.plot_bars(
      bars, (f"x12 (recall {r12:g})", f"x12 + x24 (recall {r24:g})"),
      os.path.join(out_dir, "ablation_pass_rates.png"), "Negatives let through at equal recall",
      "share of negative crops passed", errs, log_y=True)
  runs = [ablation.Run(r["variant"], r["seed"]) for r in rows]
  for b in BRANCHES:
    curves = training_curves(cfg, workdir, runs, b)
    if curves:
      files[f"train_{b}"] = plots.plot_curves(
          curves, os.path.join(out_dir, f"ablation_train_{b}.png"),
          f"{b} training loss (mean over seeds)", "samples seen", f"train/{b}/loss", log_y=True)
  return {"rows": rows, "missing": missing, "files": files}


def fmt_summary(result: dict) -> str:
  lines = [f"{r['run']}: AP {r['ap']:.3f}" for r in result["rows"]]
  if result["missing"]:
    lines.append(f"missing: {', '.join(result['missing'])}")
  lines += [f"{k}: {v}" for k, v in result["files"].items()]
  return "\n".join(lines)

