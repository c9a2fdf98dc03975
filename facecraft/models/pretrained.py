"""Model bundles: one file per trained model, carrying its family, weights and every inference
setting, so a Detector reads them from the bundle and nowhere else.

    bundle = pretrained.load("facecraft")     # Bundle(name, family, trees, inference, ...)
    pretrained.save_bundle(path, family="facecraft_cascade", trees={"params": ..., "box_stats": ...},
                           inference={...}, model_config={...}, meta={...})

Two kinds of file in facecraft/weights/ (or anywhere, by path):
  <name>.npz   plain arrays only (np.load with allow_pickle=False): "<tree>/<path>" for every array
               of every named tree ("params/x12/conv1/kernel", "box_stats/mean") and "meta_json".
  <name>.json  the same meta for weights that ship elsewhere ("weights_from": "mtcnn_package":
               the original MTCNN weights of the `mtcnn` package on PyPI).

meta_json: {"format": "facecraft.bundle/2", "family", "inference", "model_config", ...provenance}.
`inference` holds every setting inference needs (INFERENCE_KEYS: thresholds, min_face_size,
box convention, input normalisation; pyramid families add the pyramid factor, crop mode and
stage-1 suppression; optional: "aligner", the landmark aligner Detector composes by default). Bundles of
format 1 (issue #5: no family, settings in meta["detector"]) keep loading: they are FaceCraft
cascades and the settings they lacked were the engine's defaults then (LEGACY_INFERENCE).
MODEL_CARD.md beside the weights says the same for people.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
FORMAT = "facecraft.bundle/2"
_META = "meta_json"
# What every bundle's inference settings must hold; a family may require more (the pyramid
# families: factor, crop_mode, stage1_nms; facecraft.infer.pyramid.PYRAMID_KEYS).
INFERENCE_KEYS = ("thresholds", "min_face_size", "box_convention", "input_mean", "input_scale")
# Format-1 bundles were all FaceCraft cascades run with these (the engine's defaults of issue #5;
# the training loader scaled inputs as (x - 127.5) / 128; boxes were box_scale x the landmark rule,
# CMU+MIT's convention).
LEGACY_FAMILY = "facecraft_cascade"
LEGACY_INFERENCE = {"min_face_size": 20.0, "factor": 0.709, "box_convention": "cmu_mit",
                    "input_mean": 127.5, "input_scale": 1 / 128, "crop_mode": "pad",
                    "stage1_nms": "nms"}


@dataclasses.dataclass(frozen=True)
class Bundle:
  name: str
  family: str
  trees: dict[str, Any]       # named trees of float32 numpy arrays: "params", "box_stats", ...
  inference: dict[str, Any]   # every inference setting (INFERENCE_KEYS)
  model_config: dict[str, Any]
  meta: dict[str, Any]        # the whole meta_json (provenance, measured numbers)

  @property
  def params(self):
    return self.trees.get("params")

  @property
  def box_stats(self):
    return self.trees.get("box_stats")

  @property
  def model(self):
    """The Flax module of a facecraft_cascade bundle."""
    if self.family != LEGACY_FAMILY:
      raise ValueError(f"bundle {self.name!r} is a {self.family!r} model, not a FaceCraft cascade")
    from facecraft.models import cascade  # pylint: disable=g-import-not-at-top
    return cascade.FaceCraft(cascade.CascadeConfig(**self.model_config))


def available() -> list[str]:
  """Names of the bundled models (the .npz and .json files in facecraft/weights/)."""
  if not os.path.isdir(WEIGHTS_DIR):
    return []
  return sorted({n.rsplit(".", 1)[0] for n in os.listdir(WEIGHTS_DIR)
                 if n.endswith((".npz", ".json"))})


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


def _jsonable(value):
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return value


def check_inference(inference: Mapping[str, Any], where: str) -> dict[str, Any]:
  missing = [k for k in INFERENCE_KEYS if k not in inference]
  if missing:
    raise ValueError(f"{where}: inference settings lack {missing} (a bundle must carry "
                     f"{list(INFERENCE_KEYS)})")
  return dict(inference)


def save_bundle(path: str, family: str, trees: Mapping[str, Mapping], inference: Mapping,
                model_config: Any = None, meta: Mapping | None = None) -> str:
  """Writes a self-contained .npz bundle; meta must be JSON-serialisable."""
  doc = {**dict(meta or {}), "format": FORMAT, "family": family,
         "inference": check_inference(inference, path),
         "model_config": _jsonable(model_config) or {}}
  arrays = {_META: np.array(json.dumps(doc, sort_keys=True))}
  for tree_name, tree in trees.items():
    arrays.update(_flatten(tree, f"{tree_name}/"))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)
  return path


def save(path: str, params: Mapping, box_stats: Mapping, model_config, meta: Mapping | None = None,
         inference: Mapping | None = None) -> str:
  """A FaceCraft cascade bundle; inference settings default to LEGACY_INFERENCE and the
  thresholds / min_face_size of meta["detector"] when not given."""
  meta = dict(meta or {})
  settings = {**LEGACY_INFERENCE, **meta.get("detector", {}), **dict(inference or {})}
  return save_bundle(path, LEGACY_FAMILY, {"params": params, "box_stats": box_stats}, settings,
                     model_config, meta)


def _path(name_or_path: str) -> str:
  if name_or_path.endswith((".npz", ".json")):
    if not os.path.exists(name_or_path):
      raise FileNotFoundError(f"no model bundle at {name_or_path}")
    return name_or_path
  for ext in (".npz", ".json"):
    path = os.path.join(WEIGHTS_DIR, name_or_path + ext)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"no bundled model {name_or_path!r} in {WEIGHTS_DIR} "
                          f"(available: {available()})")


def bundle_path(name_or_path: str) -> str:
  """The file of a bundled model name or a bundle path (FileNotFoundError when there is none)."""
  return _path(name_or_path)


def _upgrade(doc: dict, path: str) -> dict:
  """meta of any format -> format 2 (family, inference, model_config)."""
  if "family" in doc:
    doc["inference"] = check_inference(doc.get("inference", {}), path)
    return doc
  return {**doc, "format": FORMAT, "family": LEGACY_FAMILY,
          "inference": check_inference({**LEGACY_INFERENCE, **doc.get("detector", {})}, path)}


def read_meta(name_or_path: str) -> dict:
  """A bundle's meta alone, upgraded to format 2 (np.load is lazy: no weights decompressed)."""
  path = _path(name_or_path)
  if path.endswith(".json"):
    with open(path, encoding="utf-8") as f:
      return _upgrade(json.load(f), path)
  with np.load(path, allow_pickle=False) as z:
    if _META not in z.files:
      raise ValueError(f"{path} is not a FaceCraft model bundle (no {_META})")
    return _upgrade(json.loads(str(z[_META])), path)


