"""`facecraft evaluate` end to end on tiny hand-scored fixtures, and its bad-input messages.

Fixtures (tests/fixtures/eval_runner):
  facecraft_json/  image a: faces F1 [10,10,40,40], F2 [50,10,80,40]; image b: F3 [20,20,50,50]
                   and an IGNORED face F4 [60,30,90,60]; five-point landmarks.
  cmu_mit/         the same F1-F3 in the official CMU+MIT text format (inclusive corners), plus a
                   face-free image c and the six-point landmark file.
Detections (score order): .95 on F4 (ignored: neither TP nor FP), .9 exactly F1 (TP),
.8 nowhere (FP), .7 [50,10,62,40] inside F2 with IoU 360/900 = 0.4 (FP at 0.5, TP at 0.3),
.6 exactly F3 (TP); the cmu_mit file has no F4 detection but a .85 FP in image c.
VOC AP by hand (3 positives):
  facecraft_json IoU 0.5: TP FP FP TP -> P = 1 at R 1/3, 1/2 at R 2/3 -> 1/3 + 1/6 = 0.5
  facecraft_json IoU 0.3: TP FP TP TP -> envelope 1, 3/4, 3/4 -> 1/3 + 1/4 + 1/4 = 5/6
  cmu_mit IoU 0.5: TP FP FP FP TP -> 1/3 * 1 + 1/3 * 2/5 = 7/15
  cmu_mit IoU 0.3: TP FP FP TP TP -> 1/3 * 1 + 2/3 * 3/5 = 11/15
"""

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facecraft.eval import runner

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "eval_runner"
FJ_ROOT, FJ_DETS = str(FIX / "facecraft_json"), str(FIX / "facecraft_json_dets.json")
CMU = FIX / "cmu_mit"


def _args(**kw):
  parser = runner.add_evaluate_arguments(argparse.ArgumentParser())
  argv = []
  for k, v in kw.items():
    argv += [f"--{k.replace('_', '-')}", str(v)]
  return parser.parse_args(argv)


def _run(capsys, **kw):
  code = runner.run_from_args(_args(**kw))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_run_from_args_facecraft_json(tmp_path, capsys):
  plot = tmp_path / "pr.png"
  code, out, _ = _run(capsys, dataset="facecraft_json", root=FJ_ROOT, detections=FJ_DETS,
                      plot=plot, out_dir=tmp_path / "out")
  assert code == 0
  result = json.loads(out)  # Exactly one JSON object on stdout.
  assert result["ap"] == pytest.approx(0.5)
  assert result["ap_11pt"] == pytest.approx(0.5)  # (4 * 1 + 3 * 0.5) / 11.
  assert result["ap_at_iou"] == {"0.5": pytest.approx(0.5), "0.3": pytest.approx(5 / 6)}
  assert result["num_positives"] == 3 and result["num_detections"] == 5
  assert result["tpr_at_fp"] == {k: pytest.approx(2 / 3) for k in ("100", "500", "1000", "2000")}
  with Image.open(plot) as im:
    assert im.format == "PNG" and im.size == (800, 600)
  saved = json.loads((tmp_path / "out" / "facecraft_json_detection.json").read_text())
  assert saved == result


def test_experiments_evaluate_subprocess_cmu_mit(tmp_path):
  plot = tmp_path / "roc.png"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--dataset=cmu_mit", f"--root={CMU}",
       f"--detections={CMU / 'dets.json'}", f"--plot={plot}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout)
  assert result["num_images"] == 3 and result["num_positives"] == 3
  assert result["ap"] == pytest.approx(7 / 15)
  assert result["ap_at_iou"]["0.3"] == pytest.approx(11 / 15)
  # ROC: F1 at 0 FP, F3 only after 3 FPs.
  assert result["tpr_at_fp"]["100"] == pytest.approx(2 / 3)
  assert plot.stat().st_size > 5000


def test_perfect_and_empty_detectors():
  perfect = {"a": ([[10, 10, 40, 40], [50, 10, 80, 40]], [0.9, 0.8]),
             "b": ([[20, 20, 50, 50]], [0.7])}
  out = runner.evaluate_dataset("facecraft_json", FJ_ROOT, perfect)
  assert out["ap"] == 1.0 and out["tpr_at_fp"]["100"] == 1.0
  with pytest.warns(UserWarning, match="no detections"):
    out = runner.evaluate_dataset("facecraft_json", FJ_ROOT, {"a": ([], []), "b": ([], [])})
  assert out["ap"] == 0.0 and out["tpr_at_fp"]["2000"] == 0.0 and out["num_detections"] == 0


