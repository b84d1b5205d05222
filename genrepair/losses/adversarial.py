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


# ----------------------------------------------------------------- Wasserstein (WGAN-GP)


def d_wasserstein(*, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Critic loss of the Wasserstein GAN: ``D(G(z)) - D(x)``.

  Arjovsky et al., "Wasserstein GAN", ICML 2017, Eq. 3 (negated: the critic maximises
  ``E D(x) - E D(G(z))``); with the gradient penalty (:func:`gradient_penalty`) of
  Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017, Algorithm 1.
  The critic's outputs are unbounded scores, not logits of a probability.

  Args:
    real_logits: float ``[B]`` or ``[B, ...]``, critic scores of real images.
    fake_logits: float, the same batch size, critic scores of generated images.

  Returns:
    float32 ``[B]`` (negative when the critic separates the two).

  Raises:
    ValueError: different batch sizes.
  """
  return _paired(-_per_example(real_logits), _per_example(fake_logits))


def g_wasserstein(*, fake_logits: jax.Array) -> jax.Array:
  """Generator loss of the Wasserstein GAN: ``-D(G(z))`` (Gulrajani et al. 2017, Alg. 1).

  Args:
    fake_logits: float ``[B]`` or ``[B, ...]``, critic scores of generated images.

  Returns:
    float32 ``[B]``.
  """
  return -_per_example(fake_logits)


def gradient_penalty(*, interp_grad_norm: jax.Array) -> jax.Array:
  """WGAN-GP two-sided penalty ``(||grad_x D(x_hat)||_2 - 1)^2``.

  Gulrajani et al. 2017, Eq. 3: ``x_hat = eps x + (1 - eps) G(z)``, ``eps ~ U[0, 1]`` per
  example; the weight (lambda = 10 in the paper) is the config's loss weight. The task
  computes the per-example gradient norm (input ``interp_grad_norm``).

  Args:
    interp_grad_norm: float ``[B]``, L2 norm of D's input gradient at each ``x_hat``.

  Returns:
    float32 ``[B]``.
  """
  return (_per_example(interp_grad_norm) - 1.0) ** 2


def r1_penalty(*, real_grad_sq: jax.Array) -> jax.Array:
  """R1 regulariser ``0.5 ||grad_x D(x)||^2`` on real data.

  Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually Converge?",
  ICML 2018, Eq. 9: ``R1 = gamma / 2 E ||grad D(x)||^2``; gamma is the config's loss weight.
  StyleGAN2's lazy form (Karras et al. 2020, Sec. 3.1) evaluates it every k steps with the
  weight multiplied by k (the task's ``r1_every``).

  Args:
    real_grad_sq: float ``[B]``, squared L2 norm of D's input gradient at each real image.

  Returns:
    float32 ``[B]``.
  """
  return 0.5 * _per_example(real_grad_sq)


def path_length(*, pl_lengths: jax.Array, pl_mean: jax.Array) -> jax.Array:
  """StyleGAN2 path length penalty ``(||J_w^T y||_2 - a)^2``.

  Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020,
  Sec. 3.2, Eq. 4: ``E_{w, y ~ N(0, I)} (||J_w^T y||_2 - a)^2`` with ``a`` the running
  mean of the lengths (decay 0.01); the weight (2 in the paper) is the config's loss
  weight, multiplied by the lazy interval by the task (``pl_every``, 4 in the paper).
  The task computes the lengths (``genrepair.tasks.gan.path_lengths``) and ``a``.

  Args:
    pl_lengths: float ``[B]``, per-example ``||J_w^T y||_2`` (>= 0).
    pl_mean: float scalar (or ``[B]``), the moving average ``a``; treated as a constant.

  Returns:
    float32 ``[B]`` in ``[0, inf)``.
  """
  lengths = jnp.asarray(pl_lengths, jnp.float32)
  if lengths.ndim != 1:
    raise ValueError(f"pl_lengths must be [B], got shape {lengths.shape}.")
  return jnp.square(lengths - jax.lax.stop_gradient(jnp.asarray(pl_mean, jnp.float32)))


# ------------------------------------------------------------------------ hinge (SNGAN)


def d_hinge(*, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Hinge discriminator loss ``relu(1 - D(x)) + relu(1 + D(G(z)))``.

  Lim & Ye, "Geometric GAN", 2017; Miyato et al., "Spectral Normalization for GANs", ICLR
  2018, Eq. 16-17 (used with spectrally normalised D). Zero once real scores are >= 1 and
  fake scores <= -1.

  Args:
    real_logits: float ``[B]`` or ``[B, ...]``, D's scores on real images (per-location
      maps are averaged after the hinge).
    fake_logits: float, the same batch size, on generated images.

  Returns:
    float32 ``[B]`` in ``[0, inf)``.

  Raises:
    ValueError: different batch sizes.
  """
  real = _per_example(jax.nn.relu(1.0 - jnp.asarray(real_logits, jnp.float32)))
  fake = _per_example(jax.nn.relu(1.0 + jnp.asarray(fake_logits, jnp.float32)))
  return _paired(real, fake)


def g_hinge(*, fake_logits: jax.Array) -> jax.Array:
  """Generator loss paired with the hinge D loss: ``-D(G(z))`` (Miyato et al. 2018, Eq. 17).

  Args:
    fake_logits: float ``[B]`` or ``[B, ...]``.

  Returns:
    float32 ``[B]``.
  """
  return -_per_example(fake_logits)


# ---------------------------------------------------------------------- least squares


def d_least_squares(*, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """LSGAN discriminator loss ``0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2``.

  Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017, Eq. 9 with the
  0-1 coding ``a = 0, b = 1, c = 1`` (also CycleGAN's adversarial loss). ``D`` is the raw
  output (no sigmoid).

  Args:
    real_logits: float ``[B]`` or ``[B, ...]`` (PatchGAN maps are averaged per example).
    fake_logits: float, the same batch size.

  Returns:
    float32 ``[B]`` in ``[0, inf)``.

  Raises:
    ValueError: different batch sizes.
  """
  real = _per_example(0.5 * (jnp.asarray(real_logits, jnp.float32) - 1.0) ** 2)
  fake = _per_example(0.5 * jnp.asarray(fake_logits, jnp.float32) ** 2)
  return _paired(real, fake)


def g_least_squares(*, fake_logits: jax.Array) -> jax.Array:
  """LSGAN generator loss ``0.5 (D(G(z)) - 1)^2`` (Mao et al. 2017, Eq. 9, ``c = 1``).

  Args:
    fake_logits: float ``[B]`` or ``[B, ...]``.

  Returns:
    float32 ``[B]`` in ``[0, inf)``.
  """
  return _per_example(0.5 * (jnp.asarray(fake_logits, jnp.float32) - 1.0) ** 2)


def _paired(real: jax.Array, fake: jax.Array) -> jax.Array:
  if real.shape != fake.shape:
    raise ValueError(
        f"real_logits and fake_logits need the same batch size, got {real.shape[0]} and"
        f" {fake.shape[0]}.")
  return real + fake
