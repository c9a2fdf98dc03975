"""MTCNN's P-Net, R-Net and O-Net (Zhang et al. 2016) as pure Flax modules, and the original weights.

Inputs are RGB float [B, H, W, 3] already normalised as (x - 127.5) / 128 (`normalize`). Each
network returns logits (softmax gives the face probability in channel 1), box offsets in MTCNN's
corner form, and O-Net also ten landmark values (x1..x5, y1..y5) relative to its input window.

`load_original_weights()` reads the weights the authors released (converted to HWIO numpy arrays
in the `mtcnn` package on PyPI, joblib + lz4) without importing that package or TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from facecraft.models.layers import PReLU, flatten_whc, max_pool_ceil


def normalize(images_uint8):
  """uint8/float RGB in [0, 255] -> MTCNN input scale."""
  return (jnp.asarray(images_uint8, jnp.float32) - 127.5) * 0.0078125


def _conv(features: int, kernel: int, name: str):
  return nn.Conv(features, (kernel, kernel), padding="VALID", name=name)


class PNet(nn.Module):
  """Proposal network: fully convolutional, a 12x12 window per output cell, stride 2."""

  @nn.compact
  def __call__(self, x):
    x = PReLU(name="prelu1")(_conv(10, 3, "conv1")(x))
    x = max_pool_ceil(x, 2, 2)
    x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
    x = PReLU(name="prelu3")(_conv(32, 3, "conv3")(x))
    return {"logits": _conv(2, 1, "conv4_2")(x), "box": _conv(4, 1, "conv4_1")(x)}


class RNet(nn.Module):
  """Refinement network on 24x24 crops."""

  @nn.compact
  def __call__(self, x):
    x = max_pool_ceil(PReLU(name="prelu1")(_conv(28, 3, "conv1")(x)), 3, 2)
    x = nn.max_pool(PReLU(name="prelu2")(_conv(48, 3, "conv2")(x)), (3, 3), (2, 2))
    x = PReLU(name="prelu3")(_conv(64, 2, "conv3")(x))
    x = PReLU(name="prelu4")(nn.Dense(128, name="fc4")(flatten_whc(x)))
    return {"logits": nn.Dense(2, name="fc5_2")(x), "box": nn.Dense(4, name="fc5_1")(x)}


class ONet(nn.Module):
  """Output network on 48x48 crops: score, box offsets and five landmarks."""

  @nn.compact
  def __call__(self, x):
    x = max_pool_ceil(PReLU(name="prelu1")(_conv(32, 3, "conv1")(x)), 3, 2)
    x = nn.max_pool(PReLU(name="prelu2")(_conv(64, 3, "conv2")(x)), (3, 3), (2, 2))
    x = max_pool_ceil(PReLU(name="prelu3")(_conv(64, 3, "conv3")(x)), 2, 2)
    x = PReLU(name="prelu4")(_conv(128, 2, "conv4")(x))
    x = PReLU(name="prelu5")(nn.Dense(256, name="fc5")(flatten_whc(x)))
    return {"logits": nn.Dense(2, name="fc6_3")(x), "box": nn.Dense(4, name="fc6_1")(x),
            "landmarks": nn.Dense(10, name="fc6_2")(x)}


# Order of the arrays in the released lists (Keras' get_weights order for each model).
_LAYOUT = {
    "pnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"],
    "rnet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4", "fc5_1",
             "fc5_2"],
    "onet": ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4", "fc5",
             "prelu5", "fc6_1", "fc6_2", "fc6_3"],
}


def weights_dir() -> str:
  spec = importlib.util.find_spec("mtcnn")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the original MTCNN weights ship in the 'mtcnn' package: pip install mtcnn")
  return os.path.join(list(spec.submodule_search_locations)[0], "assets", "weights")


def _to_params(name: str, arrays: list[np.ndarray]) -> dict[str, Any]:
  params, i = {}, 0
  for layer in _LAYOUT[name]:
    if layer.startswith("prelu"):
      params[layer] = {"alpha": np.asarray(arrays[i], np.float32).reshape(-1)}
      i += 1
    else:
      params[layer] = {"kernel": np.asarray(arrays[i], np.float32),
                       "bias": np.asarray(arrays[i + 1], np.float32)}
      i += 2
  if i != len(arrays):
    raise ValueError(f"{name}: expected {i} arrays in the released weights, found {len(arrays)}")
  return {"params": params}


def load_original_weights(directory: str | None = None) -> dict[str, dict[str, Any]]:
  """{"pnet": variables, "rnet": variables, "onet": variables} from the released weights."""
  import joblib  # pylint: disable=g-import-not-at-top  # Only needed for this import path.
  directory = directory or weights_dir()
  out = {}
  for name in _LAYOUT:
    path = os.path.join(directory, f"{name}.lz4")
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing MTCNN weights {path}")
    out[name] = _to_params(name, joblib.load(path))
  return out


NETWORKS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
