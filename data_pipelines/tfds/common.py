"""Shared code of the face_detection and face_landmarks TFDS builders.

The builders write array_record files that `tfds.data_source` reads back without TensorFlow:
every feature is a plain `Tensor` (images as their encoded bytes, decoded by data_pipelines.images so
that EXIF orientation and every PIL mode are handled the same way as for files on disk).

One example holds one FaceRecord:
  image        bytes: the file's bytes as they are when JPEG or PNG, else a lossless PNG of
               images.decode(...) (which applies the EXIF orientation).
  image_id     text.
  height/width int32: the decoded image size (after EXIF orientation).
  boxes        float32 [N, 4] xyxy pixels.    ignore  bool [N].
  attributes   {name: int8 [N]}, a fixed set of names per builder config, -1 = unknown.
  meta         text: FaceRecord.meta as tagged JSON (arrays, tuples, bytes survive exactly).
  face_landmarks only: landmarks float32 [N, K, 2], landmark_mask bool [N, K] and scheme (text,
  "" when the record had no landmarks); K is fixed by the config's scheme.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import logging
import os
import re
import shutil
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import records
from data_pipelines import geometry
from data_pipelines import images

log = logging.getLogger(__name__)

Reader = Callable[..., Sequence[records.FaceRecord]]
# A split spec: {tfds split name: reader kwargs}, a list of reader split names, or one name.
SplitSpec = Union[None, str, Sequence[str], Mapping[str, Union[Mapping[str, Any], None]]]

_JPEG_MAGIC, _PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# ------------------------------------------------------------------------------ readers


def resolve_reader(reader: str | Reader) -> Reader:
  """A reader's `load(root, split=None, **kw)` from its format name, or the callable itself."""
  if callable(reader):
    return reader
  formats = importlib.import_module("data_pipelines.formats")
  registry_load = getattr(formats, "load", None)
  if callable(registry_load):  # The formats registry, when it exists, knows every alias.
    return lambda root, **kw: registry_load(reader, root, **kw)
  try:
    module = importlib.import_module(f"data_pipelines.formats.{reader}")
  except ModuleNotFoundError as e:
    raise ValueError(f"unknown dataset format {reader!r} (no data_pipelines.formats.{reader})") from e
  return module.load


def normalize_splits(splits: SplitSpec) -> dict[str, dict[str, Any]]:
  """{tfds split name: reader kwargs}; a bare name `s` means {s: {"split": s}}."""
  if splits is None:
    out = {"train": {}}
  elif isinstance(splits, str):
    out = {splits: {"split": splits}}
  elif isinstance(splits, Mapping):
    out = {str(k): dict(v or {}) for k, v in splits.items()}
  else:
    out = {str(s): {"split": s} for s in splits}
  for name in out:
    if not _SPLIT_NAME.match(name):
      raise ValueError(f"TFDS split names must be [A-Za-z0-9_]+, got {name!r}")
  if not out:
    raise ValueError("no splits to build")
  return out


# ------------------------------------------------------------------------------ meta JSON


def _to_json(value: Any, where: str) -> Any:
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, np.ndarray):
    return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
  if isinstance(value, np.generic):
    return {"__npscalar__": value.item(), "dtype": value.dtype.str}
  if isinstance(value, (bytes, bytearray)):
    return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
  if isinstance(value, tuple):
    return {"__tuple__": [_to_json(v, where) for v in value]}
  if isinstance(value, list):
    return [_to_json(v, where) for v in value]
  if isinstance(value, Mapping):
    bad = [k for k in value if not isinstance(k, str)]
    if bad or any(k.startswith("__") for k in value):
      raise TypeError(f"{where}: meta dict keys must be plain strings, got {bad or list(value)}")
    return {k: _to_json(v, f"{where}.{k}") for k, v in value.items()}
  raise TypeError(f"{where}: cannot store meta value of type {type(value).__name__}")


