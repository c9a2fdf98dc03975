"""CMU+MIT detection evaluation of a FaceCraft cascade while it trains (a hook for the schedules).

  hooks = cascade_eval.make_hooks(config)    # {"eval_fn": DetectionEval} or None
  cascade_joint.run(config, workdir, hooks)  # eval metrics then include det/ap, det/tpr_at_*fp

The schedules (facecraft.train) must not import the inference engine, so the launcher wires it:
the trained params and their box statistics (state.extra["box_stats"]) go through
infer.detector.facecraft_cascade_spec into a CascadeSpec, a Detector runs the whole cascade on every
CMU+MIT picture (val.thresholds per stage, val.min_face_size, val.factor, val.capacities,
val.stage1_nms) and facecraft.eval.detection.evaluate gives VOC AP at IoU val.iou and the TPR
at val.fp_points false positives (default 10 / 50 / 100) over the whole set.

Without the engine (facecraft.infer not importable yet) or without CMU+MIT on disk, make_hooks
says so and returns None: the schedules then report their crop-level metrics only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
import numpy as np


VALIDATION = "cmu_mit_frontal"


class DetectionEval:
  """eval_fn(state) -> {"det/ap", "det/tpr_at_<k>fp", ...} on CMU+MIT."""

  def __init__(self, config, modules: dict[str, Any], records: list | None = None):
    """records: the pictures to score (FaceRecords, image a path or an array); default CMU+MIT
    under config.data.root."""
    self.config, self.m = config, modules
    self.model = self.m["model_of"](config)
    self.records, self.arrays = records, None
    self.detector = None

  def _load(self) -> None:
    v = self.config.val
    if self.records is None:
      root = os.path.join(os.path.expanduser(self.config.data.root), VALIDATION)
      self.records = list(self.m["cmu_mit"].load(root, on_error="skip"))
    if v.max_images:
      self.records = self.records[:int(v.max_images)]
    self.arrays = [r.image if isinstance(r.image, np.ndarray) else
                   self.m["images"].decode(r.image) for r in self.records]

  def _spec_params(self, state):
    tree = {"params": state.params, "box_stats": state.extra["box_stats"]}
    return {"stage1": tree, "stage2": tree, "stage3": tree}

  def _detector(self, state):
    v = self.config.val
    if self.detector is None:
      spec = self.m["detector"].facecraft_cascade_spec(self.model, state.params,
                                                       state.extra["box_stats"])
      caps = tuple(int(c) for c in v.capacities)
      cfg = self.m["infer_cascade"].CascadeConfig(
          thresholds=tuple(float(t) for t in v.thresholds), stage1_nms=v.stage1_nms,
          capacities=caps, max_detections=caps[2], crop_mode="pad")
      self.detector = self.m["detector"].Detector(spec, cfg, min_face_size=v.min_face_size,
                                                  factor=v.factor, max_tiers=int(v.max_tiers))
    else:  # Same shapes: the compiled functions take the params as an argument.
      self.detector.spec = dataclasses.replace(self.detector.spec,
                                               params=self._spec_params(state))
    return self.detector

  def run(self, state):
    """(detection.DetectionResult, {image_id: Detections}) of the cascade in `state` (anything
    with .params and .extra["box_stats"]) on every CMU+MIT picture."""
    if self.arrays is None:
      self._load()
    v = self.config.val
    detector = self._detector(state)
    found = detector.detect_arrays(self.arrays, batch_size=int(v.image_batch))
    dets = {r.image_id: (d.boxes, d.scores) for r, d in zip(self.records, found)}
    result = self.m["detection"].evaluate(self.records, dets, iou_threshold=float(v.iou))
    return result, {r.image_id: d for r, d in zip(self.records, found)}

  def __call__(self, state) -> dict[str, float]:
    v = self.config.val
    t0 = time.perf_counter()
    result, by_id = self.run(state)
    found = list(by_id.values())
    out = {"det/ap": float(result.ap),
           "det/detections_per_image": float(np.mean([len(d) for d in found])),
           "det/truncated_images": float(sum(bool(d.truncated) for d in found)),
           "det/seconds": time.perf_counter() - t0}
    for k, tpr in result.tpr_at_fp(tuple(int(k) for k in v.fp_points)).items():
      out[f"det/tpr_at_{k}fp"] = float(tpr)
    return out


def engine_modules() -> dict[str, Any]:
  """The modules DetectionEval needs (imported here: facecraft.train may not import them)."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines.formats import cmu_mit
  from data_pipelines import images
  from facecraft.eval import detection
  from facecraft.infer import cascade as infer_cascade
  from facecraft.infer import detector
  from facecraft.train.cascade import joint as cascade_joint
  return {"cmu_mit": cmu_mit, "images": images, "detection": detection,
          "infer_cascade": infer_cascade, "detector": detector,
          "model_of": cascade_joint.model_of}


def make_hooks(config) -> dict | None:
  """{"eval_fn": DetectionEval} when the engine imports and CMU+MIT is there, else None."""
  if not config.val.detection:
    return None
  try:
    modules = engine_modules()
    for name in ("CascadeSpec", "CascadeConfig"):
      getattr(modules["infer_cascade"], name)
    getattr(modules["detector"], "Detector")
  except Exception as e:  # pylint: disable=broad-except  # The engine is still being written.
    logging.warning("cascade_eval: the inference engine is not usable (%s: %s): validation falls "
                    "back to crop-level metrics only (no det/ap)", type(e).__name__, e)
    return None
  root = os.path.join(os.path.expanduser(config.data.root), VALIDATION)
  if config.data.source == "embedded" or not os.path.isdir(root):
    logging.warning("cascade_eval: no CMU+MIT at %s: crop-level validation only", root)
    return None
  logging.info("cascade_eval: CMU+MIT detection evaluation (AP, TPR at %s FP) at every eval",
               tuple(config.val.fp_points))
  return {"eval_fn": DetectionEval(config, modules)}
