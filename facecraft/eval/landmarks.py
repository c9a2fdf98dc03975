"""Landmark metrics: normalised mean error (NME), failure rate, CED curve and its AUC.

NME of one face = mean over its annotated points of ||pred - gt|| / d, with d one of

  inter_ocular  distance between the OUTER eye corners (iBUG 68: points 36 and 45), the 300-W
                definition (Sagonas et al. 2016, the official compute_error.m);
  inter_pupil   distance between the eye centres (iBUG 68: mean of 36-41 and of 42-47; five,
                caltech4, cmu6: points 0 and 1; COFW: 16 and 17, as RCPR does);
  box_diagonal  sqrt(w^2 + h^2) of the face box (the Menpo benchmark);
  box_size      sqrt(w * h) of the face box (AFLW / 300W-LP / AFLW2000-3D papers).

Box normalisers use `boxes` when given, otherwise the tight box of the annotated ground-truth
points. Points whose mask is False are left out of the mean. Every metric is numpy float64.

The AUC up to a threshold T is the area under the CED curve on [0, T] divided by T, the number
the 300-W / Menpo papers report as AUC@0.08 / AUC@0.10. The CED is a step function, so the
area is computed exactly: each face adds max(0, T - e) to it; a trapezoid on a fine grid (what
most papers' scripts do) converges to this value.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import records as records_lib
from data_pipelines import geometry

NORMS = ("inter_ocular", "inter_pupil", "box_diagonal", "box_size")
BOX_SOURCES = ("landmarks", "record")
DEFAULT_THRESHOLDS = (0.08, 0.10)

# scheme -> (outer eye corner indices or None, (left eye centre indices, right eye centre indices)).
# aflw21: 7-12 (1-based) are LeftEye{Left,Center,Right}, RightEye{Left,Center,Right};
# cofw29: 8/9 are the outer corners (HRNet's COFW "interocular"), 16/17 the pupils.
_EYE_POINTS: dict[str, tuple[tuple[int, int] | None, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "ibug68": ((36, 45), (tuple(range(36, 42)), tuple(range(42, 48)))),
    "five": (None, ((0,), (1,))),
    "caltech4": (None, ((0,), (1,))),
    "cmu6": (None, ((0,), (1,))),
    "aflw21": ((6, 11), ((7,), (10,))),
    "cofw29": ((8, 9), ((16,), (17,))),
}


def available_norms(scheme: str) -> tuple[str, ...]:
  """The normalisers that `scheme` can support (box norms always can)."""
  geometry.get_scheme(scheme)  # Clear error for an unknown scheme.
  corners, _ = _EYE_POINTS.get(scheme, (None, None))
  eyes = ("inter_ocular",) if corners is not None else ()
  pupils = ("inter_pupil",) if scheme in _EYE_POINTS else ()
  return eyes + pupils + ("box_diagonal", "box_size")


def default_norm(gt_scheme: str, pred_points: int | None = None, by_box: bool = False) -> str:
  """The field's usual normaliser for a set: inter-ocular where the scored scheme has outer eye
  corners, inter-pupil otherwise; box_size for sets normalised by the face box (AFLW, whose
  profile faces often lack an eye). Five predicted points score the five-point conversion."""
  if by_box:
    return "box_size"
  scheme = gt_scheme
  if pred_points == 5 and geometry.scheme_size(gt_scheme) != 5:
    scheme = "five"
  return "inter_ocular" if "inter_ocular" in available_norms(scheme) else "inter_pupil"


def _check_norm(norm: str, scheme: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"unknown NME normaliser {norm!r}; choose one of {NORMS}")
  if norm not in available_norms(scheme):
    raise ValueError(f"normaliser {norm!r} is not defined for the {scheme!r} scheme (it has no "
                     f"{'outer eye corners' if norm == 'inter_ocular' else 'eye centres'}); "
                     f"use one of {available_norms(scheme)}")


def normalizer(gt: np.ndarray, mask: np.ndarray, norm: str, scheme: str,
               boxes: np.ndarray | None = None) -> np.ndarray:
  """The distance d [N] that divides each face's point errors."""
  _check_norm(norm, scheme)
  gt = np.asarray(gt, np.float64)
  if norm in ("inter_ocular", "inter_pupil"):
    corners, (left, right) = _EYE_POINTS[scheme]
    if norm == "inter_ocular":
      left, right = (corners[0],), (corners[1],)
    needed = mask[:, list(left) + list(right)].all(-1)
    if not needed.all():
      bad = np.flatnonzero(~needed)
      raise ValueError(f"{norm} needs the eye points {sorted(set(left) | set(right))} annotated; "
                       f"faces {bad[:5].tolist()} lack them (use a box normaliser)")
    d = np.linalg.norm(gt[:, list(left)].mean(1) - gt[:, list(right)].mean(1), axis=-1)
  else:
    if boxes is None:
      boxes = geometry.landmark_bbox(gt, mask)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) != len(gt):
      raise ValueError(f"{len(boxes)} boxes for {len(gt)} faces")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    d = np.sqrt(w * w + h * h) if norm == "box_diagonal" else np.sqrt(np.maximum(w * h, 0))
  if not (np.isfinite(d) & (d > 0)).all():
    bad = np.flatnonzero(~(np.isfinite(d) & (d > 0)))
    raise ValueError(f"{norm} is zero or undefined for faces {bad[:5].tolist()}")
  return d