def test_landmarks_task(tmp_path, capsys):
  # F1: every point 0.7 px off / inter-pupil 14 = 0.05; F2: nose 7.56 px off -> 0.54 / 6 = 0.09;
  # F3 exact. AUC@T = mean(max(0, 1 - e / T)).
  for preds in ("landmarks.json", "landmarks_boxes.json"):
    code, out, _ = _run(capsys, dataset="cmu_mit", root=CMU, detections=CMU / preds,
                        task="landmarks", plot=tmp_path / "ced.png")
    assert code == 0
    result = json.loads(out)
    assert result["scheme"] == "cmu6" and result["norm"] == "inter_pupil"
    assert result["num_faces"] == 3 and result["num_missed"] == 0
    assert result["nme"] == pytest.approx((0.05 + 0.09) / 3)
    assert result["failure_rate"] == {"0.08": pytest.approx(1 / 3), "0.1": 0.0}
    assert result["auc"]["0.1"] == pytest.approx((0.5 + 0.1 + 1) / 3)
    assert result["auc"]["0.08"] == pytest.approx((1 - 0.05 / 0.08 + 0 + 1) / 3)
    np.testing.assert_allclose(result["per_landmark"],
                               [0.05 / 3] * 2 + [(0.05 + 0.54) / 3] + [0.05 / 3] * 3)
  assert (tmp_path / "ced.png").stat().st_size > 5000
  code, _, err = _run(capsys, dataset="cmu_mit", root=CMU, detections=CMU / "landmarks.json",
                      task="landmarks", norm="inter_ocular")
  assert code == 1 and "not defined for the 'cmu6' scheme" in err


def _write(tmp_path, text, name="dets.json"):
  path = tmp_path / name
  path.write_text(text)
  return path


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("{\"a\": [", "is not JSON"),
    ("[]", "expected an object"),
    ("{}", "lists no image"),
    ('{"a": {"box": [1, 2, 3, 4]}}', "'a': expected a list of faces"),
    ('{"a": [{"box": [1, 2, 3, 4]}]}', "'a'\\[0\\]: a detection needs \"box\" and \"score\""),
    ('{"a": [{"box": [1, 2, 3, 4], "score": NaN}]}', "'a'\\[0\\].score: non-finite"),
    ('{"b": [{"box": [1, 2, 3, 4], "score": 1}, {"box": [30, 2, 3, 4], "score": 1}]}',
     "'b'\\[1\\].box .* x2 < x1"),
    ('{"a": [{"box": [1, 2, 3], "score": 1}]}', "expected 4 numbers"),
    ('{"a": [{"box": [1, 2, "x", 4], "score": 1}]}', "expected 4 numbers"),
    ('{"a": [{"box": [1, 2, 3, 4], "score": 1}], "b": [], "a": []}', "'a' appears twice"),
])
def test_bad_detection_files(tmp_path, capsys, text, message):
  path = _write(tmp_path, text)
  with pytest.raises(runner.EvaluationError, match=message):
    runner.load_detections_json(str(path))
  code, out, err = _run(capsys, dataset="facecraft_json", root=FJ_ROOT, detections=path)
  assert code == 1 and out == "" and "error:" in err


def test_unknown_ids_and_usage_errors(tmp_path, capsys):
  path = _write(tmp_path, '{"a": [], "2002/08/11/big/img_591": []}')
  code, out, err = _run(capsys, dataset="facecraft_json", root=FJ_ROOT, detections=path)
  assert code == 1 and out == ""
  assert "1 of 2 detection image ids" in err and "2002/08/11/big/img_591" in err and "'a'" in err
  code, out, err = _run(capsys, dataset="facecraft_json", root=FJ_ROOT, model="facecraft")
  assert code == 2 and out == "" and "facecraft evaluate" in err
  code, _, err = _run(capsys, dataset="facecraft_json", root=FJ_ROOT)
  assert code == 2 and "--detections" in err
  code, _, err = _run(capsys, dataset="afw", root=FJ_ROOT, detections=FJ_DETS, task="landmarks")
  assert code == 1 and "no landmarks benchmark named 'afw'" in err
  code, _, err = _run(capsys, dataset="cmu_mit", root=tmp_path / "nowhere", detections=FJ_DETS)
  assert code == 1 and "does not exist" in err


