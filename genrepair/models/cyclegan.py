"""CycleGAN networks: ResNet generator and PatchGAN discriminator (Zhu et al., ICCV 2017).

**Generator** (CycleGAN Sec. 4 and appendix 7.2, after Johnson et al., "Perceptual Losses
for Real-Time Style Transfer and Super-Resolution", ECCV 2016): ``c7s1-k, d2k, d4k,
R4k x n, u2k, uk, c7s1-C`` with

- ``c7s1-k``: reflection pad 3, 7x7 convolution stride 1 with ``k`` filters, instance norm,
  ReLU (the output layer: no norm, tanh);
- ``dk``: 3x3 convolution stride 2 (zero padding 1), instance norm, ReLU (halves H, W);
- ``Rk``: residual block ``x + IN(conv3(pad(ReLU(IN(conv3(pad(x)))))))``, reflection padding;
- ``uk``: 3x3 fractionally-strided convolution stride 1/2, instance norm, ReLU (doubles H,
  W). Padding ``(1, 2)`` on the zero-dilated input = PyTorch's ``ConvTranspose2d(padding=1,
  output_padding=1)``, so output pixel ``2i`` is centred on input pixel ``i``.

Instance norm (Ulyanov et al. 2016) normalises each example and channel over H, W with the
biased variance and eps 1e-5 and has no affine parameters (the reference code's
``InstanceNorm2d(affine=False)``); convolutions therefore keep their biases.

**Discriminator**: the 70x70 PatchGAN (Isola et al., "pix2pix", CVPR 2017; CycleGAN appendix
7.2): ``C64-C128-C256-C512`` then a 1-channel convolution, all 4x4 with zero padding 1;
``Ck`` = convolution with ``k`` filters, instance norm (not on the first layer), LeakyReLU
0.2; strides 2, 2, 2, 1, 1 (``num_layers = 3`` stride-2 layers, widths capped at 8x).
Output: one raw score per overlapping patch (no sigmoid: the least-squares loss takes it
as is). Receptive field ``r``: from the output backwards ``r <- (r - 1) s + 4``: 70 pixels
for ``num_layers = 3``; 34 for ``num_layers = 2``.

All weights ~ N(0, 0.02), biases 0 (the reference code's ``init_type='normal'``).

Variants (``Model(variant=...)``). ``G`` = generator (``k``, stride-2 downsamplings,
residual blocks), ``D`` = discriminator (first width, stride-2 layers, receptive field);
the counts are per network (a CycleGAN has two of each); ``tests/test_cyclegan.py`` pins
them:

| variant | image | C | G: k, downs, blocks | D: width, s2 layers (patch) | G params | D params |
|---|---|---|---|---|---|---|
| ``digits-small`` (CPU) | 28 | 1 | 16, 2, 4 (7x7x64 blocks) | 32, 2 (34x34) | 343,233 | 166,625 |
| ``digits`` (default) | 28 | 1 | 32, 2, 6 (7x7x128 blocks) | 64, 2 (34x34) | 1,958,785 | 660,929 |
| ``resnet_6blocks`` | 128 | 3 | 64, 2, 6 | 64, 3 (70x70) | 7,837,699 | 2,764,737 |
| ``resnet_9blocks`` (paper) | 256 | 3 | 64, 2, 9 | 64, 3 (70x70) | 11,378,179 | 2,764,737 |

The paper variants' counts, analytically (a conv has ``KH KW Cin Cout + Cout``):

- ``resnet_9blocks`` G: c7s1-64 ``49*3*64 + 64 = 9,472``; d128 ``9*64*128 + 128 = 73,856``;
  d256 ``9*128*256 + 256 = 295,168``; 9 blocks x 2 convs x ``(9*256*256 + 256)`` =
  ``10,621,440``; u128 ``9*256*128 + 128 = 295,040``; u64 ``9*128*64 + 64 = 73,792``;
  c7s1-3 ``49*64*3 + 3 = 9,411``; total **11,378,179** = pytorch-CycleGAN's
  ``ResnetGenerator(3, 3, 64, n_blocks=9)``. ``resnet_6blocks``: three blocks fewer,
  ``11,378,179 - 3 * 1,180,160 = 7,837,699``.
- 70x70 PatchGAN: ``16*3*64 + 64 = 3,136``; ``16*64*128 + 128 = 131,200``;
  ``16*128*256 + 256 = 524,544``; ``16*256*512 + 512 = 2,097,664``; ``16*512*1 + 1 =
  8,193``; total **2,764,737** = pytorch-CycleGAN's ``NLayerDiscriminator(3, 64,
  n_layers=3)``.

The 28x28 variants keep the paper's layout (two downsamplings: 28 -> 14 -> 7, residual
blocks at 7x7) with fewer filters and blocks, and a PatchGAN with two stride-2 layers
(output map 5x5, 34x34 receptive field: a patch about the size of a digit).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import variants

# Appendix 7.2 / reference code: "weights are initialized from a Gaussian N(0, 0.02)".
_INIT = nn.initializers.normal(stddev=0.02)
_EPS = 1e-5  # PyTorch InstanceNorm2d's eps

VARIANTS = {
    "digits-small": dict(image_size=28, channels=1, g_features=16, num_down=2,
                         num_blocks=4, d_features=32, d_layers=2),
    "digits": dict(image_size=28, channels=1, g_features=32, num_down=2, num_blocks=6,
                   d_features=64, d_layers=2),
    "resnet_6blocks": dict(image_size=128, channels=3, g_features=64, num_down=2,
                           num_blocks=6, d_features=64, d_layers=3),
    "resnet_9blocks": dict(image_size=256, channels=3, g_features=64, num_down=2,
                           num_blocks=9, d_features=64, d_layers=3),
}


def instance_norm(x: jax.Array, eps: float = _EPS) -> jax.Array:
  """Normalises each example and channel over H, W (no affine parameters).

  Args:
    x: float ``[B, H, W, C]``.
    eps: added to the (biased) variance.

  Returns:
    ``(x - mean) / sqrt(var + eps)``, same shape and dtype.
  """
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def reflect_pad(x: jax.Array, p: int) -> jax.Array:
  """Reflection padding of H and W by ``p`` (``[B, H, W, C] -> [B, H+2p, W+2p, C]``)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class ResnetBlock(nn.Module):
  """``Rk``: two reflection-padded 3x3 convolutions with instance norm, plus the input.

  Attributes:
    features: ``k`` (= the input's channels).
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, k] -> [B, H, W, k]``."""
    h = conv.Conv(self.features, (3, 3), padding="VALID", kernel_init=_INIT,
                  name="conv0")(reflect_pad(x, 1))
    h = nn.relu(instance_norm(h))
    h = conv.Conv(self.features, (3, 3), padding="VALID", kernel_init=_INIT,
                  name="conv1")(reflect_pad(h, 1))
    return x + instance_norm(h)


