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
