"""Augmentations that move boxes and landmarks exactly as they move the pixels (numpy + PIL).

Coordinates follow ARCHITECTURE.md: pixels, origin at the top-left CORNER of the top-left pixel,
so pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). Hence:
  * a horizontal flip maps x -> W - x (pixel column j -> W - 1 - j) and permutes the landmarks
    with the scheme's `flip` so that "left eye" stays the eye on the image's left;
  * an affine matrix M (2x3) maps input points to output points, p' = M @ [x, y, 1]: exactly
    geometry.transform_points. The image is resampled so that output pixel centre q shows the
    input at M^-1 q (bilinear), i.e. the convention of geometry.warp_affine.

Unannotated landmarks stay 0 (the FaceRecord/CropSet convention) whatever the transform; points
that leave the image keep their exact coordinates (mask them only with mask_outside=True).
Every random choice comes from the numpy Generator passed in: same seed, same output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np
from PIL import Image

from data_pipelines import records
from data_pipelines import geometry
from data_pipelines import images

BOX_MODES = ("corners", "ellipse", "landmarks")
# (image, boxes, landmarks, landmark_mask), what every geometric augmentation returns.
Transformed = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def _as_geometry(boxes, landmarks, landmark_mask):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if landmarks is not None:
    landmarks = np.asarray(landmarks, np.float32)
    if landmark_mask is not None:
      landmark_mask = np.asarray(landmark_mask, bool).reshape(landmarks.shape[:-1])
  return boxes, landmarks, landmark_mask


def _zero_unannotated(landmarks, landmark_mask):
  if landmarks is None or landmark_mask is None:
    return landmarks
  return np.where(landmark_mask[..., None], landmarks, 0).astype(np.float32)


# ------------------------------------------------------------------------------ flip


def hflip(image: np.ndarray, boxes, landmarks=None, scheme: str | None = None,
          landmark_mask=None) -> Transformed:
  """Mirrors left-right; returns (image, boxes, landmarks, landmark_mask).

  Landmarks (and their mask) are re-ordered by the scheme's flip permutation. The pixels move
  exactly, and so do coordinates on a binary grid (annotations in 1/2^k pixels); arbitrary
  float32 coordinates come back from a double flip within one float32 ulp of the image width.
  """
  image = np.asarray(image)
  width = image.shape[1]
  boxes, landmarks, landmark_mask = _as_geometry(boxes, landmarks, landmark_mask)
  out_boxes = geometry.flip_boxes(boxes, width).astype(np.float32)
  if landmarks is None:
    return np.ascontiguousarray(image[:, ::-1]), out_boxes, None, landmark_mask
  if scheme is None:
    raise ValueError("flipping landmarks needs their scheme (the left/right permutation)")
  out_lm = geometry.flip_landmarks(landmarks, scheme, width)
  if landmark_mask is not None:
    landmark_mask = landmark_mask[..., np.asarray(geometry.get_scheme(scheme).flip)]
  return (np.ascontiguousarray(image[:, ::-1]), out_boxes,
          _zero_unannotated(out_lm, landmark_mask), landmark_mask)


# ---------------------------------------------------------------------------- affine


def rotation_matrix(center, angle_deg: float, scale: float = 1.0, dst=None) -> np.ndarray:
  """2x3 matrix: rotate by angle_deg and scale about `center`, then move `center` to `dst`.

  Positive angles turn the picture counter-clockwise as seen on screen (y points down), as in
  OpenCV's getRotationMatrix2D. dst defaults to center.
  """
  cx, cy = (float(v) for v in center)
  dx, dy = (cx, cy) if dst is None else (float(v) for v in dst)
  a = scale * math.cos(math.radians(angle_deg))
  b = scale * math.sin(math.radians(angle_deg))
  return np.array([[a, b, dx - a * cx - b * cy], [-b, a, dy + b * cx - a * cy]], np.float64)


def random_affine_matrix(rng: np.random.Generator, in_hw: tuple[int, int],
                         out_hw: tuple[int, int] | None = None, max_rotation_deg: float = 0.0,
                         max_translation: float = 0.0, scale_range=(1.0, 1.0),
                         center=None) -> np.ndarray:
  """Random rotation + scale about `center` (default: the image centre) + translation.

  angle ~ U(-max_rotation_deg, max_rotation_deg); scale log-uniform in scale_range (> 1 zooms in);
  the centre lands at its own place in the output (rescaled to out_hw) moved by a shift
  ~ U(-max_translation, max_translation) times the output width and height. Always draws four
  numbers, so the random stream does not depend on which jitters are switched on.
  """
  h, w = in_hw
  oh, ow = in_hw if out_hw is None else out_hw
  lo, hi = (float(s) for s in scale_range)
  if not 0 < lo <= hi:
    raise ValueError(f"scale_range must be 0 < lo <= hi, got {scale_range}")
  u = rng.uniform(-1.0, 1.0, size=4)
  angle = float(max_rotation_deg) * u[0]
  scale = math.exp(math.log(lo) + (u[1] + 1) / 2 * (math.log(hi) - math.log(lo)))
  cx, cy = (w / 2, h / 2) if center is None else (float(v) for v in center)
  dst = (cx * ow / w + float(max_translation) * u[2] * ow,
         cy * oh / h + float(max_translation) * u[3] * oh)
  return rotation_matrix((cx, cy), angle, scale, dst)


def warp_image(image: np.ndarray, matrix, out_hw: tuple[int, int], fill: int = 0,
               backend: str = "pil") -> np.ndarray:
  """Bilinear warp, input -> output by `matrix`, with geometry.warp_affine's pixel convention.

  backend "pil" (fast) treats the picture as exactly covering [0, W] x [0, H] with clamped
  edges; "numpy" is geometry.warp_affine, whose border pixels fade half a pixel into `fill`.
  Both agree inside the image to within one grey level (tested).
  """
  image = np.asarray(image, np.uint8)
  h, w = (int(v) for v in out_hw)
  if backend == "numpy":
    return geometry.warp_affine(image, matrix, (h, w), fill=fill)
  if backend != "pil":
    raise ValueError(f"backend must be 'pil' or 'numpy', got {backend!r}")
  # PIL's AFFINE data maps output to input and samples at output pixel centres (x + 0.5) with
  # input pixel centres at +0.5: the same continuous frame as ours, so the inverse is all it needs.
  # Channels go through float mode "F" because PIL's 8-bit bilinear truncates (half a grey level
  # darker on average); we round once at the end instead.
  inverse = tuple(float(v) for v in geometry.invert_affine(matrix).ravel())
  planes = image[..., None] if image.ndim == 2 else image
  out = np.stack([np.asarray(Image.fromarray(planes[..., c].astype(np.float32), "F").transform(
      (w, h), Image.Transform.AFFINE, inverse, resample=Image.Resampling.BILINEAR,
      fillcolor=float(fill))) for c in range(planes.shape[-1])], -1)
  out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
  return out.reshape((h, w) + image.shape[2:])


def transform_boxes(boxes, matrix, mode: str = "corners", landmarks=None, landmark_mask=None,
                    moved_landmarks=None, min_points: int = 3) -> np.ndarray:
  """Axis-aligned boxes after an affine transform.

  mode:
    "corners": the box around the four moved corners (exact without rotation; under rotation it
      grows, by cos + sin for a square).
    "ellipse": the box around the moved ellipse inscribed in the box. Equals "corners" without
      rotation and keeps a square face box's size under rotation, like a face does.
    "landmarks": keeps each box's placement relative to the bounding box of its annotated
      landmarks (margins as fractions of that box), re-applied around the moved landmarks, so
      a rotated face gets the extent its points actually take. Faces with fewer than
      `min_points` annotated points or a flat point box (or no landmarks at all) fall back to
      "ellipse". Most useful with dense schemes (ibug68, cofw29, aflw21).
  """
  if mode not in BOX_MODES:
    raise ValueError(f"box mode must be one of {BOX_MODES}, got {mode!r}")
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if mode == "corners":
    return geometry.transform_boxes(boxes, matrix)
  m = np.asarray(matrix, np.float64)
  b = boxes.astype(np.float64)
  centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], -1) @ m[:, :2].T + m[:, 2]
  half = np.stack([(b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2], -1)
  # The ellipse A (a cos t, b sin t) reaches x = +-sqrt((A00 a)^2 + (A01 b)^2), y likewise.
  extent = np.sqrt((half[:, None, :] ** 2 * m[None, :, :2] ** 2).sum(-1))
  out = np.concatenate([centre - extent, centre + extent], -1).astype(np.float32)
  if mode == "ellipse" or landmarks is None or len(boxes) == 0:
    return out
  landmarks = np.asarray(landmarks, np.float32)
  if moved_landmarks is None:
    moved_landmarks = geometry.transform_points(landmarks, matrix)
  mask = (np.ones(landmarks.shape[:-1], bool) if landmark_mask is None
          else np.asarray(landmark_mask, bool))
  old = geometry.landmark_bbox(landmarks, mask).astype(np.float64)
  new = geometry.landmark_bbox(moved_landmarks, mask).astype(np.float64)
  old_wh, new_wh = old[:, 2:] - old[:, :2], new[:, 2:] - new[:, :2]
  usable = (mask.sum(-1) >= min_points) & (old_wh > 1e-3).all(-1) & (new_wh > 1e-3).all(-1)
  if usable.any():
    old_wh4, new_wh4 = np.tile(old_wh, 2), np.tile(new_wh, 2)
    rel = (b - np.tile(old[:, :2], 2)) / np.where(usable[:, None], old_wh4, 1)
    placed = np.tile(new[:, :2], 2) + rel * new_wh4
    out[usable] = placed[usable].astype(np.float32)
  return out


def inside_image(points, hw: tuple[int, int]) -> np.ndarray:
  """bool [...]: the point lies in the picture [0, W] x [0, H]."""
  points = np.asarray(points)
  h, w = hw
  return ((points[..., 0] >= 0) & (points[..., 0] <= w) &
          (points[..., 1] >= 0) & (points[..., 1] <= h))


def affine(image: np.ndarray, boxes, landmarks, matrix, out_hw: tuple[int, int], *,
           landmark_mask=None, box_mode: str = "corners", mask_outside: bool = False,
           fill: int = 0, backend: str = "pil") -> Transformed:
  """Warps the image and moves boxes and landmarks by the same 2x3 matrix.

  Returns (image [out_h, out_w, C], boxes, landmarks, landmark_mask). Landmarks are moved
  exactly (geometry.transform_points); with mask_outside=True the points that leave the output
  picture are also masked out (their coordinates stay exact). Boxes follow `box_mode`
  (see transform_boxes) and are never clipped.
  """
  boxes, landmarks, landmark_mask = _as_geometry(boxes, landmarks, landmark_mask)
  matrix = np.asarray(matrix, np.float64).reshape(2, 3)
  out_hw = (int(out_hw[0]), int(out_hw[1]))
  image = np.asarray(image, np.uint8)
  if np.array_equal(matrix, np.eye(2, 3)) and image.shape[:2] == out_hw:
    out_image = image.copy()  # Nothing to resample: skip the warp (it would be exact anyway).
  else:
    out_image = warp_image(image, matrix, out_hw, fill, backend)
  moved = None if landmarks is None else geometry.transform_points(landmarks, matrix)
  out_boxes = transform_boxes(boxes, matrix, box_mode, landmarks, landmark_mask, moved)
  moved = _zero_unannotated(moved, landmark_mask)
  if moved is not None and mask_outside:
    # Only the mask changes: the coordinates of a point off the picture stay exact.
    inside = inside_image(moved, out_hw)
    landmark_mask = inside if landmark_mask is None else landmark_mask & inside
  return out_image, out_boxes, moved, landmark_mask


# ---------------------------------------------------------------------- photometric


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """Re-compresses as JPEG at `quality` (1-100) and decodes again: same shape, uint8."""
  if not 1 <= int(quality) <= 100:
    raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
  return images.decode(images.encode_jpeg(np.asarray(image, np.uint8), int(quality)))


def low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
  """Down-scales by `factor` (0 < factor <= 1, area filter) and back up (bilinear): the blur of
  a small, distant or out-of-focus face. Same shape, uint8; factor 1 returns the image."""
  if not 0 < factor <= 1:
    raise ValueError(f"low_resolution factor must be in (0, 1], got {factor}")
  image = np.asarray(image, np.uint8)
  h, w = image.shape[:2]
  small = (max(round(w * factor), 1), max(round(h * factor), 1))
  if small == (w, h):
    return image
  pil = Image.fromarray(image).resize(small, Image.BOX)
  return np.asarray(pil.resize((w, h), Image.BILINEAR))


def occlude(image: np.ndarray, rng: np.random.Generator, max_side: float = 0.5,
            min_side: float = 0.2) -> np.ndarray:
  """A copy with one random rectangle (sides min_side..max_side of the image's) filled with one
  random colour: a hand, a microphone, another head in front of the face. Labels are kept: an
  occluded face is still a face. Draws exactly five numbers (a fixed draw count)."""
  image = np.array(image, np.uint8)
  h, w = image.shape[:2]
  sides = rng.uniform(min_side, max_side, 2)
  rh, rw = max(int(round(sides[0] * h)), 1), max(int(round(sides[1] * w)), 1)
  y0 = int(rng.integers(0, h - rh + 1))
  x0 = int(rng.integers(0, w - rw + 1))
  image[y0:y0 + rh, x0:x0 + rw] = rng.integers(0, 256, 3).astype(np.uint8)
  return image


# ITU-R 601 luma, the weights PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def adjust_colors(image: np.ndarray, brightness: float = 1.0, contrast: float = 1.0,
                  saturation: float = 1.0, grayscale: bool = False) -> np.ndarray:
  """Scales brightness, then contrast (about the mean luma), then saturation (about each
  pixel's luma), then optionally drops colour; one rounding at the end. Factors of 1 and
  grayscale=False return the image unchanged."""
  x = np.asarray(image, np.float32)
  x = x * np.float32(brightness)
  if contrast != 1.0:
    mean = np.float32((x @ _LUMA).mean())
    x = mean + np.float32(contrast) * (x - mean)
  if saturation != 1.0:
    luma = (x @ _LUMA)[..., None]
    x = luma + np.float32(saturation) * (x - luma)
  if grayscale:
    x = np.repeat((x @ _LUMA)[..., None], 3, -1)
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _draw_color(rng: np.random.Generator, brightness: float, contrast: float, saturation: float,
                grayscale_prob: float) -> tuple[float, float, float, bool]:
  """Factors ~ U[max(0, 1 - a), 1 + a] (as torchvision); always draws four numbers."""
  u = rng.uniform(-1.0, 1.0, size=3)
  factors = [max(0.0, 1.0 + a * v) for a, v in zip((brightness, contrast, saturation), u)]
  gray = bool(rng.random() < grayscale_prob)
  return factors[0], factors[1], factors[2], gray


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0,
                 grayscale_prob: float = 0.0) -> np.ndarray:
  """Random brightness/contrast/saturation (no hue) and grayscale with probability p."""
  return adjust_colors(image, *_draw_color(rng, brightness, contrast, saturation,
                                           grayscale_prob))


# ------------------------------------------------------------------------- composed


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """One draw of an Augmenter: what apply() does to a sample."""

  flip: bool
  matrix: np.ndarray  # 2x3, applied after the flip.
  color: tuple[float, float, float, bool]  # brightness, contrast, saturation, grayscale.
  jpeg_quality: int | None


@dataclasses.dataclass(frozen=True)
class Augmenter:
  """Flip -> affine (rotation, scale, translation about the image centre) -> colour -> JPEG.

  The default-constructed Augmenter is the identity; configs switch jitters on. Samples are
  dicts {"image": uint8 [H, W, 3], "boxes": [N, 4], "landmarks": [N, K, 2] (optional),
  "landmark_mask": [N, K], "scheme": str}; other keys pass through untouched. The output keeps
  the input size and keys.
  """

  flip_prob: float = 0.0
  max_rotation_deg: float = 0.0
  max_translation: float = 0.0  # Fraction of the image width / height.
  scale_range: tuple[float, float] = (1.0, 1.0)
  jpeg_prob: float = 0.0
  jpeg_quality_range: tuple[int, int] = (30, 95)
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  grayscale_prob: float = 0.0
  box_mode: str = "corners"
  mask_outside_landmarks: bool = False
  fill: int = 0

  def __post_init__(self):
    for name in ("flip_prob", "jpeg_prob", "grayscale_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    lo, hi = self.scale_range
    if not 0 < lo <= hi:
      raise ValueError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
    qlo, qhi = self.jpeg_quality_range
    if not 1 <= qlo <= qhi <= 100:
      raise ValueError(f"jpeg_quality_range must be within [1, 100], got {self.jpeg_quality_range}")
    if self.box_mode not in BOX_MODES:
      raise ValueError(f"box_mode must be one of {BOX_MODES}, got {self.box_mode!r}")
    for name in ("max_rotation_deg", "max_translation", "brightness", "contrast", "saturation"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

  def sample_params(self, rng: np.random.Generator, hw: tuple[int, int]) -> AugmentParams:
    """Draws one set of parameters; the number of draws never depends on the outcome."""
    flip = bool(rng.random() < self.flip_prob)
    matrix = random_affine_matrix(rng, hw, hw, self.max_rotation_deg, self.max_translation,
                                  self.scale_range)
    color = _draw_color(rng, self.brightness, self.contrast, self.saturation, self.grayscale_prob)
    use_jpeg = bool(rng.random() < self.jpeg_prob)
    quality = int(rng.integers(self.jpeg_quality_range[0], self.jpeg_quality_range[1] + 1))
    return AugmentParams(flip, matrix, color, quality if use_jpeg else None)

  def apply(self, sample: dict[str, Any], params: AugmentParams) -> dict[str, Any]:
    image = np.asarray(sample["image"], np.uint8)
    hw = image.shape[:2]
    scheme = sample.get("scheme")
    boxes, landmarks, mask = _as_geometry(sample["boxes"], sample.get("landmarks"),
                                          sample.get("landmark_mask"))
    if params.flip:
      image, boxes, landmarks, mask = hflip(image, boxes, landmarks, scheme, mask)
    image, boxes, landmarks, mask = affine(
        image, boxes, landmarks, params.matrix, hw, landmark_mask=mask, box_mode=self.box_mode,
        mask_outside=self.mask_outside_landmarks, fill=self.fill)
    image = adjust_colors(image, *params.color)
    if params.jpeg_quality is not None:
      image = jpeg(image, params.jpeg_quality)
    out = dict(sample, image=image, boxes=boxes)
    if "landmarks" in sample:
      out["landmarks"] = landmarks
    if "landmark_mask" in sample:
      out["landmark_mask"] = mask
    return out

  def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return self.apply(sample, self.sample_params(rng, np.asarray(sample["image"]).shape[:2]))


def augment_crop(item: dict[str, Any], augmenter: Augmenter, rng: np.random.Generator,
                 relabel: Callable[[int, float], int] | None = None) -> dict[str, Any]:
  """Augments one records.CropSet item (image [S, S, 3], five-point landmarks) at size S.

  An all-zero box (negatives) stays all zero and unknown landmarks stay zero, as CropSet
  stores them. The label is kept unless `relabel(label, iou)` is given: it is then called for
  POSITIVE and PART crops with the IoU of the crop window [0, 0, S, S] and the moved box, so
  a sampling rule can re-apply its thresholds after geometric jitter.
  """
  box = np.asarray(item["box"], np.float32).reshape(4)
  has_box = bool(np.any(box != 0))
  sample = {"image": item["image"], "boxes": box[None] if has_box else np.zeros((0, 4), np.float32),
            "landmarks": np.asarray(item["landmarks"], np.float32).reshape(1, 5, 2),
            "landmark_mask": np.asarray(item["landmark_mask"], bool).reshape(1, 5),
            "scheme": "five"}
  out = augmenter(sample, rng)
  size = int(np.asarray(item["image"]).shape[0])
  new_box = out["boxes"][0] if has_box else np.zeros(4, np.float32)
  label = item["label"]
  if relabel is not None and has_box and int(label) in (records.POSITIVE, records.PART):
    window = np.array([[0, 0, size, size]], np.float32)
    iou = float(geometry.pairwise_iou(window, new_box[None])[0, 0])
    label = relabel(int(label), iou)
  return {"image": out["image"], "label": np.asarray(label, np.asarray(item["label"]).dtype),
          "box": new_box.astype(np.float32), "landmarks": out["landmarks"][0],
          "landmark_mask": out["landmark_mask"][0], "source": item["source"]}
