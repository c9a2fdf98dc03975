"""Losses against float64 numpy references; masks, OHEM, gated joint loss and its gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facecraft import losses
from facecraft.models import cascade

# Kinds: POSITIVE 1, NEGATIVE 0, PART -1, LANDMARK -2 (data_pipelines.records).
KINDS = np.array([1, 0, 0, -1, 1, -2, 0, -1])


def _batch(seed=0, kinds=KINDS):
  """A loader-like batch: masks follow the kinds exactly as loader.encode_crop sets them."""
  rng = np.random.default_rng(seed)
  n = len(kinds)
  return {
      "cls_target": (kinds == 1).astype(np.int32),
      "cls_mask": np.isin(kinds, (0, 1)), "box_mask": np.isin(kinds, (1, -1)),
      "box_target": rng.normal(size=(n, 4)).astype(np.float32),
      "landmark_target": rng.uniform(size=(n, 10)).astype(np.float32),
      "landmark_mask": kinds == -2,
      "landmark_point_mask": np.tile([True, True, False, True, True], (n, 1)),
  }


def _ce64(logits, labels):
  z = np.asarray(logits, np.float64)
  lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
  return lse - z[np.arange(len(labels)), labels]


def _sl1_64(x, beta):
  ax = np.abs(x)
  return np.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def test_softmax_cross_entropy_matches_float64():
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(20, 2)) * 10).astype(np.float32)
  labels = rng.integers(0, 2, 20)
  got = losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(np.asarray(got), _ce64(logits, labels), rtol=1e-5, atol=1e-6)
  # By hand: equal logits give log 2.
  assert float(losses.softmax_cross_entropy(jnp.zeros((1, 2)), jnp.array([1]))[0]) == \
      pytest.approx(np.log(2), rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.5, 1 / 9])
def test_smooth_l1_both_sides_of_beta(beta):
  x = np.array([0.0, 0.05, -0.1, 0.3, -0.6, 2.0, -3.5], np.float32)
  got = np.asarray(losses.smooth_l1(jnp.asarray(x), beta))
  np.testing.assert_allclose(got, _sl1_64(x.astype(np.float64), beta), rtol=1e-6, atol=1e-7)
  # By hand for β = 1: 0.5·0.3² inside, 2 - 0.5 outside.
  if beta == 1.0:
    assert got[3] == pytest.approx(0.045) and got[5] == pytest.approx(1.5)
  # Continuous at |x| = β.
  eps = 1e-4
  lo, hi = losses.smooth_l1(jnp.array([beta - eps, beta + eps]), beta)
  assert abs(float(hi) - float(lo)) < 3 * eps


def test_regression_stats_and_normalised_box_loss():
  batch = _batch(2)
  t, m = batch["box_target"] * np.array([0.1, 0.2, 0.3, 0.4]) + 0.5, batch["box_mask"]
  stats = losses.regression_stats(t, m)
  ref = t[m].astype(np.float64)
  np.testing.assert_allclose(stats.mean, ref.mean(0), rtol=1e-6)
  np.testing.assert_allclose(stats.std, ref.std(0), rtol=1e-6)
  pred = np.random.default_rng(3).normal(size=t.shape).astype(np.float32)
  got = losses.box_loss(jnp.asarray(pred), jnp.asarray(t), stats, beta=1.0)
  norm = (t.astype(np.float64) - ref.mean(0)) / ref.std(0)
  np.testing.assert_allclose(np.asarray(got), _sl1_64(pred - norm, 1.0).sum(-1), rtol=1e-5)
  # Normalised targets have zero mean, unit variance over the masked rows.
  z = np.asarray(stats.normalize(jnp.asarray(t)))[m]
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stats.denormalize(stats.normalize(t))), t, atol=1e-6)


def test_regression_stats_edge_cases_and_round_trip():
  with pytest.raises(ValueError, match="box_mask all False"):
    losses.regression_stats(np.zeros((3, 4)), np.zeros(3, bool))
  one = losses.regression_stats(np.ones((2, 4)), np.array([True, False]))
  np.testing.assert_array_equal(one.std, 1.0)  # Zero spread: std falls back to 1.
  stats = losses.regression_stats(_batch(4)["box_target"], _batch(4)["box_mask"])
  back = losses.RegressionStats.from_dict(stats.to_dict())
  np.testing.assert_array_equal(back.mean, stats.mean)
  np.testing.assert_array_equal(back.std, stats.std)
  assert len(jax.tree_util.tree_leaves(stats)) == 2  # A pytree: saves with the params.
  with pytest.raises(ValueError, match="bad regression stats"):
    losses.RegressionStats.from_dict({"mean": np.zeros(4), "std": np.zeros(4)})


def _outputs(seed, n, landmarks=False):
  rng = np.random.default_rng(seed)
  out = {"logits": jnp.asarray(rng.normal(size=(n, 2)) * 2, jnp.float32),
         "box": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)}
  if landmarks:
    out["landmarks"] = jnp.asarray(rng.uniform(size=(n, 10)), jnp.float32)
  return out


def test_branch_loss_masks_by_sample_kind():
  batch, out = _batch(5), _outputs(6, len(KINDS), landmarks=True)
  config = losses.LossConfig(box_weight=0.5, landmark_weight=2.0, beta=1.0)
  loss, metrics = losses.branch_loss(out, batch, None, config)
  cls, box, lmk = batch["cls_mask"], batch["box_mask"], batch["landmark_mask"]
  ce = _ce64(out["logits"], batch["cls_target"])[cls].mean()
  sl1 = _sl1_64(np.asarray(out["box"], np.float64) - batch["box_target"], 1.0).sum(-1)[box].mean()
  pm = np.repeat(batch["landmark_point_mask"], 2, axis=-1)
  err = (np.asarray(out["landmarks"], np.float64) - batch["landmark_target"]) ** 2
  lm = ((err * pm).sum(-1) / pm.sum(-1))[lmk].mean()
  assert float(metrics["cls"]) == pytest.approx(ce, rel=1e-5)
  assert float(metrics["box"]) == pytest.approx(sl1, rel=1e-5)
  assert float(metrics["landmarks"]) == pytest.approx(lm, rel=1e-5)
  assert float(loss) == pytest.approx(ce + 0.5 * sl1 + 2.0 * lm, rel=1e-5)
  acc = (np.argmax(np.asarray(out["logits"]), -1) == batch["cls_target"])[cls].mean()
  assert float(metrics["accuracy"]) == pytest.approx(acc)
  # Targets of samples outside a term's mask do not matter.
  other = dict(batch, box_target=np.where(box[:, None], batch["box_target"], 99.0),
               cls_target=np.where(cls, batch["cls_target"], 1 - batch["cls_target"]),
               landmark_target=np.where(lmk[:, None], batch["landmark_target"], -5.0))
  assert float(losses.branch_loss(out, other, None, config)[0]) == pytest.approx(float(loss))


def test_ohem_keeps_exactly_the_hardest_70_percent():
  rng = np.random.default_rng(7)
  values = rng.permutation(13).astype(np.float32) + 0.5
  valid = np.ones(13, bool)
  valid[[2, 5, 11]] = False  # 10 valid -> keep 7.
  keep = np.asarray(losses.ohem_mask(jnp.asarray(values), jnp.asarray(valid), 0.7))
  hardest = np.argsort(-np.where(valid, values, -np.inf))[:7]
  assert set(np.flatnonzero(keep)) == set(hardest)
  assert not keep[~valid].any()
  # One valid sample is still kept (floor would give 0).
  assert np.asarray(losses.ohem_mask(jnp.ones(4), jnp.array([0, 1, 0, 0], bool), 0.7)).sum() == 1
  # In the branch loss: the classification term is the mean of the top 70% CE values.
  kinds = np.array([0] * 7 + [1] * 3)
  batch, out = _batch(8, kinds), _outputs(9, 10)
  _, m = losses.branch_loss(out, batch, None, losses.LossConfig(ohem_ratio=0.7))
  ce = np.sort(_ce64(out["logits"], batch["cls_target"]))[::-1]
  assert float(m["cls"]) == pytest.approx(ce[:7].mean(), rel=1e-5)


def _cascade_outputs(p12, p24, seed=0):
  """Training outputs with chosen face probabilities for x12 and x24."""
  n = len(p12)
  logit = lambda p: jnp.stack([jnp.zeros(n), jnp.log(p) - jnp.log1p(-p)], -1)
  outs = {name: _outputs(seed + i, n) for i, name in enumerate(("x12", "x24", "x48"))}
  outs["x12"]["logits"] = logit(jnp.asarray(p12, jnp.float32))
  outs["x24"]["logits"] = logit(jnp.asarray(p24, jnp.float32))
  return outs


def test_joint_loss_gated_terms_equal_greedy_losses_on_passed_samples():
  kinds = np.array([1, 0, 0, -1, 1, 0, 0, 1])
  p12 = np.array([0.9, 0.05, 0.5, 0.3, 0.2, 0.11, 0.02, 0.6])
  p24 = np.array([0.5, 0.9, 0.001, 0.2, 0.002, 0.5, 0.9, 0.1])
  batch, outs = _batch(10, kinds), _cascade_outputs(p12, p24)
  stats = losses.regression_stats(batch["box_target"], batch["box_mask"])
  config = losses.LossConfig(branch_weights=(1.0, 0.5, 2.0))
  total, m = losses.joint_loss(outs, batch, stats, config)
  pass24 = p12 > 0.1
  pass48 = pass24 & (p24 > 0.003)
  sub = lambda d, keep: {k: v[keep] for k, v in d.items()}
  l12 = losses.branch_loss(outs["x12"], batch, stats, config)[0]
  l24 = losses.branch_loss(sub(outs["x24"], pass24), sub(batch, pass24), stats, config)[0]
  l48 = losses.branch_loss(sub(outs["x48"], pass48), sub(batch, pass48), stats, config)[0]
  assert float(m["x24/loss"]) == pytest.approx(float(l24), rel=1e-5)
  assert float(m["x48/loss"]) == pytest.approx(float(l48), rel=1e-5)
  assert float(total) == pytest.approx(float(l12 + 0.5 * l24 + 2.0 * l48), rel=1e-5)
  cls = batch["cls_mask"]
  assert float(m["gate24/pass"]) == pytest.approx(pass24[cls].mean())
  assert float(m["gate48/pass"]) == pytest.approx(pass48[cls].mean())
  assert float(m["gate48/pass_pos"]) == pytest.approx(pass48[kinds == 1].mean())
  assert float(m["gate24/pass_neg"]) == pytest.approx(pass24[kinds == 0].mean())


def test_first_branch_keeps_mined_samples_out_of_earlier_branches():
  kinds = np.array([1, 0, 0, -1, 1, 0, 0, 1])
  first = np.array([0, 1, 1, 0, 0, 2, 0, 0], np.int32)  # mined negatives: 1, 2, 5
  p12 = np.array([0.9, 0.5, 0.5, 0.3, 0.2, 0.6, 0.02, 0.6])
  p24 = np.array([0.5, 0.9, 0.001, 0.2, 0.002, 0.5, 0.9, 0.1])
  batch, outs = _batch(12, kinds), _cascade_outputs(p12, p24)
  stats = losses.regression_stats(batch["box_target"], batch["box_mask"])
  config = losses.LossConfig()
  _, m = losses.joint_loss(outs, dict(batch, first_branch=first), stats, config)
  sub = lambda d, keep: {k: v[keep] for k, v in d.items()}
  keep12 = first <= 0
  keep24 = (first <= 1) & (p12 > 0.1)
  keep48 = (first <= 2) & (p12 > 0.1) & (p24 > 0.003)
  for name, keep in (("x12", keep12), ("x24", keep24), ("x48", keep48)):
    want = losses.branch_loss(sub(outs[name], keep), sub(batch, keep), stats, config)[0]
    assert float(m[f"{name}/loss"]) == pytest.approx(float(want), rel=1e-5), name
  # All zeros is the same as no routing at all.
  plain = losses.joint_loss(outs, batch, stats, config)[0]
  zero = losses.joint_loss(outs, dict(batch, first_branch=np.zeros(8, np.int32)), stats,
                           config)[0]
  assert float(zero) == pytest.approx(float(plain), rel=1e-6)


def test_joint_loss_gradient_reaches_x12_scores_only_through_soft_gates():
  p12 = np.array([0.05, 0.3, 0.12, 0.08])  # Samples 0 and 3 are gated out of x24 in hard mode.
  batch, outs = _batch(11, np.array([0, 1, 0, 1])), _cascade_outputs(p12, [0.5] * 4)

  def grad_x12_logits(mode):
    config = losses.LossConfig(branch_weights=(0.0, 1.0, 1.0), gate=losses.Gates(mode))
    f = lambda l12: losses.joint_loss(dict(outs, x12=dict(outs["x12"], logits=l12)), batch,
                                      None, config, temperature=0.1)[0]
    return np.asarray(jax.grad(f)(outs["x12"]["logits"]))

  np.testing.assert_array_equal(grad_x12_logits("hard"), 0)
  for mode in ("sigmoid", "straight_through"):
    g = grad_x12_logits(mode)
    assert np.abs(g[0]).sum() > 1e-4 and np.abs(g[3]).sum() > 1e-4, (mode, g)


def test_joint_loss_gradient_wrt_x12_head_params():
  """Through the real model: x12's head feeds nothing but the x12 outputs and the gates."""
  cfg = cascade.CascadeConfig(x12_channels=(4, 4, 4), x24_channels=(4, 4, 4), x24_fc=6,
                              x48_channels=(4, 4, 4, 4), x48_fc=6, dropout=0.0)
  model = cascade.FaceCraft(cfg)
  rng = np.random.default_rng(12)
  shapes = jax.eval_shape(lambda: cascade.init(model, jax.random.PRNGKey(0)))
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, s.dtype), shapes)["params"]
  images = jnp.asarray(rng.normal(size=(6, 48, 48, 3)), jnp.float32)
  # Shift x12's face logit so that the median score sits at the 0.1 threshold: half the samples
  # have their x24 losses gated out.
  logits = model.apply({"params": params}, images)["x12"]["logits"]
  margin = np.asarray(logits[:, 1] - logits[:, 0] - params["x12_head"]["logits"]["bias"][1]
                      + params["x12_head"]["logits"]["bias"][0])
  params["x12_head"]["logits"]["bias"] = jnp.array([0.0, np.log(0.1 / 0.9) - np.median(margin)])
  batch = _batch(13, np.array([0, 1, 0, 1, -1, 0]))

  def grads(mode):
    config = losses.LossConfig(branch_weights=(0.0, 1.0, 1.0), gate=losses.Gates(mode))
    def f(p):
      return losses.joint_loss(model.apply({"params": p}, images), batch, None, config, 0.05)[0]
    return jax.jit(jax.grad(f))(params)

  hard = grads("hard")
  probs = cascade.face_probability(model.apply({"params": params}, images)["x12"]["logits"])
  assert 0 < int((probs > 0.1).sum()) < 6  # Some gated, some passed.
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(hard["x12_head"]))
  # x12's trunk still learns from x24 through the concatenated feature, even in hard mode.
  assert any(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree_util.tree_leaves(hard["x12"]))
  soft = grads("sigmoid")
  assert np.abs(np.asarray(soft["x12_head"]["logits"]["kernel"])).sum() > 1e-6


