"""OpenCV's Viola-Jones Haar cascade as a peer (`opencv-python-headless<5` ships the cascades).

Conventions: detectMultiScale works on 8-bit gray (we convert RGB with cv2.COLOR_RGB2GRAY) and
returns integer (x, y, w, h) rectangles covering the pixels x .. x + w - 1; in FaceCraft's
pixel-corner convention that is (x, y, x + w, y + h), no half-pixel shift. The score is the
number of raw neighbour windows merged into the detection (detectMultiScale2's numDetections),
the only confidence the cascade exposes without changing its grouping. No landmarks.
"""

from __future__ import annotations

import numpy as np


class OpenCVHaar:
  """`haarcascade_frontalface_default.xml` with the usual scaleFactor=1.1, minNeighbors=5."""

  name = "OpenCV Haar"

  def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
               min_size: tuple[int, int] = (20, 20),
               cascade: str = "haarcascade_frontalface_default.xml"):
    import cv2  # pylint: disable=g-import-not-at-top
    self._cv2 = cv2
    path = cv2.data.haarcascades + cascade
    self.classifier = cv2.CascadeClassifier(path)
    if self.classifier.empty():
      raise FileNotFoundError(f"cannot load the Haar cascade {path}")
    self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

  def detect(self, image_uint8_rgb: np.ndarray):
    """(boxes [N, 4] pixel-corner xyxy float32, scores [N] float32 neighbour counts, None)."""
    cv2 = self._cv2
    gray = cv2.cvtColor(np.ascontiguousarray(image_uint8_rgb), cv2.COLOR_RGB2GRAY)
    rects, neighbours = self.classifier.detectMultiScale2(
        gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
        minSize=self.min_size)
    rects = np.asarray(rects, np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    return boxes, np.asarray(neighbours, np.float32).reshape(-1), None
