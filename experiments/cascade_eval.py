"""Detection evaluation of a FaceCraft cascade while it trains (a hook for the schedules).

  hooks = cascade_eval.make_hooks(config)    # {"eval_fn": DetectionEval} or None
  cascade_joint.run(config, workdir, hooks)  # eval metrics then include det/ap, det/tpr_at_*fp

The schedules (facecraft.train) must not import the inference engine, so the launcher wires it:
the trained params and their box statistics (state.extra["box_stats"]) go through
infer.pyramid.facecraft_cascade_spec into a CascadeSpec, a PyramidEngine in a Detector runs the
whole cascade (val.thresholds per stage, val.min_face_size, val.factor, val.capacities,
val.stage1_nms, val.image_batch) and the evaluators of facecraft.eval.evaluators score it:

  - by default the CMU+MIT evaluator under data.root/cmu_mit_frontal, as "det": VOC AP at IoU
    val.iou and the TPR at val.fp_points false positives (default 10 / 50 / 100) over the set;
  - where config.evals has entries (big_vision style, `config.evals.NAME.type = "wider"` plus
    the evaluator's settings), those instead, each reported under NAME/ (a relative root is
    taken under data.root).

Without the engine (facecraft.infer not importable) or without CMU+MIT on disk, make_hooks says
so and returns None: the schedules then report their crop-level metrics only.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging

from facecraft.eval import evaluators

VALIDATION = "cmu_mit_frontal"
MAIN = "det"  # metric prefix of the default CMU+MIT evaluation (det/ap, det/tpr_at_<k>fp, ...)
# What the default evaluation reports (the names the runs' metrics.csv have always had).
VAL_KEYS = ("ap", "tpr_at_fp", "detections_per_image", "truncated_images", "seconds")


def _has_evals(config) -> bool:
  return "evals" in config and bool(config.evals)


def _root_under(config, root: str) -> str:
  root = os.path.expanduser(root)
  if os.path.isabs(root) or os.path.exists(root):
    return root
  return os.path.join(os.path.expanduser(config.data.root), root)


def val_evaluators(config, records: list | None = None) -> dict[str, evaluators.Evaluator]:
  """{metric prefix: evaluator}: config.evals when it has entries, else CMU+MIT from config.val.
  records: the pictures to score instead of CMU+MIT (FaceRecords, image a path or an array)."""
  if _has_evals(config):
    out = {}
    for name, cfg in config.evals.items():
      settings = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
      if settings.get("root"):
        settings["root"] = _root_under(config, settings["root"])
      out[name] = evaluators.create(settings, name=settings.get("name") or name)
    return out
  v = config.val
  root = os.path.join(os.path.expanduser(config.data.root), VALIDATION)
  # The whole set goes to the detector in one call (it groups by size) and stays decoded.
  return {MAIN: evaluators.create(
      type="cmu_mit", root=root, on_error="skip", check_images=True, iou=float(v.iou),
      extra_ious=(), fp_points=tuple(int(k) for k in v.fp_points),
      max_images=int(v.max_images or 0), chunk=0, cache_images=True, records=records)}


def flatten(prefix: str, metrics: Mapping[str, Any], keys=None) -> dict[str, float]:
  """Scalar training metrics: {"ap": .9, "tpr_at_fp": {"10": .5}} -> {p/ap, p/tpr_at_10fp}."""
  out = {}
  for key, value in metrics.items():
    if keys is not None and key not in keys:
      continue
    if key == "tpr_at_fp" and isinstance(value, Mapping):
      out.update({f"{prefix}/tpr_at_{k}fp": _float(v) for k, v in value.items()})
    elif isinstance(value, Mapping):
      out.update(flatten(f"{prefix}/{key}", value))
    elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
      out[f"{prefix}/{key}"] = _float(value)
  return out


def _float(value) -> float:
  return float("nan") if value is None else float(value)


class DetectionEval:
  """eval_fn(state) -> {"det/ap", "det/tpr_at_<k>fp", ...} (or each config.evals NAME/...)."""

  def __init__(self, config, modules: dict[str, Any], records: list | None = None):
    """records: the pictures to score (FaceRecords, image a path or an array); default CMU+MIT
    under config.data.root."""
    self.config, self.m = config, modules
    self.model = self.m["model_of"](config)
    self.evaluators = val_evaluators(config, records)
    self.detector = None

  @property
  def evaluator(self) -> evaluators.Evaluator:
    """The main evaluator ("det", or the first of config.evals)."""
    return self.evaluators.get(MAIN) or next(iter(self.evaluators.values()))

  def _spec_params(self, state):
    tree = {"params": state.params, "box_stats": state.extra["box_stats"]}
    return {"stage1": tree, "stage2": tree, "stage3": tree}

  def _detector(self, state):
    v = self.config.val
    if self.detector is None:
      spec = self.m["pyramid"].facecraft_cascade_spec(self.model, state.params,
                                                      state.extra["box_stats"])
      caps = tuple(int(c) for c in v.capacities)
      cfg = self.m["infer_cascade"].CascadeConfig(
          thresholds=tuple(float(t) for t in v.thresholds), stage1_nms=v.stage1_nms,
          capacities=caps, max_detections=caps[2], crop_mode="pad")
      buckets = [tuple(int(n) for n in b) for b in v.get("buckets", ())] or None
      engine = self.m["pyramid"].PyramidEngine(spec, cfg, min_face_size=v.min_face_size,
                                               factor=v.factor, max_tiers=int(v.max_tiers),
                                               buckets=buckets)
      self.detector = self.m["detector"].Detector(engine)
    else:  # Same shapes: the compiled functions take the params as an argument.
      self.detector.engine.params = self._spec_params(state)
    return self.detector

  def predict_fn(self, state):
    """The evaluators' predict_fn: the cascade in `state` (anything with .params and
    .extra["box_stats"]) over a list of uint8 RGB pictures."""
    detector = self._detector(state)
    batch = int(self.config.val.image_batch)
    # A bar of its own: the training bar stands still while the evaluation compiles and runs.
    progress = bool(self.config.get("progress_bar", True))
    return lambda arrays: detector.detect_arrays(list(arrays), batch_size=batch, progress=progress)

  def run(self, state):
    """(detection.DetectionResult, {image_id: Detections}) of the main evaluator; its metrics
    dict stays in self.metrics."""
    ev = self.evaluator
    self.metrics = ev.run(self.predict_fn(state))
    return ev.result, dict(ev.predictions)

  def __call__(self, state) -> dict[str, float]:
    predict = self.predict_fn(state)
    out = {}
    for name, ev in self.evaluators.items():
      keys = VAL_KEYS if name == MAIN and not _has_evals(self.config) else None
      out.update(flatten(name, ev.run(predict), keys))
    return out


def engine_modules() -> dict[str, Any]:
  """The modules DetectionEval needs (imported here: facecraft.train may not import them)."""
  # pylint: disable=g-import-not-at-top
  from facecraft.infer import cascade as infer_cascade
  from facecraft.infer import detector
  from facecraft.infer import pyramid
  from facecraft.train.cascade import joint as cascade_joint
  return {"infer_cascade": infer_cascade, "detector": detector, "pyramid": pyramid,
          "model_of": cascade_joint.model_of}


def _missing_roots(config) -> list[str]:
  if _has_evals(config):
    return [f"{name}: {_root_under(config, cfg.root)}" for name, cfg in config.evals.items()
            if cfg.get("root") and not os.path.exists(_root_under(config, cfg.root))]
  root = os.path.join(os.path.expanduser(config.data.root), VALIDATION)
  if config.data.source == "embedded" or not os.path.isdir(root):
    return [f"CMU+MIT: {root}"]
  return []


def make_hooks(config) -> dict | None:
  """{"eval_fn": DetectionEval} when the engine imports and the data is there, else None."""
  if not config.val.detection and not _has_evals(config):
    return None
  try:
    modules = engine_modules()
    for name in ("CascadeSpec", "CascadeConfig"):
      getattr(modules["infer_cascade"], name)
    getattr(modules["detector"], "Detector")
    getattr(modules["pyramid"], "PyramidEngine")
  except Exception as e:  # pylint: disable=broad-except  # The engine may be mid-rewrite.
    logging.warning("cascade_eval: the inference engine is not usable (%s: %s): validation falls "
                    "back to crop-level metrics only (no det/ap)", type(e).__name__, e)
    return None
  missing = _missing_roots(config)
  if missing:
    logging.warning("cascade_eval: no data at %s: crop-level validation only", "; ".join(missing))
    return None
  eval_fn = DetectionEval(config, modules)
  logging.info("cascade_eval: detection evaluation at every eval: %s",
               ", ".join(f"{k} ({type(v).__name__})" for k, v in eval_fn.evaluators.items()))
  return {"eval_fn": eval_fn}
