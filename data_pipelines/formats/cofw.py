"""COFW (Burgos-Artizzu et al., ICCV 2013): 29 points with occlusion flags, images embedded.

Files, under `root`: COFW_train_color.mat (1345 faces: IsTr, phisTr, bboxesTr) and
COFW_test_color.mat (507 faces: IsT, phisT, bboxesT), MATLAB v7.3, i.e. HDF5 (read with h5py):
  Is*      N x 1 cell of uint8 images, H x W (grayscale) or H x W x 3. HDF5 stores MATLAB's
           column-major arrays transposed: the cell is a (1, N) dataset of object references,
           each image a (W, H) or (3, W, H) dataset, so every array is transposed back.
  phis*    N x 87 (stored 87 x N): 29 x, 29 y, 29 occlusion flags (1 = occluded).
  bboxes*  N x 4 (stored 4 x N): x y w h.
Older v7 files (not HDF5) are read with scipy.io.loadmat, which returns MATLAB's layout as is.

Coordinates are MATLAB's: 1-based, pixel (1, 1) centred at (1, 1), so the image spans
[0.5, W + 0.5]. Our corner frame is that shifted by 0.5: x_ours = x - 0.5, y_ours = y - 0.5,
for the points and the box alike; the box (x, y, w, h) becomes (x - 0.5, y - 0.5, x - 0.5 + w,
y - 0.5 + h).

Scheme "cofw29", the LFPW 29-point order: brows 0-7 (outer 0/1, inner 2/3, top-bottom 4-7), eye
outer corners 8/9, inner 10/11, lids 12-15, pupils 16/17, nose sides 18/19, nose tip 20, nose
bottom 21, mouth corners 22/23, lips 24-27, chin 28; first of each pair on the image's left (the
pairs of geometry.SCHEMES["cofw29"]; the inter-pupil distance of the COFW benchmark is 16-17).
Occluded points are still annotated: they stay in the mask, and meta["occluded"] bool [1, 29]
holds the flags. One face per image; the image is stored as PNG bytes (grayscale kept as such);
image_id "cofw_train/000123" counts from 1, as MATLAB's cell index does.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import records
from data_pipelines import images as fc_images

FILES = {"train": ("COFW_train_color.mat", "IsTr", "phisTr", "bboxesTr"),
         "test": ("COFW_test_color.mat", "IsT", "phisT", "bboxesT")}
NUM_POINTS = 29
MATLAB_OFFSET = -0.5  # MATLAB 1-based pixel centres -> our corner frame.


def _read_v73(path: str, names: tuple[str, str, str]):
  """(list of images, phis [N, 87], bboxes [N, 4]) from a MATLAB v7.3 (HDF5) file."""
  import h5py  # Local: only COFW needs h5py.
  with h5py.File(path, "r") as f:
    for name in names:
      if name not in f:
        raise records.AnnotationError(f"no variable {name!r} (has {sorted(f.keys())})", path)
    refs = np.asarray(f[names[0]]).reshape(-1)
    ims = []
    for ref in refs:
      arr = np.asarray(f[ref])
      ims.append(arr.T if arr.ndim == 2 else np.transpose(arr, (2, 1, 0)))
    return ims, np.asarray(f[names[1]], np.float64).T, np.asarray(f[names[2]], np.float64).T


def _read_v7(path: str, names: tuple[str, str, str]):
  import scipy.io  # Local: only older .mat files need scipy.
  mat = scipy.io.loadmat(path)
  for name in names:
    if name not in mat:
      raise records.AnnotationError(f"no variable {name!r}", path)
  ims = [np.asarray(im) for im in np.asarray(mat[names[0]], object).reshape(-1)]
  return ims, np.asarray(mat[names[1]], np.float64), np.asarray(mat[names[2]], np.float64)


def read_mat(path: str, names: tuple[str, str, str]):
  """Images, phis [N, 87] and bboxes [N, 4] of one COFW file, in MATLAB's row order."""
  if not os.path.isfile(path):
    raise records.AnnotationError("missing COFW file", path)
  import h5py
  reader = _read_v73 if h5py.is_hdf5(path) else _read_v7
  ims, phis, boxes = reader(path, names)
  n = len(ims)
  # A MATLAB N x 87 matrix read without its transpose would be 87 x N: accept either.
  if phis.shape != (n, 3 * NUM_POINTS) and phis.T.shape == (n, 3 * NUM_POINTS):
    phis = phis.T
  if boxes.shape != (n, 4) and boxes.T.shape == (n, 4):
    boxes = boxes.T
  if phis.shape != (n, 3 * NUM_POINTS) or boxes.shape != (n, 4):
    raise records.AnnotationError(
        f"{names[1]} {phis.shape} / {names[2]} {boxes.shape} do not fit {n} images "
        f"({n} x {3 * NUM_POINTS} and {n} x 4 expected)", path)
  return ims, phis, boxes