def _from_json(value: Any) -> Any:
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  if not isinstance(value, dict):
    return value
  if "__ndarray__" in value:
    return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
  if "__npscalar__" in value:
    return np.dtype(value["dtype"]).type(value["__npscalar__"])
  if "__bytes__" in value:
    return base64.b64decode(value["__bytes__"])
  if "__tuple__" in value:
    return tuple(_from_json(v) for v in value["__tuple__"])
  return {k: _from_json(v) for k, v in value.items()}


def meta_to_json(meta: Mapping[str, Any]) -> str:
  return json.dumps(_to_json(dict(meta), "meta"), sort_keys=True)


def meta_from_json(text: str | bytes) -> dict[str, Any]:
  text = text.decode("utf-8") if isinstance(text, bytes) else text
  return _from_json(json.loads(text)) if text else {}


# ------------------------------------------------------------------------------ examples


def encoded_image(image: str | bytes) -> bytes:
  """The image's bytes as stored: JPEG/PNG untouched, anything else as a lossless PNG."""
  data = image
  if not isinstance(image, (bytes, bytearray, memoryview)):
    if not os.path.isfile(image):
      raise images.ImageDecodeError(str(image), "no such file")
    with open(image, "rb") as f:
      data = f.read()
  data = bytes(data)
  if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
    return data
  # GIF, PGM, BMP, TIFF, ...: decode (with the EXIF orientation applied) and keep it lossless.
  return images.encode_png(images.decode(data))


def record_to_example(record: records.FaceRecord, attribute_names: Sequence[str] = (),
                      landmark_scheme: str | None = None, with_landmarks: bool = False
                      ) -> dict[str, Any]:
  """The TFDS example of one record (see the module docstring for the layout)."""
  name = record.image_id or str(record.image)
  unknown = sorted(set(record.attributes) - set(attribute_names))
  if unknown:
    raise records.AnnotationError(
        f"{name}: attributes {unknown} are not in this config's set {list(attribute_names)}")
  data = encoded_image(record.image)
  height, width = images.read_size(data)
  if record.image_size is not None and record.image_size != (height, width):
    raise records.AnnotationError(
        f"{name}: meta image_size {record.image_size} but the image is {(height, width)}")
  n = record.num_faces
  example = {
      "image": data, "image_id": record.image_id, "height": height, "width": width,
      "boxes": record.boxes.astype(np.float32), "ignore": record.ignore.astype(bool),
      "meta": meta_to_json(record.meta),
  }
  if attribute_names:
    example["attributes"] = {a: record.attributes.get(a, np.full(n, -1, np.int8)).astype(np.int8)
                             for a in attribute_names}
  if with_landmarks:
    k = geometry.scheme_size(landmark_scheme)
    if record.landmarks is None:
      example.update(landmarks=np.zeros((n, k, 2), np.float32),
                     landmark_mask=np.zeros((n, k), bool), scheme="")
    elif record.landmark_scheme != landmark_scheme:
      raise records.AnnotationError(
          f"{name}: landmark scheme {record.landmark_scheme!r}, this config stores "
          f"{landmark_scheme!r}")
    else:
      example.update(landmarks=record.landmarks.astype(np.float32),
                     landmark_mask=record.landmark_mask.astype(bool), scheme=landmark_scheme)
  return example


def _text(value: str | bytes) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def example_to_record(example: Mapping[str, Any]) -> records.FaceRecord:
  """The FaceRecord of an example read back by tfds (image as encoded bytes).

  meta["image_size"] is always set to (height, width), so records built from tfds data carry the
  image size even when the reader did not record it.
  """
  boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
  landmarks = mask = scheme = None
  if _text(example.get("scheme", b"")):
    scheme = _text(example["scheme"])
    landmarks = np.asarray(example["landmarks"], np.float32)
    mask = np.asarray(example["landmark_mask"], bool)
  meta = meta_from_json(example.get("meta", ""))
  meta["image_size"] = (int(example["height"]), int(example["width"]))
  return records.FaceRecord(
      image=bytes(example["image"]), boxes=boxes, landmarks=landmarks, landmark_scheme=scheme,
      landmark_mask=mask,
      attributes={k: np.asarray(v, np.int8) for k, v in example.get("attributes", {}).items()},
      ignore=np.asarray(example["ignore"], bool), image_id=_text(example["image_id"]), meta=meta)


