"""Classical filters in JAX: the first stage of two-stage (classical, then learned) models.

``switching_median`` is the switching 3x3 median filter for salt-and-pepper noise (Sun &
Neuvo, Pattern Recognit. Lett. 1994): impulse candidates (``degradations.impulse_mask``)
are replaced by the median of their 3x3 window, every other pixel is kept. It equals the
classical baseline ``genrepair.baselines.median_filter(..., switching=True)`` (SciPy; the
tests check the two agree) but is batched and jit-able, so training can compute it on
device as the input of a network that refines it (``config.degradation.prefilter``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genrepair import degradations


def median3x3(x: jax.Array) -> jax.Array:
  """Per-channel 3x3 median with a mirrored border (SciPy's ``mode='reflect'``).

  Args:
    x: float ``[B, H, W, C]``.

  Returns:
    float32 ``[B, H, W, C]``: ``scipy.ndimage.median_filter(x[b], size=(3, 3, 1),
    mode='reflect')`` per image.

  Raises:
    ValueError: ``x`` is not ``[B, H, W, C]``.
  """
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4:
    raise ValueError(f"median3x3 expects [B, H, W, C], got shape {x.shape}.")
  h, w = x.shape[1:3]
  # SciPy's 'reflect' repeats the edge pixel (d c b a | a b c d) = numpy's 'symmetric'.
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
  window = jnp.stack([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
  return jnp.median(window, axis=-1)


def switching_median(noisy: jax.Array) -> jax.Array:
  """Switching 3x3 median: candidates of ``degradations.impulse_mask`` get the median.

  Args:
    noisy: float ``[B, H, W, C]`` in ``[0, 1]`` (salt-and-pepper corrupted).

  Returns:
    float32 ``[B, H, W, C]``; non-candidate pixels are ``noisy`` exactly.

  Raises:
    ValueError: ``noisy`` is not ``[B, H, W, C]``.
  """
  x = jnp.asarray(noisy, jnp.float32)
  return jnp.where(degradations.impulse_mask(x) > 0, median3x3(x), x)
