"""One reader per dataset format; each has load(root, split=None, on_error="raise", **kw).

`load(format_name, root, **kw)` dispatches by name. Reader modules are imported lazily, on first
use, so that one reader's optional dependency (scipy for .mat, h5py for MATLAB v7.3, sqlite3)
never costs the others anything.

Each FORMATS entry is a `Reader` declaring what the format can train (`tasks`), its default split
per role (`splits`), the folder names it usually has under a data root (`folders`, as in
../shared/data) and, for detection training, the load() keywords that give its faces the shared
Caltech box rule (`rule_boxes`). data_pipelines.training_sets picks training and validation sets
from these declarations alone, so a new dataset needs no edit in the training code.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Mapping

from data_pipelines import registry

TASKS = ("detection", "landmarks")


@dataclasses.dataclass(frozen=True)
class Reader:
  """What a format's reader offers (see the module doc); `module` is imported only when used."""

  module: str
  tasks: tuple[str, ...] = ()
  splits: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # role -> split argument
  folders: tuple[str, ...] = ()
  rule_boxes: Mapping[str, Any] | None = None  # load() kw for Caltech-rule boxes (+ box_scale)

  def __post_init__(self):
    unknown = set(self.tasks) - set(TASKS)
    if unknown:
      raise ValueError(f"{self.module}: unknown tasks {sorted(unknown)}; known: {TASKS}")


def _reader(name: str, **kw) -> Reader:
  return Reader(f"{__name__}.{name}", **kw)


# Adding a format: write formats/<name>.py with a load() and register it here (one line).
FORMATS = registry.Registry("dataset format")
FORMATS.register("wider_face", _reader("wider_face", tasks=("detection",),
                                       splits={"train": "train", "val": "val", "test": "test"},
                                       folders=("wider_face_subset",)))
FORMATS.register("fddb", _reader("fddb", tasks=("detection",), splits={"test": None}))
FORMATS.register("afw", _reader("afw", tasks=("detection", "landmarks"), splits={"test": "test"}))
FORMATS.register("pascal_faces", _reader("pascal_faces", tasks=("detection",),
                                         splits={"test": None}))
FORMATS.register("cmu_mit", _reader("cmu_mit", tasks=("detection", "landmarks"),
                                    splits={"val": None, "test": None},
                                    folders=("cmu_mit_frontal",)))
FORMATS.register("caltech_webfaces", _reader("caltech_webfaces", tasks=("detection", "landmarks"),
                                             splits={"train": None}, folders=("caltech_webfaces",),
                                             rule_boxes={}))
FORMATS.register("pts68", _reader("pts68", tasks=("landmarks", "detection"),
                                  splits={"train": None}, folders=("300w_train",),
                                  rule_boxes={"box_rule": "caltech4"}))
FORMATS.register("youtube68", _reader("youtube68", tasks=("landmarks",),
                                      splits={"train": "training", "test": "test"},
                                      folders=("youtube_faces_68pt",)))
FORMATS.register("celeba", _reader("celeba", tasks=("landmarks",),
                                   splits={"train": "train", "val": "val", "test": "test"}))
FORMATS.register("aflw", _reader("aflw", tasks=("landmarks",), splits={"train": None}))
FORMATS.register("cofw", _reader("cofw", tasks=("landmarks",),
                                 splits={"train": "train", "test": "test"}))
FORMATS.register("dlib_xml", _reader("dlib_xml", tasks=("landmarks", "detection"),
                                     splits={"train": "training", "test": "testing"},
                                     folders=("dlib_faces",)))
FORMATS.register("facecraft_json", _reader("facecraft_json", tasks=("detection", "landmarks")))


def reader(format_name: str) -> Reader:
  """The declaration of a format name (a ValueError listing the known names otherwise)."""
  if format_name not in FORMATS:
    raise ValueError(f"unknown dataset format {format_name!r}; known formats: "
                     f"{', '.join(FORMATS)}")
  return FORMATS.target(format_name)


def get(format_name: str) -> ModuleType:
  """The reader module of a format name (a ValueError listing the known names otherwise)."""
  return importlib.import_module(reader(format_name).module)


def load(format_name: str, root: str, **kw):
  """Reads a dataset with the reader of `format_name`: formats.<name>.load(root, **kw)."""
  return get(format_name).load(root, **kw)


def format_of_folder(folder: str) -> str:
  """The format whose declared `folders` include `folder` (ValueError listing them otherwise)."""
  for name in FORMATS:
    if folder in reader(name).folders:
      return name
  known = sorted(f for name in FORMATS for f in reader(name).folders)
  raise ValueError(f"no dataset format declares the folder {folder!r}; known: {known}")
