r"""RPN + Fast R-CNN (FaceCraft §5, issue #15): one step of the joint or the four-step recipe.

  W=runs/rpn; C=experiments/configs/rpn_frcnn.py
  # joint (the paper): RPN first, then the one network on the fused loss
  python -m experiments.train --config $C:rpn   --workdir $W/rpn
  python -m experiments.train --config $C:joint --workdir $W/joint \
      --config.init.from_workdir $W/rpn --config.rpn.proposals_from $W/rpn
  # four_step (Ren et al.): separate RPN and Fast R-CNN, then shared convolutions
  python -m experiments.train --config $C:frcnn --workdir $W/fs2 --config.rpn.proposals_from $W/rpn
  python -m experiments.train --config $C:rpn,frozen_trunk --workdir $W/fs3 \
      --config.init.from_workdir $W/fs2
  python -m experiments.train --config $C:frcnn,frozen_trunk --workdir $W/fs4 \
      --config.init.from_workdir $W/fs3 --config.rpn.proposals_from $W/fs3
  # + ",smoke": a one-minute check on tests/fixtures/wider_face (no ../shared needed)

Data: the WIDER subset's train split (+ the extra WIDER photos with extra=DIR), scene windows of
data.size pixels whose scale follows a face drawn at a side log-uniform in data.face_sides
(data_pipelines.scene_crops). Trunk: four 3x3 conv stages (16-32-64-96 channels, stride 8)
plus two context levels (128 channels at strides 16 and 32, added back onto the stride-8 map:
its receptive field grows from 38 to ~190 px, so 128-256 px anchors see their faces); at VGA
the trunk costs ~1.5 G multiply-adds (context ~0.2 G of it), the RPN 0.4 G and a 300-RoI head
0.36 G: one pass, no pyramid, so one core can stay near YuNet's speed;
anchors 16-256 px (sqrt of area) at height / width 1.25. From the data (the WIDER subset's train
split, 1,709 faces): median height / width 1.25 (quartiles 1.13-1.40); face sides (sqrt of area)
<8 px 5%, 8-16 17%, 16-32 26%, 32-64 21%, 64-128 20%, 128-256 8%, >256 3%. Five octave
anchors 16-256 at stride 8 reach faces from ~11 px (IoU 0.5 with a 16 px anchor) to ~360 px in
one pass at native size: about 88% of these faces; the smallest tenth needs the photo upscaled
(the <8 px tail is marked ignore in training, data.min_face), and the scene sampler draws every
size equally during training.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

STAGES = ("rpn", "frcnn", "joint")


def get_config(arg: str = "rpn") -> ml_collections.ConfigDict:
  """arg: a stage (rpn | frcnn | joint), plus frozen_trunk, smoke, extra=DIR."""
  words = [w for w in (arg or "rpn").split(",") if w]
  extra = [w.split("=", 1)[1] for w in words if w.startswith("extra=")]
  stages = [w for w in words if w in STAGES]
  unknown = set(words) - set(STAGES) - {"frozen_trunk", "smoke"} - {f"extra={x}" for x in extra}
  if unknown or len(stages) > 1:
    raise ValueError(f"unknown config argument {arg!r}: one of {STAGES}, frozen_trunk, smoke, "
                     "extra=DIR")
  c = common.base_config()
  c.schedule = "rpn_frcnn"
  c.batch_size = 8
  c.num_steps = 20_000
  c.log_every = 50
  c.lr.rates = (1e-2, 1e-3)
  c.lr.boundaries = (16_000,)
  c.lr.warmup_steps = 500
  c.optimizer.clip_grad_norm = 10.0
  c.checkpoint.every = 1_000
  c.frozen = ("trunk",) if "frozen_trunk" in words else ()
  c.model = ml_collections.ConfigDict(dict(
      trunk_channels=(16, 32, 64, 96), context_channels=(128, 128), rpn_channels=96,
      anchor_sizes=(16.0, 32.0, 64.0, 128.0, 256.0), anchor_ratios=(1.25,), roi_size=7,
      sampling_ratio=2, head_fc=256))
  c.data = ml_collections.ConfigDict(dict(
      root="../shared/data", seed=0, workers=2, max_images=0,
      native_sets=("wider_face:wider_face_subset:train",
                   *[f"wider_face:{x}:{s}" for x in extra for s in ("train", "val")]),
      size=320, face_sides=(12.0, 256.0), scale_range=(0.05, 8.0), min_face=8.0,
      max_faces=64, flip_prob=0.5))
  c.rpn = ml_collections.ConfigDict(dict(
      stage=stages[0] if stages else "rpn", proposals_from="",
      pos_iou=0.7, neg_iou=0.3, anchor_batch=256, box_weight=1.0,
      min_box=8.0, pre_nms=2000, rpn_nms=0.7, post_nms=256,
      fg_iou=0.5, bg_lo=0.0, roi_batch=64, roi_fg_fraction=0.25, head_weight=1.0))
  c.init = ml_collections.ConfigDict(dict(from_workdir="", which="checkpoints"))
  if "smoke" in words:
    c.data.root = "tests/fixtures"
    c.data.native_sets = ("wider_face:wider_face:train",)
    c.data.size = 128
    c.data.workers = 1
    c.batch_size = 2
    c.num_steps = 6
    c.log_every = 2
    c.progress_bar = False
    c.lr.warmup_steps = 0
    c.lr.boundaries = (4,)
    c.checkpoint.every = 6
    c.checkpoint.async_save = False
    c.model.update(dict(trunk_channels=(8, 8, 16, 16), context_channels=(16,), rpn_channels=16,
                        head_fc=32, roi_size=5))
    c.rpn.update(dict(pre_nms=200, post_nms=32, anchor_batch=64, roi_batch=16))
  return c
