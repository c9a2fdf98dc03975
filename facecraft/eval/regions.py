"""Exact region geometry for FDDB's overlap: ellipses as equal-area polygons, convex polygon
clipping (to the image and to each other), and the overlap matrix of ellipses against
rectangles or ellipses (facecraft.eval.fddb states the tool's rules this reproduces).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

ELLIPSE_VERTICES = 256


def ellipse_polygon(ellipse: Sequence[float], n: int = ELLIPSE_VERTICES) -> np.ndarray:
  """(ra, rb, theta, cx, cy) -> [n, 2] convex polygon with the ellipse's exact area."""
  ra, rb, theta, cx, cy = (float(v) for v in ellipse)
  # An inscribed n-gon has area (n/2) sin(2 pi/n) ra rb; scaling the radii restores pi ra rb.
  scale = np.sqrt(2 * np.pi / (n * np.sin(2 * np.pi / n)))
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  u, v = ra * scale * np.cos(t), rb * scale * np.sin(t)
  c, s = np.cos(theta), np.sin(theta)
  return np.stack([cx + u * c - v * s, cy + u * s + v * c], axis=1)


def polygon_area(poly: np.ndarray) -> float:
  if len(poly) < 3:
    return 0.0
  x, y = poly[:, 0], poly[:, 1]
  return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip_halfplane(poly: np.ndarray, nx: float, ny: float, c: float) -> np.ndarray:
  """Sutherland-Hodgman step: the part of `poly` where nx * x + ny * y <= c."""
  if len(poly) == 0:
    return poly
  d = poly[:, 0] * nx + poly[:, 1] * ny - c
  inside = d <= 0
  if inside.all():
    return poly
  if not inside.any():
    return poly[:0]
  nxt, d_nxt = np.roll(poly, -1, axis=0), np.roll(d, -1)
  crosses = inside != np.roll(inside, -1)
  t = np.where(crosses, d / np.where(crosses, d - d_nxt, 1), 0)
  cut = poly + t[:, None] * (nxt - poly)
  # Vertex i (if inside) then the crossing on edge i -> i+1 (if any): the polygon's order.
  return np.stack([poly, cut], axis=1)[np.stack([inside, crosses], axis=1)]


def clip_to_box(poly: np.ndarray, box: Sequence[float]) -> np.ndarray:
  x1, y1, x2, y2 = (float(v) for v in box)
  for nx, ny, c in ((-1, 0, -x1), (1, 0, x2), (0, -1, -y1), (0, 1, y2)):
    poly = _clip_halfplane(poly, nx, ny, c)
  return poly


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
  """The intersection of a polygon with a CONVEX polygon `clip` (either orientation)."""
  if len(clip) < 3:
    return subject[:0]
  x, y = clip[:, 0], clip[:, 1]
  if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) < 0:
    clip = clip[::-1]
  for p, q in zip(clip, np.roll(clip, -1, axis=0)):
    ex, ey = q - p
    # Inside = left of p -> q: ex * (y - py) - ey * (x - px) >= 0.
    subject = _clip_halfplane(subject, ey, -ex, ey * p[0] - ex * p[1])
    if len(subject) == 0:
      break
  return subject


class _Region(NamedTuple):
  poly: np.ndarray  # Already clipped to the image.
  area: float
  bbox: np.ndarray  # xyxy of the clipped polygon.


def _region(poly: np.ndarray, image_box) -> _Region:
  poly = poly if image_box is None else clip_to_box(poly, image_box)
  if len(poly) < 3:
    return _Region(poly, 0.0, np.zeros(4))
  return _Region(poly, polygon_area(poly), np.r_[poly.min(0), poly.max(0)])


def _next_index(count: np.ndarray, width: int) -> np.ndarray:
  """[D, width] index of each vertex's successor in rows holding `count` vertices each."""
  idx = np.arange(width)[None, :]
  return np.where(idx + 1 < count[:, None], idx + 1, 0)