def test_bad_landmark_files(tmp_path):
  good = '[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]'
  cases = [
      ('{"a": [{"landmarks": [[1, NaN]]}]}', "'a'\\[0\\]: non-finite"),
      ('{"a": [{"points": []}]}', "\"landmarks\" must be a list"),
      ('{"a": [{"landmarks": [[1, "x"]]}]}', "must be \\[\\[x, y\\], ...\\]"),
      (f'{{"a": [{{"landmarks": {good}, "box": [9, 0, 0, 9]}}]}}', "x1 <= x2"),
      (f'{{"a": [{{"landmarks": {good}, "box": [0, 0, 9, 9]}}, {{"landmarks": {good}}}]}}',
       "for every face or for none"),
      (f'{{"a": [{{"landmarks": {good}}}, {{"landmarks": [[1, 2]]}}]}}', "different point counts"),
  ]
  for text, message in cases:
    with pytest.raises(ValueError, match=message):
      runner.load_landmarks_json(str(_write(tmp_path, text)))
  preds = runner.load_landmarks_json(str(_write(tmp_path, f'{{"a": [{{"landmarks": {good}}}]}}')))
  assert preds["a"].shape == (1, 5, 2)


def test_wider_gt_dir(tmp_path):
  with pytest.raises(runner.EvaluationError, match="eval_tools.zip"):
    runner.wider_gt_dir(str(tmp_path))
  folder = tmp_path / "eval_tools" / "ground_truth"
  folder.mkdir(parents=True)
  (folder / "wider_easy_val.mat").write_bytes(b"")
  assert runner.wider_gt_dir(str(tmp_path)) == str(folder)


def test_to_jsonable_is_strict_json():
  out = runner.to_jsonable({"a": np.float32(0.5), 1: [np.nan, np.inf, np.int64(3)],
                            "b": np.array([1.0, 2.0]), "c": np.bool_(True)})
  assert out == {"a": 0.5, "1": [None, None, 3], "b": [1.0, 2.0], "c": True}
  json.dumps(out, allow_nan=False)


def test_wider_official_protocol(tmp_path, capsys):
  """Normalised scores (s - .5) / .45: FP 1, A .889, B .667, C 0; the .7 prediction in the
  face-free image is not counted (official quirk) but enters the normalisation.
  easy (A): proposals FP, A (B, C hit faces outside the set) -> P 1/2 at R 1 -> AP 0.5;
  medium (A, B): R 1/2 P 1/2, then R 1 P 2/3 -> AP 2/3;
  hard (A, B, C): R 1/3 P 1/2, R 2/3 P 2/3, R 1 P 3/4 (C at threshold 0) -> AP 3/4.
  """
  root = FIX / "wider"
  code, out, err = _run(capsys, dataset="wider", root=root, detections=FIX / "wider_dets.json",
                        plot=tmp_path / "pr.png")
  assert code == 0, err
  result = json.loads(out)
  assert result["ap"] == {"easy": pytest.approx(0.5), "medium": pytest.approx(2 / 3),
                          "hard": pytest.approx(0.75)}
  assert result["num_faces"] == {"easy": 1, "medium": 2, "hard": 3}
  # VOC over the hard faces, the faceless image's .7 now a FP: P 0, 1/2, 2/3, 2/4, 3/5.
  assert result["ap_voc_hard"] == pytest.approx(2 / 9 + 2 / 9 + 1 / 5)
  assert result["tpr_at_fp"]["100"] == 1.0
  assert (tmp_path / "pr.png").stat().st_size > 5000
  code, _, err = _run(capsys, dataset="wider", root=root, detections=FIX / "wider_dets.json",
                      split="train")
  assert code == 1 and "only the val split" in err
  code, _, err = _run(capsys, dataset="wider", root=tmp_path, detections=FIX / "wider_dets.json")
  assert code == 1 and "eval_tools" in err


