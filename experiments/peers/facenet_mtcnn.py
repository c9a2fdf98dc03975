"""facenet-pytorch 2.6.0's MTCNN as a peer and as the parity oracle (reference environment only).

Needs torch (CPU) and `pip install --no-deps facenet-pytorch==2.6.0`; torchvision is replaced by
experiments/peers/torchvision_shim.py. FaceCraft itself never imports torch.

Coordinate conventions of facenet-pytorch (read from facenet_pytorch/models/utils/detect_face.py):
  * Boxes are MATLAB-style 1-BASED INCLUSIVE pixel indices, inherited from the original MTCNN
    code: generateBoundingBox gives q1 = floor((2*i + 1) / scale) (the 1-based first pixel of the
    12x12 window) and q2 = floor((2*i + 12) / scale) (its 1-based last pixel); widths are
    x2 - x1 + 1 (bbreg, landmark decoding); pad() crops img[y1 - 1 : y2, x1 - 1 : x2] after
    clamping x1 >= 1 and x2 <= w, which is exactly the 1-based inclusive range x1..x2.
    In FaceCraft's pixel-corner convention that box spans [x1 - 1, x2] x [y1 - 1, y2], so
    `to_corner_boxes` subtracts 1 from x1 and y1 and leaves x2 and y2 unchanged.
  * Landmarks come out as x1 - 1 + p * (x2 - x1 + 1) for O-Net's fraction p of the box: the left
    edge of the 1-based box in corner coordinates plus p of its full width. They are therefore
    ALREADY in the pixel-corner convention and are used unchanged.
  * MTCNN.detect() passes the same numbers through (it only reorders faces by area when
    select_largest=True); its own extract_face() then crops with PIL as if they were 0-based
    corners, which is facenet-pytorch's own half-pixel inconsistency, not ours.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

from experiments.peers import torchvision_shim

SETTINGS = {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709}

# facenet-pytorch layer name -> FaceCraft (mtcnn package) layer name. The heads are named in a
# different order: facenet numbers (score, box[, landmarks]), the Keras weights (box, [lmk,] score).
_NAME_MAP = {
    "pnet": {"conv4_1": "conv4_2", "conv4_2": "conv4_1"},
    "rnet": {"dense4": "fc4", "dense5_1": "fc5_2", "dense5_2": "fc5_1"},
    "onet": {"dense5": "fc5", "dense6_1": "fc6_3", "dense6_2": "fc6_1", "dense6_3": "fc6_2"},
}


def import_facenet():
  """Installs the torchvision shim and imports facenet_pytorch (MTCNN, detect_face)."""
  torchvision_shim.install()
  import facenet_pytorch  # pylint: disable=g-import-not-at-top
  from facenet_pytorch.models.utils import detect_face  # pylint: disable=g-import-not-at-top
  return facenet_pytorch, detect_face


def to_corner_boxes(raw_boxes: np.ndarray) -> np.ndarray:
  """facenet's 1-based inclusive (x1, y1, x2, y2) -> pixel-corner xyxy float32."""
  boxes = np.asarray(raw_boxes, np.float64)[:, :4].copy()
  boxes[:, :2] -= 1.0
  return boxes.astype(np.float32)


class FacenetMTCNN:
  """facenet-pytorch's MTCNN with its bundled weights; `detect` in FaceCraft's conventions."""

  name = "facenet-pytorch MTCNN"

  def __init__(self, min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
    facenet_pytorch, self._detect_face = import_facenet()
    self.mtcnn = facenet_pytorch.MTCNN(
        keep_all=True, min_face_size=min_face_size, thresholds=list(thresholds), factor=factor,
        post_process=False, device="cpu")
    self.mtcnn.eval()

  def detect_raw(self, image_uint8_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """facenet's detect_face for one image: boxes [N, 5] (x1, y1, x2, y2, score), points [N, 5, 2].

    Exactly what MTCNN.detect() computes before its optional reordering by area; rows are in the
    order of the final 'Min' NMS (decreasing score).
    """
    import torch  # pylint: disable=g-import-not-at-top
    m = self.mtcnn
    with torch.no_grad():
      boxes, points = self._detect_face.detect_face(
          np.ascontiguousarray(image_uint8_rgb), m.min_face_size, m.pnet, m.rnet, m.onet,
          m.thresholds, m.factor, m.device)
    boxes = np.asarray(boxes[0], np.float32).reshape(-1, 5)
    points = np.asarray(points[0], np.float32).reshape(-1, 5, 2)
    return boxes, points

  def detect(self, image_uint8_rgb: np.ndarray):
    """(boxes [N, 4] pixel-corner xyxy float32, scores [N] float32, landmarks [N, 5, 2])."""
    raw, points = self.detect_raw(image_uint8_rgb)
    return to_corner_boxes(raw), raw[:, 4].copy(), points


def facenet_weights_dir() -> str:
  spec = importlib.util.find_spec("facenet_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("facenet_pytorch is not installed")
  return os.path.join(list(spec.submodule_search_locations)[0], "data")


def facenet_weights_as_flax() -> dict[str, dict[str, Any]]:
  """facenet's pnet/rnet/onet.pt converted to FaceCraft's Flax layout.

  Conv OIHW -> HWIO; Linear [out, in] -> Dense kernel [in, out]. facenet flattens with
  x.permute(0, 3, 2, 1) (NCHW -> N, W, H, C), the same (W, H, C) order as flatten_whc, so no
  reordering of the Dense input rows is needed.
  """
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  for net in ("pnet", "rnet", "onet"):
    state = torch.load(os.path.join(facenet_weights_dir(), f"{net}.pt"), map_location="cpu")
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
      layer, kind = key.rsplit(".", 1)
      layer = _NAME_MAP[net].get(layer, layer)
      v = value.numpy()
      if layer.startswith("prelu"):
        params.setdefault(layer, {})["alpha"] = v.reshape(-1)
      elif kind == "bias":
        params.setdefault(layer, {})["bias"] = v
      elif v.ndim == 4:
        params.setdefault(layer, {})["kernel"] = v.transpose(2, 3, 1, 0)
      else:
        params.setdefault(layer, {})["kernel"] = v.T
    out[net] = {"params": params}
  return out


def compare_weights() -> dict[str, Any]:
  """Max |facenet - mtcnn package| per array, and overall; raises if the trees do not match."""
  from facecraft.models import mtcnn  # pylint: disable=g-import-not-at-top
  ours = mtcnn.load_original_weights()
  theirs = facenet_weights_as_flax()
  per_array, overall = {}, 0.0
  for net in ("pnet", "rnet", "onet"):
    a, b = ours[net]["params"], theirs[net]["params"]
    if sorted(a) != sorted(b):
      raise ValueError(f"{net}: layers differ: {sorted(a)} vs {sorted(b)}")
    for layer in sorted(a):
      for kind in sorted(a[layer]):
        x, y = np.asarray(a[layer][kind]), np.asarray(b[layer][kind])
        if x.shape != y.shape:
          raise ValueError(f"{net}/{layer}/{kind}: shape {x.shape} vs {y.shape}")
        diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
        per_array[f"{net}/{layer}/{kind}"] = diff
        overall = max(overall, diff)
  return {"max_abs_diff": overall, "per_array": per_array}
