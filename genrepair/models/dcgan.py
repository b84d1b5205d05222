"""DCGAN generator and discriminator (Radford, Metz & Chintala, ICLR 2016).

The paper's architecture guidelines (Sec. 3): no pooling (strided convolutions in D,
fractionally-strided convolutions in G), BatchNorm in both networks except the G output
layer and the D input layer, ReLU in G with tanh output, LeakyReLU(0.2) in D, all weights
from N(0, 0.02) (Sec. 4). G starts with a projection of z reshaped to a small feature map.

The paper's 64x64 network projects to 4x4x1024 and doubles the resolution four times. For
MNIST's native **28x28** (no padding to 32) the start resolution is 7x7 and the resolution
doubles twice (7 -> 14 -> 28); D mirrors G with stride-2 convolutions down to 7x7 and a
linear layer to one logit ("the last convolution layer is flattened and then fed into a
single sigmoid output", Sec. 3 — the sigmoid lives in the loss, which takes logits).

Variants (``Model(variant=...)``), parameter counts for 1 output channel, z_dim 100:

| variant | image | G widths (start -> out) | D widths | G params | D params |
|---|---|---|---|---|---|
| ``mnist`` (default) | 28x28 | 7x7x128 -> 14x14x64 -> 28x28x1 | 64, 128 | 759,681 | 138,689 |
| ``mnist-small`` | 28x28 | 7x7x64 -> 14x14x32 -> 28x28x1 | 32, 64 | 347,073 | 36,577 |
| ``paper64`` (3 ch) | 64x64 | 4x4x1024 -> ... -> 64x64x3 | 128 ... 1024 | 12,658,435 | 11,036,289 |

(Counts include BatchNorm scale/bias; ``tests/test_models.py`` pins them.)

Discriminator options for the other GAN objectives (``Model(d_norm=..., spectral_norm=...)``):

- ``d_norm='batch'`` (DCGAN), ``'layer'`` (layer normalisation over H, W, C with a
  per-channel scale/bias: the critic of WGAN-GP, Gulrajani et al. 2017 Sec. 4, whose
  per-example gradient penalty BatchNorm would invalidate; same parameter count), or
  ``'none'`` (convolution biases instead: + widths[1:] parameters minus the norms').
- ``spectral_norm=True``: every D weight divided by its spectral norm, estimated by power
  iteration with ``u`` kept in the ``batch_stats`` collection (Miyato et al. 2018,
  Algorithm 1; ``flax.linen.SpectralNorm``, one iteration per training call).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import dense
from genrepair.models import variants

# Sec. 4: "All weights were initialized from a zero-centered Normal distribution with
# standard deviation 0.02."
_INIT = nn.initializers.normal(stddev=0.02)

VARIANTS = {
    "mnist": dict(image_size=28, base_features=64),
    "mnist-small": dict(image_size=28, base_features=32),
    "paper64": dict(image_size=64, base_features=128),
}


def _num_doublings(image_size: int) -> tuple[int, int]:
  """Start resolution and number of x2 steps: 28 -> (7, 2); 32 -> (4, 3); 64 -> (4, 4)."""
  start = 7 if image_size % 7 == 0 else 4
  n = math.log2(image_size / start)
  if start * 2 ** round(n) != image_size or round(n) < 1:
    raise ValueError(
        f"DCGAN image_size must be 7*2^k or 4*2^k with k >= 1 (e.g. 28, 32, 64), got"
        f" {image_size}.")
  return start, round(n)


def _batch_norm(train: bool, axis_name: str | None) -> nn.BatchNorm:
  # PyTorch's momentum 0.1 (the DCGAN reference code's default) is Flax's 0.9.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name if train else None)


class Generator(nn.Module):
  """DCGAN generator ``z -> image``.

  Attributes:
    image_size: output height = width in pixels (28, 32, 64, ...).
    channels: output channels (1 grayscale, 3 RGB).
    base_features: width of the last hidden layer; widths double towards the start.
    axis_name: in training, BatchNorm's batch statistics are means over this mapped axis
      too (``jax.shard_map`` / ``vmap`` over the batch: the statistics of the whole
      batch, as under ``jit`` with a sharded batch); None outside a map.
  """
  image_size: int = 28
  channels: int = 1
  base_features: int = 64
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    """Maps latents to images.

    Args:
      z: float32 ``[B, z_dim]`` latents (N(0, I) in training).
      train: BatchNorm uses batch statistics (and updates ``batch_stats``) if True.

    Returns:
      float32 ``[B, image_size, image_size, channels]`` in ``[-1, 1]`` (tanh).
    """
    start, n = _num_doublings(self.image_size)
    width = self.base_features * 2 ** (n - 1)
    # No bias before BatchNorm: it would be cancelled by the mean subtraction, get a zero
    # gradient and (under Adam's g / (|g| + eps)) drift on rounding noise.
    x = dense.Dense(start * start * width, use_bias=False, kernel_init=_INIT,
                 name="project")(z)
    x = x.reshape(z.shape[0], start, start, width)  # [B, s, s, C0]
    x = nn.relu(_batch_norm(train, self.axis_name)(x))
    for i in range(n - 1):
      width //= 2
      # Fractionally-strided convolution, resolution x2: [B, r, r, C] -> [B, 2r, 2r, C/2].
      x = conv.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                             kernel_init=_INIT, name=f"up{i}")(x)
      x = nn.relu(_batch_norm(train, self.axis_name)(x))
    x = conv.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME",
                           kernel_init=_INIT, name="to_image")(x)
    return jnp.tanh(x)  # [B, H, W, channels]


D_NORMS = ("batch", "layer", "none")


class Discriminator(nn.Module):
  """DCGAN discriminator ``image -> logit``.

  Attributes:
    image_size: input height = width (checked against the input).
    base_features: width of the first convolution; widths double per stride-2 layer.
    norm: normalisation after the hidden convolutions: 'batch' | 'layer' | 'none'.
    spectral_norm: spectrally normalise every weight (conv kernels and the logit layer).
    axis_name: as :attr:`Generator.axis_name`.
  """
  image_size: int = 28
  base_features: int = 64
  norm: str = "batch"
  spectral_norm: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Scores images.

    Args:
      x: float32 ``[B, image_size, image_size, C]`` in ``[-1, 1]``.
      train: BatchNorm uses batch statistics if True.

    Returns:
      float32 ``[B]`` logits (``D(x) = sigmoid(logit)``).

    Raises:
      ValueError: input spatial size differs from ``image_size``.
    """
    if x.ndim != 4 or x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
          f"Discriminator expects [B, {self.image_size}, {self.image_size}, C] images, got"
          f" shape {tuple(x.shape)}.")
    _, n = _num_doublings(self.image_size)
    width = self.base_features
    if self.norm not in D_NORMS:
      raise ValueError(f"Discriminator norm must be one of {D_NORMS}, got {self.norm!r}.")

    def layer(module, name, v):
      if self.spectral_norm:  # u, sigma live in 'batch_stats'; power iteration in training
        return nn.SpectralNorm(module, n_steps=1, name=f"sn_{name}")(v, update_stats=train)
      return module(v)

    for i in range(n):
      # Strided convolution, resolution /2: [B, r, r, C] -> [B, r/2, r/2, width].
      normed = i > 0 and self.norm != "none"  # No norm on the D input layer (Sec. 3).
      x = layer(conv.Conv(width, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_INIT,
                          use_bias=not normed, name=f"down{i}"),  # bias only without a norm
                f"down{i}", x)
      if normed and self.norm == "batch":
        x = _batch_norm(train, self.axis_name)(x)
      elif normed:
        x = nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), feature_axes=-1)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
      width *= 2
    x = x.reshape(x.shape[0], -1)
    return layer(dense.Dense(1, kernel_init=_INIT, name="logit"), "logit", x)[:, 0]  # [B]


