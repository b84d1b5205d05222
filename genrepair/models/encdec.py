"""Plain convolutional encoder-decoder: the restoration baseline without skip connections.

The seeds' "plain conv encoder-decoder (pool/upsample)": the U-Net of
:mod:`genrepair.models.unet` without its concatenation skips and with fixed (not learned)
upsampling — the same code (:class:`EncDec` subclasses :class:`~genrepair.models.unet.UNet`
with ``skips=False``), so comparing the two isolates what the skips buy (Ronneberger et
al. 2015 motivate them by the localisation lost in pooling; Mao, Shen & Yang, NeurIPS 2016
("RED-Net") show the same for restoration):

- **encoder**: ``depth`` levels of two 3x3 conv + ReLU (width ``features * 2^i``), each
  followed by 2x2 max pooling; a bottleneck block of width ``features * 2^depth``;
- **decoder**: per level, 2x upsampling (``'nearest'``: pixel repetition; ``'bilinear'``:
  ``jax.image.resize`` with half-pixel centres, PyTorch ``align_corners=False``) then two
  3x3 conv + ReLU of width ``features * 2^i``; a final linear 1x1 conv to ``channels``;
- optional global residual (``residual``: ``y = x[..., :channels] + f(x)``) and BatchNorm.

Any H, W: reflect padding to multiples of ``2^depth`` at the bottom/right and cropping
back, as the U-Net (:func:`genrepair.models.layers.pad_to_multiple`). Input channels are
inferred: ``channels + 1`` (image with holes at 0 + mask) for inpainting, ``channels``
otherwise. He-normal init.

Variants (``Model(variant=...)``; ``channels`` default 3), parameter counts (no BatchNorm):

| variant | features | depth | upsampling | params 3 -> 3 | params 4 -> 3 | params 1 -> 1 |
|---|---|---|---|---|---|---|
| ``small`` (default) | 32 | 3 | nearest | 1,753,411 | 1,753,699 | 1,752,769 |
| ``large`` (U-Net variants' sizes) | 32 | 4 | nearest | 7,063,363 | 7,063,651 | 7,062,721 |

Counted with ``block(a, b) = 9ab + b + 9bb + b``: ``sum_i block(c_i, F 2^i)`` down
(``c_0 = Cin``), ``block(F 2^(D-1), F 2^D)`` bottleneck, ``sum_i block(F 2^(i+1), F 2^i)``
up, ``F*C + C`` out. Upsampling has no parameters, so ``'bilinear'`` counts the same.
``tests/test_sr_models.py`` pins these counts.
"""

from __future__ import annotations

from genrepair.models import unet

VARIANTS = {
    "small": dict(features=32, depth=3, upsample="nearest"),
    "large": dict(features=32, depth=4, upsample="nearest"),
}

class EncDec(unet.UNet):
  """Conv encoder-decoder: pooling down, fixed upsampling up, no skips.

  Attributes: those of :class:`~genrepair.models.unet.UNet`, with defaults
  ``features=32, depth=3, skips=False, upsample='nearest'`` (``'bilinear'`` also allowed;
  ``'transpose'`` would make it a learned-upsampling decoder).
  """
  features: int = 32
  depth: int = 3
  skips: bool = False
  upsample: str = "nearest"


def Model(*, variant: str | None = None, **kw) -> EncDec:  # pylint: disable=invalid-name
  """Builds a plain encoder-decoder.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'small'``); ``**kw`` overrides its
      fields or sets ``channels`` / ``residual`` / ``batch_norm`` / ``upsample``.

  Returns:
    An unbound :class:`EncDec`.

  Raises:
    ValueError: unknown variant, option or upsampling method, ``depth < 1``.
  """
  return unet.build(EncDec, VARIANTS, "small", variant, kw)
