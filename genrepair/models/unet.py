"""U-Net for inpainting and non-blind deblurring (Ronneberger, Fischer & Brox, MICCAI 2015).

"U-Net: Convolutional Networks for Biomedical Image Segmentation", Sec. 2, Fig. 1, adapted
to image restoration:

- **Contracting path**: ``depth`` levels of two 3x3 conv + ReLU, then 2x2 max pooling
  (stride 2); the width doubles at each level (``features * 2^i``), and a bottleneck
  level of width ``features * 2^depth``.
- **Expanding path**: per level, a 2x2 "up-convolution" (transposed conv, stride 2)
  halving the width, **concatenation** with the contracting path's feature map at that
  resolution (the skip connection), and two 3x3 conv + ReLU; a final 1x1 conv to the
  ``channels`` output image (linear: a regression output, not the paper's softmax).
- ``skips=False`` and ``upsample='nearest'|'bilinear'`` (fixed upsampling, no learned
  up-convolution) turn it into the plain encoder-decoder of :mod:`genrepair.models.encdec`
  through the same code, so the baseline differs from the U-Net only in those two choices.
- Adaptations: zero 'SAME' padding in every conv (the paper uses unpadded convs and crops
  the skip maps; 'SAME' keeps the output the size of the input, which restoration needs);
  optional BatchNorm (``batch_norm``; off by default, as in the paper); He-normal init
  (Sec. 3: "Gaussian distribution with a standard deviation of sqrt(2/N)").

**Any height and width**: inputs are reflect-padded at the bottom/right to multiples of
``2^depth`` and the output is cropped back to ``[B, H, W, channels]``
(:func:`genrepair.models.layers.pad_to_multiple`). No ``ValueError`` for odd sizes; H or
W of 1 that needs padding raises one.

Inputs (flax infers the input width from the first call):

- **inpainting**: ``Cin = channels + 1``: the masked image (holes set to 0) concatenated
  with the mask channel (1 = hole); output the full ``channels`` image (keeping the known
  pixels is the caller's choice).
- **non-blind deblurring**: ``Cin = channels``: the blurred (noisy) image; with
  ``residual=True`` the output is ``x[..., :channels] + unet(x)`` (global residual: the
  network predicts the correction to the blurred image).

Variants (``Model(variant=...)``; ``channels`` default 3), parameter counts (no BatchNorm):

| variant | Cin -> C | features | depth | residual | params |
|---|---|---|---|---|---|
| ``inpaint`` (default) | 4 -> 3 | 32 | 4 | no | 7,760,451 |
| ``deblur`` | 3 -> 3 | 32 | 4 | yes | 7,760,163 |
| ``inpaint``, ``channels=1`` | 2 -> 1 | 32 | 4 | no | 7,759,809 |
| ``deblur``, ``channels=1`` | 1 -> 1 | 32 | 4 | yes | 7,759,521 |
| ``paper`` (Fig. 1 widths, 2 classes out) | 1 -> 2 | 64 | 4 | no | 31,030,658 |

Counted with ``block(a, b) = 9ab + b + 9bb + b`` (two 3x3 convs):
``sum_i block(c_i, F 2^i)`` down (``c_0 = Cin``), ``block(F 2^(D-1), F 2^D)`` bottleneck,
``sum_i [4 * F 2^(i+1) * F 2^i + F 2^i] + block(2 F 2^i, F 2^i)`` up, ``F*C + C`` out.
The paper quotes no count; ``paper`` is the widely cited "31.0M" U-Net (the count is the
same with unpadded convs). ``tests/test_sr_models.py`` pins these counts.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import layers
from genrepair.models import variants as variant_table

UPSAMPLING = ("transpose", "nearest", "bilinear")

VARIANTS = {
    "inpaint": dict(features=32, depth=4, residual=False),
    "deblur": dict(features=32, depth=4, residual=True),
    "paper": dict(features=64, depth=4, residual=False, channels=2),
}


def upsample2x(x: jax.Array, method: str) -> jax.Array:
  """``[B, H, W, C] -> [B, 2H, 2W, C]`` by pixel repetition or bilinear interpolation."""
  if method == "nearest":
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear", antialias=False)


def _check(name: str, depth: int, upsample: str) -> None:
  if depth < 1 or upsample not in UPSAMPLING:
    raise ValueError(f"{name} needs depth >= 1 and upsample in {UPSAMPLING}, got"
                     f" depth={depth}, upsample={upsample!r}.")


class UNet(nn.Module):
  """U-Net image-to-image network with concatenation skips.

  Attributes:
    channels: output image channels (1 or 3).
    features: width of the first level (doubles per level).
    depth: number of 2x poolings (>= 1); H, W are padded to multiples of ``2^depth``.
    residual: add the input's first ``channels`` channels to the output.
    batch_norm: BatchNorm after every 3x3 conv (not in the paper).
    skips: concatenate the contracting path's maps in the expanding path (the U-Net).
    upsample: ``'transpose'`` (2x2 stride-2 up-convolution to half the width, the paper),
      ``'nearest'`` (pixel repetition) or ``'bilinear'`` (``jax.image.resize``, half-pixel
      centres as PyTorch ``align_corners=False``); the last two keep the width.
    sr_input: ``None``: not a super-resolution model (class constant).
  """
  channels: int = 3
  features: int = 32
  depth: int = 4
  residual: bool = False
  batch_norm: bool = False
  skips: bool = True
  upsample: str = "transpose"
  sr_input: ClassVar[str | None] = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Restores images.

    Args:
      x: float32 ``[B, H, W, Cin]`` in ``[0, 1]``, any H, W >= 2 (``Cin = channels + 1``
        for inpainting, ``channels`` for deblurring).
      train: BatchNorm uses batch statistics if True; ignored without BatchNorm.

    Returns:
      float32 ``[B, H, W, channels]``, not clipped.

    Raises:
      ValueError: ``depth < 1``, unknown ``upsample``; ``x`` not 4-D, or with fewer than
        ``channels`` channels when ``residual``; H or W of 1 that needs padding.
    """
    name = type(self).__name__
    _check(name, self.depth, self.upsample)
    if x.ndim != 4 or (self.residual and x.shape[-1] < self.channels):
      raise ValueError(f"{name} expects [B, H, W, Cin] images (Cin >= {self.channels} with"
                       f" residual), got shape {tuple(x.shape)}.")
    inp = x
    x, (h, w) = layers.pad_to_multiple(x, 2 ** self.depth)  # [B, H', W', Cin]
    skips = []
    for i in range(self.depth):
      x = layers.ConvBlock(self.features * 2 ** i, self.batch_norm, name=f"down{i}")(
          x, train=train)                                     # [B, H'/2^i, W'/2^i, F 2^i]
      skips.append(x if self.skips else None)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))              # [B, H'/2^(i+1), ..., F 2^i]
    x = layers.ConvBlock(self.features * 2 ** self.depth, self.batch_norm,
                         name="bottleneck")(x, train=train)   # [B, H'/2^D, W'/2^D, F 2^D]
    for i in reversed(range(self.depth)):
      f = self.features * 2 ** i
      if self.upsample == "transpose":
        x = conv.ConvTranspose(f, (2, 2), strides=(2, 2), kernel_init=layers.HE_INIT,
                               name=f"upconv{i}")(x)          # [B, H'/2^i, W'/2^i, F 2^i]
      else:
        x = upsample2x(x, self.upsample)                      # [B, H'/2^i, W'/2^i, F 2^(i+1)]
      if self.skips:
        x = jnp.concatenate([skips[i], x], axis=-1)           # [..., F 2^i + width of x]
      x = layers.ConvBlock(f, self.batch_norm, name=f"up{i}")(
          x, train=train)                                     # [..., F 2^i]
    y = conv.Conv(self.channels, (1, 1), kernel_init=layers.HE_INIT, name="out")(x)
    y = y[:, :h, :w]                                          # [B, H, W, channels]
    if self.residual:
      y = y + inp[..., :self.channels]
    return y

  def restore(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Restoration interface: same as ``__call__``."""
    return self(x, train=train)


def build(cls: type[UNet], variants: dict[str, dict], default: str,
          variant: str | None, kw: dict) -> UNet:
  """Shared ``Model`` factory of :mod:`unet` and :mod:`genrepair.models.encdec`.

  Raises:
    ValueError: unknown variant or option, ``depth < 1``, unknown upsampling.
  """
  name = cls.__name__
  fields = ("channels", "features", "depth", "residual", "batch_norm", "skips", "upsample")
  cfg = variant_table.resolve(name, variants, variant, default=default,
                              defaults={f: getattr(cls, f) for f in fields},  # class defaults
                              overrides=kw)
  _check(name, cfg["depth"], cfg["upsample"])
  return cls(**cfg)


def Model(*, variant: str | None = None, **kw) -> UNet:  # pylint: disable=invalid-name
  """Builds a U-Net.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'inpaint'``); ``**kw`` overrides its
      fields or sets ``channels`` / ``batch_norm`` / ``skips`` / ``upsample``.

  Returns:
    An unbound :class:`UNet`.

  Raises:
    ValueError: unknown variant or option, ``depth < 1``, unknown upsampling.
  """
  return build(UNet, VARIANTS, "inpaint", variant, kw)
