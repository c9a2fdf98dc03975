r"""Hard negatives mined through a trained detector, for a next training round.

  python -m experiments.mine_negatives --bundle runs/wider/candidate.npz \
      --sets wider_face:wider_face_subset:train,wider_face:/data/wider_extra:train \
      --out runs/wider/hard_negatives.npz --count 60000 --min_score 0.3
  python -m experiments.train --config experiments/configs/facecraft_wider.py:extra=/data/wider_extra \
      --workdir runs/wider_round2 --config.init.from_workdir runs/wider \
      --config.data.extra_crops '("runs/wider/hard_negatives.npz",)' ...

Runs the whole cascade (the bundle's stage-1/2 thresholds, the last stage at --min_score) over
the training pictures of --sets (never the selection set's) and keeps its detections that overlap
no labelled face (data_pipelines.training_crops.mine_false_positives): the crowds, textures and
body parts the model still calls faces, scored highest first. The file is a records.CropSet of
48x48 NEGATIVE crops that config.data.extra_crops adds to a run's training crops.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags

from data_pipelines import training_crops
from data_pipelines import training_sets
from facecraft.infer import Detector
from facecraft.infer import registry

_BUNDLE = flags.DEFINE_string("bundle", None, "The detector: a bundle path or bundled name.")
_SETS = flags.DEFINE_list("sets", ["wider_face:wider_face_subset:train"],
                          "FORMAT:PATH:SPLIT training sets whose pictures are mined.")
_ROOT = flags.DEFINE_string("data_root", "../shared/data", "Relative set paths start here.")
_OUT = flags.DEFINE_string("out", None, "The CropSet .npz written.")
_COUNT = flags.DEFINE_integer("count", 50_000, "Negatives kept (highest scores first).")
_MIN_SCORE = flags.DEFINE_float("min_score", 0.3, "Last-stage score a false positive needs.")
_NEG_IOU = flags.DEFINE_float("neg_iou", 0.3, "Max IoU with any face for a negative.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Pictures per set (0: all).")
_SIZE = flags.DEFINE_integer("size", 48, "Crop size.")
_STAGES = flags.DEFINE_string("stage_thresholds", "",
                              "'t1,t2' for the first two stages (default: the bundle's); looser "
                              "ones reach the windows the later stages see at a looser operating "
                              "point.")
flags.mark_flags_as_required(["bundle", "out"])


def main(argv) -> None:
  del argv
  recs = training_sets.load_native_sets(_ROOT.value, _SETS.value, _MAX_IMAGES.value)
  t1, t2, _ = registry.read_inference(_BUNDLE.value)["thresholds"]
  if _STAGES.value:
    t1, t2 = (float(x) for x in _STAGES.value.split(","))
  det = Detector.from_pretrained(_BUNDLE.value, thresholds=(t1, t2, _MIN_SCORE.value),
                                 align="none")

  def detect(image):
    d = det.detect(image)
    return d.boxes, d.scores

  crops, stats = training_crops.mine_false_positives(recs, detect, _SIZE.value, _COUNT.value,
                                                     _NEG_IOU.value, _MIN_SCORE.value)
  crops.save(_OUT.value)
  print(json.dumps({"out": _OUT.value, "sets": _SETS.value, **stats}, indent=1))


if __name__ == "__main__":
  app.run(main)
