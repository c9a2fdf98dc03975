"""experiments/operating_point.py: the grid parser and the choice of the operating point."""

from __future__ import annotations

import pytest

from experiments import operating_point


def test_parse_grid_and_errors():
  assert operating_point.parse_grid("0.1,0.003  0.6,0.3") == [(0.1, 0.003), (0.6, 0.3)]
  for bad in ("", "0.1", "0.1,0.2,0.3", "1.5,0.1"):
    with pytest.raises(ValueError):
      operating_point.parse_grid(bad)
  # rpn_frcnn bundles have one early stage (the RPN score): one threshold per point.
  assert operating_point.parse_grid("0.05 0.5", early_stages=1) == [(0.05,), (0.5,)]
  with pytest.raises(ValueError, match="1 comma-separated"):
    operating_point.parse_grid("0.05,0.1", early_stages=1)


def test_choose_takes_the_fastest_point_within_tolerance():
  rows = [{"ap_hard": 0.50, "ms_per_image": 90.0}, {"ap_hard": 0.495, "ms_per_image": 40.0},
          {"ap_hard": 0.47, "ms_per_image": 10.0}]
  assert operating_point.choose(rows, 0.01) is rows[1]
  assert operating_point.choose(rows, 0.0) is rows[0]
  assert operating_point.choose(rows, 0.05) is rows[2]


def test_choose_keeps_to_the_speed_reference():
  rows = [{"ap_hard": 0.50, "ms_per_image": 90.0}, {"ap_hard": 0.495, "ms_per_image": 40.0},
          {"ap_hard": 0.47, "ms_per_image": 10.0}]
  # Only points at most as slow as the reference compete; the best of those by hard AP wins.
  assert operating_point.choose(rows, 0.0, max_ms=50.0) is rows[1]
  assert operating_point.choose(rows, 0.0, max_ms=10.0) is rows[2]
  # None fast enough: the rule falls back to every row (the table shows the miss).
  assert operating_point.choose(rows, 0.0, max_ms=5.0) is rows[0]
