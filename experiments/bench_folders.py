r"""What users feel: end-to-end wall time of `facecraft detect` over real folders of mixed sizes,
with a cold and a warm compilation cache, beside peers run the same way on the same folders.

  taskset -c 1 python -m experiments.bench_folders --peer_python PEERVENV/bin/python \
      --yunet_model yunet_n_640_640.onnx [--n_caltech 300] [--out experiments/results/...]

Folders (links to the pictures of ../shared/data, laid out in a temporary folder): CMU+MIT (all
130), `--n_caltech` Caltech WebFaces photos (evenly spaced, <= 480 px), the WIDER FACE subset's
val split (222 photos, 1024 px wide). Each system runs in its own process, one after another, so
a row's wall time includes starting Python, loading the model, decoding and, for FaceCraft,
compiling: what `facecraft detect FOLDER --output dets.json` costs a user. "cold": an empty
persistent compilation cache; "warm": the same command again (a fresh output, nothing resumed).

Peers (experiments/peers/folder_run.py, run by --peer_python, which may be another environment
holding torch and OpenCV): facenet-pytorch's MTCNN (torch, one thread) and OpenCV's YuNet
(`FaceDetectorYN`, one thread, the ONNX file from the public repo ShiqiYu/libfacedetection.train,
onnx/yunet_n_640_640.onnx), each at every picture's own size. A peer that cannot start is left out
with its error in the notes.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from experiments import launch

REPO = pathlib.Path(__file__).resolve().parents[1]

_DATA = flags.DEFINE_string("data_root", "", "Real data (default ../shared/data or "
                            "$FACECRAFT_SHARED_DATA).")
_N_CALTECH = flags.DEFINE_integer("n_caltech", 300, "Caltech WebFaces photos in their folder.")
_MODELS = flags.DEFINE_list("models", ["mtcnn", "facecraft"], "FaceCraft bundles to run.")
_PEER_PYTHON = flags.DEFINE_string("peer_python", sys.executable,
                                   "Python of the environment holding torch / OpenCV.")
_YUNET = flags.DEFINE_string("yunet_model", "", "YuNet ONNX file ('': leave YuNet out).")
_SETS = flags.DEFINE_list("sets", ["cmu_mit", "caltech", "wider_val"], "Folders to run.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "facecraft detect --batch-size.")
_OUT = flags.DEFINE_string("out", str(REPO / "experiments" / "results" /
                                      "bench_folders_cpu_1core.md"), "The table (markdown).")


def _data_root() -> pathlib.Path:
  if _DATA.value:
    return pathlib.Path(_DATA.value)
  return pathlib.Path(os.environ.get("FACECRAFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def source_files(root: pathlib.Path, n_caltech: int) -> dict[str, list[str]]:
  caltech = sorted(glob.glob(str(root / "caltech_webfaces" / "images" / "*.jpg")))
  step = max(len(caltech) // max(n_caltech, 1), 1)
  return {
      "cmu_mit": sorted(glob.glob(str(root / "cmu_mit_frontal" / "images" / "*"))),
      "caltech": caltech[::step][:n_caltech],
      "wider_val": sorted(glob.glob(str(root / "wider_face_subset" / "WIDER_val" / "images" /
                                        "*" / "*.jpg"))),
  }


def link_folder(files: list[str], folder: pathlib.Path) -> pathlib.Path:
  """A folder of links to the pictures (unique names: WIDER's live in event subfolders)."""
  folder.mkdir(parents=True)
  for i, path in enumerate(files):
    os.symlink(path, folder / f"{i:05d}_{os.path.basename(path)}")
  return folder


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
  start = time.perf_counter()
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
  return time.perf_counter() - start, done


def run_facecraft(model: str, folder: pathlib.Path, cache: pathlib.Path, out: pathlib.Path,
                  label: str) -> dict:
  cmd = [sys.executable, "-m", "facecraft.cli", "detect", str(folder), "--model", model,
         "--output", str(out), "--batch-size", str(_BATCH.value), "--no-progress",
         "--compile-cache", str(cache)]
  wall, done = _timed(cmd)
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
  compiled = re.search(r"compiled (\d+) functions in ([\d.]+) s", done.stderr)
  faces = sum(len(v) for v in json.loads(out.read_text()).values())
  return {"system": f"facecraft detect --model {model}", "cache": label, "wall_s": wall,
          "compiles": int(compiled.group(1)), "compile_s": float(compiled.group(2)),
          "faces": faces}


def run_peer(system: str, folder: pathlib.Path) -> dict:
  cmd = [_PEER_PYTHON.value, "-m", "experiments.peers.folder_run", str(folder), "--system", system]
  if system == "yunet":
    cmd += ["--yunet-model", _YUNET.value]
  env = {k: v for k, v in os.environ.items()}
  env["PYTHONPATH"] = str(REPO)  # The peer environment need not have facecraft installed.
  wall, done = _timed(cmd, env)
  if done.returncode != 0:
    raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
  result = json.loads(done.stdout.strip().splitlines()[-1])
  name = {"facenet": "facenet-pytorch MTCNN", "yunet": "OpenCV YuNet (n, 640 ONNX)"}[system]
  return {"system": name, "cache": "-", "wall_s": wall, "compiles": None, "compile_s": None,
          "faces": result["faces"], "detect_s": result["seconds"]}


def bench_set(name: str, files: list[str], work: pathlib.Path, notes: list[str]) -> list[dict]:
  folder = link_folder(files, work / name)
  rows = []
  peers = ["facenet"] + (["yunet"] if _YUNET.value else [])
  for peer in peers:
    try:
      rows.append(run_peer(peer, folder))
    except (RuntimeError, ValueError, IndexError) as e:
      notes.append(f"{peer} on {name} left out: {e}")
  for model in _MODELS.value:
    cache = work / f"jax-cache-{model}-{name}"  # Empty: the cold run compiles everything.
    for label in ("cold", "warm"):
      rows.append(run_facecraft(model, folder, cache, work / f"{model}-{name}-{label}.json", label))
  for row in rows:
    row.update(set=name, images=len(files))
    print(json.dumps(row), flush=True)
  return rows


def markdown(rows: list[dict], notes: list[str]) -> str:
  yunet = {r["set"]: r["wall_s"] for r in rows if r["system"].startswith("OpenCV YuNet")}
  head = ("| set | images | system | cache | wall s | ms/image | compiles | compile s | faces | "
          "x YuNet |\n|---|---|---|---|---|---|---|---|---|---|\n")
  lines = []
  for r in rows:
    ratio = f"{r['wall_s'] / yunet[r['set']]:.1f}" if r["set"] in yunet else "-"
    compiles = "-" if r["compiles"] is None else str(r["compiles"])
    compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
    lines.append(f"| {r['set']} | {r['images']} | {r['system']} | {r['cache']} | "
                 f"{r['wall_s']:.1f} | {1000 * r['wall_s'] / r['images']:.0f} | {compiles} | "
                 f"{compile_s} | {r['faces']} | {ratio} |")
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
  foot = [f"CPU: {cpu}, {affinity} core(s) usable by this run; wall time per process, from "
          "start to exit (Python start, model load, decoding, compiling, detection, writing)."]
  return head + "\n".join(lines) + "\n\n" + "\n".join(foot + notes) + "\n"


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  files = source_files(_data_root(), _N_CALTECH.value)
  rows, notes = [], []
  with tempfile.TemporaryDirectory(prefix="bench_folders_") as tmp:
    for name in _SETS.value:
      if not files.get(name):
        notes.append(f"{name}: no pictures found under {_data_root()}")
        continue
      rows += bench_set(name, files[name], pathlib.Path(tmp), notes)
  text = markdown(rows, notes)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main, flags_parser=launch.flags_parser)
