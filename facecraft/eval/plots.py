"""ROC, PR and CED figures (PNG), several systems on one plot, the key number in the legend.

Figures are drawn on matplotlib's Agg canvas directly (matplotlib.figure.Figure +
FigureCanvasAgg), never through pyplot: no global backend is switched, no window opens, and
nothing happens at import time, so importing this module is safe anywhere.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from facecraft.eval import landmarks as landmarks_lib

DEFAULT_SIZE = (800, 600)  # Pixels (width, height) of the PNG.
_DPI = 100


def _figure(size: tuple[int, int]):
  # Local imports: matplotlib is only paid for by callers that draw.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot(1, 1, 1)


def _save(fig, ax, path: str, title: str, xlabel: str, ylabel: str,
          legend: str = "lower right") -> str:
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  ax.legend(loc=legend, fontsize="small")
  fig.tight_layout()
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.savefig(path, format="png", dpi=_DPI)
  return path


def _check_systems(systems: Mapping) -> None:
  if not systems:
    raise ValueError("nothing to plot: no systems given")


def _xy(name: str, x, y, what_x: str, what_y: str) -> tuple[np.ndarray, np.ndarray]:
  """One system's curve as float64 arrays of equal shape (the error names both)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f"{name}: {x.shape} {what_x} for {y.shape} {what_y}")
  return x, y


def tpr_at(fp_counts: Sequence[float], tpr: Sequence[float], fp: float) -> float:
  """Best true-positive rate reached with at most `fp` false positives (0 if none)."""
  fp_counts, tpr = np.asarray(fp_counts, np.float64), np.asarray(tpr, np.float64)
  ok = fp_counts <= fp
  return float(tpr[ok].max()) if ok.any() else 0.0


def plot_roc(systems: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str,
             title: str = "Discrete ROC", max_fp: float | None = None, key_fp: float = 1000,
             size: tuple[int, int] = DEFAULT_SIZE) -> str:
  """True-positive rate against the number of false positives (FDDB style); returns path."""
  _check_systems(systems)
  fig, ax = _figure(size)
  curves = {name: _xy(name, fp, tpr, "false-positive counts", "rates")
            for name, (fp, tpr) in systems.items()}
  # At least one false positive wide: a detector without any would else be a vertical line in a
  # zero-width axis. A curve holds its last rate to the right edge (more false positives allowed
  # never lower the best rate reached).
  right = max_fp if max_fp is not None else max(
      [1.0] + [float(fp.max()) for fp, _ in curves.values() if fp.size])
  for name, (fp_counts, tpr) in curves.items():
    label = f"{name} (TPR@{key_fp:g} = {tpr_at(fp_counts, tpr, key_fp):.4f})"
    if fp_counts.size and fp_counts[-1] < right:
      fp_counts, tpr = np.append(fp_counts, right), np.append(tpr, tpr[-1])
    ax.step(fp_counts, tpr, where="post", label=label)
  ax.set_xlim(0, right)
  ax.set_ylim(0, 1)
  return _save(fig, ax, path, title, "false positives", "true positive rate")


def plot_pr(systems: Mapping[str, tuple[Sequence[float], Sequence[float], float]], path: str,
            title: str = "Precision-recall", size: tuple[int, int] = DEFAULT_SIZE) -> str:
  """Precision against recall, AP in the legend; returns path."""
  _check_systems(systems)
  fig, ax = _figure(size)
  for name, (recall, precision, ap) in systems.items():
    recall, precision = _xy(name, recall, precision, "recalls", "precisions")
    ax.plot(recall, precision, label=f"{name} (AP = {ap:.4f})")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  return _save(fig, ax, path, title, "recall", "precision", legend="best")


def plot_ced(systems: Mapping[str, Sequence[float]], path: str, max_error: float = 0.1,
             title: str = "Cumulative error distribution", xlabel: str = "NME",
             size: tuple[int, int] = DEFAULT_SIZE) -> str:
  """Fraction of faces with NME <= x for x up to max_error, AUC@max_error in the legend."""
  _check_systems(systems)
  fig, ax = _figure(size)
  for name, nmes in systems.items():
    x, y = landmarks_lib.ced(nmes, max_error)
    ax.plot(x, y, label=f"{name} (AUC@{max_error:g} = {landmarks_lib.auc(nmes, max_error):.4f})")
  ax.set_xlim(0, max_error)
  ax.set_ylim(0, 1)
  return _save(fig, ax, path, title, xlabel, "fraction of faces", legend="upper left")


def plot_curves(systems: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str,
                title: str, xlabel: str, ylabel: str, log_y: bool = False,
                size: tuple[int, int] = DEFAULT_SIZE) -> str:
  """Plain line plots (training curves: a metric against steps or samples); returns path."""
  _check_systems(systems)
  fig, ax = _figure(size)
  for name, (x, y) in systems.items():
    x, y = _xy(name, x, y, "x values", "y values")
    keep = np.isfinite(x) & np.isfinite(y)
    ax.plot(x[keep], y[keep], label=name)
  if log_y:
    ax.set_yscale("log")
  return _save(fig, ax, path, title, xlabel, ylabel, legend="best")


def plot_bars(systems: Mapping[str, Sequence[float]], categories: Sequence[str], path: str,
              title: str, ylabel: str, errors: Mapping[str, Sequence[float]] | None = None,
              log_y: bool = False, size: tuple[int, int] = DEFAULT_SIZE) -> str:
  """Grouped bars: one group per category, one bar per system (optional ± error bars)."""
  _check_systems(systems)
  fig, ax = _figure(size)
  x = np.arange(len(categories), dtype=np.float64)
  width = 0.8 / len(systems)
  for i, (name, values) in enumerate(systems.items()):
    values = np.asarray(values, np.float64)
    if values.shape != (len(categories),):
      raise ValueError(f"{name}: {values.shape} values for {len(categories)} categories")
    err = None if errors is None or name not in errors else np.asarray(errors[name], np.float64)
    ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, yerr=err, capsize=3,
           label=name)
  ax.set_xticks(x)
  ax.set_xticklabels(list(categories))
  if log_y:
    ax.set_yscale("log")
  return _save(fig, ax, path, title, "", ylabel, legend="best")
