"""The official WIDER FACE validation protocol (eval_tools: wider_eval.m), easy / medium / hard.

Ground truth comes from the official evaluation files (eval_tools/ground_truth):
  wider_face_val.mat                event_list {61x1}, file_list {61x1}{n x 1}, face_bbx_list
                                    {61x1}{n x 1}[k x 4] (x, y, w, h)
  wider_{easy,medium,hard}_val.mat  gt_list {61x1}{n x 1}[m x 1]: 1-based indices of the faces of
                                    each image that count in that setting

Semantics reproduced from the MATLAB tool (read_pred.m, norm_score.m, evaluation.m), which the
Python port wondervictor/WiderFace-Evaluation documents line for line:
  * Each image's predictions are sorted by descending score (read_pred.m).
  * Scores are normalised over the whole set: (s - min) / (max - min) with the global min and max
    (norm_score.m). The Python port starts from max = 0, min = 1, which differs when every score
    lies above 1 or below 0; we follow MATLAB (the true min and max). When all scores are equal
    MATLAB divides by zero (AP 0); we map them to 1 instead and warn.
  * Boxes are (x, y, w, h) turned into (x, y, x + w, y + h) and compared with the VOC devkit's
    "+1" IoU: widths are x2 - x1 + 1. Our xyxy boxes (x2 = x + w) therefore get the same numbers.
  * Per image, in score order, a prediction takes the face of highest IoU (first on ties); if that
    IoU >= 0.5: a face outside the setting's keep list makes the prediction "not a proposal"
    (neither TP nor FP), a kept face is recalled the first time; a second prediction on a recalled
    kept face still counts as a proposal (FP). Below 0.5 it is a proposal (FP).
  * 1000 thresholds t = 1 - k/1000 (k = 1..1000) on the normalised score; per image and threshold
    the number of proposals and of recalled kept faces among predictions with score >= t; summed
    over images; precision = recalled / proposals (NaN where there is no proposal, harmless for the
    AP), recall = recalled / number of kept faces in the whole set; AP = VOC all-point AP.
  * QUIRK kept: images with no ground-truth face are skipped, so their predictions are not counted
    as false positives (they still enter the score normalisation).
  * Images with no prediction: their kept faces count as missed (MATLAB prints "Can not find the
    prediction file" and goes on; the Python port crashes instead).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Any, Mapping

import numpy as np

from data_pipelines import records as records_lib
from facecraft.eval import detection

log = logging.getLogger(__name__)

SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000
_GT_SUBDIRS = ("", "ground_truth", os.path.join("eval_tools", "ground_truth"))


@dataclasses.dataclass
class WiderEvalGT:
  """The official evaluation ground truth, flattened over events.

  Attributes:
    image_ids: "<event>/<file>" (no extension), in the order of the .mat files.
    boxes: per image float64 [k, 4] xyxy = (x, y, x + w, y + h).
    keep: setting -> per image int64 [m] 0-based indices of the faces that count.
  """

  image_ids: list[str]
  boxes: list[np.ndarray]
  keep: dict[str, list[np.ndarray]]

  def num_faces(self, setting: str) -> int:
    return int(sum(len(k) for k in self.keep[setting]))


def _mat_str(x: Any) -> str:
  """Unwraps loadmat's nested cells (array([array(['name'])])) down to the string."""
  while isinstance(x, np.ndarray):
    if x.size != 1:
      raise ValueError(f"expected one string, found an array of shape {x.shape}")
    x = x.reshape(-1)[0]
  return str(x)


def _cells(x: Any, what: str) -> list[Any]:
  if not isinstance(x, np.ndarray) or x.dtype != object:
    raise ValueError(f"{what}: expected a MATLAB cell array, got {type(x).__name__}")
  return list(x.reshape(-1))


