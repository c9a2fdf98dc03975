"""Toy config: an MLP on synthetic data through the real loop, in seconds on a CPU.

  python -m experiments.train --config experiments/configs/toy.py --workdir /tmp/toy
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.base_config()
  config.schedule = "toy"
  config.batch_size = 16
  config.num_steps = 100
  config.log_every = 10
  config.lr.rates = (0.1, 0.01)
  config.lr.boundaries = (80,)
  config.checkpoint.every = 20
  config.eval.every = 50
  config.eval.best_metric = "accuracy"

  config.data = ml_collections.ConfigDict()
  config.data.seed = 0
  config.data.num_examples = 512
  config.data.num_eval = 256
  config.data.dim = 8
  config.data.label_noise = 0.1
  config.data.delay_s = 0.0       # Sleep per batch: tests use it to signal a run mid-way.

  config.model = ml_collections.ConfigDict()
  config.model.hidden = 16        # 0: a linear classifier.
  config.model.num_classes = 3
  config.model.input_noise = 0.05
  return config
