r"""CPU speed of FaceCraft's engine and its peers on the same real images, in one run.

  python -m experiments.bench --out_dir=/tmp/bench            # full run (a few minutes)
  python -m experiments.bench --out_dir=/tmp/bench --quick    # a handful of images

Image sets, built once from /work/shared/data and handed to every system identically:
  fddb: CMU+MIT frontal pictures plus Caltech WebFaces photos, resized (bilinear) so the longer
        side is 450 px, as in FDDB;
  vga:  the same photos letterboxed into 640x480 (scaled to fit, centred on black).
Every (system, set, threads) configuration runs in its own subprocess, so peak memory
(ru_maxrss) is per system and thread settings are fixed before any library starts:
  1 thread: `taskset -c 0` (the process may only run on one core -- the one setting that binds
            every thread pool, including XLA's), OMP/MKL/OpenBLAS_NUM_THREADS=1,
            XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, torch.set_num_threads(1),
            cv2.setNumThreads(1). (The folklore `intra_op_parallelism_threads=1` token is not an
            XLA flag: without dashes XLA ignores it, with dashes it aborts.) The CPU/wall column
            verifies the setting: it must be <= 1.0.
  all:      library defaults on every core.
Warm-up is excluded: peers warm up on 3 images; systems that compile per input shape (ours) get a
full untimed first pass, and `compile s` = first pass - timed pass. `peak RSS MiB` is the
worker's ru_maxrss; `over images MiB` subtracts the RSS right after the image set was loaded.

Peers: facenet-pytorch's MTCNN, OpenCV Haar, dlib HOG, and OpenCV's YuNet with
`--yunet_model yunet_n_640_640.onnx` (experiments/peers/yunet.py says where it comes from);
`--bundle PATH[,PATH]` adds FaceCraft bundles that are not (yet) in facecraft/weights, each as
`bundle:<file name>`.
Adding a system is one entry in SYSTEMS.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Callable

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]

_OUT_DIR = flags.DEFINE_string("out_dir", "/tmp/facecraft_bench", "Table (md) and CSV go here.")
_DATA_ROOT = flags.DEFINE_string(
    "data_root", None, "Shared data root (default: $FACECRAFT_SHARED_DATA or ../shared/data).")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke test: 6 images per set.")
_SYSTEMS = flags.DEFINE_list("systems", None, "Subset of SYSTEMS keys and bundle:<name> "
                              "(default: all).")
_SETS = flags.DEFINE_list("sets", ["fddb", "vga"], "Image sets.")
_THREADS = flags.DEFINE_list("threads", ["1", "all"], "Thread modes.")
_N_CALTECH = flags.DEFINE_integer("n_caltech", 70, "Caltech photos added to the 130 CMU+MIT.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size of the batched FaceCraft rows.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 1, "Timed passes per configuration; the fastest is reported (this machine may be "
    "shared: a CPU/wall ratio well under 1 with 1 thread means the run waited for a core).")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one system on --images_npz.")
_YUNET = flags.DEFINE_string("yunet_model", "", "YuNet ONNX file (experiments/peers/yunet.py); "
                             "'' leaves the yunet system out of the default list.")
_BUNDLE = flags.DEFINE_list("bundle", [], "Bundle paths, each run as the system "
                            "'bundle:<file name>' (batch 1), e.g. candidates before one replaces "
                            "facecraft/weights.")
_IMAGES_NPZ = flags.DEFINE_string("images_npz", None, "Internal: the prepared image set.")
_SINGLE = flags.DEFINE_bool("single", False, "Internal: the worker runs single-threaded.")


# ---------------------------------------------------------------------------------------------
# Systems. `build(single, batch_size)` returns run(images) -> number of detections.


def _per_image(detector) -> Callable[[list[np.ndarray]], int]:
  return lambda images: sum(len(detector.detect(im)[1]) for im in images)


def _facenet(single: bool, batch_size: int):
  del batch_size
  import torch  # pylint: disable=g-import-not-at-top
  if single:
    torch.set_num_threads(1)
  from experiments.peers import facenet_mtcnn  # pylint: disable=g-import-not-at-top
  return _per_image(facenet_mtcnn.FacenetMTCNN(**facenet_mtcnn.SETTINGS))


def _haar(single: bool, batch_size: int):
  del batch_size
  import cv2  # pylint: disable=g-import-not-at-top
  if single:
    cv2.setNumThreads(1)
  from experiments.peers import opencv_haar  # pylint: disable=g-import-not-at-top
  return _per_image(opencv_haar.OpenCVHaar())


def _yunet(single: bool, batch_size: int):
  del batch_size
  from experiments.peers import yunet  # pylint: disable=g-import-not-at-top
  if not _YUNET.value:
    raise FileNotFoundError("--yunet_model: the path of yunet_n_640_640.onnx (see "
                            "experiments/peers/yunet.py)")
  return _per_image(yunet.YuNet(_YUNET.value, threads=1 if single else None))


def _dlib(upsample: int):
  def build(single: bool, batch_size: int):
    del single, batch_size  # dlib's HOG detector is single-threaded.
    from experiments.peers import dlib_hog  # pylint: disable=g-import-not-at-top
    return _per_image(dlib_hog.DlibHOG(upsample))
  return build


def _facecraft(name: str, batched: bool):
  def build(single: bool, batch_size: int):
    del single  # Set through XLA_FLAGS and taskset before jax starts.
    import facecraft  # pylint: disable=g-import-not-at-top
    detector = facecraft.Detector.from_pretrained(name)
    if not batched:
      return lambda images: sum(len(d.scores) for d in map(detector.detect, images))
    return lambda images: sum(
        len(d.scores) for d in detector.detect_batch(images, batch_size=batch_size))
  return build


@dataclasses.dataclass(frozen=True)
class System:
  label: str
  build: Callable[[bool, int], Callable[[list[np.ndarray]], int]]
  full_warmup: bool = False  # Compiles per input shape: warm up on every image.
  batched: bool = False


SYSTEMS: dict[str, System] = {
    "facecraft_mtcnn": System("FaceCraft MTCNN (batch 1)", _facecraft("mtcnn", False), True),
    "facecraft_mtcnn_batched": System(
        "FaceCraft MTCNN (batched)", _facecraft("mtcnn", True), True, True),
    "facecraft": System("FaceCraft joint cascade (bundled, batch 1)",
                        _facecraft("facecraft", False), True),
    "facecraft_batched": System("FaceCraft joint cascade (bundled, batched)",
                                _facecraft("facecraft", True), True, True),
    "facenet": System("facenet-pytorch MTCNN", _facenet),
    "haar": System("OpenCV Haar", _haar),
    "yunet": System("OpenCV YuNet", _yunet),
    "rpn_frcnn": System("FaceCraft RPN + Fast R-CNN (bundled, batch 1)",
                        _facecraft("rpn-frcnn", False), True),
    "dlib_hog0": System("dlib HOG (upsample 0)", _dlib(0)),
    "dlib_hog1": System("dlib HOG (upsample 1)", _dlib(1)),
}


def all_systems() -> dict[str, System]:
  """SYSTEMS plus one 'bundle:<file name>' system per --bundle path."""
  out = dict(SYSTEMS)
  for path in _BUNDLE.value:
    stem = os.path.basename(path).rsplit(".", 1)[0]
    out[f"bundle:{stem}"] = System(f"FaceCraft {stem} (--bundle, batch 1)",
                                   _facecraft(path, False), True)
  return out


# ---------------------------------------------------------------------------------------------
# Images.


def _data_root() -> pathlib.Path:
  if _DATA_ROOT.value:
    return pathlib.Path(_DATA_ROOT.value)
  return pathlib.Path(os.environ.get("FACECRAFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def source_images(root: pathlib.Path, n_caltech: int, quick: bool) -> list[np.ndarray]:
  """CMU+MIT (all, or 3) plus evenly spaced Caltech photos, decoded to RGB."""
  from data_pipelines import images  # pylint: disable=g-import-not-at-top
  cmu = sorted(glob.glob(str(root / "cmu_mit_frontal" / "images" / "*")))
  caltech = sorted(glob.glob(str(root / "caltech_webfaces" / "images" / "*.jpg")))
  if quick:
    cmu, n_caltech = cmu[:3], 3
  step = max(len(caltech) // max(n_caltech, 1), 1)
  paths = cmu + caltech[::step][:n_caltech]
  if not paths:
    raise FileNotFoundError(f"no images under {root}")
  return [images.decode(p) for p in paths]


def fddb_like(rgb: np.ndarray, longer: int = 450) -> np.ndarray:
  h, w = rgb.shape[:2]
  s = longer / max(h, w)
  size = (max(round(w * s), 1), max(round(h * s), 1))
  return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def letterbox(rgb: np.ndarray) -> np.ndarray:
  from data_pipelines import images  # pylint: disable=g-import-not-at-top
  return images.letterbox(rgb, 640, 480)


SETS = {"fddb": fddb_like, "vga": letterbox}


# ---------------------------------------------------------------------------------------------
# Worker: one system, one image set, one thread mode.


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_worker(key: str, npz: str, single: bool, batch_size: int, repeats: int = 1) -> dict:
  with np.load(npz) as data:
    imgs = [data[f"arr_{i}"] for i in range(len(data.files))]
  system = all_systems()[key]
  # Peak RSS includes the interpreter and the image set; report the system's share too.
  out = {"n": len(imgs), "baseline_mib": _rss_mib(), "loadavg": os.getloadavg()[0]}
  try:
    t0 = time.perf_counter()
    run = system.build(single, batch_size)
    out["setup_s"] = time.perf_counter() - t0
  except Exception as e:  # pylint: disable=broad-except  # Report "not available", never crash.
    return {**out, "error": f"not available yet: {type(e).__name__}: {e}"[:300]}
  warm = imgs if system.full_warmup else imgs[:3]
  try:
    t0 = time.perf_counter()
    run(warm)
    out["warmup_s"] = time.perf_counter() - t0
    for _ in range(max(repeats, 1)):
      c0, t0 = _cpu_seconds(), time.perf_counter()
      out["faces"] = int(run(imgs))
      timed, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
      if timed < out.get("timed_s", np.inf):
        out["timed_s"], out["cpu_s"] = timed, cpu
  except Exception as e:  # pylint: disable=broad-except  # One failed row, not a failed table.
    return {**out, "error": f"failed: {type(e).__name__}: {e}"[:300]}
  out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if system.full_warmup:
    out["compile_s"] = max(out["warmup_s"] - out["timed_s"], 0.0)
  return out


def _worker_command(key: str, npz: str, single: bool, batch_size: int,
                    repeats: int) -> tuple[list, dict]:
  cmd = [sys.executable, "-m", "experiments.bench", f"--worker={key}", f"--images_npz={npz}",
         f"--batch_size={batch_size}", f"--single={single}", f"--repeats={repeats}",
         f"--yunet_model={_YUNET.value}", f"--bundle={','.join(_BUNDLE.value)}"]
  env = dict(os.environ)
  if single:
    cmd = ["taskset", "-c", "0"] + cmd
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "XLA_FLAGS": (env.get("XLA_FLAGS", "") +
                              " --xla_cpu_multi_thread_eigen=false").strip()})
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return cmd, env


# ---------------------------------------------------------------------------------------------
# Table.

COLUMNS = ["system", "set", "threads", "batch", "images", "mean size", "ms/image", "images/s",
           "CPU/wall", "compile s", "peak RSS MiB", "over images MiB", "faces", "note"]


def make_row(system: System, set_name: str, threads: str, batch_size: int, mean_size: str,
             res: dict) -> dict:
  row = {"system": system.label, "set": set_name, "threads": threads,
         "batch": batch_size if system.batched else 1, "images": res.get("n", 0),
         "mean size": mean_size}
  if "error" in res:
    # One table cell: no newlines or pipes from a traceback.
    return {**row, "note": " ".join(res["error"].split()).replace("|", "/")}
  n, t = res["n"], res["timed_s"]
  row.update({
      "ms/image": f"{1000 * t / n:.1f}", "images/s": f"{n / t:.1f}",
      "CPU/wall": f"{res['cpu_s'] / t:.2f}",
      "compile s": f"{res['compile_s']:.1f}" if "compile_s" in res else "-",
      "peak RSS MiB": f"{res['maxrss_mib']:.0f}",
      "over images MiB": f"{res['maxrss_mib'] - res['baseline_mib']:.0f}", "faces": res["faces"],
      "note": f"setup {res['setup_s']:.1f} s, warm-up {res['warmup_s']:.1f} s, "
              f"load avg {res['loadavg']:.1f}"})
  return row


def markdown(rows: list[dict]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKER.value:
    print("BENCH_RESULT " + json.dumps(
        run_worker(_WORKER.value, _IMAGES_NPZ.value, _SINGLE.value, _BATCH.value,
                   _REPEATS.value)))
    return
  systems = all_systems()
  keys = _SYSTEMS.value or [k for k in systems if (k != "yunet" or _YUNET.value)]
  unknown = sorted(set(keys) - set(systems)) + sorted(set(_SETS.value) - set(SETS)) + sorted(
      set(_THREADS.value) - {"1", "all"})
  if unknown:
    raise app.UsageError(f"unknown systems/sets/thread modes: {unknown}")
  out_dir = pathlib.Path(_OUT_DIR.value)
  out_dir.mkdir(parents=True, exist_ok=True)
  sources = source_images(_data_root(), _N_CALTECH.value, _QUICK.value)
  print(f"{len(sources)} source photos; systems {keys}", file=sys.stderr)
  rows = []
  for set_name in _SETS.value:
    prepared = [SETS[set_name](im) for im in sources]
    npz = out_dir / f"images_{set_name}.npz"
    np.savez(npz, *prepared)
    hw = np.array([im.shape[:2] for im in prepared])
    mean_size = f"{hw[:, 1].mean():.0f}x{hw[:, 0].mean():.0f}"
    for threads in _THREADS.value:
      for key in keys:
        single = threads == "1"
        cmd, env = _worker_command(key, str(npz), single, _BATCH.value, _REPEATS.value)
        print(f"[{set_name} / {threads} thread(s)] {systems[key].label} ...", file=sys.stderr,
              flush=True)
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("BENCH_RESULT ")]
        if lines:
          res = json.loads(lines[-1][len("BENCH_RESULT "):])
        else:
          res = {"n": len(prepared),
                 "error": f"worker failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"}
        rows.append(make_row(systems[key], set_name, threads, _BATCH.value, mean_size, res))
        print("  " + json.dumps(rows[-1]), file=sys.stderr, flush=True)
    npz.unlink()
  table = markdown(rows)
  (out_dir / "bench.md").write_text(table)
  with open(out_dir / "bench.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  print(table)
  print(f"wrote {out_dir / 'bench.md'} and {out_dir / 'bench.csv'}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