# ------------------------------------------------------------------------------ builders


@dataclasses.dataclass(eq=False)
class FaceConfig(tfds.core.BuilderConfig):
  """One dataset: which reader reads it, where (under the manual dir) and which splits.

  Attributes:
    reader: a data_pipelines.formats name.
    subdir: the dataset's folder under the data root (tfds `manual_dir`).
    splits: (tfds split name, reader kwargs) pairs.
    attribute_names: the attributes stored for every face (-1 where a record lacks one).
    landmark_scheme: the point layout face_landmarks stores (fixes K).
  """

  reader: str = ""
  subdir: str = ""
  splits: tuple[tuple[str, dict[str, Any]], ...] = (("train", {}),)
  attribute_names: tuple[str, ...] = ()
  landmark_scheme: str | None = None


class FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of FaceDetection / FaceLandmarks: FaceRecords in, array_record examples out.

  Extra constructor arguments (they matter only when preparing, not when reading):
    root: the dataset folder handed to the reader; default `manual_dir / config.subdir`.
    reader: a format name or a callable `(root, **split_kwargs) -> records`, overriding
      config.reader (tests and new datasets use this).
    records: {split: ready FaceRecords}; skips the reader altogether.
    on_error: "raise" or "skip" for records whose image or annotation cannot be stored.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: array_record, image bytes, tagged-JSON meta."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point `root=` at the dataset folder, or set download_config.manual_dir to the folder that "
      "holds the datasets (the config's `subdir` is looked up below it).")
  WITH_LANDMARKS = False

  def __init__(self, *, root: str | None = None, reader: str | Reader | None = None,
               records: Mapping[str, Sequence[records.FaceRecord]] | None = None,
               on_error: str = "raise", **kwargs):
    self._root, self._reader, self._records, self._on_error = root, reader, records, on_error
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features = {
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "image_id": tfds.features.Text(),
        "height": tfds.features.Scalar(dtype=np.int32),
        "width": tfds.features.Scalar(dtype=np.int32),
        "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "ignore": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
        "meta": tfds.features.Text(),
    }
    if config.attribute_names:
      features["attributes"] = tfds.features.FeaturesDict({
          a: tfds.features.Tensor(shape=(None,), dtype=np.int8) for a in config.attribute_names})
    if self.WITH_LANDMARKS:
      if not config.landmark_scheme:
        raise ValueError(f"config {config.name!r} of {self.name} needs a landmark_scheme")
      k = geometry.scheme_size(config.landmark_scheme)
      features.update(
          landmarks=tfds.features.Tensor(shape=(None, k, 2), dtype=np.float32),
          landmark_mask=tfds.features.Tensor(shape=(None, k), dtype=np.bool_),
          scheme=tfds.features.Text())
    return tfds.core.DatasetInfo(
        builder=self, description=config.description or self.__doc__,
        features=tfds.features.FeaturesDict(features),
        # Example i is record i of the reader, so results can be joined back by index.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            reader=config.reader, landmark_scheme=config.landmark_scheme,
            attribute_names=list(config.attribute_names)))

  def _dataset_root(self, dl_manager) -> str:
    if self._root is not None:
      return os.fspath(self._root)
    return os.path.join(os.fspath(dl_manager.manual_dir), self.builder_config.subdir)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    splits = dict(config.splits)
    if self._records is not None:
      return {s: self._generate_examples(list(self._records[s])) for s in splits}
    load = resolve_reader(self._reader or config.reader)
    root = self._dataset_root(dl_manager)
    return {s: self._generate_examples(load(root, **kw)) for s, kw in splits.items()}

  def _generate_examples(self, recs: Sequence[records.FaceRecord]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    policy = records.ErrorPolicy(self._on_error, f"{self.name}/{config.name}")
    key = 0
    for record in recs:
      example = policy.run(lambda r=record: record_to_example(
          r, config.attribute_names, config.landmark_scheme, self.WITH_LANDMARKS))
      if example is not None:
        yield key, example
        key += 1
    if policy.skipped:
      log.warning("%s/%s: %d examples written, %d records skipped", self.name, config.name, key,
                  len(policy.skipped))


# ------------------------------------------------------------------------------ helpers


def build(kind: str, reader: str | Reader, root: str | None, data_dir: str,
          splits: SplitSpec = None, *, name: str | None = None,
          attribute_names: Sequence[str] | None = None, landmark_scheme: str | None = None,
          on_error: str = "raise", file_format: str = "array_record", overwrite: bool = False,
          **reader_kw) -> tfds.core.DatasetBuilder:
  """Prepares `kind` ("face_detection" | "face_landmarks") over any reader and root.

  The records are read first, so the attribute names (their union, sorted) and the landmark
  scheme are taken from the data unless given. The config is named `name` (default the format
  name, or "custom" for a callable); read it back with
  `tfds.data_source(f"{kind}/{name}", data_dir=data_dir)` or `record_source(...)`. A config
  already prepared in data_dir is reused as it is (a read-only builder, the source is not read
  again) unless overwrite=True.
  """
  module = importlib.import_module(f"data_pipelines.tfds.{kind}")
  builder_cls = module.BUILDER
  name = name or (reader if isinstance(reader, str) else "custom")
  if any(c.name == name for c in builder_cls.BUILDER_CONFIGS):
    raise ValueError(f"{kind}/{name} is a predefined config: use tfds.builder({kind + '/' + name!r},"
                     f" root=...) or pick another name")
  prepared = os.path.join(os.fspath(data_dir), kind, name, str(builder_cls.VERSION))
  if os.path.exists(os.path.join(prepared, "dataset_info.json")):
    if not overwrite:  # Reuse without reading the source again.
      return tfds.builder_from_directory(prepared)
    shutil.rmtree(prepared)  # Start clean: TFDS refuses a new file format on old info.
  load = resolve_reader(reader)
  split_kw = normalize_splits(splits)
  loaded = {s: list(load(root, **kw, **reader_kw)) for s, kw in split_kw.items()}
  every = [r for recs in loaded.values() for r in recs]
  if attribute_names is None:
    attribute_names = sorted({a for r in every for a in r.attributes})
  if builder_cls.WITH_LANDMARKS and landmark_scheme is None:
    schemes = sorted({r.landmark_scheme for r in every if r.landmarks is not None})
    if len(schemes) != 1:
      raise ValueError(f"{kind} needs exactly one landmark scheme in the data, found {schemes}")
    landmark_scheme = schemes[0]
  config = FaceConfig(
      name=name, version=builder_cls.VERSION, reader=reader if isinstance(reader, str) else "",
      splits=tuple(split_kw.items()), attribute_names=tuple(attribute_names),
      landmark_scheme=landmark_scheme if builder_cls.WITH_LANDMARKS else None,
      description=f"{kind} over reader {name!r} at {root}")
  builder = builder_cls(config=config, data_dir=data_dir, records=loaded, on_error=on_error)
  builder.download_and_prepare(file_format=file_format)
  return builder


class RecordSource(Sequence):
  """Random access to the FaceRecords of a prepared split (decoded lazily, one at a time)."""

  def __init__(self, data_source):
    self._source = data_source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    n = len(self)
    if not -n <= index < n:  # IndexError (the source raises ValueError) ends iteration.
      raise IndexError(f"record {index} out of range for {n} records")
    return example_to_record(self._source[index % n])


def record_source(name_or_dir: str, split: str, data_dir: str | None = None) -> RecordSource:
  """FaceRecords of `split` from "face_detection/cmu_mit" (+ data_dir) or a prepared folder."""
  if os.path.isdir(name_or_dir):
    source = tfds.builder_from_directory(name_or_dir).as_data_source(split=split)
  else:
    source = tfds.data_source(name_or_dir, split=split, data_dir=data_dir)
  return RecordSource(source)
