"""Whole-scene training samples for anchor detectors (the rpn_frcnn family): a square window of a
rescaled photo with its face boxes, padded to static shapes for a jitted training step.

  s = scene_sample(rng, image, boxes, size=320)
  s["image"] [size, size, 3] uint8 (black where the window leaves the photo), s["boxes"]
  [max_faces, 4] float32 in window pixels, s["valid"] [max_faces] (a face to learn),
  s["ignore"] [max_faces] (a face too small to learn: anchors on it are neither face nor
  background), s["photo_box"] [4] int32: the part of the window (xyxy) the photo covers.

The scale follows the faces, not the photo (data-anchor sampling, as PyramidBox): one face is
drawn, a target side is drawn log-uniformly in `face_sides` (the anchor sizes' span), the photo
is scaled so that face gets that side, and the window is placed at random around it. So every
anchor size sees faces at the same rate, whatever the data's size histogram. Pictures without
faces get a random scale and window. The photo's region under the window is resized once (PIL,
antialiased when shrinking) and pasted; boxes go through the same exact mapping.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _window(rng, hw, boxes, size: int, face_sides, scale_range):
  """(scale, x0, y0): the window [x0, x0 + size) x [y0, y0 + size) in scaled-photo pixels."""
  h, w = hw
  if len(boxes):
    face = boxes[rng.integers(len(boxes))]
    side = np.sqrt(max((face[2] - face[0]) * (face[3] - face[1]), 1.0))
    target = np.exp(rng.uniform(np.log(face_sides[0]), np.log(face_sides[1])))
    scale = float(np.clip(target / side, *scale_range))
    cx, cy = (face[0] + face[2]) / 2 * scale, (face[1] + face[3]) / 2 * scale
    x0 = rng.uniform(cx - size * 0.9, cx - size * 0.1)
    y0 = rng.uniform(cy - size * 0.9, cy - size * 0.1)
  else:
    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    x0 = rng.uniform(min(0.0, w * scale - size), max(0.0, w * scale - size))
    y0 = rng.uniform(min(0.0, h * scale - size), max(0.0, h * scale - size))
  return scale, float(np.floor(x0)), float(np.floor(y0))


def scene_sample(rng: np.random.Generator, image: np.ndarray, boxes, size: int = 320,
                 face_sides: tuple[float, float] = (12.0, 256.0),
                 scale_range: tuple[float, float] = (0.05, 8.0), min_face: float = 8.0,
                 max_faces: int = 64, flip_prob: float = 0.5, ignore=None) -> dict:
  """One training window of `image` (uint8 [H, W, 3]) with its face `boxes` ([N, 4] xyxy);
  ignore [N]: faces the annotation marks as not to be learned (they stay flagged ignore, and the
  window is never placed around one)."""
  image = np.asarray(image, np.uint8)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"scene_sample needs an RGB image [H, W, 3], got shape {image.shape}")
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if not np.all(np.isfinite(boxes)):
    raise ValueError("scene_sample: face boxes must be finite")
  marked = (np.zeros(len(boxes), bool) if ignore is None else
            np.asarray(ignore, bool).reshape(len(boxes)))
  h, w = image.shape[:2]
  scale, x0, y0 = _window(rng, (h, w), boxes[~marked], size, face_sides, scale_range)
  # The photo's part under the window, in photo pixels, and where it lands in the window.
  left, top = max(x0 / scale, 0.0), max(y0 / scale, 0.0)
  right, bottom = min((x0 + size) / scale, w), min((y0 + size) / scale, h)
  out = np.zeros((size, size, 3), np.uint8)
  px0, py0 = int(round(left * scale - x0)), int(round(top * scale - y0))
  pw = min(int(round((right - left) * scale)), size - px0)
  ph = min(int(round((bottom - top) * scale)), size - py0)
  if pw > 0 and ph > 0 and right > left and bottom > top:
    part = Image.fromarray(image).resize((pw, ph), Image.Resampling.BILINEAR,
                                         box=(left, top, right, bottom))
    out[py0:py0 + ph, px0:px0 + pw] = np.asarray(part)
    sx, sy = pw / (right - left), ph / (bottom - top)
  else:  # the window missed the photo (a face-free draw near its edge): all black
    pw = ph = 0
    sx = sy = scale
  mapped = np.stack([px0 + (boxes[:, 0] - left) * sx, py0 + (boxes[:, 1] - top) * sy,
                     px0 + (boxes[:, 2] - left) * sx, py0 + (boxes[:, 3] - top) * sy], 1)
  cx, cy = (mapped[:, 0] + mapped[:, 2]) / 2, (mapped[:, 1] + mapped[:, 3]) / 2
  keep = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)  # centre inside the window
  mapped, marked = np.clip(mapped[keep], 0, size), marked[keep]
  if rng.uniform() < flip_prob:
    out = out[:, ::-1].copy()
    mapped = np.stack([size - mapped[:, 2], mapped[:, 1], size - mapped[:, 0], mapped[:, 3]], 1)
    px0 = size - (px0 + pw)  # the covered part moves to the right edge
  sides = np.minimum(mapped[:, 2] - mapped[:, 0], mapped[:, 3] - mapped[:, 1])
  order = np.argsort(-sides, kind="stable")[:max_faces]  # the largest when there are too many
  mapped, sides, marked = mapped[order], sides[order], marked[order]
  n = len(mapped)
  res = {"image": out, "boxes": np.zeros((max_faces, 4), np.float32),
         "valid": np.zeros((max_faces,), bool), "ignore": np.zeros((max_faces,), bool),
         "photo_box": np.array([px0, py0, px0 + pw, py0 + ph], np.int32)}
  res["boxes"][:n] = mapped
  res["valid"][:n] = (sides >= min_face) & ~marked
  res["ignore"][:n] = (sides < min_face) | marked
  return res
