"""Check a dataset by eye: counts, and a montage of sampled images with boxes and landmarks.

  python -m data_pipelines.inspect --format cmu_mit --root ../shared/data/cmu_mit_frontal \
      --out montage.png [--split test] [--max-images 24] [--seed 0] [--faces] \
      [--option boxes=face_only] [--no-check-images]

Drawing: face boxes in green, ignored boxes in orange; landmark points coloured by index (a
yellow-to-cyan ramp over the scheme; numbered for schemes of at most 12 points); the five-point
projection (geometry.to_five) is ringed: image-LEFT eye and mouth corner in blue, RIGHT ones in
red, nose in white. On an upright face blue must be on the image's left: a red ring there is a
left/right swap. `--faces` draws zoomed face crops instead of whole pictures, to judge boxes and
half-pixel point conventions.

The pieces (summarize_text, draw_record, draw_face, montage) are library functions so the
`facecraft inspect` CLI can reuse them.
"""

from __future__ import annotations

import argparse
import colorsys
import sys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_pipelines import formats
from data_pipelines import records as records_lib
from data_pipelines import geometry

SIZE_BINS = (16, 32, 64, 128, 256)
BOX_COLOUR = (0, 230, 0)
IGNORE_COLOUR = (255, 150, 0)
FIVE_COLOURS = ((40, 110, 255), (255, 40, 40), (255, 255, 255), (40, 110, 255), (255, 40, 40))
_NUMBERED_MAX_POINTS = 12


def box_size_histogram(recs: Sequence[records_lib.FaceRecord]) -> dict[str, int]:
  """Faces per size bin; size = sqrt(w * h) of the box in pixels."""
  sizes = np.concatenate([np.sqrt(np.clip(r.boxes[:, 2] - r.boxes[:, 0], 0, None) *
                                  np.clip(r.boxes[:, 3] - r.boxes[:, 1], 0, None))
                          for r in recs] or [np.zeros(0)])
  edges = (0,) + SIZE_BINS + (np.inf,)
  labels = [f"<{SIZE_BINS[0]}"] + [f"{a}-{b}" for a, b in zip(SIZE_BINS, SIZE_BINS[1:])] + [
      f">={SIZE_BINS[-1]}"]
  counts = np.histogram(sizes, bins=np.array(edges, np.float64))[0]
  return dict(zip(labels, (int(c) for c in counts)))


def summarize_text(recs: Sequence[records_lib.FaceRecord]) -> str:
  """A human-readable report of the counts (also lists what the reader skipped)."""
  s = records_lib.summarize(list(recs))
  empty = sum(1 for r in recs if r.num_faces == 0)
  lines = [f"images: {s['images']}", f"faces: {s['faces']}", f"ignored faces: {s['ignored']}",
           f"images without faces: {empty}",
           f"max faces per image: {max((r.num_faces for r in recs), default=0)}"]
  lines.append("box sizes (sqrt(w*h) px): " + ", ".join(
      f"{k}: {v}" for k, v in box_size_histogram(recs).items()))
  if s["schemes"]:
    for scheme, n in sorted(s["schemes"].items()):
      masks = [r.landmark_mask for r in recs if r.landmark_scheme == scheme and r.num_faces]
      annotated = int(sum(m.any(-1).sum() for m in masks))
      fraction = float(np.mean(np.concatenate([m.ravel() for m in masks]))) if masks else 0.0
      lines.append(f"landmarks {scheme}: {n} faces, {annotated} with points, "
                   f"{100 * fraction:.1f}% of points annotated")
  else:
    lines.append("landmarks: none")
  for name, counts in sorted(s["attributes"].items()):
    lines.append(f"attribute {name}: " + ", ".join(f"{v}: {c}" for v, c in sorted(counts.items())))
  skipped = getattr(recs, "skipped", [])
  lines.append(f"skipped items: {len(skipped)}")
  lines += [f"  {reason}" for reason in skipped[:10]]
  if len(skipped) > 10:
    lines.append(f"  ... and {len(skipped) - 10} more")
  return "\n".join(lines)


