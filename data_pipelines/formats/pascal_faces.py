"""PASCAL faces (Yan et al. 2014) as shipped by the face-eval toolbox of Mathias et al. (ECCV 2014).

The toolbox ("Face detection without bells and whistles", bitbucket marcopede/face-eval) ships
`annotations/Annotations_Face_PASCALLayout_large_fixed.mat` (its corrected annotations; the
original ones are `..._large.mat`) and reads it with scipy.io.loadmat: a MATLAB struct array
`Annotations` (N x 1) with fields

  imgname   the image file name (the evaluation keys images by its stem)
  objects   [n, 4] or [n, 6] double rows `x1 y1 x2 y2 [truncated difficult]`

The toolbox turns each row into its VOC record (ymin, xmin, ymax, xmax, truncated, difficult),
pads 4-column rows with zeros, and treats `difficult != 0` as "ignore" (a detection matched to it
is neither a true nor a false positive). The images are PASCAL VOC JPEGs (851 images, 1335 faces
in the original release).

Coordinates: PASCAL VOC convention, 1-based inclusive pixel corners (the toolbox measures widths
as x2 - x1 + 1), converted to xyxy corners (x1 - 1, y1 - 1, x2, y2).

The same struct layout carries the toolbox's re-annotation of AFW (`new_annotations_AFW.mat`),
which data_pipelines.formats.afw reads through `parse_struct_annotations` / `struct_record`.
The MATLAB helpers here (`load_mat_variable`, `as_str`, `as_numbers`) read v5 files (scipy.io)
and v7.3 cell arrays (HDF5, h5py: AFW's anno.mat) into MATLAB orientation.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import h5py
import numpy as np
import scipy.io

from data_pipelines import records

ANNOTATION_FILES = ("Annotations_Face_PASCALLayout_large_fixed.mat",
                    "Annotations_Face_PASCALLayout_large.mat")


# ----------------------------------------------------------------------------- MATLAB files


def _h5_value(f: h5py.File, obj) -> Any:
  """An HDF5 (v7.3) MATLAB value in MATLAB orientation: arrays transposed back, cells as object
  arrays, char arrays as str."""
  cls = obj.attrs.get("MATLAB_class", b"")
  cls = cls.decode() if isinstance(cls, bytes) else str(cls)
  if isinstance(obj, h5py.Group):
    # The toolbox's files are v5; v7.3 structs never occur in the releases read here.
    raise ValueError(f"MATLAB v7.3 {cls or 'group'} {obj.name} is not supported; "
                     "re-save the file with save(..., '-v7')")
  if obj.attrs.get("MATLAB_empty", 0):
    return "" if cls == "char" else np.zeros((0, 0), object if cls == "cell" else np.float64)
  data = obj[()]
  if h5py.check_dtype(ref=obj.dtype):
    out = np.empty(data.shape, object)
    for index in np.ndindex(data.shape):
      out[index] = _h5_value(f, f[data[index]])
    return out.T
  if cls == "char":
    return "".join(map(chr, np.asarray(data).T.ravel()))
  return np.asarray(data).T


def load_mat_variable(path: str, names: Sequence[str]) -> tuple[str, Any]:
  """(name, value) of the first of `names` stored in a .mat file, v5 or v7.3 alike.

  Structs (v5 only) come back as lists of dicts in MATLAB linear order, cells as object arrays,
  numbers in MATLAB orientation.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"annotation file not found: {path}")
  try:
    if h5py.is_hdf5(path):
      with h5py.File(path, "r") as f:
        for name in names:
          if name in f:
            return name, _h5_value(f, f[name])
    else:
      data = scipy.io.loadmat(path)
      for name in names:
        if name in data:
          value = data[name]
          if value.dtype.names:  # A struct array: one dict per element, MATLAB linear order.
            value = [{k: rec[k] for k in value.dtype.names} for rec in value.ravel(order="F")]
          return name, value
  except (OSError, ValueError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as e:
    raise records.AnnotationError(f"cannot read MATLAB file: {e}", path) from None
  raise records.AnnotationError(f"no variable {' or '.join(names)} in the file", path)


def as_str(value: Any) -> str:
  """A MATLAB char array (scipy: array(['...']), h5: str) as a Python str."""
  while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
    value = value.item()
  if isinstance(value, str):
    return value
  arr = np.asarray(value)
  if arr.dtype.kind == "U":
    return "".join(arr.ravel().tolist())
  raise ValueError(f"expected a string, got {arr.dtype} {arr.shape}")


def as_numbers(value: Any) -> np.ndarray:
  while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
    value = value.item()
  arr = np.asarray(value)
  if arr.dtype.kind not in "biuf":
    raise ValueError(f"expected numbers, got {arr.dtype} {arr.shape}")
  return arr.astype(np.float64)


# ----------------------------------------------------------------------------- the toolbox format


def read_struct_annotations(path: str) -> list[tuple[str, np.ndarray | Exception]]:
  """[(imgname, objects [n, k] float64 or the error of that entry)] from an `Annotations` file."""
  return parse_struct_annotations(load_mat_variable(path, ["Annotations"])[1], path)


def parse_struct_annotations(entries: Any, path: str) -> list[tuple[str, np.ndarray | Exception]]:
  """The entries of a loaded `Annotations` struct array (see read_struct_annotations)."""
  if not isinstance(entries, list):
    raise records.AnnotationError("'Annotations' is not a struct array", path)
  out = []
  for i, entry in enumerate(entries):
    where = f"Annotations({i + 1})"  # MATLAB's 1-based index names the entry.
    try:
      name = as_str(entry["imgname"])
      objects = as_numbers(entry["objects"])
      if objects.size == 0:
        objects = np.zeros((0, 4))
      if objects.ndim != 2 or objects.shape[1] not in (4, 5, 6):
        raise ValueError(f"objects must be [n, 4..6], got {objects.shape}")
      out.append((name, objects))
    except (KeyError, ValueError) as e:
      out.append((f"<{where}>", records.AnnotationError(f"{where}: {e}", path)))
  return out


def find_image(name: str, image_dirs: Sequence[str]) -> str:
  base = os.path.basename(name.replace("\\", "/"))
  for d in image_dirs:
    for candidate in (os.path.join(d, name), os.path.join(d, base)):
      if os.path.isfile(candidate):
        return candidate
  return os.path.join(image_dirs[0], base)  # Missing: reported by the image check.


def struct_record(name: str, objects, index: int, path: str, image_dirs: Sequence[str],
                  check_images: bool, source: str) -> records.FaceRecord:
  """One FaceRecord from an (imgname, objects) entry; `source` names the data set in meta."""
  where = f"Annotations({index + 1}) {name}"
  if isinstance(objects, Exception):
    raise objects
  boxes = objects[:, :4] - np.array([1, 1, 0, 0])  # 1-based inclusive -> corner frame.
  attributes = {}
  for column, attr in ((4, "truncated"), (5, "difficult")):
    if objects.shape[1] > column:
      values = objects[:, column]
      if not np.isfinite(values).all() or (values != np.round(values)).any():
        raise records.AnnotationError(f"{where}: {attr} flags must be integers", path)
      attributes[attr] = values.astype(np.int8)
  ignore = attributes["difficult"] != 0 if "difficult" in attributes else None
  image = find_image(name, image_dirs)
  meta = {"source": f"{path}:{where}", "dataset": source}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  try:
    return records.FaceRecord(image=image, boxes=boxes.astype(np.float32), attributes=attributes,
                              ignore=ignore, meta=meta,
                              image_id=os.path.splitext(os.path.basename(name))[0])
  except records.AnnotationError as e:
    raise records.AnnotationError(f"{where}: {e.reason}", path) from None


def _default_annotation(root: str) -> str:
  for folder in (root, os.path.join(root, "annotations")):
    for name in ANNOTATION_FILES:
      if os.path.isfile(os.path.join(folder, name)):
        return os.path.join(folder, name)
  return os.path.join(root, ANNOTATION_FILES[0])


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         *, annotation: str | None = None, image_dir: str | None = None) -> records.RecordList:
  """Reads PASCAL faces from the face-eval toolbox's annotation file.

  Args:
    root: a folder with the annotation file (directly or in annotations/) and the images (in
      images/, JPEGImages/, VOCdevkit/VOC2012/JPEGImages/ or root itself).
    split: PASCAL faces is one test set: None or "test".
    on_error: "raise" or "skip" (a malformed entry or a missing image is skipped, counted).
    check_images: read each image's size from its header into meta["image_size"].
    annotation: the .mat file (default: the "_fixed" file, else the original one, under root).
    image_dir: where the JPEGs are, when not in one of the default places.
  """
  if split not in (None, "test"):
    raise ValueError(f"pascal_faces: the only split is 'test', got {split!r}")
  path = annotation or _default_annotation(root)
  dirs = [image_dir] if image_dir else [
      os.path.join(root, "images"), os.path.join(root, "JPEGImages"),
      os.path.join(root, "VOCdevkit", "VOC2012", "JPEGImages"), root]
  policy = records.ErrorPolicy(on_error, "pascal_faces")
  out = []
  for i, (name, objects) in enumerate(read_struct_annotations(path)):
    record = policy.run(functools.partial(struct_record, name, objects, i, path, dirs,
                                          check_images, "pascal_faces"))
    if record is not None:
      out.append(record)
  return policy.finish(out)
