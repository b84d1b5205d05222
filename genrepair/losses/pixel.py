"""Pixel losses between a restored image and its clean target.

Each takes ``pred`` and ``target`` float32 ``[B, H, W, C]`` (restoration images are in
``[0, 1]``), keyword-only, and returns a per-example float32 ``[B]`` loss (mean over pixels
and channels). An optional ``mask`` ``[B, H, W, 1]`` (1 = pixel counts, e.g. the hole of an
inpainting mask) turns the mean into a masked mean.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp


def _check(pred: jax.Array, target: jax.Array) -> None:
  if pred.shape != target.shape or pred.ndim != 4:
    raise ValueError(f"pred and target must both be [B, H, W, C]; got {tuple(pred.shape)}"
                     f" and {tuple(target.shape)}.")


def _reduce(err: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean of ``err [B, H, W, C]`` per example, optionally over ``mask [B, H, W, 1]``."""
  if mask is None:
    return jnp.mean(err, axis=(1, 2, 3))
  mask = jnp.broadcast_to(mask.astype(err.dtype), err.shape)
  return jnp.sum(err * mask, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(mask, axis=(1, 2, 3)), 1.0)


def l1(*, pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean absolute error per example (EDSR, Lim et al. 2017, Sec. 4.2). float32 ``[B]``."""
  _check(pred, target)
  return _reduce(jnp.abs(pred - target), mask)


def l2(*, pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error per example (SRCNN, DnCNN). float32 ``[B]``.

  DnCNN (Zhang et al. 2017, Eq. 1) writes ``1/(2N) sum ||R(y) - (y - x)||^2``; with the
  residual inside the model this equals ``0.5 * H * W * C * l2`` — the same minimiser; the
  constant is absorbed by the learning rate.
  """
  _check(pred, target)
  return _reduce(jnp.square(pred - target), mask)


def charbonnier(*, pred: jax.Array, target: jax.Array, mask: jax.Array | None = None,
                eps: float = 1e-3) -> jax.Array:
  """Charbonnier loss ``sqrt((pred - target)^2 + eps^2)`` (LapSRN, Lai et al. 2017, Eq. 3).

  A differentiable L1; ``eps`` in image units ([0, 1] images: 1e-3). float32 ``[B]``.
  """
  _check(pred, target)
  return _reduce(jnp.sqrt(jnp.square(pred - target) + eps * eps), mask)


def ssim(*, pred: jax.Array, target: jax.Array) -> jax.Array:
  """``1 - SSIM`` per example (Zhao et al. 2017, "Loss Functions for Image Restoration").

  SSIM as in Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
  population statistics; dm-pix), data range 1, averaged over channels. float32 ``[B]``
  in ``[0, 2]``.
  """
  _check(pred, target)
  return 1.0 - dm_pix.ssim(pred, target, max_val=1.0)
