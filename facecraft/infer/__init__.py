"""Inference: static pyramid plans, integral-image resizing, static-shape NMS, the jitted cascade
and the public Detector. Imports jax (facecraft/__init__.py exposes Detector lazily)."""

from facecraft.infer.cascade import CascadeConfig, CascadeSpec, jit_cascade, run_cascade
from facecraft.infer.detector import MODELS, Detections, Detector, register_model
from facecraft.infer.plan import BucketLadder, FixedBuckets, make_plan, pyramid_scales
