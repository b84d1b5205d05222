"""Classical (learning-free) restoration baselines, the rows a learned model must beat.

Each runs on the host (NumPy / SciPy / scikit-image), one image at a time, on exactly the
corrupted input the learned model sees at evaluation, and is scored by the same protocol:

| degradation kind | baseline | reference |
|---|---|---|
| ``salt_and_pepper`` | 3x3 median filter (``scipy.ndimage.median_filter``, reflect border); with ``switching=True`` applied only to impulse candidates (pixels whose channels are all 0 or all 1) | Gonzalez & Woods, *Digital Image Processing*, Sec. 5.3.2; switching: Sun & Neuvo, *Pattern Recognit. Lett.* 1994 |
| ``blur`` | Wiener deconvolution with the true kernel and noise level (circular model, as the blur) | Wiener 1949; Gonzalez & Woods Sec. 5.8, Eq. 5.8-6 |
| ``inpaint`` | biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``) | Damelin & Hoang, *Int. J. Math. Math. Sci.* 2018 |

Gaussian denoising has no baseline here (BM3D is not a dependency; its published BSD68
sigma-25 number, 28.57 dB, is quoted in the experiments README instead); super-resolution's
baseline is the bicubic upscale, already reported as ``input_psnr`` by the evaluation.

Images are float ``[H, W, C]`` in ``[0, 1]``; outputs are float64 ``[H, W, C]``, not clipped
(the protocol clips and quantises).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage
import skimage.restoration

from genrepair import degradations

KINDS = ("salt_and_pepper", "blur", "inpaint")
NAMES = {"salt_and_pepper": "median 3x3", "blur": "Wiener", "inpaint": "biharmonic"}


def name(kind: str, **params: Any) -> str:
  """The baseline's name for results tables (``NAMES``; 'switching median 3x3' with
  ``switching``)."""
  if kind == "salt_and_pepper" and params.get("switching"):
    return "switching median 3x3"
  return NAMES[kind]


def _check_image(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 3:
    raise ValueError(f"{name} must be [H, W, C], got shape {x.shape}.")
  return x


def median_filter(noisy: np.ndarray, *, size: int = 3, switching: bool = False) -> np.ndarray:
  """Per-channel ``size`` x ``size`` median filter (reflect border).

  Args:
    noisy: float ``[H, W, C]`` in ``[0, 1]`` (e.g. salt-and-pepper corrupted).
    size: odd window side in pixels.
    switching: replace only the impulse candidates (pixels whose channels are all 0 or
      all 1, ``degradations.impulse_mask``) by the median and keep every other pixel: the
      switching median filter (Sun & Neuvo 1994). The window's median still includes
      the other impulses in it.

  Returns:
    float64 ``[H, W, C]``.

  Raises:
    ValueError: ``noisy`` is not 3-D, or ``size`` is not odd and positive.
  """
  x = _check_image(noisy, "noisy")
  if size < 1 or size % 2 == 0:
    raise ValueError(f"size must be odd and positive, got {size}.")
  med = scipy.ndimage.median_filter(x, size=(size, size, 1), mode="reflect")
  if not switching:
    return med
  return np.where(np.asarray(degradations.impulse_mask(x)) > 0, med, x)


def kernel_otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Optical transfer function of ``degradations.blur``'s circular convolution.

  ``blur`` computes ``y[i] = sum_j k[j] x[i - j + k // 2]`` with wrap-around, so
  ``fft2(y) = fft2(x) * otf`` where ``otf = fft2(k zero-padded to shape, rolled by
  -(k // 2))`` (MATLAB's ``psf2otf``).

  Args:
    kernel: float ``[kh, kw]``, ``kh <= H``, ``kw <= W``.
    shape: ``(H, W)`` of the image.

  Returns:
    complex128 ``[H, W]``.

  Raises:
    ValueError: the kernel is not 2-D or larger than the image.
  """
  k = np.asarray(kernel, np.float64)
  h, w = shape
  if k.ndim != 2 or k.shape[0] > h or k.shape[1] > w:
    raise ValueError(f"kernel must be 2-D and fit in {shape}, got {k.shape}.")
  pad = np.zeros((h, w))
  pad[:k.shape[0], :k.shape[1]] = k
  pad = np.roll(pad, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1))
  return np.fft.fft2(pad)