def test_loss_config_validation():
  with pytest.raises(ValueError, match="gate mode"):
    losses.Gates("soft").pair()
  with pytest.raises(ValueError, match="ohem_ratio"):
    losses.LossConfig(ohem_ratio=1.5)


# ------------------------------------------------------------------------- gates and temperature


SCORES = np.array([0.0, 0.05, 0.1, 0.1001, 0.5, 0.99], np.float32)


def test_hard_gate_is_strictly_greater_and_has_no_gradient():
  g = losses.threshold_gate(SCORES, 0.1, "hard")
  np.testing.assert_array_equal(np.asarray(g), [0, 0, 0, 1, 1, 1])
  grad = jax.grad(lambda s: losses.threshold_gate(s, 0.1, "hard").sum())(jnp.asarray(SCORES))
  np.testing.assert_array_equal(np.asarray(grad), 0)


def test_sigmoid_gate_by_hand():
  t, temp = 0.1, 0.05
  s64 = SCORES.astype(np.float64)
  ref = 1 / (1 + np.exp(-(s64 - t) / temp))
  np.testing.assert_allclose(np.asarray(losses.threshold_gate(SCORES, t, "sigmoid", temp)), ref,
                             rtol=1e-5)
  logit = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(p, 1e-7, 1 - 1e-7))
  ref_logit = 1 / (1 + np.exp(-(logit(s64) - logit(0.003)) / 2.0))
  got = losses.threshold_gate(SCORES, 0.003, "sigmoid", 2.0, space="logit")
  np.testing.assert_allclose(np.asarray(got), ref_logit, rtol=1e-4)


