"""StyleGAN2 building blocks: FIR resampling, equalised-lr layers, modulated convolution.

Karras, Laine, Aittala, Hellsten, Lehtinen & Aila, "Analyzing and Improving the Image
Quality of StyleGAN", CVPR 2020 (StyleGAN2). Layouts are channels-last (``[B, H, W, C]``,
kernels ``[KH, KW, Cin, Cout]``).

- :func:`upfirdn2d` (zero-insertion upsampling, padding, separable FIR filtering,
  subsampling) and :func:`upsample2d` / :func:`downsample2d`
  with the paper's separable ``[1, 3, 3, 1]`` binomial filter (the paper's code, inherited
  from Karras et al. 2019 Sec. 2 / Zhang 2019's anti-aliasing). Filtering is a true
  convolution (the filter is flipped), normalised to unit DC gain times ``up**2``.
- Equalised learning rate (Karras et al. 2018, "Progressive Growing of GANs", Sec. 4.1):
  weights are *stored* as ``N(0, 1) / lr_mul`` and multiplied at run time by
  ``lr_mul / sqrt(fan_in)``, so Adam's update size is the same for every layer in the
  scaled space (:class:`EqualDense`, :class:`EqualConv`). The mapping network uses
  ``lr_mul = 0.01`` (StyleGAN Sec. 2 / App. C). Biases are stored as given and multiplied
  by ``lr_mul``.
- :class:`ModulatedConv`: StyleGAN2 Sec. 2.2, Eq. 1-3: ``w'_ijk = s_i w_ijk`` (Eq. 1),
  ``w''_ijk = w'_ijk / sqrt(sum_{i,k} w'_ijk^2 + eps)`` (Eq. 3; Eq. 2 is the std of the
  outputs that this divides out). Computed in the paper code's "non-fused" form, which is
  exactly equal: scale the input activations by ``s``, convolve with the shared weight,
  scale the outputs by the per-sample demodulation coefficients; one batched convolution
  instead of ``B`` grouped ones. :func:`modulated_weights` gives the explicit per-sample
  weights of Eq. 1-3 (used by the tests).
- :func:`minibatch_stddev`: the minibatch standard-deviation layer (Karras et al. 2018,
  Sec. 3; StyleGAN2 uses group size 4 and one feature).

Activations: leaky ReLU 0.2 multiplied by ``sqrt(2)`` (:func:`lrelu`), the paper code's
gain that keeps unit-variance signals with N(0, 1) inputs.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


FIR_TAPS = (1, 3, 3, 1)
_NHWC = ("NHWC", "HWIO", "NHWC")


def lrelu(x: jax.Array) -> jax.Array:
  """``sqrt(2) * leaky_relu(x, 0.2)``: float array of any shape, same shape out."""
  return nn.leaky_relu(x, negative_slope=0.2) * math.sqrt(2.0)


def fir_filter(taps: Sequence[float] = FIR_TAPS) -> np.ndarray:
  """Separable 2-D FIR filter ``outer(k, k) / sum(k)^2``: float32 ``[K, K]``, sum 1."""
  k = np.asarray(taps, np.float64)
  if k.ndim != 1 or k.size < 1 or k.sum() == 0:
    raise ValueError(f"fir_filter: taps must be a non-empty 1-D sequence with a non-zero"
                     f" sum, got {taps}.")
  f = np.outer(k, k)
  return (f / f.sum()).astype(np.float32)


def _fir_axis(x: jax.Array, k: np.ndarray, axis: int, up: int, down: int,
              pad: tuple[int, int]) -> jax.Array:
  """upfirdn along one axis with 1-D taps ``k`` (already normalised and gained)."""
  n = x.shape[axis]
  if up > 1:  # zero insertion: [..., n, ...] -> [..., n * up, ...]
    x = jnp.stack([x] + [jnp.zeros_like(x)] * (up - 1), axis=axis + 1)
    x = x.reshape(x.shape[:axis] + (n * up,) + x.shape[axis + 2:])
  widths = [(0, 0)] * x.ndim
  widths[axis] = (int(pad[0]), int(pad[1]))
  x = jnp.pad(x, widths)
  length = x.shape[axis] - len(k) + 1
  # True convolution: y[i] = sum_t x[i + t] k[K - 1 - t], as K shifted, weighted slices.
  y = sum(float(c) * lax.slice_in_dim(x, t, t + length, axis=axis)
          for t, c in enumerate(k[::-1]) if c != 0)
  return lax.slice_in_dim(y, 0, length, down, axis=axis) if down > 1 else y


def upfirdn2d(x: jax.Array, taps: Sequence[float] = FIR_TAPS, *, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> jax.Array:
  """Upsample by zero insertion, pad, FIR-filter, subsample (the paper code's upfirdn2d).

  Per spatial axis of length ``n``: insert ``up - 1`` zeros after every sample (length
  ``n * up``), zero-pad ``pad = (low, high)``, convolve with the filter (flipped: a true
  convolution) without further padding, keep every ``down``-th sample from the first.
  Output length ``(n * up + low + high - K) // down + 1``. The 2-D filter is the separable
  :func:`fir_filter` of ``taps`` times ``gain``; it is applied per axis as ``K`` shifted,
  weighted slices (elementwise work: XLA:CPU's depthwise convolutions measured ~10x slower
  for the generator's forward pass).

  Args:
    x: float ``[B, H, W, C]``.
    taps: 1-D filter taps (a constant of the trace, never a parameter).
    up: upsampling factor >= 1.
    down: downsampling factor >= 1.
    pad: non-negative ``(low, high)`` padding, the same on both spatial axes.
    gain: overall gain of the 2-D filter (``up**2`` keeps the mean when upsampling).

  Returns:
    ``[B, H', W', C]``, ``x``'s dtype.

  Raises:
    ValueError: not 4-D, factors < 1, negative padding, bad taps.
  """
  if x.ndim != 4 or up < 1 or down < 1 or min(pad) < 0:
    raise ValueError(f"upfirdn2d: need x [B, H, W, C], up, down >= 1 and pad >= 0; got x"
                     f" {tuple(x.shape)}, up={up}, down={down}, pad={pad}.")
  fir_filter(taps)  # validates the taps
  k = np.asarray(taps, np.float64)
  k = k / k.sum() * math.sqrt(gain)  # outer(k, k) = fir_filter(taps) * gain
  for axis in (1, 2):
    x = _fir_axis(x, k, axis, up, down, pad)
  return x


def upsample2d(x: jax.Array, taps: Sequence[float] = FIR_TAPS) -> jax.Array:
  """2x FIR upsampling ``[B, H, W, C] -> [B, 2H, 2W, C]`` (gain 4: the mean is kept)."""
  k = len(taps)
  return upfirdn2d(x, taps, up=2, pad=((k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: jax.Array, taps: Sequence[float] = FIR_TAPS) -> jax.Array:
  """2x FIR downsampling ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even)."""
  k = len(taps)
  return upfirdn2d(x, taps, down=2, pad=((k - 1) // 2, (k - 2) // 2))


def conv_s1(x: jax.Array, w: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]
            ) -> jax.Array:
  """Stride-1 convolution whose derivatives of every order are canonical convolutions.

  On the CPU backend with the oneDNN kernels (``genrepair.models.conv.use_onednn``:
  ``GENREPAIR_CONV`` auto/onednn, float32) it is :func:`genrepair.kernels.onednn.conv`,
  whose derivatives of every order are oneDNN calls too (no XLA convolution is left for
  XLA to rewrite, inside ``lax.cond`` or not); otherwise the XLA form below.

  ``y[b, h, w, o] = sum_{kh, kw, i} xpad[b, h + kh, w + kw, i] w[kh, kw, i, o]``, ``xpad``
  = ``x`` zero-padded by ``pads``; exactly ``lax.conv_general_dilated`` in NHWC/HWIO.

  Why: the path length regulariser differentiates the generator twice, inside the
  ``lax.cond`` of lazy regularisation. JAX's own rules express the input gradient as a
  convolution with an ``[K, K, O, I]`` ("01oi") kernel; XLA:CPU rewrites such convolutions
  into its fast NHWC/HWIO form in the entry computation but not inside a conditional's
  branch, where they ran ~40x slower (a digits32 path-length step: 11 s instead of
  0.25 s). Here the backward pass builds the transposed operands explicitly and calls
  :func:`conv_s1` again, so higher derivatives follow the same rule:
  ``dx = conv_s1(g, flip(w)^T, K - 1 - pads)`` and ``dw = conv_s1(x^T, g^T, pads)^T``.
  (Measured on the digits32 train step: every convolution of the path-length branch is
  canonical; in the R1 branch XLA still swaps the operands of three weight-gradient
  convolutions of the stride-2 layers into a non-canonical form, so a step with R1 costs
  ~3.6 s instead of ~0.8 s; per-tap matmul weight gradients avoid that but made every
  step ~20% slower.)

  Args:
    x: float ``[B, H, W, I]``.
    w: float ``[KH, KW, I, O]``.
    pads: ``((lo, hi), (lo, hi))`` non-negative zero padding of H and W.

  Returns:
    ``[B, H + lo + hi - KH + 1, W + lo + hi - KW + 1, O]``.
  """
  from genrepair.models import conv  # pylint: disable=import-outside-toplevel
  if conv.use_onednn(x, w):
    from genrepair.kernels import onednn  # pylint: disable=import-outside-toplevel
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return onednn.conv(onednn.Geometry((1, 1), pads, (1, 1)), x, w)
  return _conv_s1_xla(x, w, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_s1_xla(x: jax.Array, w: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]
                 ) -> jax.Array:
  return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_NHWC)


def _conv_s1_fwd(x, w, pads):
  return _conv_s1_xla(x, w, pads), (x, w)


def _conv_s1_bwd(pads, res, g):
  x, w = res
  kh, kw = w.shape[:2]
  w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)  # [KH, KW, O, I]
  dx = conv_s1(g, w_t, ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                        (kw - 1 - pads[1][0], kw - 1 - pads[1][1])))  # [B, H, W, I]
  x_t, g_t = x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)  # [I, H, W, B], [Ho, Wo, B, O]
  dw = conv_s1(x_t, g_t, pads).transpose(1, 2, 0, 3)  # [I, KH, KW, O] -> [KH, KW, I, O]
  return dx, dw


_conv_s1_xla.defvjp(_conv_s1_fwd, _conv_s1_bwd)


def conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-2 'VALID' convolution as a stride-1 :func:`conv_s1` after space-to-depth.

  ``y[b, h, w, o] = sum_{kh, kw, i} x[b, 2h + kh, 2w + kw, i] w[kh, kw, i, o]``, equal to
  ``lax.conv_general_dilated(x, w, (2, 2), 'VALID')``. Rewritten so that its derivatives
  are canonical convolutions too (see :func:`conv_s1`: R1 differentiates D twice inside a
  ``lax.cond``): ``x`` becomes ``[B, H/2, W/2, 4 I]`` (each 2x2 cell's pixels on the
  channel axis) and the kernel, zero-padded to an even size ``2 K2``, ``[K2, K2, 4 I, O]``
  with ``K2 = ceil(K / 2)``; the extra taps are zeros, so the 3x3 kernel costs 16/9 of its
  multiply-adds.

  Args:
    x: float ``[B, H, W, I]``.
    w: float ``[K, K, I, O]``.

  Returns:
    ``[B, (H - K) // 2 + 1, (W - K) // 2 + 1, O]``.
  """
  b, h, wd, c = x.shape
  k, o = w.shape[0], w.shape[-1]
  ho, wo, k2 = (h - k) // 2 + 1, (wd - k) // 2 + 1, (k + 1) // 2
  hn, wn = 2 * (ho + k2 - 1), 2 * (wo + k2 - 1)  # input rows/cols the outputs can reach
  x = jnp.pad(x, ((0, 0), (0, max(0, hn - h)), (0, max(0, wn - wd)), (0, 0)))[:, :hn, :wn]
  x = x.reshape(b, hn // 2, 2, wn // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, hn // 2, wn // 2, 4 * c)  # channel index (p, q, i): pixel (2r + p, 2s + q)
  w = jnp.pad(w, ((0, 2 * k2 - k), (0, 2 * k2 - k), (0, 0), (0, 0)))  # [2 K2, 2 K2, I, O]
  w = w.reshape(k2, 2, k2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(k2, k2, 4 * c, o)
  return conv_s1(x, w, ((0, 0), (0, 0)))


def _normal(lr_mul: float):
  """Initialiser ``N(0, 1) / lr_mul`` of an equalised-lr weight."""
  def init(key, shape, dtype=None):  # float32 (float64 under jax_enable_x64)
    dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
    return jax.random.normal(key, shape, dtype) / lr_mul
  return init


class EqualDense(nn.Module):
  """Fully connected layer with equalised learning rate.

  ``y = act(x @ (W * lr_mul / sqrt(Cin)) + b * lr_mul)`` with ``W`` stored as
  ``N(0, 1) / lr_mul`` and ``b`` initialised to ``bias_init``.

  Attributes:
    features: output width.
    lr_mul: learning-rate multiplier (0.01 in the mapping network).
    bias_init: initial (stored) bias value (1 for the style affines: ``s`` starts at 1).
    use_bias: add a bias.
    activation: ``'lrelu'`` (:func:`lrelu`) or ``'linear'``.
  """
  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0
  use_bias: bool = True
  activation: str = "linear"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, Cin] -> [B, features]`` float32."""
    kernel = self.param("kernel", _normal(self.lr_mul), (x.shape[-1], self.features))
    y = x @ (kernel * (self.lr_mul / math.sqrt(x.shape[-1])))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
      y = y + bias * self.lr_mul
    return lrelu(y) if self.activation == "lrelu" else y


class EqualConv(nn.Module):
  """Convolution with equalised learning rate, optionally 2x FIR-downsampling.

  ``W`` stored as ``N(0, 1)`` ``[K, K, Cin, Cout]``, used as ``W / sqrt(Cin K K)``.
  With ``down``: a ``K > 1`` kernel runs with stride 2 after an FIR blur with padding
  ``K // 2 + (1, 1)`` (the paper code's ``conv2d_resample(down=2)``); a ``1x1`` kernel runs
  after :func:`downsample2d`.

  Attributes:
    features: output channels.
    kernel_size: ``K`` (odd or 1).
    down: halve the resolution.
    use_bias: add a bias (zero-initialised).
    activation: ``'lrelu'`` or ``'linear'``.
  """
  features: int
  kernel_size: int = 3
  down: bool = False
  use_bias: bool = True
  activation: str = "lrelu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, Cin] -> [B, H', W', features]`` (``H' = H / 2`` with ``down``)."""
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", _normal(1.0), (k, k, cin, self.features))
    w = kernel * (1.0 / math.sqrt(cin * k * k))
    if self.down and k > 1:
      x = upfirdn2d(x, FIR_TAPS, pad=(k // 2 + 1, k // 2 + 1))  # [B, H + 1, W + 1, C]
      y = conv_s2(x, w)                                           # [B, H / 2, W / 2, C']
    else:
      if self.down:
        x = downsample2d(x)
      y = conv_s1(x, w, ((k // 2, k // 2),) * 2)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return lrelu(y) if self.activation == "lrelu" else y


def modulated_weights(weight: jax.Array, styles: jax.Array, *, demodulate: bool = True,
                      eps: float = 1e-8) -> jax.Array:
  """The explicit per-sample weights of StyleGAN2 Eq. 1 and 3.

  Args:
    weight: float ``[K, K, Cin, Cout]``, the (already equalised-lr scaled) shared weight
      ``w_ijk`` (``i`` input channel, ``j`` output channel, ``k`` spatial tap).
    styles: float ``[B, Cin]``, the per-sample scales ``s_i`` (Eq. 1).
    demodulate: divide by ``sqrt(sum_{i,k} w'_ijk^2 + eps)`` (Eq. 3).
    eps: Eq. 3's epsilon.

  Returns:
    float ``[B, K, K, Cin, Cout]``: ``w''`` (or ``w'`` without demodulation). With
    demodulation each ``[b, :, :, :, j]`` has sum of squares ``1 - O(eps)``: unit-variance
    inputs give unit-variance outputs (Eq. 2).
  """
  w = weight[None] * styles[:, None, None, :, None]  # Eq. 1: [B, K, K, Cin, Cout]
  if demodulate:
    w = w * lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3), keepdims=True) + eps)
  return w


class ModulatedConv(nn.Module):
  """Modulated (and demodulated) convolution, StyleGAN2 Sec. 2.2, Eq. 1-3.

  The style ``s = A(w)`` comes from an equalised :class:`EqualDense` affine (bias 1) of
  the latent ``w``. Equivalent to convolving each sample with its own
  :func:`modulated_weights`, computed as ``((x * s) conv W) * d`` with ``d_j =
  1 / sqrt(sum_{i,k} (s_i W_ijk)^2 + eps)``. With ``up``, the input is first upsampled 2x
  by :func:`upsample2d`: equal, away from the image border, to the paper code's
  transposed convolution followed by the FIR filter (both are linear shift-invariant on
  the fine grid, so they commute).

  Attributes:
    features: output channels ``Cout``.
    kernel_size: ``K`` (3 for synthesis layers, 1 for toRGB).
    demodulate: apply Eq. 3 (False for toRGB).
    up: 2x upsampling before the convolution.
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  up: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """Modulated convolution.

    Args:
      x: float32 ``[B, H, W, Cin]``.
      w: float32 ``[B, w_dim]`` intermediate latents of this layer.

    Returns:
      float32 ``[B, H', W', features]``, ``H' = 2H`` with ``up`` else ``H`` ('SAME').
    """
    k, cin = self.kernel_size, x.shape[-1]
    styles = EqualDense(cin, bias_init=1.0, name="affine")(w)  # [B, Cin]
    kernel = self.param("kernel", _normal(1.0), (k, k, cin, self.features))
    weight = kernel * (1.0 / math.sqrt(cin * k * k))  # equalised lr
    x = x * styles[:, None, None, :]  # Eq. 1 applied to the activations
    if self.up:
      x = upsample2d(x)
    y = conv_s1(x, weight, ((k // 2, k // 2),) * 2)  # [B, H', W', Cout]
    if self.demodulate:  # Eq. 3: sum_{i,k} (s_i W_ijk)^2 = sum_i s_i^2 sum_k W_ijk^2
      norm = jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1))  # [B, Cout]
      y = y * lax.rsqrt(norm + 1e-8)[:, None, None, :]
    return y


def minibatch_stddev(x: jax.Array, group_size: int = 4, num_features: int = 1) -> jax.Array:
  """Appends the minibatch standard deviation as extra feature maps.

  Karras et al. 2018 ("Progressive Growing of GANs") Sec. 3, in StyleGAN2's form: samples
  ``n = g * (B / G) + m`` with ``g < G`` form group ``m``; per group, the std over its
  ``G`` members (``sqrt(var + 1e-8)``) of every feature, averaged over H, W and the
  channels of each of ``num_features`` channel slices, is broadcast as ``num_features``
  constant maps to every member.

  Args:
    x: float ``[B, H, W, C]``, ``C`` divisible by ``num_features``.
    group_size: ``G`` (``min(G, B)`` is used; it must divide ``B``).
    num_features: extra channels ``F``.

  Returns:
    ``[B, H, W, C + F]``.

  Raises:
    ValueError: the group size does not divide the batch or F does not divide C.
  """
  b, h, w, c = x.shape
  g, f = min(group_size, b), num_features
  if b % g or c % f:
    raise ValueError(f"minibatch_stddev: group size {g} must divide the batch {b} and"
                     f" {f} features the channels {c}.")
  y = x.reshape(g, b // g, h, w, f, c // f)
  y = jnp.sqrt(jnp.mean(jnp.square(y - jnp.mean(y, axis=0)), axis=0) + 1e-8)
  y = jnp.mean(y, axis=(1, 2, 4))  # [B/G, F]
  y = jnp.broadcast_to(y[None, :, None, None, :], (g, b // g, h, w, f)).reshape(b, h, w, f)
  return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
