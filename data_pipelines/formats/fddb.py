"""FDDB (Jain & Learned-Miller 2010): 2845 images, 5171 faces annotated as ellipses, 10 folds.

Layout as distributed::

  <root>/FDDB-folds/FDDB-fold-XX-ellipseList.txt     XX = 01..10
  <root>/<name>.jpg  or  <root>/originalPics/<name>.jpg, e.g. 2002/08/11/big/img_591.jpg

Each ellipseList file is a sequence of blocks: the image name without extension, the number of
faces, then per face `major_axis_radius minor_axis_radius angle center_x center_y 1` (the angle is
in radians, from the x axis; the official evaluation turns it into degrees for OpenCV's
cvEllipse, which rotates clockwise on screen because y points down).

Coordinates: the ellipse parameters are kept exactly as written (float32 [N, 5] rows
(ra, rb, theta, cx, cy) in meta["ellipses"]) and the box is the ellipse's exact axis-aligned
bounding box in the same frame::

  half_width  = sqrt(ra^2 cos^2 theta + rb^2 sin^2 theta)
  half_height = sqrt(ra^2 sin^2 theta + rb^2 cos^2 theta)
  box = (cx - half_width, cy - half_height, cx + half_width, cy + half_height)

No half-pixel shift is applied: FDDB's evaluation rasterises the ground-truth ellipses and the
submitted rectangles (x, y, w, h) -> corners (x, y), (x + w, y + h) with the same OpenCV calls
in one frame, so a detection box written back as (x1, y1, x2 - x1, y2 - y1) is compared in the
frame the ellipses were drawn in. Ellipses that run past the image border are kept as annotated.

image_id is the FDDB name (e.g. "2002/08/11/big/img_591"), the key of the official evaluation.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np
import tqdm

from data_pipelines import records

FOLDS = tuple(range(1, 11))

Line = tuple[int, str]


def ellipse_boxes(ellipses: np.ndarray) -> np.ndarray:
  """[N, 5] (ra, rb, theta, cx, cy) -> [N, 4] xyxy exact bounding boxes, in float64."""
  e = np.asarray(ellipses, np.float64).reshape(-1, 5)
  ra, rb, theta, cx, cy = e.T
  cos, sin = np.cos(theta), np.sin(theta)
  half_w = np.sqrt((ra * cos) ** 2 + (rb * sin) ** 2)
  half_h = np.sqrt((ra * sin) ** 2 + (rb * cos) ** 2)
  return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)


def _is_name(text: str) -> bool:
  """An image name line: one "<yyyy>/<mm>/<dd>/big/img_<n>" token."""
  return len(text.split()) == 1 and "/" in text


def _parse_ellipse(text: str, path: str, line: int) -> list[float]:
  tokens = text.split()
  if len(tokens) not in (5, 6):
    raise records.AnnotationError(
        f"expected 'ra rb theta cx cy 1' (6 numbers), found {len(tokens)}: {text!r}", path, line)
  values = records.parse_floats(tokens, path, line)[:5]
  if values[0] <= 0 or values[1] <= 0:
    raise records.AnnotationError(f"ellipse radii must be positive: {text!r}", path, line)
  return values


class ImageBlock:
  """One image of an ellipseList file: its name, where it starts, its ellipses or its error."""

  def __init__(self, name: str | None, line: int, ellipses=None, error=None):
    self.name, self.line, self.error = name, line, error
    self.ellipses = np.asarray(ellipses if ellipses is not None else [], np.float64).reshape(-1, 5)


def read_ellipse_list(path: str) -> list[ImageBlock]:
  """Parses one FDDB-fold-XX-ellipseList.txt; a malformed image carries its AnnotationError."""
  lines: list[Line] = records.read_nonblank_lines(path, "fddb")
  blocks: list[ImageBlock] = []
  i = 0
  while i < len(lines):
    line, text = lines[i]
    if not _is_name(text):
      blocks.append(ImageBlock(None, line, error=records.AnnotationError(
          f"expected an image name, found {text!r}", path, line)))
      i = records.skip_to_name(lines, i + 1, _is_name)
      continue
    name, i = text, i + 1
    if i >= len(lines) or not lines[i][1].isdigit():
      where = lines[i][0] if i < len(lines) else line
      found = repr(lines[i][1]) if i < len(lines) else "end of file"
      blocks.append(ImageBlock(name, line, error=records.AnnotationError(
          f"{name}: expected the number of faces, found {found}", path, where)))
      i = records.skip_to_name(lines, i, _is_name)
      continue
    count_line, count = lines[i][0], int(lines[i][1])
    i += 1
    rows, error, i = records.read_counted_rows(lines, i, count, _is_name, _parse_ellipse, path,
                                               name, count_line, "ellipse")
    blocks.append(ImageBlock(name, line, rows, error))
  return blocks


def _folds(split) -> list[int]:
  if split is None:
    return list(FOLDS)
  folds = list(split) if isinstance(split, (list, tuple, range, np.ndarray)) else [split]
  out = []
  for f in folds:
    ok = (isinstance(f, (int, np.integer)) and not isinstance(f, bool)) or (
        isinstance(f, str) and f.isdigit())
    if not ok or int(f) not in FOLDS:
      raise ValueError(f"fddb: a fold is an integer in 1..10, got {f!r}")
    out.append(int(f))
  return out


def _folds_dir(root: str, folds_dir: str | None) -> str:
  if folds_dir is not None:
    return folds_dir
  for candidate in (os.path.join(root, "FDDB-folds"), root):
    if os.path.isfile(os.path.join(candidate, "FDDB-fold-01-ellipseList.txt")):
      return candidate
  return os.path.join(root, "FDDB-folds")


def _image_dir(root: str, image_dir: str | None) -> str:
  if image_dir is not None:
    return image_dir
  pics = os.path.join(root, "originalPics")
  return pics if os.path.isdir(pics) else root


def _build(block: ImageBlock, fold: int, image_dir: str, image_ext: str, path: str,
           check_images: bool) -> records.FaceRecord:
  if block.error is not None:
    raise block.error
  image = os.path.join(image_dir, block.name + image_ext)
  meta = {"fold": fold, "ellipses": block.ellipses.astype(np.float32),
          "source": f"{path}:{block.line}"}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  try:
    return records.FaceRecord(image=image, boxes=ellipse_boxes(block.ellipses).astype(np.float32),
                              image_id=block.name, meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(e.reason, path, block.line) from None


def load(root: str, split: int | Sequence[int] | None = None, on_error: str = "raise",
         check_images: bool = True, *, folds_dir: str | None = None, image_dir: str | None = None,
         image_ext: str = ".jpg") -> records.RecordList:
  """Reads FDDB.

  Args:
    root: the folder holding FDDB-folds/ and the images (directly or under originalPics/).
    split: a fold number 1..10, a sequence of folds, or None for all ten, read in fold order.
    on_error: "raise" or "skip" (a malformed image block or a missing image is skipped, counted).
    check_images: read each image's size from its header into meta["image_size"].
    folds_dir: where the FDDB-fold-XX-ellipseList.txt files are (default: found under root).
    image_dir: where the 2002/ and 2003/ folders are (default: root/originalPics or root).
    image_ext: the image file extension appended to the FDDB name.
  """
  folds = _folds(split)
  policy = records.ErrorPolicy(on_error, "fddb")
  annotations, images = _folds_dir(root, folds_dir), _image_dir(root, image_dir)
  out = []
  for fold in folds:
    path = os.path.join(annotations, f"FDDB-fold-{fold:02d}-ellipseList.txt")
    for block in tqdm.tqdm(read_ellipse_list(path), desc=f"fddb fold {fold}", disable=None,
                           leave=False):
      record = policy.run(
          functools.partial(_build, block, fold, images, image_ext, path, check_images))
      if record is not None:
        out.append(record)
  return policy.finish(out)
