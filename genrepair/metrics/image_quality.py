"""PSNR and SSIM under an explicit, recordable measurement protocol.

A PSNR is only comparable with a published one when the protocol matches: value range,
colour channel, border shave and whether images were rounded to 8 bits. ``Protocol`` pins
these and ``Protocol.to_dict()`` is stored with every number we report.

Conventions (fixed, not options):
* Y channel: ITU-R BT.601 as MATLAB ``rgb2ycbcr``:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], i.e. Y in [16, 235]
  on the 0-255 scale. A single-channel (gray) image is its own Y (no [16, 235] mapping):
  that is what SRCNN's ``demo_SR.m`` / ``compute_psnr.m`` do (``if size(im,3) > 1``) and what
  reproduces the published Set14 bicubic number, whose ``bridge`` image is gray.
* SSIM: Wang et al., "Image Quality Assessment: From Error Visibility to Structural
  Similarity", TIP 2004 (their MATLAB ``ssim_index.m``): 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, population (biased) statistics, only windows fully inside the image
  ('valid'), mean over the map and over channels; no automatic down-sampling (the later
  ``ssim.m`` shrinks images larger than 256 px; BasicSR/KAIR and dm-pix do not). Computed by
  ``dm_pix.ssim``; equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (skimage's default window differs by up to 0.03).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp

# MATLAB rgb2ycbcr, first row of T (for inputs in [0, 1]) and offset, 0-255 output scale.
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

SSIM_CONVENTION = ("Wang et al. 2004: Gaussian 11x11 sigma 1.5, K1=0.01, K2=0.03, population"
                   " covariance, valid windows, mean over map and channels (dm_pix.ssim)")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How images are measured. Hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    data_range: peak value of the input images: 1.0 for float images in [0, 1], 255.0 for
      images in [0, 255]. PSNR uses it as the peak, SSIM as L in C1 = (K1 L)^2.
    y_channel: measure the BT.601 luma (MATLAB ``rgb2ycbcr``) of RGB inputs instead of all
      channels; gray inputs are used as they are.
    crop_border: pixels shaved from each of the four borders before measuring (SR papers
      shave ``scale`` pixels).
    quantize: round inputs to the 8-bit grid first (as saving a PNG does), and round the Y
      channel to 8 bits as MATLAB ``rgb2ycbcr`` does on ``uint8`` images.
  """

  data_range: float = 1.0
  y_channel: bool = False
  crop_border: int = 0
  quantize: bool = False

  def __post_init__(self):
    if self.data_range not in (1.0, 255.0):
      raise ValueError(f"Protocol.data_range must be 1.0 or 255.0, got {self.data_range!r}.")
    if int(self.crop_border) != self.crop_border or self.crop_border < 0:
      raise ValueError(f"Protocol.crop_border must be an int >= 0, got {self.crop_border!r}.")

  @classmethod
  def super_resolution(cls, scale: int, *, data_range: float = 1.0) -> "Protocol":
    """The SR benchmark protocol: Y channel, ``scale`` pixels shaved, 8-bit images."""
    return cls(data_range=data_range, y_channel=True, crop_border=int(scale), quantize=True)

  @classmethod
  def denoising(cls, *, data_range: float = 1.0) -> "Protocol":
    """The DnCNN protocol: all channels, no shave, output rounded to uint8."""
    return cls(data_range=data_range, y_channel=False, crop_border=0, quantize=True)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready record of the protocol, including the fixed conventions."""
    return {
        "data_range": float(self.data_range),
        "y_channel": bool(self.y_channel),
        "crop_border": int(self.crop_border),
        "quantize": bool(self.quantize),
        "y_definition": "ITU-R BT.601, MATLAB rgb2ycbcr (Y in [16, 235]); gray = itself",
        "ssim": SSIM_CONVENTION,
    }

  def describe(self) -> str:
    """One line for tables and logs, e.g. ``'Y (BT.601), shave 4, uint8, range 255'``."""
    parts = ["Y (BT.601)" if self.y_channel else "all channels",
             f"shave {self.crop_border}" if self.crop_border else "no shave",
             "uint8" if self.quantize else "float",
             f"range {self.data_range:g}"]
    return ", ".join(parts)


def _round8(x: jax.Array, data_range: float) -> jax.Array:
  """Rounds ``[0, data_range]`` values to the 8-bit grid, half away from zero (MATLAB)."""
  q = jnp.floor(jnp.clip(x * (255.0 / data_range), 0.0, 255.0) + 0.5)
  return q * (data_range / 255.0)


def rgb_to_y(x: jax.Array, *, data_range: float = 1.0) -> jax.Array:
  """BT.601 luma of RGB images, as MATLAB ``rgb2ycbcr(...)(:, :, 1)`` on double input.

  Args:
    x: float ``[..., 3]`` RGB in ``[0, data_range]``.
    data_range: 1.0 or 255.0; the output uses the same scale.

  Returns:
    float32 ``[..., 1]``: ``(16 + 65.481 r + 128.553 g + 24.966 b) / 255 * data_range`` with
    ``r = R / data_range`` etc., so Y is in ``[16, 235] / 255 * data_range``. Not rounded.

  Raises:
    ValueError: the last axis is not 3.
  """
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < 1 or x.shape[-1] != 3:
    raise ValueError(f"rgb_to_y expects RGB [..., 3], got shape {x.shape}.")
  w = jnp.asarray(_Y_WEIGHTS, jnp.float32) / 255.0
  y = _Y_OFFSET / 255.0 * data_range + jnp.einsum(
      "...c,c->...", x, w, precision=jax.lax.Precision.HIGHEST)
  return y[..., None]


def _prepare(a: jax.Array, b: jax.Array, protocol: Protocol) -> tuple[jax.Array, jax.Array]:
  """Applies the protocol; returns both images as float32 in [0, 1], ``[B, H', W', C']``."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"Images to compare must have the same shape, got {a.shape} and"
                     f" {b.shape}.")
  if a.ndim not in (3, 4):
    raise ValueError(f"Expected [B, H, W, C] or [H, W, C] images, got shape {a.shape}.")
  if protocol.y_channel and a.shape[-1] not in (1, 3):
    raise ValueError(f"y_channel needs RGB or gray images (C = 3 or 1), got shape {a.shape}.")
  c = protocol.crop_border
  if min(a.shape[-3:-1]) <= 2 * c:
    raise ValueError(f"crop_border={c} leaves nothing of images of shape {a.shape}.")
  out = []
  for x in (a, b):
    x = x.astype(jnp.float32)
    if protocol.quantize:
      x = _round8(x, protocol.data_range)
    if protocol.y_channel and x.shape[-1] == 3:
      x = rgb_to_y(x, data_range=protocol.data_range)
      if protocol.quantize:
        x = _round8(x, protocol.data_range)
    if c:
      x = x[..., c:-c, c:-c, :]
    out.append(x / protocol.data_range)
  return out[0], out[1]


