r"""FaceCraft joint cascade trained on in-the-wild faces with WIDER FACE's own boxes (issue #12).

  python -m experiments.train --config experiments/configs/facecraft_wider.py \
      --workdir runs/facecraft_wider --config.data.root ../shared/data
  # + the extra WIDER photos built by ../shared/tools/wider_extra.py into DIR (local only):
  --config experiments/configs/facecraft_wider.py:extra=DIR
  # + rotation (15 deg), JPEG, low-resolution and occlusion augmentation of the crops:
  --config experiments/configs/facecraft_wider.py:extra=DIR,augment

Selection on the WIDER subset's val split only (official easy / medium / hard AP: evals.wider;
crop validation on the same split), so CMU+MIT stays a test set. Boxes: WIDER's forehead-to-chin
convention (box_convention "wider" in the bundle), labelled by MTCNN's IoU rule (positives
> 0.65, part faces 0.4-0.65), since a square window covers at most ~0.8 of a tall face box.
Negatives: the non-face scenes and, for half of them, WIDER's crowded backgrounds kept clear of
every labelled face.

Five landmarks (x48's landmark head, MTCNN style): WIDER has none, so Caltech WebFaces (eyes,
nose, mouth centre) and 300-W (68 points -> five) give landmark crops; their faces also give
positives, with the landmark rule's square box reshaped to WIDER's convention by
data.rule_box_shape = (0.965, 1.265, -0.155): the original MTCNN (trained on WIDER) returns boxes
0.95-0.98x as wide, 1.24-1.29x as tall and 0.15-0.16 of a height higher than the rule's box on
120 pictures of each set (median over 287 matched faces).

x12 has P-Net's widths (10, 16, 32) instead of the paper's (16, 32, 16): it runs over the whole
pyramid, so its width sets the detector's speed.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import joint_cascade

WIDER_BOX_SHAPE = (0.965, 1.265, -0.155)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """arg: joint_cascade's words, plus extra=DIR (the wider_extra.py folder: both its splits
  are training material) and augment (rotation, JPEG, low resolution, occlusion)."""
  words = [w for w in arg.split(",") if w]
  extra = [w.split("=", 1)[1] for w in words if w.startswith("extra=")]
  augmented = "augment" in words
  words = [w for w in words if not w.startswith("extra=") and w != "augment"]
  config = joint_cascade.get_config(",".join(["hard", "wider", *words]))
  d = config.data
  d.source = "real"  # an in-the-wild recipe has no embedded stand-in
  d.train_sets = ("caltech_webfaces", "300w_train")
  d.box_scale = 1.0
  d.rule_box_shape = WIDER_BOX_SHAPE
  d.native_sets = ("wider_face:wider_face_subset:train",
                   *[f"wider_face:{x}:{s}" for x in extra for s in ("train", "val")])
  d.val_set = "wider_face:wider_face_subset:val"
  d.sampler = "mtcnn"
  d.pos_iou, d.part_iou, d.neg_iou = 0.65, 0.4, 0.3
  d.face_tries = 6
  d.landmark_tries = 3
  d.min_face_size = 20.0
  d.positive_ratio = 0.2
  d.max_negatives = 500_000
  d.negatives_from_face_images = 0.5
  d.face_clearance = 1.2
  d.val_face_tries = 4
  d.val_negatives = 20_000
  d.brightness, d.contrast, d.saturation, d.grayscale_prob = 0.2, 0.2, 0.2, 0.1
  if augmented:  # pose, blur, compression and occlusion on top (not in the bundled model's run)
    d.rotation_deg, d.jpeg_prob, d.blur_prob, d.occlusion_prob = 15.0, 0.2, 0.2, 0.2
  config.model.x12_channels = (10, 16, 32)
  config.model.landmarks = True
  config.loss.landmark_weight = 1.0
  # The recipe of the bundled CMU+MIT model: SGD 1e-2 (1e-3 for the last 20%), clip 20.
  config.num_steps = 10_000
  config.lr.rates = (1e-2, 1e-3)
  config.lr.boundaries = (8_000,)
  config.optimizer.clip_grad_norm = 20.0
  config.checkpoint.every = 1_000
  config.eval.every = 2_500
  config.val.max_images = 0
  config.eval.best_metric = "wider/ap/hard"
  return config
