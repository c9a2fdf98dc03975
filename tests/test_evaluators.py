"""facecraft.eval.evaluators: one class per protocol, chosen by config, over a predict_fn.

Fixtures (official formats, see tests/test_eval_runner.py for the hand-scored numbers):
  eval_runner/cmu_mit      a: F1 [10,10,40,40], F2 [50,10,80,40]; b: F3 [20,20,50,50]; c: no face
  eval_runner/facecraft_json  the same F1-F3 plus an ignored F4 in b
  eval_runner/wider        official eval_tools .mat files (3 faces, easy 1 / medium 2 / hard 3)
  fddb, afw, pascal_faces  the readers' fixtures
A fake predict_fn returns fixed per-image outputs in the order the evaluator hands the pictures.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import registry
from facecraft import cli
from facecraft.eval import evaluators
from facecraft.eval import runner

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
RUNNER = FIX / "eval_runner"
CMU = RUNNER / "cmu_mit"
RUN_EXTRAS = ("seconds", "predict_seconds", "detections_per_image", "truncated_images")


def _pred(boxes, scores=None, landmarks=None, truncated=False):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if scores is None:
    scores = np.linspace(0.9, 0.5, len(boxes))
  return types.SimpleNamespace(boxes=boxes, scores=np.asarray(scores, np.float32),
                               landmarks=landmarks, truncated=truncated)


def _fake(outputs: dict, order: list):
  """predict_fn returning outputs[image_id] for the pictures, handed in `order`."""
  queue = list(order)

  def predict(arrays):
    out = []
    for a in arrays:
      assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
      out.append(outputs.get(queue.pop(0), _pred([])))
    return out
  return predict


def _run(ev, outputs):
  return ev.run(_fake(outputs, [r.image_id for r in ev.image_records()]))


def _strip(metrics):
  return {k: v for k, v in metrics.items() if k not in RUN_EXTRAS}


# ------------------------------------------------------------------ registry


def test_registry_lists_every_protocol_and_refuses_unknown_types():
  assert evaluators.EVALUATORS.names() == ["afw", "box_ap", "cmu_mit", "fddb", "nme",
                                           "pascal_faces", "wider"]
  with pytest.raises(registry.RegistryError,
                     match="unknown evaluator 'nope'; known: afw, box_ap, cmu_mit, fddb, nme"):
    evaluators.create(type="nope")
  with pytest.raises(evaluators.EvaluationError, match="needs a type; known: afw, box_ap"):
    evaluators.create(root=str(CMU))
  with pytest.raises(evaluators.EvaluationError, match=r"unknown setting\(s\) \['ious'\]"):
    evaluators.create(type="cmu_mit", ious=(0.5,))
  with pytest.raises(evaluators.EvaluationError, match="give the ground-truth reader"):
    evaluators.create(type="box_ap")
  with pytest.raises(evaluators.EvaluationError, match="no landmarks benchmark named 'afw'"):
    evaluators.for_dataset("afw", "landmarks")
  assert evaluators.benchmark("wider_face") == ("wider", "wider_face")
  assert evaluators.benchmark("300w", "landmarks") == ("nme", "pts68")


def test_from_config_big_vision_style():
  config = ml_collections.ConfigDict()
  config.evals = ml_collections.ConfigDict()
  config.evals.val = dict(type="cmu_mit", root=str(CMU), fp_points=(1, 3))
  config.evals.faces = dict(type="box_ap", reader="facecraft_json",
                            root=str(RUNNER / "facecraft_json"))
  evs = evaluators.from_config(config.evals)
  assert type(evs["val"]).__name__ == "CmuMitEvaluator" and evs["val"].name == "val"
  assert evs["val"].fp_points == (1, 3) and evs["val"].iou == 0.5  # given / default
  perfect = {"a": _pred([[10, 10, 40, 40], [50, 10, 80, 40]]), "b": _pred([[20, 20, 50, 50]])}
  out = _run(evs["faces"], perfect)
  assert out["ap"] == 1.0 and out["num_positives"] == 3 and out["dataset"] == "faces"


# ------------------------------------------------------------------ box protocols


def test_cmu_mit_ground_truth_and_shifted_boxes():
  ev = evaluators.create(type="cmu_mit", root=str(CMU), fp_points=(0, 1, 100))
  gt = {r.image_id: _pred(r.boxes) for r in ev.records}
  out = _run(ev, gt)
  assert out["ap"] == 1.0 and out["ap_at_iou"] == {"0.5": 1.0, "0.3": 1.0}
  assert out["tpr_at_fp"] == {"0": 1.0, "1": 1.0, "100": 1.0}
  assert out["num_images"] == 3 and out["num_positives"] == 3 and out["num_detections"] == 3
  assert out["detections_per_image"] == 1.0 and out["truncated_images"] == 0
  assert out["seconds"] >= out["predict_seconds"] >= 0
  # Every box moved right by half its width: IoU (w/2 * h) / (3/2 * w * h) = 1/3 -> every
  # detection is a false positive at 0.5 and a true positive at 0.3.
  half = {k: _pred(p.boxes + np.array([1, 0, 1, 0]) * (p.boxes[:, 2:3] - p.boxes[:, 0:1]) / 2,
                   truncated=k == "a") for k, p in gt.items()}
  out = _run(ev, half)
  assert out["ap"] == 0.0 and out["ap_at_iou"]["0.3"] == 1.0
  assert out["tpr_at_fp"] == {"0": 0.0, "1": 0.0, "100": 0.0}
  assert out["truncated_images"] == 1
  assert ev.result.num_positives == 3 and set(ev.results) == {0.5, 0.3}
  assert set(ev.predictions) == {"a", "b", "c"}


def test_cli_and_evaluator_give_the_identical_dict(capsys):
  """`facecraft evaluate --detections` and the evaluator (file or predict_fn) agree exactly."""
  dets = str(CMU / "dets.json")
  assert cli.main(["evaluate", "--dataset", "cmu_mit", "--root", str(CMU), "--detections",
                   dets]) == 0
  printed = json.loads(capsys.readouterr().out)
  ev = evaluators.for_dataset("cmu_mit", root=str(CMU))
  assert ev.score_file(dets) == printed
  assert printed["ap"] == pytest.approx(7 / 15)  # hand-scored in test_eval_runner.py
  loaded = ev.load_file(dets)
  by_model = _run(ev, {k: _pred(b, s) for k, (b, s) in loaded.items()})
  assert _strip(by_model) == printed


def test_runner_with_a_predict_fn_saves_predictions(tmp_path, capsys):
  args = runner.add_evaluate_arguments(__import__("argparse").ArgumentParser()).parse_args(
      ["--dataset", "cmu_mit", "--root", str(CMU), "--model", "fake", "--out-dir",
       str(tmp_path)])
  outputs = {"a": _pred([[10, 10, 40, 40]], [0.9]), "b": _pred([[20, 20, 50, 50]], [0.8])}
  assert runner.run_from_args(args, predict_fn=_fake(outputs, ["a", "b", "c"])) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["ap"] == pytest.approx(2 / 3) and "seconds" not in printed
  saved = json.loads((tmp_path / "detections_fake.json").read_text())
  assert saved == {"a": [{"box": [10.0, 10.0, 40.0, 40.0], "score": pytest.approx(0.9)}],
                   "b": [{"box": [20.0, 20.0, 50.0, 50.0], "score": pytest.approx(0.8)}],
                   "c": []}
  assert json.loads((tmp_path / "cmu_mit_detection.json").read_text()) == printed


@pytest.mark.parametrize("type_name", ["afw", "pascal_faces"])
def test_afw_and_pascal_faces(type_name):
  ev = evaluators.create(type=type_name, root=str(FIX / type_name))
  counted = {r.image_id: _pred(r.boxes[~r.ignore]) for r in ev.records}
  out = _run(ev, counted)
  assert out["ap"] == pytest.approx(1.0) and out["tpr_at_fp"]["100"] == 1.0
  assert out["num_positives"] == sum(int((~r.ignore).sum()) for r in ev.records)
  with pytest.warns(UserWarning, match="no detections"):
    out = _run(ev, {})  # Nothing found: every face missed.
  assert out["ap"] == 0.0 and out["num_detections"] == 0


def test_box_ap_skips_undecodable_pictures_and_counts_their_faces_missed(tmp_path):
  root = tmp_path / "fj"
  shutil.copytree(RUNNER / "facecraft_json", root)
  (root / "b.jpg").write_bytes(b"not a picture")
  ev = evaluators.create(type="box_ap", reader="facecraft_json", root=str(root), chunk=1)
  out = _run(ev, {"a": _pred([[10, 10, 40, 40], [50, 10, 80, 40]])})
  assert list(ev.skipped) == ["b"] and set(ev.predictions) == {"a"}
  assert out["tpr_at_fp"]["100"] == pytest.approx(2 / 3)


def test_max_images_and_a_wrong_predict_fn():
  ev = evaluators.create(type="cmu_mit", root=str(CMU), max_images=1)
  assert [r.image_id for r in ev.records] == ["a"]
  assert _run(ev, {"a": _pred([[10, 10, 40, 40], [50, 10, 80, 40]])})["ap"] == 1.0
  with pytest.raises(evaluators.EvaluationError, match="returned 0 results for 1 images"):
    ev.run(lambda arrays: [])


def test_wider_official_protocol_from_a_predict_fn(tmp_path):
  """The .mat ground truth scores; the pictures come from the wider_face reader's val split."""
  root = tmp_path / "wider"
  shutil.copytree(RUNNER / "wider", root)
  ids = ["0--Parade/0_Parade_marchingband_1_5", "1--Handshaking/1_Handshaking_Handshaking_1_35"]
  split = root / "wider_face_split"
  split.mkdir()
  (split / "wider_face_val_bbx_gt.txt").write_text("".join(
      f"{i}.jpg\n1\n10 10 40 40 0 0 0 0 0 0\n" for i in ids))
  for i in ids:
    path = root / "WIDER_val" / "images" / f"{i}.jpg"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (100, 100)).save(path)
  ev = evaluators.create(type="wider", root=str(root))
  expected = ev.score_file(str(RUNNER / "wider_dets.json"))
  assert expected["ap"] == {"easy": pytest.approx(0.5), "medium": pytest.approx(2 / 3),
                            "hard": pytest.approx(0.75)}
  loaded = ev.load_file(str(RUNNER / "wider_dets.json"))
  out = _run(ev, {k: _pred(b, s) for k, (b, s) in loaded.items()})
  assert _strip(out) == expected
  with pytest.raises(evaluators.EvaluationError, match="only the val split"):
    evaluators.create(type="wider", root=str(root), split="train")


