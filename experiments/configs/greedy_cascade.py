r"""Greedy baseline of the FaceCraft cascade: x12; freeze; filter / mine; x24; freeze; x48.

  python -m experiments.train --config experiments/configs/greedy_cascade.py \
      --workdir runs/greedy --config.data.root ../shared/data

Same model, data, initial parameters and budget as experiments/configs/joint_cascade.py (the
recipe() is shared): num_steps x batch_size samples, split over the three stages by
greedy.stage_weights. Stages live in runs/greedy/stage_x12, stage_x24, stage_x48; the combined
model ends in runs/greedy/checkpoints in the joint layout (facecraft/train/cascade/greedy.py).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common
from experiments.configs import joint_cascade


def sections() -> ml_collections.ConfigDict:
  """The joint schedule's sections without `init`, plus `greedy`."""
  c = joint_cascade.sections()
  del c["init"]
  c.greedy = dict(stage_weights=(1.0, 1.0, 1.0),  # budget split x12 : x24 : x48
                  filter=True,                   # keep only crops passing the earlier stages
                  mine_negatives=0)              # extra hard negatives mined per later stage
  return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  config = common.base_config()
  config.schedule = "cascade_greedy"
  for name, section in sections().items():
    config[name] = section
  joint_cascade.recipe(config)
  config.data.root = "../shared/data"
  config.gate.thresholds = (0.1, 0.003)      # the stages' pass thresholds, as in joint
  config.greedy.stage_weights = (1.0, 1.0, 1.0)
  config.greedy.filter = True
  config.greedy.mine_negatives = 0
  return config
