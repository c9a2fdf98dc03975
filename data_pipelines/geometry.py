"""Boxes, box regression, landmark schemes and similarity alignment, in one place.

Conventions: boxes are xyxy float32 pixels, origin at the top-left corner of the top-left pixel,
so a box covering pixel columns 0..9 is (0, 0, 10, 10) and its width is x2 - x1 (no "+1").
Every box function works on numpy arrays and, unchanged, on jax arrays (also under jit): the
array module is picked from the inputs, so importing this file never imports jax.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence
import warnings

import numpy as np


def _xp(*arrays):
  """numpy for numpy inputs, jax.numpy as soon as one input is a jax array or tracer."""
  for a in arrays:
    if type(a).__module__.split(".")[0] in ("jax", "jaxlib"):
      import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
      return jnp
  return np


# ----------------------------------------------------------------------------- boxes


def box_area(boxes):
  xp = _xp(boxes)
  return xp.maximum(boxes[..., 2] - boxes[..., 0], 0) * xp.maximum(boxes[..., 3] - boxes[..., 1], 0)


def _intersection(a, b):
  xp = _xp(a, b)
  lt = xp.maximum(a[:, None, :2], b[None, :, :2])
  rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = xp.maximum(rb - lt, 0)
  return wh[..., 0] * wh[..., 1]


def pairwise_iou(a, b, mode: str = "union"):
  """[N, 4] x [M, 4] -> [N, M] overlap.

  mode: "union" (IoU), "min" (intersection over the smaller area, MTCNN's NMS 'Min' mode),
  "b" (intersection over the area of b: how much of each b is covered, for ignore regions).
  Zero-area pairs give 0, never NaN.
  """
  xp = _xp(a, b)
  inter = _intersection(a, b)
  area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
  if mode == "union":
    denom = area_a + area_b - inter
  elif mode == "min":
    denom = xp.minimum(area_a, area_b)
  elif mode == "b":
    denom = xp.broadcast_to(area_b, inter.shape)
  else:
    raise ValueError(f"mode must be 'union', 'min' or 'b', got {mode!r}")
  return xp.where(denom > 0, inter / xp.where(denom > 0, denom, 1), 0).astype(inter.dtype)


def xywh_to_xyxy(boxes):
  xp = _xp(boxes)
  return xp.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], axis=-1)


def xyxy_to_xywh(boxes):
  xp = _xp(boxes)
  return xp.concatenate([boxes[..., :2], boxes[..., 2:4] - boxes[..., :2]], axis=-1)


def box_centers_sizes(boxes):
  """(cx, cy, w, h) of xyxy boxes."""
  xp = _xp(boxes)
  wh = boxes[..., 2:4] - boxes[..., :2]
  return xp.concatenate([boxes[..., :2] + 0.5 * wh, wh], axis=-1)


def square_boxes(boxes):
  """Grows each box to a square of side max(w, h) about the same centre (MTCNN's rerec)."""
  xp = _xp(boxes)
  c = box_centers_sizes(boxes)
  half = 0.5 * xp.maximum(c[..., 2], c[..., 3])[..., None]
  return xp.concatenate([c[..., :2] - half, c[..., :2] + half], axis=-1)


def clip_boxes(boxes, height, width):
  """Clips xyxy boxes to the image [0, width] x [0, height]."""
  xp = _xp(boxes)
  x = xp.clip(boxes[..., 0::2], 0, width)
  y = xp.clip(boxes[..., 1::2], 0, height)
  return xp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def scale_boxes(boxes, factor):
  """Scales boxes about their centres."""
  xp = _xp(boxes)
  c = box_centers_sizes(boxes)
  half = 0.5 * factor * c[..., 2:4]
  return xp.concatenate([c[..., :2] - half, c[..., :2] + half], axis=-1)


def reshape_boxes(boxes, width: float, height: float, shift_y: float = 0.0):
  """Boxes scaled by (width, height) about their centres, the centre moved by shift_y of the
  original height (negative: up). Maps one box convention onto another, e.g. the landmark rule's
  square face box onto WIDER FACE's taller forehead-to-chin box."""
  xp = _xp(boxes)
  c = box_centers_sizes(boxes)
  cx, cy = c[..., 0], c[..., 1] + shift_y * c[..., 3]
  hw, hh = 0.5 * width * c[..., 2], 0.5 * height * c[..., 3]
  return xp.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)


# ------------------------------------------------------------------- box regression


def encode_rcnn(proposals, targets, eps: float = 1e-6):
  """R-CNN centre/log-size targets (dx, dy, dw, dh) of `targets` relative to `proposals`."""
  xp = _xp(proposals, targets)
  p, g = box_centers_sizes(proposals), box_centers_sizes(targets)
  pw, ph = xp.maximum(p[..., 2], eps), xp.maximum(p[..., 3], eps)
  return xp.stack([(g[..., 0] - p[..., 0]) / pw, (g[..., 1] - p[..., 1]) / ph,
                   xp.log(xp.maximum(g[..., 2], eps) / pw), xp.log(xp.maximum(g[..., 3], eps) / ph)],
                  axis=-1)


def decode_rcnn(proposals, deltas, max_log_scale: float = float(np.log(1000.0 / 16))):
  """Inverse of encode_rcnn; log-sizes are clamped so a wild prediction cannot overflow."""
  xp = _xp(proposals, deltas)
  p = box_centers_sizes(proposals)
  cx = p[..., 0] + deltas[..., 0] * p[..., 2]
  cy = p[..., 1] + deltas[..., 1] * p[..., 3]
  w = p[..., 2] * xp.exp(xp.minimum(deltas[..., 2], max_log_scale))
  h = p[..., 3] * xp.exp(xp.minimum(deltas[..., 3], max_log_scale))
  return xp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def encode_corners(proposals, targets, plus_one: bool = False):
  """MTCNN's corner offsets ((gx1-px1)/w, (gy1-py1)/h, (gx2-px2)/w, (gy2-py2)/h).

  plus_one=True uses the original code's inclusive-pixel width x2 - x1 + 1 (for exact parity
  with the released MTCNN); our own training uses the continuous width x2 - x1.
  """
  xp = _xp(proposals, targets)
  extra = 1.0 if plus_one else 0.0
  w = proposals[..., 2] - proposals[..., 0] + extra
  h = proposals[..., 3] - proposals[..., 1] + extra
  wh = xp.stack([w, h, w, h], axis=-1)
  return (targets - proposals) / xp.where(wh > 0, wh, 1)


def decode_corners(proposals, offsets, plus_one: bool = False):
  """Inverse of encode_corners."""
  xp = _xp(proposals, offsets)
  extra = 1.0 if plus_one else 0.0
  w = proposals[..., 2] - proposals[..., 0] + extra
  h = proposals[..., 3] - proposals[..., 1] + extra
  return proposals + offsets * xp.stack([w, h, w, h], axis=-1)


# ------------------------------------------------------------------ landmark schemes


@dataclasses.dataclass(frozen=True)
class LandmarkScheme:
  """A named point layout.

  flip: the permutation that maps the points of a horizontally mirrored face back to this
    layout (flipped[i] = mirror(points[flip[i]])), "left" and "right" being the image's sides.
  to_five: for each of the five points (left eye, right eye, nose tip, left mouth corner,
    right mouth corner; image left/right) the indices whose mean gives it, () if unknown.
  """

  name: str
  size: int
  flip: tuple[int, ...]
  to_five: tuple[tuple[int, ...], ...]


def _pairs_to_perm(size: int, pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
  perm = list(range(size))
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return tuple(perm)


_IBUG68_PAIRS = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] +
                 [(31, 35), (32, 34)] + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)] +
                 [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])

