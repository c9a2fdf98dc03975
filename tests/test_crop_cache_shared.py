"""Training crops are cached once per data settings, outside any run folder, and shared by
every run (issue #13: each run used to rebuild gigabytes of crops in its own folder)."""

import os

from facecraft.train.cascade import data as cascade_data
from test_cascade_data import small_config


def test_two_runs_share_one_crop_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("FACECRAFT_CACHE", str(tmp_path / "cache"))
  config = small_config(seed=7)
  first = cascade_data.build(config, str(tmp_path / "run1"))
  second = cascade_data.build(config, str(tmp_path / "run2"))
  assert not first.cached and second.cached and second.key == first.key
  crops = tmp_path / "cache" / "crops"
  assert sorted(os.listdir(crops)) == [f"cascade-{first.key}-{n}" for n in
                                       ("summary.json", "train.npz", "val.npz")]
  assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()
  config.data.cache_dir = str(tmp_path / "mine")  # An explicit folder still wins.
  assert not cascade_data.build(config, str(tmp_path / "run3")).cached
