"""RPN + Fast R-CNN training steps (FaceCraft §5 and Ren et al.'s four steps), one schedule.

config.rpn.stage picks what one run trains (every run: the same network, data and loop):
  "rpn"    the RPN loss only (trunk + RPN branch): the first step of both recipes
  "frcnn"  the Fast R-CNN loss only, on RoIs proposed by config.rpn.proposals_from (a finished
           run's parameters, frozen): Ren et al.'s steps 2 and 4
  "joint"  the fused loss RPN + Fast R-CNN on one network, RoIs proposed by proposals_from (the
           paper's "RPN test on the training images", here on each augmented window): §5.2
config.frozen: regexes of parameter paths kept fixed ("trunk" for steps 3 and 4).

  joint:      rpn (scratch) -> joint (init and proposals from the rpn run)
  four_step:  rpn (scratch) -> frcnn (scratch, proposals from 1) -> rpn (init 2, trunk frozen)
              -> frcnn (init 3, trunk frozen, proposals from 3)

Losses per image (targets.py): RPN over rpn.anchor_batch sampled anchors (half faces at most),
Fast R-CNN over rpn.roi_batch sampled RoIs (a quarter faces at most; the window's face boxes
are added to the proposals, as Ren et al. do), each cross-entropy + box_weight x smooth L1.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from facecraft.models import rpn
from facecraft.train import ConfigError
from facecraft.train import checkpoint
from facecraft.train import loop
from facecraft.train.rpn_frcnn import data as data_lib
from facecraft.train.rpn_frcnn import targets

CONFIG_SECTIONS = ("model", "data", "rpn", "init")
STAGES = ("rpn", "frcnn", "joint")


def validate_config(config) -> None:
  if config.rpn.stage not in STAGES:
    raise ConfigError("config.rpn.stage", f"must be one of {STAGES}, got {config.rpn.stage!r}")
  if config.rpn.stage != "rpn" and not config.rpn.proposals_from:
    raise ConfigError("config.rpn.proposals_from",
                      f"stage {config.rpn.stage!r} needs the workdir whose RPN proposes RoIs")
  if config.data.size % rpn_config(config).stride:
    raise ConfigError("config.data.size", "must be a multiple of the trunk's stride")


def rpn_config(config) -> rpn.RPNConfig:
  return rpn.RPNConfig.from_dict(config.model.to_dict())


def normalise(images):
  return (images.astype(jnp.float32) - rpn.INPUT_MEAN) / rpn.INPUT_DIVISOR


def trunk_frozen(config, cfg: rpn.RPNConfig) -> bool:
  """Whether config.frozen holds every trunk parameter still (four-step's steps 3 and 4)."""
  names = [f"trunk/{layer}{k + 1}/{p}" for layer, n in (
      ("conv", len(cfg.trunk_channels)), ("context", len(cfg.context_channels)),
      ("lateral", len(cfg.context_channels))) for k in range(n) for p in ("kernel", "bias")]
  return all(any(re.search(f, n) for f in config.frozen) for n in names)


def make_loss(config, model: rpn.RPNFastRCNN, proposal_params=None):
  """loss_fn(params, batch, rng, step) -> (loss, metrics) of config.rpn.stage."""
  r, size = config.rpn, int(config.data.size)
  cfg = model.config
  anchors = jnp.asarray(rpn.anchor_grid((size // cfg.stride, size // cfg.stride), cfg.stride,
                                        cfg.anchor_sizes, cfg.anchor_ratios))
  use_rpn, use_head = r.stage in ("rpn", "joint"), r.stage in ("frcnn", "joint")
  # A frozen trunk gets no update anyway: no gradient through it either (half the step's cost).
  fixed_trunk = trunk_frozen(config, cfg)

  def rpn_losses(logits, deltas, batch, keys):
    def one(logit, delta, gt, valid, ignore, photo, key):
      labels, matched = targets.assign_anchors(anchors, gt, valid, None, r.pos_iou, r.neg_iou,
                                               gt_ignore=ignore)
      # Anchors whose centre lies on the black padding outside the photo are not trained.
      centre = (anchors[:, :2] + anchors[:, 2:]) / 2
      on_photo = ((centre[:, 0] >= photo[0]) & (centre[:, 0] < photo[2]) &
                  (centre[:, 1] >= photo[1]) & (centre[:, 1] < photo[3]))
      labels = jnp.where(on_photo | (labels == 1), labels, -1)
      labels = targets.sample_labels(key, labels, r.anchor_batch, 0.5)
      cls, box = targets.detection_loss(logit, delta, labels, anchors, gt[matched],
                                        r.box_weight)
      return cls, box, (labels == 1).sum()
    return jax.vmap(one)(logits, deltas, batch["boxes"], batch["valid"], batch["ignore"],
                         batch["photo_box"], keys)

  def proposals(images):
    fmap = model.apply({"params": proposal_params}, images, method=model.features)
    logits, deltas = model.apply({"params": proposal_params}, fmap, method=model.rpn)
    hw = jnp.full((images.shape[0], 2), size, jnp.int32)
    boxes, _, valid = jax.vmap(lambda l, d, s: rpn.propose(
        anchors, l, d, s, 0.0, r.min_box, r.pre_nms, r.rpn_nms, r.post_nms))(logits, deltas, hw)
    return jax.lax.stop_gradient(boxes), valid

  def head_losses(params, fmap, images, batch, keys):
    rois, roi_valid = proposals(images)
    rois = jnp.concatenate([rois, batch["boxes"]], axis=1)  # + the faces themselves
    roi_valid = jnp.concatenate([roi_valid, batch["valid"]], axis=1)

    def label(roi, valid, gt, gt_valid, key):
      labels, matched = targets.assign_rois(roi, valid, gt, gt_valid, r.fg_iou, r.bg_lo,
                                            r.fg_iou)
      labels = targets.sample_labels(key, labels, r.roi_batch, r.roi_fg_fraction)
      # Only the sampled RoIs reach the head: RoIAlign's gather (and its scatter-add gradient)
      # on roi_batch instead of post_nms + faces RoIs per image.
      _, keep = jax.lax.top_k((labels >= 0).astype(jnp.float32), min(r.roi_batch, len(roi)))
      return roi[keep], labels[keep], matched[keep]

    rois, labels, matched = jax.vmap(label)(rois, roi_valid, batch["boxes"], batch["valid"],
                                            keys)
    logits, deltas = model.apply({"params": params}, fmap, rois, method=model.head)
    gt = jnp.take_along_axis(batch["boxes"], matched[..., None], axis=1)
    cls, box = jax.vmap(lambda lo, de, la, ro, g: targets.detection_loss(
        lo, de, la, ro, g, r.box_weight))(logits, deltas, labels, rois, gt)
    return cls, box, (labels == 1).sum(axis=1)

  def loss_fn(params, batch, rng, step):
    del step
    images = normalise(batch["image"])
    fmap = model.apply({"params": params}, images, method=model.features)
    if fixed_trunk:
      fmap = jax.lax.stop_gradient(fmap)
    b = images.shape[0]
    k_rpn, k_head = jax.random.split(rng)
    total, metrics = 0.0, {}
    if use_rpn:
      logits, deltas = model.apply({"params": params}, fmap, method=model.rpn)
      cls, box, faces = rpn_losses(logits, deltas, batch, jax.random.split(k_rpn, b))
      total = total + cls.mean() + box.mean()
      metrics.update({"rpn_cls": cls.mean(), "rpn_box": box.mean(),
                      "rpn_faces_per_image": faces.mean()})
    if use_head:
      cls, box, faces = head_losses(params, fmap, images, batch, jax.random.split(k_head, b))
      total = total + r.head_weight * (cls.mean() + box.mean())
      metrics.update({"head_cls": cls.mean(), "head_box": box.mean(),
                      "head_faces_per_image": faces.mean()})
    return total, metrics

  return loss_fn


def run(config, workdir: str, hooks=None) -> loop.TrainResult:
  del hooks  # detection evaluation of this family comes through experiments (the engine)
  validate_config(config)
  model = rpn.RPNFastRCNN(rpn_config(config))
  proposal_params = None
  if config.rpn.stage != "rpn":
    proposal_params, _, _ = checkpoint.load_params(config.rpn.proposals_from)
    proposal_params = jax.tree.map(jnp.asarray, proposal_params)
  records = data_lib.load_records(config.data)
  size = int(config.data.size)

  start = None  # loaded here, not in init_fn: a resume traces init_fn under eval_shape
  if config.init.get("from_workdir"):
    start, _, _ = checkpoint.load_params(config.init.from_workdir,
                                         config.init.get("which", "checkpoints"))
    start = jax.tree.map(jnp.asarray, start)

  def init_fn(rng):
    if start is not None:
      return start
    return model.init(rng, jnp.zeros((1, size, size, 3)), jnp.zeros((1, 1, 4)))["params"]

  return loop.train(config, workdir, init_fn, make_loss(config, model, proposal_params),
                    lambda: data_lib.scene_batches(config.data, config.batch_size, records,
                                                   int(config.data.workers)),
                    jit_init=not config.init.get("from_workdir"))


# Inference defaults of an exported bundle (facecraft.infer.anchor); the operating point is
# then chosen on the selection set (experiments/operating_point.py and the model card).
INFERENCE = {"thresholds": (0.05, 0.5), "min_face_size": 8.0, "box_convention": "wider",
             "input_mean": rpn.INPUT_MEAN, "input_scale": 1.0 / rpn.INPUT_DIVISOR,
             "pre_nms": 2000, "post_nms": 300, "rpn_nms": 0.7, "final_nms": 0.3,
             "max_detections": 300}


def export(config, workdir: str, path: str, which: str = "checkpoints",
           inference: dict | None = None) -> str:
  """Writes a finished run as an rpn_frcnn bundle (Detector.from_pretrained(path))."""
  from facecraft.models import pretrained  # pylint: disable=g-import-not-at-top
  params, _, step = checkpoint.load_params(workdir, which)
  meta = {"source": {"workdir": workdir, "which": which, "step": int(step),
                     "schedule": config.schedule, "stage": config.rpn.stage,
                     "frozen": list(config.frozen), "data": config.data.to_dict(),
                     "rpn": config.rpn.to_dict(), "batch_size": int(config.batch_size),
                     "num_steps": int(config.num_steps)}}
  return pretrained.save_bundle(path, "rpn_frcnn", {"params": jax.tree.map(np.asarray, params)},
                                {**INFERENCE, **(inference or {})},
                                dataclasses.asdict(rpn_config(config)), meta)
