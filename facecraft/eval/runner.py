"""Scores a detections (or landmark predictions) file on a benchmark: `facecraft evaluate`.

The dataset name picks its evaluator (facecraft.eval.evaluators.DATASETS -> the EVALUATORS
registry); this module only reads the command line, adds plots and result files, and prints.

Detections JSON (the `facecraft detect` format), image ids as the dataset names them::

  {"2002/08/11/big/img_591": [{"box": [x1, y1, x2, y2], "score": 0.98}, ...], ...}

Every image the detector saw should be listed, with [] when it found nothing: a file with no
image at all is refused as a likely mistake. Ground-truth images absent from the file count as
images without detections (their faces are missed).

Landmark predictions JSON (`--task landmarks`)::

  {image_id: [{"landmarks": [[x, y], ...], "box": [x1, y1, x2, y2]}, ...], ...}

Without "box", faces are taken in the order of the ground-truth faces of that image (the order
the dataset reader gives); with "box" on every face they are matched to the ground-truth boxes
one-to-one by IoU (see facecraft.eval.landmarks.landmark_errors). A `facecraft detect` file
whose faces carry "landmarks" is therefore accepted as it is.

The result is one JSON-able dict; `run_from_args` prints it as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Mapping

from data_pipelines import records as records_lib
from facecraft.eval import evaluators
from facecraft.eval import landmarks as landmarks_lib
from facecraft.eval.evaluators import base
from facecraft.eval.evaluators import boxes
from facecraft.eval.evaluators import official

log = logging.getLogger(__name__)

TASKS = evaluators.TASKS
DETECTION_DATASETS = {k: reader for k, (_, reader) in evaluators.DATASETS["detection"].items()}
LANDMARK_DATASETS = {k: reader for k, (_, reader) in evaluators.DATASETS["landmarks"].items()}
TPR_FP_POINTS = boxes.TPR_FP_POINTS
SECOND_IOU = boxes.SECOND_IOU
# The protocol code lives in facecraft.eval.evaluators; these names stay importable from here.
EvaluationError = base.EvaluationError
load_detections_json = base.load_detections_json
to_jsonable = base.to_jsonable
wider_gt_dir = official.wider_gt_dir


def load_landmarks_json(path: str) -> dict[str, Any]:
  """image_id -> points [n, K, 2] (ground-truth order) or (points, boxes [n, 4]) (IoU match)."""
  return landmarks_lib.predictions_from_json(base.read_json(path, "landmark predictions"), path)


def make_evaluator(dataset: str, root: str, task: str = "detection", split: str | None = None,
                   iou: float = 0.5, norm: str | None = None, **settings) -> base.Evaluator:
  """The registered evaluator of a dataset name with the command line's settings."""
  if task == "landmarks":
    settings["norm"] = norm or "auto"
  else:
    settings["iou"] = iou
  return evaluators.for_dataset(dataset, task, root=root, split=split, **settings)


def load_ground_truth(dataset: str, root: str, task: str = "detection",
                      split: str | None = None) -> list[records_lib.FaceRecord]:
  """The dataset's FaceRecords as its evaluator reads them (WIDER: the official .mat files,
  faces outside the hard keep list ignored)."""
  return make_evaluator(dataset, root, task, split).records


def report(ev: base.Evaluator, out: dict[str, Any], plot: str | None, out_dir: str | None,
           name: str) -> dict[str, Any]:
  """Adds the figure and the result files of an evaluator's last score to `out`."""
  if out_dir and ev.TASK == "detection":
    ev.write_files(out_dir)
  if plot:
    ev.plot(plot, name)
    out["plot"] = plot
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{ev.name}_{ev.TASK}.json"), "w", encoding="utf-8") as f:
      json.dump(to_jsonable(out), f, indent=1)
  return to_jsonable(out)


def evaluate_dataset(dataset: str, root: str, dets: Mapping[str, Any], task: str = "detection",
                     split: str | None = None, iou: float = 0.5, plot: str | None = None,
                     out_dir: str | None = None, norm: str | None = None,
                     name: str = "detections") -> dict[str, Any]:
  """Scores `dets` (detections, or landmark predictions for task="landmarks") on a benchmark.

  Detection sets report "ap" (VOC, all points, at `iou`), "ap_11pt", "ap_at_iou" {iou, 0.3}
  and "tpr_at_fp" {"100", "500", "1000", "2000"} (discrete ROC); FDDB adds the official
  "discrete" / "continuous" scores (and DiscROC.txt / ContROC.txt in out_dir; its "ap" is the VOC
  AP against the ellipses' bounding boxes, not an official FDDB number), WIDER reports "ap" as
  {"easy", "medium", "hard"} by the official protocol. `plot` writes a PNG: ROC for
  FDDB and CMU+MIT, PR for the others, CED for landmarks. `name` labels the plotted system.
  """
  ev = make_evaluator(dataset, root, task, split, iou, norm)
  return report(ev, ev.score(dets), plot, out_dir, name)


