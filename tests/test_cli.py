"""The `facecraft` command and the README's two commands."""

import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from facecraft import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_main_job_on_bundled_sample(tmp_path, capsys):
  out = tmp_path / "montage.png"
  assert cli.main(["inspect", "--out", str(out)]) == 0
  text = capsys.readouterr().out
  assert "images: 1" in text and "faces: 1" in text and "landmarks five" in text
  img = np.asarray(Image.open(out))
  assert img.shape[0] >= 256 and img.std() > 10  # a real drawing, not a blank canvas


def test_console_script_runs_without_jax(tmp_path):
  code = ("import sys; from facecraft import cli; rc = cli.main(['inspect']);"
          "assert 'jax' not in sys.modules, 'inspect must not import jax'; sys.exit(rc)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)


def test_unknown_command_and_bad_root(tmp_path, capsys):
  assert cli.main(["frobnicate"]) == 2
  assert cli.main([]) == 2
  assert cli.main(["inspect", "--format", "cmu_mit", "--root", str(tmp_path / "none")]) == 2
  assert "error:" in capsys.readouterr().err


def test_build_tfds_then_read_back(tmp_path, capsys):
  root = REPO / "tests" / "fixtures" / "cmu_mit"
  rc = cli.main(["build-tfds", "--format", "cmu_mit", "--root", str(root),
                 "--data-dir", str(tmp_path)])
  assert rc == 0
  counts = re.findall(r"(\w+): (\d+) examples", capsys.readouterr().out)
  from data_pipelines import formats  # pylint: disable=g-import-not-at-top
  assert sum(int(n) for _, n in counts) == len(formats.load("cmu_mit", str(root)))


def test_readme_test_command_is_what_ci_runs():
  readme = (REPO / "README.md").read_text()
  ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
  blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
  assert len(blocks) >= 2, "README must show the two commands"
  assert blocks[1].strip() == ci.strip()
  assert "facecraft" in blocks[0]
