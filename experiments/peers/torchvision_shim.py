"""A few lines of plain torch that stand in for the torchvision facenet-pytorch imports.

facenet-pytorch 2.6.0 needs only `torchvision.ops.boxes.batched_nms` (detection) and
`torchvision.transforms.functional.to_tensor` (face extraction). PyPI's torchvision wheels are
built against one torch release each and do not load beside the local CPU build of torch 2.13,
so `install()` puts a fake `torchvision` package into `sys.modules` BEFORE facenet_pytorch is
imported. This is a reference environment only; FaceCraft never imports torch.

`batched_nms` reproduces torchvision's semantics exactly (torchvision/ops/boxes.py and
csrc/ops/cpu/nms_kernel.cpp):
  * dispatch: more than 4000 box numbers on CPU -> per-class "vanilla" NMS whose kept indices are
    re-sorted by `scores.sort(descending=True)`; otherwise the coordinate trick (boxes of class k
    are shifted by k * (max coordinate + 1), then one NMS).
  * NMS: visit boxes in a STABLE descending score sort; IoU with continuous areas
    (x2 - x1) * (y2 - y1), no +1; inter = max(0, xx2 - xx1) * max(0, yy2 - yy1), all float32;
    suppress when IoU > threshold (strict), the comparison made in double as in C++.
  * output: kept indices (int64) in decreasing score order.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
  """torchvision.ops.nms on CPU: greedy, stable descending order, IoU > threshold suppresses."""
  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64)
  order = torch.sort(scores, dim=0, descending=True, stable=True)[1].numpy()
  b = boxes.detach().cpu().numpy()
  x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
  areas = (x2 - x1) * (y2 - y1)  # Same dtype as the boxes (float32 here), as in the C++ kernel.
  zero = np.zeros((), b.dtype)
  suppressed = np.zeros(len(b), bool)
  keep = []
  for pos, i in enumerate(order):
    if suppressed[i]:
      continue
    keep.append(i)
    rest = order[pos + 1:]
    rest = rest[~suppressed[rest]]
    if rest.size == 0:
      continue
    w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
    h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
    inter = w * h
    ovr = inter / (areas[i] + areas[rest] - inter)
    # C++ compares the float IoU with a double threshold; float32 threshold would differ at ties.
    suppressed[rest[ovr.astype(np.float64) > iou_threshold]] = True
  return torch.as_tensor(np.asarray(keep, np.int64))


def _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold):
  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64, device=boxes.device)
  max_coordinate = boxes.max()
  offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
  return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_vanilla(boxes, scores, idxs, iou_threshold):
  keep_mask = torch.zeros_like(scores, dtype=torch.bool)
  for class_id in torch.unique(idxs):
    curr_indices = torch.where(idxs == class_id)[0]
    curr_keep = nms(boxes[curr_indices], scores[curr_indices], iou_threshold)
    keep_mask[curr_indices[curr_keep]] = True
  keep_indices = torch.where(keep_mask)[0]
  return keep_indices[scores[keep_indices].sort(descending=True)[1]]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
  """torchvision.ops.boxes.batched_nms (CPU dispatch rule included)."""
  if boxes.numel() > 4000:
    return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
  return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def to_tensor(pic) -> torch.Tensor:
  """torchvision.transforms.functional.to_tensor for HWC arrays / PIL images -> CHW float."""
  arr = np.asarray(pic)
  if arr.ndim == 2:
    arr = arr[:, :, None]
  t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
  return t.float().div(255) if t.dtype == torch.uint8 else t


def install() -> None:
  """Registers the fake torchvision in sys.modules (idempotent; refuses to hide a real one)."""
  existing = sys.modules.get("torchvision")
  if existing is not None:
    if getattr(existing, "__facecraft_shim__", False):
      return
    raise RuntimeError("a real torchvision is already imported; the shim would hide it")
  root = types.ModuleType("torchvision")
  root.__facecraft_shim__ = True
  root.__version__ = "0.0+facecraft-shim"
  root._is_tracing = lambda: False  # pylint: disable=protected-access
  ops = types.ModuleType("torchvision.ops")
  boxes = types.ModuleType("torchvision.ops.boxes")
  boxes.nms, boxes.batched_nms = nms, batched_nms
  ops.boxes, ops.nms, ops.batched_nms = boxes, nms, batched_nms
  transforms = types.ModuleType("torchvision.transforms")
  functional = types.ModuleType("torchvision.transforms.functional")
  functional.to_tensor = to_tensor
  transforms.functional = functional
  root.ops, root.transforms = ops, transforms
  sys.modules.update({
      "torchvision": root, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
      "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})
