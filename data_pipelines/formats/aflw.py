"""AFLW (Koestinger et al., 2011): aflw.sqlite with 21 points, face rects, pose and metadata.

Layout of the release: `aflw/data/aflw.sqlite` and the images `aflw/data/flickr/{0,2,3}/*.jpg`;
an image's path is `<folder of the sqlite>/<FaceImages.db_id>/<FaceImages.filepath>` (db_id is
"flickr", filepath e.g. "3/image00002.jpg"), as in the release's matlab/showRectFromDB.m.

Tables read (columns as in the 2012 schema and the facedbsql tools' INSERT statements):
  Faces(face_id, file_id, db_id)            FaceImages(image_id, db_id, file_id, filepath, bw,
  FaceRect(face_id, x, y, w, h, annot_type_id)         width, height)
  FeatureCoords(face_id, feature_id, x, y)  FeatureCoordTypes(feature_id, descr, code, x, y, z)
  FacePose(face_id, roll, pitch, yaw, annot_type_id)   [radians]
  FaceMetaData(face_id, sex, occluded, glasses, bw, annot_type_id)   [sex "m" / "f" / ""]

Points. Scheme "aflw21": index i holds the feature whose code is AFLW21_CODES[i] (feature_id 1..21
in the release; matched by code so that ids never matter). A point absent from FeatureCoords
(AFLW leaves invisible points out) is masked. "Left" / "Right" in the AFLW names are the image's
sides (LeftEyeCenter is the eye on the image's left), the convention geometry.SCHEMES["aflw21"]
and its five-point mapping (LeftEyeCenter, RightEyeCenter, NoseCenter, MouthLeftCorner,
MouthRightCorner) assume.

Coordinates. The annotation tool (Qt, gui/src/ImageViewer.cpp) stores the click position in the
pixmap item's coordinates, whose origin is the top-left corner of the top-left pixel: our frame
already, so points are used as stored; a rect (x, y, w, h) becomes (x, y, x + w, y + h). Rects
were computed from a 3D mean face and may run past the image border (x or y < 0): kept as is.

Faces of one image form one record. attributes: "male" (1 m, 0 f, -1 unknown), "glasses" and
"occluded" (the annotators' check boxes, 0 / 1; -1 when NULL or without a FaceMetaData row).
meta: "pose" float32 [N, 3] (roll, pitch, yaw) in degrees, NaN without a FacePose row;
"face_id" [N].
AFLW has no official split: split must be None.
"""

from __future__ import annotations

import math
import os
import pathlib
import sqlite3
from typing import Any

import numpy as np

from data_pipelines import records

AFLW21_CODES = ("LBLC", "LBC", "LBRC", "RBLC", "RBC", "RBRC", "LELC", "LEC", "LERC", "RELC", "REC",
                "RERC", "LE", "LN", "NC", "RN", "RE", "MLC", "MC", "MRC", "CC")
AFLW21_NAMES = ("LeftBrowLeftCorner", "LeftBrowCenter", "LeftBrowRightCorner",
                "RightBrowLeftCorner", "RightBrowCenter", "RightBrowRightCorner",
                "LeftEyeLeftCorner", "LeftEyeCenter", "LeftEyeRightCorner", "RightEyeLeftCorner",
                "RightEyeCenter", "RightEyeRightCorner", "LeftEar", "NoseLeft", "NoseCenter",
                "NoseRight", "RightEar", "MouthLeftCorner", "MouthCenter", "MouthRightCorner",
                "ChinCenter")
DB_NAME = "aflw.sqlite"
_SEX = {"m": 1, "f": 0, "": -1, None: -1}


def find_db(root: str) -> str:
  """The sqlite file: root itself, root/aflw.sqlite or root/data/aflw.sqlite."""
  for path in (root, os.path.join(root, DB_NAME), os.path.join(root, "data", DB_NAME)):
    if os.path.isfile(path):
      return path
  raise records.AnnotationError(f"no {DB_NAME} in {root} (nor in {root}/data)", root)


def _number(value: Any, db: str, where: str) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return float(value)
  raise records.AnnotationError(f"{where}: {value!r} is not a finite number", db)