def _record(split: str, path: str, names: tuple[str, str, str], index: int, image: np.ndarray,
            phi: np.ndarray, box: np.ndarray) -> records.FaceRecord:
  row = index + 1  # MATLAB's 1-based row, as the errors name it.
  where = f"{names[1]} / {names[2]} row {row}"
  if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.shape[2:] not in ((), (3,)):
    raise records.AnnotationError(
        f"{names[0]}{{{row}}} must be a uint8 H x W or H x W x 3 image, got {image.dtype} "
        f"{image.shape}", path, row)
  if not (np.isfinite(phi).all() and np.isfinite(box).all()):
    raise records.AnnotationError(f"{where}: non-finite value", path, row)
  flags = phi[2 * NUM_POINTS:]
  if not np.isin(flags, (0, 1)).all():
    raise records.AnnotationError(f"{where}: occlusion flags must be 0 or 1, got {flags.tolist()}",
                                  path, row)
  if box[2] <= 0 or box[3] <= 0:
    raise records.AnnotationError(f"{where}: box width and height must be > 0, got {box.tolist()}",
                                  path, row)
  points = np.stack([phi[:NUM_POINTS], phi[NUM_POINTS:2 * NUM_POINTS]], -1) + MATLAB_OFFSET
  x, y = box[0] + MATLAB_OFFSET, box[1] + MATLAB_OFFSET
  try:
    return records.FaceRecord(
        image=fc_images.encode_png(image), boxes=[[x, y, x + box[2], y + box[3]]],
        landmarks=points[None], landmark_scheme="cofw29",
        landmark_mask=np.ones((1, NUM_POINTS), bool), image_id=f"cofw_{split}/{row:06d}",
        meta={"source": path, "row": row, "image_size": (image.shape[0], image.shape[1]),
              "occluded": (flags > 0)[None]})
  except records.AnnotationError as e:
    raise records.AnnotationError(f"{where}: {e.reason}", path, row) from None


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         ) -> records.RecordList:
  """Reads COFW: one record per face, image as PNG bytes, 29 points (scheme "cofw29").

  Args:
    root: the folder holding COFW_train_color.mat / COFW_test_color.mat.
    split: "train", "test" or None (train, then test).
    on_error: "raise" or "skip" (a bad row is logged, skipped and counted).
    check_images: kept for the common reader signature; the size is known from the array, so
      meta["image_size"] is always set.
  """
  del check_images
  if split is not None and split not in FILES:
    raise ValueError(f"cofw: split must be None, 'train' or 'test', got {split!r}")
  policy = records.ErrorPolicy(on_error, "cofw")
  out = []
  for name in ([split] if split else list(FILES)):
    filename, *variables = FILES[name]
    path = os.path.join(root, filename)
    ims, phis, boxes = read_mat(path, tuple(variables))
    rows = range(len(ims))
    if len(ims) > 200:
      from tqdm import tqdm  # Local: progress only for the real files.
      rows = tqdm(rows, desc=f"cofw {name} (PNG encoding)", unit="img")
    for i in rows:
      out.append(policy.run(lambda i=i: _record(
          name, path, tuple(variables), i, ims[i], phis[i], boxes[i])))
  return policy.finish(r for r in out if r is not None)
