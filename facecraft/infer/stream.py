"""Running a detector over a whole folder: bucket-grouped batches, results streamed to disk.

    log = stream.ResultLog("dets.jsonl")          # resumes: ids already there are skipped
    todo = [(key, path) for key, path in items if key not in log.done]
    for key, entry in stream.run(detector, todo, batch_size=8):
      log.write(key, entry)

Why grouped: a compiled function is made per (bucket, batch); images of a whole run are sorted
by their bucket (read from file headers, no decoding) before batching, so each bucket compiles
once however the files are ordered, instead of once per input chunk that happens to hold it; the
engine may then merge a rare bucket into a larger one (Engine.merge_buckets: the pyramid engine
does, when asked, where padding its pictures costs less than a compile).
Each bucket runs at one batch size (its group's, see `group_batch`), the last batch padded, so a
bucket never compiles a second, smaller batch. Pictures are decoded by a thread pool one batch
ahead of the detector. Results do not depend on the grouping (Detector: batch, bucket and
companions never change an image's result).

JSON Lines: one line per image, {"id": ..., "faces": [...]} or {"id": ..., "error": "..."},
flushed after every batch, so an interrupted or failing run keeps every finished image and a
rerun resumes where it stopped. A torn last line (a killed writer) is ignored and redone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from data_pipelines import images as images_lib
from facecraft.infer import files

Item = tuple[str, Any]  # (image id, path | bytes | array)


def check_writable_folder(path: str, what: str) -> None:
  """Creates `path` if needed and proves a file can be written there; OSError says why not."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise OSError(f"{what} {path} exists and is not a folder")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".facecraft-write-test-"):
      pass
  except OSError as e:
    raise OSError(f"cannot write {what} {path}: {e.strerror or e}") from None


def check_writable_file(path: str, what: str) -> None:
  """The file's folder must exist and take a new file; the file, if there, must be writable."""
  if os.path.isdir(path):
    raise OSError(f"{what} {path} is a folder, not a file")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise OSError(f"cannot write {what} {path}: folder {folder} does not exist")
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise OSError(f"cannot write {what} {path}: permission denied")
  check_writable_folder(folder, f"{what}'s folder")


class ResultLog:
  """The JSON Lines record of a run; path None keeps it in memory only (output to stdout)."""

  def __init__(self, path: str | None):
    self.path = path
    self.entries: dict[str, dict[str, Any]] = {}
    self._file = None
    if path is not None and os.path.exists(path):
      self._read(path)

  def _read(self, path: str) -> None:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:
          continue  # A torn last line of a killed run: that image is redone.
        if isinstance(entry, dict) and "id" in entry and ("faces" in entry or "error" in entry):
          self.entries[entry["id"]] = entry

  @property
  def done(self) -> set[str]:
    return set(self.entries)

  def write(self, key: str, entry: dict[str, Any]) -> None:
    entry = {"id": key, **entry}
    self.entries[key] = entry
    if self.path is None:
      return
    if self._file is None:
      torn = os.path.exists(self.path) and _ends_without_newline(self.path)
      self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
      if torn:
        self._file.write("\n")
    self._file.write(json.dumps(entry) + "\n")

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def detections_json(self, order: Sequence[str]) -> dict[str, list]:
    """The evaluation format ({id: faces}) of the images with results, in `order`."""
    return {k: self.entries[k]["faces"] for k in order
            if k in self.entries and "faces" in self.entries[k]}

  def errors(self) -> dict[str, str]:
    return {k: e["error"] for k, e in self.entries.items() if "error" in e}


def _ends_without_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return False
    f.seek(-1, os.SEEK_END)
    return f.read(1) != b"\n"


def _size(source) -> tuple[int, int] | None:
  try:
    if isinstance(source, np.ndarray):
      return source.shape[:2]
    return images_lib.read_size(source)
  except (images_lib.ImageDecodeError, OSError, ValueError):
    return None  # Decoding reports it, with the decoder's message.