@pytest.mark.parametrize("dataset", ["afw", "pascal_faces", "cmu_mit"])
def test_readers_fixtures_perfect_detector(dataset):
  """A detector that returns every counted face scores AP 1 and TPR 1 on the reader fixtures."""
  root = str(REPO / "tests" / "fixtures" / dataset)
  recs = runner.load_ground_truth(dataset, root)
  dets = {r.image_id: (r.boxes[~r.ignore], np.linspace(0.9, 0.5, int((~r.ignore).sum())))
          for r in recs}
  out = runner.evaluate_dataset(dataset, root, dets)
  assert out["ap"] == pytest.approx(1.0) and out["ap_at_iou"]["0.3"] == pytest.approx(1.0)
  assert out["tpr_at_fp"]["100"] == 1.0
  assert out["num_positives"] == sum(int((~r.ignore).sum()) for r in recs)


def test_fddb_discrete_continuous_and_roc_files(tmp_path, capsys):
  """The first face of every image, detected by its ellipse's bounding box (overlap > 0.5), plus
  one false positive with the top score: discrete TPR = found / all faces once one FP is allowed;
  the continuous score sums the overlaps instead."""
  root = REPO / "tests" / "fixtures" / "fddb"
  recs = runner.load_ground_truth("fddb", str(root))
  assert all(r.image_size is not None for r in recs)  # Needed to clip as the tool does.
  half = {r.image_id: [{"box": b.tolist(), "score": 0.9} for b in r.boxes[:1]] for r in recs}
  half[recs[0].image_id].append({"box": [0, 0, 5, 5], "score": 0.95})  # One false positive.
  path = _write(tmp_path, json.dumps(half))
  code, out, err = _run(capsys, dataset="fddb", root=root, detections=path,
                        out_dir=tmp_path / "out", plot=tmp_path / "roc.png")
  assert code == 0, err
  result = json.loads(out)
  num_faces = sum(r.num_faces for r in recs)
  assert result["tpr_at_fp"] == result["discrete"]["tpr_at_fp"]
  assert result["tpr_at_fp"]["100"] == pytest.approx(len(recs) / num_faces)
  # Each matched overlap lies in (0.5, 1): boxes never cover their ellipses exactly.
  assert 0.5 * len(recs) / num_faces < result["continuous"]["tpr_at_fp"]["100"] < (
      len(recs) / num_faces)
  assert len(result["per_fold"]) == len({r.meta["fold"] for r in recs})
  disc = (tmp_path / "out" / "DiscROC.txt").read_text().split("\n")
  cont = (tmp_path / "out" / "ContROC.txt").read_text().split("\n")
  # Ascending thresholds: the first line holds every detection (one FP), the last only the .95.
  assert disc[0].split()[1:] == ["1", "0.9"] and len(cont[0].split()) == 2
  assert disc[1].split() == ["0", "1", "0.95"]
  assert (tmp_path / "out" / "fddb_detection.json").is_file()
  assert (tmp_path / "roc.png").stat().st_size > 5000


def test_real_data_cmu_mit_and_300w(shared_data):
  """On the real sets: the ground truth scores itself perfectly; a 1 px shift of every 300-W
  point gives NME = mean(1 / inter-ocular distance), computed here from the raw points."""
  cmu = str(shared_data / "cmu_mit_frontal")
  recs = runner.load_ground_truth("cmu_mit", cmu)
  assert len(recs) == 130 and sum(r.num_faces for r in recs) == 511
  dets = {r.image_id: (r.boxes, np.full(r.num_faces, 0.9)) for r in recs}
  out = runner.evaluate_dataset("cmu_mit", cmu, dets)
  assert out["ap"] == pytest.approx(1.0) and out["num_positives"] == 511
  w300 = str(shared_data / "300w_train")
  recs = runner.load_ground_truth("300w", w300, task="landmarks")
  assert sum(r.num_faces for r in recs) == 2012
  out = runner.evaluate_dataset("300w", w300, {r.image_id: r.landmarks + [1.0, 0.0] for r in recs},
                                task="landmarks")
  iod = np.concatenate([np.hypot(*(r.landmarks[:, 36] - r.landmarks[:, 45]).T) for r in recs])
  assert out["norm"] == "inter_ocular" and out["num_faces"] == 2012
  assert out["nme"] == pytest.approx(np.mean(1 / iod), rel=1e-5)
  assert out["auc"]["0.08"] == pytest.approx(np.mean(np.clip(1 - 1 / iod / 0.08, 0, 1)), rel=1e-5)
