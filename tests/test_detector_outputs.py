"""The bundled detectors find what they found before issue #21's restructuring, on every CMU+MIT
picture: tests/fixtures/detector_outputs/<model>.npz was written by generate.py (beside it) from
the code before the change, with each model's recommended settings at batch size 8.

Bit for bit where the fixture was written (same CPU model, usable cores and jax version: XLA's CPU
code depends on all three); elsewhere the parity test's rule (issue #22): the same number of faces, matched one to
one with scores within 1e-5, boxes and landmarks within 0.01 px, except near-ties of the last NMS
(|score diff| <= 1e-6, IoU >= 0.9), at most MAX_TIES of them.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

import conftest
from data_pipelines import geometry

HERE = pathlib.Path(__file__).resolve().parent / "fixtures" / "detector_outputs"
MAX_TIES = 3


GENERATE = conftest.fixture_generator("detector_outputs")


def _compare(image_id, fixture, found, exact: bool) -> int:
  boxes, scores = fixture[f"{image_id}/boxes"], fixture[f"{image_id}/scores"]
  points = fixture.get(f"{image_id}/landmarks")
  assert len(found) == len(scores), f"{image_id}: {len(found)} faces, before {len(scores)}"
  if exact:
    np.testing.assert_array_equal(found.boxes, boxes, err_msg=image_id)
    np.testing.assert_array_equal(found.scores, scores, err_msg=image_id)
    if points is not None:
      np.testing.assert_array_equal(found.landmarks, points, err_msg=image_id)
    return 0
  ties = 0
  for i, j in enumerate(geometry.pairwise_iou(boxes, found.boxes).argmax(axis=1) if len(found)
                        else []):
    if np.abs(boxes[i] - found.boxes[j]).max() > 0.01:
      assert abs(scores[i] - found.scores[j]) <= 1e-6, image_id
      assert geometry.pairwise_iou(boxes[i:i + 1], found.boxes[j:j + 1])[0, 0] >= 0.9, image_id
      ties += 1
      continue
    assert abs(scores[i] - found.scores[j]) <= 1e-5, image_id
    if points is not None:
      assert np.abs(points[i] - found.landmarks[j]).max() <= 0.01, image_id
  return ties


@pytest.mark.parametrize("model", GENERATE.MODELS)
def test_bundled_detectors_find_what_they_found_before(model, shared_data):
  with np.load(HERE / f"{model}.npz", allow_pickle=False) as z:
    fixture = {k: z[k] for k in z.files}
  written = json.loads(str(fixture.pop("environment")))
  exact = (written["cpu"] == conftest._cpu_model()  # pylint: disable=protected-access
           and written["jax"] == jax.__version__ and written["backend"] == jax.default_backend()
           and written.get("cores") == conftest.usable_cores())
  ids, found = GENERATE.detect_all(model, shared_data)
  assert len(ids) == 130 and {k.rsplit("/", 1)[0] for k in fixture} == set(ids)
  ties = sum(_compare(i, fixture, d, exact) for i, d in zip(ids, found))
  print(f"{model}: {sum(map(len, found))} faces on {len(ids)} pictures, "
        f"{'bit-identical' if exact else f'{ties} near-ties'}")
  assert ties <= MAX_TIES
