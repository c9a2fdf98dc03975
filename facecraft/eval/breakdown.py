"""Which faces a detector finds: recall by annotated attribute and by face size.

WIDER FACE labels every face with blur (clear / normal / heavy), occlusion (none / partial /
heavy), pose (typical / atypical), illumination, expression and an `invalid` flag. A face counts
as found when some detection (of any score the model returned) overlaps it at IoU >= iou; so
the numbers are the recall the model can reach at its lowest threshold, group by group, which
says what limits it (the AP also depends on how those detections rank against false ones).
Invalid faces are left out, as the official protocol leaves them out.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import geometry

ATTRIBUTE_VALUES = {
    "blur": ("clear", "normal", "heavy"),
    "occlusion": ("none", "partial", "heavy"),
    "pose": ("typical", "atypical"),
    "illumination": ("normal", "extreme"),
    "expression": ("typical", "exaggerated"),
}
WIDTH_BINS = (0, 16, 32, 64, 128, 256, float("inf"))


def best_overlaps(gt_boxes: np.ndarray, det_boxes: np.ndarray) -> np.ndarray:
  """[N] the best IoU of each true box with any detection (0 without detections)."""
  gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  det = np.asarray(det_boxes, np.float64).reshape(-1, 4)
  if not len(gt) or not len(det):
    return np.zeros(len(gt))
  return geometry.pairwise_iou(gt, det).max(axis=1)


def recall_breakdown(records: Sequence[Any], dets: Mapping[str, Any], iou: float = 0.5,
                     width_bins: Sequence[float] = WIDTH_BINS) -> dict[str, tuple[int, float]]:
  """{group: (faces, share found)} over records (image_id, boxes xyxy, attributes) and dets
  {image_id: (boxes, scores)} (an image without an entry found nothing). Groups: "all",
  "<attribute>=<value name>" for the attributes present, "width <lo>-<hi>" (pixels)."""
  best, widths, attrs = [], [], {}
  for rec in records:
    boxes = np.asarray(rec.boxes, np.float64).reshape(-1, 4)
    found = dets.get(rec.image_id)
    b = best_overlaps(boxes, found[0] if found is not None else np.zeros((0, 4)))
    a = dict(getattr(rec, "attributes", None) or {})
    keep = np.asarray(a.get("invalid", np.zeros(len(boxes))), np.int64) == 0
    best.append(b[keep])
    widths.append((boxes[:, 2] - boxes[:, 0])[keep])
    for name in ATTRIBUTE_VALUES:
      if name in a:
        attrs.setdefault(name, []).append(np.asarray(a[name], np.int64)[keep])
  best = np.concatenate(best) if best else np.zeros(0)
  hit = best >= iou
  widths = np.concatenate(widths) if widths else np.zeros(0)
  out = {"all": (int(len(hit)), _share(hit))}
  for name, parts in attrs.items():
    values = np.concatenate(parts)
    for v, label in enumerate(ATTRIBUTE_VALUES[name]):
      m = values == v
      if m.any():
        out[f"{name}={label}"] = (int(m.sum()), _share(hit[m]))
  for lo, hi in zip(width_bins[:-1], width_bins[1:]):
    m = (widths >= lo) & (widths < hi)
    if m.any():
      out[f"width {lo:g}-{hi:g}"] = (int(m.sum()), _share(hit[m]))
  return out


def _share(hit: np.ndarray) -> float:
  return float(hit.mean()) if len(hit) else float("nan")


def markdown(breakdowns: Mapping[str, Mapping[str, Sequence]], iou: float = 0.5) -> str:
  """One row per group, one column per model: the share of its faces found."""
  groups: list[str] = []
  for b in breakdowns.values():
    groups += [g for g in b if g not in groups]
  names = list(breakdowns)
  lines = [f"Share of faces found (a detection at IoU >= {iou:g}, any returned score); "
           "invalid faces left out.", "",
           "| faces | group | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
  for g in groups:
    n = next(int(b[g][0]) for b in breakdowns.values() if g in b)
    cells = [f"{b[g][1]:.3f}" if g in b else "-" for b in breakdowns.values()]
    lines.append(f"| {n} | {g} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
