"""Scores a detections (or landmark predictions) file on a benchmark: `facecraft evaluate`.

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
import math
import os
import sys
from typing import Any, Mapping

import numpy as np

from data_pipelines import formats
from data_pipelines import records as records_lib
from facecraft.eval import landmarks as landmarks_lib

log = logging.getLogger(__name__)

# Dataset name on the command line -> reader in data_pipelines.formats.
DETECTION_DATASETS = {
    "fddb": "fddb", "wider": "wider_face", "wider_face": "wider_face", "afw": "afw",
    "pascal_faces": "pascal_faces", "cmu_mit": "cmu_mit", "dlib_xml": "dlib_xml",
    "facecraft_json": "facecraft_json",
}
LANDMARK_DATASETS = {
    "300w": "pts68", "pts68": "pts68", "cofw": "cofw", "aflw": "aflw", "celeba": "celeba",
    "caltech_webfaces": "caltech_webfaces", "youtube68": "youtube68", "dlib_xml": "dlib_xml",
    "cmu_mit": "cmu_mit", "wider": "wider_face", "facecraft_json": "facecraft_json",
}
TASKS = ("detection", "landmarks")
TPR_FP_POINTS = (100, 500, 1000, 2000)
# Where the official WIDER evaluation ground truth (wider_{easy,medium,hard}_val.mat) may sit:
# eval_tools.zip unpacks to eval_tools/ground_truth/; the Python port keeps ./ground_truth/.
WIDER_GT_DIRS = ("eval_tools/ground_truth", "ground_truth", ".")
WIDER_GT_FILE = "wider_easy_val.mat"
# AFW's rule in the FaceCraft paper is IoU 0.3; VOC's is 0.5: report both for box benchmarks.
SECOND_IOU = 0.3


class EvaluationError(ValueError):
  """Bad evaluation input (file, ids, options), said in words a user can act on."""


# ------------------------------------------------------------------ input files


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  # json.loads would keep the last of two equal keys: half an image's detections, silently lost.
  out = dict(pairs)
  if len(out) != len(pairs):
    seen = set()
    dup = next(k for k, _ in pairs if k in seen or seen.add(k))
    raise EvaluationError(f"the key {dup!r} appears twice in one object")
  return out


def _read_json(path: str, what: str) -> Any:
  if not os.path.isfile(path):
    raise EvaluationError(f"{what} file not found: {path}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not text.strip():
    raise EvaluationError(f"{what} file {path} is empty")
  try:
    doc = json.loads(text, object_pairs_hook=_unique_keys)
  except json.JSONDecodeError as e:
    raise EvaluationError(f"{what} file {path} is not JSON: {e.msg} at line {e.lineno}") from None
  except EvaluationError as e:
    raise EvaluationError(f"{what} file {path}: {e}") from None
  if not isinstance(doc, dict):
    raise EvaluationError(f"{what} file {path}: expected an object {{image_id: [faces]}}, got "
                          f"{type(doc).__name__}")
  if not doc:
    raise EvaluationError(f"{what} file {path} lists no image; a detector that finds nothing "
                          f"still lists each image it ran on, with []")
  return doc


def _finite_numbers(values: Any, count: int, where: str) -> np.ndarray:
  if not (isinstance(values, list) and len(values) == count and
          all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
    raise EvaluationError(f"{where}: expected {count} number{'s' * (count > 1)}, got {values!r}")
  if not all(math.isfinite(v) for v in values):
    raise EvaluationError(f"{where}: non-finite value in {values!r}")
  return np.asarray(values, np.float64)


def load_detections_json(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """image_id -> (boxes float32 [n, 4] xyxy, scores float64 [n]); clear errors for bad input."""
  out = {}
  for image_id, faces in _read_json(path, "detections").items():
    if not isinstance(faces, list):
      raise EvaluationError(f"{path}: {image_id!r}: expected a list of faces, got "
                            f"{type(faces).__name__}")
    boxes, scores = np.zeros((len(faces), 4), np.float32), np.zeros(len(faces), np.float64)
    for j, face in enumerate(faces):
      where = f"{path}: {image_id!r}[{j}]"
      if not isinstance(face, dict) or "box" not in face or "score" not in face:
        raise EvaluationError(f"{where}: a detection needs \"box\" and \"score\", got {face!r}")
      scores[j] = _finite_numbers([face["score"]], 1, f"{where}.score")[0]
      boxes[j] = box = _finite_numbers(face["box"], 4, f"{where}.box")
      if box[2] < box[0] or box[3] < box[1]:
        raise EvaluationError(f"{where}.box {face['box']!r} has x2 < x1 or y2 < y1 (boxes are "
                              f"[x1, y1, x2, y2])")
    out[image_id] = boxes, scores
  return out


def load_landmarks_json(path: str) -> dict[str, Any]:
  """image_id -> points [n, K, 2] (ground-truth order) or (points, boxes [n, 4]) (IoU match)."""
  return landmarks_lib.predictions_from_json(_read_json(path, "landmark predictions"), path)


# ------------------------------------------------------------------ ground truth


def _reader(dataset: str, task: str) -> str:
  if task not in TASKS:
    raise EvaluationError(f"unknown task {task!r}; choose one of {TASKS}")
  table = DETECTION_DATASETS if task == "detection" else LANDMARK_DATASETS
  if dataset not in table:
    raise EvaluationError(f"no {task} benchmark named {dataset!r}; known: {', '.join(table)}")
  return table[dataset]


def load_ground_truth(dataset: str, root: str, task: str = "detection",
                      split: str | None = None) -> list[records_lib.FaceRecord]:
  """The dataset's FaceRecords through data_pipelines.formats (image headers are not read).

  WIDER is the exception: its benchmark ground truth is the official evaluation files
  (wider_face_val.mat; faces outside the hard keep list are marked ignore), not the reader.
  """
  reader = _reader(dataset, task)
  if not os.path.exists(root):
    raise EvaluationError(f"{dataset}: root {root} does not exist")
  if reader == "wider_face" and task == "detection":
    recs = _wider_records(_wider_gt(root, split))
  else:
    # FDDB clips regions to the image as the official tool does: it needs the image sizes.
    recs = formats.load(reader, root, split=split, check_images=reader == "fddb")
  if not recs:
    raise EvaluationError(f"{dataset}: no ground-truth image found under {root}")
  log.info("%s: %d images, %d faces", dataset, len(recs), sum(r.num_faces for r in recs))
  return recs


def wider_gt_dir(root: str) -> str:
  """The folder holding the official wider_{easy,medium,hard}_val.mat under `root`."""
  for sub in WIDER_GT_DIRS:
    folder = os.path.normpath(os.path.join(root, sub))
    if os.path.isfile(os.path.join(folder, WIDER_GT_FILE)):
      return folder
  raise EvaluationError(
      f"wider: no {WIDER_GT_FILE} under {root} (looked in {', '.join(WIDER_GT_DIRS)}); unpack the "
      f"official eval_tools.zip there (it holds eval_tools/ground_truth/)")


def _wider_gt(root: str, split: str | None):
  from facecraft.eval import wider  # pylint: disable=g-import-not-at-top
  if split not in (None, "val"):
    raise EvaluationError(f"wider: only the val split has public evaluation ground truth, got "
                          f"{split!r}")
  return wider.load_wider_eval_gt(wider_gt_dir(root))


def _wider_records(gt) -> list[records_lib.FaceRecord]:
  recs = []
  for image_id, boxes, hard in zip(gt.image_ids, gt.boxes, gt.keep["hard"]):
    ignore = np.ones(len(boxes), bool)
    ignore[hard] = False
    recs.append(records_lib.FaceRecord(image="", boxes=boxes, ignore=ignore, image_id=image_id))
  return recs


# ------------------------------------------------------------------ evaluation


def _tpr_dict(values: Mapping[int, float]) -> dict[str, float]:
  return {str(int(k)): float(v) for k, v in values.items()}


def _box_metrics(recs, dets, iou: float) -> tuple[dict[str, Any], Any]:
  from facecraft.eval import detection  # pylint: disable=g-import-not-at-top
  at = detection.evaluate_ap_at(recs, dets, thresholds=(iou, SECOND_IOU))
  result = at[float(iou)]
  out = {"ap": float(result.ap), "ap_11pt": float(result.ap_11pt),
         "ap_at_iou": {f"{t:g}": float(v.ap) for t, v in at.items()},
         "num_positives": int(result.num_positives),
         "tpr_at_fp": _tpr_dict(result.tpr_at_fp(TPR_FP_POINTS))}
  return out, result


def _evaluate_detection(dataset, root, dets, split, iou, plot, out_dir, name):
  from facecraft.eval import detection  # pylint: disable=g-import-not-at-top
  from facecraft.eval import plots  # pylint: disable=g-import-not-at-top
  is_wider = _reader(dataset, "detection") == "wider_face"
  if is_wider:
    wider_gt = _wider_gt(root, split)
    recs = _wider_records(wider_gt)
  else:
    recs = load_ground_truth(dataset, root, "detection", split)
  known = {r.image_id for r in recs}
  detection.validate_detections(dets, known)  # Unknown ids, NaN, x2 < x1: a clear ValueError.
  if len(set(dets) & known) < len(known):
    log.warning("%s: %d of %d ground-truth images have no entry in the detections (their faces "
                "count as missed)", dataset, len(known - set(dets)), len(known))
  out: dict[str, Any] = {"dataset": dataset, "task": "detection", "split": split, "iou": iou,
                         "num_images": len(recs), "num_images_in_detections": len(set(dets)),
                         "num_detections": int(sum(len(s) for _, s in dets.values()))}
  boxes, result = _box_metrics(recs, dets, iou)
  if dataset == "fddb":
    from facecraft.eval import fddb  # pylint: disable=g-import-not-at-top
    fr = fddb.evaluate_fddb(recs, dets)
    out["discrete"] = {"tpr_at_fp": _tpr_dict(fr.tpr_at_fp("disc", TPR_FP_POINTS))}
    out["continuous"] = {"tpr_at_fp": _tpr_dict(fr.tpr_at_fp("cont", TPR_FP_POINTS))}
    out["tpr_at_fp"] = out["discrete"]["tpr_at_fp"]
    if fr.per_fold:
      out["per_fold"] = {fold: {"discrete": _tpr_dict(r.tpr_at_fp("disc", TPR_FP_POINTS)),
                                "continuous": _tpr_dict(r.tpr_at_fp("cont", TPR_FP_POINTS))}
                         for fold, r in fr.per_fold.items()}
    # Not an official FDDB number: VOC AP of the boxes against the ellipses' bounding boxes.
    out.update({k: boxes[k] for k in ("ap", "ap_11pt", "ap_at_iou", "num_positives")})
    if out_dir:
      os.makedirs(out_dir, exist_ok=True)
      fddb.write_roc(os.path.join(out_dir, "DiscROC.txt"), fr.disc)
      fddb.write_roc(os.path.join(out_dir, "ContROC.txt"), fr.cont)
    if plot:
      plots.plot_roc({name: _roc_arrays(fr.disc)}, plot, title="FDDB discrete ROC", max_fp=2000)
  elif is_wider:
    from facecraft.eval import wider  # pylint: disable=g-import-not-at-top
    wr = wider.evaluate_wider(wider_gt, dets, iou_threshold=iou)
    out["ap"] = {k: float(wr[k]) for k in wider.SETTINGS}
    out["num_faces"] = wr["num_faces"]
    # Not official WIDER numbers: VOC matching over the hard-set faces (the others ignored).
    out["tpr_at_fp"], out["ap_voc_hard"] = boxes["tpr_at_fp"], boxes["ap"]
    if plot:
      plots.plot_pr({f"{name} {k}": (*wr["curves"][k], wr[k]) for k in wider.SETTINGS}, plot,
                    title="WIDER FACE val")
  else:
    out.update(boxes)
    if plot and dataset == "cmu_mit":
      plots.plot_roc({name: result.roc()}, plot, title="CMU+MIT ROC")
    elif plot:
      plots.plot_pr({name: (result.recall, result.precision, result.ap)}, plot,
                    title=f"{dataset} precision-recall (IoU {iou:g})")
  if plot:
    out["plot"] = plot
  return out


def _roc_arrays(roc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positives, true-positive rate) of an FDDB ROC [T, 3] (TPR, FP, threshold)."""
  return roc[:, 1], roc[:, 0]


