"""dlib's HOG + linear SVM frontal face detector as a peer (`dlib-bin` wheel).

Conventions: dlib rectangles are inclusive integer pixel bounds (left, top, right, bottom), so
width = right - left + 1; in FaceCraft's pixel-corner convention the box is
(left, top, right + 1, bottom + 1). Scores are the SVM margins from detector.run (detections
need score > adjust_threshold = 0). `upsample` doubles the image that many times first (dlib's
way of finding faces smaller than its 80x80 window). No landmarks (dlib's shape predictor is a
separate model that is not bundled).
"""

from __future__ import annotations

import numpy as np


class DlibHOG:
  """dlib.get_frontal_face_detector() run with `upsample` pyramid up-steps."""

  def __init__(self, upsample: int = 0):
    import dlib  # pylint: disable=g-import-not-at-top
    self.detector = dlib.get_frontal_face_detector()
    self.upsample = upsample
    self.name = f"dlib HOG (upsample {upsample})"

  def detect(self, image_uint8_rgb: np.ndarray):
    """(boxes [N, 4] pixel-corner xyxy float32, scores [N] float32 SVM margins, None)."""
    rects, scores, _ = self.detector.run(
        np.ascontiguousarray(image_uint8_rgb, np.uint8), self.upsample, 0.0)
    boxes = np.asarray([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                       np.float32).reshape(-1, 4)
    return boxes, np.asarray(scores, np.float32).reshape(-1), None
