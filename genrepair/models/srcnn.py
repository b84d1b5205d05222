"""SRCNN: three-layer super-resolution CNN (Dong, Loy, He & Tang, ECCV 2014 / TPAMI 2016).

"Image Super-Resolution Using Deep Convolutional Networks", Sec. 3.1: the low-resolution
image is first upscaled to the target size with bicubic interpolation; the network then maps
that image ``Y`` to the high-resolution estimate with patch extraction (``f1 x f1`` conv,
``n1`` filters, ReLU), non-linear mapping (``f2 x f2`` conv, ``n2`` filters, ReLU) and
reconstruction (``f3 x f3`` conv, linear). The paper works on the luminance channel only
(``channels=1``); Sec. 4.4 also trains 3-channel RGB models.

Padding (attribute ``padding``):

- ``'EDGE'`` (default): every layer pads its input by replicating border pixels, then
  applies a valid correlation. This is what the authors' MATLAB test code does
  (``imfilter(..., 'same', 'replicate')`` per layer, ``SRCNN.m``) and hence what the
  published numbers (Set5 x4 30.49 dB) were measured with.
- ``'SAME'``: zero padding per layer (the usual framework default); differs from ``'EDGE'``
  only within ``(f1 + f2 + f3 - 3) / 2`` pixels of the border, but there a lot for the
  published weights: inputs are Y values >= 16/255, so zeros look like a strong edge
  (Set5 x4 with the 9-5-5 weights: 23.30 dB instead of 30.48 dB, since the 4-pixel border
  shave is narrower than the 8-pixel receptive-field radius).
- ``'VALID'``: no padding, as in the paper's training (33x33 sub-images -> 21x21 outputs for
  9-1-5); the output shrinks by ``f1 + f2 + f3 - 3`` pixels in each dimension.

Variants (``Model(variant=...)``; name = ``f1-f2-f3``; ``n1 = 64``, ``n2 = 32``), parameter
counts for ``channels=1`` (conv weights + biases):

| variant | kernels | params (1 ch) | params (3 ch) |
|---|---|---|---|
| ``9-1-5`` (default; ECCV 2014 / TPAMI base) | 9, 1, 5 | 8,129 | 20,099 |
| ``9-3-5`` (TPAMI, filter-size study) | 9, 3, 5 | 24,513 | 36,483 |
| ``9-5-5`` (TPAMI, the released ImageNet x2/x3/x4 models) | 9, 5, 5 | 57,281 | 69,251 |

Counted as ``f1^2*C*n1 + n1 + f2^2*n1*n2 + n2 + f3^2*n2*C + C`` (9-1-5, C=1:
5,184 + 64 + 2,048 + 32 + 800 + 1 = 8,129; the ECCV paper's "8,032 parameters" are the
weights without the 97 biases); ``tests/test_restoration_models.py`` pins these counts.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from genrepair.models import conv
from genrepair.models import variants

# Weight initialisers (biases zero). 'paper': Sec. 4.1 (TPAMI), N(0, 0.001), made for
# plain SGD with lr 1e-4. 'he': He et al. 2015 (normal, fan-in), for Adam: Adam's steps
# are about lr in size whatever the gradient's scale, so at lr 1e-3 its first steps are as
# large as N(0, 0.001) weights and leave most ReLUs dead (measured: 37 of 64 conv1 and 24
# of 32 conv2 units never active on T91 patches after the runs of experiments/README.md).
INITS = {"paper": nn.initializers.normal(stddev=0.001), "he": nn.initializers.he_normal()}

VARIANTS = {
    "9-1-5": dict(kernel_sizes=(9, 1, 5)),
    "9-3-5": dict(kernel_sizes=(9, 3, 5)),
    "9-5-5": dict(kernel_sizes=(9, 5, 5)),
}

PADDINGS = ("EDGE", "SAME", "VALID")


def edge_pad(x: jax.Array, p: int) -> jax.Array:
  """Replicates border pixels: ``[B, H, W, C] -> [B, H + 2p, W + 2p, C]``.

  Equal to ``jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")``, written as
  broadcast edge rows/columns concatenated to ``x``, whose gradient (slices and sums)
  XLA:CPU computes faster: SRCNN's train step, batch 64, 132 -> 112 ms fwd+bwd (load ~4).
  """
  if p == 0:
    return x
  for axis in (1, 2):
    first = lax.slice_in_dim(x, 0, 1, axis=axis)
    last = lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
    reps = [1] * x.ndim
    reps[axis] = p
    x = jnp.concatenate([jnp.tile(first, reps), x, jnp.tile(last, reps)], axis=axis)
  return x


class SRCNN(nn.Module):
  """SRCNN mapping a bicubic-upscaled image to the super-resolved image.

  Attributes:
    kernel_sizes: ``(f1, f2, f3)``, odd spatial sizes of the three convolutions.
    features: ``(n1, n2)``, widths of the first two layers (64, 32 in the paper).
    channels: image channels (1 = Y channel, as in the paper).
    padding: ``'EDGE'`` (replicate, the reference MATLAB code), ``'SAME'`` (zeros) or
      ``'VALID'`` (none; output smaller by ``f1 + f2 + f3 - 3``).
    weight_init: weight initialiser, a key of :data:`INITS` (``'paper'`` N(0, 0.001)
      or ``'he'``).
  """
  kernel_sizes: tuple[int, int, int] = (9, 1, 5)
  features: tuple[int, int] = (64, 32)
  channels: int = 1
  padding: str = "EDGE"
  weight_init: str = "paper"

  # Restoration interface: SRCNN restores the bicubic-upscaled low-resolution image.
  sr_input = "bicubic"

  def _conv(self, x: jax.Array, width: int, size: int, name: str) -> jax.Array:
    if self.padding == "EDGE":
      p = size // 2
      # [B, H, W, C] -> [B, H + 2p, W + 2p, C]; the valid conv below brings it back.
      x = edge_pad(x, p)
    pad = "SAME" if self.padding == "SAME" else "VALID"
    return conv.Conv(width, (size, size), padding=pad, kernel_init=INITS[self.weight_init],
                     name=name)(x)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Super-resolves bicubic-upscaled images.

    Args:
      x: float32 ``[B, H, W, channels]``, the bicubic-upscaled low-resolution image in
        ``[0, 1]`` (for the published weights: the Y channel of MATLAB ``rgb2ycbcr``,
        i.e. values in ``[16, 235] / 255``).
      train: unused (no BatchNorm or dropout); accepted so restoration tasks can call
        every model the same way.

    Returns:
      float32 ``[B, H, W, channels]`` (``[B, H - s, W - s, channels]`` with
      ``s = f1 + f2 + f3 - 3`` for ``'VALID'``), not clipped.

    Raises:
      ValueError: bad padding or weight_init, even kernel size, or ``x`` not ``[B, H, W,
        channels]``.
    """
    del train
    if self.weight_init not in INITS:
      raise ValueError(f"SRCNN weight_init must be one of {tuple(INITS)}, got"
                       f" {self.weight_init!r}.")
    if self.padding not in PADDINGS:
      raise ValueError(f"SRCNN padding must be one of {PADDINGS}, got {self.padding!r}.")
    if any(k % 2 == 0 for k in self.kernel_sizes):
      raise ValueError(f"SRCNN kernel sizes must be odd, got {self.kernel_sizes}.")
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"SRCNN expects [B, H, W, {self.channels}] images, got shape"
                       f" {tuple(x.shape)}.")
    f1, f2, f3 = self.kernel_sizes
    n1, n2 = self.features
    x = nn.relu(self._conv(x, n1, f1, "conv1"))  # [B, H, W, n1] patch extraction
    x = nn.relu(self._conv(x, n2, f2, "conv2"))  # [B, H, W, n2] non-linear mapping
    return self._conv(x, self.channels, f3, "conv3")  # [B, H, W, C] reconstruction

  def restore(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Restoration interface: ``x`` is the bicubic upscale, the output the SR image."""
    return self(x, train=train)


def Model(*, variant: str | None = None, **kw) -> SRCNN:  # pylint: disable=invalid-name
  """Builds an SRCNN.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'9-1-5'``); ``**kw`` overrides
      ``kernel_sizes`` or sets ``features`` / ``channels`` / ``padding`` / ``weight_init``.

  Returns:
    An unbound :class:`SRCNN`.

  Raises:
    ValueError: unknown variant, option, padding mode or weight_init, or an even kernel size.
  """
  cfg = variants.resolve("SRCNN", VARIANTS, variant, default="9-1-5",
                         defaults=dict(features=(64, 32), channels=1, padding="EDGE",
                                       weight_init="paper"), overrides=kw)
  if cfg["weight_init"] not in INITS:
    raise ValueError(f"SRCNN weight_init must be one of {tuple(INITS)}, got"
                     f" {cfg['weight_init']!r}.")
  if cfg["padding"] not in PADDINGS:
    raise ValueError(f"SRCNN padding must be one of {PADDINGS}, got {cfg['padding']!r}.")
  cfg["kernel_sizes"] = tuple(cfg["kernel_sizes"])
  cfg["features"] = tuple(cfg["features"])
  if len(cfg["kernel_sizes"]) != 3 or any(k % 2 == 0 for k in cfg["kernel_sizes"]):
    raise ValueError(f"SRCNN kernel_sizes must be three odd sizes, got"
                     f" {cfg['kernel_sizes']}.")
  return SRCNN(**cfg)
