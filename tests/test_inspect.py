"""data_pipelines.inspect (counts, drawing, montage, CLI) and the formats registry."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from data_pipelines import formats
from data_pipelines import inspect as inspect_lib
from data_pipelines import records
from data_pipelines.formats import dlib_xml

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def _record(boxes, image_hw=(20, 24), ignore=None, landmarks=None, scheme=None):
  return records.FaceRecord(image=np.zeros(image_hw + (3,), np.uint8),
                            boxes=np.array(boxes, np.float32), ignore=ignore,
                            landmarks=landmarks, landmark_scheme=scheme, image_id="synthetic")


def test_registry_lists_every_reader_and_dispatches():
  for name in ("wider_face", "fddb", "afw", "pascal_faces", "cmu_mit", "caltech_webfaces", "pts68",
               "youtube68", "celeba", "aflw", "cofw", "dlib_xml"):
    assert name in formats.FORMATS
  recs = formats.load("cmu_mit", str(FIXTURES / "cmu_mit"), check_images=False)
  assert len(recs) == 3
  assert formats.get("dlib_xml") is dlib_xml
  with pytest.raises(ValueError, match=r"unknown dataset format 'cmu'.*cmu_mit.*dlib_xml"):
    formats.load("cmu", "/nowhere")


def test_box_size_histogram_bins():
  recs = [_record([[0, 0, 10, 10], [0, 0, 16, 16], [0, 0, 8, 32]]),  # 10, 16, 16 px
          _record([[0, 0, 100, 200], [0, 0, 256, 256]], image_hw=(300, 300))]  # 141.4, 256 px
  hist = inspect_lib.box_size_histogram(recs)
  assert hist == {"<16": 1, "16-32": 2, "32-64": 0, "64-128": 0, "128-256": 1, ">=256": 1}


def test_summarize_text_counts_and_skips():
  recs = records.RecordList([_record([[1, 1, 5, 5], [2, 2, 9, 9]], ignore=[False, True]),
                             _record([])], skipped=["bad line"])
  text = inspect_lib.summarize_text(recs)
  for expected in ("images: 2", "faces: 2", "ignored faces: 1", "images without faces: 1",
                   "<16: 2", "landmarks: none", "skipped items: 1", "  bad line"):
    assert expected in text


def test_draw_record_puts_box_outline_on_the_boundary_pixels():
  record = _record([[2, 3, 10, 12], [14, 4, 20, 9]], ignore=[False, True])
  pixels = inspect_lib.draw_record(record, width=1)
  assert pixels.shape == (20, 24, 3)
  green = np.all(pixels == inspect_lib.BOX_COLOUR, -1)
  # Box (2, 3, 10, 12) covers pixel columns 2..9 and rows 3..11: the outline is their border.
  expected = np.zeros((20, 24), bool)
  expected[3:12, 2] = expected[3:12, 9] = expected[3, 2:10] = expected[11, 2:10] = True
  np.testing.assert_array_equal(green, expected)
  orange = np.all(pixels == inspect_lib.IGNORE_COLOUR, -1)
  assert orange[4, 14] and orange[8, 19] and not orange[9, 20]


def test_left_and_right_rings_have_their_colours():
  five = np.array([[[6.5, 6.5], [17.5, 6.5], [12.5, 11.5], [7.5, 16.5], [16.5, 16.5]]])
  record = _record([[0, 0, 24, 20]], landmarks=five, scheme="five")
  pixels = inspect_lib.draw_record(record, width=1).astype(int)
  blue, red = np.array(inspect_lib.FIVE_COLOURS[0]), np.array(inspect_lib.FIVE_COLOURS[1])
  left, right = pixels[:, :12].reshape(-1, 3), pixels[:, 12:].reshape(-1, 3)
  assert (left == blue).all(-1).sum() > 0 and (left == red).all(-1).sum() == 0
  assert (right == red).all(-1).sum() > 0 and (right == blue).all(-1).sum() == 0
  # The point itself is drawn at its pixel: (6.5, 6.5) is the centre of pixel (6, 6).
  assert not (pixels[6, 6] == 0).all()


def test_draw_face_crop_and_montage():
  recs = formats.load("dlib_xml", str(FIXTURES / "dlib_xml"), split="training")
  crop = inspect_lib.draw_face(recs[0], 0, size=96)
  assert crop.shape == (96, 96, 3)
  grid = inspect_lib.montage(recs, max_images=5, tile=64, faces=True)
  assert grid.shape == (2 * 64, 2 * 64, 3)  # 3 faces in a 2 x 2 grid.
  grid = inspect_lib.montage(recs, max_images=1, tile=50)
  assert grid.shape == (50, 50, 3)
  with pytest.raises(ValueError, match="nothing to draw"):
    inspect_lib.montage([], tile=32)


def test_main_prints_counts_and_writes_png(tmp_path, capsys):
  out = tmp_path / "montage.png"
  code = inspect_lib.main(["--format", "cmu_mit", "--root", str(FIXTURES / "cmu_mit"),
                           "--out", str(out), "--max-images", "2", "--seed", "1", "--tile", "64"])
  assert code == 0
  printed = capsys.readouterr().out
  for expected in ("images: 3", "faces: 3", "images without faces: 1",
                   "<16: 0, 16-32: 2, 32-64: 1,",  # sqrt(w*h): 21.0, 27.0, 32.4 px
                   "landmarks cmu6: 3 faces", "skipped items: 0", f"montage: {out}"):
    assert expected in printed
  with Image.open(out) as image:
    assert image.size == (128, 64)  # Two tiles side by side.


def test_main_reader_options_and_faces(tmp_path, capsys):
  out = tmp_path / "faces.png"
  inspect_lib.main(["--format", "cmu_mit", "--root", str(FIXTURES / "cmu_mit"), "--out", str(out),
                    "--faces", "--option", "boxes=face_only", "--option", "landmarks=false",
                    "--no-check-images", "--tile", "48"])
  printed = capsys.readouterr().out
  # Inner-face boxes: 14.5, 18.5, 23.9 px.
  assert "<16: 1, 16-32: 2, 32-64: 0" in printed and "landmarks: none" in printed
  assert out.exists()


def test_main_reports_bad_input_in_one_line(capsys):
  assert inspect_lib.main(["--format", "nope", "--root", "x"]) == 2
  assert "unknown dataset format 'nope'" in capsys.readouterr().err
  assert inspect_lib.main(["--format", "cmu_mit", "--root", str(FIXTURES / "missing")]) == 2
  assert "no box file" in capsys.readouterr().err


def test_box_lines_stay_visible_on_a_6000_px_picture():
  """The default line width grows with the picture: on a 6000 px photo viewed at 800 px a box
  must still show (issue #13); small pictures keep 2 px lines."""
  record = _record([[1000, 1000, 3000, 3000]], image_hw=(4000, 6000))
  pixels = inspect_lib.draw_record(record)
  green = np.all(pixels == inspect_lib.BOX_COLOUR, -1)
  assert green[1000:3000, 995:1020].any(0).sum() >= 10  # The left edge is >= 10 px thick.
  viewed = np.asarray(Image.fromarray(pixels).resize((800, 533), Image.BILINEAR)).astype(int)
  assert (np.abs(viewed - inspect_lib.BOX_COLOUR).sum(-1) < 60).sum() > 500
  assert inspect_lib.line_width((640, 480)) == 2 and inspect_lib.line_width((6000, 4000)) == 12
