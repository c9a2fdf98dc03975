"""300-W style folders: each face is an image plus a same-named iBUG .pts file (68 points).

A .pts file is either the iBUG form::

  version: 1
  n_points:  68
  {
  80.156 109.166
  ...
  }

or headerless (just 68 lines "x y", as some redistributions ship them). One record per .pts file:
300-W's AFW repeats a multi-face photo once per face (1051618982_1.jpg / _2.jpg), so a record
holds one face and other faces in the picture are unlabelled. The image is the file with the
same stem (.jpg/.png/...; for "NAME_01.pts" also "NAME.jpg", as iBUG names them). Menpo's
.ljson files (LJSON v3, points stored (y, x) in menpo's 0-based pixel-centre frame) are read
for images that have no .pts.

Conventions: .pts points are 1-based pixel coordinates (MATLAB; menpo's importer subtracts 1),
so the pixel centre lies at x - 1 + 0.5 in FaceCraft's corner coordinates: x_ours = x - 0.5,
y_ours = y - 0.5. LJSON points: x_ours = x + 0.5. Scheme "ibug68" (36-41 is the eye on the
image's left). Boxes come from the points (`box_rule`):
  "landmarks": the tight box around the 68 points (ear to ear at the jaw, brows to chin),
  "square":    that box grown to a square about its centre,
  "caltech4":  Caltech WebFaces' rule on the eye / nose / mouth centres (geometry.ibug68_boxes),
               so that 300-W and Caltech agree on what a face box is (the detection training sets),
each scaled about its centre by `box_scale`.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from data_pipelines import records
from data_pipelines import geometry

SOURCE = "pts68"
SCHEME = "ibug68"
NUM_POINTS = 68
PTS_OFFSET = -0.5  # 1-based pixel centres -> corner coordinates.
LJSON_OFFSET = 0.5  # menpo 0-based pixel centres -> corner coordinates.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff")
BOX_RULES = ("landmarks", "square", "caltech4")


def read_pts(path: str) -> np.ndarray:
  """The raw points [K, 2] of a .pts file (as written, 1-based), with or without its header."""
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().splitlines()
  declared = None
  body: list[tuple[int, str]] = []
  in_braces = False
  has_header = any(line.strip().startswith("{") for line in lines)
  for number, raw in enumerate(lines, 1):
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    if has_header and not in_braces:
      if line.startswith("{"):
        in_braces = True
      elif line.lower().startswith("n_points"):
        try:
          declared = int(line.split(":", 1)[1])
        except (IndexError, ValueError):
          raise records.AnnotationError(f"bad header line {line!r}", path, number) from None
      elif line.lower().startswith("version"):
        pass
      elif line.startswith("}"):
        break
      else:
        raise records.AnnotationError(f"unexpected header line {line!r}", path, number)
      continue
    if line.startswith("}"):
      in_braces = False
      has_header = False  # Anything after the closing brace is not a point.
      break
    body.append((number, line))
  if has_header and in_braces:
    raise records.AnnotationError("missing closing '}'", path, len(lines))
  points = np.array([records.parse_floats(line.split(), path, number, 2) for number, line in body],
                    np.float64).reshape(-1, 2)
  if declared is not None and declared != len(points):
    raise records.AnnotationError(f"header says {declared} points, file has {len(points)}", path)
  return points


def read_ljson(path: str) -> np.ndarray:
  """The 68 points [68, 2] (x, y) of a menpo LJSON file, in menpo's 0-based pixel-centre frame."""
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except json.JSONDecodeError as e:
    raise records.AnnotationError(f"invalid JSON: {e.msg}", path, e.lineno) from None
  version = doc.get("version") if isinstance(doc, dict) else None
  if version == 3:
    groups = [g["landmarks"]["points"] for g in doc.get("groups", {}).values()]
  elif version == 2:
    groups = [doc["landmarks"]["points"]]
  else:
    raise records.AnnotationError(f"unsupported LJSON version {version!r}", path)
  for pts in groups:
    if len(pts) == NUM_POINTS:
      yx = np.array([[np.nan, np.nan] if p is None or None in p else p for p in pts], np.float64)
      return yx[:, ::-1].copy()
  raise records.AnnotationError(f"no group of {NUM_POINTS} points", path)


