"""Evaluators of the benchmarks with their own official tools: WIDER FACE and FDDB.

WIDER: "ap" is {"easy", "medium", "hard"} by the official protocol (eval_tools .mat ground truth),
"num_faces" per setting; "tpr_at_fp" and "ap_voc_hard" are VOC matching over the hard-set faces
(the others ignored), not official numbers. self.result is evaluate_wider's dict.
FDDB: "discrete" / "continuous" {"tpr_at_fp"} (the official DiscROC / ContROC, per fold in
"per_fold"), "tpr_at_fp" the discrete one; "ap" is VOC AP against the ellipses' bounding boxes
(not an official FDDB number). self.result is the fddb.FddbResult.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from data_pipelines import formats
from data_pipelines import records as records_lib
from facecraft.eval import fddb
from facecraft.eval import wider
from facecraft.eval.evaluators import base
from facecraft.eval.evaluators import boxes

# Where the official WIDER evaluation ground truth (wider_{easy,medium,hard}_val.mat) may sit:
# eval_tools.zip unpacks to eval_tools/ground_truth/; the Python port keeps ./ground_truth/.
WIDER_GT_DIRS = ("eval_tools/ground_truth", "ground_truth", ".")
WIDER_GT_FILE = "wider_easy_val.mat"


def wider_gt_dir(root: str) -> str:
  """The folder holding the official wider_{easy,medium,hard}_val.mat under `root`."""
  for sub in WIDER_GT_DIRS:
    folder = os.path.normpath(os.path.join(root, sub))
    if os.path.isfile(os.path.join(folder, WIDER_GT_FILE)):
      return folder
  raise base.EvaluationError(
      f"wider: no {WIDER_GT_FILE} under {root} (looked in {', '.join(WIDER_GT_DIRS)}); unpack the "
      f"official eval_tools.zip there (it holds eval_tools/ground_truth/)")


def wider_records(gt: wider.WiderEvalGT) -> list[records_lib.FaceRecord]:
  """The evaluation ground truth as FaceRecords: faces outside the hard keep list are ignored."""
  recs = []
  for image_id, face_boxes, hard in zip(gt.image_ids, gt.boxes, gt.keep["hard"]):
    ignore = np.ones(len(face_boxes), bool)
    ignore[hard] = False
    recs.append(records_lib.FaceRecord(image="", boxes=face_boxes, ignore=ignore,
                                       image_id=image_id))
  return recs


class WiderEvaluator(boxes.BoxAPEvaluator):
  """WIDER FACE val, official easy / medium / hard AP (ground truth: eval_tools .mat files)."""

  READER = "wider_face"

  def __init__(self, config: Any = None, **kw):
    super().__init__(config, **kw)
    if self.split not in (None, "val"):
      raise base.EvaluationError(f"wider: only the val split has public evaluation ground "
                                 f"truth, got {self.split!r}")
    self.gt: wider.WiderEvalGT | None = None

  def load_records(self) -> list:
    # The benchmark's ground truth is the official evaluation files, not the reader.
    self.gt = wider.load_wider_eval_gt(wider_gt_dir(self._root()))
    return wider_records(self.gt)

  def image_records(self) -> list:
    """The val pictures (the .mat files hold no paths): the wider_face reader's records."""
    wanted = {r.image_id for r in self.records}
    recs = formats.load(self.reader, self._root(), split="val", check_images=False,
                        on_error=self.on_error)
    return [r for r in recs if r.image_id in wanted]

  def _score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    recs = self.records
    self.check_ids(dets, recs)
    out = self.header(dets, recs)
    voc = self.box_metrics(recs, dets)
    self.result = wr = wider.evaluate_wider(self._gt_subset(recs), dets, iou_threshold=self.iou)
    out["ap"] = {k: float(wr[k]) for k in wider.SETTINGS}
    out["num_faces"] = wr["num_faces"]
    out["tpr_at_fp"], out["ap_voc_hard"] = voc["tpr_at_fp"], voc["ap"]
    out["box_convention"] = voc["box_convention"]
    return out

  def _gt_subset(self, recs) -> wider.WiderEvalGT:
    if self.gt is None:
      raise base.EvaluationError("wider: the ground truth is the official .mat files under root; "
                                 "records= cannot stand in for them")
    if len(recs) == len(self.gt.image_ids):
      return self.gt
    n = len(recs)  # max_images: the official protocol over the first images only.
    return dataclasses.replace(self.gt, image_ids=self.gt.image_ids[:n], boxes=self.gt.boxes[:n],
                               keep={k: v[:n] for k, v in self.gt.keep.items()})

  def plot(self, path: str, label: str) -> str:
    from facecraft.eval import plots  # pylint: disable=g-import-not-at-top
    wr = self.result
    return plots.plot_pr({f"{label} {k}": (*wr["curves"][k], wr[k]) for k in wider.SETTINGS},
                         path, title="WIDER FACE val")


class FddbEvaluator(boxes.BoxAPEvaluator):
  """FDDB: the official discrete / continuous ROC (ellipse regions clipped to the image)."""

  READER = "fddb"

  def needs_image_sizes(self) -> bool:
    return True  # The official tool clips regions to the image.

  def _score(self, dets: Mapping[str, Any]) -> dict[str, Any]:
    recs = self.records
    self.check_ids(dets, recs)
    out = self.header(dets, recs)
    voc = self.box_metrics(recs, dets)
    points = tuple(int(k) for k in self.fp_points)
    self.result = fr = fddb.evaluate_fddb(recs, dets)
    out["discrete"] = {"tpr_at_fp": base.tpr_dict(fr.tpr_at_fp("disc", points))}
    out["continuous"] = {"tpr_at_fp": base.tpr_dict(fr.tpr_at_fp("cont", points))}
    out["tpr_at_fp"] = out["discrete"]["tpr_at_fp"]
    if fr.per_fold:
      out["per_fold"] = {fold: {"discrete": base.tpr_dict(r.tpr_at_fp("disc", points)),
                                "continuous": base.tpr_dict(r.tpr_at_fp("cont", points))}
                         for fold, r in fr.per_fold.items()}
    out.update({k: voc[k] for k in ("ap", "ap_11pt", "ap_at_iou", "num_positives",
                                    "box_convention")})
    return out

  def write_files(self, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    fddb.write_roc(os.path.join(out_dir, "DiscROC.txt"), self.result.disc)
    fddb.write_roc(os.path.join(out_dir, "ContROC.txt"), self.result.cont)

  def plot(self, path: str, label: str) -> str:
    from facecraft.eval import plots  # pylint: disable=g-import-not-at-top
    roc = self.result.disc  # [T, 3]: TPR, FP, threshold
    return plots.plot_roc({label: (roc[:, 1], roc[:, 0])}, path, title="FDDB discrete ROC",
                          max_fp=2000)