def _point_colour(index: int, count: int) -> tuple[int, int, int]:
  # Yellow -> green -> cyan: never the blue or red of the left/right rings.
  r, g, b = colorsys.hsv_to_rgb(0.14 + 0.36 * index / max(count - 1, 1), 1.0, 1.0)
  return int(255 * r), int(255 * g), int(255 * b)


def _draw_geometry(draw: ImageDraw.ImageDraw, record: records_lib.FaceRecord, scale: float,
                   offset: tuple[float, float] = (0.0, 0.0), width: int = 2,
                   font: ImageFont.ImageFont | None = None) -> None:
  """Draws boxes and points; (x, y) in record pixels maps to (x - ox) * scale in the canvas."""
  ox, oy = offset

  def to_canvas(x, y):
    # Corner coordinates -> PIL pixel indices (PIL puts pixel i's centre at i).
    return (x - ox) * scale - 0.5, (y - oy) * scale - 0.5

  for box, ignored in zip(record.boxes, record.ignore):
    x0, y0 = to_canvas(box[0], box[1])
    x1, y1 = to_canvas(box[2], box[3])
    draw.rectangle([x0 + 0.5, y0 + 0.5, x1 - 0.5, y1 - 0.5],
                   outline=IGNORE_COLOUR if ignored else BOX_COLOUR, width=width)
  if record.landmarks is None or not record.num_faces:
    return
  k = record.landmarks.shape[1]
  radius = max(1.0, width * 0.9)
  five, five_mask = geometry.to_five(record.landmarks, record.landmark_scheme,
                                     record.landmark_mask)
  for face in range(record.num_faces):
    for j in range(5):
      if five_mask[face, j]:
        cx, cy = to_canvas(*five[face, j])
        ring = radius + 2 * width
        draw.ellipse([cx - ring, cy - ring, cx + ring, cy + ring], outline=FIVE_COLOURS[j],
                     width=max(1, width - 1))
    for i in range(k):
      if not record.landmark_mask[face, i]:
        continue
      cx, cy = to_canvas(*record.landmarks[face, i])
      colour = _point_colour(i, k)
      draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
      if k <= _NUMBERED_MAX_POINTS and font is not None:
        draw.text((cx + radius + 1, cy - radius - 1), str(i), fill=colour, font=font)


def line_width(size: tuple[int, int]) -> int:
  """Box line width for a picture of this (width, height): 2 px up to ~1250 px, then growing
  with the picture, so that lines stay visible when a 6000 px photo is viewed scaled down."""
  return max(2, round(max(size) / 500))


def draw_record(record: records_lib.FaceRecord, max_side: int | None = None,
                width: int | None = None) -> np.ndarray:
  """The record's image (uint8 RGB [H, W, 3], scaled to fit max_side) with its annotations.

  width: box line width in pixels (default: line_width of the drawn picture).
  """
  image = Image.fromarray(record.load_image())
  scale = 1.0
  if max_side is not None and max(image.size) > max_side:
    scale = max_side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.BILINEAR)
  draw = ImageDraw.Draw(image)
  width = line_width(image.size) if width is None else width
  _draw_geometry(draw, record, scale, width=width, font=ImageFont.load_default())
  return np.asarray(image)


def draw_face(record: records_lib.FaceRecord, face: int, size: int = 160, context: float = 1.6,
              image: np.ndarray | None = None) -> np.ndarray:
  """A zoomed square crop around one face (box grown by `context`) with all annotations."""
  pixels = record.load_image() if image is None else image
  box = geometry.square_boxes(geometry.scale_boxes(record.boxes[face:face + 1], context))[0]
  side = max(float(box[2] - box[0]), 1.0)
  scale = size / side
  # Nearest-neighbour zoom keeps single pixels visible, so half-pixel errors can be judged.
  crop = Image.fromarray(pixels).transform(
      (size, size), Image.AFFINE, (1 / scale, 0, float(box[0]), 0, 1 / scale, float(box[1])),
      resample=Image.NEAREST if scale >= 2 else Image.BILINEAR)
  draw = ImageDraw.Draw(crop)
  _draw_geometry(draw, record, scale, offset=(float(box[0]), float(box[1])),
                 width=1 if scale < 3 else 2, font=ImageFont.load_default())
  return np.asarray(crop)


