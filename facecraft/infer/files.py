"""Running a detector over files: expand paths, decode, batch, report bad files, write JSON.

Used by `facecraft detect` and by `facecraft evaluate --model`. Detections are written in the
format the evaluation suite reads: {image_id: [{"box": [x1, y1, x2, y2], "score": s,
"landmarks": [[x, y] x 5]}, ...]} with image ids as the data set names them: the path relative to
a root, '/'-separated, without the extension (FDDB's "2002/08/11/big/img_591").
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from data_pipelines import images as images_lib

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")


def expand_paths(specs: Sequence[str], recursive: bool = True) -> list[str]:
  """Files, folders (their images, recursively) and glob patterns -> sorted unique file paths.

  A spec that matches nothing raises FileNotFoundError naming it, before any work is done.
  """
  out: list[str] = []
  for spec in specs:
    if os.path.isdir(spec):
      found = [os.path.join(d, f) for d, _, files in os.walk(spec) for f in files
               if f.lower().endswith(IMAGE_EXTENSIONS)] if recursive else [
                   os.path.join(spec, f) for f in os.listdir(spec)
                   if f.lower().endswith(IMAGE_EXTENSIONS)]
      out.extend(sorted(found))
    elif os.path.isfile(spec):
      out.append(spec)
    else:
      matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
      if not matches:
        raise FileNotFoundError(f"no such file, folder or matching pattern: {spec}")
      out.extend(matches)
  seen, unique = set(), []
  for p in out:
    key = os.path.abspath(p)
    if key not in seen:
      seen.add(key)
      unique.append(p)
  return unique


def image_id(path: str, root: str | None) -> str:
  rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)) if root else path
  if root is None or rel.startswith(".."):
    rel = os.path.basename(path)
  return os.path.splitext(rel)[0].replace(os.sep, "/")


def detections_to_json(det) -> list[dict[str, Any]]:
  out = []
  for i in range(len(det.scores)):
    item = {"box": [round(float(v), 3) for v in det.boxes[i]], "score": float(det.scores[i])}
    if det.landmarks is not None:
      item["landmarks"] = [[round(float(x), 3), round(float(y), 3)] for x, y in det.landmarks[i]]
    out.append(item)
  return out


def _decoded(items: Iterable[tuple[str, Any]], errors: dict[str, str]
             ) -> Iterator[tuple[str, np.ndarray]]:
  for key, source in items:
    try:
      yield key, images_lib.decode(source)
    except images_lib.ImageDecodeError as e:
      errors[key] = str(e)
      log.warning("skipped %s: %s", key, e)


def run_detector(detector, items: Sequence[tuple[str, Any]], batch_size: int = 8,
                 progress: bool = True, on_result: Callable[[str, np.ndarray, Any], None] | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
  """Detects faces in (key, path|bytes|array) items, a batch at a time.

  Returns ({key: Detections}, {key: error message}); a bad item is reported and skipped, the
  others go on. `on_result(key, image, detections)` sees every decoded image (for drawing).
  """
  results: dict[str, Any] = {}
  errors: dict[str, str] = {}
  bar = tqdm(total=len(items), unit="img", disable=not progress, file=sys.stderr, desc="detect")
  stream = _decoded(items, errors)
  done = 0
  while True:
    chunk = []
    for key, image in stream:
      chunk.append((key, image))
      if len(chunk) == batch_size:
        break
    if not chunk:
      break
    dets = detector.detect_batch([im for _, im in chunk], batch_size=batch_size)
    for (key, image), det in zip(chunk, dets):
      if getattr(det, "error", None):
        errors[key] = det.error
        continue
      results[key] = det
      if on_result is not None:
        on_result(key, image, det)
    bar.update(len(errors) + len(results) - done)
    done = len(errors) + len(results)
  bar.update(len(items) - done)
  bar.close()
  return results, errors
