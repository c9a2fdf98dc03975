"""Detections: what every engine returns for one image, best first."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Detections:
  """Faces found in one image, best first: boxes [N, 4] xyxy float32 pixel corners, scores [N],
  landmarks [N, K, 2] (scheme `landmark_scheme`, e.g. "five") or None for a model without them.

  `error` is set (and the arrays empty) for an input that could not be read; `truncated` when
  even the engine's largest capacities cut candidates off.
  """

  boxes: np.ndarray
  scores: np.ndarray
  landmarks: np.ndarray | None
  error: str | None = None
  truncated: bool = False
  landmark_scheme: str | None = "five"

  def __len__(self) -> int:
    return len(self.scores)

  @classmethod
  def empty(cls, landmarks: bool = True, error: str | None = None, num_points: int = 5,
            landmark_scheme: str | None = "five") -> Detections:
    return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
               np.zeros((0, num_points, 2), np.float32) if landmarks else None, error,
               landmark_scheme=landmark_scheme if landmarks else None)
