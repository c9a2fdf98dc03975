"""Runs one peer detector over a folder, end to end, in its own process (bench_folders.py).

    python -m experiments.peers.folder_run --system facenet|yunet FOLDER [--yunet-model F.onnx]

Prints one JSON line: images, faces, seconds (decoding + detection, model loading excluded; the
caller measures the process's wall time). Needs only the peer's packages, numpy and pillow
(never jax): it may run in a separate environment that holds torch and OpenCV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageOps

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".pgm", ".ppm")


def files_of(folder: str) -> list[str]:
  return sorted(os.path.join(d, f) for d, _, names in os.walk(folder, followlinks=True)
                for f in names if f.lower().endswith(EXTENSIONS))


def decode(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def facenet():
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  from experiments.peers import facenet_mtcnn  # pylint: disable=g-import-not-at-top
  det = facenet_mtcnn.FacenetMTCNN(**facenet_mtcnn.SETTINGS)
  return lambda rgb: len(det.detect(rgb)[1])


def yunet(model: str, score: float = 0.6):
  """OpenCV's FaceDetectorYN at the size of each picture (its C++ demo's way for photos)."""
  from experiments.peers import yunet as yunet_peer  # pylint: disable=g-import-not-at-top
  det = yunet_peer.YuNet(model, score_threshold=score, threads=1)
  return lambda rgb: len(det.detect(rgb)[1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="experiments.peers.folder_run")
  p.add_argument("folder")
  p.add_argument("--system", choices=("facenet", "yunet"), required=True)
  p.add_argument("--yunet-model", default=None)
  args = p.parse_args(argv)
  run = facenet() if args.system == "facenet" else yunet(args.yunet_model)
  paths = files_of(args.folder)
  start, faces = time.perf_counter(), 0
  for path in paths:
    faces += run(decode(path))
  print(json.dumps({"images": len(paths), "faces": faces,
                    "seconds": round(time.perf_counter() - start, 3)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
