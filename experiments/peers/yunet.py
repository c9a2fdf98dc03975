"""OpenCV's YuNet (`cv2.FaceDetectorYN`, opencv-python-headless >= 4.8) as a peer.

The ONNX model is not shipped with OpenCV: take `onnx/yunet_n_640_640.onnx` from the public
repository ShiqiYu/libfacedetection.train (about 310 kB) and pass its path. Each picture runs
at its own size (the way OpenCV's C++ demo runs photos): setInputSize, then detect on BGR.

Conventions: YuNet returns rows (x, y, w, h, 5 x (px, py), score) in pixels; in FaceCraft's
pixel-corner convention the box is (x, y, x + w, y + h). Landmarks: right eye, left eye, nose,
right mouth corner, left mouth corner of the person, i.e. image-left eye first, which is
FaceCraft's "five" order (left eye, right eye in the image).
"""

from __future__ import annotations

import numpy as np


class YuNet:
  """FaceDetectorYN with OpenCV's demo defaults: score 0.6 (`score_threshold`), NMS 0.3."""

  name = "OpenCV YuNet"

  def __init__(self, model_path: str, score_threshold: float = 0.6, nms_threshold: float = 0.3,
               top_k: int = 5000, threads: int | None = None):
    import cv2  # pylint: disable=g-import-not-at-top
    if threads is not None:
      cv2.setNumThreads(int(threads))
    self._cv2 = cv2
    self.detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320),
                                              float(score_threshold), float(nms_threshold),
                                              int(top_k))

  def detect(self, image_uint8_rgb: np.ndarray):
    """(boxes [N, 4] xyxy float32, scores [N] float32, landmarks [N, 5, 2] float32)."""
    rgb = np.asarray(image_uint8_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
      raise ValueError(f"YuNet expects an RGB uint8 [H, W, 3] image, got {rgb.dtype} {rgb.shape}")
    self.detector.setInputSize((rgb.shape[1], rgb.shape[0]))
    _, faces = self.detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    faces = np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, np.float32)
    boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    return boxes, faces[:, 14].copy(), faces[:, 4:14].reshape(-1, 5, 2)
