"""The `facecraft` command: wires the layers together for users (see README).

  facecraft detect     [PATHS...] [--model facecraft|mtcnn|BUNDLE] [--align mtcnn-onet] [--output dets.json]
                       [--draw OUTDIR] [--batch-size N] [--compile-cache DIR|off]
                       (no paths: the bundled sample picture, drawn into ./facecraft_detections;
                       results stream to dets.jsonl, a rerun resumes)
  facecraft warmup     [PATHS...] [--size HxW ...] [--model M] [--batch-size N]
                       compiles ahead of time what `detect` will run, into the persistent cache
  facecraft inspect    [--format F --root R] [--out montage.png] ...   counts + montage of a data set
                       (no --root: the bundled sample picture)
  facecraft build-tfds --kind face_detection --format F --root R --data-dir D [--split S ...]
  facecraft evaluate   --dataset fddb --root R --detections dets.json [--plot out.png] ...

Subcommands import their modules lazily, so `facecraft inspect` never loads jax.
Each subcommand has its own --help.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from data_pipelines.registry import Registry

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def _inspect(argv: list[str]) -> int:
  from data_pipelines import inspect  # pylint: disable=g-import-not-at-top
  if not any(a == "--root" or a.startswith("--root=") for a in argv):
    print(f"no --root given: inspecting the bundled sample in {ASSETS}", file=sys.stderr)
    argv = ["--format", "facecraft_json", "--root", ASSETS, "--tile", "512"] + [
        a for a in argv if not (a == "--format" or a.startswith("--format="))]
  return inspect.main(argv)


def _thresholds(text: str) -> tuple[float, ...]:
  """One score per stage of the model (the model checks the count: cascades 3, rpn_frcnn 2)."""
  try:
    values = tuple(float(x) for x in text.split(","))
  except ValueError:
    values = ()
  if not 1 <= len(values) <= 3 or not all(0.0 <= v < 1.0 for v in values):
    raise argparse.ArgumentTypeError(f"{text!r}: comma-separated scores in [0, 1), one per "
                                     "stage: three for cascades (e.g. 0.6,0.7,0.01), two for "
                                     "rpn_frcnn models (rpn, final)")
  return values


def _detect_parser(prog: str, description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=prog, description=description)
  p.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns")
  p.add_argument("--model", default=None,
                 help="a Detector.from_pretrained name or a bundle path: 'facecraft' (our bundled "
                      "model, the default when installed), 'mtcnn' (the original weights), ...")
  p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8)
  p.add_argument("--min-face-size", "--min_face_size", dest="min_face_size", type=float,
                 default=None, help="pixels (default: the model's recommended, 20)")
  p.add_argument("--thresholds", default=None, type=_thresholds,
                 help="T1,T2,T3: the cascade's stage thresholds, or RPN,FINAL for an "
                      "rpn_frcnn model (default: the model's "
                      "recommended); e.g. a low T3 such as 0.01 returns candidates down to that "
                      "score, for complete ROC / PR curves")
  p.add_argument("--merge-buckets", "--merge_buckets", dest="merge_buckets",
                 action=argparse.BooleanOptionalAction, default=True,
                 help="pad a rare picture size into a larger compiled one when that is cheaper "
                      "than compiling it (pyramid models; on by default: 3 compiles instead of 15 "
                      "on CMU+MIT's 130 photos, boxes equal to 0.001 px). --no-merge-buckets "
                      "runs every picture in its own bucket, so a picture's coordinates never "
                      "depend on the rest of the folder, even in their last bit")
  p.add_argument("--compile-cache", "--compile_cache", dest="compile_cache", default=None,
                 help="JAX's persistent compilation cache folder, 'off' to disable (default: "
                      "$FACECRAFT_COMPILE_CACHE, else ~/.cache/facecraft/jax); whole compiled "
                      "functions are kept in its facecraft_executables/ subfolder, so a warm "
                      "run neither traces nor compiles")
  return p


def _detect(argv: list[str]) -> int:
  p = _detect_parser("facecraft detect",
                     "Detects faces (boxes, scores, five landmarks) in images. Results stream to a "
                     "JSON Lines file as they come; a rerun with the same output resumes.")
  p.add_argument("--align", default=None,
                 help="an aligner that adds landmarks to every box, e.g. 'mtcnn-onet' (five "
                      "points from MTCNN's O-Net, for a model without landmarks); 'none': no "
                      "aligner (default: the model's own, if its bundle names one)")
  p.add_argument("--output", default="-",
                 help="detections JSON path ('-': stdout); results also stream to the same path "
                      "with .jsonl (one line per image); a .jsonl path streams only")
  p.add_argument("--jsonl", default=None, help="the JSON Lines path (default: from --output)")
  p.add_argument("--draw", default=None, help="write each picture with its detections here")
  p.add_argument("--root", default=None,
                 help="image ids are paths relative to this folder, without extension "
                      "(default: the folder when one folder is given, else the file name)")
  p.add_argument("--no-progress", dest="progress", action="store_false")
  args = p.parse_args(argv)
  if args.batch_size < 1:
    p.error("--batch-size must be at least 1")
  from facecraft.infer import files, stream  # pylint: disable=g-import-not-at-top
  found = _found_paths(args)
  if isinstance(found, int):
    return found
  jsonl = args.jsonl or (None if args.output == "-" else os.path.splitext(args.output)[0] + ".jsonl")
  final = None if args.output == "-" or args.output.endswith(".jsonl") else args.output
  try:  # Every destination is proved writable before any work: no result lost to a late error.
    for path, what in ((final, "--output"), (jsonl, "--jsonl")):
      if path:
        stream.check_writable_file(path, what)
    if args.draw:
      stream.check_writable_folder(args.draw, "--draw")
  except OSError as e:
    return _fail(e)
  root = args.root or (args.paths[0] if len(args.paths) == 1 and os.path.isdir(args.paths[0])
                       else None)
  items = [(files.image_id(path, root), path) for path in found]
  log = stream.ResultLog(jsonl)
  todo = [item for item in items if item[0] not in log.done]
  if len(todo) < len(items):
    print(f"resuming: {len(items) - len(todo)} of {len(items)} images already in {jsonl}",
          file=sys.stderr)
  det = _load_detector(args, args.align)
  if isinstance(det, int):
    return det
  progress = stream.Progress(len(items), len(items) - len(todo), enabled=args.progress)
  try:
    for batch in stream.run(det, todo, args.batch_size,
                            on_image=_drawer(args.draw) if args.draw else None):
      for key, entry in batch:
        log.write(key, entry)
      log.flush()
      progress.update(len(batch))
  finally:
    log.close()
  progress.update(0, final=True)
  return _finish(args, final, log, [k for k, _ in items], det)


def _found_paths(args):
  """The image files of args.paths (the bundled sample when none), or an exit status."""
  from facecraft.infer import files  # pylint: disable=g-import-not-at-top
  from facecraft.models import pretrained  # pylint: disable=g-import-not-at-top
  args.model = args.model or ("facecraft" if "facecraft" in pretrained.available() else "mtcnn")
  if not args.paths:
    args.paths = [os.path.join(ASSETS, "astronaut.jpg")]
    if hasattr(args, "draw"):
      args.draw = args.draw or "facecraft_detections"
    print(f"no paths given: detecting faces in the bundled sample {args.paths[0]} with model "
          f"{args.model!r}", file=sys.stderr)
  try:
    found = files.expand_paths(args.paths)
  except FileNotFoundError as e:
    return _fail(e)
  if not found:
    return _fail("no images found in " + " ".join(args.paths))
  return found


def _fail(message) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 2


def _load_detector(args, align=None):
  """The persistent compilation cache turned on, then the detector (or an exit status)."""
  from facecraft import cache  # pylint: disable=g-import-not-at-top
  from facecraft.infer import detector as detector_lib  # pylint: disable=g-import-not-at-top
  from facecraft.infer import executables  # pylint: disable=g-import-not-at-top
  from facecraft.infer import pyramid  # pylint: disable=g-import-not-at-top
  try:
    args.cache_dir = cache.enable_compile_cache(cache.compile_cache_dir(args.compile_cache))
    args.hits_before = cache.cache_hits()
    store_dir = cache.executable_dir(args.cache_dir)
    merge = {"merge_compile_s": pyramid.MERGE_COMPILE_S} if args.merge_buckets else {}
    return detector_lib.Detector.from_pretrained(args.model, align=align,
                                                 executables=(executables.ExecutableStore(
                                                     store_dir) if store_dir else None),
                                                 min_face_size=args.min_face_size,
                                                 thresholds=args.thresholds, **merge)
  except (ValueError, FileNotFoundError, KeyError, OSError) as e:
    return _fail(e)


def _compile_report(det, args) -> str:
  from facecraft import cache  # pylint: disable=g-import-not-at-top
  cache_dir = args.cache_dir
  loaded = f", {cache.cache_hits() - args.hits_before} loaded from it" if cache_dir else ""
  if det.executables is not None:
    loaded += f", {det.executables.loads} loaded whole from its executable store"
  return (f"compiled {det.compile_count} functions in {det.compile_seconds:.1f} s "
          f"(compilation cache: {cache_dir or 'off'}{loaded})")


def _finish(args, final, log, order, det) -> int:
  import json  # pylint: disable=g-import-not-at-top
  doc = log.detections_json(order)
  errors = {k: e for k, e in log.errors().items() if k in set(order)}
  text = json.dumps(doc)
  if args.output == "-":
    print(text)
  elif final:
    with open(final, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  faces = sum(len(v) for v in doc.values())
  print(f"{len(doc)} images, {faces} faces" + (f", {len(errors)} skipped" if errors else "") +
        (f"; drawings in {args.draw}" if args.draw else ""), file=sys.stderr)
  for key, message in errors.items():
    print(f"skipped {key}: {message}", file=sys.stderr)
  print(_compile_report(det, args), file=sys.stderr)
  return 0 if doc or not errors else 1


def _warmup(argv: list[str]) -> int:
  p = _detect_parser("facecraft warmup",
                     "Compiles ahead of time, into the persistent compilation cache, what "
                     "`facecraft detect` with the same paths, model and batch size will run.")
  p.add_argument("--size", action="append", default=[],
                 help="HxW (e.g. 480x640): also compile the bucket of a picture of this size; "
                      "repeat for several")
  args = p.parse_args(argv)
  if not args.paths and not args.size:
    p.error("give image paths (a sample of the folder to come) or --size HxW")
  found = _found_paths(args) if args.paths else []
  if isinstance(found, int):
    return found
  det = _load_detector(args)
  if isinstance(det, int):
    return det
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  from facecraft.infer import stream  # pylint: disable=g-import-not-at-top
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    groups, _ = stream.plan(det, [(f, f) for f in found], args.batch_size, pool)
    todo = {(b, n) for b, n, _ in groups if b is not None}
  for size in args.size:
    try:
      h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
      return _fail(f"--size wants HxW, e.g. 480x640; got {size!r}")
    todo.add((det.bucket(h, w), args.batch_size))
  for bucket, batch in sorted(todo, key=repr):
    print(f"bucket {bucket} batch {batch}: {det.warmup(bucket, batch):.1f} s", file=sys.stderr)
  print(_compile_report(det, args), file=sys.stderr)
  return 0


def _drawer(out_dir: str):
  """A callback that writes each image with its detections to out_dir/<id>.jpg."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from data_pipelines import inspect, records  # pylint: disable=g-import-not-at-top

  def draw(key, image, det):
    rec = records.FaceRecord(image=image, boxes=det.boxes, landmarks=det.landmarks,
                             landmark_scheme=None if det.landmarks is None else det.landmark_scheme,
                             image_id=key)
    path = os.path.join(out_dir, key + ".jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(inspect.draw_record(rec))).save(path, quality=92)
  return draw


def _build_tfds(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="facecraft build-tfds",
                              description="Builds a TFDS data set (array_record) over any reader.")
  p.add_argument("--kind", choices=("face_detection", "face_landmarks"), default="face_detection")
  p.add_argument("--format", default=None, help="reader name (data_pipelines.formats)")
  p.add_argument("--config", default=None,
                 help="a predefined config of the builder (e.g. 300w_train, cmu_mit) instead of "
                      "--format; a --format that names a predefined config uses it")
  p.add_argument("--root", required=True)
  p.add_argument("--data-dir", "--data_dir", dest="data_dir", required=True)
  p.add_argument("--split", action="append", default=None,
                 help="reader split(s); repeat for several (default: the reader's default)")
  p.add_argument("--name", default=None, help="config name (default: the format name)")
  p.add_argument("--on-error", "--on_error", dest="on_error", choices=("raise", "skip"),
                 default="raise")
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args(argv)
  from data_pipelines.tfds import common  # pylint: disable=g-import-not-at-top
  from data_pipelines import records  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  predefined = {c.name for c in importlib.import_module(
      f"data_pipelines.tfds.{args.kind}").BUILDER.BUILDER_CONFIGS}
  config = args.config or (args.format if args.name is None and args.split is None and
                           args.format in predefined else None)
  if config is None and args.format is None:
    p.error("give --format (any reader) or --config (one of: " + ", ".join(sorted(predefined)) + ")")
  try:
    if config is not None:
      if config not in predefined:
        raise ValueError(f"unknown {args.kind} config {config!r}; known: {sorted(predefined)}")
      builder = tfds.builder(f"{args.kind}/{config}", data_dir=args.data_dir, root=args.root,
                             on_error=args.on_error)
      builder.download_and_prepare(file_format="array_record")
    else:
      builder = common.build(args.kind, args.format, args.root, args.data_dir, splits=args.split,
                             name=args.name, on_error=args.on_error, overwrite=args.overwrite)
  except (records.AnnotationError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for split, info in builder.info.splits.items():
    print(f"{split}: {info.num_examples} examples")
  print(f"built {builder.info.full_name} in {builder.data_dir}")
  return 0


def _evaluate(argv: list[str]) -> int:
  from facecraft.eval import runner  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog="facecraft evaluate",
                              description="Scores detections or landmarks by the official protocols.")
  runner.add_evaluate_arguments(p)
  p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8,
                 help="with --model: images per detector call")
  args = p.parse_args(argv)
  predict_fn = None
  if args.model:
    if args.detections:
      p.error("give --model or --detections, not both")
    try:
      predict_fn = detect_dataset(args.model, args.batch_size)
    except (ValueError, OSError) as e:
      print(f"facecraft evaluate: error: {e}", file=sys.stderr)
      return 1
  return runner.run_from_args(args, predict_fn=predict_fn)


def detect_dataset(model: str, batch_size: int = 8):
  """The predict_fn that `evaluate --model` hands the dataset's evaluator: a bundled detector
  (Detector.from_pretrained name) over a list of uint8 RGB pictures -> their Detections."""
  from facecraft.infer import detector as detector_lib  # pylint: disable=g-import-not-at-top
  det = detector_lib.Detector.from_pretrained(model)

  def predict(arrays):
    found = det.detect_arrays(list(arrays), batch_size=batch_size)
    print(f"{model}: {len(found)} images, {sum(len(d) for d in found)} detections",
          file=sys.stderr)
    return found
  return predict


# One line per command (data_pipelines.registry, as for schedules, formats, models, evaluators).
COMMANDS = Registry("command")
COMMANDS.register("detect", _detect)
COMMANDS.register("warmup", _warmup)
COMMANDS.register("inspect", _inspect)
COMMANDS.register("build-tfds", _build_tfds)
COMMANDS.register("evaluate", _evaluate)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    if argv and argv[0] not in ("-h", "--help"):
      print(f"\nunknown command {argv[0]!r}; commands: {', '.join(COMMANDS.names())}",
            file=sys.stderr)
      return 2
    return 0 if argv else 2
  return COMMANDS.get(argv[0])(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
