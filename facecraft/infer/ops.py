"""Area resizing and batched crop-and-resize from an integral image, in O(output pixels).

"Area" interpolation is adaptive average pooling (torch's interpolate(mode="area"), which the
original MTCNN ports use): output row i of an n -> m resize averages input rows
[floor(i * n / m), ceil((i + 1) * n / m)), for shrinking and enlarging alike. Every output pixel
is a box sum, read from an int32 integral image with four gathers.

Exactness: pixel sums are integers, so they are exact in int32 even past 2**31 in total
(two's-complement wrap-around cancels in the four-corner difference as long as one window sums
to less than 2**31, i.e. covers under 8.4 million pixels). The average is
float32(sum) / float32(rows * cols): torch's CPU kernel divides twice (sum / rows / cols), so a
value may differ from torch's in the last bit or two (tested against that formula). Float inputs
are rounded to integers first (the engine works on 8-bit intensities, as MTCNN was trained on).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _cumsum_rows(x):
  # A sequential scan: one loop kernel, several times faster on CPU than jnp.cumsum's log-depth
  # scan and exact (wrapping) for integers.
  _, y = jax.lax.scan(lambda carry, row: (carry + row, carry + row), jnp.zeros_like(x[0]), x)
  return y


def integral_image(image) -> jax.Array:
  """[H, W, C] uint8 (or float, rounded) -> int32 [H + 1, W + 1, C] with a zero first row/col."""
  if jnp.issubdtype(image.dtype, jnp.floating):
    image = jnp.round(image)
  x = jnp.pad(image.astype(jnp.int32), ((1, 0), (1, 0), (0, 0)))
  if jax.default_backend() != "cpu":  # Accelerators: a parallel scan beats a serial loop.
    return jnp.cumsum(jnp.cumsum(x, axis=0), axis=1)
  x = _cumsum_rows(x)
  return jnp.swapaxes(_cumsum_rows(jnp.swapaxes(x, 0, 1)), 0, 1)


def area_bounds(out_size, in_size, length: int):
  """Window [start, end) of each of `length` outputs of an in_size -> out_size area resize.

  out_size / in_size may be traced scalars; entries at i >= out_size are clamped empty windows.
  """
  i = jnp.arange(length, dtype=jnp.int32)
  return _bounds(i, out_size, in_size)


def _bounds(i, out_size, in_size):
  # Everything is non-negative, so truncating division is floor division (and cheaper).
  out_size = jnp.maximum(jnp.asarray(out_size, jnp.int32), 1)
  in_size = jnp.asarray(in_size, jnp.int32)
  start = jax.lax.div(i * in_size, out_size)
  end = jax.lax.div((i + 1) * in_size + out_size - 1, out_size)
  return jnp.minimum(start, in_size), jnp.minimum(end, in_size)


def _box_sums(integral, y0, y1, x0, x1):
  """Sums over [y0[a], y1[a]) x [x0[b], x1[b]) for every (a, b): [A, B, C] int32."""
  top, bottom = integral[y0], integral[y1]  # [A, W + 1, C]
  return bottom[:, x1] - top[:, x1] - bottom[:, x0] + top[:, x0]


def _average(sums, rows, cols):
  # One division by the exact pixel count: within 1.5 ulp of torch's sum / kh / kw (XLA would
  # fold two divisions anyway).
  count = (jnp.maximum(rows, 1)[:, None] * jnp.maximum(cols, 1)[None, :]).astype(jnp.float32)
  return sums.astype(jnp.float32) / count[..., None]


def area_resize(integral, in_hw, out_hw, canvas_hw: tuple[int, int]):
  """Area-resizes the top-left in_hw part of an image to out_hw, inside a static canvas.

  integral: [H + 1, W + 1, C] from `integral_image`; in_hw, out_hw: (h, w) int scalars, possibly
  traced. Returns float32 [canvas_h, canvas_w, C], zero outside the out_hw region.
  """
  ch, cw = canvas_hw
  ys, ye = area_bounds(out_hw[0], in_hw[0], ch)
  xs, xe = area_bounds(out_hw[1], in_hw[1], cw)
  out = _average(_box_sums(integral, ys, ye, xs, xe), ye - ys, xe - xs)
  inside = ((jnp.arange(ch) < out_hw[0])[:, None] & (jnp.arange(cw) < out_hw[1])[None, :])
  return jnp.where(inside[..., None], out, 0.0)


def s2d_canvas(canvas: tuple[int, int]) -> tuple[int, int]:
  """(H, W) of the 2x2 space-to-depth blocks that `conv3x3_prelu_pool2` needs for a canvas."""
  return (-(-(canvas[0] - 2) // 2) + 1, -(-(canvas[1] - 2) // 2) + 1)


def _axis_tables(in_size, out_sizes, lengths):
  """Area-resize windows along one axis for every level at once: (start, end, inside) [sum]."""
  level = np.repeat(np.arange(len(lengths)), lengths)
  local = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
  out = out_sizes[jnp.asarray(level)]
  start, end = _bounds(jnp.asarray(local), out, in_size)
  return start, end, jnp.asarray(local) < out


def pyramid_resize(integral, in_hw, level_hw, canvases: tuple[tuple[int, int], ...],
                   s2d: bool = False):
  """area_resize of one image to every pyramid level, one gather per level.

  level_hw: int [L, 2] sizes (0 for a level the image lacks); canvases: static (H_k, W_k).
  Window bounds are computed once per row and per column (integer divisions stay off the
  per-pixel path). Returns float32 [H_k, W_k, C] per level, zero outside each level's size; with
  s2d=True, the 2x2 space-to-depth layout [s2d_canvas(canvas)..., 4 C] ((row, column, channel)
  within each block) that `conv3x3_prelu_pool2` takes, produced by the gather itself.
  """
  shapes = [tuple(2 * n for n in s2d_canvas(c)) if s2d else tuple(c) for c in canvases]
  rows = _axis_tables(in_hw[0], level_hw[:, 0], [h for h, _ in shapes])
  cols = _axis_tables(in_hw[1], level_hw[:, 1], [w for _, w in shapes])
  out, r0, c0 = [], 0, 0
  for h, w in shapes:
    ys, ye, yin = (t[r0:r0 + h] for t in rows)
    xs, xe, xin = (t[c0:c0 + w] for t in cols)
    r0, c0 = r0 + h, c0 + w
    if s2d:  # Index arrays shaped [H/2, W/2, 2, 2]: the gather writes blocks directly.
      ys, ye, yin = (t.reshape(h // 2, 1, 2, 1) for t in (ys, ye, yin))
      xs, xe, xin = (t.reshape(1, w // 2, 1, 2) for t in (xs, xe, xin))
    else:
      ys, ye, yin = (t[:, None] for t in (ys, ye, yin))
      xs, xe, xin = (t[None, :] for t in (xs, xe, xin))
    sums = integral[ye, xe] - integral[ys, xe] - integral[ye, xs] + integral[ys, xs]
    count = (jnp.maximum(ye - ys, 1) * jnp.maximum(xe - xs, 1)).astype(jnp.float32)
    level = jnp.where((yin & xin)[..., None], sums.astype(jnp.float32) / count[..., None], 0.0)
    out.append(level.reshape(h // 2, w // 2, -1) if s2d else level)
  return out


def crop_and_resize(integral, image_hw, windows, size: int, mode: str = "clip"):
  """Area-resizes integer pixel windows of one image to size x size.

  windows: int32 [K, 4] (x0, y0, x1, y1), half-open, 0-based, possibly leaving the image.
  mode "clip" (facenet-pytorch): the window is first cut to the image, and only the part inside is
    resized. mode "pad" (the original MATLAB MTCNN): the whole window is resized with zeros for
    the pixels outside the image.
  Empty windows give zeros. Returns float32 [K, size, size, C].
  """
  if mode not in ("clip", "pad"):
    raise ValueError(f"crop mode must be 'clip' or 'pad', got {mode!r}")
  h, w = image_hw[0], image_hw[1]
  x0, y0, x1, y1 = (windows[:, i] for i in range(4))
  if mode == "clip":
    x0, x1 = jnp.clip(x0, 0, w), jnp.clip(x1, 0, w)
    y0, y1 = jnp.clip(y0, 0, h), jnp.clip(y1, 0, h)

  def one(x0, y0, x1, y1):
    ys, ye = area_bounds(size, jnp.maximum(y1 - y0, 0), size)
    xs, xe = area_bounds(size, jnp.maximum(x1 - x0, 0), size)
    rows, cols = ye - ys, xe - xs  # The divisor counts padded pixels too.
    ys, ye = jnp.clip(ys + y0, 0, h), jnp.clip(ye + y0, 0, h)
    xs, xe = jnp.clip(xs + x0, 0, w), jnp.clip(xe + x0, 0, w)
    return _average(_box_sums(integral, ys, ye, xs, xe), rows, cols)

  return jax.vmap(one)(x0, y0, x1, y1)


# ------------------------------------------------------------------ small CNN layers, CPU-friendly


def conv2d(x, params, impl: str = "xla"):
  """VALID stride-1 convolution, NHWC x HWIO (+ bias).

  impl "xla": lax.conv; "im2col": patches concatenated on the channel axis and one matmul, which
  XLA's CPU backend runs several times faster for the few-channel layers of the MTCNN networks;
  "auto": im2col on CPU, xla elsewhere.
  """
  if impl == "auto":
    impl = "im2col" if jax.default_backend() == "cpu" else "xla"
  kernel, bias = params["kernel"], params["bias"]
  kh, kw, cin, cout = kernel.shape
  if impl == "im2col" and (kh > 1 or kw > 1):
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], -1)
    return cols @ kernel.reshape(kh * kw * cin, cout) + bias
  if kh == 1 and kw == 1:
    return x @ kernel.reshape(cin, cout) + bias
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + bias


def max_pool(x, window: int, stride: int, ceil: bool = True):
  """Max pooling over [B, H, W, C] as a max of strided slices (faster than reduce_window on CPU).

  ceil=True is Caffe's / torch ceil_mode rounding: the last window may run past the edge and
  then sees only the pixels inside; ceil=False drops incomplete windows.
  """
  def geometry(n):
    out = (-(-(n - window) // stride) if ceil else (n - window) // stride) + 1
    return out, max((out - 1) * stride + window - n, 0)
  (oh, ph), (ow, pw) = geometry(x.shape[1]), geometry(x.shape[2])
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  out = None
  for i in range(window):
    for j in range(window):
      s = x[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride, :]
      out = s if out is None else jnp.maximum(out, s)
  return out


def _space_to_depth_taps() -> np.ndarray:
  """One-hot [2, 2, 2, 2, 2, 2, 3, 3]: s2d tap (u, v), sub-pixel (p, q), phase (a, b), (di, dj)."""
  taps = np.zeros((2, 2, 2, 2, 2, 2, 3, 3), np.float32)
  for a in range(2):
    for b in range(2):
      for di in range(3):
        for dj in range(3):
          (u, p), (v, q) = divmod(a + di, 2), divmod(b + dj, 2)
          taps[u, v, p, q, a, b, di, dj] = 1.0
  return taps


def conv3x3_prelu_pool2(x, conv, alpha, valid_hw=None, s2d_input: bool = False):
  """PReLU(conv 3x3 VALID) then 2x2/2 ceil-mode max pooling, in one space-to-depth convolution.

  The four conv outputs under each pooling window are computed as four 'phases' of a 2x2
  convolution over the 2x2-space-to-depth input (12 -> 4 * C channels), which XLA's CPU backend
  runs ~3x faster than the plain 3-channel convolution. valid_hw [B, 2]: per image, only conv
  outputs of the top-left (h - 2, w - 2) enter the pooling, exactly as if the image had that size
  (Caffe's ceil-mode windows see only what lies inside). Returns [B, ceil((H-2)/2),
  ceil((W-2)/2), C]; a window with nothing inside gives 0. With s2d_input, x is already
  [B, ho + 1, wo + 1, 4 C] (pyramid_resize(s2d=True)) and valid_hw is required.
  """
  cout = conv["kernel"].shape[-1]
  if s2d_input:
    b, ho, wo, cin = x.shape[0], x.shape[1] - 1, x.shape[2] - 1, x.shape[3] // 4
    h, w = 2 * ho + 2, 2 * wo + 2
    s2d = x
  else:
    b, h, w, cin = x.shape
    ho, wo = -(-(h - 2) // 2), -(-(w - 2) // 2)
    x = jnp.pad(x, ((0, 0), (0, 2 * ho + 2 - h), (0, 2 * wo + 2 - w), (0, 0)))
    s2d = x.reshape(b, ho + 1, 2, wo + 1, 2, cin).transpose(0, 1, 3, 2, 4, 5)
    s2d = s2d.reshape(b, ho + 1, wo + 1, 4 * cin)
  kernel = jnp.einsum("uvpqabde,deco->uvpqcabo", _space_to_depth_taps(), conv["kernel"])
  y = jax.lax.conv_general_dilated(s2d, kernel.reshape(2, 2, 4 * cin, 4 * cout), (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(b, ho, wo, 2, 2, cout) + conv["bias"]
  y = jnp.where(y >= 0, y, alpha * y)
  if valid_hw is None:
    valid_hw = jnp.broadcast_to(jnp.asarray([h, w], jnp.int32), (b, 2))
  rows = 2 * jnp.arange(ho)[:, None] + jnp.arange(2)[None, :]  # Conv output row of each phase.
  cols = 2 * jnp.arange(wo)[:, None] + jnp.arange(2)[None, :]
  rows_ok = rows[None] < valid_hw[:, 0, None, None] - 2  # [B, ho, 2]
  cols_ok = cols[None] < valid_hw[:, 1, None, None] - 2
  ok = rows_ok[:, :, None, :, None] & cols_ok[:, None, :, None, :]
  y = jnp.max(jnp.where(ok[..., None], y, -jnp.inf), axis=(3, 4))
  return jnp.where(jnp.isfinite(y), y, 0.0)
