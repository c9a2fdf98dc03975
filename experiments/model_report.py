r"""Bundled detectors side by side on CMU+MIT, plus a training run's curves (for MODEL_CARD.md).

  python -m experiments.model_report --models facecraft,mtcnn \
      --train_workdir runs/facecraft_main --out experiments/results/facecraft_model

Writes cmu_mit.md / cmu_mit.json (AP at IoU 0.5 and 0.3, TPR at 10/50/100/500 false positives,
detections per image, seconds), cmu_mit_roc.png and cmu_mit_pr.png with every model, and from
the run's metrics.csv training_loss.png (each branch's loss) and training_val.png (CMU+MIT AP
and crop-level cascade AUC at each evaluation).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import numpy as np

from data_pipelines.formats import cmu_mit
from facecraft.eval import evaluators
from facecraft.eval import plots
from facecraft.infer import detector as detector_lib
from facecraft.infer import registry as infer_registry
from facecraft.train import metrics as metrics_lib

_MODELS = flags.DEFINE_list("models", ["facecraft", "mtcnn"], "Detector.from_pretrained names.")
_ROOT = flags.DEFINE_string("root", "../shared/data/cmu_mit_frontal", "CMU+MIT folder.")
_TRAIN_WORKDIR = flags.DEFINE_string("train_workdir", "", "A training run for the curves.")
_OUT = flags.DEFINE_string("out", "experiments/results/facecraft_model", "Output folder.")
_LAST = flags.DEFINE_float("last_threshold", 0.01,
                           "Stage-3 threshold for the curves (stages 1-2 keep each model's own), "
                           "so that PR / ROC run past the recommended operating point.")
FP_POINTS = (10, 50, 100, 500)


def score_models(records, names):
  """Each bundled detector through the CMU+MIT evaluator: (table rows, DetectionResult at 0.5)."""
  rows, curves = {}, {}
  # One evaluator for every model: the pictures are decoded once, before any timing.
  ev = evaluators.create(type="cmu_mit", records=records, iou=0.5, extra_ious=(0.3,),
                         fp_points=FP_POINTS, chunk=0, cache_images=True)
  ev.preload()
  for name in names:
    *early, _ = infer_registry.read_inference(name)["thresholds"]  # cascades 3, rpn_frcnn 2
    thresholds = (*(float(t) for t in early), _LAST.value)
    det = detector_lib.Detector.from_pretrained(name, thresholds=thresholds)
    m = ev.run(lambda arrays, det=det: det.detect_arrays(arrays, batch_size=1))
    shown = infer_registry.display_name(name)
    rows[shown] = {"ap@0.5": ev.results[0.5].ap, "ap@0.3": ev.results[0.3].ap,
                   **{f"tpr@{k}fp": v for k, v in ev.result.tpr_at_fp(FP_POINTS).items()},
                   "detections_per_image": m["detections_per_image"],
                   "thresholds": list(thresholds),
                   "seconds_incl_compile": m["predict_seconds"]}
    curves[shown] = ev.result
    print(f"{shown}: {json.dumps(rows[shown])}", flush=True)
  return rows, curves


def markdown(rows: dict, faces: int) -> str:
  keys = ["ap@0.5", "ap@0.3", *[f"tpr@{k}fp" for k in FP_POINTS], "detections_per_image"]
  lines = [f"CMU+MIT frontal, {faces} faces; TPR at IoU 0.5.", "",
           "| model | thresholds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  for name, r in rows.items():
    th = ", ".join(f"{t:.3g}" for t in r["thresholds"])
    lines.append(f"| {name} | {th} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
  return "\n".join(lines) + "\n"


def training_plots(workdir: str, out: str) -> list[str]:
  m = metrics_lib.read_csv(workdir)
  steps, files = m["step"], []
  loss = {b: (steps, m[f"train/{b}/loss"]) for b in ("x12", "x24", "x48")
          if f"train/{b}/loss" in m}
  if loss:
    files.append(plots.plot_curves(loss, os.path.join(out, "training_loss.png"),
                                   "Training loss per branch", "step", "loss", log_y=True))
  val = {name: (steps, m[key]) for name, key in (
      ("CMU+MIT AP@0.5", "eval/det/ap"), ("crop cascade AUC", "eval/crop/cascade_auc"),
      ("CMU+MIT TPR@100FP", "eval/det/tpr_at_100fp"), ("WIDER val AP easy", "eval/wider/ap/easy"),
      ("WIDER val AP medium", "eval/wider/ap/medium"), ("WIDER val AP hard", "eval/wider/ap/hard"))
         if key in m and np.isfinite(m[key]).any()}
  if val:
    files.append(plots.plot_curves(val, os.path.join(out, "training_val.png"),
                                   "Validation during training", "step", "value"))
  return files


def main(argv) -> None:
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  records = list(cmu_mit.load(_ROOT.value))
  rows, curves = score_models(records, _MODELS.value)
  faces = next(iter(curves.values())).num_positives
  with open(os.path.join(_OUT.value, "cmu_mit.json"), "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(_OUT.value, "cmu_mit.md"), "w") as f:
    f.write(markdown(rows, faces))
  plots.plot_roc({n: c.roc() for n, c in curves.items()},
                 os.path.join(_OUT.value, "cmu_mit_roc.png"), title="CMU+MIT ROC (IoU 0.5)",
                 max_fp=500, key_fp=100)
  plots.plot_pr({n: (c.recall, c.precision, c.ap) for n, c in curves.items()},
                os.path.join(_OUT.value, "cmu_mit_pr.png"), title="CMU+MIT precision-recall")
  if _TRAIN_WORKDIR.value:
    training_plots(_TRAIN_WORKDIR.value, _OUT.value)
  print(markdown(rows, faces))


if __name__ == "__main__":
  app.run(main)
