r"""Five landmarks of detectors side by side on a landmark-annotated detection set (a test).

  python -m experiments.landmark_report --models facecraft,mtcnn \
      --reader cmu_mit --root ../shared/data/cmu_mit_frontal --out experiments/results/landmarks

Each model detects every picture at its own recommended thresholds; its faces are matched to the
annotated ones one-to-one (IoU >= --match_iou: 0.3, since box conventions differ between sets
and models) and the five points are scored by facecraft.eval's NME (the scheme's usual
normaliser: inter-pupil for CMU+MIT's eyes, nose and mouth corners). A face without a matched
detection is missed (counted, not scored). Writes landmarks.md / .json and a CED plot.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import numpy as np

from facecraft.eval import evaluators
from facecraft.eval import plots
from facecraft.infer import Detector
from facecraft.infer import registry

_MODELS = flags.DEFINE_list("models", ["facecraft", "mtcnn"], "Model names or bundle paths.")
_READER = flags.DEFINE_string("reader", "cmu_mit", "A data_pipelines.formats reader with points.")
_ROOT = flags.DEFINE_string("root", "../shared/data/cmu_mit_frontal", "Its folder.")
_MATCH = flags.DEFINE_float("match_iou", 0.3, "IoU a detection needs to be a face's.")
_OUT = flags.DEFINE_string("out", "experiments/results/landmarks", "Output folder.")
_MERGE = flags.DEFINE_list("merge", [], "landmarks.json files of earlier runs (same set) whose "
                           "rows join the table (their CED curves are not redrawn).")
KEYS = ("num_faces", "num_missed", "nme", "nme_median")



def markdown(rows: dict, norm: str) -> str:
  lines = [f"Five landmarks on `{_READER.value}` ({_ROOT.value}), detections matched at IoU >= "
           f"{_MATCH.value}, NME normalised by {norm}.", "",
           "| model | faces | missed | NME mean | NME median | failure @0.08 | failure @0.1 | "
           "AUC @0.1 |", "|---|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    lines.append(f"| {name} | {r['num_faces']} | {r['num_missed']} | {r['nme']:.4f} | "
                 f"{r['nme_median']:.4f} | {r['failure_rate']['0.08']:.3f} | "
                 f"{r['failure_rate']['0.1']:.3f} | {r['auc']['0.1']:.4f} |")
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  ev = evaluators.create(type="nme", reader=_READER.value, root=_ROOT.value,
                         match_iou=_MATCH.value, chunk=0, cache_images=True)
  rows, nmes, norm = {}, {}, ""
  for name in _MODELS.value:
    det, shown = Detector.from_pretrained(name), registry.display_name(name)
    m = ev.run(lambda arrays, det=det: det.detect_arrays(arrays, batch_size=1))
    rows[shown] = {k: m[k] for k in (*KEYS, "failure_rate", "auc", "seconds")}
    errors = np.asarray(ev.result["nmes"], np.float64)
    nmes[shown] = errors[np.isfinite(errors)]
    norm = m["norm"]
    print(f"{name}: {json.dumps(rows[shown])}", flush=True)
  for path in _MERGE.value:
    with open(path) as f:
      rows = {**{k: v for k, v in json.load(f)["rows"].items() if k not in rows}, **rows}
  with open(os.path.join(_OUT.value, "landmarks.json"), "w") as f:
    json.dump({"norm": norm, "match_iou": _MATCH.value, "rows": rows}, f, indent=1)
  text = markdown(rows, norm)
  with open(os.path.join(_OUT.value, "landmarks.md"), "w") as f:
    f.write(text)
  plots.plot_ced(nmes, os.path.join(_OUT.value, "landmarks_ced.png"), max_error=0.2,
                 title=f"Five landmarks, {_READER.value}")
  print(text)


if __name__ == "__main__":
  app.run(main)
