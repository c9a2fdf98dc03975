"""One reader per dataset format; each has load(root, split=None, on_error="raise", **kw).

`load(format_name, root, **kw)` dispatches by name. Reader modules are imported lazily, on first
use, so that one reader's optional dependency (scipy for .mat, h5py for MATLAB v7.3, sqlite3)
never costs the others anything.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Name -> module under data_pipelines.formats. Adding a format: write formats/<name>.py with a
# load() and list it here.
FORMATS: tuple[str, ...] = (
    "wider_face",
    "fddb",
    "afw",
    "pascal_faces",
    "cmu_mit",
    "caltech_webfaces",
    "pts68",
    "youtube68",
    "celeba",
    "aflw",
    "cofw",
    "dlib_xml",
    "facecraft_json",
)


def get(format_name: str) -> ModuleType:
  """The reader module of a format name (a ValueError listing the known names otherwise)."""
  if format_name not in FORMATS:
    raise ValueError(f"unknown dataset format {format_name!r}; known formats: {', '.join(FORMATS)}")
  return importlib.import_module(f"{__name__}.{format_name}")


def load(format_name: str, root: str, **kw):
  """Reads a dataset with the reader of `format_name`: formats.<name>.load(root, **kw)."""
  return get(format_name).load(root, **kw)
