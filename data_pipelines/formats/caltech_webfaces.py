"""Caltech 10,000 Web Faces (Fink & Perona): four points per face, boxes derived from them.

Layout::

  root/WebFaces_GroundThruth.txt   image leye_x leye_y reye_x reye_y nose_x nose_y mouth_x mouth_y
  root/images/pic00001.jpg ...     (or the pictures directly in root)

One line per face; a picture with several faces has several lines.

Conventions, checked on the data:
  * "Left eye" is the eye on the image's left (leye_x < reye_x on all 10524 faces): scheme
    "caltech4" (left eye, right eye, nose, mouth centre). The nose point sits lower than the
    iBUG nose tip (nose-to-eyes / mouth-to-eyes is 0.69 here, 0.52 for iBUG point 30).
  * Points are 1-based pixel indices (MATLAB): averaged over 4125 faces of unscaled pictures, the
    darkest spot of the pupils lies 1.0 px left of the annotated value (both eyes pooled), i.e.
    at 0-based pixel x - 1 whose centre is x - 0.5 in FaceCraft's corner coordinates. So
    x_ours = x - 0.5, y_ours = y - 0.5. (Pictures the release scaled to 480 px had their numbers
    scaled, which leaves at most half a pixel of that shift unaccounted for.)

Box rule (BOX_RULE; fitted, then checked by eye on montages): with e the midpoint of the eyes,
m the mouth, iod the inter-ocular distance and em = |m - e|, the box is the square of side
max(2.2 * iod, 2.0 * em) centred at e + 0.6 * (m - e). Fitted on 5474 faces with 68 points
(300-W train + YouTube 68) to the tight box of the 68 points (ear to ear at the jaw, brows to
chin), the rule reaches a mean IoU of 0.83 on frontal faces; the max() keeps profile-ish faces,
whose eyes come close together, from getting small boxes. `box_scale` grows it about its centre.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from data_pipelines import geometry
from data_pipelines import records

SOURCE = "caltech_webfaces"
ANNOTATION_FILE = "WebFaces_GroundThruth.txt"
SCHEME = "caltech4"
# The face box rule lives in geometry (300-W boxes use it too).
BOX_RULE = geometry.CALTECH4_BOX_RULE
# 1-based pixel indices -> pixel-corner coordinates of the pixel centre.
POINT_OFFSET = -0.5
boxes_from_points = geometry.caltech4_boxes


def _image_dir(root: str) -> str:
  sub = os.path.join(root, "images")
  return sub if os.path.isdir(sub) else root


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         box_scale: float = 1.0) -> records.RecordList:
  """One record per annotated picture, in the order of first appearance in the file.

  Args:
    root: the folder holding WebFaces_GroundThruth.txt.
    split: None (the set has no official split).
    on_error: "raise" or "skip" (malformed lines and unreadable pictures are skipped, counted).
    check_images: read picture headers into meta["image_size"] (h, w); catches missing files.
    box_scale: factor applied to the derived boxes about their centres.
  """
  if split not in (None, "all"):
    raise ValueError(f"{SOURCE}: the set has no splits, got {split!r}")
  path = os.path.join(root, ANNOTATION_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{SOURCE}: no annotation file {path}")
  policy = records.ErrorPolicy(on_error, SOURCE)
  faces: collections.OrderedDict[str, list] = collections.OrderedDict()
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      tokens = line.split()
      if not tokens:
        continue

      def parse(tokens=tokens, number=number):
        if len(tokens) != 9:
          raise records.AnnotationError(
              f"expected an image name and 8 numbers, found {len(tokens)} fields", path, number)
        return records.parse_floats(tokens[1:], path, number, 8)

      values = policy.run(parse)
      if values is not None:
        faces.setdefault(tokens[0], []).append((values, number))

  image_dir = _image_dir(root)
  out = []
  for name, rows in faces.items():
    record = policy.run(lambda name=name, rows=rows: _record(
        name, rows, image_dir, path, check_images, box_scale))
    if record is not None:
      out.append(record)
  return policy.finish(out)


def _record(name, rows, image_dir, path, check_images, box_scale):
  points = np.array([values for values, _ in rows], np.float64).reshape(-1, 4, 2) + POINT_OFFSET
  meta = {"source": path, "lines": [number for _, number in rows]}
  image = os.path.join(image_dir, name)
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  try:
    return records.FaceRecord(image=image, boxes=boxes_from_points(points, box_scale),
                              landmarks=points.astype(np.float32), landmark_scheme=SCHEME,
                              image_id=os.path.splitext(name)[0], meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(e.reason, path, rows[0][1]) from None
