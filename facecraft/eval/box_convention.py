"""Does a detector draw its boxes the way the benchmark's ground truth does?

Two conventions can disagree by a factor of 1.4 (CMU+MIT's boxes against WIDER FACE's forehead-to-
chin ones), and a detector trained on one loses most of its true positives at IoU 0.5 on the
other although it finds every face. `box_convention` matches each image's most confident
detections to the ground truth at a loose IoU and reports how their sizes and centres compare;
the evaluators put it beside AP and warn when the sizes disagree by more than TOLERANCE.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import geometry

log = logging.getLogger(__name__)
MATCH_IOU = 0.3
TOLERANCE = 1.15  # size ratios outside [1 / 1.15, 1.15] warn


def matched_pairs(records: Sequence[Any], dets: Mapping[str, Any],
                  min_iou: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
  """(ground-truth boxes [M, 4], detected boxes [M, 4]): per image, detections best first, each
  taking the unmatched non-ignored face it overlaps most (IoU >= min_iou), at most one per face;
  only the image's first (number of faces) detections are considered, so low-score clutter does
  not enter."""
  gts, found = [], []
  for r in records:
    truth = np.asarray(r.boxes, np.float64).reshape(-1, 4)[~np.asarray(r.ignore, bool)]
    if r.image_id not in dets or not len(truth):
      continue
    boxes, scores = dets[r.image_id]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:len(truth)]
    if not len(order):
      continue
    iou = geometry.pairwise_iou(boxes[order], truth)
    free = np.ones(len(truth), bool)
    for i, d in enumerate(order):
      g = int(np.argmax(np.where(free, iou[i], -1.0)))
      if free[g] and iou[i, g] >= min_iou:
        free[g] = False
        gts.append(truth[g])
        found.append(boxes[d])
  return (np.asarray(gts, np.float64).reshape(-1, 4), np.asarray(found, np.float64).reshape(-1, 4))


def box_convention(records: Sequence[Any], dets: Mapping[str, Any],
                   min_iou: float = MATCH_IOU) -> dict[str, float]:
  """Medians over matched faces: detected / true width and height, centre offsets (fractions of
  the true size), and `scale` (the geometric mean of the two size ratios). NaN without matches."""
  gt, det = matched_pairs(records, dets, min_iou)
  if not len(gt):
    nan = float("nan")
    return {"matched": 0, "scale": nan, "width_ratio": nan, "height_ratio": nan,
            "center_dx": nan, "center_dy": nan}
  gw, gh = np.maximum(gt[:, 2] - gt[:, 0], 1e-6), np.maximum(gt[:, 3] - gt[:, 1], 1e-6)
  dw, dh = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
  wr, hr = float(np.median(dw / gw)), float(np.median(dh / gh))
  out = {"matched": int(len(gt)), "scale": math.sqrt(max(wr, 0.0) * max(hr, 0.0)),
         "width_ratio": wr, "height_ratio": hr,
         "center_dx": float(np.median(((det[:, 0] + det[:, 2]) - (gt[:, 0] + gt[:, 2])) / 2 / gw)),
         "center_dy": float(np.median(((det[:, 1] + det[:, 3]) - (gt[:, 1] + gt[:, 3])) / 2 / gh))}
  return out


def warn_if_mismatched(name: str, check: Mapping[str, float]) -> bool:
  """Logs a warning (and returns True) when the boxes are TOLERANCE times off in size."""
  scale = check.get("scale", float("nan"))
  if not check.get("matched") or not (1 / TOLERANCE <= scale <= TOLERANCE):
    if check.get("matched"):
      log.warning("%s: detected boxes are %.2fx the ground truth's (width %.2fx, height %.2fx, "
                  "%d faces): the detector draws another box convention; AP at IoU 0.5 "
                  "underrates it", name, scale, check["width_ratio"], check["height_ratio"],
                  check["matched"])
      return True
  return False
