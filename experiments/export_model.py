r"""Bundles a trained FaceCraft cascade as facecraft/weights/<name>.npz (Detector.from_pretrained).

  python -m experiments.export_model --workdir runs/facecraft_main --which best --name facecraft

Loads the run's parameters and box statistics, scores the run's selection set with them through
the inference engine (the run's val settings: its first config.evals entry, e.g. the WIDER
subset's val split, or CMU+MIT when it has none), and picks the final-stage threshold that
maximises F1 there (VOC matching at the evaluator's IoU) as the recommended operating point
(stages 1 and 2 keep the run's val thresholds); the model card says which set that was. The box
convention is the training data's: "wider" for runs on native WIDER boxes (data.native_sets),
"cmu_mit" for the Caltech rule grown to CMU+MIT's boxes; --aligner names the landmark aligner
Detector composes by default. Prints the numbers for MODEL_CARD.md and writes them into the
bundle's meta.
"""

from __future__ import annotations

import json
import os
import types

from absl import app
from absl import flags
import numpy as np

from experiments import cascade_eval
from facecraft.models import pretrained
from facecraft.train.cascade import joint as cascade_joint
from facecraft.train import checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None,
                                "A cascade_joint / cascade_greedy / rpn_frcnn run folder.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "checkpoints"], "Best-by-metric or latest.")
_NAME = flags.DEFINE_string("name", "facecraft", "Bundle name (facecraft/weights/<name>.npz).")
_OUT_DIR = flags.DEFINE_string("out_dir", pretrained.WEIGHTS_DIR, "Where the bundle goes.")
_DATA_ROOT = flags.DEFINE_string("data_root", "", "Overrides the run's config.data.root.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Selection pictures scored (0 = all).")
_ALIGNER = flags.DEFINE_string("aligner", "", "Default landmark aligner ('' none, 'mtcnn-onet').")
_CAPACITIES = flags.DEFINE_list("capacities", [], "Overrides config.val.capacities while scoring "
                                "(crowded sets overflow a training run's small ones).")
_MAX_TIERS = flags.DEFINE_integer("max_tiers", 0, "Overrides config.val.max_tiers (0: keep).")
_STAGE_T = flags.DEFINE_list("stage_thresholds", [], "T1,T2: stage-1/2 thresholds to score and "
                             "bundle with (default: the run's val thresholds, i.e. its training "
                             "gates); experiments/operating_point.py chooses them by measurement.")
_SKIP_EVAL = flags.DEFINE_bool("skip_eval", False, "Bundle without scoring the selection set "
                                "(the last threshold stays the run's val one): for a bundle whose "
                                "thresholds experiments/operating_point.py --write will choose.")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
  del argv
  import ml_collections  # pylint: disable=g-import-not-at-top
  with open(os.path.join(_WORKDIR.value, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if _DATA_ROOT.value:
    config.data.root = _DATA_ROOT.value
  if config.schedule == "rpn_frcnn":  # the anchor family: params + model config, no box stats
    from facecraft.train.rpn_frcnn import schedule  # pylint: disable=g-import-not-at-top
    path = schedule.export(config, _WORKDIR.value,
                           os.path.join(_OUT_DIR.value, f"{_NAME.value}.npz"), _WHICH.value)
    print(json.dumps({"bundle": path, "bytes": os.path.getsize(path)}))
    return
  config.val.max_images = _MAX_IMAGES.value
  for entry in config.get("evals", {}).values():
    entry.max_images = _MAX_IMAGES.value
  if _CAPACITIES.value:
    config.val.capacities = tuple(int(c) for c in _CAPACITIES.value)
  if _MAX_TIERS.value:
    config.val.max_tiers = _MAX_TIERS.value
  if _STAGE_T.value:
    if len(_STAGE_T.value) != 2:
      raise app.UsageError("--stage_thresholds takes two values, T1,T2")
    t = config.val.thresholds
    config.val.thresholds = (float(_STAGE_T.value[0]), float(_STAGE_T.value[1]), float(t[2]))
  params, extra, step = checkpoint.load_params(_WORKDIR.value, _WHICH.value)
  stats = {k: np.asarray(v, np.float32) for k, v in extra["box_stats"].items()}
  model = cascade_joint.model_of(config)
  native = bool(config.data.get("native_sets", ()))
  if _SKIP_EVAL.value:
    selection, numbers = "selection", {"scored": False}
    thresholds = tuple(float(t) for t in config.val.thresholds)
  else:
    selection, numbers, thresholds = score_selection(config, params, stats)
  inference = {"thresholds": thresholds, "min_face_size": float(config.val.min_face_size),
               "factor": float(config.val.factor), "box_convention": "wider" if native else
               "cmu_mit", "stage1_nms": config.val.stage1_nms,
               **({"aligner": _ALIGNER.value} if _ALIGNER.value else {})}
  meta = {
      "source": {"workdir": os.path.abspath(_WORKDIR.value), "which": _WHICH.value,
                 "step": int(step), "schedule": config.schedule,
                 "gate": config.gate.to_dict(), "batch_size": int(config.batch_size),
                 "lr": config.lr.to_dict(), "optimizer": config.optimizer.to_dict(),
                 "data": {k: config.data.get(k) for k in (
                     "train_sets", "native_sets", "val_set", "sampler", "box_scale",
                     "rule_box_shape", "positive_ratio", "max_negatives", "landmark_tries")},
                 "model": config.model.to_dict(), "num_steps": int(config.num_steps)},
      selection: numbers,
  }
  path = pretrained.save(os.path.join(_OUT_DIR.value, f"{_NAME.value}.npz"), params, stats,
                         model.config, meta, inference=inference)
  print(json.dumps({"bundle": path, "bytes": os.path.getsize(path), **meta[selection],
                    "thresholds": thresholds, "step": int(step)}, indent=1))


def score_selection(config, params, stats):
  """(selection set name, its numbers, thresholds with the F1-best last one) of the run's first
  evaluator (CMU+MIT without one) over the run's cascade."""
  evaluator = cascade_eval.DetectionEval(config, cascade_eval.engine_modules())
  evaluator.run(types.SimpleNamespace(params=params, extra={"box_stats": stats}))
  ev = evaluator.evaluator
  result = ev.results[float(ev.iou)]  # VOC matching over every face of the set
  selection = "cmu_mit" if ev.settings["type"] == "cmu_mit" else ev.name
  t3, f1, prec, rec = result.best_f1()
  thresholds = (float(config.val.thresholds[0]), float(config.val.thresholds[1]), t3)
  tpr = result.tpr_at_fp((10, 50, 100, 500))
  numbers = {"ap": float(result.ap), "faces": int(result.num_positives),
             **{f"tpr_at_{k}fp": float(v) for k, v in tpr.items()},
             "f1_threshold": t3, "f1": f1, "precision": prec, "recall": rec,
             "eval_thresholds": list(config.val.thresholds),
             "detections_per_image": evaluator.metrics["detections_per_image"],
             "truncated_images": evaluator.metrics.get("truncated_images")}
  if selection != "cmu_mit":
    numbers["official"] = evaluator.metrics.get("ap")  # e.g. WIDER easy / medium / hard
  return selection, numbers, thresholds


if __name__ == "__main__":
  app.run(main)
