"""Shared pytest fixtures. Tests that read ../shared/data skip cleanly where it is absent."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


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
