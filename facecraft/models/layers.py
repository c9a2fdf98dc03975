"""Small building blocks shared by the networks: PReLU and Caffe-style pooling."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


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