def _caption(tile: Image.Image, text: str) -> None:
  draw = ImageDraw.Draw(tile)
  font = ImageFont.load_default()
  draw.rectangle([0, tile.height - 12, tile.width, tile.height], fill=(0, 0, 0))
  draw.text((2, tile.height - 12), text[:48], fill=(255, 255, 255), font=font)


def montage(recs: Sequence[records_lib.FaceRecord], max_images: int = 24, seed: int = 0,
            tile: int = 256, columns: int | None = None, faces: bool = False) -> np.ndarray:
  """A grid (uint8 RGB) of sampled images, or of sampled face crops when `faces` is True."""
  rng = np.random.default_rng(seed)
  if faces:
    items = [(i, j) for i, r in enumerate(recs) for j in range(r.num_faces)]
  else:
    items = [(i, None) for i in range(len(recs))]
  if not items:
    raise ValueError("nothing to draw: no records" + (" with faces" if faces else ""))
  chosen = sorted(rng.choice(len(items), size=min(max_images, len(items)), replace=False))
  columns = columns or int(np.ceil(np.sqrt(len(chosen))))
  rows = int(np.ceil(len(chosen) / columns))
  canvas = Image.new("RGB", (columns * tile, rows * tile), (40, 40, 40))
  for slot, item in enumerate(chosen):
    index, face = items[item]
    record = recs[index]
    try:
      if face is None:
        picture = Image.fromarray(draw_record(record, max_side=tile))
        label = f"{record.image_id} ({record.num_faces})"
      else:
        picture = Image.fromarray(draw_face(record, face, size=tile))
        label = f"{record.image_id} #{face}"
    except (OSError, ValueError) as e:  # An unreadable image must not lose the whole montage.
      picture = Image.new("RGB", (tile, tile), (90, 0, 0))
      label = f"{record.image_id}: {e}"[:48]
    cell = Image.new("RGB", (tile, tile), (40, 40, 40))
    cell.paste(picture, ((tile - picture.width) // 2, (tile - picture.height) // 2))
    _caption(cell, label)
    canvas.paste(cell, ((slot % columns) * tile, (slot // columns) * tile))
  return np.asarray(canvas)


def _parse_option(text: str) -> tuple[str, object]:
  if "=" not in text:
    raise argparse.ArgumentTypeError(f"--option needs key=value, got {text!r}")
  key, value = text.split("=", 1)
  for convert in (int, float):
    try:
      return key, convert(value)
    except ValueError:
      pass
  return key, {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m data_pipelines.inspect", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--format", required=True, help=f"one of: {', '.join(formats.FORMATS)}")
  p.add_argument("--root", required=True, help="the dataset folder")
  p.add_argument("--out", default=None, help="montage PNG path (none: counts only)")
  p.add_argument("--split", default=None)
  p.add_argument("--max-images", "--max_images", dest="max_images", type=int, default=24)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--tile", type=int, default=256, help="montage cell size in pixels")
  p.add_argument("--faces", action="store_true", help="draw zoomed face crops")
  p.add_argument("--on-error", "--on_error", dest="on_error", default="raise",
                 choices=records_lib.ON_ERROR_CHOICES)
  p.add_argument("--no-check-images", "--nocheck_images", dest="check_images",
                 action="store_false", help="do not read image headers while loading")
  p.add_argument("--option", action="append", type=_parse_option, default=[],
                 help="extra reader keyword, key=value (repeatable), e.g. boxes=face_only")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the tool; argv excludes the program name (sys.argv[1:] when None)."""
  args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
  kw = dict(args.option)
  try:
    recs = formats.load(args.format, args.root, split=args.split, on_error=args.on_error,
                        check_images=args.check_images, **kw)
  except (ValueError, TypeError, OSError) as e:  # Bad names, options, files: one clear line.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"format: {args.format}  root: {args.root}  split: {args.split}")
  print(summarize_text(recs))
  if args.out:
    grid = montage(recs, max_images=args.max_images, seed=args.seed, tile=args.tile,
                   faces=args.faces)
    Image.fromarray(grid).save(args.out)
    print(f"montage: {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
