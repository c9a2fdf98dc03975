"""FaceCraft models bundled in facecraft/weights/: one `<name>.npz` per model.

    bundle = pretrained.load("facecraft")   # Bundle(model, params, box_stats, meta)
    pretrained.save(path, params, box_stats, model_config, meta)

The .npz holds plain arrays only (np.load with allow_pickle=False): "params/<path>" for every
parameter ("params/x12/conv1/kernel"), "box_stats/<name>" for the regression-target statistics
the box heads were trained with, and "meta_json": the model config (models.cascade.CascadeConfig
fields), the detector settings recommended for it (thresholds, min_face_size) and where it came
from (data, steps, measured numbers). MODEL_CARD.md beside the weights says the same for people.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from facecraft.models import cascade

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
_PARAMS, _STATS, _META = "params/", "box_stats/", "meta_json"


@dataclasses.dataclass(frozen=True)
class Bundle:
  model: cascade.FaceCraft
  params: Any          # nested dict of float32 numpy arrays
  box_stats: dict      # {"mean": [4], "std": [4]} (or more), float32
  meta: dict


def available() -> list[str]:
  """Names of the bundled models (the .npz files in facecraft/weights/)."""
  if not os.path.isdir(WEIGHTS_DIR):
    return []
  return sorted(n[:-4] for n in os.listdir(WEIGHTS_DIR) if n.endswith(".npz"))


def _flatten(tree: Mapping, prefix: str) -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if "/" in str(key):
      raise ValueError(f"parameter name {key!r} contains '/'")
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = np.asarray(value, np.float32)
  return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def save(path: str, params: Mapping, box_stats: Mapping, model_config: cascade.CascadeConfig,
         meta: Mapping | None = None) -> str:
  """Writes a bundle (see the module doc); meta must be JSON-serialisable."""
  doc = dict(meta or {})
  doc["model_config"] = dataclasses.asdict(model_config)
  arrays = {**_flatten(params, _PARAMS), **_flatten(box_stats, _STATS),
            _META: np.array(json.dumps(doc, sort_keys=True))}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)
  return path


def _path(name_or_path: str) -> str:
  if name_or_path.endswith(".npz"):
    return name_or_path
  path = os.path.join(WEIGHTS_DIR, f"{name_or_path}.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no bundled model {name_or_path!r} in {WEIGHTS_DIR} "
                            f"(available: {available()})")
  return path


def _meta(z, path: str) -> dict:
  if _META not in z.files:
    raise ValueError(f"{path} is not a FaceCraft model bundle (no {_META})")
  return json.loads(str(z[_META]))


def read_meta(name_or_path: str) -> dict:
  """A bundle's meta alone (np.load is lazy: the parameters are not decompressed)."""
  path = _path(name_or_path)
  with np.load(path, allow_pickle=False) as z:
    return _meta(z, path)


def load(name_or_path: str) -> Bundle:
  """A bundled model by name ("facecraft") or any .npz written by save()."""
  path = _path(name_or_path)
  with np.load(path, allow_pickle=False) as z:
    meta = _meta(z, path)
    params = _unflatten({k[len(_PARAMS):]: z[k] for k in z.files if k.startswith(_PARAMS)})
    stats = {k[len(_STATS):]: z[k] for k in z.files if k.startswith(_STATS)}
  cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_config"].items()}
  return Bundle(cascade.FaceCraft(cascade.CascadeConfig(**cfg)), params, stats, meta)