class GANPair(NamedTuple):
  """The two players of a GAN."""
  generator: nn.Module
  discriminator: nn.Module


def Model(*, variant: str | None = None, channels: int = 1, d_norm: str = "batch",  # pylint: disable=invalid-name
          spectral_norm: bool = False, **kw) -> GANPair:
  """Builds a DCGAN generator/discriminator pair.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'mnist'``); ``**kw`` overrides its
      fields (``image_size``, ``base_features``).
    channels: image channels.
    d_norm: the discriminator's normalisation, one of :data:`D_NORMS`.
    spectral_norm: spectrally normalise the discriminator's weights.

  Returns:
    :class:`GANPair` of unbound Flax modules.

  Raises:
    ValueError: unknown variant, override or ``d_norm``, or unsupported image size.
  """
  cfg = variants.resolve("DCGAN", VARIANTS, variant, default="mnist",
                         defaults=None, overrides=kw)
  _num_doublings(cfg["image_size"])
  if d_norm not in D_NORMS:
    raise ValueError(f"DCGAN d_norm must be one of {D_NORMS}, got {d_norm!r}.")
  return GANPair(
      generator=Generator(image_size=cfg["image_size"], channels=channels,
                          base_features=cfg["base_features"]),
      discriminator=Discriminator(image_size=cfg["image_size"],
                                  base_features=cfg["base_features"], norm=d_norm,
                                  spectral_norm=bool(spectral_norm)))
