"""What every evaluator shares: settings, ground truth, running a predict_fn, saved-file input.

An evaluator scores one protocol on one dataset. It never runs a model: the caller hands it
`predict_fn(list of uint8 RGB arrays [H, W, 3]) -> list of predictions`, one per image, each
with `.boxes [N, 4]` (xyxy pixels) and `.scores [N]` (and `.landmarks [N, K, 2]` for "nme").

  ev = evaluators.create("cmu_mit", root="../shared/data/cmu_mit_frontal", fp_points=(10, 100))
  metrics = ev.run(predict_fn)      # JSON-able dict; ev.result holds the full result object
  metrics = ev.score(dets)          # {image_id: (boxes, scores)}: detections already made
  metrics = ev.score_file(path)     # a `facecraft detect` JSON (what `evaluate --detections` reads)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_pipelines import formats
from data_pipelines import images as images_lib

log = logging.getLogger("facecraft.eval.evaluators")

PredictFn = Callable[[list], Sequence[Any]]


class EvaluationError(ValueError):
  """Bad evaluation input (file, ids, options), said in words a user can act on."""


# ------------------------------------------------------------------ saved files


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  # json.loads would keep the last of two equal keys: half an image's detections, silently lost.
  out = dict(pairs)
  if len(out) != len(pairs):
    seen = set()
    dup = next(k for k, _ in pairs if k in seen or seen.add(k))
    raise EvaluationError(f"the key {dup!r} appears twice in one object")
  return out


def read_json(path: str, what: str) -> dict[str, Any]:
  """The {image_id: [faces]} object of a predictions file; clear errors for anything else."""
  if not os.path.isfile(path):
    raise EvaluationError(f"{what} file not found: {path}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not text.strip():
    raise EvaluationError(f"{what} file {path} is empty")
  try:
    doc = json.loads(text, object_pairs_hook=_unique_keys)
  except json.JSONDecodeError as e:
    raise EvaluationError(f"{what} file {path} is not JSON: {e.msg} at line {e.lineno}") from None
  except EvaluationError as e:
    raise EvaluationError(f"{what} file {path}: {e}") from None
  if not isinstance(doc, dict):
    raise EvaluationError(f"{what} file {path}: expected an object {{image_id: [faces]}}, got "
                          f"{type(doc).__name__}")
  if not doc:
    raise EvaluationError(f"{what} file {path} lists no image; a detector that finds nothing "
                          f"still lists each image it ran on, with []")
  return doc


def _finite_numbers(values: Any, count: int, where: str) -> np.ndarray:
  if not (isinstance(values, list) and len(values) == count and
          all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
    raise EvaluationError(f"{where}: expected {count} number{'s' * (count > 1)}, got {values!r}")
  if not all(math.isfinite(v) for v in values):
    raise EvaluationError(f"{where}: non-finite value in {values!r}")
  return np.asarray(values, np.float64)


def load_detections_json(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """image_id -> (boxes float32 [n, 4] xyxy, scores float64 [n]); clear errors for bad input."""
  out = {}
  for image_id, faces in read_json(path, "detections").items():
    if not isinstance(faces, list):
      raise EvaluationError(f"{path}: {image_id!r}: expected a list of faces, got "
                            f"{type(faces).__name__}")
    boxes, scores = np.zeros((len(faces), 4), np.float32), np.zeros(len(faces), np.float64)
    for j, face in enumerate(faces):
      where = f"{path}: {image_id!r}[{j}]"
      if not isinstance(face, dict) or "box" not in face or "score" not in face:
        raise EvaluationError(f"{where}: a detection needs \"box\" and \"score\", got {face!r}")
      scores[j] = _finite_numbers([face["score"]], 1, f"{where}.score")[0]
      boxes[j] = box = _finite_numbers(face["box"], 4, f"{where}.box")
      if box[2] < box[0] or box[3] < box[1]:
        raise EvaluationError(f"{where}.box {face['box']!r} has x2 < x1 or y2 < y1 (boxes are "
                              f"[x1, y1, x2, y2])")
    out[image_id] = boxes, scores
  return out


def predictions_to_json(pred) -> list[dict[str, Any]]:
  """One image's predictions in the `facecraft detect` JSON form (coordinates to 1/1000 px)."""
  landmarks = getattr(pred, "landmarks", None)
  out = []
  for i in range(len(pred.scores)):
    item = {"box": [round(float(v), 3) for v in pred.boxes[i]], "score": float(pred.scores[i])}
    if landmarks is not None:
      item["landmarks"] = [[round(float(x), 3), round(float(y), 3)] for x, y in landmarks[i]]
    out.append(item)
  return out


