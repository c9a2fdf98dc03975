"""Detection metrics as PASCAL VOC defines them: matching, PR curve, AP, discrete ROC.

Matching follows the VOC devkit (VOCevaldet.m) exactly: detections are taken in descending
score; each one picks the ground-truth face with the highest IoU (the first on ties); if that
IoU >= the threshold (the devkit's `>=`; py-faster-rcnn's voc_eval.py uses `>`), then
  * an ignored ("difficult") face makes the detection neither TP nor FP,
  * a face not yet taken makes it a TP and takes the face,
  * a face already taken makes it a FP (a duplicate),
otherwise it is a FP. A detection is never re-routed to its second-best face. Faces with
`FaceRecord.ignore` set are the difficult ones; they do not count as positives.

IoU is the continuous one of data_pipelines.geometry (x2 = x + w, no "+1"), because boxes here follow
the corner-origin convention of ARCHITECTURE.md; the devkit's "+1" belongs to its inclusive
integer corners. Detections that landed on ignored faces are dropped from the PR arrays (the
devkit keeps them with tp = fp = 0, which only repeats the previous PR point), so precision is
never 0/0.

Used as is for AFW, PASCAL faces and CMU+MIT (see `evaluate_ap_at`: IoU 0.5, and 0.3, the rule
of the FaceCraft paper on AFW).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from data_pipelines import geometry

# image_id -> (boxes float [n, 4] xyxy pixels, scores float [n]).
Detections = dict[str, tuple[np.ndarray, np.ndarray]]

DEFAULT_FP_VALUES = (100, 500, 1000, 2000)


class EvaluationWarning(UserWarning):
  """A metric that is defined but degenerate (no detections, no positives)."""


def _warn(message: str) -> None:
  warnings.warn(message, EvaluationWarning, stacklevel=3)


# ----------------------------------------------------------------------------- detections


def _as_arrays(image_id: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
  try:
    boxes, scores = value
  except (TypeError, ValueError):
    raise ValueError(f"detections for {image_id!r} must be a (boxes [n,4], scores [n]) pair, "
                     f"got {type(value).__name__}") from None
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64)
  if boxes.size == 0:
    boxes = boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"detections for {image_id!r}: boxes have shape {boxes.shape}, expected [n, 4]")
  scores = scores.reshape(-1)
  if len(scores) != len(boxes):
    raise ValueError(f"detections for {image_id!r}: {len(boxes)} boxes but {len(scores)} scores")
  return boxes, scores


def validate_detections(dets: Mapping[str, Any], known_ids: Iterable[str]) -> None:
  """Raises ValueError naming the first problem: unknown ids, NaN/inf, x2 < x1 or y2 < y1."""
  if not isinstance(dets, Mapping):
    raise ValueError(f"detections must be a mapping image_id -> (boxes, scores), "
                     f"got {type(dets).__name__}")
  known = set(known_ids)
  unknown = sorted(str(k) for k in dets if k not in known)
  if unknown:
    example = next(iter(sorted(known)), None)
    raise ValueError(
        f"{len(unknown)} of {len(dets)} detection image ids are not in the dataset, e.g. "
        f"{unknown[:5]}; ids must be written as the dataset names them"
        + (f" (e.g. {example!r})" if example is not None else " (the dataset is empty)"))
  for image_id, value in dets.items():
    boxes, scores = _as_arrays(image_id, value)
    bad = ~np.isfinite(scores)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"detections for {image_id!r}: score #{i} is {scores[i]} (not finite)")
    bad = ~np.isfinite(boxes).all(1)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"detections for {image_id!r}: box #{i} {boxes[i].tolist()} is not finite")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"detections for {image_id!r}: box #{i} {boxes[i].tolist()} has x2 < x1 "
                       f"or y2 < y1 (boxes are [x1, y1, x2, y2])")


def detections_from_json(obj: Mapping[str, Any] | str | os.PathLike) -> Detections:
  """Reads the `facecraft detect` JSON ({image_id: [{"box": [x1,y1,x2,y2], "score": s}]})."""
  source = "detections"
  if isinstance(obj, (str, os.PathLike)):
    source = os.fspath(obj)
    with open(source) as f:
      try:
        obj = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON: {e}") from None
  if not isinstance(obj, Mapping):
    raise ValueError(f"{source}: expected an object {{image_id: [detections]}}, "
                     f"got {type(obj).__name__}")
  dets: Detections = {}
  for image_id, entries in obj.items():
    if not isinstance(entries, list):
      raise ValueError(f"{source}: {image_id!r}: expected a list of detections")
    boxes, scores = [], []
    for i, entry in enumerate(entries):
      if not isinstance(entry, Mapping) or "box" not in entry or "score" not in entry:
        raise ValueError(f"{source}: {image_id!r} detection #{i}: expected "
                         f'{{"box": [x1, y1, x2, y2], "score": s}}, got {entry!r}')
      box = entry["box"]
      if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{source}: {image_id!r} detection #{i}: box must have 4 numbers, "
                         f"got {box!r}")
      try:
        boxes.append([float(v) for v in box])
        scores.append(float(entry["score"]))
      except (TypeError, ValueError):
        raise ValueError(f"{source}: {image_id!r} detection #{i}: not a number in {entry!r}") from None
    dets[str(image_id)] = (np.asarray(boxes, np.float64).reshape(-1, 4),
                           np.asarray(scores, np.float64))
  return dets


# ----------------------------------------------------------------------------- AP and ROC


def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
  """VOC AP as py-faster-rcnn's voc_eval.voc_ap computes it.

  use_07_metric: the VOC2007 11-point interpolation (max precision at recall >= t for
  t = 0, 0.1, ..., 1.0, with the same np.arange grid); otherwise the VOC2010+ all-point area
  under the monotone precision envelope, with sentinels (0, 0) and (1, 0).
  """
  rec = np.asarray(recall, np.float64).reshape(-1)
  prec = np.asarray(precision, np.float64).reshape(-1)
  if use_07_metric:
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
      above = rec >= t
      ap += (np.max(prec[above]) if above.any() else 0.0) / 11.0
    return float(ap)
  mrec = np.concatenate(([0.0], rec, [1.0]))
  mpre = np.concatenate(([0.0], prec, [0.0]))
  # Reverse running maximum = the devkit's backward loop mpre[i-1] = max(mpre[i-1], mpre[i]).
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def tpr_at_fp(fp_counts, tpr, fp_values: Sequence[int] = DEFAULT_FP_VALUES) -> dict[int, float]:
  """Reads a discrete ROC at given false-positive counts: the best TPR with at most k FPs.

  Returns 0 where even the highest threshold gives more than k FPs (no detections = no FP,
  TPR 0), and NaN for every k when the TPR itself is NaN (no positives).
  """
  fp_counts = np.asarray(fp_counts, np.float64).reshape(-1)
  tpr = np.asarray(tpr, np.float64).reshape(-1)
  out = {}
  for k in fp_values:
    ok = fp_counts <= k
    out[int(k)] = float(np.max(tpr[ok])) if ok.any() else 0.0
  return out


@dataclasses.dataclass
class DetectionResult:
  """PR curve, AP and discrete ROC of one detector on one set.

  Attributes:
    scores: float64 [D] scores of the counted detections, descending (ignored ones dropped).
    tp, fp: int64 [D] cumulative true / false positives along `scores`.
    precision, recall: float64 [D] (recall is NaN when there are no positives).
    ap: VOC2010+ all-point AP; ap_11pt: VOC2007 11-point AP (NaN without positives).
    num_positives: faces that count (not ignored); num_images; num_ignored_detections.
    iou_threshold: the matching threshold used.
  """

  scores: np.ndarray
  tp: np.ndarray
  fp: np.ndarray
  precision: np.ndarray
  recall: np.ndarray
  ap: float
  ap_11pt: float
  num_positives: int
  num_images: int = 0
  num_ignored_detections: int = 0
  iou_threshold: float = 0.5

  def roc(self) -> tuple[np.ndarray, np.ndarray]:
    """Discrete ROC (fp_counts, tpr) at each distinct score threshold, highest first."""
    if len(self.scores) == 0:
      return np.zeros(0, np.int64), np.zeros(0, np.float64)
    # Tied scores form one threshold: take the last detection of each run of equal scores.
    last = np.r_[np.nonzero(np.diff(self.scores))[0], len(self.scores) - 1]
    npos = self.num_positives
    tpr = self.tp[last] / npos if npos else np.full(len(last), np.nan)
    return self.fp[last].copy(), tpr.astype(np.float64)

  def tpr_at_fp(self, fp_values: Sequence[int] = DEFAULT_FP_VALUES) -> dict[int, float]:
    if not self.num_positives:
      return {int(k): float("nan") for k in fp_values}
    return tpr_at_fp(*self.roc(), fp_values)

  def best_f1(self) -> tuple[float, float, float, float]:
    """(score threshold, F1, precision, recall) at the best F1 along the PR curve: an operating
    point chosen on this set (so only on a selection set, never on a test)."""
    p, r = np.asarray(self.precision), np.asarray(self.recall)
    if not len(p):
      return float("nan"), 0.0, 0.0, 0.0
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return float(self.scores[i]), float(f1[i]), float(p[i]), float(r[i])

  def to_dict(self, fp_values: Sequence[int] = DEFAULT_FP_VALUES) -> dict[str, Any]:
    """JSON-ready summary (NaN stays NaN: json.dumps writes it as NaN)."""
    return {"ap": self.ap, "ap_11pt": self.ap_11pt, "iou_threshold": self.iou_threshold,
            "num_positives": self.num_positives, "num_images": self.num_images,
            "num_detections": int(len(self.scores)),
            "num_ignored_detections": self.num_ignored_detections,
            "tpr_at_fp": {str(k): v for k, v in self.tpr_at_fp(fp_values).items()}}


# ----------------------------------------------------------------------------- matching


def match_image(gt_boxes, ignore, det_boxes, det_scores,
                iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """VOC matching in one image.

  Returns (is_tp, is_ignored), bool [n] in the order of the given detections; a detection with
  neither flag is a false positive. Detections are visited by descending score (stable on ties).
  """
  gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  ignore = (np.zeros(len(gt), bool) if ignore is None
            else np.asarray(ignore, bool).reshape(len(gt)))
  det = np.asarray(det_boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(det_scores, np.float64).reshape(-1)
  n = len(det)
  is_tp, is_ignored = np.zeros(n, bool), np.zeros(n, bool)
  if n == 0 or len(gt) == 0:
    return is_tp, is_ignored
  iou = geometry.pairwise_iou(det, gt)
  best = np.argmax(iou, axis=1)  # First maximum on ties, as the devkit's strict `ov > ovmax`.
  best_iou = iou[np.arange(n), best]
  taken = np.zeros(len(gt), bool)
  for d in np.argsort(-scores, kind="stable"):
    if best_iou[d] < iou_threshold:
      continue
    g = best[d]
    if ignore[g]:
      is_ignored[d] = True
    elif not taken[g]:
      taken[g] = is_tp[d] = True
  return is_tp, is_ignored


def _index_records(records: Sequence[Any]) -> dict[str, Any]:
  by_id = {}
  for r in records:
    if r.image_id in by_id:
      raise ValueError(f"two records share the image id {r.image_id!r}: detections could not be "
                       "attributed; give every image a unique id")
    by_id[r.image_id] = r
  return by_id


def evaluate(records: Sequence[Any], dets: Mapping[str, Any],
             iou_threshold: float = 0.5) -> DetectionResult:
  """VOC evaluation of `dets` against FaceRecords (their `ignore` faces are difficult).

  Images without an entry in `dets` have their faces missed; detections in images without faces
  are all false positives. No detections at all gives AP 0 and TPR 0 with a warning; no
  positives gives NaN with a warning.
  """
  by_id = _index_records(records)
  validate_detections(dets, by_id)
  all_scores, all_tp, all_ignored = [], [], []
  num_positives = 0
  for image_id, record in by_id.items():
    num_positives += int((~record.ignore).sum())
    if image_id not in dets:
      continue
    boxes, scores = _as_arrays(image_id, dets[image_id])
    is_tp, is_ignored = match_image(record.boxes, record.ignore, boxes, scores, iou_threshold)
    all_scores.append(scores)
    all_tp.append(is_tp)
    all_ignored.append(is_ignored)
  scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
  is_tp = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
  is_ignored = np.concatenate(all_ignored) if all_ignored else np.zeros(0, bool)
  keep = ~is_ignored
  scores, is_tp = scores[keep], is_tp[keep]
  order = np.argsort(-scores, kind="stable")
  scores, is_tp = scores[order], is_tp[order]
  tp = np.cumsum(is_tp).astype(np.int64)
  fp = np.cumsum(~is_tp).astype(np.int64)
  precision = tp / np.maximum(tp + fp, 1)
  if num_positives == 0:
    _warn(f"no positive faces among {len(by_id)} images: AP and TPR are undefined (NaN)")
    recall = np.full(len(tp), np.nan)
    ap = ap_11pt = float("nan")
  else:
    if len(scores) == 0:
      _warn(f"no detections to evaluate on {len(by_id)} images with {num_positives} faces: "
            "AP = 0 and TPR = 0")
    recall = tp / num_positives
    ap, ap_11pt = voc_ap(recall, precision), voc_ap(recall, precision, use_07_metric=True)
  return DetectionResult(scores=scores, tp=tp, fp=fp, precision=precision, recall=recall, ap=ap,
                         ap_11pt=ap_11pt, num_positives=num_positives, num_images=len(by_id),
                         num_ignored_detections=int(is_ignored.sum()),
                         iou_threshold=float(iou_threshold))


def evaluate_ap_at(records: Sequence[Any], dets: Mapping[str, Any],
                   thresholds: Sequence[float] = (0.5, 0.3)) -> dict[float, DetectionResult]:
  """`evaluate` at several IoU thresholds (AFW / PASCAL faces / CMU+MIT: 0.5 and the paper's 0.3)."""
  return {float(t): evaluate(records, dets, iou_threshold=t) for t in thresholds}
