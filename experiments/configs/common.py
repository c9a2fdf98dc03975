"""Config values shared by every training config (config files import only ml_collections).

A training config file is `get_config()` returning base_config() plus the schedule's own
sections (its module's CONFIG_SECTIONS, e.g. "model", "data"). The checks of every key and value
live next to the training code (facecraft/train/config_schema.py); experiments.train runs them
before any training.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the paper's Caffe recipe (SGD, momentum 0.9, L2 5e-4, lr 1e-3 then 1e-4)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.schedule = ""           # A name in facecraft.train.SCHEDULES.
  config.batch_size = 64
  config.num_steps = 10_000
  config.log_every = 100
  config.progress_bar = True
  config.frozen = ()             # Regexes on parameter paths ("x12/conv1/kernel") held still.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # "sgd" or "adam" (momentum is adam's b1).
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.weight_decay_mode = "l2"  # "l2": Caffe, added to the gradient; or "decoupled".
  config.optimizer.decay_biases = False
  config.optimizer.clip_grad_norm = 0.0      # 0: no clipping.

  config.lr = ml_collections.ConfigDict()
  config.lr.rates = (1e-3, 1e-4)             # rates[i] from boundaries[i - 1] on.
  config.lr.boundaries = (8_000,)
  config.lr.warmup_steps = 0

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every = 1_000
  config.checkpoint.keep = 3
  config.checkpoint.async_save = True

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 0           # 0: only at the end (when the schedule has an eval).
  config.eval.best_metric = ""    # e.g. "ap": keep workdir/best by this eval metric.
  config.eval.best_mode = "max"   # "max" or "min".

  # Detection evaluators during training, big_vision style: NAME -> dict(type=..., settings),
  # e.g. evals.wider = dict(type="wider", root="wider_face_subset") (facecraft.eval.evaluators;
  # a relative root is under data.root). Empty: the schedule's default (CMU+MIT from config.val).
  config.evals = ml_collections.ConfigDict()
  return config
