r"""FaceCraft joint cascade (paper §4): x12 / x24 / x48 trained at once through threshold gates.

  python -m experiments.train --config experiments/configs/joint_cascade.py \
      --workdir runs/joint --config.data.root ../shared/data

  --config experiments/configs/joint_cascade.py:sigmoid      gate mode (hard | sigmoid |
                                                             straight_through), default hard
  --config.init.from_workdir runs/greedy                     start from separately trained branches

Every knob is a config value: the schedule's sections and their defaults live in
facecraft.train.cascade_joint.config_sections() (model, data, gate, loss, init, val); the recipe
below sets the run-level values. Data: Caltech WebFaces + 300-W faces (positives, part faces),
non-face scenes (negatives), CMU+MIT (validation only); see facecraft/train/cascade_data.py.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common
from facecraft.train import cascade_joint


def recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Run-level settings shared by the joint and greedy configs (the same budget for both)."""
  config.seed = 0
  config.batch_size = 128
  config.num_steps = 30_000           # ~7 epochs of the default crops (paper: 5 to 10)
  config.log_every = 100
  config.lr.rates = (1e-3, 1e-4)      # paper: 0.001, then 0.0001
  config.lr.boundaries = (24_000,)
  config.lr.warmup_steps = 0
  config.checkpoint.every = 2_000
  config.eval.every = 2_000
  config.eval.best_metric = "crop/cascade_auc"  # always there; "det/ap" with the detection hook
  config.eval.best_mode = "max"
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = common.base_config()
  config.schedule = "cascade_joint"
  for name, section in cascade_joint.config_sections().items():
    config[name] = section
  recipe(config)
  config.data.root = "../shared/data"
  config.data.sampler = "both"
  config.data.box_scale = 1.4
  config.data.positive_ratio = 0.05   # paper: ~5% positives
  config.gate.mode = arg or "hard"    # the paper's threshold-control layers
  config.gate.thresholds = (0.1, 0.003)
  config.gate.temperature.start = 1.0  # sigmoid / straight_through only (logit space)
  config.gate.temperature.end = 0.05
  config.gate.temperature.steps = 15_000
  config.loss.lambdas = (1.0, 1.0, 1.0)
  config.model.dropout = 0.25
  return config
