"""The quick training config a new user tries first (issue #13): valid, small everywhere, and
still complete (the CMU+MIT detection check runs, on a few pictures in one bucket)."""

from experiments.configs import joint_cascade
from facecraft.train import config_schema


def test_smoke_config_is_valid_small_and_complete():
  full, smoke = joint_cascade.get_config(), joint_cascade.get_config("smoke")
  config_schema.validate(smoke)
  assert smoke.num_steps <= 200 and smoke.num_steps < full.num_steps // 100
  assert smoke.eval.every == smoke.num_steps and smoke.checkpoint.every == smoke.num_steps
  assert 0 < smoke.data.max_images <= 100 and 0 < smoke.val.max_images <= 8
  assert smoke.val.detection and len(smoke.val.buckets) == 1
  assert sum(smoke.model.x48_channels) < sum(full.model.x48_channels)
  # Composes with the other words; unknown words still fail.
  assert joint_cascade.get_config("sigmoid,smoke").gate.mode == "sigmoid"
  assert joint_cascade.get_config("smoke,cmu_mit").evals.cmu_mit.type == "cmu_mit"
  assert full.val.buckets == ()


def test_val_buckets_reach_the_detection_engine(fixtures_dir):
  """config.val.buckets becomes the evaluation engine's bucket policy: one compile for all."""
  import types  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import formats  # pylint: disable=g-import-not-at-top
  from experiments import cascade_eval  # pylint: disable=g-import-not-at-top
  smoke = joint_cascade.get_config("smoke")
  records = formats.load("cmu_mit", str(fixtures_dir / "cmu_mit"))
  hook = cascade_eval.DetectionEval(smoke, cascade_eval.engine_modules(), records)
  state = types.SimpleNamespace(params={}, extra={"box_stats": {"mean": np.zeros(4),
                                                                "std": np.ones(4)}})
  engine = hook._detector(state).engine  # pylint: disable=protected-access
  assert engine.bucket(100, 90) == engine.bucket(700, 1000) == (768, 1024)