def point_errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, norm: str,
                 scheme: str, boxes: np.ndarray | None = None) -> np.ndarray:
  """Normalised per-point errors [N, K], NaN where the point is not annotated."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[-1] != 2:
    raise ValueError(f"predictions {pred.shape} and ground truth {gt.shape} must both be [N, K, 2]")
  k = geometry.scheme_size(scheme)
  if gt.shape[1] != k:
    raise ValueError(f"scheme {scheme!r} has {k} points, got {gt.shape[1]}")
  mask = np.ones(gt.shape[:2], bool) if mask is None else np.asarray(mask, bool)
  if mask.shape != gt.shape[:2]:
    raise ValueError(f"mask {mask.shape} does not match landmarks {gt.shape}")
  empty = ~mask.any(-1)
  if empty.any():
    raise ValueError(f"faces {np.flatnonzero(empty)[:5].tolist()} have no annotated point")
  if not np.isfinite(pred[mask]).all():
    raise ValueError("non-finite predicted landmark coordinates")
  d = normalizer(gt, mask, norm, scheme, boxes)
  err = np.linalg.norm(pred - gt, axis=-1) / d[:, None]
  return np.where(mask, err, np.nan)


def nme(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, norm: str, scheme: str,
        boxes: np.ndarray | None = None) -> np.ndarray:
  """Per-face NME [N]: mean normalised error over the annotated points."""
  return np.nanmean(point_errors(pred, gt, mask, norm, scheme, boxes), axis=-1)


def _as_errors(nmes) -> np.ndarray:
  nmes = np.asarray(nmes, np.float64).reshape(-1)
  if nmes.size == 0:
    raise ValueError("no face errors to summarise")
  if np.isnan(nmes).any():
    raise ValueError("NaN in the per-face errors")
  return nmes


def failure_rate(nmes, threshold: float) -> float:
  """Fraction of faces whose NME exceeds `threshold` (a missed face, +inf, fails)."""
  return float(np.mean(_as_errors(nmes) > threshold))


def ced(nmes, max_error: float = 0.1, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative error distribution: x = steps + 1 errors on [0, max_error], y = P(NME <= x)."""
  nmes = np.sort(_as_errors(nmes))
  x = np.linspace(0.0, max_error, steps + 1)
  y = np.searchsorted(nmes, x, side="right") / len(nmes)
  return x, y


def auc(nmes, threshold: float) -> float:
  """Area under the CED on [0, threshold] over threshold, in [0, 1] (exact, see module doc)."""
  if threshold <= 0:
    raise ValueError(f"AUC threshold must be > 0, got {threshold}")
  nmes = _as_errors(nmes)
  return float(np.mean(np.clip(1.0 - nmes / threshold, 0.0, 1.0)))


# ------------------------------------------------------------------ records x predictions


def _match_by_iou(gt_boxes: np.ndarray, pred_boxes: np.ndarray, min_iou: float) -> np.ndarray:
  """Greedy one-to-one matching by decreasing IoU; gt index -> prediction index or -1."""
  out = np.full(len(gt_boxes), -1)
  if not len(gt_boxes) or not len(pred_boxes):
    return out
  iou = geometry.pairwise_iou(np.asarray(gt_boxes, np.float64), np.asarray(pred_boxes, np.float64))
  used = np.zeros(len(pred_boxes), bool)
  for flat in np.argsort(-iou, axis=None, kind="stable"):
    g, p = np.unravel_index(flat, iou.shape)
    if iou[g, p] < min_iou:
      break
    if out[g] < 0 and not used[p]:
      out[g], used[p] = p, True
  return out