SCHEMES: dict[str, LandmarkScheme] = {
    # iBUG 300-W markup; 36-41 is the eye on the image's left.
    "ibug68": LandmarkScheme("ibug68", 68, _pairs_to_perm(68, _IBUG68_PAIRS),
                             (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))),
    # MTCNN / CelebA order: left eye, right eye, nose, left mouth corner, right mouth corner.
    "five": LandmarkScheme("five", 5, (1, 0, 2, 4, 3), ((0,), (1,), (2,), (3,), (4,))),
    # Caltech WebFaces: left eye, right eye, nose, mouth centre (no corners: masked in "five").
    "caltech4": LandmarkScheme("caltech4", 4, (1, 0, 2, 3), ((0,), (1,), (2,), (), ())),
    # CMU+MIT: left eye, right eye, nose, left mouth corner, mouth centre, right mouth corner.
    "cmu6": LandmarkScheme("cmu6", 6, (1, 0, 2, 5, 4, 3), ((0,), (1,), (2,), (3,), (5,))),
    # AFLW 21 points: index i = feature_id i + 1 = code LBLC LBC LBRC RBLC RBC RBRC LELC LEC LERC
    # RELC REC RERC LE LN NC RN RE MLC MC MRC CC (brows 0-5, eyes 6-11, ears 12/16, nose 13-15,
    # mouth 17-19, chin 20). "Left" is the image's left (data_pipelines/formats/aflw.py).
    "aflw21": LandmarkScheme(
        "aflw21", 21,
        _pairs_to_perm(21, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15),
                            (17, 19)]),
        ((7,), (10,), (14,), (17,), (19,))),
    # COFW 29 points, LFPW order: brows 0-7, eye corners 8-11, lids 12-15, pupils 16/17, nose
    # sides 18/19, tip 20, bottom 21, mouth corners 22/23, lips 24-27, chin 28 (first of each
    # pair on the image's left); flip pairs as in the HRNet facial-landmark code.
    "cofw29": LandmarkScheme(
        "cofw29", 29,
        _pairs_to_perm(29, [(0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17),
                            (13, 15), (18, 19), (22, 23)]),
        ((16,), (17,), (20,), (22,), (23,))),
}


