"""ROC / PR / CED figures: real PNGs of the requested size, one line per system."""

import numpy as np
import pytest
from PIL import Image

from facecraft.eval import plots


def _check_png(path, size):
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size == size
    pixels = np.asarray(im.convert("RGB"))
  # Not a blank canvas: white background plus axes, curves and text in other colours.
  assert (pixels < 200).any(-1).mean() > 0.01
  return pixels


def _has_colour(pixels, rgb, tol=40):
  return (np.abs(pixels.astype(int) - rgb).sum(-1) < tol).sum() > 50


def test_roc_two_systems(tmp_path):
  fp = np.arange(0, 3000, 10)
  path = plots.plot_roc({"a": (fp, 0.9 - 0.5 * np.exp(-fp / 300)), "b": (fp, 0.6 + 0 * fp)},
                        str(tmp_path / "sub" / "roc.png"), max_fp=2000)
  pixels = _check_png(path, plots.DEFAULT_SIZE)
  # matplotlib's first two cycle colours: one curve each.
  assert _has_colour(pixels, (31, 119, 180)) and _has_colour(pixels, (255, 127, 14))
  assert plots.tpr_at(fp, fp / 3000, 1000) == pytest.approx(1000 / 3000)
  assert plots.tpr_at([5, 10], [0.2, 0.3], 1) == 0.0


def test_pr_and_ced(tmp_path):
  r = np.linspace(0, 0.9, 50)
  _check_png(plots.plot_pr({"easy": (r, 1 - r ** 4, 0.85)}, str(tmp_path / "pr.png"),
                           size=(640, 480)), (640, 480))
  rng = np.random.default_rng(0)
  _check_png(plots.plot_ced({"m1": rng.gamma(2, 0.02, 100), "m2": [0.01, np.inf]},
                            str(tmp_path / "ced.png"), max_error=0.08), plots.DEFAULT_SIZE)


def test_bad_input(tmp_path):
  with pytest.raises(ValueError, match="no systems"):
    plots.plot_roc({}, str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match="a: 2 false-positive counts|a: \\(2,\\)"):
    plots.plot_roc({"a": ([1, 2], [0.5])}, str(tmp_path / "x.png"))


def test_roc_without_false_positives_is_a_visible_curve(tmp_path):
  """A perfect detector (no false positive at any threshold): its curve spans the plot's width
  at its rate instead of collapsing into a zero-width axis (issue #13)."""
  path = plots.plot_roc({"perfect": ([0, 0, 0], [0.3, 0.6, 0.8])}, str(tmp_path / "roc.png"))
  pixels = _check_png(path, plots.DEFAULT_SIZE)
  blue = np.abs(pixels.astype(int) - (31, 119, 180)).sum(-1) < 40
  cols = np.nonzero(blue.any(0))[0]
  assert cols.max() - cols.min() > pixels.shape[1] // 2  # A long horizontal run, not a line.
