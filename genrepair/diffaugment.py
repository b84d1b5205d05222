"""Differentiable augmentation of the discriminator's inputs (DiffAugment).

Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020. The same random transformations are applied to *every* image the
discriminator sees, real and generated, in both players' losses; they are differentiable,
so the generator's gradient flows through them. The three policies of the paper (its
Sec. 3 and its reference code), on float images ``[B, H, W, C]`` in ``[-1, 1]``, one
independent draw per image:

- ``color``: brightness ``x + U(-0.5, 0.5)``; saturation ``(x - mean_c) * U(0, 2) +
  mean_c`` (channel mean; the identity for 1 channel); contrast ``(x - mean) * U(0.5,
  1.5) + mean`` (mean over all pixels and channels).
- ``translation``: an integer shift of up to ``ratio`` (1/8) of the size in each
  direction, ``U{-s, ..., s}`` with ``s = round(ratio * size)``; pixels shifted in are
  ``fill`` (0, the paper's).
- ``cutout``: one square of ``round(ratio * size)`` (ratio 1/2) pixels set to ``fill``,
  its centre uniform over the image (it may be clipped by the border).

A policy is a comma-separated list applied in order, e.g. ``'color,translation,cutout'``
(the paper's choice for StyleGAN2); ``''`` is the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POLICIES = ("color", "translation", "cutout")


def parse(policy: str, where: str = "policy") -> tuple[str, ...]:
  """``'color,translation'`` -> ``('color', 'translation')``; ``''`` -> ``()``.

  Raises:
    ValueError: an unknown or repeated name (lists the known ones; names ``where``).
  """
  names = tuple(p.strip() for p in policy.split(",") if p.strip())
  bad = [p for p in names if p not in POLICIES]
  if bad or len(set(names)) != len(names):
    raise ValueError(f"{where}={policy!r}: expected a comma-separated subset of {POLICIES}"
                     f" without repeats; bad: {bad or 'repeated names'}.")
  return names


def color(x: jax.Array, key: jax.Array) -> jax.Array:
  """Brightness, saturation and contrast jitter (module docstring); ``x`` ``[B, H, W, C]``."""
  kb, ks, kc = jax.random.split(key, 3)
  b = x.shape[0]
  x = x + jax.random.uniform(kb, (b, 1, 1, 1), x.dtype, -0.5, 0.5)
  mean = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean) * jax.random.uniform(ks, (b, 1, 1, 1), x.dtype, 0.0, 2.0) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * jax.random.uniform(kc, (b, 1, 1, 1), x.dtype, 0.5, 1.5) + mean


def translation(x: jax.Array, key: jax.Array, ratio: float = 0.125,
                fill: float = 0.0) -> jax.Array:
  """Per-image integer shift by up to ``round(ratio * size)`` pixels; ``[B, H, W, C]``.

  ``out[b, i, j] = x[b, i - dy_b, j - dx_b]`` where that is inside the image, else
  ``fill``.
  """
  b, h, w, _ = x.shape
  sy, sx = int(ratio * h + 0.5), int(ratio * w + 0.5)
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (b, 1, 1, 1), -sy, sy + 1)
  dx = jax.random.randint(kx, (b, 1, 1, 1), -sx, sx + 1)
  padded = jnp.pad(x, ((0, 0), (sy, sy), (sx, sx), (0, 0)), constant_values=fill)

  def crop(img, oy, ox):  # img [H + 2sy, W + 2sx, C]: the window at (sy - dy, sx - dx)
    return jax.lax.dynamic_slice(img, (oy, ox, 0), (h, w, img.shape[-1]))

  return jax.vmap(crop)(padded, sy - dy[:, 0, 0, 0], sx - dx[:, 0, 0, 0])


def cutout(x: jax.Array, key: jax.Array, ratio: float = 0.5, fill: float = 0.0) -> jax.Array:
  """Per-image square of ``round(ratio * size)`` pixels set to ``fill``; ``[B, H, W, C]``.

  The square's top-left corner is ``offset - size // 2`` with ``offset`` uniform in
  ``{0, ..., H + (1 - size % 2) - 1}`` (likewise for W), clipped to the image.
  """
  b, h, w, _ = x.shape
  ch, cw = int(ratio * h + 0.5), int(ratio * w + 0.5)
  ky, kx = jax.random.split(key)
  oy = jax.random.randint(ky, (b, 1, 1, 1), 0, h + (1 - ch % 2)) - ch // 2
  ox = jax.random.randint(kx, (b, 1, 1, 1), 0, w + (1 - cw % 2)) - cw // 2
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  inside = (rows >= oy) & (rows < oy + ch) & (cols >= ox) & (cols < ox + cw)
  return jnp.where(inside, jnp.asarray(fill, x.dtype), x)


def augment(x: jax.Array, key: jax.Array, policy: tuple[str, ...] | str,
            fill: float = 0.0) -> jax.Array:
  """Applies ``policy`` (names of :data:`POLICIES`, in order) to a batch.

  Args:
    x: float ``[B, H, W, C]`` in ``[-1, 1]``.
    key: PRNG key; one independent draw per image and policy.
    policy: a tuple from :func:`parse` or the comma-separated string.
    fill: value of pixels shifted in by ``translation`` and of ``cutout``'s square (0 in
      the paper: mid-grey in ``[-1, 1]``).

  Returns:
    float ``[B, H, W, C]``, differentiable in ``x``; ``x`` itself for the empty policy.

  Raises:
    ValueError: unknown policy name.
  """
  names = parse(policy) if isinstance(policy, str) else tuple(policy)
  for i, name in enumerate(names):
    k = jax.random.fold_in(key, i)
    if name == "color":
      x = color(x, k)
    elif name == "translation":
      x = translation(x, k, fill=fill)
    elif name == "cutout":
      x = cutout(x, k, fill=fill)
    else:
      raise ValueError(f"Unknown DiffAugment policy {name!r}; known: {POLICIES}.")
  return x