def _rows(conn: sqlite3.Connection, db: str, sql: str) -> list[tuple]:
  try:
    return conn.execute(sql).fetchall()
  except sqlite3.Error as e:
    raise records.AnnotationError(f"cannot read the AFLW tables ({e}): {sql}", db) from None


class _Faces:
  """Per-face annotations gathered from all tables; errors are kept with the face they concern."""

  def __init__(self):
    self.rect: dict[int, tuple[float, ...]] = {}
    self.points: dict[int, np.ndarray] = {}
    self.mask: dict[int, np.ndarray] = {}
    self.pose: dict[int, tuple[float, float, float]] = {}
    self.attrs: dict[int, tuple[int, int, int]] = {}
    self.error: dict[int, records.AnnotationError] = {}

  def fail(self, face_id: int, error: records.AnnotationError) -> None:
    self.error.setdefault(face_id, error)


def _read_faces(conn: sqlite3.Connection, db: str) -> _Faces:
  faces = _Faces()
  types = _rows(conn, db, "SELECT feature_id, code FROM FeatureCoordTypes")
  index = {fid: AFLW21_CODES.index(code) for fid, code in types if code in AFLW21_CODES}
  if len(set(index.values())) != len(AFLW21_CODES):
    missing = sorted(set(AFLW21_CODES) - {code for _, code in types})
    raise records.AnnotationError(f"FeatureCoordTypes lacks the codes {missing}", db)

  for rowid, face_id, x, y, w, h in _rows(
      conn, db, "SELECT rowid, face_id, x, y, w, h FROM FaceRect ORDER BY rowid"):
    if face_id in faces.rect:
      continue  # Several rects (annotation types) per face: the first one is the face box.
    try:
      where = f"FaceRect row {rowid} (face_id {face_id})"
      x, y, w, h = (_number(v, db, where) for v in (x, y, w, h))
      if w <= 0 or h <= 0:
        raise records.AnnotationError(f"{where}: width and height must be > 0, got {w} x {h}", db)
      faces.rect[face_id] = (x, y, x + w, y + h)
    except records.AnnotationError as e:
      faces.rect[face_id] = (0, 0, 0, 0)
      faces.fail(face_id, e)

  for rowid, face_id, feature_id, x, y in _rows(
      conn, db, "SELECT rowid, face_id, feature_id, x, y FROM FeatureCoords ORDER BY rowid"):
    k = index.get(feature_id)
    if k is None:
      continue  # Not one of the 21 annotated features (the table also holds 3D-model points).
    pts = faces.points.setdefault(face_id, np.zeros((21, 2), np.float32))
    mask = faces.mask.setdefault(face_id, np.zeros(21, bool))
    where = f"FeatureCoords row {rowid} (face_id {face_id}, {AFLW21_CODES[k]})"
    try:
      if mask[k]:
        raise records.AnnotationError(f"{where}: the point is given twice", db)
      pts[k] = (_number(x, db, where), _number(y, db, where))
      mask[k] = True
    except records.AnnotationError as e:
      faces.fail(face_id, e)

  for rowid, face_id, roll, pitch, yaw in _rows(
      conn, db, "SELECT rowid, face_id, roll, pitch, yaw FROM FacePose ORDER BY rowid"):
    try:
      where = f"FacePose row {rowid} (face_id {face_id})"
      faces.pose.setdefault(face_id, tuple(math.degrees(_number(v, db, where))
                                           for v in (roll, pitch, yaw)))
    except records.AnnotationError as e:
      faces.fail(face_id, e)

  for rowid, face_id, sex, occluded, glasses in _rows(
      conn, db, "SELECT rowid, face_id, sex, occluded, glasses FROM FaceMetaData ORDER BY rowid"):
    where = f"FaceMetaData row {rowid} (face_id {face_id})"
    if sex not in _SEX or occluded not in (0, 1, None) or glasses not in (0, 1, None):
      faces.fail(face_id, records.AnnotationError(
          f"{where}: sex must be 'm'/'f'/'', occluded and glasses 0/1; got "
          f"{sex!r}, {occluded!r}, {glasses!r}", db))
      continue
    faces.attrs.setdefault(face_id, (_SEX[sex], -1 if glasses is None else int(glasses),
                                     -1 if occluded is None else int(occluded)))
  return faces