def _external_trees(source: str, path: str) -> dict[str, Any]:
  if source == "mtcnn_package":
    from facecraft.models import mtcnn  # pylint: disable=g-import-not-at-top
    return mtcnn.load_original_weights()
  raise ValueError(f"{path}: unknown weights_from {source!r} (known: 'mtcnn_package')")


def load(name_or_path: str) -> Bundle:
  """A bundled model by name ("facecraft", "mtcnn") or any bundle file by path."""
  path = _path(name_or_path)
  meta = read_meta(path)
  if path.endswith(".json"):
    trees = _external_trees(meta.get("weights_from", ""), path)
  else:
    with np.load(path, allow_pickle=False) as z:
      trees = _unflatten({k: z[k] for k in z.files if k != _META})
  cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_config"].items()}
  name = os.path.basename(path).rsplit(".", 1)[0]
  return Bundle(name, meta["family"], trees, meta["inference"], cfg, meta)


def upgrade(path: str, out: str | None = None) -> str:
  """Rewrites a bundle of any format as format 2 (same arrays; family and inference explicit)."""
  bundle = load(path)
  meta = {k: v for k, v in bundle.meta.items()
          if k not in ("format", "family", "inference", "model_config", "detector")}
  return save_bundle(out or path, bundle.family, bundle.trees, bundle.inference,
                     bundle.model_config, meta)
