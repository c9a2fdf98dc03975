"""Evaluators chosen by config, one class per protocol (big_vision style), one route per protocol.

  config.evals.val = dict(type="cmu_mit", root="../shared/data/cmu_mit_frontal", fp_points=(10, 100))
  evs = evaluators.from_config(config.evals)     # {"val": CmuMitEvaluator}
  metrics = evs["val"].run(predict_fn)            # predict_fn(list of uint8 RGB) -> [Detections]

  evaluators.create("fddb", root=...).score_file("dets.json")   # what `facecraft evaluate` does
  evaluators.for_dataset("300w", "landmarks", root=...)        # a dataset name -> its evaluator

Types (EVALUATORS): cmu_mit, wider (official easy/medium/hard), fddb (DiscROC / ContROC), afw,
pascal_faces, box_ap (VOC AP / ROC over any detection reader: `reader=`), nme (landmarks over any
reader with points: `reader=`). Adding one: write a base.Evaluator subclass (DEFAULTS, _score,
plot) in this package and add one EVALUATORS.register line below (and a DATASETS line if a
dataset name of `facecraft evaluate` should pick it).
"""

from __future__ import annotations

from typing import Any, Mapping

from data_pipelines import registry
from facecraft.eval.evaluators import base
from facecraft.eval.evaluators.base import EvaluationError, Evaluator  # pylint: disable=unused-import

EVALUATORS = registry.Registry("evaluator")
EVALUATORS.register("box_ap", "facecraft.eval.evaluators.boxes:BoxAPEvaluator")
EVALUATORS.register("cmu_mit", "facecraft.eval.evaluators.boxes:CmuMitEvaluator")
EVALUATORS.register("afw", "facecraft.eval.evaluators.boxes:AfwEvaluator")
EVALUATORS.register("pascal_faces", "facecraft.eval.evaluators.boxes:PascalFacesEvaluator")
EVALUATORS.register("wider", "facecraft.eval.evaluators.official:WiderEvaluator")
EVALUATORS.register("fddb", "facecraft.eval.evaluators.official:FddbEvaluator")
EVALUATORS.register("nme", "facecraft.eval.evaluators.nme:NMEEvaluator")

TASKS = ("detection", "landmarks")
# Dataset name of `facecraft evaluate --dataset` -> (evaluator type, its reader) per task.
DATASETS: dict[str, dict[str, tuple[str, str]]] = {
    "detection": {
        "fddb": ("fddb", "fddb"), "wider": ("wider", "wider_face"),
        "wider_face": ("wider", "wider_face"), "afw": ("afw", "afw"),
        "pascal_faces": ("pascal_faces", "pascal_faces"), "cmu_mit": ("cmu_mit", "cmu_mit"),
        "dlib_xml": ("box_ap", "dlib_xml"), "facecraft_json": ("box_ap", "facecraft_json"),
    },
    "landmarks": {name: ("nme", reader) for name, reader in (
        ("300w", "pts68"), ("pts68", "pts68"), ("cofw", "cofw"), ("aflw", "aflw"),
        ("celeba", "celeba"), ("caltech_webfaces", "caltech_webfaces"),
        ("youtube68", "youtube68"), ("dlib_xml", "dlib_xml"), ("cmu_mit", "cmu_mit"),
        ("wider", "wider_face"), ("facecraft_json", "facecraft_json"))},
}


def get(type_name: str) -> type:
  """The evaluator class registered as type_name (RegistryError lists the known ones)."""
  return EVALUATORS.get(type_name)


def create(config: Any = None, **settings) -> base.Evaluator:
  """An evaluator from a config with a `type` (or type=... among the keywords) and its settings."""
  given = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
  given.update(settings)
  if not given.get("type"):
    raise EvaluationError(f"an evaluator config needs a type; known: {', '.join(EVALUATORS)}")
  cls = get(given["type"])
  return cls(**given)


def from_config(evals: Mapping[str, Any]) -> dict[str, base.Evaluator]:
  """{name: evaluator} from `config.evals` (each entry a config with a `type`)."""
  return {name: create(cfg, name=_get(cfg, "name") or name) for name, cfg in evals.items()}


def _get(cfg: Any, key: str) -> Any:
  return cfg.get(key) if hasattr(cfg, "get") else None


def benchmark(dataset: str, task: str = "detection") -> tuple[str, str]:
  """(evaluator type, reader) of a dataset name; a clear error for an unknown pair."""
  if task not in TASKS:
    raise EvaluationError(f"unknown task {task!r}; choose one of {TASKS}")
  table = DATASETS[task]
  if dataset not in table:
    raise EvaluationError(f"no {task} benchmark named {dataset!r}; known: {', '.join(table)}")
  return table[dataset]


def for_dataset(dataset: str, task: str = "detection", **settings) -> base.Evaluator:
  """The evaluator of a dataset name (`facecraft evaluate --dataset`), its reader filled in."""
  type_name, reader = benchmark(dataset, task)
  return create(type=type_name, reader=reader, name=dataset, **settings)


def dataset_names() -> list[str]:
  return sorted(set(DATASETS["detection"]) | set(DATASETS["landmarks"]))
