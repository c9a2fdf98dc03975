"""The rules of the house (ARCHITECTURE.md): which layer may import which."""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
  return names


# Imports inside a function that run only when their module is loaded already: geometry picks
# jax.numpy when it is handed a jax array (so jax is in memory); the transitive test below checks
# that importing the layer still loads no jax.
_LAZY_OK = {"data_pipelines/geometry.py": {"jax.numpy"}}


def _modules(folder: str):
  return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("data_pipelines"), ids=lambda p: str(p.relative_to(REPO)))
def test_data_pipelines_is_the_floor(path):
  """data_pipelines imports neither jax nor anything above it: the graph runs
  experiments -> facecraft -> data_pipelines (geometry and images live here)."""
  bad = {n for n in _imports(path) - _LAZY_OK.get(path.relative_to(REPO).as_posix(), set())
         if n.split(".")[0] in ("jax", "flax", "optax", "orbax", "experiments", "facecraft")}
  assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _modules("facecraft"), ids=lambda p: str(p.relative_to(REPO)))
def test_facecraft_never_imports_experiments(path):
  assert not {n for n in _imports(path) if n.split(".")[0] == "experiments"}


def test_importing_data_layer_loads_no_jax():
  """Transitive check: every data_pipelines module imports without pulling in jax."""
  mods = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in _modules("data_pipelines")]
  mods = [m[: -len(".__init__")] if m.endswith(".__init__") else m for m in mods]
  code = ("import importlib, sys\n"
          f"for m in {mods!r}:\n"
          "  importlib.import_module(m)\n"
          "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow')]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("path", _modules("facecraft/models"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_models_never_import_train_infer_or_eval(path):
  bad = {n for n in _imports(path)
         if n.split(".")[:2] in (["facecraft", "train"], ["facecraft", "infer"],
                                 ["facecraft", "eval"])}
  assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _modules("experiments/configs"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_configs_import_only_ml_collections(path):
  """Config files import ml_collections, the standard library and each other, never facecraft
  (big_vision's configs/*.py style): loading a config costs nothing and runs no training code."""
  allowed = {"__future__", "ml_collections", "experiments"} | set(sys.stdlib_module_names)
  bad = {n for n in _imports(path) if n.split(".")[0] not in allowed
         or (n.startswith("experiments") and not n.startswith("experiments.configs"))}
  assert not bad, f"{path} imports {bad}"


def test_loading_a_config_file_imports_no_jax():
  code = ("import sys\n"
          "from facecraft.train import config_schema\n"
          "for name in ('joint_cascade.py', 'greedy_cascade.py:', 'joint_cascade.py:sigmoid',\n"
          "             'toy.py', 'ablation_joint_vs_greedy.py:smoke'):\n"
          "  config_schema.load_config_file('experiments/configs/' + name.rstrip(':'))\n"
          "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)

