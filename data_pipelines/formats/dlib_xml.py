"""dlib imglab XML (dlib's examples/faces, and any set labelled with imglab).

Format::

  <dataset><images>
    <image file='2008_002470.jpg' width='500' height='332'>
      <box top='181' left='274' width='52' height='53' [ignore='1']>
        <part name='00' x='201' y='107'/> ... (optional; names 00..67 for iBUG 68 points)
      </box>
    </image>
  </images></dataset>

Conventions (dlib's): a rectangle covers pixels left..left+width-1 inclusive, with 0-based pixel
indices, so it becomes xyxy (left, top, left + width, top + height). Part coordinates are
0-based pixel indices (pixel centres at integers), so x_ours = x + 0.5. Boxes with 68 parts
named 0..67 give "ibug68" landmarks; a box without parts in an image where others have them
gets an all-False landmark mask; an image with no parts at all has landmarks None. A part
missing from a box is masked out. `ignore='1'` sets the ignore flag. Image paths are relative
to the XML file. The width/height attributes, when present, are the image size.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from data_pipelines import records

SOURCE = "dlib_xml"
SCHEME = "ibug68"
NUM_POINTS = 68
PART_OFFSET = 0.5  # 0-based pixel centres -> corner coordinates.
SPLITS = ("training", "testing")


def _xml_files(root: str, split, xml) -> list[str]:
  if xml is not None:
    path = xml if os.path.isabs(xml) or os.path.isfile(xml) else os.path.join(root, xml)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{SOURCE}: no such XML file {path}")
    return [path]
  if os.path.isfile(root):
    return [root]
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{SOURCE}: no such folder {root}")
  names = SPLITS if split in (None, "all") else [split]
  files = []
  for name in names:
    if name not in SPLITS:
      raise ValueError(f"{SOURCE}: split must be one of {SPLITS} (or pass xml=), got {name!r}")
    # The landmark file repeats the plain file's boxes and adds the parts.
    for candidate in (f"{name}_with_face_landmarks.xml", f"{name}.xml"):
      path = os.path.join(root, candidate)
      if os.path.isfile(path):
        files.append(path)
        break
    else:
      raise FileNotFoundError(f"{SOURCE}: no {name}.xml in {root}")
  return files


def _int_attr(element, name: str, path: str, where: str) -> int:
  value = element.get(name)
  if value is None:
    raise records.AnnotationError(f"{where}: missing attribute {name!r}", path)
  try:
    return int(float(value))
  except ValueError:
    raise records.AnnotationError(f"{where}: {name}={value!r} is not a number", path) from None


def _parse_image(element, path: str, index: int, check_images: bool) -> records.FaceRecord:
  file_name = element.get("file")
  where = f"image #{index} ({file_name})"
  if not file_name:
    raise records.AnnotationError(f"image #{index} has no 'file' attribute", path)
  image = file_name if os.path.isabs(file_name) else os.path.join(os.path.dirname(path),
                                                                  file_name)
  boxes, ignore, points, masks = [], [], [], []
  for j, box in enumerate(element.findall("box")):
    where_box = f"{where} box #{j}"
    left, top = _int_attr(box, "left", path, where_box), _int_attr(box, "top", path, where_box)
    width = _int_attr(box, "width", path, where_box)
    height = _int_attr(box, "height", path, where_box)
    if width < 0 or height < 0:
      raise records.AnnotationError(f"{where_box}: negative width or height", path)
    boxes.append((left, top, left + width, top + height))
    ignore.append(box.get("ignore", "0").strip() not in ("0", "", "false"))
    pts = np.zeros((NUM_POINTS, 2), np.float64)
    mask = np.zeros(NUM_POINTS, bool)
    for part in box.findall("part"):
      name = part.get("name", "")
      try:
        k = int(name)
      except ValueError:
        raise records.AnnotationError(f"{where_box}: part name {name!r} is not 00..67", path) \
            from None
      if not 0 <= k < NUM_POINTS:
        raise records.AnnotationError(f"{where_box}: part {name!r} outside 00..67", path)
      pts[k] = (_int_attr(part, "x", path, where_box), _int_attr(part, "y", path, where_box))
      mask[k] = True
    points.append(pts + PART_OFFSET)
    masks.append(mask)
  n = len(boxes)
  has_parts = bool(n) and bool(np.any(masks))
  meta = {"source": path}
  if check_images:
    meta["image_size"] = records.image_size_of(image)
  elif element.get("width") and element.get("height"):
    meta["image_size"] = (_int_attr(element, "height", path, where),
                          _int_attr(element, "width", path, where))
  try:
    return records.FaceRecord(
        image=image, boxes=np.array(boxes, np.float32).reshape(n, 4),
        landmarks=np.array(points, np.float32) if has_parts else None,
        landmark_scheme=SCHEME if has_parts else None,
        landmark_mask=np.array(masks) if has_parts else None,
        ignore=np.array(ignore, bool), image_id=os.path.splitext(file_name)[0], meta=meta)
  except records.AnnotationError as e:
    raise records.AnnotationError(f"{where}: {e.reason}", path) from None


def _images_element(path: str):
  try:
    tree = ET.parse(path)
  except ET.ParseError as e:
    raise records.AnnotationError(f"invalid XML: {e}", path, e.position[0]) from None
  images = tree.getroot().find("images")
  if images is None:
    raise records.AnnotationError("no <images> element", path)
  return images


def load(root: str, split: str | None = None, on_error: str = "raise", check_images: bool = True,
         xml: str | None = None) -> records.RecordList:
  """Reads imglab XML: root/{split}[_with_face_landmarks].xml, or an explicit `xml` file.

  Args:
    root: the folder of the XML files (or an XML file).
    split: "training", "testing", or None for both.
    on_error: "raise" or "skip" (bad image entries and unreadable images skipped, counted).
    check_images: read image headers into meta["image_size"] (h, w).
    xml: an explicit XML file (absolute or relative to root); overrides split.
  """
  policy = records.ErrorPolicy(on_error, SOURCE)
  out = []
  for path in _xml_files(root, split, xml):
    images = policy.run(lambda path=path: _images_element(path))
    if images is None:
      continue
    for i, element in enumerate(images.findall("image")):
      record = policy.run(lambda element=element, i=i: _parse_image(element, path, i,
                                                                      check_images))
      if record is not None:
        record.meta["split"] = os.path.basename(path).split("_with_")[0].rsplit(".xml", 1)[0]
        out.append(record)
  return policy.finish(out)
