"""MTCNN's P-Net, R-Net and O-Net (Zhang et al. 2016), defined once, and the original weights.

Each network is one pure function of its parameters, `pnet(params, x)`, `rnet(params, crops)`,
`onet(params, crops)`, written with the CPU-friendly kernels of models.layers; the inference
engine runs these functions and the Flax modules `PNet`, `RNet`, `ONet` (for training) declare
the same parameters and call the same functions, so there is no second copy of the networks.

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

from facecraft.models import layers

# Input scaling of the released weights: (x - 127.5) / 128.
INPUT_MEAN, INPUT_SCALE = 127.5, 0.0078125


def normalize(images_uint8):
  """uint8/float RGB in [0, 255] -> MTCNN input scale."""
  return (jnp.asarray(images_uint8, jnp.float32) - INPUT_MEAN) * INPUT_SCALE


def face_probability(logits):
  """softmax(logits)[..., 1] for two classes, elementwise (the same operations as softmax)."""
  top = jnp.maximum(logits[..., 0], logits[..., 1])
  e0, e1 = jnp.exp(logits[..., 0] - top), jnp.exp(logits[..., 1] - top)
  return e1 / (e0 + e1)


def _prelu(x, p):
  return jnp.where(x >= 0, x, p["alpha"] * x)


def _dense(x, p):
  return x @ p["kernel"] + p["bias"]


def pnet(params, x, valid_hw=None, s2d: bool = False) -> dict:
  """Proposal network: fully convolutional, a 12x12 window per output cell, stride 2.

  valid_hw [B, 2]: each image is valid only in its top-left valid_hw of the canvas x; pixels past
  that are masked out of the first (ceil-mode) pooling, so the last row/column of cells sees
  exactly what P-Net sees on the unpadded image. s2d: x comes in the 2x2 space-to-depth layout of
  infer.ops.pyramid_resize(s2d=True).
  """
  p = params
  y = layers.conv3x3_prelu_pool2(x, p["conv1"], p["prelu1"]["alpha"], valid_hw, s2d_input=s2d)
  y = _prelu(layers.conv2d(y, p["conv2"]), p["prelu2"])
  y = _prelu(layers.conv2d(y, p["conv3"]), p["prelu3"])
  logits = layers.conv2d(y, p["conv4_2"])
  return {"logits": logits, "box": layers.conv2d(y, p["conv4_1"])}


def rnet(params, crops) -> dict:
  """Refinement network on 24x24 crops."""
  p = params
  x = layers.max_pool(_prelu(layers.conv2d(crops, p["conv1"], "auto"), p["prelu1"]), 3, 2)
  x = layers.max_pool(_prelu(layers.conv2d(x, p["conv2"]), p["prelu2"]), 3, 2, ceil=False)
  x = _prelu(layers.conv2d(x, p["conv3"]), p["prelu3"])
  x = _prelu(_dense(layers.flatten_whc(x), p["fc4"]), p["prelu4"])
  logits = _dense(x, p["fc5_2"])
  return {"logits": logits, "box": _dense(x, p["fc5_1"])}


def onet(params, crops) -> dict:
  """Output network on 48x48 crops: score, box offsets and five landmarks (x1..x5, y1..y5)."""
  p = params
  x = layers.max_pool(_prelu(layers.conv2d(crops, p["conv1"], "auto"), p["prelu1"]), 3, 2)
  x = layers.max_pool(_prelu(layers.conv2d(x, p["conv2"]), p["prelu2"]), 3, 2, ceil=False)
  x = layers.max_pool(_prelu(layers.conv2d(x, p["conv3"]), p["prelu3"]), 2, 2)
  x = _prelu(layers.conv2d(x, p["conv4"]), p["prelu4"])
  x = _prelu(_dense(layers.flatten_whc(x), p["fc5"]), p["prelu5"])
  points = _dense(x, p["fc6_2"])
  logits = _dense(x, p["fc6_3"])
  return {"logits": logits, "box": _dense(x, p["fc6_1"]), "landmarks": points}


# Every layer of each network, in the released weights' order (Keras' get_weights order):
# (name, kernel shape) for conv/dense (None: the input's channels), (name, channels) for PReLU.
_LAYERS: dict[str, list[tuple[str, Any]]] = {
    "pnet": [("conv1", (3, 3, None, 10)), ("prelu1", 10), ("conv2", (3, 3, 10, 16)),
             ("prelu2", 16), ("conv3", (3, 3, 16, 32)), ("prelu3", 32),
             ("conv4_1", (1, 1, 32, 4)), ("conv4_2", (1, 1, 32, 2))],
    "rnet": [("conv1", (3, 3, None, 28)), ("prelu1", 28), ("conv2", (3, 3, 28, 48)),
             ("prelu2", 48), ("conv3", (2, 2, 48, 64)), ("prelu3", 64), ("fc4", (576, 128)),
             ("prelu4", 128), ("fc5_1", (128, 4)), ("fc5_2", (128, 2))],
    "onet": [("conv1", (3, 3, None, 32)), ("prelu1", 32), ("conv2", (3, 3, 32, 64)),
             ("prelu2", 64), ("conv3", (3, 3, 64, 64)), ("prelu3", 64), ("conv4", (2, 2, 64, 128)),
             ("prelu4", 128), ("fc5", (1152, 256)), ("prelu5", 256), ("fc6_1", (256, 4)),
             ("fc6_2", (256, 10)), ("fc6_3", (256, 2))],
}
_LAYOUT = {net: [name for name, _ in layers_] for net, layers_ in _LAYERS.items()}


class _Weights(nn.Module):
  """The parameters of one conv/dense layer (HWIO or [in, out] kernel + bias), as nn.Conv/Dense
  declare and initialise them."""

  shape: tuple[int, ...]

  @nn.compact
  def __call__(self):
    return {"kernel": self.param("kernel", nn.initializers.lecun_normal(), self.shape),
            "bias": self.param("bias", nn.initializers.zeros, self.shape[-1:])}


class _Slopes(nn.Module):
  channels: int
  init_slope: float = 0.25

  @nn.compact
  def __call__(self):
    return {"alpha": self.param("alpha", nn.initializers.constant(self.init_slope),
                                (self.channels,), jnp.float32)}


def _declare(net: str, in_channels: int) -> dict:
  params = {}
  for name, shape in _LAYERS[net]:
    if name.startswith("prelu"):
      params[name] = _Slopes(shape, name=name)()
    else:
      params[name] = _Weights(tuple(in_channels if d is None else d for d in shape), name=name)()
  return params


class PNet(nn.Module):
  """Proposal network (trainable): `pnet` over declared parameters."""

  @nn.compact
  def __call__(self, x):
    return pnet(_declare("pnet", x.shape[-1]), x)


class RNet(nn.Module):
  """Refinement network (trainable) on 24x24 crops: `rnet` over declared parameters."""

  @nn.compact
  def __call__(self, x):
    return rnet(_declare("rnet", x.shape[-1]), x)


class ONet(nn.Module):
  """Output network (trainable) on 48x48 crops: `onet` over declared parameters."""

  @nn.compact
  def __call__(self, x):
    return onet(_declare("onet", x.shape[-1]), x)


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
