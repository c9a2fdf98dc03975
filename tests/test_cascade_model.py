"""FaceCraft cascade: branch shapes, train/inference consistency, stride and field, gates, schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facecraft.models import cascade

TINY = cascade.CascadeConfig(x12_channels=(4, 6, 5), x24_channels=(4, 5, 6), x24_fc=8,
                             x48_channels=(4, 5, 5, 6), x48_fc=10, dropout=0.5)


def random_variables(model, seed=0):
  """Random weights in the init's tree (numpy fill: much faster than compiling the init on CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: cascade.init(model, jax.random.PRNGKey(0)))
  def fill(leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
  return jax.tree_util.tree_map(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
  model = cascade.FaceCraft(TINY)
  return model, random_variables(model)


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_default_branch_shapes_and_param_layout():
  model = cascade.FaceCraft()
  variables = jax.eval_shape(lambda: cascade.init(model, jax.random.PRNGKey(0)))
  out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((3, 48, 48, 3), jnp.float32))
  for name, feature in (("x12", 16), ("x24", 16 + 128), ("x48", 256 + 16 + 128)):
    assert out[name]["logits"].shape == (3, 2)
    assert out[name]["box"].shape == (3, 4)
    assert out[name]["feature"].shape == (3, feature)
  p = variables["params"]
  assert set(p) == {"x12", "x12_head", "x24", "x24_head", "x48", "x48_head"}
  assert p["x12"]["conv3"]["kernel"].shape == (3, 3, 32, 16)  # The paper's 1x16x1x1 layer.
  assert p["x24"]["fc"]["kernel"].shape[-1] == 128 and p["x48"]["fc"]["kernel"].shape[-1] == 256
  assert p["x24_head"]["logits"]["kernel"].shape == (144, 2)
  assert p["x48_head"]["box"]["kernel"].shape == (400, 4)


def test_fuse_layers_and_landmark_head_shapes():
  cfg = cascade.CascadeConfig(x12_channels=(4, 4, 16), x24_channels=(4, 4, 4), x24_fc=8,
                              x48_channels=(4, 4, 4, 4), x48_fc=8, fuse24=12, fuse48=20,
                              landmarks=True)
  model = cascade.FaceCraft(cfg)
  variables = random_variables(model, seed=1)
  out = model.apply(variables, _images((2, 48, 48, 3)))
  assert out["x24"]["feature"].shape == (2, 12) and out["x48"]["feature"].shape == (2, 20)
  assert out["x48"]["landmarks"].shape == (2, 10) and "landmarks" not in out["x24"]
  s3 = model.apply(variables, _images((2, 48, 48, 3)), method=cascade.FaceCraft.stage3)
  assert s3["landmarks"].shape == (2, 10)


def test_avg_pool_matches_float64_block_means():
  x = _images((2, 48, 48, 3), seed=3)
  ref = np.asarray(x, np.float64).reshape(2, 12, 4, 12, 4, 3).mean(axis=(2, 4))
  pooled = cascade.avg_pool(cascade.avg_pool(x, 2), 2)
  np.testing.assert_allclose(np.asarray(pooled), ref, atol=1e-6)
  with pytest.raises(ValueError, match="multiples"):
    cascade.avg_pool(x[:, :47], 2)


def test_stages_equal_training_forward_on_the_same_crops(tiny):
  model, variables = tiny
  crops48 = _images((5, 48, 48, 3), seed=1)
  out = model.apply(variables, crops48)
  crops24 = cascade.avg_pool(crops48, 2)
  crops12 = cascade.avg_pool(crops24, 2)
  s1 = model.apply(variables, crops12, method=cascade.FaceCraft.stage1)
  s2 = model.apply(variables, crops24, method=cascade.FaceCraft.stage2)
  s3 = model.apply(variables, crops48, method=cascade.FaceCraft.stage3)
  assert s1["logits"].shape == (5, 1, 1, 2) and s1["box"].shape == (5, 1, 1, 4)
  for key in ("logits", "box"):
    np.testing.assert_array_equal(np.asarray(s1[key][:, 0, 0]), np.asarray(out["x12"][key]))
    np.testing.assert_array_equal(np.asarray(s2[key]), np.asarray(out["x24"][key]))
    np.testing.assert_array_equal(np.asarray(s3[key]), np.asarray(out["x48"][key]))


def test_stage1_map_size_and_translation_consistency(tiny):
  model, variables = tiny
  image = _images((1, 31, 40, 3), seed=2)  # Odd height: the last row must be dropped, not padded.
  s1 = model.apply(variables, image, method=cascade.FaceCraft.stage1)
  rows, cols = (31 - 12) // 2 + 1, (40 - 12) // 2 + 1
  assert s1["logits"].shape == (1, rows, cols, 2) and s1["box"].shape == (1, rows, cols, 4)
  windows = jnp.stack([image[0, 2 * i:2 * i + 12, 2 * j:2 * j + 12]
                       for i in range(rows) for j in range(cols)])
  per_window = model.apply(variables, windows, method=cascade.FaceCraft.stage1)
  for key in ("logits", "box"):
    np.testing.assert_allclose(np.asarray(per_window[key]).reshape(rows, cols, -1),
                               np.asarray(s1[key][0]), atol=1e-5, rtol=0)


def test_stage1_receptive_field_is_exactly_the_12x12_window(tiny):
  model, variables = tiny
  image = _images((1, 30, 30, 3), seed=4)
  r, c = 13, 16
  bumped = image.at[0, r, c].add(5.0)
  fn = lambda x: model.apply(variables, x, method=cascade.FaceCraft.stage1)["logits"][0]
  changed = np.abs(np.asarray(fn(bumped) - fn(image))).max(-1) > 0
  rows = np.arange(changed.shape[0])[:, None]
  cols = np.arange(changed.shape[1])[None, :]
  inside = (2 * rows <= r) & (r < 2 * rows + 12) & (2 * cols <= c) & (c < 2 * cols + 12)
  # Cells outside the window never change; with random weights nearly all inside do.
  assert not (changed & ~inside).any()
  assert changed[inside].mean() > 0.5


def test_bad_input_shapes_raise(tiny):
  model, variables = tiny
  with pytest.raises(ValueError, match="48x48"):
    model.apply(variables, _images((1, 24, 24, 3)))
  with pytest.raises(ValueError, match="24x24"):
    model.apply(variables, _images((1, 48, 48, 3)), method=cascade.FaceCraft.stage2)
  with pytest.raises(ValueError, match=">= 12"):
    model.apply(variables, _images((1, 11, 30, 3)), method=cascade.FaceCraft.stage1)
  with pytest.raises(ValueError, match="x48_channels"):
    cascade.CascadeConfig(x48_channels=(4, 4, 4))


def test_dropout_acts_on_heads_only(tiny):
  model, variables = tiny
  x = _images((4, 48, 48, 3), seed=5)
  a = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
  b = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
  det = model.apply(variables, x)
  for name in ("x12", "x24", "x48"):
    np.testing.assert_array_equal(np.asarray(a[name]["feature"]), np.asarray(det[name]["feature"]))
    assert not np.allclose(np.asarray(a[name]["logits"]), np.asarray(b[name]["logits"]))


def test_stage_fns_denormalise_boxes(tiny):
  model, variables = tiny
  stats = {"mean": np.array([0.1, -0.2, 0.3, 0.0], np.float32),
           "std": np.array([0.5, 2.0, 1.0, 0.25], np.float32)}
  raw, denorm = cascade.stage_fns(model), cascade.stage_fns(model, stats)
  crops = _images((3, 24, 24, 3), seed=6)
  a, b = raw["stage2"](variables["params"], crops), denorm["stage2"](variables["params"], crops)
  np.testing.assert_allclose(np.asarray(b["box"]),
                             np.asarray(a["box"]) * stats["std"] + stats["mean"], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(a["logits"]), np.asarray(b["logits"]))
  s1 = jax.jit(denorm["stage1"])(variables["params"], _images((2, 20, 26, 3)))
  assert s1["box"].shape == (2, 5, 8, 4)


def test_rcnn_to_corners_by_hand_and_against_geometry():
  # Centre +0.1 w, width x2: a unit window's box becomes (-0.4, 0, 1.6, 1).
  d = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.1, 0.0, np.log(2.0), 0.0]], jnp.float32)
  np.testing.assert_allclose(np.asarray(cascade.rcnn_to_corners(d)),
                             [[0, 0, 0, 0], [-0.4, 0, 0.6, 0]], atol=1e-6)
  from data_pipelines import geometry  # pylint: disable=g-import-not-at-top
  window = np.array([10.0, 20.0, 34.0, 44.0])  # Any 24-pixel window gives the same offsets.
  deltas = np.random.default_rng(7).normal(size=(5, 4)) * 0.3
  corners = geometry.encode_corners(window, geometry.decode_rcnn(window, deltas))
  np.testing.assert_allclose(np.asarray(cascade.rcnn_to_corners(jnp.asarray(deltas, jnp.float32))),
                             corners, atol=1e-5)


def test_engine_stages_signatures(tiny):
  model, variables = tiny
  stats = {"mean": np.zeros(4, np.float32), "std": np.full(4, 0.5, np.float32)}
  stages, raw = cascade.engine_stages(model, stats), cascade.stage_fns(model, stats)
  p = variables["params"]
  level = _images((2, 30, 26, 3), seed=8)
  prob, offsets = stages["stage1"](p, level, jnp.array([[30, 26], [20, 20]]))
  assert prob.shape == (2, 10, 8) and offsets.shape == (2, 10, 8, 4)
  out = raw["stage1"](p, level)
  np.testing.assert_allclose(np.asarray(prob),
                             np.asarray(jax.nn.softmax(out["logits"], -1)[..., 1]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(offsets), np.asarray(cascade.rcnn_to_corners(out["box"])),
                             rtol=1e-6)
  prob3, off3, points = stages["stage3"](p, _images((3, 48, 48, 3)))
  assert prob3.shape == (3,) and off3.shape == (3, 4) and points is None
  assert ((np.asarray(prob3) > 0) & (np.asarray(prob3) < 1)).all()
