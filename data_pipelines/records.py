"""FaceRecord: one annotated image, the currency of every reader, sampler and loader.

Conventions (ARCHITECTURE.md): boxes are float32 [N, 4] xyxy pixels with the origin at the
top-left corner of the top-left pixel, so a box read as (x, y, w, h) becomes (x, y, x + w, y + h).
Landmarks are float32 [N, K, 2] (x, y) in the same frame and always carry their scheme name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from data_pipelines import geometry

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")


class AnnotationError(ValueError):
  """A malformed or inconsistent annotation, with the file and line that hold it."""

  def __init__(self, message: str, path: str | None = None, line: int | None = None):
    self.path, self.line, self.reason = path, line, message
    where = ""
    if path is not None:
      where = f"{path}:{line}: " if line is not None else f"{path}: "
    super().__init__(where + message)


@dataclasses.dataclass
class FaceRecord:
  """An image with its faces.

  Attributes:
    image: a file path (str), the encoded bytes of the image, or an already decoded array.
    boxes: float32 [N, 4] xyxy pixels.
    landmarks: float32 [N, K, 2] or None.
    landmark_scheme: name of the point layout ("ibug68", "five", "caltech4", "cmu6", ...) or None.
    landmark_mask: bool [N, K], True where a point is annotated (None when landmarks is None).
    attributes: name -> int8 [N]; -1 means unknown.
    ignore: bool [N]; True for faces that must neither be matched nor counted (and regions
      where negatives must not be sampled).
    image_id: the id the dataset uses for the image (e.g. FDDB "2002/08/11/big/img_591").
    meta: free-form per-image extras (image size, ellipses, source file, ...).
  """

  image: str | bytes
  boxes: np.ndarray
  landmarks: np.ndarray | None = None
  landmark_scheme: str | None = None
  landmark_mask: np.ndarray | None = None
  attributes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  ignore: np.ndarray | None = None
  image_id: str = ""
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
    n = len(self.boxes)
    if self.landmarks is not None:
      self.landmarks = np.asarray(self.landmarks, np.float32)
      if self.landmarks.ndim != 3 or self.landmarks.shape[0] != n or self.landmarks.shape[2] != 2:
        raise AnnotationError(f"landmarks shape {self.landmarks.shape} does not match {n} boxes")
      if self.landmark_scheme is None:
        raise AnnotationError("landmarks given without a landmark_scheme")
      k = geometry.scheme_size(self.landmark_scheme)
      if self.landmarks.shape[1] != k:
        raise AnnotationError(
            f"scheme {self.landmark_scheme!r} has {k} points, landmarks have {self.landmarks.shape[1]}")
      if self.landmark_mask is None:
        self.landmark_mask = np.isfinite(self.landmarks).all(-1)
      self.landmark_mask = np.asarray(self.landmark_mask, bool).reshape(n, k)
      # Unannotated points are stored as 0 so that arithmetic on them never yields NaN.
      self.landmarks = np.where(self.landmark_mask[..., None], self.landmarks, 0).astype(np.float32)
    elif self.landmark_mask is not None:
      raise AnnotationError("landmark_mask given without landmarks")
    self.ignore = (np.zeros(n, bool) if self.ignore is None
                   else np.asarray(self.ignore, bool).reshape(n))
    attrs = {}
    for name, values in self.attributes.items():
      values = np.asarray(values)
      if values.shape != (n,):
        raise AnnotationError(f"attribute {name!r} has shape {values.shape}, expected ({n},)")
      attrs[name] = values if values.dtype == np.int8 else values.astype(np.int8)
    self.attributes = attrs
    self.validate()

  @property
  def num_faces(self) -> int:
    return len(self.boxes)

  @property
  def image_size(self) -> tuple[int, int] | None:
    """(height, width) when the reader recorded it."""
    size = self.meta.get("image_size")
    return None if size is None else (int(size[0]), int(size[1]))

  def validate(self) -> None:
    """Raises AnnotationError for NaN coordinates, inverted boxes or boxes off the image."""
    if not np.isfinite(self.boxes).all():
      raise AnnotationError(f"non-finite box coordinates in {self.image_id or 'record'}")
    bad = (self.boxes[:, 2] < self.boxes[:, 0]) | (self.boxes[:, 3] < self.boxes[:, 1])
    if bad.any():
      raise AnnotationError(
          f"box with x2 < x1 or y2 < y1 in {self.image_id or 'record'}: {self.boxes[bad][0].tolist()}")
    if self.landmarks is not None and not np.isfinite(self.landmarks).all():
      raise AnnotationError(f"non-finite landmark in {self.image_id or 'record'}")
    size = self.image_size
    if size is not None and self.num_faces:
      h, w = size
      # Official sets (FDDB ellipses, WIDER) have faces that run past the border: keep those as
      # annotated; only a box with no pixel inside the image is an annotation error.
      off = ((self.boxes[:, 2] <= 0) | (self.boxes[:, 3] <= 0) |
             (self.boxes[:, 0] >= w) | (self.boxes[:, 1] >= h))
      if off.any():
        raise AnnotationError(
            f"box {self.boxes[off][0].tolist()} lies outside the {w}x{h} image {self.image_id}")

  def load_image(self) -> np.ndarray:
    """Decodes the image to uint8 RGB [H, W, 3]."""
    from data_pipelines import images  # Local: keeps PIL out of code paths that only read annotations.
    return images.decode(self.image)

  def select(self, keep: np.ndarray) -> "FaceRecord":
    """A copy with only the faces where `keep` is True.

    Per-face arrays that readers keep in meta (first dimension = number of faces, e.g. FDDB's
    meta["ellipses"], AFW's meta["pose"]) are subset too.
    """
    keep = np.asarray(keep, bool)
    n = self.num_faces
    meta = {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim and len(v) == n else v)
            for k, v in self.meta.items()}
    return dataclasses.replace(
        self, boxes=self.boxes[keep],
        landmarks=None if self.landmarks is None else self.landmarks[keep],
        landmark_mask=None if self.landmark_mask is None else self.landmark_mask[keep],
        attributes={k: v[keep] for k, v in self.attributes.items()},
        ignore=self.ignore[keep], meta=meta)


class RecordList(list):
  """A list of FaceRecords that also says what the reader skipped and why."""

  def __init__(self, records: Iterable[FaceRecord] = (), skipped: list[str] | None = None):
    super().__init__(records)
    self.skipped: list[str] = list(skipped or [])


class ErrorPolicy:
  """Applies a reader's `on_error`: "raise" re-raises, "skip" logs, counts and goes on."""

  def __init__(self, on_error: str, source: str):
    if on_error not in ON_ERROR_CHOICES:
      raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    self.on_error, self.source = on_error, source
    self.skipped: list[str] = []

  def handle(self, error: Exception) -> None:
    if self.on_error == "raise":
      raise error
    self.skipped.append(str(error))
    log.warning("%s: skipped: %s", self.source, error)

  def run(self, fn: Callable[[], Any]) -> Any:
    """Calls fn(); on AnnotationError/OSError/ValueError applies the policy and returns None."""
    try:
      return fn()
    except (AnnotationError, OSError, ValueError) as e:
      self.handle(e)
      return None

  def finish(self, records: Iterable[FaceRecord]) -> RecordList:
    out = RecordList(records, self.skipped)
    if self.skipped:
      log.warning("%s: %d records loaded, %d bad items skipped", self.source, len(out),
                  len(self.skipped))
    return out


def parse_floats(tokens: list[str], path: str, line: int, count: int | None = None) -> list[float]:
  """Parses numeric tokens, naming the file and line when one is not a finite number."""
  if count is not None and len(tokens) != count:
    raise AnnotationError(f"expected {count} numbers, found {len(tokens)}: {' '.join(tokens)!r}",
                          path, line)
  try:
    values = [float(t) for t in tokens]
  except ValueError:
    raise AnnotationError(f"not a number in {' '.join(tokens)!r}", path, line) from None
  if not all(math.isfinite(v) for v in values):
    raise AnnotationError(f"non-finite number in {' '.join(tokens)!r}", path, line)
  return values


def image_size_of(path: str) -> tuple[int, int]:
  """(height, width) of an image file from its header, with the clear error of data_pipelines.images."""
  from data_pipelines import images
  return images.read_size(path)


def iterate_faces(records: Iterable[FaceRecord]) -> Iterator[tuple[FaceRecord, int]]:
  for record in records:
    for i in range(record.num_faces):
      yield record, i


def summarize(records: list[FaceRecord]) -> dict[str, Any]:
  """Counts used by data_pipelines.inspect and by tests of the readers."""
  faces = sum(r.num_faces for r in records)
  schemes: dict[str, int] = {}
  attrs: dict[str, dict[int, int]] = {}
  for r in records:
    if r.landmark_scheme is not None:
      schemes[r.landmark_scheme] = schemes.get(r.landmark_scheme, 0) + r.num_faces
    for name, values in r.attributes.items():
      counts = attrs.setdefault(name, {})
      for v, c in zip(*np.unique(values, return_counts=True)):
        counts[int(v)] = counts.get(int(v), 0) + int(c)
  return {"images": len(records), "faces": faces,
          "ignored": int(sum(r.ignore.sum() for r in records)),
          "schemes": schemes, "attributes": attrs}


# Sample kinds of training crops (MTCNN's convention, shared by the FaceCraft rule).
NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, -1, -2
# CropSet.source of crops mined through a model (config.data.extra_crops), not sampled from a
# record of the run's sets: the cascade can route them to its later stages only.
MINED_SOURCE = -2


@dataclasses.dataclass
class CropSet:
  """Training crops of one size, the output of data_pipelines.sampling and the input of loader.

  Geometry stays in crop pixels (origin at the crop's top-left corner, crop spans [0, size]) so
  that augmentation can move it; regression targets are encoded only when batches are made.

  Attributes:
    images: uint8 [M, S, S, 3].
    labels: int8 [M]: POSITIVE 1, NEGATIVE 0, PART -1, LANDMARK -2.
    boxes: float32 [M, 4] the matched face box in crop pixels (zeros for negatives).
    landmarks: float32 [M, 5, 2] five points in crop pixels (zeros where unknown).
    landmark_mask: bool [M, 5].
    source: int32 [M] index of the record each crop came from (-1 for synthetic sources).
  """

  images: np.ndarray
  labels: np.ndarray
  boxes: np.ndarray
  landmarks: np.ndarray
  landmark_mask: np.ndarray
  source: np.ndarray

  def __post_init__(self):
    self.images = np.asarray(self.images, np.uint8)
    m = len(self.images)
    if self.images.ndim != 4 or self.images.shape[1] != self.images.shape[2] or (
        m and self.images.shape[3] != 3):
      raise ValueError(f"crop images must be [M, S, S, 3], got {self.images.shape}")
    self.labels = np.asarray(self.labels, np.int8).reshape(m)
    self.boxes = np.asarray(self.boxes, np.float32).reshape(m, 4)
    self.landmarks = np.asarray(self.landmarks, np.float32).reshape(m, 5, 2)
    self.landmark_mask = np.asarray(self.landmark_mask, bool).reshape(m, 5)
    self.source = np.asarray(self.source, np.int32).reshape(m)

  @property
  def size(self) -> int:
    return int(self.images.shape[1])

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index):
    """One crop as a dict of arrays (random access for grain)."""
    return {"image": self.images[index], "label": self.labels[index], "box": self.boxes[index],
            "landmarks": self.landmarks[index], "landmark_mask": self.landmark_mask[index],
            "source": self.source[index]}

  @classmethod
  def concatenate(cls, sets: "list[CropSet]") -> "CropSet":
    sizes = {s.size for s in sets if len(s)}
    if len(sizes) > 1:
      raise ValueError(f"cannot concatenate crops of sizes {sorted(sizes)}")
    fields = [f.name for f in dataclasses.fields(cls)]
    return cls(**{f: np.concatenate([getattr(s, f) for s in sets]) for f in fields})

  def save(self, path: str) -> None:
    np.savez(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

  @classmethod
  def load(cls, path: str) -> "CropSet":
    with np.load(path) as z:
      return cls(**{f.name: z[f.name] for f in dataclasses.fields(cls)})


def read_counted_rows(lines: list[tuple[int, str]], i: int, count: int, is_name: Callable[[str], bool],
                      parse: Callable[[str, str, int], Any], path: str, name: str, count_line: int,
                      noun: str) -> tuple[list | None, AnnotationError | None, int]:
  """Reads the `count` rows after a count line (FDDB and WIDER's "name / count / rows" blocks).

  lines holds (line number, stripped text). Returns (rows, None, next index), or (None, the first
  error, next index) when a row is malformed or the next image name comes too early; the index
  then points past what was read, so parsing can go on with the next image.
  """
  rows, error = [], None
  for k in range(count):
    if i >= len(lines) or is_name(lines[i][1]):
      error = error or AnnotationError(
          f"{name}: the count says {count} faces but {k} {noun} lines follow", path, count_line)
      break
    try:
      rows.append(parse(lines[i][1], path, lines[i][0]))
    except AnnotationError as e:
      error = error or e
    i += 1
  return (None if error else rows), error, i


def read_nonblank_lines(path: str, source: str) -> list[tuple[int, str]]:
  """(1-based line number, stripped text) of every non-blank line; a missing file says so."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{source}: annotation file not found: {path}")
  with open(path, encoding="utf-8") as f:
    return [(i, t.strip()) for i, t in enumerate(f, 1) if t.strip()]


def skip_to_name(lines: list[tuple[int, str]], i: int, is_name: Callable[[str], bool]) -> int:
  """Index of the next image-name line at or after i (len(lines) if none): resynchronises a
  "name / count / rows" file after a malformed block."""
  while i < len(lines) and not is_name(lines[i][1]):
    i += 1
  return i