def landmark_errors(recs: Sequence[records_lib.FaceRecord], predictions: Mapping[str, Any],
                    norm: str = "inter_ocular", box_from: str = "landmarks",
                    match_iou: float = 0.5) -> dict[str, Any]:
  """Per-face NMEs and point errors of `predictions` against the landmarks of `recs`.

  predictions: image_id -> either an array [N, K, 2] giving the record's N faces in order
    (faces without annotated landmarks are skipped but still take their slot), or a pair
    (points [M, K, 2], boxes [M, 4]) matched to the ground-truth boxes one-to-one by IoU
    (>= match_iou, greedy by decreasing IoU); an unmatched face is missed: NME +inf, so it
    counts as a failure and adds nothing to the AUC, and is left out of the mean NME.
  When predictions have 5 points and the ground truth another scheme, the ground truth is
  converted with geometry.to_five (so e.g. an MTCNN can be scored on 300-W).
  box_from: where box normalisers take the face box: "landmarks" (tight box of all annotated
    ground-truth points, Menpo) or "record" (the dataset's face box, AFLW).

  Returns {"scheme", "nmes" [F], "point_errors" [F, K] (NaN: unannotated or missed),
  "num_images", "num_missed"}.
  """
  if box_from not in BOX_SOURCES:
    raise ValueError(f"box_from must be one of {BOX_SOURCES}, got {box_from!r}")
  by_id = {}
  for r in recs:
    if r.landmarks is not None and r.landmark_mask.any():
      by_id[r.image_id] = r
  if not by_id:
    raise ValueError("no ground-truth record has landmarks: is this a landmark data set?")
  unknown = sorted(set(predictions) - {r.image_id for r in recs})
  if unknown:
    raise ValueError(f"{len(unknown)} predicted image ids are not in the ground truth, e.g. "
                     f"{unknown[:3]}")
  missing = sorted(set(by_id) - set(predictions))
  if missing:
    raise ValueError(f"no predictions for {len(missing)} annotated images, e.g. {missing[:3]}")

  entries = {}
  for image_id, r in by_id.items():
    entry = predictions[image_id]
    if isinstance(entry, tuple):
      pts, pred_boxes = (np.asarray(a, np.float64) for a in entry)
      pred_boxes = pred_boxes.reshape(-1, 4)
      if pts.ndim != 3 or len(pts) != len(pred_boxes):
        raise ValueError(f"{image_id}: {len(pred_boxes)} boxes but landmarks of shape {pts.shape}")
      slot = _match_by_iou(r.boxes, pred_boxes, match_iou)
    else:
      pts = np.asarray(entry, np.float64)
      if pts.ndim != 3 or len(pts) != r.num_faces:
        raise ValueError(f"{image_id}: the ground truth has {r.num_faces} faces, the predictions "
                         f"{pts.shape} (give faces in ground-truth order, or boxes to match)")
      slot = np.arange(r.num_faces)
    entries[image_id] = pts, slot
  # One point count for the whole prediction set: 5 points on a richer scheme means "score the
  # five-point conversion of the ground truth".
  pred_k = {pts.shape[1] for pts, _ in entries.values() if len(pts)}
  if len(pred_k) > 1:
    raise ValueError(f"predictions mix point counts {sorted(pred_k)}")
  pred_k = pred_k.pop() if pred_k else None

  schemes, nmes, errs, num_missed = set(), [], [], 0
  for image_id, r in by_id.items():
    pts, slot = entries[image_id]
    keep = r.landmark_mask.any(-1) & ~r.ignore
    gt, mask, scheme = r.landmarks.astype(np.float64), r.landmark_mask, r.landmark_scheme
    if box_from == "landmarks":
      boxes = geometry.landmark_bbox(gt, mask)
    else:
      boxes = r.boxes
    if pred_k is not None and pred_k != gt.shape[1]:
      if pred_k != 5:
        raise ValueError(f"{image_id}: {pred_k} predicted points against {scheme!r} "
                         f"({gt.shape[1]} points)")
      gt, mask = geometry.to_five(gt, scheme, mask)
      scheme = "five"
    schemes.add(scheme)
    matched = keep & (slot >= 0)
    missed = int((keep & (slot < 0)).sum())
    num_missed += missed
    nmes.append(np.full(missed, np.inf))
    errs.append(np.full((missed, gt.shape[1]), np.nan))
    if matched.any():
      idx = np.flatnonzero(matched)
      e = point_errors(pts[slot[idx]], gt[idx], mask[idx], norm, scheme, boxes[idx])
      errs.append(e)
      nmes.append(np.nanmean(e, axis=-1))
  if len(schemes) > 1:
    raise ValueError(f"records mix landmark schemes {sorted(schemes)}; evaluate them separately")
  return {"scheme": schemes.pop(), "nmes": np.concatenate(nmes),
          "point_errors": np.concatenate(errs), "num_images": len(by_id),
          "num_missed": num_missed}


