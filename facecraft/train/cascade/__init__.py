"""The FaceCraft cascade family (x12 / x24 / x48 through threshold gates) and how it trains.

  joint.py    schedule cascade_joint: the three branches at once through the gates (the paper)
  greedy.py   schedule cascade_greedy: x12; freeze; filter; x24; freeze; x48 (the baseline)
  data.py     its batches: crop pools from data_pipelines.training_sets, box targets, flips
  config.py   its config sections' schema and value checks

Both schedules run over the generic loop (facecraft.train.loop) and are registered by name in
facecraft.train.SCHEDULES; the defaults of their sections are in experiments/configs.
"""
