r"""FaceCraft joint cascade trained on in-the-wild faces with WIDER FACE's own boxes (issue #12).

  python -m experiments.train --config experiments/configs/facecraft_wider.py \
      --workdir runs/facecraft_wider --config.data.root ../shared/data
  # + the extra WIDER photos built by ../shared/tools/wider_extra.py into DIR (local only):
  --config.data.native_sets='("wider_face:wider_face_subset:train", "wider_face:DIR:train",
                              "wider_face:DIR:val")'

Selection on the WIDER subset's val split only (official easy / medium / hard AP: evals.wider;
crop validation on the same split), so CMU+MIT stays a test set. Boxes: WIDER's forehead-to-chin
convention (box_convention "wider" in the bundle), labelled by MTCNN's IoU rule (positives
> 0.65, part faces 0.4-0.65), since a square window covers at most ~0.8 of a tall face box.
Negatives: the non-face scenes and, for half of them, WIDER's crowded backgrounds kept clear of
every labelled face.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import joint_cascade


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = joint_cascade.get_config(",".join(["hard", "wider", *[w for w in arg.split(",") if w]]))
  d = config.data
  d.train_sets = ()
  d.native_sets = ("wider_face:wider_face_subset:train",)
  d.val_set = "wider_face:wider_face_subset:val"
  d.sampler = "mtcnn"
  d.pos_iou, d.part_iou, d.neg_iou = 0.65, 0.4, 0.3
  d.face_tries = 8
  d.min_face_size = 20.0
  d.positive_ratio = 0.2
  d.max_negatives = 400_000
  d.negatives_from_face_images = 0.5
  d.face_clearance = 1.2
  d.val_face_tries = 4
  d.val_negatives = 20_000
  d.brightness, d.contrast, d.saturation, d.grayscale_prob = 0.2, 0.2, 0.2, 0.1
  config.val.max_images = 0
  config.eval.best_metric = "wider/ap/hard"
  return config
