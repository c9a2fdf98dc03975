"""Box-AP evaluators: VOC matching, AP and discrete ROC (CMU+MIT, AFW, PASCAL faces, any reader).

Result dict: "ap" (VOC all-point at `iou`), "ap_11pt", "ap_at_iou" {iou and each extra_ious},
"num_positives", "tpr_at_fp" {k: TPR at k false positives over the whole set, for fp_points},
plus "dataset", "task", "split", "iou", "num_images", "num_images_in_detections",
"num_detections". self.result is the facecraft.eval.detection.DetectionResult at `iou`,
self.results every IoU's.
"""

from __future__ import annotations

from typing import Any, Mapping

from facecraft.eval import box_convention
from facecraft.eval import detection
from facecraft.eval.evaluators import base

TPR_FP_POINTS = (100, 500, 1000, 2000)
# AFW's rule in the FaceCraft paper is IoU 0.3; VOC's is 0.5: box benchmarks report both.
SECOND_IOU = 0.3


class BoxAPEvaluator(base.Evaluator):
  """VOC AP / ROC of boxes against any detection reader's FaceRecords (`reader` setting)."""

  DEFAULTS = {"iou": 0.5, "extra_ious": (SECOND_IOU,), "fp_points": TPR_FP_POINTS}
  ROC_PLOT = False  # True: plot() draws the ROC (the protocol's own figure), else PR.

  def __init__(self, config: Any = None, **kw):
    super().__init__(config, **kw)
    if self.reader is None and self._records is None:
      raise base.EvaluationError(f"{type(self).__name__}: give the ground-truth reader "
                                 f"(a data_pipelines.formats name) as `reader`, or `records`")
    self.results: dict[float, detection.DetectionResult] = {}

  def check_ids(self, dets: Mapping[str, Any], recs) -> None:
    """Unknown ids, NaN, x2 < x1: a clear ValueError; a missing image: a warning."""
    known = {r.image_id for r in recs}
    detection.validate_detections(dets, known)
    if len(set(dets) & known) < len(known):
      base.log.warning("%s: %d of %d ground-truth images have no entry in the detections (their "
                       "faces count as missed)", self.name, len(known - set(dets)), len(known))

  def header(self, dets: Mapping[str, Any], recs) -> dict[str, Any]:
    return {"dataset": self.name, "task": "detection", "split": self.split,
            "iou": self.iou, "num_images": len(recs),
            "num_images_in_detections": len(set(dets)),
            "num_detections": int(sum(len(s) for _, s in dets.values()))}

  def box_metrics(self, recs, dets: Mapping[str, Any]) -> dict[str, Any]:
    """VOC numbers at iou (and extra_ious); sets self.results and self.result."""
    ious = [float(self.iou)] + [float(t) for t in self.extra_ious if float(t) != float(self.iou)]
    self.results = detection.evaluate_ap_at(recs, dets, thresholds=ious)
    result = self.result = self.results[float(self.iou)]
    convention = box_convention.box_convention(recs, dets)
    box_convention.warn_if_mismatched(self.name, convention)
    return {"ap": float(result.ap), "ap_11pt": float(result.ap_11pt),
            "box_convention": convention,
            "ap_at_iou": {f"{t:g}": float(v.ap) for t, v in self.results.items()},
            "num_positives": int(result.num_positives),
            "tpr_at_fp": base.tpr_dict(result.tpr_at_fp(tuple(int(k) for k in self.fp_points)))}

  def _score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    recs = self.records
    self.check_ids(dets, recs)
    out = self.header(dets, recs)
    out.update(self.box_metrics(recs, dets))
    return out

  def plot(self, path: str, label: str) -> str:
    from facecraft.eval import plots  # pylint: disable=g-import-not-at-top  # matplotlib: lazy
    r = self.result
    if self.ROC_PLOT:
      return plots.plot_roc({label: r.roc()}, path, title=f"{self.title} ROC")
    return plots.plot_pr({label: (r.recall, r.precision, r.ap)}, path,
                         title=f"{self.name} precision-recall (IoU {self.iou:g})")

  @property
  def title(self) -> str:
    return self.name


class CmuMitEvaluator(BoxAPEvaluator):
  """CMU+MIT frontal (the FaceCraft paper's validation set): box AP and the ROC."""

  ROC_PLOT = True

  READER = "cmu_mit"

  @property
  def title(self) -> str:
    return "CMU+MIT"


class AfwEvaluator(BoxAPEvaluator):
  """AFW (anno2.mat): box AP at IoU 0.5 and the paper's 0.3."""

  READER = "afw"


class PascalFacesEvaluator(BoxAPEvaluator):
  """PASCAL faces: box AP at IoU 0.5 and 0.3."""

  READER = "pascal_faces"
