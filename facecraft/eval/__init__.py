"""Evaluation: the field's own protocols, in numpy (float64 where it matters), never jax.

  detection   VOC matching with ignored faces, PR curve, VOC AP (all-point and 11-point),
              discrete ROC (true-positive rate against the number of false positives); AFW,
              PASCAL faces and CMU+MIT use it at IoU 0.5 and 0.3.
  wider       the official WIDER FACE easy / medium / hard protocol (eval_tools .mat files).
  fddb        the official FDDB DiscROC / ContROC (ellipse-region overlap, Hungarian matching).
  landmarks, plots   landmark errors (NME, failure rate, AUC, CED) and figures.
  evaluators  one class per protocol over a predict_fn, chosen by config (`type`) through the
              EVALUATORS registry: cmu_mit, wider, fddb, afw, pascal_faces, box_ap, nme. Training
              hooks, `facecraft evaluate`, the ablation and the model report all score through them.
  runner      `facecraft evaluate`'s command line over the evaluators.

Submodules are imported explicitly (`from facecraft.eval import detection`) so that importing
this package stays cheap.
"""
