"""Layers shared by several model families.

- :func:`pixel_shuffle` / :func:`pixel_unshuffle`: the sub-pixel convolution rearrangement
  (depth-to-space) of Shi et al., "Real-Time Single Image and Video Super-Resolution Using
  an Efficient Sub-Pixel Convolutional Neural Network" (CVPR 2016), Sec. 2.2, Eq. 4, in
  **PyTorch's** ``nn.PixelShuffle`` channel order, so that published PyTorch weights (EDSR,
  ESPCN ports) load without permuting their last convolution's output channels.
- :func:`pad_to_multiple`: reflect padding so that encoder-decoders with ``depth`` 2x
  poolings accept any height and width (the caller crops back with ``y[:, :H, :W]``).
- :class:`ConvBlock`: two 3x3 conv (+ optional BatchNorm) + ReLU layers, the unit of the
  U-Net (Ronneberger et al. 2015, Sec. 2) and of the plain encoder-decoder baseline.

Channel order (NHWC, upscale factor ``r``)::

    out[b, h*r + i, w*r + j, c] = in[b, h, w, c*r*r + i*r + j]

i.e. each output channel ``c`` owns the ``r*r`` consecutive input channels
``c*r*r .. c*r*r + r*r - 1``, in row-major ``(i, j)`` order (PyTorch's
``PixelShuffle`` on NCHW, transposed to NHWC). TensorFlow's ``tf.nn.depth_to_space``
uses the other order, ``in[b, h, w, (i*r + j)*C + c]`` (the colour channel fastest, as
in the paper's Eq. 4 up to which of x, y varies faster); weights from TF need their last
conv's output channels permuted. For training from scratch the order is immaterial (a
fixed permutation of the last conv's output channels).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv

# Ronneberger et al. 2015, Sec. 3: "a Gaussian distribution with a standard deviation of
# sqrt(2/N)", N = fan-in (plain, not truncated, unlike Flax's he_normal).
HE_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """Rearranges channels into space: ``[B, H, W, C*r*r] -> [B, H*r, W*r, C]``.

  Args:
    x: ``[B, H, W, C*r*r]`` array, any dtype.
    r: upscale factor, >= 1.

  Returns:
    ``[B, H*r, W*r, C]`` array with ``out[b, h*r+i, w*r+j, c] = x[b, h, w, c*r*r + i*r + j]``
    (PyTorch ``nn.PixelShuffle`` order).

  Raises:
    ValueError: ``x`` is not 4-D, ``r < 1``, or the channel count is not a multiple of
      ``r*r``.
  """
  if r < 1:
    raise ValueError(f"pixel_shuffle: upscale factor must be >= 1, got {r}.")
  if x.ndim != 4 or x.shape[-1] % (r * r):
    raise ValueError(f"pixel_shuffle: expected [B, H, W, C*{r * r}], got shape"
                     f" {tuple(x.shape)}.")
  b, h, w, crr = x.shape
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r)        # [B, H, W, C, i, j]
  x = x.transpose(0, 1, 4, 2, 5, 3)      # [B, H, i, W, j, C]
  return x.reshape(b, h * r, w * r, c)   # [B, H*r, W*r, C]


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
  """Inverse of :func:`pixel_shuffle`: ``[B, H*r, W*r, C] -> [B, H, W, C*r*r]``.

  Args:
    x: ``[B, H*r, W*r, C]`` array.
    r: downscale factor, >= 1.

  Returns:
    ``[B, H, W, C*r*r]`` array (PyTorch ``nn.PixelUnshuffle`` order).

  Raises:
    ValueError: ``x`` is not 4-D, ``r < 1``, or H, W are not multiples of ``r``.
  """
  if r < 1:
    raise ValueError(f"pixel_unshuffle: downscale factor must be >= 1, got {r}.")
  if x.ndim != 4 or x.shape[1] % r or x.shape[2] % r:
    raise ValueError(f"pixel_unshuffle: expected [B, H, W, C] with H, W multiples of {r},"
                     f" got shape {tuple(x.shape)}.")
  b, hr, wr, c = x.shape
  x = x.reshape(b, hr // r, r, wr // r, r, c)  # [B, H, i, W, j, C]
  x = x.transpose(0, 1, 3, 5, 2, 4)            # [B, H, W, C, i, j]
  return x.reshape(b, hr // r, wr // r, c * r * r)


def pad_to_multiple(x: jax.Array, multiple: int) -> tuple[jax.Array, tuple[int, int]]:
  """Reflect-pads H and W at the bottom/right up to multiples of ``multiple``.

  Reflection (``numpy.pad`` mode ``'reflect'``, mirrored without repeating the edge
  pixel; repeated for pads longer than the image) continues the image statistics, so the
  padded border does not look like a dark edge to the network as zeros would.

  Args:
    x: ``[B, H, W, C]`` array.
    multiple: e.g. ``2**depth`` for ``depth`` 2x poolings.

  Returns:
    ``(padded [B, H', W', C], (H, W))`` with ``H' = ceil(H / multiple) * multiple`` (same
    for W); crop back with ``y[:, :H, :W]``.

  Raises:
    ValueError: ``x`` is not 4-D, or H or W is 1 (nothing to reflect) while padding is
      needed.
  """
  if x.ndim != 4:
    raise ValueError(f"Expected [B, H, W, C] images, got shape {tuple(x.shape)}.")
  h, w = x.shape[1], x.shape[2]
  ph, pw = -h % multiple, -w % multiple
  if (ph and h < 2) or (pw and w < 2):
    raise ValueError(f"Cannot reflect-pad an image of shape {tuple(x.shape)} to a multiple"
                     f" of {multiple}: H and W must be >= 2.")
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
  return x, (h, w)


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, each followed by [BatchNorm] and ReLU; zero 'SAME' padding.

  Attributes:
    features: output width of both convolutions.
    batch_norm: BatchNorm after each conv (and no conv bias) if True.
  """
  features: int
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, Cin] -> [B, H, W, features]``; ``train`` selects BN batch statistics."""
    for i in range(2):
      x = conv.Conv(self.features, (3, 3), padding="SAME", use_bias=not self.batch_norm,
                    kernel_init=HE_INIT, name=f"conv{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         name=f"bn{i}")(x)
      x = nn.relu(x)
    return x