def psnr(a: jax.Array, b: jax.Array, protocol: Protocol = Protocol()) -> jax.Array:
  """Peak signal-to-noise ratio in dB, per image.

  ``10 log10(peak^2 / MSE)`` with ``peak = protocol.data_range``, MSE over all measured pixels
  and channels of one image (identical images give +inf). Computed by ``dm_pix.psnr`` on
  images normalised to [0, 1].

  Args:
    a: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, protocol.data_range]`` (C in {1, 3}
      with ``y_channel``).
    b: same shape as ``a`` (which is reference and which is test does not matter).
    protocol: how to measure (range, Y channel, border shave, 8-bit rounding).

  Returns:
    float32 ``[B]`` (or a scalar for unbatched inputs), dB.

  Raises:
    ValueError: shape mismatch, bad rank, C not in {1, 3} with ``y_channel``, or a border
      crop that leaves nothing.
  """
  x, y = _prepare(a, b, protocol)
  return dm_pix.psnr(x, y)


def ssim(a: jax.Array, b: jax.Array, protocol: Protocol = Protocol()) -> jax.Array:
  """Structural similarity (Wang et al. 2004, Gaussian window), per image.

  See the module docstring for the exact convention (``SSIM_CONVENTION``); images must be at
  least 11x11 after the border crop.

  Args:
    a: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, protocol.data_range]`` (C in {1, 3}
      with ``y_channel``).
    b: same shape as ``a``.
    protocol: how to measure (range, Y channel, border shave, 8-bit rounding).

  Returns:
    float32 ``[B]`` (or a scalar), in ``[-1, 1]``, mean over the SSIM map and channels.

  Raises:
    ValueError: shape mismatch, bad rank/channels, or images smaller than the window.
  """
  x, y = _prepare(a, b, protocol)
  if min(x.shape[-3:-1]) < 11:
    raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {x.shape}.")
  return dm_pix.ssim(x, y, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)
