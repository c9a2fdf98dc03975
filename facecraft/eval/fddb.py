"""The official FDDB evaluation (Jain & Learned-Miller 2010, the `evaluate` C++ tool).

What the tool does, and what this module reproduces:
  * Regions: ground-truth ellipses (ra, rb, theta, cx, cy) and detections, rectangles (x, y, w, h)
    or ellipses. The tool draws each region into an image-sized mask, so every region is CLIPPED
    TO THE IMAGE, and scores a pair by |A n B| / |A u B| over the masks.
  * Ellipse angle: the tool turns theta (radians) into 180 - (pi - theta) * 180 / pi = theta
    degrees for cvEllipse, i.e. the `ra` axis points along (cos theta, sin theta) in image
    coordinates (y down). FDDB faces have theta near +-pi/2: the major axis is vertical.
  * Matching (Matching.cpp): per image and per score threshold, the detections with
    score >= threshold are matched one-to-one to the faces by the Hungarian algorithm MAXIMISING
    THE SUM OF OVERLAPS (not the number of overlaps > 0.5); pairs with overlap 0 are dropped.
  * Scores (Results.cpp): discrete TP = matched pairs with overlap > 0.5; continuous TP = the sum
    of the overlaps of all matched pairs; FP = valid detections - discrete TP (also for ContROC).
  * Thresholds (evaluate.cpp): per image, each unique detection score; images are merged so that
    the set-level curve has one point per unique score of the whole set, ascending; an image with
    no detection adds a point at DBL_MAX (TP 0, FP 0). At a threshold above all of an image's
    scores, that image contributes its faces and nothing else.
  * Output: DiscROC.txt lines `TPR FP threshold`, ContROC.txt lines `TPR FP`, printed like C++
    streams (%g), ascending threshold (so the first line has the most false positives).

Deviations, all of the order of one pixel on the region border:
  * Overlaps are computed on exact geometry (the ellipse as a 256-gon of equal area, convex
    polygon clipping), not on OpenCV's rasterisation, which rounds the centre and truncates the
    radii to integers and draws rectangles with inclusive corners.
  * Equal-sum optimal matchings may be broken differently from the tool's Hungarian solver.
  * Without meta["image_size"] regions cannot be clipped to the image; a warning says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import optimize
import tqdm

from facecraft.eval import detection
from facecraft.eval.regions import ELLIPSE_VERTICES, ellipse_polygon, region_overlaps  # noqa: F401

log = logging.getLogger(__name__)

DBL_MAX = sys.float_info.max  # The tool's threshold for images without detections.


# ----------------------------------------------------------------------------- matching


def image_curve(overlaps: np.ndarray, scores: np.ndarray):
  """Per unique score (ascending): (thresholds, tp_disc, tp_cont, fp) of one image.

  At each threshold the detections with score >= threshold are matched to the faces by maximum
  total overlap (Hungarian); see the module docstring for how the counts follow.
  """
  overlaps = np.asarray(overlaps, np.float64)
  scores = np.asarray(scores, np.float64).reshape(-1)
  thresholds = np.unique(scores)
  k = len(thresholds)
  tp_disc, tp_cont, fp = np.zeros(k), np.zeros(k), np.zeros(k)
  touching = overlaps.sum(0) > 0 if overlaps.size else np.zeros(len(scores), bool)
  prev_cols, disc, cont = None, 0, 0.0
  for j in range(k - 1, -1, -1):  # Highest threshold first: the valid set only grows.
    valid = scores >= thresholds[j]
    cols = np.nonzero(valid & touching)[0]
    # Detections that overlap no face cannot change the matching: solve only when the
    # overlapping valid set changes.
    if prev_cols is None or len(cols) != len(prev_cols):
      disc, cont = 0, 0.0
      if len(cols):
        sub = overlaps[:, cols]
        rows, picked = optimize.linear_sum_assignment(sub, maximize=True)
        matched = sub[rows, picked]
        matched = matched[matched > 0]
        disc, cont = int((matched > 0.5).sum()), float(matched.sum())
      prev_cols = cols
    tp_disc[j], tp_cont[j], fp[j] = disc, cont, int(valid.sum()) - disc
  return thresholds, tp_disc, tp_cont, fp


@dataclasses.dataclass
class FddbResult:
  """DiscROC / ContROC of one set of images.

  Attributes:
    disc, cont: float64 [T, 3] rows (TPR, FP, threshold) in the tool's order (ascending
      threshold); TPR is NaN when the set has no face.
    num_faces, num_images: the set's size.
    per_fold: fold name -> FddbResult (empty for a single fold).
  """

  disc: np.ndarray
  cont: np.ndarray
  num_faces: int
  num_images: int
  per_fold: dict[str, "FddbResult"] = dataclasses.field(default_factory=dict)

  def tpr_at_fp(self, kind: str = "disc",
                fps: Sequence[int] = detection.DEFAULT_FP_VALUES) -> dict[int, float]:
    if kind not in ("disc", "cont"):
      raise ValueError(f"kind must be 'disc' or 'cont', got {kind!r}")
    roc = self.disc if kind == "disc" else self.cont
    if not self.num_faces:
      return {int(k): float("nan") for k in fps}
    return detection.tpr_at_fp(roc[:, 1], roc[:, 0], fps)

  def to_dict(self, fps: Sequence[int] = detection.DEFAULT_FP_VALUES) -> dict[str, Any]:
    out = {"num_faces": self.num_faces, "num_images": self.num_images,
           "discrete": {str(k): v for k, v in self.tpr_at_fp("disc", fps).items()},
           "continuous": {str(k): v for k, v in self.tpr_at_fp("cont", fps).items()}}
    if self.per_fold:
      out["per_fold"] = {name: r.to_dict(fps) for name, r in self.per_fold.items()}
    return out


def _accumulate(curves: list[tuple], num_faces: int, num_images: int) -> FddbResult:
  """Results::merge over images: one point per unique score of the set (+ DBL_MAX if needed)."""
  parts = [c[0] for c in curves if len(c[0])]
  thresholds = np.unique(np.concatenate(parts)) if parts else np.zeros(0)
  if any(len(c[0]) == 0 for c in curves):
    thresholds = np.unique(np.r_[thresholds, DBL_MAX])
  delta = np.zeros((len(thresholds) + 1, 3))
  for thr, disc, cont, fp in curves:
    if not len(thr):
      continue
    # The image's state j holds on the set's thresholds in (thr[j-1], thr[j]].
    pos = np.searchsorted(thresholds, thr)
    start = np.r_[0, pos[:-1] + 1]
    values = np.stack([disc, cont, fp], axis=1)
    np.add.at(delta, start, values)
    np.add.at(delta, pos + 1, -values)
  sums = np.cumsum(delta, axis=0)[:-1]
  scale = 1.0 / num_faces if num_faces else np.nan
  disc = np.stack([sums[:, 0] * scale, sums[:, 2], thresholds], axis=1)
  cont = np.stack([sums[:, 1] * scale, sums[:, 2], thresholds], axis=1)
  return FddbResult(disc=disc, cont=cont, num_faces=num_faces, num_images=num_images)


def _validate_ellipse_dets(dets: Mapping[str, Any], known: Iterable[str]) -> None:
  # The id check of detection.validate_detections, with empty boxes standing in.
  detection.validate_detections({k: (np.zeros((0, 4)), []) for k in dets}, known)
  for image_id, (ells, scores) in dets.items():
    ells, scores = np.asarray(ells, np.float64), np.asarray(scores, np.float64).reshape(-1)
    ells = ells.reshape(-1, 5) if ells.size else np.zeros((0, 5))
    if len(ells) != len(scores) or not (np.isfinite(ells).all() and np.isfinite(scores).all()):
      raise ValueError(f"detections for {image_id!r}: need [n, 5] finite ellipses and n finite scores")
    if (ells[:, :2] < 0).any():
      raise ValueError(f"detections for {image_id!r}: negative ellipse radius")


def _fold_groups(records: Sequence[Any], folds) -> dict[str, list[str]]:
  if folds is None:
    if records and all("fold" in r.meta for r in records):
      groups: dict[str, list[str]] = {}
      for r in records:
        groups.setdefault(str(r.meta["fold"]), []).append(r.image_id)
      return groups if len(groups) > 1 else {}
    return {}
  known = {r.image_id for r in records}
  groups = {str(name): list(ids) for name, ids in folds.items()}
  for name, ids in groups.items():
    missing = [i for i in ids if i not in known]
    if missing:
      raise ValueError(f"fold {name}: {len(missing)} image ids are not among the records, "
                       f"e.g. {missing[:3]}")
  return groups


def evaluate_fddb(records: Sequence[Any], dets: Mapping[str, Any],
                  folds: Mapping[Any, Iterable[str]] | None = None,
                  det_format: str = "rectangle") -> FddbResult:
  """FDDB DiscROC / ContROC over all records, and per fold.

  records: FaceRecords with meta["ellipses"] [N, 5] (ra, rb, theta, cx, cy) and, for clipping,
    meta["image_size"] (h, w).
  dets: image_id -> (xyxy boxes [n, 4], scores) or, with det_format="ellipse", ([n, 5], scores).
  folds: fold name -> image ids; None groups by meta["fold"] when every record has one.
  """
  if det_format not in ("rectangle", "ellipse"):
    raise ValueError(f"det_format must be 'rectangle' or 'ellipse', got {det_format!r}")
  by_id = detection._index_records(records)  # pylint: disable=protected-access
  if det_format == "rectangle":
    detection.validate_detections(dets, by_id)
  else:
    _validate_ellipse_dets(dets, by_id)
  lacking = [i for i, r in by_id.items() if "ellipses" not in r.meta]
  if lacking:
    raise ValueError(f"{len(lacking)} records have no meta['ellipses'], e.g. {lacking[:3]}; read "
                     "FDDB with data_pipelines.formats.fddb")
  if not any(len(np.asarray(s).reshape(-1)) for _, s in dets.values()):
    detection._warn(f"no detections for any of the {len(by_id)} FDDB images: TPR = 0")  # pylint: disable=protected-access
  unclipped = 0
  curves, faces = {}, {}
  for image_id, record in tqdm.tqdm(by_id.items(), desc="fddb overlaps", disable=None,
                                    leave=False):
    ellipses = np.asarray(record.meta["ellipses"], np.float64).reshape(-1, 5)
    faces[image_id] = len(ellipses)
    regions, scores = dets.get(image_id, (np.zeros((0, 4)), np.zeros(0)))
    scores = np.asarray(scores, np.float64).reshape(-1)
    if record.image_size is None:
      unclipped += 1
    overlaps = region_overlaps(ellipses, regions, det_format, record.image_size)
    curves[image_id] = image_curve(overlaps, scores)
  if unclipped:
    log.warning("fddb: %d images have no meta['image_size']; their regions are not clipped to "
                "the image as the official tool clips them", unclipped)

  def result_for(ids: Sequence[str]) -> FddbResult:
    return _accumulate([curves[i] for i in ids], sum(faces[i] for i in ids), len(ids))

  result = result_for(list(by_id))
  if not result.num_faces:
    detection._warn("no ground-truth faces: FDDB TPR is undefined (NaN)")  # pylint: disable=protected-access
  result.per_fold = {name: result_for(ids) for name, ids in _fold_groups(records, folds).items()}
  return result


# ----------------------------------------------------------------------------- files


def _g(x: float) -> str:
  """C++ `ostream << double` with the default precision: printf %g."""
  return f"{float(x):g}"


def write_roc(path: str, roc: np.ndarray, with_threshold: bool | None = None) -> str:
  """Writes one ROC as the tool does: `TPR FP threshold` lines (DiscROC.txt).

  with_threshold: None follows the tool: a file named *ContROC.txt gets `TPR FP` lines only.
  A set without faces gets `0 0` as the tool writes it.
  """
  if with_threshold is None:
    with_threshold = not os.path.basename(path).endswith("ContROC.txt")
  roc = np.asarray(roc, np.float64).reshape(-1, 3)
  with open(path, "w") as f:
    for tpr, fp, thr in roc:
      cols = ["0", "0"] if np.isnan(tpr) else [_g(tpr), _g(fp)]
      f.write(" ".join(cols + ([_g(thr)] if with_threshold else [])) + "\n")
  return path


def write_rocs(prefix: str, result: FddbResult) -> tuple[str, str]:
  """The tool's `-r prefix`: writes <prefix>DiscROC.txt and <prefix>ContROC.txt."""
  if os.path.isdir(prefix):
    prefix = os.path.join(prefix, "")
  return (write_roc(prefix + "DiscROC.txt", result.disc),
          write_roc(prefix + "ContROC.txt", result.cont))