def group_by_bucket(detector, items: Sequence[Item], pool
                    ) -> tuple[list[tuple[Any, list[Item]]], dict]:
  """Items grouped by the bucket they run in (their header size's bucket, merged by the engine
  for the whole run), groups in bucket order, items in input order; and that merge mapping.
  Unreadable headers form a group of their own (bucket None), decoded to report errors."""
  buckets = [None if size is None else detector.bucket(*size)
             for size in pool.map(lambda it: _size(it[1]), items)]
  counts = collections.Counter(b for b in buckets if b is not None)
  merged = detector.merge_buckets(counts) if counts else {}
  groups: dict[Any, list[Item]] = {}
  for item, bucket in zip(items, buckets):
    groups.setdefault(merged.get(bucket), []).append(item)
  return sorted(groups.items(), key=lambda kv: (kv[0] is None, repr(kv[0]))), merged


def group_batch(count: int, batch_size: int) -> int:
  """The batch a bucket of `count` images runs at: batch_size, or fewer images' power of two."""
  return min(batch_size, 1 << max(count - 1, 0).bit_length())


def plan(detector, items: Sequence[Item], batch_size: int, pool
         ) -> tuple[list[tuple[Any, int, list]], dict]:
  """([(bucket, batch, items)], merge mapping): what a run compiles (a warm-up compiles these)."""
  groups, merged = group_by_bucket(detector, items, pool)
  return [(bucket, group_batch(len(group), batch_size), group) for bucket, group in groups], merged


def _decode_all(detector, chunk: Sequence[Item], pool) -> list[tuple[str, np.ndarray | str]]:
  def one(item):
    try:
      return item[0], detector.decode(item[1])
    except (images_lib.ImageDecodeError, ValueError, OSError) as e:
      return item[0], str(e)
  return list(pool.map(one, chunk))


def _batches(detector, groups, pool, ahead_pool) -> Iterator[tuple[Any, int, list]]:
  """(bucket, batch, decoded chunk) in order; the next chunk decodes while the caller detects."""
  chunks = [(bucket, batch, group[i:i + batch]) for bucket, batch, group in groups
            for i in range(0, len(group), batch)]
  ahead = None
  for n, (bucket, batch, chunk) in enumerate(chunks):
    decoded = ahead.result() if ahead is not None else _decode_all(detector, chunk, pool)
    # A one-thread pool submits the look-ahead: it must not wait on the pool it decodes with.
    ahead = (ahead_pool.submit(_decode_all, detector, chunks[n + 1][2], pool)
             if n + 1 < len(chunks) else None)
    yield bucket, batch, decoded


def run(detector, items: Sequence[Item], batch_size: int = 8, workers: int | None = None,
        on_image: Callable[[str, np.ndarray, Any], None] | None = None
        ) -> Iterator[list[tuple[str, dict[str, Any]]]]:
  """Yields, batch by batch, [(id, {"faces": [...]} or {"error": msg})] for every item.

  on_image(id, image, detections) sees every decoded image (for drawing).
  """
  workers = workers or min(4, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
       concurrent.futures.ThreadPoolExecutor(1) as ahead_pool:
    groups, merged = plan(detector, items, batch_size, pool)
    for _, batch, decoded in _batches(detector, groups, pool, ahead_pool):
      good = [(k, a) for k, a in decoded if isinstance(a, np.ndarray)]
      found = detector.detect_arrays([a for _, a in good], batch_size=batch, pad_batch=True,
                                     merged=merged)
      out = {k: {"error": a} for k, a in decoded if isinstance(a, str)}
      for (key, image), det in zip(good, found):
        out[key] = {"faces": files.detections_to_json(det)}
        if on_image is not None:
          on_image(key, image, det)
      yield [(k, out[k]) for k, _ in decoded]


class Progress:
  """One stderr line per update: done/total, images/s and ETA (of this run's images)."""

  def __init__(self, total: int, resumed: int = 0, enabled: bool = True, every_s: float = 2.0,
               out=None):
    self.total, self.done, self.resumed = total, resumed, resumed
    self.enabled, self.every_s, self.out = enabled, every_s, out or sys.stderr
    self.start = self.last = time.perf_counter()

  def line(self) -> str:
    elapsed = time.perf_counter() - self.start
    rate = (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0
    left = self.total - self.done
    eta = f"{left / rate:.0f} s" if rate > 0 else "?"
    return f"detect: {self.done}/{self.total} images, {rate:.2f} images/s, ETA {eta}"

  def update(self, n: int, final: bool = False) -> None:
    self.done += n
    now = time.perf_counter()
    if self.enabled and (final or now - self.last >= self.every_s):
      self.last = now
      print(self.line(), file=self.out, flush=True)
