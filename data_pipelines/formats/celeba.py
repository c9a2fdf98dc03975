"""CelebA (Liu et al., ICCV 2015): boxes, 5 points, 40 attributes, partitions; MAFL subsets.

Files as distributed, under `root`:
  Anno/list_bbox_celeba.txt             count, `image_id x_1 y_1 width height`, rows
  Anno/list_landmarks_celeba.txt        count, `lefteye_x lefteye_y ... rightmouth_y`, rows
  Anno/list_landmarks_align_celeba.txt  the same for the aligned 178x218 crops
  Anno/list_attr_celeba.txt             count, the 40 attribute names, rows of 1 / -1
  Eval/list_eval_partition.txt          `000001.jpg 0` (0 train, 1 val, 2 test), no header
  MAFL/training.txt, MAFL/testing.txt   one CelebA image name a line (19000 / 1000)
  Img/img_celeba/, Img/img_align_celeba/
Fields are separated by runs of spaces (the columns are padded), so every line is split on
whitespace, never on one space.

Coordinates. CelebA gives integer pixels and does not document the origin; we read them as
0-based pixel indices (how torchvision and the MTCNN ports use them, unchanged): a box (x_1, y_1,
width, height) covers pixel columns x_1 .. x_1 + width - 1, i.e. (x_1, y_1, x_1 + width, y_1 +
height) in our corner frame, and a landmark names the pixel that holds it, whose centre is
(x + 0.5, y + 0.5). Scheme "five": CelebA's lefteye is the eye on the image's left (row 000001:
lefteye_x 165 < righteye_x 244; aligned 69 < 106), exactly as the "five" scheme expects.

Aligned crops have no box in CelebA. With aligned=True the in-the-wild box is carried into the
crop: a similarity z -> a z + b (complex least squares) is fitted per image from the in-the-wild
five points to the aligned five points, the box centre is mapped by it and its width and height
are scaled by |a|. The box stays upright: the crops are rotated so that the eyes are level.
So aligned=True reads the in-the-wild box and landmark files as well.

Attributes are stored 1 (attribute present) / 0 (absent); CelebA has no unknowns.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import records

SPLITS = ("train", "val", "test", "mafl_train", "mafl_test")
PARTITION_NAMES = ("train", "val", "test")
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
BBOX_COLUMNS = ("image_id", "x_1", "y_1", "width", "height")
NUM_ATTRIBUTES = 40
# Integer landmark pixels -> their centres in the corner frame (see the module docstring).
LANDMARK_PIXEL_CENTRE = 0.5


class _Table:
  """One annotation file: image names, a float64 value matrix and the line of each row."""

  def __init__(self, path: str, names: np.ndarray, values: np.ndarray, lines: np.ndarray,
               header: list[str] | None, dropped: set[str]):
    self.path, self.names, self.values, self.lines = path, names, values, lines
    self.header = header
    self.dropped = dropped  # Names on malformed lines, already reported through the policy.

  def join(self, names: np.ndarray, policy: records.ErrorPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Row of each of `names` in this table and a found mask; reports names it lacks."""
    if len(names) == len(self.names) and np.array_equal(names, self.names):
      return np.arange(len(names)), np.ones(len(names), bool)
    where = {n: i for i, n in enumerate(self.names.tolist())}
    index = np.array([where.get(n, -1) for n in names.tolist()], np.int64).reshape(-1)
    for n in names[index < 0].tolist():
      if n not in self.dropped:
        policy.handle(records.AnnotationError(f"no row for {n}", self.path))
    return np.maximum(index, 0), index >= 0


def _read_lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise records.AnnotationError("missing CelebA annotation file", path)
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def _parse_rows(path: str, rows: list[str], first_line: int, ncols: int,
                policy: records.ErrorPolicy):
  """`name v1 .. vn` rows -> (names, values [n, ncols], 1-based lines, dropped names, row count).

  Fast path: one split of the whole block and one numpy conversion (CelebA has 202,599 rows);
  any irregularity (a short row, a non-number) falls back to the per-line parser, which names
  the file and line of each bad row.
  """
  kept = [(first_line + i, r) for i, r in enumerate(rows) if r.strip()]
  width = ncols + 1
  flat = " ".join(r for _, r in kept).split()
  if len(flat) == len(kept) * width:
    table = np.array(flat, dtype=object).reshape(len(kept), width)
    try:
      values = table[:, 1:].astype(np.float64)
      if np.isfinite(values).all():
        lines = np.array([ln for ln, _ in kept], np.int64)
        return table[:, 0].astype(str), values, lines, set(), len(kept)
    except ValueError:
      pass
  names, values, good, dropped = [], [], [], set()
  for line, row in kept:
    tokens = row.split()
    try:
      if len(tokens) != width:
        raise records.AnnotationError(
            f"expected an image name and {ncols} numbers, found {len(tokens)} fields", path, line)
      values.append(records.parse_floats(tokens[1:], path, line, ncols))
      names.append(tokens[0])
      good.append(line)
    except records.AnnotationError as e:
      dropped.add(tokens[0] if tokens else "")
      policy.handle(e)
  return (np.array(names, dtype=str), np.array(values, np.float64).reshape(-1, ncols),
          np.array(good, np.int64), dropped, len(kept))


