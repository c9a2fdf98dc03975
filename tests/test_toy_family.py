"""A new detector family plugs in through the registries alone (issue #21): the toy family of
tests/toy_detector.py registers, trains a few steps through the generic loop, is bundled, and runs
through Detector, `facecraft detect` and an evaluator — none of which is edited for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines import geometry
from facecraft import cli
from facecraft import train as train_lib
from facecraft.infer import Detector
from facecraft.infer import registry
from facecraft.models import pretrained
import toy_detector


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
  registry.FAMILIES.register(toy_detector.FAMILY, toy_detector.build_engine)  # the one line
  train_lib.SCHEDULES.register(toy_detector.FAMILY, "toy_detector")           # the one line
  try:
    workdir = tmp_path_factory.mktemp("toy_run")
    config = toy_detector.get_config()
    result = train_lib.get_schedule(config.schedule).run(config, str(workdir))
    assert result.step == config.num_steps
    yield toy_detector.export(str(workdir), str(tmp_path_factory.mktemp("bundle") / "toy.npz"))
  finally:
    registry.FAMILIES.unregister(toy_detector.FAMILY)
    train_lib.SCHEDULES.unregister(toy_detector.FAMILY)


def _picture(seed=3):
  centres = [(24, 28), (76, 40)]
  image = toy_detector.scene(np.random.default_rng(seed), 72, 100, centres)
  half = toy_detector.SIDE / 2
  truth = np.array([[x - half, y - half, x + half, y + half] for x, y in centres], np.float32)
  return image, truth


def test_bundle_carries_the_family_and_its_settings(bundle_path):
  b = pretrained.load(bundle_path)
  assert b.family == toy_detector.FAMILY and b.inference["thresholds"] == [0.5]
  assert b.meta["source"]["step"] == toy_detector.get_config().num_steps


def test_detector_runs_the_new_engine_batched_and_one_by_one(bundle_path):
  det = Detector.from_pretrained(bundle_path)
  image, truth = _picture()
  found = det.detect(image)
  assert len(found) == 2 and found.landmarks is None
  assert geometry.pairwise_iou(truth, found.boxes).max(axis=1).min() >= 0.5
  many = det.detect_batch([image, image[:40, :50], b"not a picture"], batch_size=2)
  np.testing.assert_array_equal(many[0].boxes, found.boxes)
  assert len(many[1]) == 1 and many[2].error
  aligned = Detector.from_pretrained(bundle_path, align="mtcnn-onet").detect(image)
  assert aligned.landmarks.shape == (2, 5, 2)  # any aligner composes with any engine


def test_facecraft_detect_cli_runs_it(bundle_path, tmp_path, capsys):
  image, truth = _picture(4)
  Image.fromarray(image).save(tmp_path / "squares.png")
  out = tmp_path / "dets.json"
  assert cli.main(["detect", str(tmp_path / "squares.png"), "--model", bundle_path,
                   "--output", str(out), "--no-progress"]) == 0
  faces = json.loads(out.read_text())["squares"]
  boxes = np.array([f["box"] for f in faces], np.float32)
  assert len(faces) == 2 and geometry.pairwise_iou(truth, boxes).max(axis=1).min() >= 0.5
  assert "2 faces" in capsys.readouterr().err


def test_an_evaluator_scores_it(bundle_path):
  """The generic box-AP evaluator over the new family's predict function: every square found."""
  from data_pipelines import records  # pylint: disable=g-import-not-at-top
  from facecraft.eval import evaluators  # pylint: disable=g-import-not-at-top
  det = Detector.from_pretrained(bundle_path)
  truth = [records.FaceRecord(image=image, boxes=boxes, image_id=f"scene{seed}")
           for seed in (5, 6, 7) for image, boxes in [_picture(seed)]]
  evaluator = evaluators.create(type="box_ap", name="squares", records=truth, fp_points=(1,))
  metrics = evaluator.run(lambda arrays: det.detect_arrays(list(arrays), batch_size=2))
  assert metrics["ap"] == pytest.approx(1.0) and metrics["num_positives"] == 6
  assert metrics["detections_per_image"] == pytest.approx(2.0)