class ResnetGenerator(nn.Module):
  """The ResNet image-to-image generator (see the module docstring).

  Attributes:
    channels: output channels (= input channels for CycleGAN's identity loss).
    features: ``k``, filters of the first layer; ``k 2^i`` after ``i`` downsamplings.
    num_down: stride-2 downsamplings (= upsamplings); H, W must be multiples of
      ``2 ** num_down``.
    num_blocks: residual blocks at the lowest resolution.
  """
  channels: int = 3
  features: int = 64
  num_down: int = 2
  num_blocks: int = 9

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Translates images.

    Args:
      x: float32 ``[B, H, W, C_in]`` in ``[-1, 1]``.

    Returns:
      float32 ``[B, H, W, channels]`` in ``[-1, 1]`` (tanh).

    Raises:
      ValueError: not 4-D, or H, W not multiples of ``2 ** num_down``.
    """
    f = 2 ** self.num_down
    if x.ndim != 4 or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"ResnetGenerator expects [B, H, W, C] with H, W multiples of {f},"
                       f" got shape {tuple(x.shape)}.")
    h = conv.Conv(self.features, (7, 7), padding="VALID", kernel_init=_INIT,
                  name="c7s1_in")(reflect_pad(x, 3))       # [B, H, W, k]
    h = nn.relu(instance_norm(h))
    width = self.features
    for i in range(self.num_down):                       # [B, h, w, c] -> [B, h/2, w/2, 2c]
      width *= 2
      h = conv.Conv(width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                    kernel_init=_INIT, name=f"down{i}")(h)
      h = nn.relu(instance_norm(h))
    for i in range(self.num_blocks):
      h = ResnetBlock(width, name=f"block{i}")(h)
    for i in range(self.num_down):                       # [B, h, w, c] -> [B, 2h, 2w, c/2]
      width //= 2
      h = conv.ConvTranspose(width, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                             kernel_init=_INIT, name=f"up{i}")(h)
      h = nn.relu(instance_norm(h))
    h = conv.Conv(self.channels, (7, 7), padding="VALID", kernel_init=_INIT,
                  name="c7s1_out")(reflect_pad(h, 3))      # [B, H, W, channels]
    return jnp.tanh(h)


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator: one raw score per overlapping image patch.

  Attributes:
    features: filters of the first layer (64 in the paper).
    num_layers: stride-2 layers (3: the 70x70 PatchGAN).
  """
  features: int = 64
  num_layers: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Scores patches.

    Args:
      x: float32 ``[B, H, W, C]`` in ``[-1, 1]``.

    Returns:
      float32 ``[B, H', W']`` raw scores (least-squares targets: 1 real, 0 fake); for
      ``num_layers = 3`` and 256x256 inputs ``H' = W' = 30``; for 2 and 28x28, 5.

    Raises:
      ValueError: not a 4-D input.
    """
    if x.ndim != 4:
      raise ValueError(f"PatchDiscriminator expects [B, H, W, C], got shape {tuple(x.shape)}.")
    pad = ((1, 1), (1, 1))
    h = conv.Conv(self.features, (4, 4), strides=(2, 2), padding=pad, kernel_init=_INIT,
                  name="conv0")(x)
    h = nn.leaky_relu(h, negative_slope=0.2)             # no norm on the first layer
    for i in range(1, self.num_layers + 1):
      stride = 2 if i < self.num_layers else 1           # the last C512 has stride 1
      h = conv.Conv(self.features * min(2 ** i, 8), (4, 4), strides=(stride, stride),
                    padding=pad, kernel_init=_INIT, name=f"conv{i}")(h)
      h = nn.leaky_relu(instance_norm(h), negative_slope=0.2)
    h = conv.Conv(1, (4, 4), padding=pad, kernel_init=_INIT, name="score")(h)
    return h[..., 0]                                     # [B, H', W']


class CycleGANNets(NamedTuple):
  """The two network types of a CycleGAN (each is used twice: G and F, D_A and D_B).

  Attributes:
    generator: unbound :class:`ResnetGenerator`.
    discriminator: unbound :class:`PatchDiscriminator`.
    image_size: the variant's training resolution (H = W).
    channels: image channels of both domains.
  """
  generator: nn.Module
  discriminator: nn.Module
  image_size: int
  channels: int


def Model(*, variant: str | None = None,  # pylint: disable=invalid-name
          channels: int | None = None, **kw) -> CycleGANNets:
  """Builds a CycleGAN generator / discriminator pair.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'digits'``).
    channels: image channels (default: the variant's, 1 for digits, 3 for the paper's).
    **kw: overrides of the variant's fields (``image_size``, ``g_features``,
      ``num_down``, ``num_blocks``, ``d_features``, ``d_layers``).

  Returns:
    :class:`CycleGANNets`.

  Raises:
    ValueError: unknown variant or override, non-positive sizes, or an image size that
      is not a multiple of ``2 ** num_down``.
  """
  cfg = variants.resolve("CycleGAN", VARIANTS, variant, default="digits", overrides=kw)
  if channels is not None:
    cfg["channels"] = int(channels)
  ints = ("image_size", "channels", "g_features", "d_features", "num_down", "d_layers")
  if any(int(cfg[k]) < 1 for k in ints) or int(cfg["num_blocks"]) < 0:
    raise ValueError(f"CycleGAN sizes must be positive, got {cfg}.")
  if cfg["image_size"] % 2 ** cfg["num_down"]:
    raise ValueError(f"CycleGAN image_size={cfg['image_size']} must be a multiple of"
                     f" 2 ** num_down = {2 ** cfg['num_down']}.")
  return CycleGANNets(
      generator=ResnetGenerator(channels=cfg["channels"], features=cfg["g_features"],
                                num_down=cfg["num_down"], num_blocks=cfg["num_blocks"]),
      discriminator=PatchDiscriminator(features=cfg["d_features"],
                                       num_layers=cfg["d_layers"]),
      image_size=int(cfg["image_size"]), channels=int(cfg["channels"]))
