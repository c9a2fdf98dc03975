"""FaceCraft's own JSON annotation format (the bundled sample uses it; so can users).

A file `<root>/<name>.json` (default: every *.json directly in root, or root itself when it is
a file) holds::

  {"format": "facecraft-json", "version": 1,
   "images": [{"image": "relative/or/absolute/path.jpg", "image_id": "optional id",
               "faces": [{"box": [x1, y1, x2, y2], "landmarks": [[x, y], ...], "scheme": "five",
                          "ignore": false, "attributes": {"occlusion": 0}}]}]}

Boxes are already in FaceCraft's convention (xyxy pixels, origin at the top-left pixel corner),
so nothing is converted. Landmarks may be null for a face; a point may be null (unannotated).
All faces of an image that carry landmarks must share one scheme.
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines import records
from data_pipelines import geometry

FORMAT_TAG = "facecraft-json"


def _json_files(root: str) -> list[str]:
  if os.path.isfile(root):
    return [root]
  if not os.path.isdir(root):
    raise FileNotFoundError(f"facecraft_json: no such file or directory: {root}")
  files = sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".json"))
  if not files:
    raise FileNotFoundError(f"facecraft_json: no .json annotation file in {root}")
  return files


def _parse_image(entry: dict, path: str, index: int, base: str, check_images: bool):
  where = f"images[{index}]"
  if not isinstance(entry, dict) or "image" not in entry:
    raise records.AnnotationError(f"{where} needs an 'image' field", path)
  image = entry["image"] if os.path.isabs(entry["image"]) else os.path.join(base, entry["image"])
  faces = entry.get("faces", [])
  boxes, points, ignore, schemes, attr_rows = [], [], [], set(), []
  for j, face in enumerate(faces):
    box = face.get("box")
    if box is None or len(box) != 4:
      raise records.AnnotationError(f"{where}.faces[{j}].box must be [x1, y1, x2, y2]", path)
    boxes.append(records.parse_floats([str(v) for v in box], path, None, 4))
    lms = face.get("landmarks")
    if lms is not None:
      schemes.add(face.get("scheme"))
      points.append(np.array([[np.nan, np.nan] if p is None else p for p in lms], np.float64))
    else:
      points.append(None)
    ignore.append(bool(face.get("ignore", False)))
    attr_rows.append(face.get("attributes", {}))
  if len(schemes) > 1 or None in schemes:
    raise records.AnnotationError(f"{where}: landmarks need one shared 'scheme', got {schemes}", path)
  landmarks = mask = scheme = None
  if schemes:
    scheme = schemes.pop()
    k = geometry.scheme_size(scheme)
    landmarks = np.zeros((len(faces), k, 2), np.float32)
    mask = np.zeros((len(faces), k), bool)
    for j, pts in enumerate(points):
      if pts is None:
        continue
      if pts.shape != (k, 2):
        raise records.AnnotationError(f"{where}.faces[{j}]: {scheme} needs {k} points", path)
      landmarks[j], mask[j] = np.nan_to_num(pts), np.isfinite(pts).all(-1)
  names = sorted({n for row in attr_rows for n in row})
  attributes = {n: np.array([row.get(n, -1) for row in attr_rows], np.int8) for n in names}
  meta = {"source": path}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  image_id = entry.get("image_id") or os.path.splitext(os.path.basename(image))[0]
  try:
    return records.FaceRecord(image=image, boxes=np.array(boxes, np.float32).reshape(-1, 4),
                              landmarks=landmarks, landmark_scheme=scheme, landmark_mask=mask,
                              attributes=attributes, ignore=np.array(ignore, bool),
                              image_id=image_id, meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(f"{where}: {e.reason}", path) from None


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         **kw) -> records.RecordList:
  """Reads every image entry; `split` names one json file (without .json) under root."""
  if kw:
    raise TypeError(f"facecraft_json.load got unknown options {sorted(kw)}")
  policy = records.ErrorPolicy(on_error, "facecraft_json")
  files = _json_files(root)
  if split is not None:
    files = [f for f in files if os.path.splitext(os.path.basename(f))[0] == split]
    if not files:
      raise FileNotFoundError(f"facecraft_json: no {split}.json in {root}")
  out = []
  for path in files:
    try:
      with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    except json.JSONDecodeError as e:
      raise records.AnnotationError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_TAG:
      raise records.AnnotationError(f"not a {FORMAT_TAG} file (missing \"format\" tag)", path)
    base = os.path.dirname(path)
    for i, entry in enumerate(doc.get("images", [])):
      record = policy.run(lambda: _parse_image(entry, path, i, base, check_images))  # pylint: disable=cell-var-from-loop
      if record is not None:
        out.append(record)
  return policy.finish(out)


def dump(recs: list[records.FaceRecord], path: str) -> None:
  """Writes records (with file-path images) in this format, paths relative to the file."""
  base = os.path.dirname(os.path.abspath(path))
  images = []
  for r in recs:
    if not isinstance(r.image, str):
      raise ValueError(f"{r.image_id}: only records with image paths can be written as JSON")
    faces = []
    for i in range(r.num_faces):
      face = {"box": [float(v) for v in r.boxes[i]], "ignore": bool(r.ignore[i])}
      if r.landmarks is not None:
        face["scheme"] = r.landmark_scheme
        face["landmarks"] = [[float(x), float(y)] if m else None
                             for (x, y), m in zip(r.landmarks[i], r.landmark_mask[i])]
      if r.attributes:
        face["attributes"] = {n: int(v[i]) for n, v in r.attributes.items()}
      faces.append(face)
    images.append({"image": os.path.relpath(os.path.abspath(r.image), base),
                   "image_id": r.image_id, "faces": faces})
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"format": FORMAT_TAG, "version": 1, "images": images}, f, indent=1)