def _find_gt_file(gt_dir: str, name: str) -> str:
  for sub in _GT_SUBDIRS:
    path = os.path.join(gt_dir, sub, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"{name} not found under {gt_dir} (looked in {', '.join(s or '.' for s in _GT_SUBDIRS)}); "
      "the official eval_tools/ground_truth holds wider_face_val.mat and "
      "wider_{easy,medium,hard}_val.mat")


def load_wider_eval_gt(gt_dir: str) -> WiderEvalGT:
  """Reads the four official .mat files from `gt_dir` (or its ground_truth/ subfolder)."""
  from scipy import io as sio  # Local: scipy.io only when WIDER is evaluated.
  path = _find_gt_file(gt_dir, "wider_face_val.mat")
  try:
    mat = sio.loadmat(path)
    events = [_mat_str(e) for e in _cells(mat["event_list"], "event_list")]
    files = [[_mat_str(f) for f in _cells(c, "file_list")]
             for c in _cells(mat["file_list"], "file_list")]
    bbx = [_cells(c, "face_bbx_list") for c in _cells(mat["face_bbx_list"], "face_bbx_list")]
  except (KeyError, ValueError) as e:
    raise ValueError(f"{path}: not the official WIDER FACE evaluation structure: {e}") from None
  if not len(events) == len(files) == len(bbx):
    raise ValueError(f"{path}: {len(events)} events but {len(files)} file lists and "
                     f"{len(bbx)} box lists")
  image_ids, boxes = [], []
  for event, names, event_boxes in zip(events, files, bbx):
    if len(names) != len(event_boxes):
      raise ValueError(f"{path}: event {event}: {len(names)} files but {len(event_boxes)} box sets")
    for name, b in zip(names, event_boxes):
      b = np.asarray(b, np.float64)
      b = b.reshape(-1, 4) if b.size else np.zeros((0, 4))
      if not np.isfinite(b).all():
        raise ValueError(f"{path}: non-finite box in {event}/{name}")
      image_ids.append(f"{event}/{name}")
      boxes.append(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1))
  keep: dict[str, list[np.ndarray]] = {}
  for setting in SETTINGS:
    spath = _find_gt_file(gt_dir, f"wider_{setting}_val.mat")
    try:
      lists = [_cells(c, "gt_list") for c in _cells(sio.loadmat(spath)["gt_list"], "gt_list")]
    except (KeyError, ValueError) as e:
      raise ValueError(f"{spath}: not the official WIDER FACE evaluation structure: {e}") from None
    flat = [np.asarray(k, np.float64).reshape(-1) for event in lists for k in event]
    if [len(event) for event in lists] != [len(n) for n in files]:
      raise ValueError(f"{spath}: its images per event do not match wider_face_val.mat")
    setting_keep = []
    for image_id, b, k in zip(image_ids, boxes, flat):
      if k.size and (k.min() < 1 or k.max() > len(b) or np.any(k != np.round(k))):
        raise ValueError(f"{spath}: {image_id}: face indices {k.astype(int).tolist()} are not "
                         f"1-based indices into its {len(b)} faces")
      setting_keep.append(k.astype(np.int64) - 1)
    keep[setting] = setting_keep
  return WiderEvalGT(image_ids=image_ids, boxes=boxes, keep=keep)


# ----------------------------------------------------------------------------- predictions


