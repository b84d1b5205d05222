"""Adversarial losses for GAN discriminators and generators.

Every function takes discriminator *logits* (pre-sigmoid scores, float ``[B]`` or
``[B, ...]``), keyword-only, and returns a per-example float32 loss of shape ``[B]``
(extra logit dimensions, e.g. PatchGAN maps, are averaged). Logits are used instead of
probabilities so that ``log(sigmoid(x))`` is evaluated as ``-softplus(-x)``, which stays
finite for any finite logit (no ``log(0)``).

Reference: Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, Eq. 1 (the
minimax game) and Sec. 3 (the non-saturating generator objective), as used by DCGAN
(Radford et al., ICLR 2016).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_example(x: jax.Array) -> jax.Array:
  """Averages all but the leading (batch) axis: ``[B, ...] -> [B]``."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim == 0:
    raise ValueError(f"logits must have a batch axis, got a scalar (shape {x.shape}).")
  return x.reshape(x.shape[0], -1).mean(axis=1)


def d_minimax(*, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator binary cross-entropy of the minimax game.

  ``-log D(x) - log(1 - D(G(z)))`` with ``D = sigmoid(logit)``, i.e.
  ``softplus(-real_logit) + softplus(fake_logit)`` (Goodfellow et al. 2014, Eq. 1, negated
  because we minimise). At the game's equilibrium (``D = 1/2`` everywhere) the loss is
  ``2 log 2 ≈ 1.386`` nats.

  Args:
    real_logits: float ``[B]`` or ``[B, ...]``, D's logits on real images.
    fake_logits: float ``[B']`` or ``[B', ...]``, D's logits on generated images.

  Returns:
    float32 ``[B]`` per-example loss in nats (real and fake terms paired by index).

  Raises:
    ValueError: if the two batch sizes differ.
  """
  real = _per_example(jax.nn.softplus(-jnp.asarray(real_logits, jnp.float32)))
  fake = _per_example(jax.nn.softplus(jnp.asarray(fake_logits, jnp.float32)))
  if real.shape != fake.shape:
    raise ValueError(
        f"real_logits and fake_logits need the same batch size, got {real.shape[0]} and"
        f" {fake.shape[0]}.")
  return real + fake


def g_minimax(*, fake_logits: jax.Array) -> jax.Array:
  """Generator loss of the original minimax game: ``log(1 - D(G(z)))``.

  Equals ``-softplus(fake_logit)``; it saturates (vanishing gradient) when D confidently
  rejects the samples, which is why the non-saturating form is the usual choice
  (Goodfellow et al. 2014, Sec. 3).

  Args:
    fake_logits: float ``[B]`` or ``[B, ...]``, D's logits on generated images.

  Returns:
    float32 ``[B]``, values in ``(-inf, 0]`` nats.
  """
  return _per_example(-jax.nn.softplus(jnp.asarray(fake_logits, jnp.float32)))


def g_nonsaturating(*, fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss ``-log D(G(z)) = softplus(-fake_logit)``.

  Same fixed point as the minimax game but strong gradients early in training
  (Goodfellow et al. 2014, Sec. 3; used by DCGAN).

  Args:
    fake_logits: float ``[B]`` or ``[B, ...]``, D's logits on generated images.

  Returns:
    float32 ``[B]``, values in ``[0, inf)`` nats.
  """
  return _per_example(jax.nn.softplus(-jnp.asarray(fake_logits, jnp.float32)))