def predictions_from_json(doc: Mapping[str, Any], source: str = "predictions") -> dict[str, Any]:
  """Parses {image_id: [{"landmarks": [[x, y], ...], "box": [x1, y1, x2, y2]}, ...]}.

  Returns image_id -> points [n, K, 2], or (points, boxes [n, 4]) when every face has a box
  (the two forms landmark_errors takes). Raises ValueError naming the image and face.
  """
  out: dict[str, Any] = {}
  for image_id, faces in doc.items():
    where = f"{source}: {image_id!r}"
    if not isinstance(faces, list) or not all(isinstance(f, dict) for f in faces):
      raise ValueError(f"{where}: expected a list of {{\"landmarks\": ...}} objects")
    pts, boxes = [], []
    for j, face in enumerate(faces):
      try:
        p = np.asarray(face.get("landmarks"), np.float64)
        b = np.asarray(face["box"], np.float64) if "box" in face else None
      except (TypeError, ValueError):
        raise ValueError(f"{where}[{j}]: \"landmarks\" must be [[x, y], ...] and \"box\" "
                         f"[x1, y1, x2, y2] numbers") from None
      if p.ndim != 2 or p.shape[1] != 2 or not len(p):
        raise ValueError(f"{where}[{j}]: \"landmarks\" must be a list of [x, y] points")
      if not np.isfinite(p).all() or (b is not None and not np.isfinite(b).all()):
        raise ValueError(f"{where}[{j}]: non-finite coordinate")
      if b is not None and (b.shape != (4,) or b[2] < b[0] or b[3] < b[1]):
        raise ValueError(f"{where}[{j}]: box {b.tolist()} is not [x1, y1, x2, y2] with x1 <= x2")
      pts.append(p)
      if b is not None:
        boxes.append(b)
    if boxes and len(boxes) != len(pts):
      raise ValueError(f"{where}: give \"box\" for every face or for none")
    if len({len(p) for p in pts}) > 1:
      raise ValueError(f"{where}: faces have different point counts {sorted({len(p) for p in pts})}")
    arr = np.stack(pts) if pts else np.zeros((0, 0, 2))
    out[image_id] = (arr, np.stack(boxes)) if boxes else arr
  return out


def _nan_to_none(values) -> list:
  return [None if not np.isfinite(v) else float(v) for v in values]


def summarize(nmes: np.ndarray, point_errs: np.ndarray | None = None,
              thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
  """JSON-able summary: mean/median NME (found faces), failure rates, AUCs, per-landmark errors."""
  nmes = _as_errors(nmes)
  found = nmes[np.isfinite(nmes)]
  out: dict[str, Any] = {
      "num_faces": int(len(nmes)),
      "nme": float(found.mean()) if len(found) else None,
      "nme_median": float(np.median(found)) if len(found) else None,
      "failure_rate": {f"{t:g}": failure_rate(nmes, t) for t in thresholds},
      "auc": {f"{t:g}": auc(nmes, t) for t in thresholds},
  }
  if point_errs is not None:
    # A point that no face annotates has no mean: numpy warns, JSON gets None.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      out["per_landmark"] = _nan_to_none(np.nanmean(point_errs, axis=0))
  return out


def evaluate_landmarks(recs: Sequence[records_lib.FaceRecord], predictions: Mapping[str, Any],
                       norm: str = "inter_ocular", box_from: str = "landmarks",
                       thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                       match_iou: float = 0.5) -> dict[str, Any]:
  """landmark_errors + summarize: one JSON-able dict (see landmark_errors for the inputs)."""
  errors = landmark_errors(recs, predictions, norm, box_from, match_iou)
  out = {"task": "landmarks", "scheme": errors["scheme"], "norm": norm, "box_from": box_from,
         "num_images": errors["num_images"], "num_missed": errors["num_missed"]}
  out.update(summarize(errors["nmes"], errors["point_errors"], thresholds))
  return out
