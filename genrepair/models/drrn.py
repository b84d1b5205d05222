"""DRRN: deep recursive residual network for SR (Tai, Yang & Liu, CVPR 2017).

"Image Super-Resolution via Deep Recursive Residual Network", Sec. 3, following
the authors' Caffe definition (github.com/tyshiwo/DRRN_CVPR17,
``caffe_files/DRRN_B1U9_20C128/DRRN_B1U9_20C128_train.prototxt``). Like SRCNN/VDSR, the
input is the **bicubic-upscaled** low-resolution image (``sr_input = 'bicubic'``), on the
luminance channel (``channels=1``); one model serves x2, x3 and x4 (trained on a mix of
the three scales, the prototxt's ``train_31_x234`` data), so ``scale`` only tells the task
which degradation to apply.

Every convolution is 3x3 with 128 filters and is **pre-activated**: BN -> ReLU -> conv
(after He et al.'s identity mappings), including the first one, which sees the image.
The network has ``B`` recursive blocks; block ``b``:

    H_0 = conv_in_b(relu(bn(H_prev)))              # one conv, own weights
    H_u = H_0 + conv_b_b(relu(bn(conv_a_b(relu(bn(H_{u-1}))))))   for u = 1 .. U

**Multi-path local residual learning**: every residual unit adds the block's ``H_0``
(not ``H_{u-1}``); **recursive learning**: the ``U`` units of a block share ``conv_a_b``
and ``conv_b_b`` (weights and biases; named ``RB1_wa``/``RB1_ba``/``RB1_wb``/``RB1_bb`` in
the prototxt). The BatchNorm layers (with their scale/shift) are *not* shared: the
prototxt gives every application its own (``bn_conv1_1a`` ... ``bn_conv1_9b``). The
reconstruction conv ``128 -> C`` is followed by the **global residual** ``y = x + f(x)``
(the ``HR_recovery`` eltwise sum). Depth (convs on the input-output path):
``d = (1 + 2U) B + 1`` (Sec. 3) — 20 for B1U9, 52 for B1U25.

Initialisation: He et al. ("msra" filler: Gaussian, std ``sqrt(2 / fan_in)``) for the
weights, zero biases (the prototxt); BatchNorm epsilon 1e-5 (Caffe's default). Momentum
0.9 (Flax convention, PyTorch 0.1):
Caffe's moving average (fraction 0.999) is normalised by its accumulated weight, i.e. not
biased toward the initial statistics; a plain 0.999 exponential average would be for
thousands of steps, so we take the common 0.9.

Variants (``Model(variant=...)``), parameter counts for ``channels=1``, 128 filters
(``params`` collection; ``batch_stats`` holds the same number of running means/variances as
there are BN scales/shifts):

| variant | B | U | d | conv weights | + biases | + BN scale/shift = params | batch_stats |
|---|---|---|---|---|---|---|---|
| ``B1U9`` (default; VDSR's depth) | 1 | 9 | 20 | 297,216 | 297,601 | 302,467 | 4,866 |
| ``B1U25`` (the paper's final model) | 1 | 25 | 52 | 297,216 | 297,601 | 310,659 | 13,058 |

The paper's "297K" parameters for both (its parameter comparison with VDSR, DRCN, RED30)
are the conv weights:
``9*(C*128 + 2*128*128 + 128*C) = 297,216`` for C = 1 — independent of ``U`` because the
units share weights. Biases add ``128 + 2*128 + C``; BatchNorm adds ``2*C`` (the first,
on the image), ``2 * 2*128`` per residual unit and ``2*128`` before the last conv.
For ``B > 1``, each further block adds ``9*128*128 + 128`` (its ``conv_in``) plus its own
shared pair. ``tests/test_sr_models.py`` pins these counts.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from genrepair.models import conv
from genrepair.models import variants

# Prototxt: weight_filler "msra" (Caffe's MSRAFiller: Gaussian, std sqrt(2 / fan_in), not
# truncated), bias_filler constant 0.
_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

VARIANTS = {
    "B1U9": dict(num_blocks=1, num_units=9),
    "B1U25": dict(num_blocks=1, num_units=25),
}


def depth(num_blocks: int, num_units: int) -> int:
  """Convolutions on the input-output path, ``d = (1 + 2U) B + 1`` (Sec. 3)."""
  return (1 + 2 * num_units) * num_blocks + 1


class DRRN(nn.Module):
  """DRRN mapping a bicubic-upscaled image to the super-resolved image.

  Attributes:
    scale: SR factor of the degradation the task applies (the network is
      scale-agnostic; it does not change parameters or shapes).
    channels: image channels (1 = Y channel, as in the paper).
    num_blocks: recursive blocks ``B`` (>= 1).
    num_units: residual units ``U`` per block (>= 1), sharing one pair of convs.
    features: filters per conv (128 in the paper).
    batch_norm: pre-activation BN (the paper's form) if True; ReLU -> conv only if False
      (the form of several re-implementations).
    sr_input: ``'bicubic'``: the model takes the bicubic-upscaled image (class constant).
  """
  scale: int = 3
  channels: int = 1
  num_blocks: int = 1
  num_units: int = 9
  features: int = 128
  batch_norm: bool = True
  sr_input: ClassVar[str] = "bicubic"

  def _pre_act(self, x: jax.Array, name: str, train: bool) -> jax.Array:
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       name=name)(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Super-resolves bicubic-upscaled images.

    Args:
      x: float32 ``[B, H, W, channels]``, the bicubic-upscaled low-resolution image in
        ``[0, 1]``.
      train: BatchNorm uses batch statistics (and updates ``batch_stats``) if True;
        ignored when ``batch_norm`` is False.

    Returns:
      float32 ``[B, H, W, channels]`` = ``x + residual``, not clipped.

    Raises:
      ValueError: ``num_blocks`` or ``num_units`` < 1, or ``x`` not
        ``[B, H, W, channels]``.
    """
    if self.num_blocks < 1 or self.num_units < 1:
      raise ValueError(f"DRRN needs num_blocks >= 1 and num_units >= 1, got"
                       f" B={self.num_blocks}, U={self.num_units}.")
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"DRRN expects [B, H, W, {self.channels}] images, got shape"
                       f" {tuple(x.shape)}.")

    def conv3x3(n: int, name: str) -> conv.Conv:
      return conv.Conv(n, (3, 3), padding="SAME", kernel_init=_INIT, name=name)

    h = x  # [B, H, W, C]
    for b in range(self.num_blocks):
      # H_0 of block b: [B, H, W, C or F] -> [B, H, W, F], own weights.
      h0 = conv3x3(self.features, f"block{b}_conv_in")(
          self._pre_act(h, f"block{b}_bn_in", train))
      # One pair of convs per block, applied U times (recursive learning).
      conv_a = conv3x3(self.features, f"block{b}_conv_a")
      conv_b = conv3x3(self.features, f"block{b}_conv_b")
      h = h0
      for u in range(self.num_units):
        t = conv_a(self._pre_act(h, f"block{b}_unit{u}_bn_a", train))
        t = conv_b(self._pre_act(t, f"block{b}_unit{u}_bn_b", train))
        h = h0 + t  # multi-path: the identity is H_0, not H_{u-1}
    r = conv3x3(self.channels, "conv_end")(self._pre_act(h, "bn_end", train))  # [B, H, W, C]
    return x + r  # global residual (HR_recovery)

  def restore(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Restoration interface: same as ``__call__``."""
    return self(x, train=train)


def Model(*, variant: str | None = None, **kw) -> DRRN:  # pylint: disable=invalid-name
  """Builds a DRRN.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'B1U9'``); ``**kw`` overrides its fields
      or sets ``scale`` / ``channels`` / ``features`` / ``batch_norm``.

  Returns:
    An unbound :class:`DRRN`.

  Raises:
    ValueError: unknown variant or option, ``num_blocks`` or ``num_units`` < 1.
  """
  cfg = variants.resolve("DRRN", VARIANTS, variant, default="B1U9",
                         defaults=dict(scale=3, channels=1, features=128, batch_norm=True), overrides=kw)
  if cfg["num_blocks"] < 1 or cfg["num_units"] < 1:
    raise ValueError(f"DRRN needs num_blocks >= 1 and num_units >= 1, got"
                     f" B={cfg['num_blocks']}, U={cfg['num_units']}.")
  return DRRN(**cfg)
