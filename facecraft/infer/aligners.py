"""Aligners: face boxes + image -> landmarks, composed with any detector.

    det = Detector.from_pretrained("facecraft", align="mtcnn-onet")   # boxes + five points

An aligner has `scheme` (geometry.SCHEMES name), `num_points` and
`align(image uint8 [H, W, 3], boxes [N, 4]) -> [N, num_points, 2]` in image pixels. Detector
calls it after detection and replaces the engine's landmarks (or adds them, for a detector
without any). New aligners (TCDCN, CFT, DSSD) subclass Aligner and register one line in
facecraft.infer.registry.ALIGNERS.
"""

from __future__ import annotations

import abc

import jax
import numpy as np
from PIL import Image

from data_pipelines import sampling
from facecraft.models import mtcnn as mtcnn_models

# How a detector's box relates to the square O-Net was trained on (MTCNN's R-Net boxes): a
# bundle's inference.box_convention -> side scale. "cmu_mit" boxes are 1.4x the landmark-rule
# face box (models trained on CMU+MIT's convention, see facecraft/weights/MODEL_CARD.md).
# "wider": WIDER FACE's forehead-to-chin boxes, which MTCNN itself was trained on.
ONET_BOX_SCALE = {"mtcnn": 1.0, "wider": 1.0, "tight": 1.0, "cmu_mit": 1 / 1.4}


class Aligner(abc.ABC):
  """boxes + image -> landmarks (see the module doc)."""

  scheme: str = "five"
  num_points: int = 5

  @abc.abstractmethod
  def align(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Landmarks [N, num_points, 2] (float32 pixels) of the N faces in `boxes` of `image`."""


def square_windows(boxes: np.ndarray, scale: float) -> np.ndarray:
  """Squares of side scale * max(w, h) about each box's centre, snapped to whole pixels."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  side = np.maximum(np.round(np.maximum(boxes[:, 2] - boxes[:, 0],
                                        boxes[:, 3] - boxes[:, 1]) * scale), 1)
  x0, y0 = np.round(cx - side / 2), np.round(cy - side / 2)
  return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.int64)


class OnetAligner(Aligner):
  """MTCNN's O-Net (the released weights) as a five-point aligner for any detector's boxes.

  Each box is squared about its centre (side scaled by ONET_BOX_SCALE[box_convention]), cut with
  zero padding, area-resized to 48x48, and O-Net's landmark head gives the points as fractions
  of that square. Crops run `chunk` at a time through one jitted O-Net (one compile in all).
  """

  def __init__(self, box_convention: str = "mtcnn", weights=None, chunk: int = 16):
    if box_convention not in ONET_BOX_SCALE:
      raise ValueError(f"unknown box convention {box_convention!r}; known: {sorted(ONET_BOX_SCALE)}")
    self.scale = ONET_BOX_SCALE[box_convention]
    self.variables = (weights or mtcnn_models.load_original_weights())["onet"]
    self.chunk = int(chunk)
    self._onet = jax.jit(lambda v, x: mtcnn_models.onet(v["params"], mtcnn_models.normalize(x))
                         ["landmarks"])

  def align(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    windows = square_windows(boxes, self.scale)
    n = len(windows)
    if n == 0:
      return np.zeros((0, 5, 2), np.float32)
    crops = np.zeros((-(-n // self.chunk) * self.chunk, 48, 48, 3), np.uint8)
    crops[:n] = sampling.crop_resize(image, windows, 48, Image.BOX)  # area resize, zero padding
    frac = np.concatenate([np.asarray(self._onet(self.variables, crops[i:i + self.chunk]))
                           for i in range(0, len(crops), self.chunk)])[:n]
    side = (windows[:, 2] - windows[:, 0]).astype(np.float32)[:, None]
    xs = windows[:, 0, None] + frac[:, :5] * side
    ys = windows[:, 1, None] + frac[:, 5:] * side
    return np.stack([xs, ys], axis=-1).astype(np.float32)
