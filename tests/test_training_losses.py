"""Behaviour unchanged: two short seeded runs give the per-step losses of the fixture.

tests/fixtures/training_losses/<config>.json holds every train/* column of metrics.csv of
joint_cascade.py (hard gates) and greedy_cascade.py, run through the launcher with a tiny net on
the embedded data (generate.py, written before issue #21's restructuring). The same commands run
here must give the same numbers: bit for bit in the environment that wrote the fixture (versions,
CPU model and usable cores: XLA's CPU code depends on all three), within 1e-4 relative elsewhere.
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest

import conftest

HERE = pathlib.Path(__file__).resolve().parent / "fixtures" / "training_losses"


GENERATE = conftest.fixture_generator("training_losses")


def _same(got: list, want: list, exact: bool) -> bool:
  if len(got) != len(want):
    return False
  for g, w in zip(got, want):
    if g is None or w is None or math.isnan(g) or math.isnan(w):
      if not (g is w or (g is not None and w is not None and math.isnan(g) and math.isnan(w))):
        return False
    elif g != w if exact else not math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-7):
      return False
  return True


@pytest.mark.parametrize("config", GENERATE.CONFIGS)
def test_per_step_losses_match_the_fixture(config):
  fixture = json.loads((HERE / f"{config}.json").read_text())
  assert fixture["steps"] == GENERATE.STEPS
  # Bit for bit only in the environment that wrote the fixture: same versions, CPU model and
  # number of usable cores (XLA's CPU reductions split by thread count).
  exact = fixture["environment"]["jax"] == conftest.environment_line()
  got = GENERATE.train_losses(config)
  want = fixture["losses"]
  assert set(got) == set(want), sorted(set(got) ^ set(want))
  steps = [k for k in want if k.endswith(":step")]
  assert steps and all(len(want[k]) >= 1 for k in steps)
  assert any(k.endswith(":train/loss") for k in want)
  bad = {k: (got[k], want[k]) for k in want if not _same(got[k], want[k], exact)}
  assert not bad, f"{'bit-exact' if exact else 'rtol 1e-4'} mismatch: {bad}"
