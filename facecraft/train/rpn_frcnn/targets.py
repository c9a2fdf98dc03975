"""Training targets of the RPN + Fast R-CNN family (Ren et al.'s rules), static shapes, jittable.

  labels, matched = assign_anchors(anchors, gt, gt_valid, image_hw)   # 1 face, 0 background, -1 ignored
  labels = sample_labels(key, labels, 256, 0.5)                      # a mini-batch of anchors
  roi_labels, roi_matched = assign_rois(rois, roi_valid, gt, gt_valid)
  roi_labels = sample_labels(key, roi_labels, 64, 0.25)
  loss = detection_loss(logits, deltas, labels, anchors, gt[matched])

An anchor is a face (1) when its IoU with some face box is >= pos_iou, or when it is that face's
best anchor (every face gets one, however small, as long as the IoU is positive); background (0)
when its best IoU is < neg_iou; ignored (-1) otherwise, and also when it leaves the image by more
than `border` pixels (Faster R-CNN drops those from training). RoIs are faces at IoU >= fg_iou
and background in [bg_lo, bg_hi) (Fast R-CNN). Sampling keeps at most num * fraction faces and
fills the rest with background, chosen uniformly at random; the others become -1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines import geometry


def _iou(boxes, gt, gt_valid):
  """[N, G] IoU, zero against padded (invalid) face boxes."""
  return jnp.where(gt_valid[None, :], geometry.pairwise_iou(boxes, gt), 0.0)


def assign_anchors(anchors, gt, gt_valid, image_hw=None, pos_iou: float = 0.7,
                   neg_iou: float = 0.3, border: float = 0.0, gt_ignore=None):
  """(labels [A] int32 in {1, 0, -1}, matched [A] int32: the face each anchor regresses to).

  anchors [A, 4]; gt [G, 4] face boxes padded to a static G, gt_valid [G]; image_hw (h, w) of
  the valid image (None: no border rule); gt_ignore [G]: faces too small to learn, whose
  anchors (IoU >= neg_iou) are neither face nor background."""
  if gt_ignore is not None:
    near_ignored = (_iou(anchors, gt, gt_ignore) >= neg_iou).any(axis=1)
  iou = _iou(anchors, gt, gt_valid)
  best = iou.max(axis=1)
  matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
  labels = jnp.where(best >= pos_iou, 1, jnp.where(best < neg_iou, 0, -1))
  # Each face's best anchors (ties included) are faces too: small faces reach no 0.7.
  per_face = iou.max(axis=0)
  is_best = (iou == per_face[None, :]) & (per_face[None, :] > 0) & gt_valid[None, :]
  labels = jnp.where(is_best.any(axis=1), 1, labels)
  if gt_ignore is not None:
    labels = jnp.where(near_ignored & (labels == 0), -1, labels)
  if image_hw is not None:
    h, w = image_hw[0], image_hw[1]
    inside = ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border) &
              (anchors[:, 2] <= w + border) & (anchors[:, 3] <= h + border))
    labels = jnp.where(inside, labels, -1)
  return labels.astype(jnp.int32), matched


def assign_rois(rois, roi_valid, gt, gt_valid, fg_iou: float = 0.5, bg_lo: float = 0.0,
                bg_hi: float = 0.5):
  """(labels [R] in {1, 0, -1}, matched [R]) of proposals for the Fast R-CNN branch."""
  iou = _iou(rois, gt, gt_valid)
  best = iou.max(axis=1)
  labels = jnp.where(best >= fg_iou, 1, jnp.where((best >= bg_lo) & (best < bg_hi), 0, -1))
  labels = jnp.where(roi_valid, labels, -1)
  return labels.astype(jnp.int32), jnp.argmax(iou, axis=1).astype(jnp.int32)


def sample_labels(key, labels, num: int, fraction: float):
  """At most round(num * fraction) faces, the rest of num background, uniformly at random;
  every other entry becomes -1. Static shapes: a random priority ranks each class."""
  k_pos, k_neg = jax.random.split(key)
  max_pos = int(round(num * fraction))

  def keep(mask, k, quota):
    priority = jnp.where(mask, jax.random.uniform(k, mask.shape), -1.0)
    rank = jnp.argsort(jnp.argsort(-priority))  # 0 = highest priority
    return mask & (rank < quota)

  pos = keep(labels == 1, k_pos, max_pos)
  neg = keep(labels == 0, k_neg, num - jnp.minimum(pos.sum(), max_pos))
  return jnp.where(pos, 1, jnp.where(neg, 0, -1)).astype(jnp.int32)


def smooth_l1(x, beta: float = 1.0 / 9):
  """Huber-like loss per element (Faster R-CNN's RPN uses beta = 1/9 in image-free units)."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def detection_loss(logits, deltas, labels, boxes, targets, box_weight: float = 1.0,
                   beta: float = 1.0 / 9):
  """(classification, box) losses of one image's sampled boxes (anchors or RoIs).

  logits [N] (one face logit) or [N, 2] (background, face); deltas [N, 4] R-CNN deltas;
  labels [N] in {1, 0, -1}; boxes [N, 4] the anchors / RoIs; targets [N, 4] their matched face
  boxes. Classification: mean cross-entropy over the sampled (labels >= 0); box: smooth L1 of
  the deltas against encode_rcnn(boxes, targets) over faces, normalised by the sampled count
  (Ren et al.'s normalisation by the mini-batch size)."""
  sampled = (labels >= 0).astype(jnp.float32)
  face = (labels == 1).astype(jnp.float32)
  count = jnp.maximum(sampled.sum(), 1.0)
  if logits.ndim == 1:
    ce = jnp.logaddexp(0.0, logits) - face * logits  # sigmoid cross-entropy
  else:
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), (labels == 1)[:, None].astype(
        jnp.int32), axis=1)[:, 0]
  cls = (ce * sampled).sum() / count
  goal = geometry.encode_rcnn(boxes, targets)
  box = (smooth_l1(deltas - goal, beta).sum(axis=1) * face).sum() / count
  return cls, box_weight * box
