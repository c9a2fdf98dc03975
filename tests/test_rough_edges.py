"""Small things a new user meets first (issue #13): help that exits 0, help that lists what
works, the README's first command leaving the checkout clean."""

import pathlib
import subprocess
import sys

import pytest

from facecraft import cli
from facecraft.eval import evaluators

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["experiments.train", "experiments.ablate"])
def test_launcher_help_exits_zero(module):
  done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                        text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "--workdir" in done.stdout and "--config" in done.stdout


def test_evaluate_help_lists_datasets_per_task(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["evaluate", "--help"])
  assert exit_info.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  detection = ", ".join(sorted(evaluators.DATASETS["detection"]))
  landmarks = ", ".join(sorted(evaluators.DATASETS["landmarks"]))
  assert f"detection: {detection};" in text and f"landmarks: {landmarks})" in text
  # A landmark-only set is not offered as a detection benchmark.
  assert "300w" not in detection and "300w" in landmarks


def test_readme_first_command_output_is_ignored_by_git():
  done = subprocess.run(["git", "check-ignore", "-q", "facecraft_detections/astronaut.jpg"],
                        cwd=REPO, check=False)
  assert done.returncode == 0
