"""AFW, Annotated Faces in the Wild (Zhu & Ramanan, CVPR 2012): 205 images, 468 faces.

The release (AFW.zip, testimages/) ships `anno.mat`, a MATLAB v7.3 (HDF5) file holding the cell
array `anno`, one row per image (its README):

  anno{i,1}  the image file name, e.g. '1004109301.jpg'
  anno{i,2}  a 1 x n cell of face boxes, each the 2 x 2 matrix [x1 y1; x2 y2]
  anno{i,3}  a 1 x n cell of poses [yaw pitch roll] (stored as given; the benchmark uses yaw)
  anno{i,4}  a 1 x n cell of 6 x 2 landmark matrices, rows (x, y): left eye, right eye, nose,
             left mouth corner, mouth centre, right mouth corner; a missing point is -1 (NaN
             in some copies). Stored as scheme "cmu6", which has exactly this order.

v5 copies of the same cell array (e.g. `anno2.mat` of the face-eval toolbox of Mathias et al.)
are read with scipy.io; the toolbox's re-annotation `new_annotations_AFW.mat` (a struct array
`Annotations`, see pascal_faces) is read too, with boxes only.

Coordinates: MATLAB, 1-based. Boxes are inclusive pixel corners (the AFW/DPM evaluation measures
widths as x2 - x1 + 1), so [x1 y1; x2 y2] -> (x1 - 1, y1 - 1, x2, y2). Landmarks are MATLAB
image coordinates (pixel centres at integers), so (x, y) -> (x - 0.5, y - 0.5).
Which eye is "left" (image or subject) is not stated by the release; it is stored as given.

image_id is the file name without extension, the key of the face-eval toolbox.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from data_pipelines import records
from data_pipelines.formats import pascal_faces

ANNOTATION_FILES = ("anno.mat", "testimages/anno.mat", "annotations/anno2.mat", "anno2.mat",
                    "annotations/new_annotations_AFW.mat", "new_annotations_AFW.mat")


def _cells(value: Any) -> list:
  """The elements of a MATLAB cell (object array) in MATLAB linear order; [] for an empty one."""
  if isinstance(value, np.ndarray) and value.dtype == object:
    return list(value.ravel(order="F"))
  if isinstance(value, np.ndarray) and value.size == 0:
    return []
  return [value]


def _box(value: Any) -> np.ndarray:
  m = pascal_faces.as_numbers(value)
  if m.shape != (2, 2):
    raise ValueError(f"a box must be the 2 x 2 matrix [x1 y1; x2 y2], got shape {m.shape}")
  (x1, y1), (x2, y2) = m
  return np.array([x1 - 1, y1 - 1, x2, y2])  # 1-based inclusive -> corner frame.


def _landmarks(value: Any) -> tuple[np.ndarray, np.ndarray]:
  m = pascal_faces.as_numbers(value)
  if m.size == 0:
    return np.zeros((6, 2)), np.zeros(6, bool)
  if m.shape == (2, 6):
    m = m.T
  if m.shape != (6, 2):
    raise ValueError(f"landmarks must be 6 x 2 (x, y) rows, got shape {m.shape}")
  present = np.isfinite(m).all(1) & ~(m == -1).any(1)
  return np.where(present[:, None], m - 0.5, 0), present  # MATLAB pixel centres -> corner frame.


def _pose(value: Any) -> np.ndarray:
  m = pascal_faces.as_numbers(value)
  if m.size == 0:
    return np.full(3, np.nan)
  if m.size != 3:
    raise ValueError(f"a pose is [yaw pitch roll], got shape {m.shape}")
  return m.ravel()


def _cell_record(row: np.ndarray, index: int, path: str, image_dirs: list[str],
                 check_images: bool) -> records.FaceRecord:
  where = f"anno{{{index + 1},:}}"  # MATLAB's 1-based row index names the entry.
  try:
    name = pascal_faces.as_str(row[0])
    boxes = [_box(b) for b in _cells(row[1])]
    n = len(boxes)
    poses = _cells(row[2]) if len(row) > 2 else []
    points = _cells(row[3]) if len(row) > 3 else []
    if len(poses) not in (0, n) or len(points) not in (0, n):
      raise ValueError(f"{n} boxes but {len(poses)} poses and {len(points)} landmark sets")
    pose = np.array([_pose(p) for p in poses]).reshape(-1, 3) if poses else np.full((n, 3), np.nan)
    marks = [_landmarks(p) for p in points] or [_landmarks(np.zeros((0, 0)))] * n
  except ValueError as e:
    raise records.AnnotationError(f"{where}: {e}", path) from None
  image = pascal_faces.find_image(name, image_dirs)
  meta = {"source": f"{path}:{where}", "pose": pose.astype(np.float32)}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  try:
    return records.FaceRecord(
        image=image, boxes=np.array(boxes, np.float32).reshape(-1, 4),
        landmarks=np.array([m[0] for m in marks], np.float32).reshape(n, 6, 2),
        landmark_scheme="cmu6", landmark_mask=np.array([m[1] for m in marks]).reshape(n, 6),
        image_id=os.path.splitext(os.path.basename(name))[0], meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(f"{where} {name}: {e.reason}", path) from None


def _default_annotation(root: str) -> str:
  for rel in ANNOTATION_FILES:
    if os.path.isfile(os.path.join(root, rel)):
      return os.path.join(root, rel)
  return os.path.join(root, ANNOTATION_FILES[0])


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         *, annotation: str | None = None, image_dir: str | None = None) -> records.RecordList:
  """Reads AFW.

  Args:
    root: the AFW folder (testimages/ or its content: the images and anno.mat).
    split: AFW is one test set: None or "test".
    on_error: "raise" or "skip" (a malformed entry or a missing image is skipped, counted).
    check_images: read each image's size from its header into meta["image_size"].
    annotation: the .mat file: Zhu & Ramanan's anno.mat (v7.3 or v5) or the face-eval toolbox's
      new_annotations_AFW.mat (default: the first of ANNOTATION_FILES found under root).
    image_dir: where the JPEGs are (default: next to the annotation file, root, root/testimages).
  """
  if split not in (None, "test"):
    raise ValueError(f"afw: the only split is 'test', got {split!r}")
  path = annotation or _default_annotation(root)
  dirs = [image_dir] if image_dir else [os.path.dirname(path), root,
                                        os.path.join(root, "testimages")]
  policy = records.ErrorPolicy(on_error, "afw")
  out = []
  kind, value = pascal_faces.load_mat_variable(path, ["anno", "Annotations"])
  if kind == "Annotations":
    for i, (name, objects) in enumerate(pascal_faces.parse_struct_annotations(value, path)):
      record = policy.run(functools.partial(pascal_faces.struct_record, name, objects, i, path,
                                            dirs, check_images, "afw"))
      if record is not None:
        out.append(record)
    return policy.finish(out)
  if not isinstance(value, np.ndarray) or value.dtype != object or value.ndim != 2:
    raise records.AnnotationError("'anno' is not a cell array", path)
  for i, row in enumerate(value):
    record = policy.run(functools.partial(_cell_record, row, i, path, dirs, check_images))
    if record is not None:
      out.append(record)
  return policy.finish(out)