def read_fddb_detections(path: str, det_format: str = "rectangle") -> detection.Detections:
  """Reads a detection file in the tool's format: name, count, then per region
  `x y w h score` (rectangle; becomes xyxy (x, y, x + w, y + h)) or `ra rb theta cx cy score`.
  """
  from data_pipelines import records as records_lib  # pylint: disable=g-import-not-at-top
  width = {"rectangle": 5, "ellipse": 6}[det_format]
  with open(path) as f:
    lines = [(i + 1, s.strip()) for i, s in enumerate(f) if s.strip()]
  dets: detection.Detections = {}
  pos = 0
  while pos < len(lines):
    name_line, name = lines[pos]
    if pos + 1 >= len(lines):
      raise records_lib.AnnotationError(f"{name}: missing the number of detections", path, name_line)
    count_line, count_text = lines[pos + 1]
    try:
      count = int(count_text)
    except ValueError:
      raise records_lib.AnnotationError(f"not a count: {count_text!r}", path, count_line) from None
    rows = lines[pos + 2: pos + 2 + count]
    if len(rows) != count:
      raise records_lib.AnnotationError(f"{name}: {count} detections announced, {len(rows)} found",
                                        path, count_line)
    values = np.asarray([records_lib.parse_floats(s.split(), path, n, width) for n, s in rows],
                        np.float64).reshape(-1, width)
    if name in dets:
      raise records_lib.AnnotationError(f"{name} appears twice", path, name_line)
    if det_format == "rectangle":
      boxes = np.concatenate([values[:, :2], values[:, :2] + values[:, 2:4]], axis=1)
      dets[name] = (boxes, values[:, 4].copy())
    else:
      dets[name] = (values[:, :5].copy(), values[:, 5].copy())
    pos += 2 + count
  return dets
