"""EDSR: enhanced deep residual network for SR (Lim, Son, Kim, Nah & Lee, CVPRW 2017).

"Enhanced Deep Residual Networks for Single Image Super-Resolution", Sec. 3.1-3.2,
Fig. 2-3, following the authors' code (github.com/sanghyun-son/EDSR-PyTorch,
``src/model/edsr.py``) so that its published weights map one to one onto this tree:

1. **MeanShift**: subtract the DIV2K RGB mean ``(0.4488, 0.4371, 0.4040) * rgb_range``
   (a constant here; a frozen 1x1 conv in the PyTorch code).
2. **head**: 3x3 conv ``C -> F``.
3. **body**: ``n_resblocks`` residual blocks ``x + res_scale * conv(relu(conv(x)))``
   without BatchNorm (Sec. 3.1: BN "gets rid of range flexibility" and costs memory), then
   a 3x3 conv ``F -> F``; a **global skip** adds the head's output to the body's.
4. **tail**: the upsampler — for ``scale = 2^k``, ``k`` times (3x3 conv ``F -> 4F`` +
   pixel shuffle x2); for ``scale = 3``, one 3x3 conv ``F -> 9F`` + pixel shuffle x3 (no
   activation; Fig. 3) — then a 3x3 conv ``F -> C``.
5. **MeanShift** back: add the mean.

The model takes the **low-resolution** image (``sr_input = 'lr'``). Residual scaling
(Sec. 3.2) is 1.0 for EDSR-baseline and 0.1 for the large EDSR (32 blocks, 256 features),
whose training is unstable without it.

Range: inputs and outputs are in ``[0, 1]``; inside, the network runs at ``[0, rgb_range]``
(the input is multiplied by ``rgb_range`` and the output divided by it). The official
models were trained with ``rgb_range = 255``: load them with ``rgb_range=255`` and they
compute exactly what they compute in PyTorch. Trained here at ``rgb_range = 1`` the
network is equivalent up to a rescaling of its biases (ReLU is positively homogeneous).
``mean=None`` uses the DIV2K RGB mean for 3 channels and no shift for other channel
counts (there is no published Y-channel EDSR); pass a tuple of length ``channels`` to
choose.

Initialisation: PyTorch's default for ``nn.Conv2d`` (the authors' code sets none),
i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` weights = Flax
``variance_scaling(1/3, 'fan_in', 'uniform')``; biases zero (PyTorch draws them from the
same uniform).

Variants (``Model(variant=...)``; ``scale`` (default 2, the model the paper trains
first and fine-tunes x3/x4 from, Sec. 3.2) and ``channels`` (default 3) are keywords),
parameter counts (trainable conv weights + biases; the official README's numbers in the
last column):

| variant | blocks | F | res_scale | x2 | x3 | x4 | official x2/x3/x4 |
|---|---|---|---|---|---|---|---|
| ``baseline`` (default) | 16 | 64 | 1.0 | 1,369,859 | 1,554,499 | 1,517,571 | 1.37/1.55/1.52M |
| ``large`` (paper's EDSR) | 32 | 256 | 0.1 | 40,729,603 | 43,680,003 | 43,089,923 | 40.7/43.7/43.1M |

How they are counted (3 channels, ``F`` features, ``n`` blocks, every conv has a bias):
head ``9*3*F + F``; body ``(2n + 1) * (9*F*F + F)``; upsampler ``k * (9*F*4F + 4F)`` for
``2^k`` or ``9*F*9F + 9F`` for x3; last conv ``9*F*3 + 3``. Baseline x2: 1,792 +
33 * 36,928 + 147,712 + 1,731 = 1,369,859. The paper's Table 1 rounds the baseline to
"1.5M" (the x4 model) and EDSR to "43M". PyTorch's ``sum(p.numel())`` over the official
model is 24 higher (the two frozen MeanShift 1x1 convs, 3*3 + 3 each), which are
constants here. ``tests/test_sr_models.py`` pins these counts.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import layers
from genrepair.models import variants

# PyTorch nn.Conv2d default init (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# DIV2K training-set RGB mean (EDSR-PyTorch ``option.py`` / ``common.MeanShift``).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

VARIANTS = {
    "baseline": dict(n_resblocks=16, features=64, res_scale=1.0),
    "large": dict(n_resblocks=32, features=256, res_scale=0.1),
}


def _conv(features: int, name: str) -> conv.Conv:
  # 3x3, padding kernel_size // 2 with zeros, bias: common.default_conv in the official code.
  return conv.Conv(features, (3, 3), padding="SAME", kernel_init=_INIT, name=name)


def _check_scale(scale: int) -> None:
  if scale != 3 and (scale < 2 or scale & (scale - 1)):
    raise ValueError(f"EDSR scale must be 3 or a power of 2 (>= 2), got {scale}.")


class ResBlock(nn.Module):
  """``x + res_scale * conv(relu(conv(x)))`` (Fig. 2c, no BatchNorm)."""
  features: int
  res_scale: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = _conv(self.features, "conv1")(x)
    y = _conv(self.features, "conv2")(nn.relu(y))
    return x + self.res_scale * y


class EDSR(nn.Module):
  """EDSR mapping a low-resolution image to its ``scale``-times larger estimate.

  Attributes:
    scale: 2, 3, 4 (or another power of 2).
    channels: image channels (3 in the paper).
    n_resblocks: residual blocks in the body (16 baseline, 32 large).
    features: width ``F`` (64 baseline, 256 large).
    res_scale: residual scaling (1.0 baseline, 0.1 large).
    rgb_range: the value range the network runs at internally (255 for official weights).
    mean: per-channel mean in ``[0, 1]`` subtracted at the input and added at the output;
      ``None``: DIV2K RGB mean for 3 channels, zeros otherwise.
    sr_input: ``'lr'``: the model takes the low-resolution image (class constant).
  """
  scale: int = 2
  channels: int = 3
  n_resblocks: int = 16
  features: int = 64
  res_scale: float = 1.0
  rgb_range: float = 1.0
  mean: tuple[float, ...] | None = None
  sr_input: ClassVar[str] = "lr"

  def _mean(self) -> jax.Array:
    if self.mean is not None:
      if len(self.mean) != self.channels:
        raise ValueError(f"EDSR mean {self.mean} must have {self.channels} entries.")
      mean = self.mean
    else:
      mean = DIV2K_RGB_MEAN if self.channels == 3 else (0.0,) * self.channels
    return jnp.asarray(mean, jnp.float32) * self.rgb_range  # [C]

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Super-resolves low-resolution images.

    Args:
      x: float32 ``[B, H, W, channels]`` low-resolution images in ``[0, 1]``.
      train: unused (no BatchNorm); accepted for the restoration interface.

    Returns:
      float32 ``[B, H*scale, W*scale, channels]`` in ``[0, 1]`` nominally, not clipped.

    Raises:
      ValueError: unsupported ``scale``, a ``mean`` of the wrong length, or ``x`` not
        ``[B, H, W, channels]``.
    """
    del train
    _check_scale(self.scale)
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"EDSR expects [B, H, W, {self.channels}] images, got shape"
                       f" {tuple(x.shape)}.")
    mean = self._mean()
    f = self.features
    x = x * self.rgb_range - mean                   # sub_mean, [B, H, W, C]
    x = _conv(f, "head")(x)                         # [B, H, W, F]
    res = x
    for i in range(self.n_resblocks):
      res = ResBlock(f, self.res_scale, name=f"block{i}")(res)
    res = _conv(f, "body_conv")(res) + x            # global skip, [B, H, W, F]
    # Upsampler (official common.Upsampler): no activation, no BN.
    if self.scale == 3:
      res = layers.pixel_shuffle(_conv(9 * f, "up0")(res), 3)  # [B, 3H, 3W, F]
    else:
      for i in range(int(math.log2(self.scale))):
        res = layers.pixel_shuffle(_conv(4 * f, f"up{i}")(res), 2)  # [B, 2H, 2W, F]
    y = _conv(self.channels, "tail")(res)           # [B, sH, sW, C]
    return (y + mean) / self.rgb_range              # add_mean, back to [0, 1]

  def restore(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Restoration interface: same as ``__call__``."""
    return self(x, train=train)


def Model(*, variant: str | None = None, **kw) -> EDSR:  # pylint: disable=invalid-name
  """Builds an EDSR.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'baseline'``); ``**kw`` overrides its
      fields or sets ``scale`` / ``channels`` / ``rgb_range`` / ``mean``.

  Returns:
    An unbound :class:`EDSR`.

  Raises:
    ValueError: unknown variant or option, unsupported scale, bad mean length.
  """
  cfg = variants.resolve("EDSR", VARIANTS, variant, default="baseline",
                         defaults=dict(scale=2, channels=3, rgb_range=1.0, mean=None), overrides=kw)
  cfg["scale"] = int(cfg["scale"])
  _check_scale(cfg["scale"])
  if cfg["mean"] is not None:
    cfg["mean"] = tuple(float(m) for m in cfg["mean"])
    if len(cfg["mean"]) != cfg["channels"]:
      raise ValueError(f"EDSR mean {cfg['mean']} must have {cfg['channels']} entries"
                       " (one per channel).")
  return EDSR(**cfg)
