"""The cascade schedules' config sections: their schema and their value checks.

The defaults live in the config files (experiments/configs/joint_cascade.py, which import only
ml_collections); this module knows which keys a section holds and of what type, so a misspelt or
missing key fails before training with its dotted name (ConfigError("config.data.sampelr")).
Types: float accepts any number (an int where a float is expected is fine), tuple accepts lists.
"""

from __future__ import annotations

import ml_collections

from data_pipelines import training_crops
from data_pipelines import training_sets
from facecraft import losses
from facecraft.models import cascade
from facecraft.train import config_schema
from facecraft.train.config_schema import check

_N = float  # any number

SCHEMA = {
    "model": dict(x12_channels=tuple, x24_channels=tuple, x24_fc=_N, x48_channels=tuple,
                  x48_fc=_N, fuse24=_N, fuse48=_N, dropout=_N, landmarks=bool),
    "data": dict(
        root=str, source=str, train_sets=tuple, native_sets=tuple, val_set=str, cache_dir=str, seed=_N, size=_N, box_scale=_N,
        rule_box_shape=tuple, extra_crops=tuple, mined_first_branch=_N,
        sampler=str, max_images=_N, min_face_size=_N, pos_iou=_N, part_iou=_N, neg_iou=_N,
        face_tries=_N, jitter_shift=_N, jitter_side=tuple, part_ratio=_N, landmark_tries=_N,
        sliding_stride=_N, sliding_interval=_N, sliding_min_scale=_N,
        max_positives_per_image=_N, positive_ratio=_N, max_negatives=_N,
        negatives_from_face_images=_N, face_clearance=_N, val_face_tries=_N, val_negatives=_N,
        val_max_images=_N, flip_prob=_N, brightness=_N, contrast=_N, saturation=_N,
        grayscale_prob=_N, rotation_deg=_N, jpeg_prob=_N, blur_prob=_N, occlusion_prob=_N,
        workers=_N, embedded_images=_N, embedded_val_images=_N,
        embedded_scenes=_N),
    "gate": dict(mode=str, thresholds=tuple, space=str, gradient=str, decision_weight=_N,
                 temperature=dict(start=_N, end=_N, steps=_N, kind=str)),
    "loss": dict(lambdas=tuple, box_weight=_N, landmark_weight=_N, beta=_N, ohem_ratio=_N),
    "init": dict(from_workdir=str, which=str),
    "val": dict(batch_size=_N, detection=bool, min_face_size=_N, factor=_N, thresholds=tuple,
                capacities=tuple, max_tiers=_N, stage1_nms=str, max_images=_N, iou=_N,
                fp_points=tuple, image_batch=_N, buckets=tuple),
    "greedy": dict(stage_weights=tuple, filter=bool, mine_negatives=_N),
}


def check_closed(config, sections) -> None:
  """Every key of the schedule's sections exists, has the schema's type, and nothing else."""
  for name in sections:
    check(name in config and isinstance(config[name], ml_collections.ConfigDict), name,
          "missing section (start from experiments/configs/joint_cascade.py)")
    config_schema.check_section(config[name], SCHEMA[name], f"config.{name}")


def _check_model(m) -> None:
  check(len(m.x12_channels) == 3, "model.x12_channels", "needs 3 entries")
  check(len(m.x24_channels) == 3, "model.x24_channels", "needs 3 entries")
  check(len(m.x48_channels) == 4, "model.x48_channels", "needs 4 entries")
  for key in ("x12_channels", "x24_channels", "x48_channels"):
    check(all(int(c) >= 1 for c in m[key]), f"model.{key}", f"must be >= 1, got {m[key]}")
  check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")


