r"""Stage thresholds chosen by measurement: accuracy on the selection set against speed at VGA.

  taskset -c 0 python -m experiments.operating_point --bundle runs/x/candidate.npz \
      --grid '0.1,0.003 0.3,0.05 0.6,0.3' --out_dir experiments/results/operating_point [--write]

For every point of --grid (the thresholds of every stage but the last: t1,t2 for a cascade,
t1 = the RPN score for rpn_frcnn), in one process (`taskset -c 0` for one-core numbers):
  * the WIDER FACE subset's val split (the detectors' selection set, never a test set): the
    official easy / medium / hard AP with the last stage at --curve_threshold (complete curves),
    detections per picture, and the F1-best last-stage threshold (VOC matching, all faces);
  * speed: --n_vga val pictures letterboxed into 640x480, batch 1, the compile (first pass)
    and the warm ms / image (second pass).
The chosen point is the fastest whose hard AP is within --tolerance of the best hard AP of the
grid. --write stores it (its thresholds and the F1-best last one) as the bundle's thresholds,
with the table in the bundle's meta["operating_point"]. Writes operating_point.md / .json and a
plot of AP against ms / image.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

from data_pipelines import images
from facecraft.eval import evaluators
from facecraft.eval import wider
from facecraft.infer import Detector
from facecraft.models import pretrained

_BUNDLE = flags.DEFINE_string("bundle", None, "A bundle path or name (a cascade or rpn_frcnn).")
_GRID = flags.DEFINE_string("grid", "0.1,0.003 0.3,0.05 0.6,0.3",
                            "Space-separated points, each the thresholds of every stage but the "
                            "last: t1,t2 for a cascade, t1 (the RPN score) for rpn_frcnn.")
_ROOT = flags.DEFINE_string("wider_root", "../shared/data/wider_face_subset",
                            "The WIDER subset (its val split is scored).")
_LAST = flags.DEFINE_float("curve_threshold", 0.01, "Stage-3 threshold for the curves.")
_N_VGA = flags.DEFINE_integer("n_vga", 60, "Val pictures letterboxed to 640x480 for the timing.")
_TOLERANCE = flags.DEFINE_float("tolerance", 0.01, "Hard-AP loss accepted for speed.")
_OUT = flags.DEFINE_string("out_dir", "experiments/results/operating_point", "Output folder.")
_WRITE = flags.DEFINE_bool("write", False, "Store the chosen thresholds in the bundle.")
_UPSCALE = flags.DEFINE_list("upscale", [], "rpn_frcnn bundles: upscale factors crossed with "
                             "--grid (the photo resized before the trunk: smaller faces reached "
                             "for more time); '' keeps the bundle's.")
_POST_NMS = flags.DEFINE_list("post_nms", [], "rpn_frcnn bundles: proposal counts (RoIs the head "
                              "scores: most of its time) crossed with --grid; '' keeps the "
                              "bundle's.")
_SPEED_REF = flags.DEFINE_string("speed_reference", "",
                                 "A bundle (e.g. mtcnn) timed on the same VGA pictures in the same "
                                 "process: only points at most as slow are chosen ('' = none).")
flags.mark_flags_as_required(["bundle"])


def parse_grid(text: str, early_stages: int = 2) -> list[tuple[float, ...]]:
  """Points of `early_stages` thresholds each (every stage but the last: 2 for a cascade, 1 for
  rpn_frcnn)."""
  points = []
  for item in text.split():
    parts = item.split(",")
    if len(parts) != early_stages:
      raise ValueError(f"--grid item {item!r}: {early_stages} comma-separated thresholds "
                       "expected (every stage but the last)")
    values = tuple(float(p) for p in parts)
    if not all(0 <= t < 1 for t in values):
      raise ValueError(f"--grid item {item!r}: thresholds must lie in [0, 1)")
    points.append(values)
  if not points:
    raise ValueError("--grid is empty")
  return points


def choose(rows: list[dict], tolerance: float, max_ms: float | None = None) -> dict:
  """The fastest row whose hard AP is within tolerance of the best hard AP, among the rows at
  most max_ms per image (all rows when none is that fast: the table then shows the miss)."""
  fast = [r for r in rows if max_ms is None or r["ms_per_image"] <= max_ms]
  rows = fast or rows
  best = max(r["ap_hard"] for r in rows)
  ok = [r for r in rows if r["ap_hard"] >= best - tolerance]
  return min(ok, key=lambda r: r["ms_per_image"])


def time_vga(det: Detector, images: list[np.ndarray]) -> tuple[float, float]:
  """(first-pass seconds, warm ms / image) at batch 1."""
  start = time.perf_counter()
  for im in images:
    det.detect(im)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for im in images:
    det.detect(im)
  warm = time.perf_counter() - start
  return first - warm, 1e3 * warm / len(images)


def markdown(rows: list[dict], chosen: dict, name: str, reference: dict | None = None) -> str:
  early = len(rows[0]["early"])
  names = [f"t{i + 1}" for i in range(early)]
  lines = [f"Operating points of `{name}`: WIDER subset val ({rows[0]['images']} pictures, "
           f"official AP, last stage at {_LAST.value}) and speed at VGA (batch 1, "
           f"{_N_VGA.value} letterboxed val pictures, this process's cores).", "",
           "| " + " | ".join(names) + f" | AP easy | AP medium | AP hard | detections / picture "
           f"| F1-best t{early + 1} | F1 | compile s | ms / image | chosen |",
           "|---|" * early + "---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    head = " | ".join(f"{t:g}" for t in r["early"])
    if "upscale" in r:
      head += f" (upscale {r['upscale']:g})"
    if "post_nms" in r:
      head += f" ({r['post_nms']} RoIs)"
    lines.append(f"| {head} | {r['ap_easy']:.3f} | {r['ap_medium']:.3f} | "
                 f"{r['ap_hard']:.3f} | {r['detections_per_image']:.1f} | {r['f1_last']:.4f} | "
                 f"{r['f1']:.3f} | {r['compile_s']:.1f} | {r['ms_per_image']:.1f} | "
                 f"{'**yes**' if r is chosen else ''} |")
  if reference:
    lines += ["", f"Speed reference `{reference['name']}` (its own thresholds), same pictures, same "
              f"process: {reference['ms_per_image']:.1f} ms / image (compile "
              f"{reference['compile_s']:.1f} s); points slower than it are not chosen."]
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.5, 4))
  ms = [r["ms_per_image"] for r in rows]
  for setting in wider.SETTINGS:
    ax.plot(ms, [r[f"ap_{setting}"] for r in rows], "o-", label=setting)
  for r in rows:
    ax.annotate(",".join(f"{t:g}" for t in r["early"]), (r["ms_per_image"], r["ap_hard"]),
                fontsize=7)
  ax.set_xlabel("ms / image at 640x480, batch 1")
  ax.set_ylabel("WIDER subset val AP")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv) -> None:
  del argv
  early_stages = len(pretrained.load(_BUNDLE.value).inference["thresholds"]) - 1
  grid = parse_grid(_GRID.value, early_stages)
  os.makedirs(_OUT.value, exist_ok=True)
  ev = evaluators.create(type="wider", root=_ROOT.value, iou=0.5, fp_points=(100, 500, 1000),
                         chunk=0, cache_images=True)
  ev.preload()
  vga = [images.letterbox(images.decode(r.image)) for r in ev.image_records()[:_N_VGA.value]]
  reference = None
  if _SPEED_REF.value:
    compile_s, ms = time_vga(Detector.from_pretrained(_SPEED_REF.value, align="none"), vga)
    reference = {"name": _SPEED_REF.value, "compile_s": compile_s, "ms_per_image": ms}
    print(json.dumps({"speed_reference": reference}), flush=True)
  rows = []
  upscales = [float(u) for u in _UPSCALE.value] or [None]
  rois = [int(n) for n in _POST_NMS.value] or [None]
  for early, upscale, post_nms in [(e, u, n) for u in upscales for n in rois for e in grid]:
    extra = {k: v for k, v in (("upscale", upscale), ("post_nms", post_nms)) if v is not None}
    det = Detector.from_pretrained(_BUNDLE.value, thresholds=(*early, _LAST.value), align="none",
                                   **extra)
    start = time.perf_counter()
    m = ev.run(lambda arrays, det=det: det.detect_arrays(arrays, batch_size=1))
    seconds = time.perf_counter() - start
    last, f1, _, _ = ev.results[float(ev.iou)].best_f1()
    compile_s, ms = time_vga(det, vga)
    rows.append({"early": list(early), **{f"t{i + 1}": t for i, t in enumerate(early)},
                 **extra,
                 **{f"ap_{k}": m["ap"][k] for k in wider.SETTINGS},
                 "detections_per_image": m["detections_per_image"], "f1_last": last, "f1": f1,
                 "eval_seconds": seconds, "compile_s": compile_s, "ms_per_image": ms,
                 "images": m["num_images"]})
    print(json.dumps(rows[-1]), flush=True)
  chosen = choose(rows, _TOLERANCE.value, reference and reference["ms_per_image"])
  text = markdown(rows, chosen, _BUNDLE.value, reference)
  with open(os.path.join(_OUT.value, "operating_point.md"), "w") as f:
    f.write(text)
  with open(os.path.join(_OUT.value, "operating_point.json"), "w") as f:
    json.dump({"rows": rows, "chosen": chosen, "tolerance": _TOLERANCE.value,
               "speed_reference": reference}, f, indent=1)
  plot(rows, os.path.join(_OUT.value, "operating_point.png"))
  print(text)
  if _WRITE.value:
    b = pretrained.load(_BUNDLE.value)
    inference = {**b.inference, "thresholds": (*chosen["early"], chosen["f1_last"])}
    inference.update({k: chosen[k] for k in ("upscale", "post_nms") if k in chosen})
    meta = {k: v for k, v in b.meta.items()
            if k not in ("format", "family", "inference", "model_config")}
    meta["operating_point"] = {"rows": rows, "chosen": chosen, "tolerance": _TOLERANCE.value,
                               "speed_reference": reference}
    path = pretrained.bundle_path(_BUNDLE.value)
    pretrained.save_bundle(path, b.family, b.trees, inference, b.model_config, meta)
    print(f"wrote thresholds {inference['thresholds']} into {path}")


if __name__ == "__main__":
  app.run(main)
