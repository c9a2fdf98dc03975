"""data_pipelines.images: every PIL mode, EXIF orientation, and one clear error for bad input."""

import io

import numpy as np
import pytest
from PIL import Image

from data_pipelines import images


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (9, 13, 3)).astype(np.uint8)


def test_png_round_trip_exact(tmp_path):
  path = tmp_path / "x.png"
  Image.fromarray(RGB).save(path)
  np.testing.assert_array_equal(images.decode(str(path)), RGB)
  np.testing.assert_array_equal(images.decode(path.read_bytes()), RGB)
  assert images.read_size(str(path)) == (9, 13)


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "CMYK", "YCbCr", "I", "F"])
def test_every_mode_gives_uint8_rgb(mode):
  img = Image.fromarray(RGB).convert(mode)
  fmt = {"CMYK": "TIFF", "YCbCr": "TIFF", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
  out = images.decode(_encode(img, fmt))
  assert out.shape == (9, 13, 3) and out.dtype == np.uint8


def test_gray_is_replicated():
  gray = RGB[..., 0]
  out = images.decode(_encode(Image.fromarray(gray, "L"), "PNG"))
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], gray)


def test_16_bit_maps_full_range():
  arr = np.array([[0, 257 * 100, 65535]], np.uint16)
  out = images.decode(_encode(Image.fromarray(arr), "PNG"))
  np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])


def test_alpha_composited_on_white():
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = [10, 20, 30, 255]  # opaque keeps its colour
  rgba[1, 1] = [10, 20, 30, 0]  # transparent becomes white
  out = images.decode(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
  np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
  np.testing.assert_array_equal(out[1, 1], [255, 255, 255])


@pytest.mark.parametrize("orientation,expected", [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1])])
def test_exif_orientation(orientation, expected):
  exif = Image.Exif()
  exif[0x0112] = orientation
  data = _encode(Image.fromarray(RGB), "PNG", exif=exif)
  out = images.decode(data)
  np.testing.assert_array_equal(out, expected(RGB))
  assert images.read_size(data) == out.shape[:2]


@pytest.mark.parametrize("bad", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_unreadable_bytes_raise_one_error(bad):
  with pytest.raises(images.ImageDecodeError, match="cannot read image"):
    images.decode(bad)


def test_truncated_jpeg_raises(tmp_path):
  data = images.encode_jpeg(np.full((64, 64, 3), 128, np.uint8))
  with pytest.raises(images.ImageDecodeError, match="corrupt or truncated|not a recognised"):
    images.decode(data[: len(data) // 2])


def test_missing_path_and_directory(tmp_path):
  with pytest.raises(images.ImageDecodeError, match="no such file"):
    images.decode(str(tmp_path / "missing.jpg"))
  with pytest.raises(images.ImageDecodeError, match="is a directory"):
    images.decode(str(tmp_path))
  (tmp_path / "fake.jpg").write_text("hello")
  with pytest.raises(images.ImageDecodeError, match="fake.jpg"):
    images.decode(str(tmp_path / "fake.jpg"))


def test_pixel_limit():
  data = _encode(Image.new("L", (200, 200)), "PNG")
  with pytest.raises(images.ImageDecodeError, match="pixel limit"):
    images.decode(data, max_pixels=100 * 100)


def test_arrays():
  np.testing.assert_array_equal(images.decode(RGB), RGB)
  out = images.decode(RGB[..., 0])
  np.testing.assert_array_equal(out[..., 2], RGB[..., 0])
  np.testing.assert_array_equal(images.decode(RGB.astype(np.float32) / 255.0), RGB)
  rgba = np.concatenate([RGB, np.zeros_like(RGB[..., :1])], -1)
  np.testing.assert_array_equal(images.decode(rgba), RGB)
  with pytest.raises(images.ImageDecodeError, match="NaN"):
    images.decode(np.full((2, 2, 3), np.nan, np.float32))
  with pytest.raises(images.ImageDecodeError, match="shape"):
    images.decode(np.zeros((0, 4, 3), np.uint8))


def test_letterbox_fits_and_centres():
  rgb = np.full((100, 400, 3), 200, np.uint8)  # 4:1 -> 640 x 160, centred in 480 rows
  out = images.letterbox(rgb, 640, 480)
  assert out.shape == (480, 640, 3) and out.dtype == np.uint8
  rows = np.flatnonzero(out[:, 320, 0])
  assert rows[0] == 160 and rows[-1] == 319
  assert (out[:160] == 0).all() and (out[320:] == 0).all()