def get_scheme(name: str) -> LandmarkScheme:
  try:
    return SCHEMES[name]
  except KeyError:
    raise ValueError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None


def scheme_size(name: str) -> int:
  return get_scheme(name).size


def to_five(landmarks: np.ndarray, scheme: str, mask: np.ndarray | None = None):
  """Converts [..., K, 2] points of `scheme` to the five-point scheme.

  Returns (points [..., 5, 2] float32, mask [..., 5] bool). A five-point entry is the mean of its
  source points and is valid only when all of them are annotated; unknown entries are 0 and
  masked out (caltech4 has no mouth corners).
  """
  s = get_scheme(scheme)
  landmarks = np.asarray(landmarks, np.float32)
  if landmarks.shape[-2] != s.size:
    raise ValueError(f"scheme {scheme!r} has {s.size} points, got {landmarks.shape[-2]}")
  if mask is None:
    mask = np.ones(landmarks.shape[:-1], bool)
  mask = np.asarray(mask, bool)
  out = np.zeros(landmarks.shape[:-2] + (5, 2), np.float32)
  out_mask = np.zeros(landmarks.shape[:-2] + (5,), bool)
  for j, idx in enumerate(s.to_five):
    if not idx:
      continue
    idx = list(idx)
    out[..., j, :] = landmarks[..., idx, :].mean(-2)
    out_mask[..., j] = mask[..., idx].all(-1)
  out[~out_mask] = 0
  return out, out_mask


def flip_landmarks(landmarks: np.ndarray, scheme: str, width: float):
  """Mirrors [..., K, 2] points in an image of `width` and restores the scheme's order.

  With pixel-corner coordinates the mirror of x is width - x.
  """
  perm = np.asarray(get_scheme(scheme).flip)
  flipped = np.array(landmarks, np.float32, copy=True)
  flipped[..., 0] = width - flipped[..., 0]
  return flipped[..., perm, :]


def flip_boxes(boxes, width: float):
  xp = _xp(boxes)
  return xp.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]],
                  axis=-1)


