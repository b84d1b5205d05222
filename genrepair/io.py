"""Reading and writing user images: decoding rules, uint8 conversion, grids, PNG/NPZ output.

Reading: every image comes back as ``uint8 [H, W, C]`` with C = 1 (gray) or 3 (RGB). The rules for
inputs that are not plain 8-bit gray/RGB (decided here once, so every CLI and benchmark
behaves the same):

* Alpha (RGBA, LA, palette with transparency): an alpha channel that is fully opaque (all
  255) is dropped; any transparent pixel raises ``ValueError`` unless ``alpha='drop'``,
  because compositing onto a background colour is a choice the caller must make.
* 16-bit gray (PNG/TIFF ``I;16``): converted with MATLAB ``im2uint8``'s rule
  ``round(v / 257)`` (65535 -> 255 exactly).
* 16-bit colour PNG: refused with ``ValueError``. Pillow decodes it to 8 bits by keeping the
  high byte (truncation, not rounding), which would silently differ from ``im2uint8``.
* Palette images are expanded to RGB; 1-bit images to gray; 32-bit int/float images refused.
* ``mode='gray'`` turns RGB into gray with MATLAB ``rgb2gray``'s weights (BT.601 luma
  0.298936 R + 0.587043 G + 0.114021 B, rounded half up); ``mode='rgb'`` repeats a gray
  channel three times.
"""

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

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# MATLAB rgb2gray: the first row of inv(T) of rgb2ntsc, rounded as MATLAB documents.
_GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _png_bit_depth(path: str) -> tuple[int, int] | None:
  """``(bit depth, colour type)`` from a PNG's IHDR chunk, or None if not a PNG."""
  with open(path, "rb") as f:
    head = f.read(26)
  if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
    return None
  return head[24], head[25]


def _drop_alpha(arr: np.ndarray, path: str, alpha: str) -> np.ndarray:
  if alpha != "drop" and np.any(arr[..., -1] != 255):
    raise ValueError(f"{path!r} has transparent pixels; composite it onto a background first"
                     f" or pass alpha='drop' to ignore the alpha channel.")
  return arr[..., :-1]


def read_image(path: str, *, mode: str = "auto", alpha: str = "error") -> np.ndarray:
  """Reads a PNG/JPEG/BMP/TIFF image as ``uint8 [H, W, C]``.

  Args:
    path: image file.
    mode: ``'auto'`` keeps gray as C = 1 and colour as C = 3; ``'gray'`` forces C = 1
      (MATLAB ``rgb2gray`` weights); ``'rgb'`` forces C = 3 (gray repeated).
    alpha: ``'error'`` (default) refuses images with transparent pixels (opaque alpha is
      dropped silently); ``'drop'`` discards the alpha channel whatever it holds.

  Returns:
    uint8 ``[H, W, C]``, C in {1, 3}, values 0-255.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: unreadable file, unsupported pixel format (16-bit colour, 32-bit, float),
      transparent pixels with ``alpha='error'``, or a bad ``mode``/``alpha``; the message
      names the file.
  """
  if mode not in ("auto", "gray", "rgb"):
    raise ValueError(f"mode must be 'auto', 'gray' or 'rgb', got {mode!r}.")
  if alpha not in ("error", "drop"):
    raise ValueError(f"alpha must be 'error' or 'drop', got {alpha!r}.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Image not found: {path!r}.")
  depth = _png_bit_depth(path)
  if depth is not None and depth[0] == 16 and depth[1] in (2, 4, 6):
    raise ValueError(f"{path!r} is a 16-bit colour PNG, which is not supported (Pillow would"
                     f" truncate it to 8 bits); convert it to 8-bit first.")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
      elif im.mode == "1":
        im = im.convert("L")
      pil_mode = im.mode
      arr = np.asarray(im)
  except (OSError, SyntaxError) as e:  # Pillow raises these for corrupt/unknown files
    raise ValueError(f"Cannot decode image {path!r}: {e}") from e
  if pil_mode.startswith("I;16"):
    arr = np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)  # im2uint8
  elif pil_mode in ("RGBA", "LA"):
    arr = _drop_alpha(arr, path, alpha)
  elif pil_mode not in ("L", "RGB"):
    raise ValueError(f"{path!r} has unsupported pixel format {pil_mode!r}; expected 8-bit"
                     f" gray/RGB(A) or 16-bit gray.")
  if arr.ndim == 2:
    arr = arr[..., None]
  arr = np.ascontiguousarray(arr, np.uint8)
  if mode == "gray" and arr.shape[-1] == 3:
    arr = rgb_to_gray(arr)
  elif mode == "rgb" and arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  return arr


def read_image_dir(directory: str, *, mode: str = "auto",
                   alpha: str = "error") -> list[tuple[str, np.ndarray]]:
  """Reads every image of a folder (not recursive), sorted by file name.

  Args:
    directory: folder with ``.png/.jpg/.jpeg/.bmp/.tif/.tiff`` files (case-insensitive).
    mode: as ``read_image``.
    alpha: as ``read_image``.

  Returns:
    list of ``(name, uint8 [H, W, C])`` with ``name`` the file name without extension
    (e.g. ``'baby'``), sorted by file name.

  Raises:
    FileNotFoundError: the folder is missing or holds no image.
    ValueError: as ``read_image``.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"Image directory not found: {directory!r}.")
  files = sorted(f for f in os.listdir(directory) if f.lower().endswith(_EXTENSIONS))
  if not files:
    raise FileNotFoundError(f"No images ({', '.join(_EXTENSIONS)}) in {directory!r}.")
  return [(os.path.splitext(f)[0], read_image(os.path.join(directory, f), mode=mode,
                                               alpha=alpha)) for f in files]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
  """Crops H and W down to multiples of ``scale``, keeping the top-left corner.

  MATLAB ``modcrop.m`` of the SR benchmarks (SRCNN, VDSR): ``img(1:h - mod(h, s),
  1:w - mod(w, s), :)``.

  Args:
    img: ``[H, W]`` or ``[H, W, C]`` array of any dtype.
    scale: positive integer.

  Returns:
    a view ``[H - H % scale, W - W % scale(, C)]`` of ``img``.

  Raises:
    ValueError: ``scale`` < 1, ``img`` not 2-D/3-D, or smaller than ``scale``.
  """
  if int(scale) != scale or scale < 1:
    raise ValueError(f"modcrop scale must be a positive integer, got {scale!r}.")
  if img.ndim not in (2, 3) or min(img.shape[:2]) < scale:
    raise ValueError(f"modcrop expects [H, W] or [H, W, C] with H, W >= scale={scale}, got"
                     f" shape {img.shape}.")
  h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
  return img[:h, :w]


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
  """MATLAB ``rgb2gray`` on uint8: ``uint8 [H, W, 3] -> uint8 [H, W, 1]``.

  BT.601 luma with MATLAB's weights (0.298936 R + 0.587043 G + 0.114021 B), rounded half up.

  Raises:
    ValueError: not uint8 ``[H, W, 3]``.
  """
  if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"rgb_to_gray expects uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}.")
  g = rgb.astype(np.float64) @ _GRAY_WEIGHTS
  return np.clip(np.floor(g + 0.5), 0, 255).astype(np.uint8)[..., None]
