"""experiments/wider_report.py: curves run every family at its own early-stage thresholds."""

from experiments import wider_report


def test_curve_thresholds_keep_the_early_stages_of_any_family():
  assert wider_report.curve_thresholds((0.4, 0.2, 0.86), 0.01) == (0.4, 0.2, 0.01)  # cascade
  assert wider_report.curve_thresholds([0.05, 0.5], 0.01) == (0.05, 0.01)          # rpn_frcnn
