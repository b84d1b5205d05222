"""Wiener deconvolution in JAX: the non-blind front end of a deblurring network.

Non-blind deblurring knows the blur kernel ``k`` and the noise level ``sigma`` of
``y = k (*) x + n`` (circular convolution, ``degradations.blur``). A network that only sees
``y`` must infer ``k`` from the image (blind); feeding it the Wiener estimate computed with
the true ``k`` lets it spend its capacity on removing the estimate's ringing and noise
instead. This is the two-stage scheme of Schuler, Burger, Harmeling & Schoelkopf, "A
machine learning approach for non-blind image deconvolution" (CVPR 2013: regularised
inversion, then a learned artifact remover); Dong, Roth & Schiele, "Deep Wiener
Deconvolution" (NeurIPS 2020) applies the same inversion to learned features.

The formula is the classical baseline's (``genrepair.baselines.wiener_deconvolution``,
NumPy float64, one image; ``tests/test_deconvolution.py`` checks the two agree):
``X = conj(K) Y / (|K|^2 + NSR(f))`` per frequency, with the ``1/|f|^2`` natural-image
prior ``NSR(f) = H W (sigma/255)^2 |f|^2 / A`` and ``A`` the median of
``|Y(f)|^2 |f|^2 / |K(f)|^2`` over the frequencies with ``|K|^2 >= 0.5``. Here it is
batched, jit-able and per-example kernels are allowed, so training can run it on device on
every batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def kernel_otf(kernels: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Optical transfer functions of ``degradations.blur``'s circular convolution.

  ``fft2(blur(x, k)) = fft2(x) * otf`` with ``otf = fft2(k zero-padded to shape, rolled by
  -(K // 2))`` (MATLAB's ``psf2otf``); the same as ``baselines.kernel_otf``, batched.

  Args:
    kernels: float ``[B, K, K]`` (``degradations.stack_kernels`` rows), ``K <= H, W``.
    shape: ``(H, W)`` of the images.

  Returns:
    complex64 ``[B, H, W]``.

  Raises:
    ValueError: kernels that are not ``[B, kh, kw]`` or do not fit in ``shape``.
  """
  k = jnp.asarray(kernels, jnp.float32)
  h, w = shape
  if k.ndim != 3 or k.shape[1] > h or k.shape[2] > w:
    raise ValueError(f"kernels must be [B, kh, kw] and fit in {shape}, got {k.shape}.")
  pad = jnp.zeros((k.shape[0], h, w), jnp.float32).at[:, :k.shape[1], :k.shape[2]].set(k)
  pad = jnp.roll(pad, (-(k.shape[1] // 2), -(k.shape[2] // 2)), axis=(1, 2))
  return jnp.fft.fft2(pad)


def wiener(blurred: jax.Array, kernels: jax.Array, *, sigma: float) -> jax.Array:
  """Wiener deconvolution of a batch with known kernels and noise level (module docstring).

  Args:
    blurred: float ``[B, H, W, C]`` in ``[0, 1]``: ``blur(x, kernels) + sigma/255 N(0, 1)``.
    kernels: float ``[B, K, K]``, one kernel per image (as given to ``degradations.blur``).
    sigma: noise std on the 0-255 scale, > 0 (the prior's weight; with 0 a kernel whose
      spectrum has zeros has no inverse).

  Returns:
    float32 ``[B, H, W, C]``, not clipped (ringing overshoots ``[0, 1]``).

  Raises:
    ValueError: ``blurred`` not ``[B, H, W, C]``, a kernel count that is not ``B``, or
      ``sigma <= 0``.
  """
  y = jnp.asarray(blurred, jnp.float32)
  if y.ndim != 4:
    raise ValueError(f"blurred must be [B, H, W, C], got shape {y.shape}.")
  if np.ndim(kernels) != 3 or np.shape(kernels)[0] != y.shape[0]:
    raise ValueError(f"kernels must be [B, K, K] with B = {y.shape[0]}, got shape"
                     f" {np.shape(kernels)}.")
  if not sigma > 0:
    raise ValueError(f"sigma must be > 0 for Wiener deconvolution, got {sigma}.")
  h, w = y.shape[1:3]
  otf = kernel_otf(kernels, (h, w))[..., None]                   # [B, H, W, 1]
  spec = jnp.fft.fft2(y, axes=(1, 2))                            # [B, H, W, C]
  k2 = jnp.abs(otf) ** 2
  f2 = jnp.asarray(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2,
                   jnp.float32)[None, :, :, None]                # [1, H, W, 1] cycles^2
  band = jnp.broadcast_to((k2 >= 0.5) & (f2 > 0), spec.shape)
  ratio = jnp.abs(spec) ** 2 * f2 / jnp.maximum(k2, 1e-12)
  amp = jnp.nanmedian(jnp.where(band, ratio, jnp.nan).reshape(y.shape[0], -1), axis=1)
  amp = jnp.maximum(jnp.nan_to_num(amp, nan=1e-30), 1e-30)[:, None, None, None]
  nsr = h * w * (sigma / 255.0) ** 2 * f2 / amp
  x = jnp.conj(otf) * spec / (k2 + nsr)
  return jnp.real(jnp.fft.ifft2(x, axes=(1, 2))).astype(jnp.float32)