def _read_table(path: str, policy: records.ErrorPolicy, ncols: int,
                header: tuple[str, ...] | None = None, counted: bool = True) -> _Table:
  """Reads a CelebA list: [count line, header line,] then rows."""
  lines = _read_lines(path)
  first, got_header = 0, None
  if counted:
    if not lines or not lines[0].strip().isdigit():
      raise records.AnnotationError("first line must be the number of rows", path, 1)
    got_header = lines[1].split() if len(lines) > 1 else []
    if header is not None and tuple(got_header) != header:
      raise records.AnnotationError(f"header must be {' '.join(header)!r}", path, 2)
    if header is None and len(got_header) != ncols:
      raise records.AnnotationError(
          f"header must name {ncols} columns, it names {len(got_header)}", path, 2)
    first = 2
  names, values, line_numbers, dropped, nrows = _parse_rows(
      path, lines[first:], first + 1, ncols, policy)
  if counted and int(lines[0]) != nrows:
    policy.handle(records.AnnotationError(
        f"the count line says {int(lines[0])} rows, the file has {nrows}", path, 1))
  return _Table(path, names, values, line_numbers, got_header, dropped)


def _read_name_list(path: str) -> list[tuple[str, int]]:
  """MAFL lists: one image name per line (further fields, if any, ignored)."""
  return [(ln.split()[0], i + 1) for i, ln in enumerate(_read_lines(path)) if ln.strip()]


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Batched least-squares 2-D similarity dst = a * src + b on complex numbers; [n, k, 2] each."""
  zs = src[..., 0] + 1j * src[..., 1]
  zd = dst[..., 0] + 1j * dst[..., 1]
  cs = zs - zs.mean(-1, keepdims=True)
  cd = zd - zd.mean(-1, keepdims=True)
  denom = (np.abs(cs) ** 2).sum(-1)
  a = (np.conj(cs) * cd).sum(-1) / np.where(denom > 0, denom, 1)
  b = zd.mean(-1) - a * zs.mean(-1)
  return a, b


def _valid_rows(table: _Table, allowed: tuple[int, ...], what: str,
                policy: records.ErrorPolicy) -> np.ndarray:
  """False for rows holding a value outside `allowed`, each reported with its line."""
  bad = ~np.isin(table.values, allowed).all(1)
  for r in np.flatnonzero(bad):
    policy.handle(records.AnnotationError(
        f"{what} values must be in {allowed}, got {table.values[r].astype(int).tolist()}",
        table.path, int(table.lines[r])))
  return ~bad


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         aligned: bool = False, attributes: bool = True,
         image_dir: str | None = None) -> records.RecordList:
  """Reads CelebA (one face per image).

  Args:
    root: the CelebA folder (holding Anno/, Eval/, Img/ and, for the MAFL splits, MAFL/).
    split: None (all 202,599 images), "train" / "val" / "test" (Eval/list_eval_partition.txt)
      or "mafl_train" / "mafl_test" (the MAFL lists).
    on_error: "raise" or "skip" (bad rows and images are logged, skipped and counted).
    check_images: read each image header into meta["image_size"] (slow for all of CelebA).
    aligned: use Img/img_align_celeba and the aligned landmarks; boxes as in the module doc.
    attributes: read the 40 attributes (1 / 0 int8).
    image_dir: image folder relative to root, overriding the default.
  """
  if split is not None and split not in SPLITS:
    raise ValueError(f"celeba: split must be None or one of {SPLITS}, got {split!r}")
  policy = records.ErrorPolicy(on_error, "celeba")
  anno = os.path.join(root, "Anno")
  bbox = _read_table(os.path.join(anno, "list_bbox_celeba.txt"), policy, 4, BBOX_COLUMNS)
  names = bbox.names
  boxes = np.concatenate([bbox.values[:, :2], bbox.values[:, :2] + bbox.values[:, 2:]], 1)
  wild = _read_table(os.path.join(anno, "list_landmarks_celeba.txt"), policy, 10, LANDMARK_COLUMNS)
  idx, ok = wild.join(names, policy)
  points = wild.values[idx].reshape(-1, 5, 2)
  if aligned:
    table = _read_table(os.path.join(anno, "list_landmarks_align_celeba.txt"), policy, 10,
                        LANDMARK_COLUMNS)
    idx, found = table.join(names, policy)
    ok &= found
    aligned_points = table.values[idx].reshape(-1, 5, 2)
    a, b = _fit_similarity(points, aligned_points)  # The +0.5 shift cancels in a; b absorbs it.
    centre = a * ((boxes[:, 0] + boxes[:, 2]) / 2 + 1j * (boxes[:, 1] + boxes[:, 3]) / 2) + b
    centre += (1 - a) * LANDMARK_PIXEL_CENTRE * (1 + 1j)  # Fit in the corner frame, exactly.
    half = np.abs(a)[:, None] * (boxes[:, 2:] - boxes[:, :2]) / 2
    xy = np.stack([centre.real, centre.imag], 1)
    boxes = np.concatenate([xy - half, xy + half], 1)
    points = aligned_points

  attr_names: list[str] = []
  attr_values = None
  if attributes:
    attr = _read_table(os.path.join(anno, "list_attr_celeba.txt"), policy, NUM_ATTRIBUTES)
    attr_names = list(attr.header)
    valid = _valid_rows(attr, (-1, 1), "attribute", policy)
    idx, found = attr.join(names, policy)
    ok &= found & valid[idx]
    attr_values = (attr.values[idx] > 0).astype(np.int8)

  partition = None
  part_path = os.path.join(root, "Eval", "list_eval_partition.txt")
  if split in PARTITION_NAMES or (split is None and os.path.isfile(part_path)):
    part = _read_table(part_path, policy, 1, counted=False)
    valid = _valid_rows(part, (0, 1, 2), "partition", policy)
    idx, found = part.join(names, policy)
    partition = np.where(found & valid[idx], part.values[idx, 0], -1).astype(np.int64)
    if split in PARTITION_NAMES:
      ok &= partition == PARTITION_NAMES.index(split)

  if split in ("mafl_train", "mafl_test"):
    mafl_file = "training.txt" if split == "mafl_train" else "testing.txt"
    mafl_path = os.path.join(root, "MAFL", mafl_file)
    position = {n: i for i, n in enumerate(names.tolist())}
    chosen = np.zeros(len(names), bool)
    for name, line in _read_name_list(mafl_path):
      if name in position:
        chosen[position[name]] = True
      else:
        policy.handle(records.AnnotationError(f"{name} is not a CelebA image", mafl_path, line))
    ok &= chosen

  folder = image_dir or os.path.join("Img", "img_align_celeba" if aligned else "img_celeba")
  folder = os.path.join(root, folder)
  points = (points + LANDMARK_PIXEL_CENTRE).astype(np.float32)
  boxes = boxes.astype(np.float32)
  rows = np.flatnonzero(ok)
  iterator = rows
  if check_images and len(rows) > 2000:
    from tqdm import tqdm  # Local: only long header scans show progress.
    iterator = tqdm(rows, desc="celeba image headers", unit="img")
  out = []
  for r in iterator:
    out.append(policy.run(lambda r=r: _record(
        names[r], folder, boxes[r], points[r], attr_names, attr_values, r, partition, bbox,
        check_images)))
  return policy.finish(x for x in out if x is not None)


def _record(name: str, folder: str, box: np.ndarray, points: np.ndarray, attr_names: list[str],
            attr_values: np.ndarray | None, row: int, partition: np.ndarray | None,
            bbox: _Table, check_images: bool) -> records.FaceRecord:
  image = os.path.join(folder, name)
  meta = {"source": bbox.path, "line": int(bbox.lines[row])}
  if partition is not None and partition[row] >= 0:
    meta["partition"] = PARTITION_NAMES[int(partition[row])]
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  attrs = {}
  if attr_values is not None:
    attrs = {n: attr_values[row, j:j + 1] for j, n in enumerate(attr_names)}
  try:
    return records.FaceRecord(
        image=image, boxes=box[None], landmarks=points[None], landmark_scheme="five",
        landmark_mask=np.ones((1, 5), bool), attributes=attrs,
        image_id=os.path.splitext(name)[0], meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(e.reason, bbox.path, int(bbox.lines[row])) from None