def polygon_box_intersection_areas(poly: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Area of one convex polygon [n, 2] intersected with each box [D, 4], all boxes at once.

  Sutherland-Hodgman against the four sides, batched: each row holds a polygon padded to a
  common width, with its vertex count; clipping keeps a convex n-gon within n + 4 vertices.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  d_count = len(boxes)
  if d_count == 0 or len(poly) < 3:
    return np.zeros(d_count)
  verts = np.broadcast_to(poly, (d_count, len(poly), 2))
  count = np.full(d_count, len(poly))
  rows = np.arange(d_count)[:, None]
  for axis, sign, bound in ((0, -1.0, -boxes[:, 0]), (0, 1.0, boxes[:, 2]),
                            (1, -1.0, -boxes[:, 1]), (1, 1.0, boxes[:, 3])):
    width = verts.shape[1]
    valid = np.arange(width)[None, :] < count[:, None]
    nxt = _next_index(count, width)
    dist = sign * verts[..., axis] - bound[:, None]  # <= 0 inside this side.
    dist_next = dist[rows, nxt]
    inside = valid & (dist <= 0)
    crosses = valid & ((dist <= 0) != (dist_next <= 0))
    t = np.where(crosses, dist / np.where(crosses, dist - dist_next, 1), 0)
    cut = verts + t[..., None] * (verts[rows, nxt] - verts)
    # Per vertex: itself if inside, then the crossing on its outgoing edge; compact to the left.
    cand = np.stack([verts, cut], axis=2).reshape(d_count, 2 * width, 2)
    keep = np.stack([inside, crosses], axis=2).reshape(d_count, 2 * width)
    count = keep.sum(1)
    new_width = max(int(count.max()), 1)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :new_width]
    verts = cand[rows, order]
  width = verts.shape[1]
  valid = np.arange(width)[None, :] < count[:, None]
  nxt = verts[rows, _next_index(count, width)]
  cross = verts[..., 0] * nxt[..., 1] - verts[..., 1] * nxt[..., 0]
  area = 0.5 * np.abs(np.where(valid, cross, 0).sum(1))
  return np.where(count >= 3, area, 0.0)


def region_overlaps(ellipses: np.ndarray, det_regions: np.ndarray, det_format: str = "rectangle",
                    image_size: tuple[int, int] | None = None) -> np.ndarray:
  """[F, D] |A n B| / |A u B| of ground-truth ellipses [F, 5] and detections.

  det_regions: [D, 4] xyxy boxes (det_format "rectangle") or [D, 5] ellipses ("ellipse").
  image_size: (h, w); regions are clipped to [0, w] x [0, h] as the tool's masks clip them.
  """
  image_box = None if image_size is None else (0.0, 0.0, float(image_size[1]),
                                                float(image_size[0]))
  faces = [_region(ellipse_polygon(e), image_box)
           for e in np.asarray(ellipses, np.float64).reshape(-1, 5)]
  width = 4 if det_format == "rectangle" else 5
  det_regions = np.asarray(det_regions, np.float64).reshape(-1, width)
  out = np.zeros((len(faces), len(det_regions)))
  if width == 4:
    boxes = det_regions.copy()
    if image_box is not None:
      boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, image_box[2])
      boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, image_box[3])
    box_area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    for i, f in enumerate(faces):
      if f.area <= 0:
        continue
      near = np.nonzero((box_area > 0) & (boxes[:, 0] < f.bbox[2]) & (boxes[:, 2] > f.bbox[0]) &
                        (boxes[:, 1] < f.bbox[3]) & (boxes[:, 3] > f.bbox[1]))[0]
      inter = polygon_box_intersection_areas(f.poly, boxes[near])
      union = f.area + box_area[near] - inter
      out[i, near] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out
  dets = [_region(ellipse_polygon(d), image_box) for d in det_regions]
  for i, f in enumerate(faces):
    if f.area <= 0:
      continue
    for j, d in enumerate(dets):
      if d.area <= 0 or (np.maximum(f.bbox[:2], d.bbox[:2]) >= np.minimum(f.bbox[2:], d.bbox[2:])).any():
        continue
      inter = polygon_area(clip_convex(f.poly, d.poly))
      union = f.area + d.area - inter
      out[i, j] = inter / union if union > 0 else 0.0
  return out