def load(root: str, split: str | None = None, on_error: str = "raise",
         check_images: bool = True) -> records.RecordList:
  """Reads AFLW: one record per image, all its faces, 21 points each (scheme "aflw21").

  Args:
    root: the folder holding aflw.sqlite (or its parent aflw/, or the sqlite file itself).
    split: must be None (AFLW has no official split).
    on_error: "raise" or "skip" (an image with a bad face is logged, skipped and counted).
    check_images: read each image header into meta["image_size"] and check it against
      FaceImages.width/height; without it meta["image_size"] is the size the database gives.
  """
  if split is not None:
    raise ValueError(f"aflw has no official split; split must be None, got {split!r}")
  policy = records.ErrorPolicy(on_error, "aflw")
  db = find_db(root)
  base = os.path.dirname(os.path.abspath(db))
  conn = sqlite3.connect(pathlib.Path(db).resolve().as_uri() + "?mode=ro", uri=True)
  try:
    faces = _read_faces(conn, db)
    images = {}
    for rowid, db_id, file_id, filepath, width, height in _rows(
        conn, db, "SELECT rowid, db_id, file_id, filepath, width, height FROM FaceImages"):
      images.setdefault((db_id, file_id), (rowid, filepath, width, height))
    groups: dict[tuple, list[int]] = {}
    for face_id, file_id, db_id in _rows(
        conn, db, "SELECT face_id, file_id, db_id FROM Faces ORDER BY face_id"):
      groups.setdefault((db_id, file_id), []).append(face_id)
  finally:
    conn.close()

  out = []
  for key, face_ids in groups.items():
    out.append(policy.run(lambda key=key, face_ids=face_ids: _record(
        db, base, key, images.get(key), face_ids, faces, check_images)))
  return policy.finish(r for r in out if r is not None)


def _record(db: str, base: str, key: tuple, image_row: tuple | None, face_ids: list[int],
            faces: _Faces, check_images: bool) -> records.FaceRecord:
  db_id, file_id = key
  if image_row is None:
    raise records.AnnotationError(
        f"Faces {face_ids} refer to file_id {file_id!r} (db_id {db_id!r}), not in FaceImages", db)
  rowid, filepath, width, height = image_row
  for face_id in face_ids:
    if face_id in faces.error:
      raise faces.error[face_id]
    if face_id not in faces.rect:
      raise records.AnnotationError(f"face_id {face_id} ({file_id}) has no FaceRect row", db)
  n = len(face_ids)
  image = os.path.join(base, str(db_id), str(filepath))
  db_size = None
  if isinstance(width, int) and isinstance(height, int):
    db_size = (int(height), int(width))
  size = db_size
  if check_images:
    size = records.image_size_of(image)
    if db_size is not None and size != db_size:
      raise records.AnnotationError(
          f"FaceImages row {rowid}: {image} is {size[1]}x{size[0]}, the database says "
          f"{db_size[1]}x{db_size[0]}", db)
  zeros21 = np.zeros((21, 2), np.float32)
  attrs = np.array([faces.attrs.get(f, (-1, -1, -1)) for f in face_ids], np.int8).reshape(n, 3)
  meta: dict[str, Any] = {
      "source": db, "face_id": np.array(face_ids, np.int64),
      "pose": np.array([faces.pose.get(f, (np.nan,) * 3) for f in face_ids], np.float32)}
  if size is not None:
    meta["image_size"] = size
  boxes = np.array([faces.rect[f] for f in face_ids], np.float32).reshape(n, 4)
  points = np.stack([faces.points.get(f, zeros21) for f in face_ids])
  mask = np.stack([faces.mask.get(f, np.zeros(21, bool)) for f in face_ids])
  try:
    return records.FaceRecord(
        image=image, boxes=boxes, landmarks=points, landmark_scheme="aflw21", landmark_mask=mask,
        attributes={"male": attrs[:, 0], "glasses": attrs[:, 1], "occluded": attrs[:, 2]},
        image_id=f"{db_id}/{os.path.splitext(str(filepath))[0]}", meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(f"faces {face_ids}: {e.reason}", db) from None