def read_pred_dir(path: str) -> detection.Detections:
  """Reads the official prediction layout <path>/<event>/<file>.txt.

  Each file: the image name, the number of boxes, then `x y w h score` per line. Keys are
  "<event>/<file>" (the txt path, as read_pred.m opens it); boxes become (x, y, x + w, y + h).
  Blank lines are skipped; a count that does not match the box lines is an error.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f"prediction folder {path} does not exist")
  dets: detection.Detections = {}
  for event in sorted(os.listdir(path)):
    event_dir = os.path.join(path, event)
    if not os.path.isdir(event_dir):
      continue
    for name in sorted(os.listdir(event_dir)):
      if name.endswith(".txt"):
        dets[f"{event}/{name[:-4]}"] = _read_pred_file(os.path.join(event_dir, name))
  if not dets:
    raise ValueError(f"no <event>/<file>.txt prediction files under {path}")
  return dets


def _read_pred_file(path: str) -> tuple[np.ndarray, np.ndarray]:
  with open(path) as f:
    lines = [(i + 1, line.strip()) for i, line in enumerate(f)]
  lines = [(n, s) for n, s in lines if s]
  if len(lines) < 2:
    raise records_lib.AnnotationError("expected the image name and the number of boxes", path)
  count_line, count_text = lines[1]
  try:
    count = int(float(count_text))
  except ValueError:
    raise records_lib.AnnotationError(f"not a box count: {count_text!r}", path, count_line) from None
  rows = lines[2:]
  if count != len(rows):
    raise records_lib.AnnotationError(f"the file says {count} boxes but has {len(rows)} box lines",
                                      path, count_line)
  values = np.asarray([records_lib.parse_floats(s.split(), path, n, 5) for n, s in rows],
                      np.float64).reshape(-1, 5)
  for (n, _), v in zip(rows, values):
    if v[2] < 0 or v[3] < 0:
      raise records_lib.AnnotationError(f"negative width or height in {v[:4].tolist()}", path, n)
  boxes = np.concatenate([values[:, :2], values[:, :2] + values[:, 2:4]], axis=1)
  return boxes, values[:, 4].copy()


def write_pred_dir(dets: Mapping[str, Any], path: str) -> None:
  """Writes detections as the official <event>/<file>.txt layout (x y w h score)."""
  for image_id, value in dets.items():
    boxes, scores = detection._as_arrays(image_id, value)  # pylint: disable=protected-access
    event, name = image_id.split("/", 1)
    os.makedirs(os.path.join(path, event), exist_ok=True)
    with open(os.path.join(path, event, name + ".txt"), "w") as f:
      f.write(f"{name}.jpg\n{len(boxes)}\n")
      for (x1, y1, x2, y2), s in zip(boxes.tolist(), scores.tolist()):
        f.write(f"{x1!r} {y1!r} {x2 - x1!r} {y2 - y1!r} {s!r}\n")


# ----------------------------------------------------------------------------- evaluation


def normalize_scores(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """norm_score.m: (s - min) / (max - min) over every prediction of the set."""
  nonempty = [s for s in scores.values() if len(s)]
  if not nonempty:
    return {k: np.asarray(s, np.float64) for k, s in scores.items()}
  lo = min(float(np.min(s)) for s in nonempty)
  hi = max(float(np.max(s)) for s in nonempty)
  if hi == lo:
    warnings.warn(f"all prediction scores equal {lo}: normalised to 1 (MATLAB would divide by 0)",
                  detection.EvaluationWarning, stacklevel=3)
    return {k: np.ones(len(s)) for k, s in scores.items()}
  return {k: (np.asarray(s, np.float64) - lo) / (hi - lo) for k, s in scores.items()}


def iou_plus_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[N, 4] x [M, 4] IoU of the VOC devkit (bbox_overlaps): widths are x2 - x1 + 1."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
  ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
  area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
  area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
  inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(inter > 0, inter / np.where(inter > 0, union, 1), 0.0)


def image_eval(best_iou: np.ndarray, best_face: np.ndarray, keep: np.ndarray, num_faces: int,
               iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """image_evaluation of evaluation.m for predictions already in score order.

  Returns (pred_recall, is_proposal): the number of distinct kept faces recalled by predictions
  0..h, and whether prediction h counts as a proposal. Order-independent rules make the loop of
  the official code vectorisable: only the first prediction on a kept face recalls it.
  """
  kept = np.zeros(num_faces, bool)
  kept[keep] = True
  hit = best_iou >= iou_threshold
  on_kept = hit & kept[best_face]
  is_proposal = ~(hit & ~kept[best_face])
  first = np.zeros(len(best_face), bool)
  idx = np.nonzero(on_kept)[0]
  if len(idx):
    _, first_pos = np.unique(best_face[idx], return_index=True)
    first[idx[first_pos]] = True
  return np.cumsum(first), is_proposal


def _thresholds(thresh_num: int) -> np.ndarray:
  # The port's 1 - (t + 1) / thresh_num, t = 0..thresh_num-1, computed the same way in float64.
  return np.array([1 - (t + 1) / thresh_num for t in range(thresh_num)])


def img_pr_info(norm_scores: np.ndarray, is_proposal: np.ndarray, pred_recall: np.ndarray,
                thresholds: np.ndarray) -> np.ndarray:
  """[T, 2] (proposals, recalled) at each threshold, scores sorted descending."""
  # Number of predictions with score >= t (scores descending) = r_index + 1 of the official code.
  count = np.searchsorted(-norm_scores, -thresholds, side="right")
  proposals = np.concatenate([[0], np.cumsum(is_proposal)])[count]
  recalled = np.concatenate([[0], pred_recall])[count]
  return np.stack([proposals, recalled], axis=1).astype(np.float64)


def evaluate_wider(gt: WiderEvalGT, dets: Mapping[str, Any], iou_threshold: float = 0.5,
                   thresh_num: int = THRESH_NUM) -> dict[str, Any]:
  """Official easy / medium / hard AP of `dets` ("<event>/<file>" -> (xyxy boxes, scores)).

  Returns {"easy": ap, "medium": ap, "hard": ap, "curves": {setting: (recall, precision)},
  "num_faces": {setting: kept faces}}.
  """
  detection.validate_detections(dets, gt.image_ids)
  missing = sum(1 for i in gt.image_ids if i not in dets)
  if not dets:
    detection._warn(f"no detections for any of the {len(gt.image_ids)} WIDER images: AP = 0")  # pylint: disable=protected-access
  elif missing:
    log.warning("%d of %d WIDER images have no predictions; their faces count as missed",
                missing, len(gt.image_ids))
  raw = {k: detection._as_arrays(k, v) for k, v in dets.items()}  # pylint: disable=protected-access
  norm = normalize_scores({k: s for k, (_, s) in raw.items()})
  thresholds = _thresholds(thresh_num)
  pr = {s: np.zeros((thresh_num, 2)) for s in SETTINGS}
  for image_id, gt_boxes, *keeps in zip(gt.image_ids, gt.boxes, *(gt.keep[s] for s in SETTINGS)):
    if image_id not in raw or len(gt_boxes) == 0 or len(raw[image_id][0]) == 0:
      continue
    boxes, _ = raw[image_id]
    scores = norm[image_id]
    order = np.argsort(-scores, kind="stable")  # read_pred.m: sort(..., 'descend'), stable.
    boxes, scores = boxes[order], scores[order]
    iou = iou_plus_one(boxes, gt_boxes)
    best_face = np.argmax(iou, axis=1)
    best_iou = iou[np.arange(len(boxes)), best_face]
    for setting, keep in zip(SETTINGS, keeps):
      pred_recall, is_proposal = image_eval(best_iou, best_face, keep, len(gt_boxes), iou_threshold)
      pr[setting] += img_pr_info(scores, is_proposal, pred_recall, thresholds)
  out: dict[str, Any] = {"curves": {}, "num_faces": {}}
  for setting in SETTINGS:
    count_face = gt.num_faces(setting)
    proposals, recalled = pr[setting][:, 0], pr[setting][:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
      precision = recalled / proposals  # NaN at thresholds with no proposal, as the official.
      recall = recalled / count_face if count_face else np.full(thresh_num, np.nan)
    if count_face == 0:
      detection._warn(f"WIDER {setting}: no face in the keep lists: AP is NaN")  # pylint: disable=protected-access
      ap = float("nan")
    else:
      ap = detection.voc_ap(recall, precision)
    out[setting] = ap
    out["curves"][setting] = (recall, precision)
    out["num_faces"][setting] = count_face
  return out