def wiener_deconvolution(blurred: np.ndarray, *, kernel: np.ndarray, sigma: float,
                         nsr: float | None = None) -> np.ndarray:
  """Wiener deconvolution with a known kernel and noise level, circular boundary.

  ``X = conj(K) Y / (|K|^2 + NSR(f))`` per frequency and channel (Gonzalez & Woods Eq.
  5.8-6). The noise-to-signal power ratio uses the textbook natural-image prior, a power
  spectrum falling as ``1/|f|^2`` (Field, JOSA A 1987; van der Schaaf & van Hateren 1996):
  ``NSR(f) = H W (sigma/255)^2 |f|^2 / A``, with ``|f|`` in cycles per pixel and ``A`` the
  median of ``|Y(f)|^2 |f|^2 / |K(f)|^2`` over the frequencies where the kernel passes at
  least half the power (``|K|^2 >= 0.5``), i.e. estimated from the observation itself.
  A constant ``nsr`` replaces this model when given.

  Args:
    blurred: float ``[H, W, C]`` in ``[0, 1]``: ``blur(x, kernel) + sigma/255 N(0, 1)``.
    kernel: the true blur kernel ``[kh, kw]`` (as given to ``degradations.blur``).
    sigma: noise std on the 0-255 scale (>= 0).
    nsr: a constant noise-to-signal ratio instead of the ``1/|f|^2`` model (> 0; needed
      when ``sigma`` is 0 and the kernel's spectrum has zeros).

  Returns:
    float64 ``[H, W, C]``.

  Raises:
    ValueError: bad shapes, negative sigma, or a zero ``nsr`` with a kernel whose
      spectrum has zeros.
  """
  y = _check_image(blurred, "blurred")
  if sigma < 0:
    raise ValueError(f"sigma must be >= 0, got {sigma}.")
  h, w = y.shape[:2]
  otf = kernel_otf(kernel, (h, w))[..., None]                      # [H, W, 1]
  spec = np.fft.fft2(y, axes=(0, 1))                               # [H, W, C]
  k2 = np.abs(otf) ** 2
  if nsr is None:
    f2 = (np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)[..., None]
    band = (k2 >= 0.5) & (f2 > 0)
    band = np.broadcast_to(band, spec.shape)
    amp = np.median((np.abs(spec) ** 2 * f2 / np.maximum(k2, 1e-12))[band])
    nsr = h * w * (sigma / 255.0) ** 2 * f2 / max(float(amp), 1e-30)
  elif nsr <= 0 and np.min(np.abs(otf)) < 1e-8:
    raise ValueError("nsr is 0 and the kernel's spectrum has zeros: pass nsr > 0.")
  x = np.conj(otf) * spec / (k2 + nsr)
  return np.real(np.fft.ifft2(x, axes=(0, 1)))


def biharmonic_inpaint(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Fills holes by solving the biharmonic equation from the known pixels (scikit-image).

  Args:
    masked: float ``[H, W, C]`` in ``[0, 1]``; hole values are ignored.
    mask: ``[H, W, 1]`` or ``[H, W]``, nonzero = hole.

  Returns:
    float64 ``[H, W, C]``: known pixels unchanged, holes filled.

  Raises:
    ValueError: mask and image sizes differ.
  """
  x = _check_image(masked, "masked")
  m = np.asarray(mask)
  m = m[..., 0] if m.ndim == 3 else m
  if m.shape != x.shape[:2]:
    raise ValueError(f"mask {np.shape(mask)} does not match image {x.shape}.")
  return skimage.restoration.inpaint_biharmonic(x, m > 0.5, channel_axis=-1)


def run(kind: str, degraded: np.ndarray, **params: Any) -> np.ndarray:
  """The baseline of a degradation kind on one corrupted image.

  Args:
    kind: one of ``KINDS``.
    degraded: float ``[H, W, C]`` model input; for ``inpaint`` ``[H, W, C + 1]`` (the
      masked image and the mask channel, as the task feeds its model).
    params: ``kernel`` and ``sigma`` for ``blur``; ``switching`` (bool) for
      ``salt_and_pepper``.

  Returns:
    float64 ``[H, W, C]``.

  Raises:
    ValueError: unknown ``kind``.
  """
  if kind == "salt_and_pepper":
    return median_filter(degraded, switching=bool(params.get("switching", False)))
  if kind == "blur":
    return wiener_deconvolution(degraded, kernel=params["kernel"], sigma=params["sigma"])
  if kind == "inpaint":
    return biharmonic_inpaint(degraded[..., :-1], degraded[..., -1:])
  raise ValueError(f"No classical baseline for degradation kind {kind!r}; known: {KINDS}.")
