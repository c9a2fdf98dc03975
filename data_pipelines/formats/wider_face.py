"""WIDER FACE (Yang et al. 2016), with the RetinaFace five-point landmarks when present.

Layout as distributed::

  <root>/WIDER_{train,val,test}/images/<event>/<file>.jpg
  <root>/wider_face_split/wider_face_{train,val}_bbx_gt.txt
  <root>/wider_face_split/wider_face_test_filelist.txt
  <root>/{train,val}/label.txt       (optional: RetinaFace release, retinaface_gt_v1.1.zip)

`wider_face_*_bbx_gt.txt` is a sequence of blocks: the image path, the number of faces, then one
line per face `x1 y1 w h blur expression illumination invalid occlusion pose` (integers, lines end
with a space). QUIRK: an image with 0 faces still has one line `0 0 0 0 0 0 0 0 0 0` after its
count; it is consumed and yields no face.

Coordinates: WIDER boxes are 0-based pixel (x, y, w, h); they become xyxy (x, y, x + w, y + h)
with no shift (the official evaluation also compares x + w, y + h). RetinaFace landmarks are in
the same frame and are used as given.

Decisions, so that evaluation can follow the official protocol:
  * `invalid == 1` faces and zero-size boxes (w == 0 or h == 0, present in the official files) are
    KEPT with `ignore=True`, not dropped: the official evaluation ignores such ground truth rather
    than forgetting it. The one exception: a zero-size box that touches no pixel of the image
    (e.g. x = w = 0) cannot be represented by a valid FaceRecord; it is dropped and counted in
    `meta["dropped_zero_size"]` (only known when check_images=True).
  * Attributes are stored as int8 under their official names (blur 0-2, expression 0-1,
    illumination 0-1, invalid 0-1, occlusion 0-2, pose 0-1); test images have none.
  * image_id is "<event>/<file>" without the extension, the key of the official evaluation
    (it reads predictions as <event>/<file>.txt and keys them by event and file name).

RetinaFace `label.txt`: blocks of `# <event>/<file>.jpg` followed by one line per face,
`x y w h` (val) or `x y w h lx0 ly0 f0 ... lx4 ly4 f4 score` (train; f = 0 visible, 1 occluded,
and -1 with x = y = -1 for a missing point). Its faces are matched to the official faces by
identical (x, y, w, h), in order; a matched face gets the five points (scheme "five": left eye,
right eye, nose, left and right mouth corners, image left/right) with the mask True for every
annotated point, visible or not. Faces without a match get an all-False mask. Visibility flags
and the trailing score are not kept.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Mapping, Sequence

import numpy as np
import tqdm

from data_pipelines import records

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_ATTRIBUTE_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2,
                  "pose": 1}
_LANDMARK_DIRS = ("{split}", "retinaface_gt_v1.1/{split}", "retinaface_gt/{split}",
                  "WIDER_{split}")

Line = tuple[int, str]  # (1-based line number, stripped text)


def _read_lines(path: str) -> list[Line]:
  return records.read_nonblank_lines(path, "wider_face")


def _is_name(text: str) -> bool:
  """An image path line: one "<event>/<file>" token (every WIDER image sits in an event folder)."""
  return len(text.split()) == 1 and "/" in text


def _next_name(lines: list[Line], i: int) -> int:
  return records.skip_to_name(lines, i, _is_name)


def _parse_face(text: str, path: str, line: int) -> list[float]:
  values = records.parse_floats(text.split(), path, line, 10)
  if values[2] < 0 or values[3] < 0:
    raise records.AnnotationError(f"negative box size in {text!r}", path, line)
  for name, v in zip(ATTRIBUTES, values[4:]):
    if v != int(v) or not 0 <= v <= _ATTRIBUTE_MAX[name]:
      raise records.AnnotationError(
          f"{name} must be an integer in 0..{_ATTRIBUTE_MAX[name]}, got {v:g}", path, line)
  return values


class ImageBlock:
  """One image of a bbx_gt file: its name, where it starts, its face rows or its error."""

  def __init__(self, name: str | None, line: int, rows=None, error=None):
    self.name, self.line, self.error = name, line, error
    self.rows = np.zeros((0, 10)) if rows is None else np.asarray(rows, np.float64).reshape(-1, 10)


def read_bbx_gt(path: str) -> list[ImageBlock]:
  """Parses wider_face_*_bbx_gt.txt; malformed images carry an AnnotationError, parsing goes on."""
  lines = _read_lines(path)
  blocks: list[ImageBlock] = []
  i = 0
  while i < len(lines):
    line, text = lines[i]
    if not _is_name(text):
      blocks.append(ImageBlock(None, line, error=records.AnnotationError(
          f"expected an image path, found {text!r}", path, line)))
      i = _next_name(lines, i + 1)
      continue
    name, i = text, i + 1
    if i >= len(lines):
      blocks.append(ImageBlock(name, line, error=records.AnnotationError(
          f"{name}: missing face count at end of file", path, line)))
      break
    count_line, count_text = lines[i]
    if not count_text.isdigit():
      blocks.append(ImageBlock(name, line, error=records.AnnotationError(
          f"{name}: expected the number of faces, found {count_text!r}", path, count_line)))
      i = _next_name(lines, i)
      continue
    count, i = int(count_text), i + 1
    if count == 0:
      # The official quirk: a zero-face image still has one all-zero face line.
      error = None
      if i < len(lines) and not _is_name(lines[i][1]):
        try:
          if any(records.parse_floats(lines[i][1].split(), path, lines[i][0], 10)):
            error = records.AnnotationError(
                f"{name}: count is 0 but a non-zero face line follows", path, lines[i][0])
        except records.AnnotationError as e:
          error = e
        i += 1
      blocks.append(ImageBlock(name, line, error=error))
      continue
    rows, error, i = records.read_counted_rows(lines, i, count, _is_name, _parse_face, path, name,
                                               count_line, "face")
    blocks.append(ImageBlock(name, line, rows=rows, error=error))
  return blocks


def read_test_filelist(path: str) -> list[ImageBlock]:
  blocks = []
  for line, text in _read_lines(path):
    error = None if _is_name(text) else records.AnnotationError(
        f"expected an image path, found {text!r}", path, line)
    blocks.append(ImageBlock(text if error is None else None, line, error=error))
  return blocks


def read_retinaface_labels(path: str) -> tuple[dict[str, tuple], bool]:
  """Parses a RetinaFace label.txt into {image path: (header line, rows [N, 20] or error)}.

  Rows are padded to 20 columns with -1 when the file has boxes only (val). Returns also whether
  any line carried landmarks.
  """
  lines = _read_lines(path)
  out: dict[str, tuple] = {}
  has_landmarks = False
  name = header = None
  rows: list[list[float]] = []
  error = None

  def close():
    if name is not None:
      out[name] = (header, error if error else np.asarray(rows, np.float64).reshape(-1, 20))

  for line, text in lines:
    if text.startswith("#"):
      close()
      tokens = text[1:].split()
      # "# <path>" (some copies append the image size): the path is the token with a "/".
      paths = [t for t in tokens if "/" in t] or tokens[:1]
      name, header, rows, error = (paths[0] if paths else None), line, [], None
      if name is None:
        error = records.AnnotationError("empty image header", path, line)
      continue
    if name is None:
      raise records.AnnotationError("face line before the first '# <image>' header", path, line)
    tokens = text.split()
    if len(tokens) not in (4, 20):
      error = error or records.AnnotationError(
          f"expected 4 or 20 numbers (x y w h [5 x (x y flag) score]), found {len(tokens)}",
          path, line)
      continue
    try:
      values = records.parse_floats(tokens, path, line)
    except records.AnnotationError as e:
      error = error or e
      continue
    has_landmarks |= len(values) == 20
    rows.append(values + [-1.0] * (20 - len(values)))
  close()
  return out, has_landmarks


def _match_landmarks(gt: np.ndarray, label_rows: np.ndarray):
  """Five points and mask for each official face from the label.txt face with the same box."""
  n = len(gt)
  points = np.zeros((n, 5, 2), np.float32)
  mask = np.zeros((n, 5), bool)
  used = np.zeros(len(label_rows), bool)
  for i in range(n):
    same = np.flatnonzero(~used & (np.abs(label_rows[:, :4] - gt[i, :4]) < 1e-3).all(1))
    if not len(same):
      continue
    j = same[0]
    used[j] = True
    pts = label_rows[j, 4:19].reshape(5, 3)
    missing = ((pts[:, 0] == -1) & (pts[:, 1] == -1)) | (pts[:, 2] < 0)
    points[i] = np.where(missing[:, None], 0, pts[:, :2])
    mask[i] = ~missing
  return points, mask, int((~used).sum())


def _splits(split) -> tuple[str, ...]:
  if split is None:
    return ("train", "val")
  names = (split,) if isinstance(split, str) else tuple(split)
  for s in names:
    if s not in SPLITS:
      raise ValueError(f"wider_face: split must be one of {SPLITS}, got {s!r}")
  return names


def _image_dir(root: str, split: str) -> str:
  official = os.path.join(root, f"WIDER_{split}", "images")
  retina = os.path.join(root, split, "images")  # The RetinaFace repositories' layout.
  return retina if not os.path.isdir(official) and os.path.isdir(retina) else official


def _landmark_file(root: str, split: str, landmarks) -> str | None:
  if landmarks is None or landmarks is False or split == "test":
    return None
  if isinstance(landmarks, Mapping):
    return landmarks.get(split)
  if landmarks != "auto":
    return str(landmarks)
  for pattern in _LANDMARK_DIRS:
    path = os.path.join(root, pattern.format(split=split), "label.txt")
    if os.path.isfile(path):
      return path
  return None


def _build(block: ImageBlock, split: str, image_dir: str, path: str, labels, has_landmarks: bool,
           check_images: bool) -> records.FaceRecord:
  if block.error is not None:
    raise block.error
  rows = block.rows
  x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
  boxes = np.stack([x, y, x + w, y + h], 1)
  attributes = {} if split == "test" else {
      name: rows[:, 4 + k].astype(np.int8) for k, name in enumerate(ATTRIBUTES)}
  zero_size = (w == 0) | (h == 0)
  ignore = zero_size | (rows[:, 7] == 1)
  image = os.path.join(image_dir, block.name)
  meta = {"split": split, "event": block.name.split("/")[0], "source": f"{path}:{block.line}"}
  landmarks = mask = scheme = None
  if labels is not None and has_landmarks:
    scheme = "five"
    entry = labels.get(block.name)
    if entry is None:
      landmarks, mask = np.zeros((len(rows), 5, 2), np.float32), np.zeros((len(rows), 5), bool)
    else:
      if isinstance(entry[1], Exception):
        raise entry[1]
      landmarks, mask, unmatched = _match_landmarks(rows, entry[1])
      meta["unmatched_landmark_faces"] = unmatched
  keep = np.ones(len(rows), bool)
  if check_images:
    meta["image_size"] = records.image_size_of(image)
    height, width = meta["image_size"]
    off = ((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) |
           (boxes[:, 1] >= height))
    keep = ~(zero_size & off)
    meta["dropped_zero_size"] = int((~keep).sum())
  return records.FaceRecord(
      image=image, boxes=boxes[keep].astype(np.float32),
      landmarks=None if landmarks is None else landmarks[keep], landmark_scheme=scheme,
      landmark_mask=None if mask is None else mask[keep],
      attributes={k: v[keep] for k, v in attributes.items()}, ignore=ignore[keep],
      image_id=os.path.splitext(block.name)[0], meta=meta)


def load(root: str, split: str | Sequence[str] | None = None, on_error: str = "raise",
         check_images: bool = True, *, landmarks: str | Mapping[str, str] | None = "auto"
         ) -> records.RecordList:
  """Reads WIDER FACE.

  Args:
    root: the folder holding WIDER_{train,val,test}/ and wider_face_split/.
    split: "train", "val", "test", a sequence of them, or None for train and val.
    on_error: "raise" or "skip" (a malformed image block or a missing image is skipped, counted).
    check_images: read each image's size from its header into meta["image_size"].
    landmarks: "auto" uses <root>/<split>/label.txt (or retinaface_gt_v1.1/<split>/,
      WIDER_<split>/) when present; a path (or {split: path}) names the RetinaFace label file;
      None never reads landmarks.
  """
  names = _splits(split)
  if not isinstance(landmarks, (str, Mapping)) and landmarks not in (None, False):
    raise TypeError("wider_face: landmarks must be 'auto', a path, a mapping or None")
  if isinstance(landmarks, str) and landmarks != "auto" and len(names) > 1:
    raise ValueError("wider_face: a single landmarks path needs a single split")
  policy = records.ErrorPolicy(on_error, "wider_face")
  out = []
  for s in names:
    split_dir = os.path.join(root, "wider_face_split")
    if s == "test":
      path = os.path.join(split_dir, "wider_face_test_filelist.txt")
      blocks = read_test_filelist(path)
    else:
      path = os.path.join(split_dir, f"wider_face_{s}_bbx_gt.txt")
      blocks = read_bbx_gt(path)
    label_path = _landmark_file(root, s, landmarks)
    labels, has_landmarks = None, False
    if label_path is not None:
      labels, has_landmarks = read_retinaface_labels(label_path)
      unknown = set(labels) - {b.name for b in blocks}
      if unknown:
        log.warning("wider_face: %d images of %s are not in %s", len(unknown), label_path, path)
    image_dir = _image_dir(root, s)
    for block in tqdm.tqdm(blocks, desc=f"wider_face {s}", disable=None, leave=False):
      record = policy.run(functools.partial(_build, block, s, image_dir, path, labels,
                                            has_landmarks, check_images))
      if record is not None:
        out.append(record)
  return policy.finish(out)

