"""ESPCN: efficient sub-pixel convolutional network (Shi et al., CVPR 2016).

"Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", Sec. 2.1-2.2 and 3.2: the network works on the
**low-resolution** image (no bicubic pre-upscaling, ``sr_input = 'lr'``) with ``l = 3``
layers, ``(f1, n1) = (5, 64)``, ``(f2, n2) = (3, 32)``, ``f3 = 3``; the last layer outputs
``C * r^2`` channels that the periodic shuffling operator PS (Eq. 4, the "sub-pixel
convolution layer") rearranges into the ``[rH, rW, C]`` image. The paper uses **tanh**
after the first two layers ("tanh instead of relu as the activation function for the final
model motivated by our experimental results", Sec. 3.2); ``activation='relu'`` gives the
common ReLU variant (e.g. the PyTorch ``examples/super_resolution`` port). The last layer
is linear. Like SRCNN, the paper super-resolves the luminance channel (``channels=1``).

Differences from the paper, by choice: every conv uses zero ``'SAME'`` padding so the
output is exactly ``[B, rH, rW, C]`` (the paper trains on valid-conv sub-images);
weights use Flax's default LeCun-normal initialisation (the paper does not state one;
LeCun/Glorot scaling suits tanh), biases zero. PS follows PyTorch's channel order
(:func:`genrepair.models.layers.pixel_shuffle`).

Variants (``Model(variant=...)``; ``scale`` given as a keyword overrides the variant's),
parameter counts (conv weights + biases):

| variant | scale ``r`` | last conv | params (1 ch) | params (3 ch) |
|---|---|---|---|---|
| ``x2`` | 2 | 3x3x32 -> 4C | 21,284 | 26,796 |
| ``x3`` (default; the paper's main setting) | 3 | 3x3x32 -> 9C | 22,729 | 31,131 |
| ``x4`` | 4 | 3x3x32 -> 16C | 24,752 | 37,200 |

Counted as ``25*C*64 + 64 + 9*64*32 + 32 + 9*32*C*r^2 + C*r^2`` (x3, C=1: 1,664 + 18,464 +
2,601 = 22,729). The paper gives no exact count; its layer sizes determine this one.
``tests/test_sr_models.py`` pins these counts.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from genrepair.models import conv
from genrepair.models import layers
from genrepair.models import variants

VARIANTS = {
    "x2": dict(scale=2),
    "x3": dict(scale=3),
    "x4": dict(scale=4),
}

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class ESPCN(nn.Module):
  """ESPCN mapping a low-resolution image to its ``scale``-times larger estimate.

  Attributes:
    scale: upscale factor ``r`` (>= 1).
    channels: image channels (1 = Y channel as in the paper, or 3).
    features: ``(n1, n2)``, widths of the two hidden layers ((64, 32) in the paper).
    kernel_sizes: ``(f1, f2, f3)``, odd conv sizes ((5, 3, 3) in the paper).
    activation: ``'tanh'`` (the paper's final model) or ``'relu'``.
    sr_input: ``'lr'``: the model takes the low-resolution image (class constant).
  """
  scale: int = 3
  channels: int = 1
  features: tuple[int, int] = (64, 32)
  kernel_sizes: tuple[int, int, int] = (5, 3, 3)
  activation: str = "tanh"
  sr_input: ClassVar[str] = "lr"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Super-resolves low-resolution images.

    Args:
      x: float32 ``[B, H, W, channels]`` low-resolution images in ``[0, 1]``.
      train: unused (no BatchNorm or dropout); accepted for the restoration interface.

    Returns:
      float32 ``[B, H*scale, W*scale, channels]``, not clipped.

    Raises:
      ValueError: unknown activation, even kernel size, ``scale < 1`` or ``x`` not
        ``[B, H, W, channels]``.
    """
    del train
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"ESPCN activation must be one of {sorted(ACTIVATIONS)}, got"
                       f" {self.activation!r}.")
    if self.scale < 1 or any(k % 2 == 0 for k in self.kernel_sizes):
      raise ValueError(f"ESPCN needs scale >= 1 and odd kernel sizes, got scale={self.scale},"
                       f" kernel_sizes={self.kernel_sizes}.")
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"ESPCN expects [B, H, W, {self.channels}] images, got shape"
                       f" {tuple(x.shape)}.")
    act = ACTIVATIONS[self.activation]
    f1, f2, f3 = self.kernel_sizes
    n1, n2 = self.features
    r = self.scale
    x = act(conv.Conv(n1, (f1, f1), padding="SAME", name="conv1")(x))  # [B, H, W, n1]
    x = act(conv.Conv(n2, (f2, f2), padding="SAME", name="conv2")(x))  # [B, H, W, n2]
    # [B, H, W, n2] -> [B, H, W, C r^2]
    x = conv.Conv(self.channels * r * r, (f3, f3), padding="SAME", name="conv3")(x)
    return layers.pixel_shuffle(x, r)  # [B, rH, rW, C] (Eq. 4, periodic shuffling)

  def restore(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Restoration interface: same as ``__call__``."""
    return self(x, train=train)


def Model(*, variant: str | None = None, **kw) -> ESPCN:  # pylint: disable=invalid-name
  """Builds an ESPCN.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'x3'``); ``**kw`` overrides ``scale`` or
      sets ``channels`` / ``features`` / ``kernel_sizes`` / ``activation``.

  Returns:
    An unbound :class:`ESPCN`.

  Raises:
    ValueError: unknown variant, option or activation, ``scale < 1``, bad kernel sizes.
  """
  cfg = variants.resolve("ESPCN", VARIANTS, variant, default="x3",
                         defaults=dict(channels=1, features=(64, 32), kernel_sizes=(5, 3, 3), activation="tanh"), overrides=kw)
  cfg["features"] = tuple(cfg["features"])
  cfg["kernel_sizes"] = tuple(cfg["kernel_sizes"])
  if cfg["activation"] not in ACTIVATIONS:
    raise ValueError(f"ESPCN activation must be one of {sorted(ACTIVATIONS)}, got"
                     f" {cfg['activation']!r}.")
  if int(cfg["scale"]) < 1:
    raise ValueError(f"ESPCN scale must be >= 1, got {cfg['scale']}.")
  if len(cfg["kernel_sizes"]) != 3 or any(k % 2 == 0 for k in cfg["kernel_sizes"]):
    raise ValueError(f"ESPCN kernel_sizes must be three odd sizes, got"
                     f" {cfg['kernel_sizes']}.")
  return ESPCN(**cfg)
