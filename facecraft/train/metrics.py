"""Scalar metrics to stdout, workdir/metrics.csv and TensorBoard event files.

metrics.csv is wide: one row per step (step, wall_time, then one column per metric name in
sorted order); a metric missing from a row is an empty cell. When a new metric appears (e.g.
the first eval) the file is rewritten with the wider header. A resumed run drops the rows after its checkpoint
(they are about to be recomputed), and its TensorBoard writer purges those steps the same way
(tensorboardX's purge_step writes SessionLog START, which TensorBoard honours).

Event files come from tensorboardX (pure Python over protobuf, no TensorFlow); without it the
writer warns once and keeps stdout + CSV. read_events reads them back without TensorBoard,
checking each record's CRC-32C.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import struct
import sys
import time
from typing import Mapping

from absl import logging
import numpy as np

CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
_FIXED_COLUMNS = ("step", "wall_time")


def format_scalars(step: int, scalars: Mapping[str, float]) -> str:
  parts = [f"{k}={v:.6g}" for k, v in sorted(scalars.items())]
  return f"[step {step}] " + " ".join(parts)


class MetricWriter:
  """Writes {name: float} per step to stdout, CSV and TensorBoard."""

  def __init__(self, workdir: str, resume_step: int = 0, stdout: bool = True,
               tensorboard: bool = True):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.csv_path = os.path.join(self.workdir, CSV_NAME)
    self.stdout = stdout
    self._columns: list[str] = []
    self._rows: list[dict[str, str]] = []
    if os.path.exists(self.csv_path):
      with open(self.csv_path, newline="") as f:
        reader = csv.DictReader(f)
        self._columns = [c for c in (reader.fieldnames or []) if c not in _FIXED_COLUMNS]
        self._rows = [r for r in reader if r.get("step") and int(r["step"]) <= resume_step]
      self._rewrite()
    self._tb = None
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard events (pip install "
                        "tensorboardX); stdout and %s only", self.csv_path)
      else:
        self._tb = tensorboardX.SummaryWriter(
            logdir=os.path.join(self.workdir, TENSORBOARD_DIR),
            purge_step=resume_step + 1 if resume_step > 0 else None, flush_secs=30,
            # tensorboardX names files by the second: a resume within the same second would
            # overwrite the earlier file. The zero-padded step keeps names unique and sorted.
            filename_suffix=f".from{resume_step:010d}")

  def _rewrite(self) -> None:
    tmp = self.csv_path + ".tmp"
    with open(tmp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=[*_FIXED_COLUMNS, *self._columns])
      writer.writeheader()
      writer.writerows(self._rows)
    os.replace(tmp, self.csv_path)  # Never a half-written file, even when killed here.

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    if self.stdout:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top  # Keeps the bar intact.
      tqdm.write(format_scalars(step, scalars), file=sys.stdout)
      sys.stdout.flush()
    row = {"step": str(int(step)), "wall_time": repr(time.time())}
    row.update({k: repr(v) for k, v in scalars.items()})
    new = sorted(set(scalars) - set(self._columns))
    self._columns = sorted(set(self._columns) | set(new))
    if self._rows and self._rows[-1]["step"] == row["step"]:
      self._rows[-1].update(row)  # One row per step: eval joins the train metrics of its step.
      self._rewrite()
    else:
      self._rows.append(row)
      if new:
        self._rewrite()
      else:
        with open(self.csv_path, "a", newline="") as f:
          csv.DictWriter(f, fieldnames=[*_FIXED_COLUMNS, *self._columns]).writerow(row)
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_csv(path: str) -> dict[str, np.ndarray]:
  """metrics.csv (or its workdir) as {column: float64 array}, NaN where a row lacks the metric."""
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, CSV_NAME)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    names = list(reader.fieldnames or [])
  return {n: np.array([float(r[n]) if r.get(n) not in (None, "") else math.nan for r in rows],
                      np.float64) for n in names}


# ------------------------------------------------------------------------- reading events

_CRC_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # Castagnoli polynomial, reflected.
  _CRC_TABLE.append(_c)


def _crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str):
  """The payloads of a TFRecord file, each checked against its masked CRC-32C."""
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 12]
    if len(header) < 12:
      raise ValueError(f"{path}: truncated record header at byte {pos}")
    (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
    if _masked_crc(header[:8]) != length_crc:
      raise ValueError(f"{path}: bad length CRC at byte {pos}")
    payload = data[pos + 12:pos + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
    if len(payload) != length or _masked_crc(payload) != payload_crc:
      raise ValueError(f"{path}: bad or truncated record at byte {pos}")
    yield payload
    pos += 16 + length


def read_events(path: str) -> dict[str, list[tuple[int, float]]]:
  """Scalars of the event files in `path` (a file or a folder): {tag: [(step, value), ...]},
  with TensorBoard's purge rule applied (a SessionLog START at step s drops earlier-written
  points at steps >= s)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  files = sorted(glob.glob(os.path.join(path, "events.out.tfevents.*"))) if os.path.isdir(
      path) else [path]
  scalars: dict[str, list[tuple[int, float]]] = {}
  for file in files:
    for payload in read_records(file):
      event = event_pb2.Event.FromString(payload)
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        scalars = {t: [(s, v) for s, v in pts if s < event.step] for t, pts in scalars.items()}
      if event.HasField("summary"):
        for value in event.summary.value:
          if value.HasField("simple_value"):
            scalars.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return scalars