def _evaluate_landmarks(dataset, root, preds, split, norm, plot, name):
  from facecraft.eval import plots  # pylint: disable=g-import-not-at-top
  recs = load_ground_truth(dataset, root, "landmarks", split)
  box_from = "record" if dataset == "aflw" else "landmarks"
  if norm in (None, "auto"):
    gt_scheme = next((r.landmark_scheme for r in recs if r.landmarks is not None), None)
    if gt_scheme is None:
      raise EvaluationError(f"{dataset}: the ground truth under {root} has no landmarks")
    points = [p[0] if isinstance(p, tuple) else p for p in preds.values()]
    k = next((len(p[0]) for p in points if len(p)), None)
    norm = landmarks_lib.default_norm(gt_scheme, k, by_box=dataset == "aflw")
  errors = landmarks_lib.landmark_errors(recs, preds, norm, box_from)
  out = {"dataset": dataset, "task": "landmarks", "split": split, "scheme": errors["scheme"],
         "norm": norm, "box_from": box_from, "num_images": errors["num_images"],
         "num_missed": errors["num_missed"]}
  out.update(landmarks_lib.summarize(errors["nmes"], errors["point_errors"]))
  if plot:
    plots.plot_ced({name: errors["nmes"]}, plot, max_error=0.1, title=f"{dataset} CED",
                   xlabel=f"NME ({norm})")
    out["plot"] = plot
  return out


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
  _reader(dataset, task)
  if not dets:
    raise EvaluationError("no detections given")
  if task == "landmarks":
    out = _evaluate_landmarks(dataset, root, dets, split, norm, plot, name)
  else:
    out = _evaluate_detection(dataset, root, dets, split, iou, plot, out_dir, name)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{dataset}_{task}.json"), "w", encoding="utf-8") as f:
      json.dump(to_jsonable(out), f, indent=1)
  return to_jsonable(out)