def test_fddb_ellipse_boxes_are_found():
  """Each ellipse's bounding box covers pi/4 of the box with the ellipse: every face found
  (discrete TPR 1 at no false positive), the continuous score near pi/4 but below 1."""
  ev = evaluators.create(type="fddb", root=str(FIX / "fddb"), fp_points=(0, 100))
  out = _run(ev, {r.image_id: _pred(r.boxes) for r in ev.records})
  assert out["discrete"]["tpr_at_fp"] == {"0": 1.0, "100": 1.0}
  assert out["tpr_at_fp"] == out["discrete"]["tpr_at_fp"]
  assert 0.5 < out["continuous"]["tpr_at_fp"]["100"] < 1.0
  assert out["ap"] == pytest.approx(1.0) and len(out["per_fold"]) >= 1
  assert ev.result.disc.shape[1] == 3


# ------------------------------------------------------------------ landmarks


def test_nme_from_predict_fn_equals_the_file_route():
  ev = evaluators.for_dataset("cmu_mit", "landmarks", root=str(CMU))
  expected = ev.score_file(str(CMU / "landmarks_boxes.json"))
  assert expected["nme"] == pytest.approx((0.05 + 0.09) / 3)  # hand-scored in test_eval_runner
  loaded = ev.load_file(str(CMU / "landmarks_boxes.json"))
  outputs = {k: _pred(v[1], landmarks=v[0]) if isinstance(v, tuple) else
             _pred([], landmarks=np.zeros((0, 6, 2))) for k, v in loaded.items()}
  out = _run(ev, outputs)
  assert _strip(out) == expected and out["scheme"] == "cmu6" and out["norm"] == "inter_pupil"
  exact = {r.image_id: _pred(r.boxes, landmarks=r.landmarks) for r in ev.records}
  assert _run(ev, exact)["nme"] == 0.0
  with pytest.raises(evaluators.EvaluationError, match="carry no landmarks"):
    _run(ev, {"a": _pred([[10, 10, 40, 40]])})