def landmark_bbox(landmarks: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Tight xyxy box [..., 4] around the annotated points of [..., K, 2] landmarks."""
  landmarks = np.asarray(landmarks, np.float32)
  if mask is None:
    mask = np.ones(landmarks.shape[:-1], bool)
  big = np.float32(np.inf)
  lo = np.where(mask[..., None], landmarks, big).min(-2)
  hi = np.where(mask[..., None], landmarks, -big).max(-2)
  return np.concatenate([lo, hi], -1).astype(np.float32)


# Caltech WebFaces' face box from its four points: centre = eyes + 0.6 (mouth - eyes), side =
# max(2.2 iod, 2.0 eye-mouth). Every set with eyes and a mouth gets its box by this one rule.
CALTECH4_BOX_RULE = {"centre_along": 0.6, "side_per_iod": 2.2, "side_per_em": 2.0}


def caltech4_boxes(points: np.ndarray, box_scale: float = 1.0) -> np.ndarray:
  """Square xyxy boxes [N, 4] from caltech4 points [N, 4, 2] by CALTECH4_BOX_RULE."""
  points = np.asarray(points, np.float64).reshape(-1, 4, 2)
  eyes = 0.5 * (points[:, 0] + points[:, 1])
  mouth = points[:, 3]
  iod = np.linalg.norm(points[:, 1] - points[:, 0], axis=-1)
  em = np.linalg.norm(mouth - eyes, axis=-1)
  rule = CALTECH4_BOX_RULE
  centre = eyes + rule["centre_along"] * (mouth - eyes)
  side = np.maximum(rule["side_per_iod"] * iod, rule["side_per_em"] * em) * box_scale
  half = 0.5 * side[:, None]
  return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)


def caltech4_from_ibug68(points: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Caltech-style points [N, 4, 2] (eye centres = means of 36-41 and 42-47, nose 33, mouth
  centre = mean of 48-67) from iBUG 68; NaN where none of a group is annotated."""
  p = np.asarray(points, np.float64).reshape(-1, 68, 2).copy()
  if mask is not None:
    p[~np.asarray(mask, bool).reshape(-1, 68)] = np.nan
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a group with no annotated point
    return np.stack([np.nanmean(p[:, 36:42], 1), np.nanmean(p[:, 42:48], 1), p[:, 33],
                     np.nanmean(p[:, 48:68], 1)], 1)


def ibug68_boxes(points: np.ndarray, box_scale: float, mask: np.ndarray | None = None):
  """iBUG-68 face boxes by the Caltech rule, so 300-W and Caltech agree on what a face box is;
  a face missing an eye or the mouth gets the square around its annotated points instead."""
  c4 = caltech4_from_ibug68(points, mask)
  boxes = caltech4_boxes(np.nan_to_num(c4), box_scale)
  bad = ~np.isfinite(c4[:, [0, 1, 3]]).all((1, 2))
  if bad.any():
    boxes[bad] = scale_boxes(square_boxes(landmark_bbox(
        np.asarray(points, np.float32).reshape(-1, 68, 2)[bad],
        None if mask is None else np.asarray(mask, bool).reshape(-1, 68)[bad])), box_scale)
  return boxes


# ----------------------------------------------------------------- affine transforms


def transform_points(points, matrix):
  """Applies a 2x3 affine matrix to [..., 2] points."""
  points = np.asarray(points, np.float32)
  m = np.asarray(matrix, np.float64)
  return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def transform_boxes(boxes, matrix):
  """Axis-aligned xyxy box around each transformed box's four corners."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], 1)
  moved = transform_points(corners, matrix)
  return np.concatenate([moved.min(1), moved.max(1)], -1).astype(np.float32)


def invert_affine(matrix) -> np.ndarray:
  m = np.vstack([np.asarray(matrix, np.float64), [0, 0, 1]])
  return np.linalg.inv(m)[:2]


def similarity_transform(src, dst, mask=None) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

  Umeyama (1991) closed form on the points where mask is True; returns a 2x3 matrix.
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  if mask is not None:
    mask = np.asarray(mask, bool)
    src, dst = src[mask], dst[mask]
  if len(src) < 2:
    raise ValueError("a similarity transform needs at least two annotated points")
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s_c, d_c = src - mu_s, dst - mu_d
  var_s = (s_c ** 2).sum() / len(src)
  if var_s <= 0:
    raise ValueError("source points coincide")
  cov = d_c.T @ s_c / len(src)
  u, sig, vt = np.linalg.svd(cov)
  d = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[-1] = -1
  rot = u @ np.diag(d) @ vt
  scale = (sig * d).sum() / var_s
  t = mu_d - scale * rot @ mu_s
  return np.hstack([scale * rot, t[:, None]])


# The widely used 112x112 five-point template (left eye, right eye, nose, mouth corners), in
# pixel-centre coordinates of the original; +0.5 moves it to our pixel-corner frame.
FIVE_POINT_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], np.float32) + 0.5


def warp_affine(image: np.ndarray, matrix, out_hw: tuple[int, int], fill: float = 0) -> np.ndarray:
  """Bilinear warp of an [H, W, C] image by a 2x3 matrix mapping input -> output pixels."""
  inv = invert_affine(matrix)
  h, w = out_hw
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # output pixel centres
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2] - 0.5  # to input index space
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2] - 0.5
  src = np.asarray(image, np.float32)
  if src.ndim == 2:
    src = src[..., None]
  x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
  fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
  out = np.zeros((h, w, src.shape[2]), np.float32)
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < src.shape[1]) & (yi >= 0) & (yi < src.shape[0])
      vals = src[np.clip(yi, 0, src.shape[0] - 1), np.clip(xi, 0, src.shape[1] - 1)]
      out += wy * wx * np.where(inside[..., None], vals, fill)
  if np.issubdtype(np.asarray(image).dtype, np.integer):
    out = np.clip(np.rint(out), 0, 255).astype(np.asarray(image).dtype)
  return out.reshape((h, w) + np.asarray(image).shape[2:])


def align_five(image: np.ndarray, five_points, size: int = 112, mask=None):
  """Crops a face aligned to the canonical five-point template; returns (crop, 2x3 matrix)."""
  template = FIVE_POINT_TEMPLATE_112 * (size / 112.0)
  matrix = similarity_transform(five_points, template, mask)
  return warp_affine(image, matrix, (size, size)), matrix
