"""Inference: Detector over pluggable engines (engine.py; the pyramid cascade in pyramid.py +
cascade.py, plan.py, ops.py, nms.py) and aligners (aligners.py), models found through registry.py.
Imports jax (facecraft/__init__.py exposes Detector lazily)."""

from facecraft.infer.cascade import CascadeConfig, CascadeSpec, jit_cascade, run_cascade
from facecraft.infer.detections import Detections
from facecraft.infer.detector import Detector
from facecraft.infer.engine import Engine
from facecraft.infer.plan import BucketLadder, FixedBuckets, make_plan, pyramid_scales
from facecraft.infer.pyramid import PyramidEngine
from facecraft.infer.registry import ALIGNERS, FAMILIES, MODELS, register_model
