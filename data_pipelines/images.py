"""Decoding any picture a user may hand us to uint8 RGB, with one clear error for bad input.

Handles every PIL mode (1, L, P, LA, PA, RGBA, CMYK, YCbCr, LAB, HSV, I;16*, I, F), EXIF
orientation (so annotations made on the displayed picture line up), and refuses unreadable,
truncated or absurdly large input with ImageDecodeError naming the source.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

# 2**28 pixels (about 16k x 16k) is far beyond any face benchmark; a larger header is more
# likely a corrupt or hostile file than a photo, and decoding it would take gigabytes.
DEFAULT_MAX_PIXELS = 1 << 28

# EXIF orientations 5-8 swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class ImageDecodeError(ValueError):
  """The input is missing, unreadable, truncated, not an image, or too large."""

  def __init__(self, source: str, reason: str):
    self.source, self.reason = source, reason
    super().__init__(f"cannot read image {source}: {reason}")


def _describe(source) -> str:
  if isinstance(source, (bytes, bytearray, memoryview)):
    return f"<{len(source)} bytes>"
  return str(source)


def _open(source, max_pixels: int) -> Image.Image:
  name = _describe(source)
  if isinstance(source, (str, os.PathLike)):
    if not os.path.exists(source):
      raise ImageDecodeError(name, "no such file")
    if os.path.isdir(source):
      raise ImageDecodeError(name, "is a directory")
    fp = source
  elif isinstance(source, (bytes, bytearray, memoryview)):
    if len(source) == 0:
      raise ImageDecodeError(name, "empty input")
    fp = io.BytesIO(bytes(source))
  else:
    raise ImageDecodeError(name, f"unsupported source type {type(source).__name__}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # We apply our own limit.
      try:
        img = Image.open(fp)
      finally:
        Image.MAX_IMAGE_PIXELS = old
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageDecodeError(name, f"not a recognised image ({e})") from None
  if img.width * img.height > max_pixels:
    raise ImageDecodeError(name, f"{img.width}x{img.height} exceeds the {max_pixels}-pixel limit")
  if img.width < 1 or img.height < 1:
    raise ImageDecodeError(name, f"empty {img.width}x{img.height} image")
  return img


def _orientation(img: Image.Image) -> int:
  try:
    return int(img.getexif().get(0x0112, 1))
  except Exception:  # pylint: disable=broad-except  # A broken EXIF block must not lose the photo.
    return 1


def read_size(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
  """(height, width) as decode() would return it, from the header only."""
  if isinstance(source, np.ndarray):
    return int(source.shape[0]), int(source.shape[1])
  img = _open(source, max_pixels)
  w, h = img.size
  if _orientation(img) in _TRANSPOSING_ORIENTATIONS:
    w, h = h, w
  return h, w


def _to_rgb(img: Image.Image) -> np.ndarray:
  mode = img.mode
  if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
    # Transparent pixels become white, as a viewer shows them on a page.
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
  if mode.startswith("I;16") or mode in ("I", "F"):
    arr = np.asarray(img).astype(np.float64)
    if mode == "F":
      scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
    else:  # 16-bit (PNG/TIFF): map 0..65535 to 0..255.
      scale = 255.0 / 65535.0
    gray = np.clip(np.rint(np.nan_to_num(arr) * scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  return np.asarray(img.convert("RGB"))


def decode(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Decodes a path, encoded bytes or an array to a C-contiguous uint8 RGB [H, W, 3] array.

  Arrays are accepted as [H, W] gray, [H, W, 1], [H, W, 3] or [H, W, 4] (alpha dropped), uint8
  or float in [0, 1] / [0, 255].
  """
  if isinstance(source, np.ndarray):
    return _from_array(source)
  img = _open(source, max_pixels)
  name = _describe(source)
  try:
    img.load()
    if _orientation(img) != 1:
      img = ImageOps.exif_transpose(img)
    rgb = _to_rgb(img)
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageDecodeError(name, f"corrupt or truncated data ({e})") from None
  return np.ascontiguousarray(rgb, dtype=np.uint8)


def _from_array(arr: np.ndarray) -> np.ndarray:
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise ImageDecodeError("<array>", f"expected [H, W], [H, W, 1|3|4], got shape {arr.shape}")
  if arr.shape[2] == 4:
    arr = arr[..., :3]
  if arr.shape[2] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  if arr.dtype == np.uint8:
    return np.ascontiguousarray(arr)
  if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ImageDecodeError("<array>", f"unsupported dtype {arr.dtype}")
  is_float = np.issubdtype(arr.dtype, np.floating)
  arr = arr.astype(np.float64)
  if not np.isfinite(arr).all():
    raise ImageDecodeError("<array>", "contains NaN or infinite values")
  if is_float and arr.max(initial=0) <= 1.0:
    arr = arr * 255.0
  return np.ascontiguousarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def letterbox(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
  """The picture scaled (bilinear) to fit width x height, centred on black: a fixed-size frame
  such as a camera's VGA, for speed measurements at one compiled shape."""
  rgb = np.asarray(rgb)
  h, w = rgb.shape[:2]
  s = min(width / w, height / h)
  nw, nh = max(round(w * s), 1), max(round(h * s), 1)
  canvas = np.zeros((height, width, 3), np.uint8)
  y0, x0 = (height - nh) // 2, (width - nw) // 2
  canvas[y0:y0 + nh, x0:x0 + nw] = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
  return canvas


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=int(quality))
  return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()
