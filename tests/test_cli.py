"""The `facecraft` command and the README's two commands."""

import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

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


def test_detect_main_job_and_bad_files(tmp_path, capsys):
  """`facecraft detect` on a folder with the sample and a corrupt file: one face, one skip."""
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from data_pipelines import geometry  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "pics"
  folder.mkdir()
  shutil.copy(REPO / "facecraft" / "assets" / "astronaut.jpg", folder / "astronaut.jpg")
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
  out, drawn = tmp_path / "dets.json", tmp_path / "drawn"
  rc = cli.main(["detect", str(folder), "--output", str(out), "--draw", str(drawn),
                 "--no-progress", "--batch-size", "2", "--model", "mtcnn"])
  assert rc == 0
  err = capsys.readouterr().err
  assert "skipped broken" in err and "1 skipped" in err
  doc = json.loads(out.read_text())
  assert list(doc) == ["astronaut"] and len(doc["astronaut"]) == 1
  face = doc["astronaut"][0]
  truth = json.loads((REPO / "facecraft" / "assets" / "sample.json").read_text())
  truth_box = np.array([truth["images"][0]["faces"][0]["box"]], np.float32)
  assert geometry.pairwise_iou(np.array([face["box"]], np.float32), truth_box)[0, 0] > 0.6
  assert face["score"] > 0.99 and len(face["landmarks"]) == 5
  assert (drawn / "astronaut.jpg").exists() and not (drawn / "broken.jpg").exists()


def test_detect_missing_path(tmp_path, capsys):
  assert cli.main(["detect", str(tmp_path / "nope.jpg")]) == 2
  assert "no such file" in capsys.readouterr().err


def test_evaluate_runs_a_bundled_model_first(tmp_path, capsys):
  """`facecraft evaluate --model mtcnn` on the bundled sample: the one face is found, AP 1."""
  import json  # pylint: disable=g-import-not-at-top
  rc = cli.main(["evaluate", "--dataset", "facecraft_json", "--root",
                 str(REPO / "facecraft" / "assets"), "--model", "mtcnn", "--out-dir",
                 str(tmp_path)])
  out = capsys.readouterr().out
  assert rc == 0
  result = json.loads(out)
  assert result["ap"] == 1.0
  saved = json.loads((tmp_path / "detections_mtcnn.json").read_text())
  assert len(saved["astronaut"]) == 1
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):  # argparse usage error: --model and --detections together.
    cli.main(["evaluate", "--dataset", "facecraft_json", "--root", str(tmp_path),
              "--model", "mtcnn", "--detections", "x.json"])


def test_detect_thresholds_reach_the_detector_and_bad_ones_are_named(tmp_path, capsys,
                                                                      monkeypatch):
  from facecraft.infer import detector as detector_lib  # pylint: disable=g-import-not-at-top
  seen = {}

  def fake(name, **kw):
    seen.update(kw, name=name)
    raise ValueError("stop here")

  monkeypatch.setattr(detector_lib.Detector, "from_pretrained", staticmethod(fake))
  sample = str(REPO / "facecraft" / "assets" / "astronaut.jpg")
  rc = cli.main(["detect", sample, "--model", "mtcnn", "--thresholds", "0.6,0.7,0.01",
                 "--output", str(tmp_path / "d.json"), "--compile-cache", "off"])
  assert rc == 2 and "stop here" in capsys.readouterr().err
  assert seen["thresholds"] == (0.6, 0.7, 0.01) and seen["name"] == "mtcnn"
  for bad in ("0.6,x,0.1", "0.6,0.7,1.5", "0.1,0.2,0.3,0.4"):
    with pytest.raises(SystemExit) as e:
      cli.main(["detect", sample, "--thresholds", bad])
    assert e.value.code == 2
    assert "comma-separated scores in [0, 1), one per stage" in capsys.readouterr().err
  # The count is the model's to check: a cascade given two stages says so, as an error line.
  monkeypatch.undo()
  rc = cli.main(["detect", sample, "--model", "mtcnn", "--thresholds", "0.6,0.7",
                 "--output", str(tmp_path / "e.json"), "--compile-cache", "off"])
  assert rc == 2 and "three numbers" in capsys.readouterr().err


def test_detect_merges_rare_buckets_unless_told_not_to(tmp_path, capsys, monkeypatch):
  from facecraft.infer import detector as detector_lib  # pylint: disable=g-import-not-at-top
  from facecraft.infer import pyramid  # pylint: disable=g-import-not-at-top
  seen = []

  def fake(name, **kw):
    seen.append(kw)
    raise ValueError("stop here")

  monkeypatch.setattr(detector_lib.Detector, "from_pretrained", staticmethod(fake))
  sample = str(REPO / "facecraft" / "assets" / "astronaut.jpg")
  for extra in ([], ["--no-merge-buckets"]):
    rc = cli.main(["detect", sample, "--output", str(tmp_path / "d.json"),
                   "--compile-cache", "off", *extra])
    assert rc == 2
  assert seen[0]["merge_compile_s"] == pyramid.MERGE_COMPILE_S
  assert "merge_compile_s" not in seen[1]