def find_image(stem: str) -> str | None:
  """The image beside an annotation file stem (also NAME.jpg for NAME_01.pts)."""
  candidates = [stem]
  match = re.match(r"(.*)_\d+$", stem)
  if match:
    candidates.append(match.group(1))
  for base in candidates:
    for ext in IMAGE_EXTENSIONS:
      for e in (ext, ext.upper()):
        if os.path.isfile(base + e):
          return base + e
  return None


def boxes_from_points(points: np.ndarray, mask: np.ndarray | None = None,
                      box_rule: str = "landmarks", box_scale: float = 1.0) -> np.ndarray:
  """Boxes [N, 4] around landmarks [N, K, 2] by `box_rule` (one of BOX_RULES)."""
  if box_rule not in BOX_RULES:
    raise ValueError(f"box_rule must be one of {BOX_RULES}, got {box_rule!r}")
  if box_rule == "caltech4":
    return geometry.ibug68_boxes(points, box_scale, mask)
  boxes = geometry.landmark_bbox(points, mask)
  if box_rule == "square":
    boxes = geometry.square_boxes(boxes)
  if box_scale != 1.0:
    boxes = geometry.scale_boxes(boxes, box_scale)
  return np.asarray(boxes, np.float32)


def _splits(root: str, split) -> list[str]:
  if split is None:
    return [root]
  names = [split] if isinstance(split, str) else list(split)
  names = [n for name in names for n in str(name).split(",") if n]
  folders = [os.path.join(root, n) for n in names]
  for folder in folders:
    if not os.path.isdir(folder):
      known = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
      raise FileNotFoundError(f"{SOURCE}: no split folder {folder}; folders: {known}")
  return folders


def _annotation_files(folder: str, recursive: bool, ljson: bool) -> list[str]:
  found = []
  walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
  for directory, subdirs, files in walker:
    subdirs.sort()
    stems_with_pts = {f[:-4] for f in files if f.endswith(".pts")}
    for f in sorted(files):
      if f.endswith(".pts") or (ljson and f.endswith(".ljson") and f[:-6] not in stems_with_pts):
        found.append(os.path.join(directory, f))
  return found


def load(root: str, split=None, on_error: str = "raise", check_images: bool = True,
         box_rule: str = "landmarks", box_scale: float = 1.0, recursive: bool = True,
         ljson: bool = True) -> records.RecordList:
  """One record per annotation file under root (or under root/<split> for each split).

  Args:
    root: a folder of images and .pts files, searched recursively.
    split: None (everything), a subfolder name, a comma-separated string or a list of them
      (e.g. "afw,helen_trainset").
    on_error: "raise" or "skip" (bad .pts, missing or unreadable images skipped, counted).
    check_images: read image headers into meta["image_size"] (h, w).
    box_rule, box_scale: how boxes are derived from the points (see the module docstring).
    recursive: search subfolders.
    ljson: also read menpo .ljson files of images that have no .pts.
  """
  if box_rule not in BOX_RULES:
    raise ValueError(f"{SOURCE}: box_rule must be one of {BOX_RULES}, got {box_rule!r}")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{SOURCE}: no such folder {root}")
  policy = records.ErrorPolicy(on_error, SOURCE)
  out = []
  for folder in _splits(root, split):
    for path in _annotation_files(folder, recursive, ljson):
      record = policy.run(lambda path=path: _record(path, root, check_images, box_rule, box_scale))
      if record is not None:
        out.append(record)
  return policy.finish(out)


def _record(path, root, check_images, box_rule, box_scale):
  if path.endswith(".ljson"):
    points = read_ljson(path) + LJSON_OFFSET
    stem = path[:-6]
  else:
    points = read_pts(path) + PTS_OFFSET
    stem = path[:-4]
  if len(points) != NUM_POINTS:
    raise records.AnnotationError(f"expected {NUM_POINTS} points, found {len(points)}", path)
  mask = np.isfinite(points).all(-1)
  image = find_image(stem)
  if image is None:
    raise records.AnnotationError("no image with the same name beside it", path)
  meta = {"source": path}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  points = np.where(mask[:, None], points, 0)[None].astype(np.float32)
  try:
    return records.FaceRecord(
        image=image, boxes=boxes_from_points(points, mask[None], box_rule, box_scale),
        landmarks=points, landmark_scheme=SCHEME, landmark_mask=mask[None],
        image_id=os.path.relpath(stem, root), meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(e.reason, path) from None
