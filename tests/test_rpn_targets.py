"""facecraft.train.rpn_frcnn.targets: Ren et al.'s assignment, sampling and losses by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from facecraft.train.rpn_frcnn import targets

GT = jnp.asarray([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 54.0, 54.0], [0.0, 0.0, 0.0, 0.0]])
GT_VALID = jnp.asarray([True, True, False])


def test_assign_anchors_by_hand():
  anchors = jnp.asarray([
      [0.0, 0.0, 10.0, 10.0],    # IoU 1 with face 0
      [0.0, 0.0, 10.0, 20.0],    # IoU 0.5 with face 0: between the thresholds, ignored
      [0.0, 0.0, 10.0, 40.0],    # IoU 0.25: background
      [48.0, 48.0, 58.0, 58.0],  # IoU 0.16 with the small face 1, but its best anchor: face
      [100.0, 100.0, 110.0, 110.0],  # no overlap: background
      [-30.0, 0.0, 5.0, 10.0],   # leaves the image: ignored under the border rule
  ])
  labels, matched = targets.assign_anchors(anchors, GT, GT_VALID)
  np.testing.assert_array_equal(labels, [1, -1, 0, 1, 0, 0])
  assert matched[0] == 0 and matched[3] == 1
  labels, _ = targets.assign_anchors(anchors, GT, GT_VALID, image_hw=(120, 120))
  np.testing.assert_array_equal(labels, [1, -1, 0, 1, 0, -1])
  # A padded face box (all zeros, invalid) never makes an anchor a face.
  labels, _ = targets.assign_anchors(anchors[4:5], GT, jnp.asarray([False, False, False]))
  np.testing.assert_array_equal(labels, [0])
  # An ignored face: background anchors on it become -1; faces elsewhere stay as they were.
  ignored = jnp.asarray([False, False, True])
  gt = GT.at[2].set(jnp.asarray([100.0, 100.0, 108.0, 108.0]))
  labels, _ = targets.assign_anchors(anchors, gt, GT_VALID, gt_ignore=ignored)
  np.testing.assert_array_equal(labels, [1, -1, 0, 1, -1, 0])


def test_assign_rois_by_hand():
  rois = jnp.asarray([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 25.0], [200.0, 0, 210, 10],
                      [0.0, 0.0, 10.0, 10.0]])
  labels, matched = targets.assign_rois(rois, jnp.asarray([True, True, True, False]), GT,
                                        GT_VALID, bg_lo=0.1)
  # IoU 1 -> face; IoU 0.4 -> background in [0.1, 0.5); IoU 0 -> below bg_lo: ignored; invalid.
  np.testing.assert_array_equal(labels, [1, 0, -1, -1])
  assert matched[0] == 0


def test_sample_labels_keeps_the_quotas_and_only_relabels_downwards():
  labels = jnp.asarray([1] * 30 + [0] * 100 + [-1] * 20)
  for seed in range(5):
    s = np.asarray(targets.sample_labels(jax.random.PRNGKey(seed), labels, 64, 0.25))
    assert (s == 1).sum() == 16 and (s == 0).sum() == 48
    assert np.all(s[np.asarray(labels) == -1] == -1)
    assert np.all((s == 1) <= (np.asarray(labels) == 1))
  # Few faces: the rest of the batch is background.
  few = jnp.asarray([1] * 3 + [0] * 100)
  s = np.asarray(targets.sample_labels(jax.random.PRNGKey(0), few, 64, 0.5))
  assert (s == 1).sum() == 3 and (s == 0).sum() == 61
  # Different keys pick different background.
  a = targets.sample_labels(jax.random.PRNGKey(1), labels, 64, 0.25)
  b = targets.sample_labels(jax.random.PRNGKey(2), labels, 64, 0.25)
  assert not np.array_equal(a, b)


def test_detection_loss_by_hand():
  boxes = jnp.asarray([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 9.0, 9.0]])
  tgt = jnp.asarray([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 1.0, 1.0]])
  labels = jnp.asarray([1, 0, -1])
  logits = jnp.asarray([2.0, -1.0, 5.0])
  deltas = jnp.asarray([[0.5, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
  cls, box = targets.detection_loss(logits, deltas, labels, boxes, tgt, beta=1.0)
  want_cls = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2
  np.testing.assert_allclose(cls, want_cls, rtol=1e-6)
  np.testing.assert_allclose(box, 0.5 * 0.5 ** 2 / 2, rtol=1e-6)  # only the face's dx error
  # Two-class logits: softmax cross-entropy, same normalisation.
  two = jnp.stack([jnp.zeros(3), logits], axis=1)
  cls2, _ = targets.detection_loss(two, deltas, labels, boxes, tgt, beta=1.0)
  np.testing.assert_allclose(cls2, want_cls, rtol=1e-6)
  # Nothing sampled: zero, not NaN.
  cls0, box0 = targets.detection_loss(logits, deltas, -jnp.ones(3, jnp.int32), boxes, tgt)
  assert float(cls0) == 0.0 and float(box0) == 0.0


def test_targets_jit():
  anchors = jnp.asarray(np.random.default_rng(0).uniform(0, 60, (40, 2)).repeat(2, 1) +
                        np.array([0, 0, 12, 15]))
  fn = jax.jit(lambda a, g, v: targets.assign_anchors(a, g, v, (64, 64), 0.5, 0.3))
  labels, matched = fn(anchors, GT, GT_VALID)
  assert labels.shape == (40,) and matched.shape == (40,)
