r"""Scores a detector or a detections file on a benchmark (absl twin of `facecraft evaluate`).

  python -m experiments.evaluate --dataset=fddb --root=/data/fddb --detections=dets.json \
      --plot=roc.png --out_dir=/tmp/fddb_eval
  python -m experiments.evaluate --dataset=cmu_mit --root=../shared/data/cmu_mit_frontal \
      --model=facecraft

Both go through the dataset's evaluator (facecraft.eval.evaluators). Prints one JSON object on
stdout (logs go to stderr); see facecraft.eval.runner for the formats.
"""

from __future__ import annotations

import argparse
import sys

from absl import app
from absl import flags

from facecraft import cli
from facecraft.eval import evaluators
from facecraft.eval import landmarks
from facecraft.eval import runner

_DATASET = flags.DEFINE_enum(
    "dataset", None, evaluators.dataset_names(), "Benchmark to score on.")
_ROOT = flags.DEFINE_string("root", None, "The dataset folder.")
_DETECTIONS = flags.DEFINE_string(
    "detections", None, "Detections JSON, or landmark predictions JSON with --task=landmarks.")
_MODEL = flags.DEFINE_string("model", None, "Run this detector (a Detector.from_pretrained name) "
                             "on the dataset's pictures instead of reading --detections.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "With --model: images per detector call.")
_TASK = flags.DEFINE_enum("task", "detection", list(runner.TASKS), "What the file predicts.")
_SPLIT = flags.DEFINE_string("split", None, "Dataset split (reader-specific).")
_IOU = flags.DEFINE_float("iou", 0.5, "IoU for a true positive.")
_NORM = flags.DEFINE_enum("norm", "auto", ["auto", *landmarks.NORMS],
                          "NME normaliser for --task=landmarks.")
_PLOT = flags.DEFINE_string("plot", None, "Write a ROC / PR / CED figure to this PNG.")
_OUT_DIR = flags.DEFINE_string("out_dir", None,
                               "Write the JSON result (and FDDB's DiscROC.txt / ContROC.txt) here.")
_NAME = flags.DEFINE_string("name", None, "System name in the plot legend.")

flags.mark_flags_as_required(["dataset", "root"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = argparse.Namespace(
      dataset=_DATASET.value, root=_ROOT.value, detections=_DETECTIONS.value, model=_MODEL.value,
      task=_TASK.value, split=_SPLIT.value, iou=_IOU.value, norm=_NORM.value, plot=_PLOT.value,
      out_dir=_OUT_DIR.value, name=_NAME.value)
  predict_fn = None
  if args.model:
    if args.detections:
      raise app.UsageError("give --model or --detections, not both")
    predict_fn = cli.detect_dataset(args.model, _BATCH_SIZE.value)
  sys.exit(runner.run_from_args(args, prog="experiments.evaluate", predict_fn=predict_fn))


if __name__ == "__main__":
  app.run(main)