def to_jsonable(obj: Any) -> Any:
  """Plain Python for json.dumps: numpy -> float/int/list, NaN and inf -> None (strict JSON)."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  return obj


# ------------------------------------------------------------------ command line


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The options of `facecraft evaluate` (shared with python -m experiments.evaluate)."""
  names = sorted(set(DETECTION_DATASETS) | set(LANDMARK_DATASETS))
  parser.add_argument("--dataset", required=True, choices=names, help="benchmark to score on")
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


def run_from_args(args: argparse.Namespace, prog: str = "facecraft evaluate") -> int:
  """Runs one evaluation; prints ONE JSON object on stdout (logs go to stderr).

  Returns the exit code: 0 done, 1 bad input (files, ids, options), 2 usage (--model, no file).
  """
  if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
  if getattr(args, "model", None):
    # facecraft.eval may not import the inference layer: the launchers run the model first.
    print(f"{prog}: error: --model is handled by `facecraft evaluate` and experiments.evaluate; "
          f"here pass a detections file with --detections", file=sys.stderr)
    return 2
  if not args.detections:
    print(f"{prog}: error: --detections FILE is required", file=sys.stderr)
    return 2
  try:
    _reader(args.dataset, args.task)  # A wrong dataset/task pair is said before reading files.
    if args.task == "landmarks":
      dets = load_landmarks_json(args.detections)
    else:
      dets = load_detections_json(args.detections)
    name = args.name or os.path.splitext(os.path.basename(args.detections))[0]
    result = evaluate_dataset(args.dataset, args.root, dets, task=args.task, split=args.split,
                              iou=args.iou, plot=args.plot, out_dir=args.out_dir,
                              norm=args.norm, name=name)
  except (EvaluationError, records_lib.AnnotationError, FileNotFoundError, ValueError) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(result, allow_nan=False))
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="facecraft evaluate", description=__doc__.split("\n")[0])
  return run_from_args(add_evaluate_arguments(parser).parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
