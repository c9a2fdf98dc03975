"""Which models, families and aligners a Detector can be built from. Nothing here runs at import:
bundles are found on disk when asked for, and engines/aligners are imported on first use.

  MODELS    name -> a bundle (path or Bundle) registered by the user; the bundled ones
            (facecraft/weights/<name>.npz|json) are found on disk without registering.
  FAMILIES  a bundle's "family" -> builder(bundle, settings) -> Engine (facecraft.infer.engine).
  ALIGNERS  name -> aligner class (facecraft.infer.aligners): boxes + image -> landmarks.

Adding a detector family is one line in FAMILIES (its builder lives in its own module).
"""

from __future__ import annotations

import os
from typing import Any

from data_pipelines.registry import Registry
from facecraft.models import pretrained

FAMILIES = Registry("model family")
FAMILIES.register("mtcnn", "facecraft.infer.pyramid:mtcnn_engine")
FAMILIES.register("facecraft_cascade", "facecraft.infer.pyramid:facecraft_engine")
FAMILIES.register("rpn_frcnn", "facecraft.infer.anchor:rpn_frcnn_engine")

ALIGNERS = Registry("aligner")
ALIGNERS.register("mtcnn-onet", "facecraft.infer.aligners:OnetAligner")

MODELS = Registry("model")


def register_model(name: str, bundle: Any, overwrite: bool = False) -> None:
  """Makes `name` loadable by Detector.from_pretrained: bundle is a path or a Bundle."""
  MODELS.register(name, bundle, overwrite=overwrite)


def model_names() -> list[str]:
  """Every name from_pretrained accepts: the bundled models and the registered ones."""
  return sorted(set(pretrained.available()) | set(MODELS.names()))


def load_bundle(name_or_path: str) -> pretrained.Bundle:
  if name_or_path in MODELS:  # target(): a registered path is a file, not an import path
    target = MODELS.target(name_or_path)
    return target if isinstance(target, pretrained.Bundle) else pretrained.load(target)
  if name_or_path in pretrained.available() or name_or_path.endswith((".npz", ".json")):
    return pretrained.load(name_or_path)
  raise ValueError(f"unknown model {name_or_path!r}; available: {model_names()}")


def read_inference(name_or_path: str) -> dict:
  """A model's inference settings without loading its weights."""
  if name_or_path in MODELS:
    target = MODELS.target(name_or_path)
    return dict(target.inference if isinstance(target, pretrained.Bundle)
                else pretrained.read_meta(target)["inference"])
  return dict(load_meta(name_or_path)["inference"])


def display_name(name_or_path: str) -> str:
  """What reports call a model: its name, or a bundle file's name without the folder and .npz."""
  if name_or_path.endswith((".npz", ".json")):
    return os.path.basename(name_or_path).rsplit(".", 1)[0]
  return name_or_path


def load_meta(name_or_path: str) -> dict:
  if name_or_path not in pretrained.available() and not name_or_path.endswith((".npz", ".json")):
    raise ValueError(f"unknown model {name_or_path!r}; available: {model_names()}")
  return pretrained.read_meta(name_or_path)
