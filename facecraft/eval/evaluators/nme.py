"""The landmark evaluator: NME, failure rate, AUC and per-point errors (facecraft.eval.landmarks).

Predictions are image_id -> points [n, K, 2] in the order of the ground-truth faces, or
(points, boxes [n, 4]) matched to the ground-truth boxes one-to-one by IoU >= match_iou; run()
takes `.landmarks` and `.boxes` of predict_fn's objects (the second form). Result dict:
"scheme", "norm", "box_from", "num_images", "num_missed", "num_faces", "nme", "nme_median",
"failure_rate" / "auc" {threshold}, "per_landmark". self.result is landmark_errors' dict.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from facecraft.eval import landmarks as landmarks_lib
from facecraft.eval.evaluators import base


class NMEEvaluator(base.Evaluator):
  """Landmark NME on any reader with landmarks (`reader` setting).

  norm: "auto" picks the scheme's usual normaliser (landmarks_lib.default_norm); box_from:
  "auto" takes AFLW's face boxes ("record") and elsewhere the landmarks' tight box.
  """

  TASK = "landmarks"
  DEFAULTS = {"norm": "auto", "box_from": "auto", "match_iou": 0.5}

  def __init__(self, config: Any = None, **kw):
    super().__init__(config, **kw)
    if self.reader is None:
      raise base.EvaluationError("NMEEvaluator: give the ground-truth reader (a "
                                 "data_pipelines.formats name) as `reader`")

  def load_file(self, path: str) -> dict[str, Any]:
    return landmarks_lib.predictions_from_json(base.read_json(path, "landmark predictions"), path)

  def as_dets(self, predictions: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, p in predictions.items():
      if getattr(p, "landmarks", None) is None:
        raise base.EvaluationError(f"{self.name}: the predictions carry no landmarks")
      out[key] = (np.asarray(p.landmarks, np.float64), np.asarray(p.boxes, np.float64))
    return out

  def _box_from(self) -> str:
    if self.box_from != "auto":
      return self.box_from
    return "record" if self.reader == "aflw" else "landmarks"

  def _norm(self, recs, preds: Mapping[str, Any]) -> str:
    if self.norm not in (None, "auto"):
      return self.norm
    gt_scheme = next((r.landmark_scheme for r in recs if r.landmarks is not None), None)
    if gt_scheme is None:
      raise base.EvaluationError(f"{self.name}: the ground truth under {self.root} has no "
                                 f"landmarks")
    points = [p[0] if isinstance(p, tuple) else p for p in preds.values()]
    k = next((len(p[0]) for p in points if len(p)), None)
    return landmarks_lib.default_norm(gt_scheme, k, by_box=self.reader == "aflw")

  def _score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    recs = self.records
    box_from = self._box_from()
    norm = self.used_norm = self._norm(recs, dets)
    self.result = errors = landmarks_lib.landmark_errors(recs, dets, norm, box_from,
                                                         float(self.match_iou))
    out = {"dataset": self.name, "task": "landmarks", "split": self.split,
           "scheme": errors["scheme"], "norm": norm, "box_from": box_from,
           "num_images": errors["num_images"], "num_missed": errors["num_missed"]}
    out.update(landmarks_lib.summarize(errors["nmes"], errors["point_errors"]))
    return out

  def run(self, predict_fn: base.PredictFn) -> dict[str, Any]:
    out = super().run(predict_fn)
    out.pop("truncated_images")  # a detector's notion; landmarks report num_missed instead
    return out

  def plot(self, path: str, label: str) -> str:
    from facecraft.eval import plots  # pylint: disable=g-import-not-at-top
    return plots.plot_ced({label: self.result["nmes"]}, path, max_error=0.1,
                          title=f"{self.name} CED", xlabel=f"NME ({self.used_norm})")