def _check_data(d) -> None:
  check(d.source in training_sets.SOURCES, "data.source",
        f"must be one of {training_sets.SOURCES}")
  check(d.sampler in training_crops.SAMPLERS, "data.sampler",
        f"must be one of {training_crops.SAMPLERS}, got {d.sampler!r}")
  check(d.size == cascade.WINDOWS[2], "data.size", f"the model trains on 48x48 crops, got {d.size}")
  known = training_sets.detection_sets()
  check(all(s in known for s in d.train_sets), "data.train_sets", f"must be a subset of {known}")
  check(len(d.train_sets) + len(d.native_sets) > 0, "data.train_sets",
        "no face set: give data.train_sets and/or data.native_sets")
  for key, entries in (("native_sets", d.native_sets), ("val_set", [d.val_set] if d.val_set else [])):
    for entry in entries:
      try:
        training_sets.parse_set(entry)
      except ValueError as e:
        check(False, f"data.{key}", str(e))
  check(d.box_scale > 0, "data.box_scale", f"must be > 0, got {d.box_scale}")
  shape = tuple(d.get("rule_box_shape", ()))
  check(not shape or (len(shape) == 3 and shape[0] > 0 and shape[1] > 0), "data.rule_box_shape",
        f"must be () or (width > 0, height > 0, shift_y), got {shape}")
  check(0 < d.part_iou <= d.pos_iou < 1, "data.pos_iou", "need 0 < part_iou <= pos_iou < 1")
  check(0 < d.neg_iou <= d.pos_iou, "data.neg_iou", "need 0 < neg_iou <= pos_iou")
  check(0 < d.positive_ratio < 1, "data.positive_ratio",
        f"must be in (0, 1), got {d.positive_ratio}")
  check(0 <= d.negatives_from_face_images <= 1, "data.negatives_from_face_images",
        "must be in [0, 1]")
  check(d.face_clearance >= 1, "data.face_clearance", "must be >= 1")
  check(len(d.jitter_side) == 2 and 0 < d.jitter_side[0] <= d.jitter_side[1], "data.jitter_side",
        f"must be (lo, hi) with 0 < lo <= hi, got {d.jitter_side}")
  for key in ("max_images", "face_tries", "landmark_tries", "max_negatives", "val_face_tries",
              "val_negatives", "val_max_images", "workers", "embedded_images", "embedded_scenes",
              "embedded_val_images", "max_positives_per_image", "part_ratio", "jitter_shift",
              "min_face_size"):
    check(d[key] >= 0, f"data.{key}", f"must be >= 0, got {d[key]}")
  check(d.sliding_stride >= 1 and d.sliding_interval >= 1 and 0 < d.sliding_min_scale <= 1,
        "data.sliding_stride", "need stride >= 1, interval >= 1, 0 < min_scale <= 1")
  for key in ("flip_prob", "grayscale_prob", "jpeg_prob", "blur_prob", "occlusion_prob"):
    check(0 <= d.get(key, 0.0) <= 1, f"data.{key}", f"must be in [0, 1], got {d.get(key)}")
  check(d.get("rotation_deg", 0.0) >= 0, "data.rotation_deg", "must be >= 0")


def _check_gate(g) -> None:
  """The one check of the gate settings: the loss builds its gates from them unchecked."""
  check(g.mode in losses.GATE_MODES, "gate.mode",
        f"must be one of {losses.GATE_MODES}, got {g.mode!r}")
  check(g.space in losses.GATE_SPACES, "gate.space", f"must be one of {losses.GATE_SPACES}")
  check(len(g.thresholds) == 2 and all(0 < t < 1 for t in g.thresholds), "gate.thresholds",
        f"must be two probabilities in (0, 1), got {g.thresholds}")
  check(g.gradient in losses.GATE_GRADIENTS, "gate.gradient",
        f"must be one of {losses.GATE_GRADIENTS}, got {g.gradient!r}")
  check(g.decision_weight >= 0, "gate.decision_weight", f"must be >= 0, got {g.decision_weight}")
  t = g.temperature
  check(t.kind in losses.SCHEDULE_KINDS, "gate.temperature.kind",
        f"must be one of {losses.SCHEDULE_KINDS}, got {t.kind!r}")
  check(t.start > 0 and t.end > 0 and t.steps >= 1, "gate.temperature",
        "need start > 0, end > 0, steps >= 1")


def _check_loss(config) -> None:
  lo = config.loss
  check(len(lo.lambdas) == 3 and all(x >= 0 for x in lo.lambdas) and sum(lo.lambdas) > 0,
        "loss.lambdas", f"must be three weights >= 0, not all 0, got {lo.lambdas}")
  check(0 <= lo.ohem_ratio <= 1, "loss.ohem_ratio", "must be in [0, 1] (0: off)")
  for key in ("box_weight", "landmark_weight", "beta"):
    check(lo[key] >= 0, f"loss.{key}", f"must be >= 0, got {lo[key]}")
  check(not (config.model.landmarks and lo.landmark_weight > 0) or config.data.landmark_tries > 0,
        "data.landmark_tries", "must be > 0 to train landmarks (model.landmarks, "
        "loss.landmark_weight > 0)")


def _check_val(v) -> None:
  check(v.batch_size >= 1, "val.batch_size", "must be >= 1")
  check(len(v.thresholds) == 3 and all(0 <= t < 1 for t in v.thresholds), "val.thresholds",
        f"must be three probabilities in [0, 1), got {v.thresholds}")
  check(len(v.capacities) == 3 and min(v.capacities) >= 1, "val.capacities",
        f"must be three counts >= 1, got {v.capacities}")
  check(v.stage1_nms in ("nms", "maxpool"), "val.stage1_nms", "must be 'nms' or 'maxpool'")
  check(0 < v.iou < 1 and v.min_face_size > 0 and 0 < v.factor < 1, "val.iou",
        "need 0 < val.iou < 1, val.min_face_size > 0, 0 < val.factor < 1")
  check(all(int(k) >= 1 for k in v.fp_points) and v.max_tiers >= 1 and v.image_batch >= 1,
        "val.fp_points", "need fp_points >= 1, max_tiers >= 1, image_batch >= 1")


def validate_common(config) -> None:
  """Checks shared by cascade_joint and cascade_greedy."""
  _check_model(config.model)
  _check_data(config.data)
  _check_gate(config.gate)
  _check_loss(config)
  _check_val(config.val)
