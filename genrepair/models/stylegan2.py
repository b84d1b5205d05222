"""StyleGAN2 generator and discriminator (Karras et al., CVPR 2020, config F).

Karras, Laine, Aittala, Hellsten, Lehtinen & Aila, "Analyzing and Improving the Image
Quality of StyleGAN", CVPR 2020. Plain flax linen (layers in
:mod:`genrepair.models.stylegan2_layers`):

- **Mapping network** ``z -> w`` (StyleGAN, Karras et al. 2019, Sec. 2): ``z`` normalised
  to unit second moment, then ``mapping_layers`` (8) equalised fully-connected layers of
  width ``w_dim`` with leaky ReLU and learning-rate multiplier 0.01.
- **Synthesis network** (Fig. 2d, Fig. 7 "skip" generator): a learned constant ``4x4``
  input; per resolution two 3x3 modulated + demodulated convolutions (Eq. 1-3; the first
  upsamples 2x with the ``[1, 3, 3, 1]`` FIR filter), each followed by a per-pixel noise
  input ``N(0, 1)`` scaled by a learned per-layer strength (initialised 0), a bias and
  ``sqrt(2)``-gain leaky ReLU; a modulated 1x1 toRGB (no demodulation) at every
  resolution whose outputs are summed after FIR upsampling. Linear output (no tanh; real
  images are in ``[-1, 1]``).
- **Styles**: ``num_ws = 2 log2(resolution) - 2`` copies of ``w``, one per modulated layer
  (a block's toRGB shares its index with the next block's first convolution, as in the
  paper's code). **Style mixing** (StyleGAN Sec. 3.1, probability 0.9 in StyleGAN2's
  configs) in training: with probability ``style_mixing_prob`` per minibatch (as the
  paper's code), a second latent ``z2`` is mapped and layers ``>= cutoff``, ``cutoff ~
  U{1, ..., num_ws - 1}``, take its ``w``. Randomness only from the explicit flax rngs
  ``'mixing'`` and ``'noise'``; at inference (``train=False``) there is no mixing and
  every noise input is a fixed map drawn from ``key(0)`` folded with the layer's index
  (the paper code's ``noise_mode='const'``), so sampling is deterministic given ``z``.
- **Discriminator** (Fig. 7 "residual"): fromRGB 1x1 at the full resolution, then per
  resolution a 3x3 conv and a 3x3 conv with 2x FIR downsampling, plus a 1x1 FIR-downsampled
  skip, summed and scaled by ``1/sqrt(2)``; at 4x4 the minibatch standard deviation layer
  (group 4, one feature), a 3x3 conv, a fully-connected layer and the logit.
- **Equalised learning rate** everywhere (weights stored ``N(0, 1)``, scaled at run time
  by ``1/sqrt(fan_in)``). Widths ``min(channel_base // res, channel_max)``.

Image size vs resolution: the networks work at ``resolution`` (a power of 2); with a
smaller ``image_size`` (e.g. 28x28 MNIST in a 32x32 network) the generator's output is
centre-cropped to ``image_size`` and the discriminator pads its ``image_size`` input back
with ``-1`` (black in ``[-1, 1]``), so both players see exactly the data's pixels and
MNIST's black border; the tasks and metrics see ``image_size`` images only.

Path length regularisation (Sec. 3.2) needs ``w``: the generator exposes
:meth:`Generator.map` (``z -> ws``) and :meth:`Generator.synthesize` (``ws -> image``).

Variants (``Model(variant=...)``); parameter counts for z_dim = w_dim, pinned in
``tests/test_stylegan2.py``:

| variant | channels | image / resolution | widths 4 -> res | w_dim, mapping | G params | D params |
|---|---|---|---|---|---|---|
| ``tiny`` (tests) | 1 | 28 / 32 | 8, 8, 8, 8 | 8, 2 layers | 5,195 | 5,409 |
| ``digits32`` | 1 | 28 / 32 | 64, 64, 32, 16 | 128, 8 layers | 344,795 | 218,417 |
| ``wide32`` | 1 | 28 / 32 | 128, 128, 128, 128 | 256, 2 layers | 1,529,099 | 1,346,049 |
| ``ffhq256`` (paper, config F) | 3 | 256 / 256 | 512 x5, 256, 128 | 512, 8 layers | 30,034,338 | 28,864,129 |

``wide32`` follows StyleGAN2-ADA's CIFAR-10 networks (Karras et al. 2020b: the same width
at every resolution, 2 mapping layers, minibatch-stddev group 32) at 128 instead of 512
channels. ``ffhq256`` is config F at 256x256 (``channel_base`` 32768, ``channel_max`` 512: the paper
code's ``fmap_base = 16 << 10`` with its ``nf(stage)`` convention). With
``resolution=image_size=1024`` the generator has 30,370,060 parameters, which we believe is
the count of the released config-F FFHQ generator (from memory, not checked against the
released files; 29,012,513 for the discriminator here, not checked against anything).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import variants
from genrepair.models.stylegan2_layers import (EqualConv, EqualDense, ModulatedConv,
                                               lrelu, minibatch_stddev, upsample2d)

VARIANTS = {
    "tiny": dict(resolution=32, image_size=28, channel_base=256, channel_max=8, w_dim=8,
                 mapping_layers=2, mbstd_group=2),
    "digits32": dict(resolution=32, image_size=28, channel_base=512, channel_max=64,
                     w_dim=128, mapping_layers=8, mbstd_group=4),
    "wide32": dict(resolution=32, image_size=28, channel_base=4096, channel_max=128,
                   w_dim=256, mapping_layers=2, mbstd_group=32),
    "ffhq256": dict(resolution=256, image_size=256, channel_base=32768, channel_max=512,
                    w_dim=512, mapping_layers=8, mbstd_group=4),
}
_DEFAULTS = dict(mapping_lr_mul=0.01, mbstd_features=1)


def _log2(resolution: int) -> int:
  n = int(round(math.log2(resolution)))
  if resolution < 8 or 2 ** n != resolution:
    raise ValueError(f"StyleGAN2 resolution must be a power of 2 >= 8, got {resolution}.")
  return n


def widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
  """``{res: min(channel_base // res, channel_max)}`` for ``res = 4 ... resolution``."""
  return {2 ** i: min(channel_base // 2 ** i, channel_max)
          for i in range(2, _log2(resolution) + 1)}


class MappingNetwork(nn.Module):
  """``z -> w``: normalisation + ``num_layers`` equalised FC layers (StyleGAN Sec. 2).

  Attributes:
    w_dim: width of every layer and of ``w``.
    num_layers: number of FC layers (8 in the paper).
    lr_mul: learning-rate multiplier of the layers (0.01 in the paper).
  """
  w_dim: int
  num_layers: int = 8
  lr_mul: float = 0.01

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """float32 ``[B, z_dim]`` -> ``[B, w_dim]``."""
    x = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + 1e-8)
    for i in range(self.num_layers):
      x = EqualDense(self.w_dim, lr_mul=self.lr_mul, activation="lrelu", name=f"fc{i}")(x)
    return x


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv + noise input + bias + leaky ReLU (StyleGAN2 Fig. 2d).

  Attributes:
    features: output channels.
    up: 2x upsampling before the convolution.
    noise_index: the layer's index, seeding its fixed inference-time noise map.
  """
  features: int
  up: bool = False
  noise_index: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, Cin]``, ``w [B, w_dim]`` -> ``[B, H', W', features]``."""
    x = ModulatedConv(self.features, 3, up=self.up, name="conv")(x, w)
    b, h, wd, _ = x.shape
    if train:  # fresh per-pixel noise, one map per sample, from the explicit rng
      noise = jax.random.normal(self.make_rng("noise"), (b, h, wd, 1), x.dtype)
    else:  # the fixed ('const') noise map of this layer
      key = jax.random.fold_in(jax.random.key(0), self.noise_index)
      noise = jax.random.normal(key, (1, h, wd, 1), x.dtype)
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    x = x + noise * strength
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return lrelu(x + bias)


class SynthesisNetwork(nn.Module):
  """Skip-architecture synthesis network ``ws -> image`` (StyleGAN2 Fig. 7).

  Attributes:
    resolution: output resolution (power of 2 >= 8).
    channels: image channels.
    channel_base, channel_max: widths ``min(channel_base // res, channel_max)``.
  """
  resolution: int
  channels: int
  channel_base: int
  channel_max: int

  @property
  def num_ws(self) -> int:
    """Number of style inputs: ``2 log2(resolution) - 2``."""
    return 2 * _log2(self.resolution) - 2

  @nn.compact
  def __call__(self, ws: jax.Array, *, train: bool) -> jax.Array:
    """float32 ``[B, num_ws, w_dim]`` -> ``[B, resolution, resolution, channels]``."""
    if ws.ndim != 3 or ws.shape[1] != self.num_ws:
      raise ValueError(f"SynthesisNetwork expects ws [B, {self.num_ws}, w_dim], got"
                       f" {tuple(ws.shape)}.")
    ch = widths(self.resolution, self.channel_base, self.channel_max)
    const = self.param("const", nn.initializers.normal(1.0), (4, 4, ch[4]))
    x = jnp.broadcast_to(const, (ws.shape[0], 4, 4, ch[4]))  # [B, 4, 4, C4]
    x = SynthesisLayer(ch[4], noise_index=0, name="b4_conv1")(x, ws[:, 0], train=train)
    img = ModulatedConv(self.channels, 1, demodulate=False, name="b4_torgb")(x, ws[:, 1])
    img = img + self.param("b4_torgb_bias", nn.initializers.zeros, (self.channels,))
    idx = 1
    for res in sorted(ch)[1:]:
      x = SynthesisLayer(ch[res], up=True, noise_index=idx, name=f"b{res}_conv0")(
          x, ws[:, idx], train=train)                  # [B, res, res, C]
      x = SynthesisLayer(ch[res], noise_index=idx + 1, name=f"b{res}_conv1")(
          x, ws[:, idx + 1], train=train)
      rgb = ModulatedConv(self.channels, 1, demodulate=False, name=f"b{res}_torgb")(
          x, ws[:, idx + 2])
      rgb = rgb + self.param(f"b{res}_torgb_bias", nn.initializers.zeros, (self.channels,))
      img = upsample2d(img) + rgb                      # skip generator: sum of upsampled RGB
      idx += 2
    return img


class Generator(nn.Module):
  """StyleGAN2 generator ``z -> image``: mapping, style mixing, synthesis, crop.

  Attributes:
    image_size: output height = width (``<= resolution``; centre crop).
    resolution: synthesis resolution (power of 2).
    channels: image channels.
    channel_base, channel_max: synthesis widths.
    w_dim: width of ``w``.
    mapping_layers: FC layers of the mapping network.
    mapping_lr_mul: their learning-rate multiplier.
    style_mixing_prob: probability of mixing two latents in a training minibatch.
  """
  image_size: int
  resolution: int
  channels: int
  channel_base: int
  channel_max: int
  w_dim: int
  mapping_layers: int = 8
  mapping_lr_mul: float = 0.01
  style_mixing_prob: float = 0.9

  def setup(self):
    self.mapping = MappingNetwork(self.w_dim, self.mapping_layers, self.mapping_lr_mul)
    self.synthesis = SynthesisNetwork(self.resolution, self.channels, self.channel_base,
                                      self.channel_max)

  @property
  def num_ws(self) -> int:
    """Number of per-layer latents: ``2 log2(resolution) - 2``."""
    return 2 * _log2(self.resolution) - 2

  def map(self, z: jax.Array, *, train: bool) -> jax.Array:
    """``z -> ws``: float32 ``[B, z_dim]`` -> ``[B, num_ws, w_dim]``.

    With ``train`` and ``style_mixing_prob > 0`` this draws (rng ``'mixing'``) a second
    latent ``z2 ~ N(0, I)``, a cutoff ``c ~ U{1, ..., num_ws - 1}`` and a coin with
    probability ``style_mixing_prob``; on heads layers ``>= c`` use ``w(z2)``.
    """
    n = self.num_ws
    ws = jnp.broadcast_to(self.mapping(z)[:, None], (z.shape[0], n, self.w_dim))
    if not train or self.style_mixing_prob <= 0:
      return ws
    k_z, k_cut, k_coin = jax.random.split(self.make_rng("mixing"), 3)
    ws2 = self.mapping(jax.random.normal(k_z, z.shape, z.dtype))[:, None]  # [B, 1, w_dim]
    cutoff = jax.random.randint(k_cut, (), 1, n)
    cutoff = jnp.where(jax.random.uniform(k_coin, ()) < self.style_mixing_prob, cutoff, n)
    return jnp.where(jnp.arange(n)[None, :, None] < cutoff, ws, ws2)

  def synthesize(self, ws: jax.Array, *, train: bool) -> jax.Array:
    """``ws -> image``: ``[B, num_ws, w_dim]`` -> float32 ``[B, image_size, image_size, C]``.

    Noise inputs are random (rng ``'noise'``) with ``train``, fixed maps otherwise.
    Values are unbounded (linear output), ~``[-1, 1]`` once trained.
    """
    img = self.synthesis(ws, train=train)
    off = (self.resolution - self.image_size) // 2
    return img[:, off:off + self.image_size, off:off + self.image_size]

  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    """``G(z)``: float32 ``[B, z_dim]`` -> ``[B, image_size, image_size, channels]``."""
    return self.synthesize(self.map(z, train=train), train=train)


class Discriminator(nn.Module):
  """Residual StyleGAN2 discriminator ``image -> logit`` (Fig. 7).

  Attributes:
    image_size: input height = width (padded with -1 to ``resolution``).
    resolution: network resolution (power of 2).
    channel_base, channel_max: widths ``min(channel_base // res, channel_max)``.
    mbstd_group: minibatch-stddev group size (4 in the paper).
    mbstd_features: minibatch-stddev features (1 in the paper).
  """
  image_size: int
  resolution: int
  channel_base: int
  channel_max: int
  mbstd_group: int = 4
  mbstd_features: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Scores images.

    Args:
      x: float32 ``[B, image_size, image_size, C]`` in ``[-1, 1]``; ``B`` a multiple of
        ``min(mbstd_group, B)``.
      train: unused (no BatchNorm); kept for the GAN task's interface.

    Returns:
      float32 ``[B]`` logits.

    Raises:
      ValueError: wrong spatial size, or a batch the minibatch-stddev group does not divide.
    """
    del train
    if x.ndim != 4 or x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"StyleGAN2 Discriminator expects [B, {self.image_size},"
                       f" {self.image_size}, C] images, got shape {tuple(x.shape)}.")
    lo = (self.resolution - self.image_size) // 2
    hi = self.resolution - self.image_size - lo
    if lo or hi:
      x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)), constant_values=-1.0)
    ch = widths(self.resolution, self.channel_base, self.channel_max)
    x = EqualConv(ch[self.resolution], 1, name=f"b{self.resolution}_fromrgb")(x)
    for res in sorted(ch, reverse=True)[:-1]:
      skip = EqualConv(ch[res // 2], 1, down=True, use_bias=False, activation="linear",
                       name=f"b{res}_skip")(x)           # [B, res/2, res/2, C']
      x = EqualConv(ch[res], 3, name=f"b{res}_conv0")(x)
      x = EqualConv(ch[res // 2], 3, down=True, name=f"b{res}_conv1")(x)
      x = (x + skip) * math.sqrt(0.5)
    x = minibatch_stddev(x, self.mbstd_group, self.mbstd_features)  # [B, 4, 4, C4 + F]
    x = EqualConv(ch[4], 3, name="b4_conv")(x)
    x = EqualDense(ch[4], activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
    return EqualDense(1, name="b4_out")(x)[:, 0]


class GANPair(NamedTuple):
  """The two players of a GAN."""
  generator: nn.Module
  discriminator: nn.Module


def Model(*, variant: str | None = None, channels: int = 1,  # pylint: disable=invalid-name
          style_mixing_prob: float = 0.9, **kw) -> GANPair:
  """Builds a StyleGAN2 generator/discriminator pair.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'digits32'``); ``**kw`` overrides its
      fields (``resolution``, ``image_size``, ``channel_base``, ``channel_max``, ``w_dim``,
      ``mapping_layers``, ``mbstd_group``, ``mapping_lr_mul``, ``mbstd_features``).
    channels: image channels.
    style_mixing_prob: probability of style mixing per training minibatch (0.9 in the
      paper's configs; 0 disables it).

  Returns:
    :class:`GANPair` of unbound Flax modules.

  Raises:
    ValueError: unknown variant/override, bad resolution, image larger than resolution,
      mixing probability outside ``[0, 1]``.
  """
  c = variants.resolve("StyleGAN2", VARIANTS, variant, default="digits32",
                       defaults=_DEFAULTS, overrides=kw)
  _log2(c["resolution"])
  if not 1 <= c["image_size"] <= c["resolution"]:
    raise ValueError(f"StyleGAN2 image_size {c['image_size']} must be in [1, resolution ="
                     f" {c['resolution']}].")
  if not 0.0 <= style_mixing_prob <= 1.0:
    raise ValueError(f"StyleGAN2 style_mixing_prob must be in [0, 1], got {style_mixing_prob}.")
  common = dict(image_size=c["image_size"], resolution=c["resolution"],
                channel_base=c["channel_base"], channel_max=c["channel_max"])
  return GANPair(
      generator=Generator(channels=channels, w_dim=c["w_dim"],
                          mapping_layers=c["mapping_layers"],
                          mapping_lr_mul=c["mapping_lr_mul"],
                          style_mixing_prob=float(style_mixing_prob), **common),
      discriminator=Discriminator(mbstd_group=c["mbstd_group"],
                                  mbstd_features=c["mbstd_features"], **common))