def test_straight_through_forward_is_hard_and_gradient_is_sigmoid():
  s = jnp.asarray(SCORES)
  st = losses.threshold_gate(s, 0.1, "straight_through", 0.05)
  np.testing.assert_array_equal(np.asarray(st), np.asarray(losses.threshold_gate(s, 0.1, "hard")))
  weights = jnp.arange(1.0, 7.0)  # A non-uniform cotangent checks the per-element gradient.
  g_st = jax.grad(lambda x: (weights * losses.threshold_gate(x, 0.1, "straight_through",
                                                             0.05)).sum())(s)
  g_sig = jax.grad(lambda x: (weights * losses.threshold_gate(x, 0.1, "sigmoid", 0.05)).sum())(s)
  np.testing.assert_array_equal(np.asarray(g_st), np.asarray(g_sig))
  sig = 1 / (1 + np.exp(-(SCORES.astype(np.float64) - 0.1) / 0.05))
  np.testing.assert_allclose(np.asarray(g_sig), np.arange(1, 7) * sig * (1 - sig) / 0.05, atol=1e-5,
                             rtol=1e-4)


def test_cascade_gates_chain_x12_and_x24():
  logits12 = jnp.log(jnp.array([[0.95, 0.05], [0.8, 0.2], [0.5, 0.5]]))  # p12 = .05, .2, .5
  logits24 = jnp.log(jnp.array([[0.5, 0.5], [0.999, 0.001], [0.99, 0.01]]))  # p24 = .5, .001, .01
  outputs = {"x12": {"logits": logits12}, "x24": {"logits": logits24}}
  g24, g48 = losses.cascade_gates(outputs, losses.ThresholdGate(0.1),
                                  losses.ThresholdGate(0.003))
  np.testing.assert_array_equal(np.asarray(g24), [0, 1, 1])
  np.testing.assert_array_equal(np.asarray(g48), [0, 0, 1])  # Sample 0 passes x24 but not x12.
  with pytest.raises(ValueError, match="gate mode"):
    losses.ThresholdGate(0.1, mode="soft")


def test_temperature_schedule():
  exp = lambda step: float(losses.temperature_schedule(step, 1.0, 0.01, 100))
  lin = lambda step: float(losses.temperature_schedule(step, 1.0, 0.2, 100, kind="linear"))
  assert exp(0) == pytest.approx(1.0) and exp(50) == pytest.approx(0.1, rel=1e-5)
  assert exp(100) == pytest.approx(0.01, rel=1e-5) and exp(1000) == pytest.approx(0.01, rel=1e-5)
  assert lin(25) == pytest.approx(0.8) and lin(500) == pytest.approx(0.2)
  traced = jax.jit(lambda s: losses.temperature_schedule(s, 1.0, 0.01, 100))(jnp.int32(50))
  assert float(traced) == pytest.approx(0.1, rel=1e-5)
  with pytest.raises(ValueError, match="kind"):
    losses.temperature_schedule(0, 1.0, 0.1, 10, kind="cosine")
