r"""Batched VGA throughput of the jitted cascade on an accelerator (or the CPU), batch 1...256.

  python -m experiments.bench_gpu --images DIR --batches 1,8,32,64,128,256 --out_dir runs/bench_gpu

Two numbers per batch size: `device` times the compiled cascade on a batch already on the
device (what the chip sustains), `end_to_end` times Detector.detect_arrays from host arrays to
Detections (host padding, transfer, output copy included). Compile time is reported apart.
"""

from __future__ import annotations

import glob
import os
import time

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("images", ".bench", "folder of 640x480 pictures (synthetic if missing)")
flags.DEFINE_string("batches", "1,8,32,64,128,256", "batch sizes")
flags.DEFINE_string("model", "mtcnn", "Detector.from_pretrained name")
flags.DEFINE_float("seconds", 3.0, "timing budget per batch size")
flags.DEFINE_string("out_dir", "", "write bench_gpu.md / .csv here")


def _images(n: int) -> list[np.ndarray]:
  from data_pipelines import images  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(FLAGS.images, "*.jpg")))
  if not paths:
    print(f"no pictures in {FLAGS.images}: using synthetic noise (no faces)")
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(n)]
  arrays = [images.decode(p) for p in paths]
  return [arrays[i % len(arrays)] for i in range(n)]


def _timed(fn, budget: float) -> tuple[float, int]:
  fn()  # warm
  runs, start = 0, time.perf_counter()
  while time.perf_counter() - start < budget or runs < 3:
    fn()
    runs += 1
  return (time.perf_counter() - start) / runs, runs


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from facecraft.infer import detector as detector_lib  # pylint: disable=g-import-not-at-top
  det = detector_lib.Detector.from_pretrained(FLAGS.model)
  batches = [int(b) for b in FLAGS.batches.split(",")]
  pictures = _images(max(batches))
  bucket = det.engine.bucket(480, 640)
  plan = det.engine.plan(bucket)
  rows = [f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), bucket {bucket}, "
          f"{plan.num_levels} levels, model {FLAGS.model}", "",
          "| batch | compile s | device ms/batch | device img/s | end-to-end img/s | faces/img |",
          "|---|---|---|---|---|---|"]
  csv = ["batch,compile_s,device_ms,device_img_s,e2e_img_s,faces_per_img"]
  print("\n".join(rows), flush=True)
  for b in batches:
    start = time.perf_counter()
    fn = det._function(bucket, b, 0)  # pylint: disable=protected-access
    compile_s = time.perf_counter() - start
    args = [jax.device_put(x) for x in det.engine.inputs(pictures[:b], bucket, b)]
    per_batch, _ = _timed(lambda: jax.block_until_ready(fn(det.engine.params, *args)),
                          FLAGS.seconds)
    batch_pics = pictures[:b]
    e2e, _ = _timed(lambda: det.detect_arrays(batch_pics, batch_size=b), FLAGS.seconds)
    faces = np.mean([len(d) for d in det.detect_arrays(batch_pics, batch_size=b)])
    row = (f"| {b} | {compile_s:.1f} | {per_batch * 1e3:.2f} | {b / per_batch:.0f} | "
           f"{b / e2e:.0f} | {faces:.2f} |")
    rows.append(row)
    csv.append(f"{b},{compile_s:.2f},{per_batch * 1e3:.3f},{b / per_batch:.1f},{b / e2e:.1f},"
               f"{faces:.3f}")
    print(row, flush=True)
  if FLAGS.out_dir:
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    with open(os.path.join(FLAGS.out_dir, "bench_gpu.md"), "w", encoding="utf-8") as f:
      f.write("\n".join(rows) + "\n")
    with open(os.path.join(FLAGS.out_dir, "bench_gpu.csv"), "w", encoding="utf-8") as f:
      f.write("\n".join(csv) + "\n")


if __name__ == "__main__":
  app.run(main)
