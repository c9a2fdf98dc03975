"""YouTube Faces frames with 68 keypoints (the Udacity facial-keypoints release).

Layout::

  root/training_frames_keypoints.csv   header ",0,1,...,135"; rows "NAME.jpg,x0,y0,...,x67,y67"
  root/training/NAME.jpg
  root/test_frames_keypoints.csv       (and test/, when present)

One face per row, iBUG 68-point order ("ibug68"). A row's file name may repeat only if the same
frame is annotated twice; such rows become faces of one record.

Pixel convention, checked on the data: the mean of each eye's six contour points lies 1.1 px
right of the darkest spot of the pupil (both eyes pooled over 3462 faces), against 1.25 px for
300-W's 1-based .pts files measured the same way; 0-based points would give about 0.25 px. So
the numbers are 1-based pixel centres like 300-W: x_ours = x - 0.5, y_ours = y - 0.5. Boxes are
the tight box around the 68 points (`box_rule`, `box_scale` as in pts68).
"""

from __future__ import annotations

import collections
import csv
import os

import numpy as np

from data_pipelines import records
from data_pipelines.formats import pts68

SOURCE = "youtube68"
SCHEME = "ibug68"
POINT_OFFSET = -0.5
SPLITS = ("training", "test")


def load(root: str, split: str | None = "training", on_error: str = "raise",
         check_images: bool = True, box_rule: str = "landmarks",
         box_scale: float = 1.0) -> records.RecordList:
  """Reads <split>_frames_keypoints.csv; split None means "training".

  Args:
    root: the folder holding the CSV files and the image folders.
    split: "training" or "test".
    on_error: "raise" or "skip" (malformed rows and unreadable images skipped, counted).
    check_images: read image headers into meta["image_size"] (h, w).
    box_rule, box_scale: box from the points, see data_pipelines.formats.pts68.
  """
  split = split or "training"
  if split not in SPLITS:
    raise ValueError(f"{SOURCE}: split must be one of {SPLITS}, got {split!r}")
  path = os.path.join(root, f"{split}_frames_keypoints.csv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{SOURCE}: no keypoint file {path}")
  image_dir = os.path.join(root, split)
  policy = records.ErrorPolicy(on_error, SOURCE)
  faces: collections.OrderedDict[str, list] = collections.OrderedDict()
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise records.AnnotationError("empty file", path, 1)
    width = 1 + 2 * pts68.NUM_POINTS
    if len(header) != width:
      raise records.AnnotationError(
          f"header has {len(header)} columns, expected {width} (file + 68 x/y pairs)", path, 1)
    for row in reader:
      number = reader.line_num
      if not row or not any(cell.strip() for cell in row):
        continue

      def parse(row=row, number=number):
        if len(row) != width:
          raise records.AnnotationError(f"expected {width} columns, found {len(row)}", path,
                                        number)
        if not row[0].strip():
          raise records.AnnotationError("empty file name", path, number)
        return records.parse_floats(row[1:], path, number, width - 1)

      values = policy.run(parse)
      if values is not None:
        faces.setdefault(row[0].strip(), []).append((values, number))

  out = []
  for name, rows in faces.items():
    record = policy.run(lambda name=name, rows=rows: _record(
        name, rows, image_dir, path, check_images, box_rule, box_scale))
    if record is not None:
      out.append(record)
  return policy.finish(out)


def _record(name, rows, image_dir, path, check_images, box_rule, box_scale):
  points = np.array([v for v, _ in rows], np.float64).reshape(-1, pts68.NUM_POINTS, 2)
  points = points + POINT_OFFSET
  meta = {"source": path, "lines": [number for _, number in rows]}
  image = os.path.join(image_dir, name)
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  try:
    return records.FaceRecord(
        image=image, boxes=pts68.boxes_from_points(points, None, box_rule, box_scale),
        landmarks=points.astype(np.float32), landmark_scheme=SCHEME,
        image_id=os.path.splitext(name)[0], meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(e.reason, path, rows[0][1]) from None
