"""Shared pytest fixtures. Tests that read ../shared/data skip cleanly where it is absent."""

import importlib.metadata
import importlib.util
import os
import pathlib
import platform

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("model name", "Model")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def usable_cores() -> int:
  """CPUs this process may run on (taskset/cgroups), which XLA's CPU thread pools follow: its
  reductions, and so the last bits of their floats, depend on how many there are."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def environment_line() -> str:
  """What a failure elsewhere needs to be read: library versions and the CPU (issue #22)."""
  versions = []
  for package in ("jax", "jaxlib", "flax", "numpy", "pillow"):
    try:
      versions.append(f"{package} {importlib.metadata.version(package)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{package} missing")
  return (f"facecraft test environment: {', '.join(versions)}; python {platform.python_version()}"
          f"; {platform.machine()} {_cpu_model()}, {usable_cores()} cores")


def pytest_sessionstart(session):
  # Written even under -q (a report header is not), so CI logs always carry it.
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  if reporter is not None:
    reporter.write_line(environment_line())


def fixture_generator(folder: str):
  """tests/fixtures/<folder>/generate.py as a module: tests reuse what wrote their fixture."""
  path = FIXTURES / folder / "generate.py"
  spec = importlib.util.spec_from_file_location(f"{folder}_generate", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shared_data_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get("FACECRAFT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """Root of the real data sets; skips the test when it is not on this machine."""
  root = shared_data_root()
  if not root.is_dir():
    pytest.skip(f"real data not found at {root} (set FACECRAFT_SHARED_DATA)")
  return root


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
  """FaceCraft's caches (compilation, crops) go to a temporary folder, never the user's home."""
  old = os.environ.get("FACECRAFT_CACHE")
  os.environ["FACECRAFT_CACHE"] = str(tmp_path_factory.mktemp("facecraft_cache"))
  yield
  if old is None:
    os.environ.pop("FACECRAFT_CACHE", None)
  else:
    os.environ["FACECRAFT_CACHE"] = old
