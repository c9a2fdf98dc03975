"""The embedded default data: synthetic scenes with the bundled sample face pasted into them.

Used when a training run has no real data (data.source "auto" without data.root, or "embedded"):
it runs end to end but trains no real face detector, so training_sets announces it loudly.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from data_pipelines import geometry
from data_pipelines import records as records_lib
from data_pipelines.formats import facecraft_json

# Read as files (not imported): data_pipelines sits below facecraft in the import graph.
ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "facecraft",
                         "assets")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  low = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
  img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
  yy, xx = np.mgrid[0:h, 0:w]
  stripes = rng.uniform(0, 40) * np.sin((xx * rng.normal() + yy * rng.normal()) / rng.uniform(2, 9))
  noise = rng.normal(0, rng.uniform(2, 15), (h, w, 1))
  return np.clip(img + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def embedded_records(count: int, seed: int, faces: bool, box_scale: float = 1.0) -> list:
  """Synthetic scenes, each with the bundled sample face pasted at a random size (or none)."""
  sample = facecraft_json.load(ASSET_DIR)[0]
  face_img, face_box, face_pts = sample.load_image(), sample.boxes[0], sample.landmarks[0]
  out = []
  for i in range(count):
    rng = np.random.default_rng([seed, i, int(faces)])
    h, w = int(rng.integers(96, 161)), int(rng.integers(96, 161))
    image = _background(rng, h, w)
    boxes, pts = np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)
    if faces:
      side = rng.uniform(24, 0.6 * min(h, w))
      scale = side / (face_box[2] - face_box[0])
      ctx = geometry.scale_boxes(face_box[None].astype(np.float64), 1.6)[0]  # face + context
      size = np.maximum(np.round((ctx[2:] - ctx[:2]) * scale).astype(int), 1)
      patch = np.asarray(Image.fromarray(face_img).resize(
          tuple(size), Image.BILINEAR, box=tuple(float(v) for v in ctx)), np.float32)
      patch = np.clip(patch * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
      x0 = int(rng.integers(0, max(w - size[0], 0) + 1))
      y0 = int(rng.integers(0, max(h - size[1], 0) + 1))
      ph, pw = min(size[1], h - y0), min(size[0], w - x0)
      image[y0:y0 + ph, x0:x0 + pw] = patch[:ph, :pw]
      move = lambda p: (p - ctx[:2]) * scale + (x0, y0)  # noqa: E731
      box = np.concatenate([move(face_box[:2]), move(face_box[2:])])
      boxes = geometry.scale_boxes(box[None], box_scale).astype(np.float32)
      pts = move(face_pts)[None].astype(np.float32)
    out.append(records_lib.FaceRecord(
        image=image, boxes=boxes, landmarks=pts, landmark_scheme="five",
        image_id=f"embedded-{seed}-{i}", meta={"image_size": (h, w)}))
  return out
