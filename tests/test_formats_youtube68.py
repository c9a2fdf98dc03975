"""youtube68 reader on a fixture in the Udacity keypoints-CSV layout."""

import csv
import pathlib
import shutil

import numpy as np
import pytest

from data_pipelines import records
from data_pipelines.formats import youtube68

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "youtube68"


def _rows(split):
  with open(FIXTURE / f"{split}_frames_keypoints.csv", newline="") as f:
    return list(csv.reader(f))[1:]


def _copy(tmp_path):
  root = tmp_path / "yt"
  shutil.copytree(FIXTURE, root)
  return root


def test_points_one_based_and_tight_boxes():
  recs = youtube68.load(str(FIXTURE))
  assert [r.image_id for r in recs] == ["Alan_Ball_00", "Zoe_Ball_12"]
  for r, row in zip(recs, _rows("training")):
    raw = np.array(row[1:], np.float64).reshape(68, 2)
    assert r.landmark_scheme == "ibug68" and r.num_faces == 1
    np.testing.assert_array_equal(r.landmarks[0], raw - 0.5)
    np.testing.assert_array_equal(r.boxes[0], [raw[:, 0].min() - 0.5, raw[:, 1].min() - 0.5,
                                               raw[:, 0].max() - 0.5, raw[:, 1].max() - 0.5])
  # "6.0,22.0" are the first numbers of the first row.
  np.testing.assert_array_equal(recs[0].landmarks[0, 0], [5.5, 21.5])
  assert recs[0].image.endswith("training/Alan_Ball_00.jpg")
  assert recs[0].image_size == (50, 40) and recs[1].image_size == (64, 60)


def test_test_split_and_bad_split():
  recs = youtube68.load(str(FIXTURE), split="test")
  assert [r.image_id for r in recs] == ["Kim_Ryan_20"] and recs[0].image_size == (40, 40)
  with pytest.raises(ValueError, match="split must be"):
    youtube68.load(str(FIXTURE), split="val")


def test_repeated_frame_becomes_two_faces(tmp_path):
  root = _copy(tmp_path)
  path = root / "training_frames_keypoints.csv"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines + [lines[1]]) + "\n")
  recs = youtube68.load(str(root))
  assert recs[0].num_faces == 2 and recs[0].meta["lines"] == [2, 4]


def test_malformed_rows(tmp_path):
  root = _copy(tmp_path)
  path = root / "training_frames_keypoints.csv"
  lines = path.read_text().splitlines()
  short = lines[1].rsplit(",", 1)[0]
  bad = lines[2].replace(",11.0,", ",x,", 1)
  path.write_text("\n".join([lines[0], short, bad]) + "\n")
  with pytest.raises(records.AnnotationError, match=r"keypoints.csv:2: expected 137"):
    youtube68.load(str(root))
  recs = youtube68.load(str(root), on_error="skip")
  assert len(recs) == 0 and len(recs.skipped) == 2 and ":3: not a number" in recs.skipped[1]
  path.write_text("file,x,y\n")
  with pytest.raises(records.AnnotationError, match="header has 3 columns"):
    youtube68.load(str(root))


def test_missing_image(tmp_path):
  root = _copy(tmp_path)
  (root / "training" / "Zoe_Ball_12.jpg").unlink()
  with pytest.raises(ValueError, match="Zoe_Ball_12.jpg"):
    youtube68.load(str(root))
  assert len(youtube68.load(str(root), on_error="skip")) == 1
  assert len(youtube68.load(str(root), check_images=False)) == 2


def test_real_data(shared_data):
  root = shared_data / "youtube_faces_68pt"
  if not root.is_dir():
    pytest.skip("youtube_faces_68pt not in the shared data")
  recs = youtube68.load(str(root), check_images=False)
  assert sum(r.num_faces for r in recs) == 3462 and not recs.skipped
  pts = np.concatenate([r.landmarks for r in recs])
  assert (pts[:, 36:42, 0].mean(1) < pts[:, 42:48, 0].mean(1)).mean() > 0.99