def to_jsonable(obj: Any) -> Any:
  """Plain Python for json.dumps: numpy -> float/int/list, NaN and inf -> None (strict JSON)."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  return obj


def tpr_dict(values: Mapping[int, float]) -> dict[str, float]:
  return {str(int(k)): float(v) for k, v in values.items()}


# ------------------------------------------------------------------ the evaluator


class Evaluator:
  """One protocol on one dataset. Subclasses set TASK, DEFAULTS and implement `_score(dets)`.

  Settings come from a config (ml_collections.ConfigDict or dict, e.g. `config.evals.NAME`) and/or
  keywords (keywords win); an unknown setting is an error. Shared ones:
    name        label of the dataset in the result ("dataset") and in plots
    root        dataset folder;  split: reader split;  reader: data_pipelines.formats name
    max_images  score only the first N pictures (0: all)
    chunk       pictures decoded and handed to predict_fn per call (0: all at once)
    cache_images  keep decoded pictures between run() calls (training hooks re-run every eval)
    on_error    annotation errors: "raise" or "skip" (logged, see RecordList.skipped)
    check_images  let the reader open every image header (None: only where the protocol needs
                the image sizes, FDDB); with on_error="skip" unreadable pictures leave the set
  `records` (keyword only) gives the ground truth directly instead of reading root.
  """

  TASK = "detection"
  COMMON = {"type": None, "name": None, "root": None, "split": None, "reader": None,
            "max_images": 0, "chunk": 256, "cache_images": False, "on_error": "raise",
            "check_images": None}
  DEFAULTS: dict[str, Any] = {}
  READER: str | None = None  # the default `reader` of a dataset-specific evaluator

  def __init__(self, config: Any = None, *, records: Sequence[Any] | None = None, **settings):
    given = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
    given.update(settings)
    known = {**self.COMMON, **self.DEFAULTS}
    unknown = sorted(set(given) - set(known))
    if unknown:
      raise EvaluationError(f"{type(self).__name__}: unknown setting(s) {unknown}; known: "
                            f"{', '.join(sorted(known))}")
    self.settings = {**known, **given}
    self.settings["reader"] = self.settings["reader"] or self.READER
    self.name = self.settings["name"] or self.settings["reader"] or self.settings["type"]
    self._records = None if records is None else list(records)
    self._arrays: dict[str, np.ndarray] = {}
    self.result: Any = None         # the protocol's full result object, after score()
    self.predictions: dict[str, Any] = {}  # image_id -> what predict_fn returned, after run()
    self.skipped: dict[str, str] = {}      # image_id -> why its picture was not decoded

  def __getattr__(self, key: str) -> Any:
    settings = self.__dict__.get("settings", {})
    if key in settings:
      return settings[key]
    raise AttributeError(key)

  # -------------------------------------------------------------- ground truth

  @property
  def records(self) -> list:
    """The ground-truth FaceRecords (read once)."""
    if self._records is None:
      self._records = self.load_records()
    if self.max_images:
      return self._records[:int(self.max_images)]
    return self._records

  def load_records(self) -> list:
    """Reads the ground truth through data_pipelines.formats."""
    root = self._root()
    recs = formats.load(self.reader, root, split=self.split, on_error=self.on_error,
                        check_images=self._check_images())
    if not recs:
      raise EvaluationError(f"{self.name}: no ground-truth image found under {root}")
    log.info("%s: %d images, %d faces", self.name, len(recs), sum(r.num_faces for r in recs))
    return list(recs)

  def needs_image_sizes(self) -> bool:
    return False

  def _check_images(self) -> bool:
    if self.check_images is None:
      return self.needs_image_sizes()
    return bool(self.check_images) or self.needs_image_sizes()

  def _root(self) -> str:
    if self.root is None:
      raise EvaluationError(f"{self.name}: no root given (the dataset folder)")
    root = os.path.expanduser(self.root)
    if not os.path.exists(root):
      raise EvaluationError(f"{self.name}: root {root} does not exist")
    return root

  def image_records(self) -> list:
    """The records whose pictures run() hands to predict_fn (their image paths or arrays)."""
    return self.records

  # -------------------------------------------------------------- running a model

  def _picture(self, rec) -> np.ndarray | None:
    if rec.image_id in self._arrays:
      return self._arrays[rec.image_id]
    try:
      array = rec.image if isinstance(rec.image, np.ndarray) else images_lib.decode(rec.image)
    except images_lib.ImageDecodeError as e:
      self.skipped[rec.image_id] = str(e)
      log.warning("skipped %s: %s", rec.image_id, e)
      return None
    if self.cache_images:
      self._arrays[rec.image_id] = array
    return array

  def preload(self) -> None:
    """Decodes every picture now and keeps it (timings of run() then leave decoding out)."""
    self.settings["cache_images"] = True
    for rec in self.image_records():
      self._picture(rec)

  def predict(self, predict_fn: PredictFn) -> dict[str, Any]:
    """image_id -> predict_fn's output for every picture; undecodable pictures are left out
    (listed in self.skipped; their faces count as missed)."""
    recs = self.image_records()
    step = int(self.chunk) or max(1, len(recs))
    out: dict[str, Any] = {}
    for start in range(0, len(recs), step):
      pairs = [(r.image_id, self._picture(r)) for r in recs[start:start + step]]
      pairs = [(k, a) for k, a in pairs if a is not None]
      if not pairs:
        continue
      found = list(predict_fn([a for _, a in pairs]))
      if len(found) != len(pairs):
        raise EvaluationError(f"{self.name}: predict_fn returned {len(found)} results for "
                              f"{len(pairs)} images")
      out.update((k, f) for (k, _), f in zip(pairs, found))
    return out

  def run(self, predict_fn: PredictFn) -> dict[str, Any]:
    """Runs predict_fn on every picture and scores it: score()'s dict plus "seconds" (all of
    it), "predict_seconds", "detections_per_image" and "truncated_images" (predictions with
    a true `.truncated`)."""
    t0 = time.perf_counter()
    self.skipped = {}
    timed = _Timed(predict_fn)
    self.predictions = self.predict(timed)
    found = list(self.predictions.values())
    out = self.score(self.as_dets(self.predictions))
    out["detections_per_image"] = float(np.mean([len(f.scores) for f in found])) if found else 0.0
    out["truncated_images"] = int(sum(bool(getattr(f, "truncated", False)) for f in found))
    out["predict_seconds"] = timed.seconds
    out["seconds"] = time.perf_counter() - t0
    return out

  def as_dets(self, predictions: Mapping[str, Any]) -> dict[str, Any]:
    """What score() takes, from predict_fn's objects: {image_id: (boxes, scores)}."""
    return {k: (np.asarray(p.boxes, np.float32), np.asarray(p.scores, np.float64))
            for k, p in predictions.items()}

  def save_predictions(self, path: str) -> str:
    """Writes the last run()'s predictions as a `facecraft detect` JSON (score_file reads it)."""
    folder = os.path.dirname(path)
    if folder:
      os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump({k: predictions_to_json(p) for k, p in self.predictions.items()}, f)
    return path

  # -------------------------------------------------------------- scoring

  def score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    """Scores predictions already made; a JSON-able dict. self.result keeps the full result."""
    if not dets:
      raise EvaluationError("no detections given")
    return to_jsonable(self._score(dets))

  def score_file(self, path: str) -> dict[str, Any]:
    """score() of a saved predictions JSON (the `facecraft detect` format)."""
    return self.score(self.load_file(path))

  def load_file(self, path: str) -> dict[str, Any]:
    return load_detections_json(path)

  def _score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    raise NotImplementedError

  def plot(self, path: str, label: str) -> str:
    """Writes the protocol's figure of the last score() (ROC, PR or CED) to a PNG."""
    raise NotImplementedError

  def write_files(self, out_dir: str) -> None:
    """Writes the protocol's own result files of the last score() (FDDB: DiscROC / ContROC)."""
    del out_dir


class _Timed:
  """predict_fn that adds up the seconds spent in it (the model, not decoding or scoring)."""

  def __init__(self, fn: PredictFn):
    self.fn, self.seconds = fn, 0.0

  def __call__(self, arrays):
    t0 = time.perf_counter()
    try:
      return self.fn(arrays)
    finally:
      self.seconds += time.perf_counter() - t0
