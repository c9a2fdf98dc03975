r"""Detectors side by side on the WIDER FACE subset's val split (the selection set): the official
easy / medium / hard AP, TPR at fixed false positives, the box-convention check, and time.

  python -m experiments.wider_report --models facecraft,mtcnn,runs/x/candidate.npz \
      --root ../shared/data/wider_face_subset --out experiments/results/wider_val

Models are Detector.from_pretrained names or bundle paths, each run with its own stage-1/2
thresholds and the last stage at --last_threshold, so that the curves run past the recommended
operating point. Writes wider_val.md / .json, wider_val_pr_<setting>.png and
wider_val_breakdown.md (the share of faces found by blur, occlusion, pose, ... and width:
facecraft.eval.breakdown).
"""

from __future__ import annotations

import json
import os
import time
import types

from absl import app
from absl import flags

from facecraft.eval import breakdown
from facecraft.eval import evaluators
from facecraft.eval import plots
from facecraft.eval import wider
from facecraft.infer import Detector
from facecraft.infer import registry

_MODELS = flags.DEFINE_list("models", ["facecraft", "mtcnn"], "Model names or bundle paths.")
_ROOT = flags.DEFINE_string("root", "../shared/data/wider_face_subset", "The WIDER subset.")
_OUT = flags.DEFINE_string("out", "experiments/results/wider_val", "Output folder.")
_LAST = flags.DEFINE_float("last_threshold", 0.01, "Stage-3 threshold for the curves.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "First N val pictures only (0: all).")
_MERGE = flags.DEFINE_list("merge", [], "wider_val.json files of earlier runs (same pictures) "
                           "whose rows join the table (their curves are not redrawn).")
_YUNET = flags.DEFINE_string("yunet_model", "", "Adds OpenCV's YuNet (experiments/peers/yunet.py) "
                             "from this ONNX file, at score threshold --yunet_threshold.")
_YUNET_T = flags.DEFINE_float("yunet_threshold", 0.1, "YuNet's score threshold for the curves.")
FP_POINTS = (100, 500, 1000)



def curve_thresholds(recommended, last: float) -> tuple[float, ...]:
  """Every stage but the last at the model's own threshold, the last at `last` (any number of
  stages: cascades have 3, rpn_frcnn models 2)."""
  *early, _ = recommended
  return (*(float(t) for t in early), float(last))


def systems(names):
  """(label, thresholds, predict_fn) of each model, then the peers asked for."""
  for name in names:
    thresholds = curve_thresholds(registry.read_inference(name)["thresholds"], _LAST.value)
    det = Detector.from_pretrained(name, thresholds=thresholds, align="none")
    yield (registry.display_name(name), thresholds,
           lambda arrays, det=det: det.detect_arrays(arrays, batch_size=1))
  if _YUNET.value:
    from experiments.peers import yunet  # pylint: disable=g-import-not-at-top
    peer = yunet.YuNet(_YUNET.value, score_threshold=_YUNET_T.value, threads=1)

    def run(arrays):
      return [types.SimpleNamespace(**dict(zip(("boxes", "scores"), peer.detect(a)[:2])))
              for a in arrays]
    yield "yunet", (_YUNET_T.value,), run


def score(names):
  ev = evaluators.create(type="wider", root=_ROOT.value, iou=0.5, fp_points=FP_POINTS,
                         max_images=_MAX_IMAGES.value, chunk=0, cache_images=True)
  ev.preload()
  rows, curves = {}, {}
  for name, thresholds, predict in systems(names):
    start = time.perf_counter()
    m = ev.run(predict)
    rows[name] = {**{f"ap_{k}": m["ap"][k] for k in wider.SETTINGS},
                  **{f"tpr@{k}fp": v for k, v in m["tpr_at_fp"].items()},
                  "box_scale": m["box_convention"]["scale"],
                  "detections_per_image": m["detections_per_image"],
                  "thresholds": list(thresholds),
                  "seconds_incl_compile": time.perf_counter() - start,
                  "images": m["num_images"],
                  "breakdown": breakdown.recall_breakdown(ev.image_records(),
                                                          ev.as_dets(ev.predictions))}
    curves[name] = ev.result
    print(f"{name}: {json.dumps(rows[name])}", flush=True)
  return rows, curves


def markdown(rows: dict) -> str:
  keys = ["ap_easy", "ap_medium", "ap_hard", *[f"tpr@{k}fp" for k in FP_POINTS], "box_scale",
          "detections_per_image", "seconds_incl_compile"]
  n = next(iter(rows.values()))["images"]
  lines = [f"WIDER FACE subset val ({n} pictures), official easy / medium / hard AP at IoU 0.5; "
           "TPR over all (hard-setting) faces; box_scale: median detected / true box size.", "",
           "| model | thresholds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  for name, r in rows.items():
    th = ", ".join(f"{t:.3g}" for t in r["thresholds"])
    lines.append(f"| {name} | {th} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  rows, curves = score(_MODELS.value)
  earlier = {}
  for path in _MERGE.value:
    with open(path) as f:
      earlier.update(json.load(f))
  rows = {**{k: v for k, v in earlier.items() if k not in rows}, **rows}
  with open(os.path.join(_OUT.value, "wider_val.json"), "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(_OUT.value, "wider_val.md"), "w") as f:
    f.write(markdown(rows))
  parts = {n: r["breakdown"] for n, r in rows.items() if "breakdown" in r}
  with open(os.path.join(_OUT.value, "wider_val_breakdown.md"), "w") as f:
    f.write("WIDER FACE subset val, what each model finds by the faces' annotated attributes "
            "and width (pixels), down to its curve threshold.\n\n" + breakdown.markdown(parts))
  for setting in wider.SETTINGS:
    plots.plot_pr({n: (*c["curves"][setting], c[setting]) for n, c in curves.items()},
                  os.path.join(_OUT.value, f"wider_val_pr_{setting}.png"),
                  title=f"WIDER subset val, {setting}")
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
