"""CMU+MIT frontal face test set (Rowley, Baluja, Kanade; Sung, Poggio), as text box files.

Layout (the Brown/Georgia Tech course release)::

  root/ground_truth_bboxes.txt            image x_min y_min x_max y_max   (one line per face)
  root/ground_truth_bboxes_face_only.txt  the same faces, tighter inner-face boxes
  root/ground_truth_landmarks.txt         image + 6 points "x y": left eye, right eye, nose,
                                          left mouth corner, mouth centre, right mouth corner
  root/images/*.jpg                       (or the images directly in root)

Conventions, checked on the data:
  * Boxes are inclusive pixel corners (the course's evaluation adds 1 to widths, as PASCAL VOC),
    so the box covers pixels x_min..x_max and becomes xyxy (x_min, y_min, x_max + 1, y_max + 1).
  * Landmarks are kept as written. Averaged over the 511 faces, the darkest spot of the pupils
    lies half a pixel left of the annotated integer pixel (-0.52 px, both eyes pooled so that
    inward/outward bias cancels), i.e. the numbers are already pixel-corner coordinates, not
    0-based (+0.5) or 1-based (-0.5) pixel indices. The boxes, built by the course around the
    points, are then centred up to 0.5 px on the points' centroid.
  * "left"/"right" are the image's sides for an upright face ("cmu6"); the four upside-down
    faces (playing cards) keep the order of the face, so their "left eye" is on the image right.
  * The landmark file pairs with the box files line by line within each image; it also has
    lines for images that this release does not include: those are ignored.
  * Images in images/ without a line in the box file are kept as face-free records (13 of 130).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from data_pipelines import records

SOURCE = "cmu_mit"
BOX_FILES = {"full": "ground_truth_bboxes.txt", "face_only": "ground_truth_bboxes_face_only.txt"}
LANDMARK_FILE = "ground_truth_landmarks.txt"
SCHEME = "cmu6"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".pgm", ".bmp")


def _image_dir(root: str) -> str:
  sub = os.path.join(root, "images")
  return sub if os.path.isdir(sub) else root


def _read_lines(path: str, n_numbers: int, policy: records.ErrorPolicy):
  """(image name, numbers, line number) per valid line; malformed lines go through the policy."""
  out = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      tokens = line.split()
      if not tokens:
        continue

      def parse(tokens=tokens, number=number):
        if len(tokens) != 1 + n_numbers:
          raise records.AnnotationError(
              f"expected an image name and {n_numbers} numbers, found {len(tokens)} fields",
              path, number)
        return tokens[0], records.parse_floats(tokens[1:], path, number, n_numbers), number

      parsed = policy.run(parse)
      if parsed is not None:
        out.append(parsed)
  return out


def _group(rows) -> "collections.OrderedDict[str, list]":
  groups: collections.OrderedDict[str, list] = collections.OrderedDict()
  for name, values, number in rows:
    groups.setdefault(name, []).append((values, number))
  return groups


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         boxes: str = "full", landmarks: bool = True) -> records.RecordList:
  """Reads the set: one record per image (face-free images included).

  Args:
    root: the folder holding the ground-truth text files.
    split: None (the set has one split; "test" is accepted as its name).
    on_error: "raise" or "skip" (skips malformed lines and unreadable images, counted).
    check_images: read each image header to record meta["image_size"] (h, w) and catch
      missing or unreadable images.
    boxes: "full" (ground_truth_bboxes.txt) or "face_only" (the tighter inner-face boxes).
    landmarks: attach the six points ("cmu6") when the landmark file is present.
  """
  if split not in (None, "test", "all"):
    raise ValueError(f"{SOURCE}: the set has a single split ('test'), got {split!r}")
  if boxes not in BOX_FILES:
    raise ValueError(f"{SOURCE}: boxes must be one of {sorted(BOX_FILES)}, got {boxes!r}")
  box_path = os.path.join(root, BOX_FILES[boxes])
  if not os.path.isfile(box_path):
    raise FileNotFoundError(f"{SOURCE}: no box file {box_path}")
  policy = records.ErrorPolicy(on_error, SOURCE)
  box_groups = _group(_read_lines(box_path, 4, policy))
  lm_path = os.path.join(root, LANDMARK_FILE)
  lm_groups = None
  if landmarks and os.path.isfile(lm_path):
    lm_groups = _group(_read_lines(lm_path, 12, policy))

  image_dir = _image_dir(root)
  names = list(box_groups)
  on_disk = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(_IMAGE_EXTENSIONS))
  listed = set(names)
  names += [f for f in on_disk if f not in listed]  # Pictures without faces.

  out = []
  for name in names:
    record = policy.run(lambda name=name: _record(
        name, image_dir, box_groups.get(name, []), lm_groups, box_path, lm_path, check_images,
        policy))
    if record is not None:
      out.append(record)
  return policy.finish(out)


def _record(name, image_dir, box_rows, lm_groups, box_path, lm_path, check_images, policy):
  n = len(box_rows)
  corners = np.array([values for values, _ in box_rows], np.float64).reshape(n, 4)
  # Inclusive pixel corners: the box covers pixels x_min..x_max.
  xyxy = corners + np.array([0, 0, 1, 1], np.float64)
  meta = {"source": box_path, "lines": [number for _, number in box_rows]}
  points = mask = scheme = None
  if lm_groups is not None:
    scheme = SCHEME
    points = np.zeros((n, 6, 2), np.float32)
    mask = np.zeros((n, 6), bool)
    lm_rows = lm_groups.get(name, [])
    if len(lm_rows) == n:
      if n:
        points[:] = np.array([values for values, _ in lm_rows], np.float32).reshape(n, 6, 2)
        mask[:] = True
    else:
      # Keep the boxes; only the points of this image are unusable.
      first = lm_rows[0][1] if lm_rows else None
      policy.handle(records.AnnotationError(
          f"{name}: {len(lm_rows)} landmark lines for {n} faces; landmarks of this image dropped",
          lm_path, first))
  path = os.path.join(image_dir, name)
  if check_images:
    meta["image_size"] = records.image_size_of(path)
  try:
    return records.FaceRecord(image=path, boxes=xyxy.astype(np.float32), landmarks=points,
                              landmark_scheme=scheme, landmark_mask=mask,
                              image_id=os.path.splitext(name)[0], meta=meta)
  except records.AnnotationError as e:
    line = box_rows[0][1] if box_rows else None
    raise records.AnnotationError(e.reason, box_path, line) from None
