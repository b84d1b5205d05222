"""Reading and writing user images: uint8 conversion, sample grids, PNG and NPZ output."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Quantises float images to uint8.

  Args:
    images: float ``[..., H, W, C]`` in ``value_range`` (values outside are clipped).
    value_range: ``(lo, hi)`` mapped to ``(0, 255)``.

  Returns:
    uint8 array of the same shape: ``round((x - lo) / (hi - lo) * 255)``.
  """
  lo, hi = value_range
  x = (np.asarray(images, np.float64) - lo) / (hi - lo) * 255.0
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, *, cols: int | None = None, pad: int = 2,
              pad_value: int = 0) -> np.ndarray:
  """Tiles images into one image.

  Args:
    images: uint8 ``[N, H, W, C]`` with C in {1, 3, 4}.
    cols: images per row (default ``ceil(sqrt(N))``).
    pad: pixels between and around tiles.
    pad_value: uint8 fill value of the padding.

  Returns:
    uint8 ``[rows * (H + pad) + pad, cols * (W + pad) + pad, C]``.

  Raises:
    ValueError: not a uint8 4-D array.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"make_grid expects uint8 [N, H, W, C], got {images.dtype}"
                     f" {images.shape}.")
  n, h, w, c = images.shape
  cols = cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + q * (w + pad)
    grid[y:y + h, x:x + w] = images[i]
  return grid


def save_image(path: str, image: np.ndarray) -> None:
  """Writes a uint8 ``[H, W, C]`` image (C in {1, 3, 4}) as PNG/JPEG by extension.

  The file is written to a temporary name and renamed, so a reader never sees a partial
  image. Parent directories are created.
  """
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
  if fmt is None:
    raise ValueError(f"Cannot tell the image format of {path!r} from its extension.")
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format=fmt)
  os.replace(tmp, path)


def save_npz(path: str, images: np.ndarray) -> None:
  """Writes uint8 ``[N, H, W, C]`` images to ``path`` under the key ``images`` (no pickle)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, images=np.asarray(images, np.uint8))
  os.replace(tmp, path)
