"""Soft threshold-control gates (issue #14): the decision term against float64, the gates'
gradient signs, and a tiny cascade on which the old soft gates collapse and the new ones do not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from facecraft import losses


def _outputs(p12, p24, logits48):
  n = len(p12)
  logit = lambda p: jnp.stack([jnp.zeros(n), jnp.log(p) - jnp.log1p(-p)], -1)
  box = jnp.zeros((n, 4))
  return {"x12": {"logits": logit(jnp.asarray(p12, jnp.float32)), "box": box},
          "x24": {"logits": logit(jnp.asarray(p24, jnp.float32)), "box": box},
          "x48": {"logits": jnp.asarray(logits48, jnp.float32), "box": box}}


def _batch(faces, box_target=None):
  faces = np.asarray(faces, bool)
  n = len(faces)
  return {"cls_target": faces.astype(np.int32), "cls_mask": np.ones(n, bool),
          "box_mask": faces.copy(),
          "box_target": np.zeros((n, 4), np.float32) if box_target is None else box_target}


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_decision_loss_matches_float64(space):
  p12 = np.array([0.05, 0.3, 0.9, 0.12])
  p24 = np.array([0.5, 0.001, 0.2, 0.9])
  logits48 = np.array([[0.0, 1.0], [0.5, -1.0], [0.0, 3.0], [1.0, 0.0]])
  faces = np.array([1, 1, 0, 0], bool)
  gates = losses.Gates("sigmoid", thresholds=(0.1, 0.003), space=space)
  temp = 0.5 if space == "logit" else 0.05
  got = losses.cascade_decision_loss(_outputs(p12, p24, logits48), _batch(faces), gates, temp)
  f = (lambda p: np.log(p) - np.log1p(-p)) if space == "logit" else (lambda p: p)
  sig = lambda z: 1 / (1 + np.exp(-z))
  p48 = np.exp(logits48[:, 1]) / np.exp(logits48).sum(-1)
  q = sig((f(p12) - f(0.1)) / temp) * sig((f(p24) - f(0.003)) / temp) * p48
  ref = np.where(faces, -np.log(q), -np.log1p(-q)).mean()
  assert float(got) == pytest.approx(ref, rel=1e-4)


def _x12_grad(mode, gradient, faces, p12, box_target, decision_weight=1.0):
  """d total / d (x12's face logit) per sample, x12's own loss left out."""
  n = len(p12)
  outs = _outputs(p12, [0.5] * n, np.zeros((n, 2)))
  gates = losses.Gates(mode, space="logit", gradient=gradient, decision_weight=decision_weight)
  config = losses.LossConfig(branch_weights=(0.0, 1.0, 1.0), gate=gates)
  batch = _batch(faces, box_target)

  def total(z12):
    return losses.joint_loss(dict(outs, x12=dict(outs["x12"], logits=z12)), batch, None,
                             config, 1.0)[0]
  return np.asarray(jax.grad(total)(outs["x12"]["logits"]))[:, 1]


@pytest.mark.parametrize("mode", ["sigmoid", "straight_through"])
def test_soft_gate_gradients_have_the_argued_signs(mode):
  # A face just under x12's threshold with a large later (box) loss, a non-face just over it,
  # and a passed face with an exact box (so that straight-through's hard forward has a mean).
  faces = np.array([True, False, True])
  p12 = np.array([0.08, 0.15, 0.3])
  box_target = np.array([[4.0, -4.0, 4.0, -4.0], [0.0] * 4, [0.0] * 4], np.float32)
  old = _x12_grad(mode, "loss", faces, p12, box_target)
  # The gated losses' own gradient pushes the face's x12 score DOWN (descent: -grad < 0): its
  # later loss is above the batch's mean. This is the ablation's collapse.
  assert old[0] > 0
  new = _x12_grad(mode, "decision", faces, p12, box_target)
  assert new[0] < 0 < new[1]  # raise the face's score, lower the non-face's
  # Without the decision term the gated losses no longer reach x12's score at all.
  np.testing.assert_array_equal(_x12_grad(mode, "decision", faces, p12, box_target, 0.0), 0.0)


def test_hard_gate_ignores_the_decision_settings():
  gates = losses.Gates("hard", gradient="decision", decision_weight=5.0)
  assert not gates.scores_decision
  with pytest.raises(ValueError, match="gradient"):
    losses.Gates("sigmoid", gradient="both")
  with pytest.raises(ValueError, match="decision_weight"):
    losses.Gates("sigmoid", decision_weight=-1.0)


# A tiny cascade: three logistic "branches" on 2-d points, 5% faces overlapping the non-faces,
# faces carrying an unlearnable box loss (as real faces carry the box and landmark terms).
_N, _STEPS = 1024, 600


def _toy_problem():
  rng = np.random.default_rng(0)
  faces = rng.random(_N) < 0.05
  x = np.where(faces[:, None], rng.normal([0.5, 0], 1, (_N, 2)),
               rng.normal([-0.5, 0], 1, (_N, 2))).astype(np.float32)
  batch = _batch(faces, (rng.normal(size=(_N, 4)) * 3).astype(np.float32))
  return jnp.asarray(x), batch


def _train_toy(mode, gradient):
  x, batch = _toy_problem()
  gates = losses.Gates(mode, space="logit", gradient=gradient,
                       temperature=(1.0, 0.05, _STEPS, "exponential"))
  config = losses.LossConfig(gate=gates)
  params = {b: {"w": jnp.zeros(2), "c": jnp.zeros(()), "a": jnp.zeros((2, 4))}
            for b in losses.BRANCHES}

  def forward(p):
    return {b: {"logits": jnp.stack([jnp.zeros(_N), x @ q["w"] + q["c"]], -1),
                "box": x @ q["a"]} for b, q in p.items()}

  tx = optax.sgd(0.3, momentum=0.9)

  @jax.jit
  def step(p, opt, i):
    grad_fn = jax.grad(lambda p: losses.joint_loss(forward(p), batch, None, config,
                                                   gates.temperature_at(i))[0])
    updates, opt = tx.update(grad_fn(p), opt, p)
    return optax.apply_updates(p, updates), opt

  opt = tx.init(params)
  for i in range(_STEPS):
    params, opt = step(params, opt, i)
  _, metrics = losses.joint_loss(forward(params), batch, None, config, gates.temperature_at(_STEPS))
  return float(metrics["gate48/pass_pos"])


def test_tiny_cascade_old_soft_gates_reject_every_face_and_decision_gates_keep_them():
  hard = _train_toy("hard", "decision")
  for mode in ("sigmoid", "straight_through"):
    assert _train_toy(mode, "loss") < 0.05, mode            # the collapse
    kept = _train_toy(mode, "decision")
    assert kept > 0.8 and kept > hard + 0.3, (mode, kept, hard)