# ------------------------------------------------------------------ command line


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The options of `facecraft evaluate` (shared with python -m experiments.evaluate)."""
  # Choices per task: one union list made users pick landmark sets that detection then rejected.
  per_task = "; ".join(f"{task}: {', '.join(sorted(evaluators.DATASETS[task]))}" for task in TASKS)
  parser.add_argument("--dataset", required=True, choices=evaluators.dataset_names(),
                      metavar="NAME", help=f"benchmark to score on, per --task ({per_task})")
  parser.add_argument("--root", required=True, help="the dataset folder")
  parser.add_argument("--detections", "--predictions", dest="detections",
                      help="detections JSON ({image_id: [{box, score}]}), or landmark predictions "
                      "({image_id: [{landmarks, box?}]}) with --task landmarks")
  parser.add_argument("--model", help="run this detector (a Detector.from_pretrained name) on the "
                      "dataset's images first; wired by facecraft/cli.py and experiments/evaluate.py")
  parser.add_argument("--task", choices=TASKS, default="detection")
  parser.add_argument("--split", default=None, help="dataset split (reader-specific)")
  parser.add_argument("--iou", type=float, default=0.5, help="IoU for a true positive")
  parser.add_argument("--norm", default="auto", choices=("auto",) + landmarks_lib.NORMS,
                      help="NME normaliser for --task landmarks")
  parser.add_argument("--plot", default=None, help="write a ROC / PR / CED figure to this PNG")
  parser.add_argument("--out-dir", "--out_dir", dest="out_dir", default=None,
                      help="write the JSON result (and FDDB's DiscROC.txt / ContROC.txt) here")
  parser.add_argument("--name", default=None, help="system name in the plot legend")
  return parser


def run_from_args(args: argparse.Namespace, prog: str = "facecraft evaluate",
                  predict_fn: Callable | None = None) -> int:
  """Runs one evaluation; prints ONE JSON object on stdout (logs go to stderr).

  With args.detections the file is scored; with predict_fn (a launcher's model, args.model its
  name) the evaluator runs it on the dataset's pictures, and out_dir also gets the predictions
  as detections_<model>.json. Returns the exit code: 0 done, 1 bad input (files, ids, options),
  2 usage (no file, or --model without a launcher that runs it).
  """
  if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
  model = getattr(args, "model", None)
  if model and predict_fn is None:
    # facecraft.eval never imports the inference layer: the launchers build the predict_fn.
    print(f"{prog}: error: --model runs a detector, which `facecraft evaluate` and `python -m "
          f"experiments.evaluate` do; this entry point only scores --detections files",
          file=sys.stderr)
    return 2
  if predict_fn is None and not args.detections:
    print(f"{prog}: error: --detections FILE is required", file=sys.stderr)
    return 2
  try:
    ev = make_evaluator(args.dataset, args.root, args.task, args.split, args.iou, args.norm)
    if predict_fn is not None:
      name = args.name or model or "model"
      out = _without_run_extras(ev.run(predict_fn))
      if args.out_dir:
        ev.save_predictions(os.path.join(args.out_dir, f"detections_{model or name}.json"))
    else:
      name = args.name or os.path.splitext(os.path.basename(args.detections))[0]
      out = ev.score_file(args.detections)
    result = report(ev, out, args.plot, args.out_dir, name)
  except (EvaluationError, records_lib.AnnotationError, FileNotFoundError, ValueError) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(result, allow_nan=False))
  return 0


def _without_run_extras(out: dict[str, Any]) -> dict[str, Any]:
  # The printed result is the same whether the detections come from a file or a model.
  for key in ("seconds", "predict_seconds", "detections_per_image", "truncated_images"):
    out.pop(key, None)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="facecraft evaluate", description=__doc__.split("\n")[0])
  return run_from_args(add_evaluate_arguments(parser).parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
