"""Small building blocks shared by the networks: PReLU, Caffe-style pooling, and CPU-friendly
convolution / pooling kernels (the MTCNN networks run on these in training and in the engine)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel (last axis), as in Caffe and Keras' shared axes."""

  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                       jnp.float32)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def max_pool_ceil(x, window: int, stride: int):
  """Max pooling with Caffe's ceil rounding: windows that run past the end see -inf.

  Equals TF/Keras 'same' pooling and torch ceil_mode=True for the MTCNN shapes, where the
  extra padding only ever falls on the bottom/right edge.
  """
  def pad(n):
    out = -(-(n - window) // stride) + 1  # ceil((n - window) / stride) + 1
    return (0, max((out - 1) * stride + window - n, 0))
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), pad(x.shape[1]), pad(x.shape[2]), (0, 0)))


def flatten_whc(x):
  """Flattens [B, H, W, C] in (W, H, C) order: Caffe's blobs, transposed, as the MTCNN weights expect."""
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


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
