"""Evaluation: the field's own protocols, in numpy (float64 where it matters), never jax.

  detection   VOC matching with ignored faces, PR curve, VOC AP (all-point and 11-point),
              discrete ROC (true-positive rate against the number of false positives); AFW,
              PASCAL faces and CMU+MIT use it at IoU 0.5 and 0.3.
  wider       the official WIDER FACE easy / medium / hard protocol (eval_tools .mat files).
  fddb        the official FDDB DiscROC / ContROC (ellipse-region overlap, Hungarian matching).
  landmarks, plots, runner   landmark errors, figures, and the dataset-level driver of the CLI.

Submodules are imported explicitly (`from facecraft.eval import detection`) so that importing
this package stays cheap.
"""