# ------------------------------------------------------------------ callers


def test_training_hook_keeps_its_metric_names(tmp_path):
  from experiments import cascade_eval  # pylint: disable=g-import-not-at-top
  data = tmp_path / "data"
  shutil.copytree(CMU, data / cascade_eval.VALIDATION)
  config = ml_collections.ConfigDict({
      "data": {"root": str(data), "source": "files"},
      "val": {"iou": 0.5, "fp_points": (1, 3), "max_images": 0}})
  (name, ev), = cascade_eval.val_evaluators(config).items()
  assert name == "det" and ev.cache_images and ev.chunk == 0
  metrics = _run(ev, {r.image_id: _pred(r.boxes) for r in ev.records})
  flat = cascade_eval.flatten(name, metrics, cascade_eval.VAL_KEYS)
  assert sorted(flat) == ["det/ap", "det/detections_per_image", "det/seconds", "det/tpr_at_1fp",
                          "det/tpr_at_3fp", "det/truncated_images"]
  assert flat["det/ap"] == 1.0 and flat["det/tpr_at_3fp"] == 1.0
  with config.unlocked():
    config.evals = {"faces": {"type": "box_ap", "reader": "facecraft_json",
                              "root": "fj"}}
  shutil.copytree(RUNNER / "facecraft_json", data / "fj")
  (name, ev), = cascade_eval.val_evaluators(config).items()
  assert name == "faces" and ev.root == str(data / "fj")  # relative roots: under data.root
  with pytest.warns(UserWarning, match="no detections"):
    flat = cascade_eval.flatten(name, _run(ev, {}))
  assert flat["faces/ap"] == 0.0 and flat["faces/ap_at_iou/0.3"] == 0.0
  assert "faces/tpr_at_100fp" in flat and "faces/dataset" not in flat


def test_evaluators_never_load_the_model_layers():
  code = ("import sys\n"
          "from facecraft.eval import evaluators, runner\n"
          "for n in evaluators.EVALUATORS: evaluators.get(n)\n"
          "bad = [m for m in sys.modules if m.startswith(('facecraft.infer', 'facecraft.train', "
          "'facecraft.models', 'jax'))]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
