"""Convolution layers that train fast on XLA:CPU: oneDNN kernels, or XLA in faster forms.

**Backends** (policy ``wgrad='auto'``, the default; :func:`backend`, ``$GENREPAIR_CONV``):
on the CPU backend, with the ``onednn`` extra installed and ``g++`` present, 2-D float32
convolutions run through oneDNN (:mod:`genrepair.kernels.onednn`: forward, input and
weight gradients as XLA FFI calls, one call per device on its own rows), except the two
layer kinds whose XLA forms below measured faster (2 devices, batch sharded, ms for
``grad`` of a layer, XLA / oneDNN; AMD EPYC, 2 cores, 2026-11-30): few output channels
(:func:`is_thin_out`; SRCNN's 5x5 32 -> 1 2.2 / 7.2, DnCNN's 3x3 64 -> 1 1.5 / 6.5) and
unpadded 1x1 (a matmul; SRCNN's 64 -> 32 3.2 / 3.7). The others, e.g. DnCNN's 3x3 64 ->
64 23.4 / 22.2 (with the input gradient 35.8 / 30.3), ESPCN's 3x3 32 -> 9 6.1 / 4.6 and 5x5
1 -> 64 1.8 / 1.2, SRCNN's 9x9 1 -> 64 7.2 / 5.8. Transposed (input-dilated) convolutions
with stride 1 are oneDNN's backward-data kernel (:func:`_onednn_conv`). Train steps
(``python -m benchmarks.step``; README Performance) went from up to 19% slower than
PyTorch to faster for every benchmarked model (stop 23: JAX / PyTorch 0.53-0.96 on one CPU
device, 0.52-0.92 on two). ``GENREPAIR_CONV=xla`` restores the XLA
forms; the setting is read when a function is traced (jit caches keep what they traced).
Other platforms (GPU, TPU), dtypes and ranks always take XLA's path.

**XLA forms.** Why (GitHub issue "scale and speed"): XLA:CPU computes some convolution weight gradients
through very slow generic loops (jax#23783, jax#31662, openxla/xla#34273). The issue
reported, for one DnCNN layer (64 -> 64, 3x3 'SAME', batch 32 of 40x40), a forward of
46 ms against a weight gradient of 400-650 ms, and a 128 -> 64 4x4 stride-2 transposed
convolution at 220-440 ms (PyTorch: 33 ms). Re-measured here (jax 0.10.2, 2 shared CPU
cores, ``benchmarks/conv_layers.py``), the pathological case is the weight gradient of
**transposed (input-dilated) convolutions**, which XLA computes as a convolution over the
zero-dilated input:

| layer (batch) | forward | input grad | weight grad, XLA | weight grad, matmuls |
|---|---|---|---|---|
| DCGAN G ``up0``, 7x7x128 -> 14x14x64, 4x4 s2 (64) | 5 ms | 5 ms | 129-262 ms | 5 ms |
| U-Net ``upconv3``, 16x16x512 -> 32x32x256, 2x2 s2 (8) | 32 ms | 59 ms | 2,187 ms | 26 ms |
| U-Net ``upconv0``, 64x64x64 -> 128x128x32, 2x2 s2 (8) | 20 ms | 39 ms | 892 ms | 34 ms |
| DnCNN middle, 40x40x64 -> 64, 3x3 (32) | 36 ms | 36 ms | 43-61 ms | 114-174 ms |
| U-Net ``down0``, 128x128x32 -> 32, 3x3 (8) | 57 ms | 38 ms | 78 ms | 589 ms |

(ms, medians; the machine is shared, so ranges are from runs at different loads.) For
ordinary convolutions, strided or not, XLA's own weight gradient was as fast as or faster
than the matmuls in every layer the models use (XLA:CPU's matmul with a 51,200-long
contraction and a 64x64 result runs at ~50 GFLOP/s here, its convolution kernels at ~90),
so the default policy ``wgrad='auto'`` uses matmuls only where the convolution has input
dilation; ``wgrad='matmul'`` forces them everywhere, ``wgrad='xla'`` never. With 'auto'
the ordinary convolutions compile to exactly the HLO of ``nn.Conv``. Full train steps
(one device, ``benchmarks/conv_layers.py steps``, plain flax layers vs. these, alternated
in one process): DCGAN (``experiments/dcgan_mnist.py``, batch 64) 276 -> 142 ms at load
~3, 702 -> 250 ms at load ~18; DnCNN-S (batch 32 of 40x40) unchanged (same HLO: 2.3-2.4 s
at load ~3); with ``'matmul'`` forced everywhere DnCNN-S takes 4.2 s (load ~3).

A second machine (Intel Xeon, 2 cores, quiet; 2026-11-28) showed a different bottleneck:
XLA's weight gradient of *ordinary* wide convolutions is not multi-threaded (the same
120 ms with one core as with two for the DnCNN middle layer, against a 28 ms forward) and
gets slower as the contraction (batch x positions) grows. Summing XLA's own weight
gradients over small batch chunks (policy ``'split'``, :func:`split_weight_grad`) is both
faster per core and runs chunks on both cores (ms, medians; ``python
benchmarks/conv_layers.py layers`` prints these columns; chunk = images per chunk):

| layer (batch) | XLA | chunk 1 | chunk 2 | chunk 4 | chunk 8 |
|---|---|---|---|---|---|
| DnCNN middle 3x3 64->64, 40x40 (32) | 132 | 44 | 45 | 55 | 126 |
| DnCNN last 3x3 64->1 (32) | 14 | 92 | 56 | 35 | 34 |
| EDSR 3x3 64->64, 48x48 (16) | 84 | 31 | 32 | 58 | 85 |
| DRRN 3x3 128->128, 31x31 (16) | 70 | 44 | 27 | 42 | 73 |
| U-Net down0 3x3 32->32, 128x128 (8) | 94 | 63 | 93 | 123 | 89 |
| DCGAN D1 4x4/2 64->128, 14x14 (64) | 12 | 37 | 13 | 9 | 9 |

and at batch 64 (SRCNN / ESPCN shapes, load ~4): SRCNN 9x9 1->64 on 41x41 62 -> 18 ms,
1x1 64->32 on 33x33 59 -> 15-26 ms, ESPCN 3x3 64->32 on 17x17 40 -> 9-11 ms, but 5x5
32->1 40 -> 28-357 ms and 3x3 32->9 3 -> 4-23 ms. Hence ``'auto'`` splits when ``Cout``
and ``Cin * prod(kernel)`` are >= ``SPLIT_MIN_CHANNELS`` (16), with
chunks of about ``SPLIT_PIXELS`` (4,096) rows x positions (:func:`split_chunk`); the
chunk is a multiple of ``jax.device_count()`` and chunks interleave the batch, so under
data parallelism every chunk is spread evenly over the devices and nothing moves between
them (``tests/test_conv.py`` checks the compiled HLO). Splitting the forward or the input
gradient the same way did not help (26 ms -> 29-38 ms for the DnCNN layer). The DnCNN-S
train step (batch 32) went from 2.7-3.2 s to 1.35-1.9 s (``conv_layers.py steps dncnn``,
load 2.6-3.8 from other jobs).

How: :func:`conv_general_dilated` has the signature and the forward pass of
``jax.lax.conv_general_dilated`` (it *is* that op in the forward). With matmuls it is a
``jax.custom_vjp`` whose backward computes

- the **input gradient** with XLA's own rule (the transposed convolution ``jax.grad``
  uses; an im2col/col2im matmul form measured no faster);
- the **weight gradient** as one matrix product per kernel tap ``t``: the input samples
  that meet the outputs through ``t``, ``X_t [B*Ho*Wo, Cin]``, give
  ``dW[t] = X_t^T @ dY [B*Ho*Wo, Cout]``. For an input-dilated (transposed) convolution
  the inserted zeros are never materialised: the *output gradient* is subsampled instead,
  ``dW[t] = X [B*H*W, Cin]^T @ dY_t``, ``dY_t`` a strided slice of ``dY``. One matmul
  over all taps stacked on the channel axis (im2col) measured slower than per-tap matmuls.

With ``'split'`` the backward is XLA's input gradient and :func:`split_weight_grad`.

1x1 convolutions (stride 1, unpadded) are a matmul over the channel axis in the forward
(XLA:CPU's dot is faster than its convolution kernel there: SRCNN's 64 -> 32 layer on 32
maps of 33x33 after a ReLU, 3.8 -> 1.5 ms), and their weight gradient's product puts the
narrower operand on the left, the one XLA transposes (8.0 -> 3.8 ms for that layer; for
transposed convolutions the same swap was slower, DCGAN's step 87 -> 93 ms, so they keep
the input on the left). SRCNN's train step (batch 64, 2 devices): 89 -> ~75 ms.

Stride-1 layers with few output channels (:func:`is_thin_out`: ``Cout * KH * KW <= 64``,
``Cin >= 8``; DnCNN's 64 -> 1, SRCNN's 5x5 32 -> 1, PatchGAN's 4x4 score layer, CycleGAN's
7x7 output layer) are one
matmul over the channel axis and a sum of shifted slices of its ``T * Cout`` columns in
the flattened padded image (:func:`thin_out_conv`), with the weight gradient as one
matmul against the shifted copies of the thin output gradient
(:func:`thin_out_weight_grad`); XLA's kernels are built for wide outputs and its weight
gradient transposes both operands. One core, per-device shapes: SRCNN's last layer
forward 3.2 -> 1.4 ms and weight gradient 6.8 -> 3.0 ms (32 images of 37x37); DnCNN's
0.9 -> 0.7 and 2.2 -> 0.8 ms (8 of 40x40). Train steps (2 devices, JAX only, this form
off / on in alternating processes): SRCNN (batch 64) 58.8 -> 53.8 ms, DnCNN-S (batch 16)
474 -> 445 ms (README, Performance). The limit was 32 columns until CycleGAN's 7x7 16 -> 1
output layer (49) was measured in the form (AMD EPYC, 2 cores, 2 devices, JAX only, both
limits alternated in one process): CycleGAN ``digits-small`` 141.6 -> 128.6 ms per step;
SRCNN, whose 1x1 input gradient (32 -> 64) then also takes the form, unchanged (64.1 /
64.9 ms at 32 against 64.7 / 64.4 at 64).

:class:`Conv` and :class:`ConvTranspose` are drop-in subclasses of ``flax.linen.Conv`` and
``flax.linen.ConvTranspose``: same fields, parameter names (``kernel``, ``bias``), shapes
(``kernel [KH, KW, Cin, Cout]``, ``bias [Cout]``), initialisers, RNG use and class names
(hence the same automatic module names), so imported weights and existing checkpoints load
unchanged. Both take the convolution function as the field ``conv_general_dilated``
(e.g. ``functools.partial(conv_general_dilated, wgrad='matmul')``).

Scope: channels-last inputs ``[B, *spatial, Cin]`` with kernels ``[*kernel, Cin, Cout]``
(flax's layout; any number of spatial dims), window strides, explicit / 'SAME' / 'VALID'
padding, input dilation and kernel dilation; ``feature_group_count == 1``. Any float
dtype; gradients come back in the dtypes of the inputs (half-precision products are
accumulated in float32). ``tests/test_conv.py`` checks outputs and input/weight gradients
against the plain flax layers for every layer type the models use, under ``jit``, on one
device and with the batch sharded over eight.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]
WGRAD_POLICIES = ("auto", "matmul", "split", "xla")

# The 'split' weight gradient: batch rows x input positions per chunk and device
# (measured best at 1,600-4,608 for the DnCNN / EDSR / DRRN layers, see the module doc).
SPLIT_PIXELS = 4096
# ... and only for layers with at least this many output channels and Cin * taps (64 -> 1
# got slower, 3x3 1 -> 64 no faster; 9x9 1 -> 64 and 1x1 64 -> 32 3-4x faster).
SPLIT_MIN_CHANNELS = 16
# Stride-1 2-D convolutions with few outputs per input pixel (Cout * KH * KW at most
# THIN_MAX_COLUMNS) and at least THIN_MIN_INPUT_CHANNELS inputs (the restoration models'
# reconstruction layers, 64 -> 1 or 32 -> 1, CycleGAN's 7x7 16 -> 1) are one matmul and a
# sum of shifted slices (see thin_out_conv).
THIN_MAX_COLUMNS = 64
THIN_MIN_INPUT_CHANNELS = 8
# Input-dilated (transposed) convolutions as sub-pixel convolutions (see subpixel_conv),
# for layers with at least this many output channels.
SUBPIXEL = True
SUBPIXEL_MIN_OUT_CHANNELS = 8
# Weight gradients of transposed convolutions as one matmul over all taps (see
# weight_grad); per-tap matmuls otherwise.
WGRAD_CONCAT = True


def _channels_last(n: int) -> lax.ConvDimensionNumbers:
  """``[B, *spatial, C]`` / ``[*kernel, Cin, Cout]`` / ``[B, *spatial, C]`` for ``n`` dims."""
  spatial = tuple(range(1, n + 1))
  return lax.ConvDimensionNumbers(lhs_spec=(0, n + 1) + spatial,
                                  rhs_spec=(n + 1, n) + tuple(range(n)),
                                  out_spec=(0, n + 1) + spatial)


def _check_layout(ndim: int, dimension_numbers: Any) -> None:
  """Raises ValueError unless ``dimension_numbers`` is the channels-last layout."""
  if dimension_numbers is None:
    raise ValueError("conv_general_dilated needs channels-last dimension_numbers, e.g."
                     " ('NHWC', 'HWIO', 'NHWC'); got None (lax's default is NCHW).")
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    got = dimension_numbers
  else:
    got = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  if tuple(map(tuple, got)) != tuple(map(tuple, _channels_last(ndim - 2))):
    raise ValueError("conv_general_dilated supports only channels-last layouts (lhs"
                     " [B, *spatial, C], rhs [*kernel, Cin, Cout]), got"
                     f" {dimension_numbers}.")


class _Config(NamedTuple):
  """Static settings of one convolution (hashable: a ``custom_vjp`` nondiff argument)."""
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  lhs_dilation: tuple[int, ...]
  rhs_dilation: tuple[int, ...]
  precision: Any


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Padding, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None, *,
                         wgrad: str = "auto") -> jax.Array:
  """``lax.conv_general_dilated`` with the weight gradient computed as matmuls.

  Args:
    lhs: ``[B, *spatial, Cin]`` input, e.g. ``[B, H, W, Cin]``; float dtype.
    rhs: ``[*kernel, Cin, Cout]`` kernel, e.g. ``[KH, KW, Cin, Cout]``; same dtype.
    window_strides: one stride per spatial dim.
    padding: ``'SAME'``, ``'SAME_LOWER'`` or ``'VALID'`` (not with ``lhs_dilation``), or
      one ``(low, high)`` pair per spatial dim; as in lax.
    lhs_dilation: input dilation per spatial dim (``None``: 1; > 1 in transposed convs).
    rhs_dilation: kernel dilation per spatial dim (``None``: 1).
    dimension_numbers: the channels-last layout, e.g. ``('NHWC', 'HWIO', 'NHWC')`` or the
      ``ConvDimensionNumbers`` flax passes.
    feature_group_count: must be 1.
    batch_group_count: must be 1.
    precision: lax precision of the forward convolution and of the backward products.
    preferred_element_type: must be ``None``.
    wgrad: ``'auto'`` (matmuls when ``lhs_dilation`` > 1, where XLA:CPU is slow, and
      for unpadded stride-1 1x1 convolutions, where it is one matmul;
      ``'split'`` for wide layers whose batch :func:`split_chunk` can split; XLA's rule
      otherwise; stride-1 layers with few output channels, :func:`is_thin_out`, as
      :func:`thin_out_conv`), ``'matmul'`` (always), ``'split'`` (XLA's weight gradient summed over
      batch chunks, whenever the batch splits) or ``'xla'`` (plain lax). Except with
      ``'xla'``, unpadded stride-1 convolutions of 8 or more input channels are computed
      in a padded form and cropped (same numbers; see ``_xla_conv``).

  Returns:
    ``[B, *out_spatial, Cout]``: ``lax.conv_general_dilated`` of the arguments (exactly,
    except on the matmul forms of 1x1 and thin layers: equal up to float summation order).

  Raises:
    ValueError: another layout, grouped convolutions, ``preferred_element_type``, string
      padding with ``lhs_dilation``, an unknown ``wgrad``, or argument lengths that do
      not match the number of spatial dims.
  """
  if wgrad not in WGRAD_POLICIES:
    raise ValueError(f"conv_general_dilated: wgrad must be one of {WGRAD_POLICIES}, got"
                     f" {wgrad!r}.")
  if lhs.ndim != rhs.ndim or lhs.ndim < 3:
    raise ValueError(f"conv_general_dilated: lhs {lhs.shape} and rhs {rhs.shape} need the"
                     " same rank >= 3.")
  _check_layout(lhs.ndim, dimension_numbers)
  if feature_group_count != 1 or batch_group_count != 1:
    raise ValueError("conv_general_dilated: only feature_group_count = batch_group_count"
                     f" = 1 is supported, got {feature_group_count}, {batch_group_count};"
                     " use lax.conv_general_dilated for grouped convolutions.")
  if preferred_element_type is not None:
    raise ValueError("conv_general_dilated: preferred_element_type is not supported.")
  n = lhs.ndim - 2
  strides = tuple(int(s) for s in window_strides)
  lhs_dil = (1,) * n if lhs_dilation is None else tuple(int(d) for d in lhs_dilation)
  rhs_dil = (1,) * n if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
  if not len(strides) == len(lhs_dil) == len(rhs_dil) == n:
    raise ValueError(f"conv_general_dilated: strides {strides}, lhs_dilation {lhs_dil} and"
                     f" rhs_dilation {rhs_dil} need one entry per spatial dim ({n}).")
  if isinstance(padding, str):
    if any(d != 1 for d in lhs_dil):
      raise ValueError("conv_general_dilated: string padding is not supported with"
                       " lhs_dilation; give (low, high) pairs.")
    dilated_kernel = [(k - 1) * r + 1 for k, r in zip(rhs.shape[:n], rhs_dil)]
    pads = lax.padtype_to_pads(lhs.shape[1:n + 1], dilated_kernel, strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if len(pads) != n:
    raise ValueError(f"conv_general_dilated: padding {padding} needs one (low, high) pair"
                     f" per spatial dim ({n}).")
  cfg = _Config(strides, pads, lhs_dil, rhs_dil, precision)
  if wgrad == "auto":
    pointwise = all(k == 1 for k in rhs.shape[:n]) and all(s == 1 for s in strides)
    if is_thin_out(cfg, lhs.shape, rhs.shape):
      return _thin_conv(cfg, lhs, rhs)  # matmul + shifted sum (SRCNN's 5x5 32 -> 1)
    matmul_1x1 = pointwise and all(p == (0, 0) for p in pads) and all(
        d == 1 for d in lhs_dil)
    if not matmul_1x1 and use_onednn(lhs, rhs):
      y = _onednn_conv(cfg, lhs, rhs)
      if y is not None:
        return y
    if any(d != 1 for d in lhs_dil) or (pointwise and all(p == (0, 0) for p in pads)):
      wgrad = "matmul"  # transposed convs, and 1x1 convs (one matmul: SRCNN 59 -> 12 ms)
    elif split_chunk(lhs.shape, rhs.shape) is not None:
      wgrad = "split"
    else:
      return _xla_conv(cfg, lhs, rhs)  # XLA's rules ('VALID' via the padded form)
  if wgrad == "xla":
    return _xla_conv(cfg, lhs, rhs, canonical=False)  # exactly lax
  if wgrad == "split":
    chunk = split_chunk(lhs.shape, rhs.shape, min_channels=1)
    if chunk is None:  # a batch that cannot be split: XLA's rule is the only one
      return _xla_conv(cfg, lhs, rhs)
    return _split_conv(cfg, chunk, lhs, rhs)
  return _conv(cfg, lhs, rhs)


BACKENDS = ("auto", "onednn", "xla")


def backend() -> str:
  """The convolution backend of policy ``'auto'``: ``$GENREPAIR_CONV`` (default ``'auto'``).

  ``'auto'``: oneDNN (:mod:`genrepair.kernels.onednn`) for 2-D float32 convolutions when
  the default JAX backend is the CPU and the kernels build/load; XLA's (the forms of this
  module) otherwise. ``'onednn'``: the same, but an error when the kernels are missing.
  ``'xla'``: never oneDNN.

  Raises:
    ValueError: another value.
  """
  value = os.environ.get("GENREPAIR_CONV", "auto")
  if value not in BACKENDS:
    raise ValueError(f"GENREPAIR_CONV must be one of {BACKENDS}, got {value!r}.")
  return value


def use_onednn(lhs: jax.Array, rhs: jax.Array) -> bool:
  """Whether policy ``'auto'`` computes ``conv(lhs, rhs)`` with oneDNN (see :func:`backend`).

  Raises:
    genrepair.kernels.onednn.OneDNNUnavailable: ``GENREPAIR_CONV=onednn`` and the kernels
      cannot be built or loaded.
  """
  choice = backend()
  if choice == "xla" or jax.default_backend() != "cpu":
    return False
  if lhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  from genrepair.kernels import onednn
  if choice == "onednn":
    onednn.load()
    return True
  return onednn.available()


def backend_summary() -> str:
  """One line for logs: which kernels policy ``'auto'`` uses here, e.g. ``'oneDNN 3.2.0
  (2-D float32; 1 part per call)'`` or ``'XLA (GENREPAIR_CONV=xla)'``.

  Builds/loads the oneDNN kernels when they would be used (call it after the CPU device
  count is set).

  Raises:
    ValueError: a bad ``GENREPAIR_CONV``.
    genrepair.kernels.onednn.OneDNNUnavailable: ``GENREPAIR_CONV=onednn`` without them.
  """
  choice = backend()
  if choice == "xla":
    return "XLA (GENREPAIR_CONV=xla)"
  if jax.default_backend() != "cpu":
    return f"XLA ({jax.default_backend()})"
  from genrepair.kernels import onednn
  try:
    onednn.load()
  except onednn.OneDNNUnavailable as e:
    if choice == "onednn":
      raise
    return f"XLA (oneDNN unavailable: {str(e).splitlines()[0]})"
  threads, parts = onednn.threads_per_call(), onednn.parts_per_call()
  split = (f"each call's batch in {parts} parts on XLA's threads" if parts > 1
           else "1 part per call")
  omp = f", {threads} OpenMP threads per part" if threads > 1 else ""
  return f"oneDNN {onednn.version()} (2-D float32; {split}{omp}), XLA otherwise"


def _onednn_conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array) -> jax.Array | None:
  """The convolution ``cfg`` through oneDNN, or None where its form does not apply.

  Ordinary (and strided, kernel-dilated) convolutions are oneDNN's forward convolution.
  A transposed one (input dilation ``a``, window stride 1) is the *input gradient* of
  the convolution with strides ``a``, kernel ``flip(w)`` with ``Cin``/``Cout`` swapped
  and padding ``(Kd - 1 - lo, Kd - 1 - hi)`` (``Kd = (K - 1) d + 1``), which is what
  oneDNN's backward-data kernel computes. None (XLA's path) where a padding would be
  negative, where there is no output, or where both strides and input dilation exceed 1.
  """
  from genrepair.kernels import onednn
  spans = [(rhs.shape[ax] - 1) * cfg.rhs_dilation[ax] + 1 for ax in range(2)]
  if all(a == 1 for a in cfg.lhs_dilation):
    if any(p < 0 for pair in cfg.pads for p in pair):
      return None  # negative padding (cropping): XLA's path
    if any(lhs.shape[ax + 1] + sum(cfg.pads[ax]) < spans[ax] for ax in range(2)):
      return None  # no output position
    return onednn.conv(onednn.Geometry(cfg.strides, cfg.pads, cfg.rhs_dilation), lhs, rhs)
  if any(s != 1 for s in cfg.strides):
    return None
  pads = []
  for ax in range(2):
    span = spans[ax]
    pads.append((span - 1 - cfg.pads[ax][0], span - 1 - cfg.pads[ax][1]))
  if any(p < 0 for pair in pads for p in pair):
    return None
  out = []
  for ax in range(2):
    span = (rhs.shape[ax] - 1) * cfg.rhs_dilation[ax] + 1
    out.append((lhs.shape[ax + 1] - 1) * cfg.lhs_dilation[ax] + 1 + sum(cfg.pads[ax])
               - span + 1)
  if any(o < 1 for o in out):
    return None
  flipped = jnp.flip(rhs, axis=(0, 1)).swapaxes(2, 3)  # [K, K, Cout, Cin]
  geo = onednn.Geometry(cfg.lhs_dilation, tuple(pads), cfg.rhs_dilation)
  return onednn.conv_input_grad(geo, lhs, flipped, tuple(out))


def _batch_devices() -> int:
  """Devices a traced batch is spread over: ``jax.device_count()``, divided by the sizes
  of the mesh axes that are manual here (inside ``shard_map`` the batch is one shard)."""
  mesh = jax.sharding.get_abstract_mesh()
  manual = 1
  if not mesh.empty:
    for a in getattr(mesh, "manual_axes", ()):
      manual *= mesh.shape[a]
  return max(1, jax.device_count() // manual)


def split_chunk(lhs_shape: Sequence[int], rhs_shape: Sequence[int], *,
                min_channels: int = SPLIT_MIN_CHANNELS,
                device_count: int | None = None) -> int | None:
  """Batch rows per chunk of the ``'split'`` weight gradient, or None (no split).

  A chunk holds ``k * D`` rows, ``D = jax.device_count()`` (1 inside a ``shard_map``
  over all devices, where the batch is one device's shard: :func:`_batch_devices`), so
  that under data parallelism (the batch sharded over up to ``D`` devices) every chunk
  spans all devices evenly and no rows move between them; ``k`` is the largest count with
  ``k * prod(spatial) <= SPLIT_PIXELS`` (at least 1) whose ``k * D`` divides the batch.

  Args:
    lhs_shape: ``[B, *spatial, Cin]`` of the forward convolution's input.
    rhs_shape: ``[*kernel, Cin, Cout]``.
    min_channels: no split unless ``Cout`` and ``Cin * prod(kernel)`` (the length of
      one output's dot product) are both at least this.
    device_count: ``D`` (default: the devices the traced batch spans).

  Returns:
    The chunk size (a divisor of ``B`` giving at least 2 chunks), or None.
  """
  batch, pixels, taps = lhs_shape[0], 1, 1
  for d in lhs_shape[1:-1]:
    pixels *= d
  for k in rhs_shape[:-2]:
    taps *= k
  if rhs_shape[-1] < min_channels or rhs_shape[-2] * taps < min_channels:
    return None
  unit = _batch_devices() if device_count is None else device_count
  for k in range(max(1, SPLIT_PIXELS // max(pixels, 1)), 0, -1):
    if batch % (k * unit) == 0 and batch // (k * unit) >= 2:
      return k * unit
  return None


# 'VALID' stride-1 convolutions with at least this many input channels are computed as a
# padded convolution whose border outputs are dropped (see _xla_conv).
VALID_AS_PADDED_MIN_CHANNELS = 8


def _xla_conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array, *,
              canonical: bool = True) -> jax.Array:
  """The forward convolution; with ``canonical``, unpadded ones via a padded form.

  XLA:CPU runs an unpadded ('VALID') stride-1 convolution through a much slower kernel
  than the padded one of the same size (Intel Xeon, 2 cores: SRCNN's 5x5 32 -> 1 layer
  on 37x37 maps, batch 64, 105 ms forward / 166 ms weight gradient unpadded, 6 / 24 ms
  padded then cropped; CycleGAN's 7x7 64 -> 3 forward 133 -> 5 ms). With ``canonical``
  such a convolution (no dilation, ``Cin >= VALID_AS_PADDED_MIN_CHANNELS``, some kernel
  side > 1) is computed with ``((K-1)//2, K//2)`` zero padding and cropped to the
  'VALID' outputs, which never touch the padding: the same numbers. Gradients follow by
  autodiff of the crop. Single-channel inputs (SRCNN's first layer) are left alone:
  there the padded form was slower (5 -> 12 ms).
  """
  n = lhs.ndim - 2
  kernel = rhs.shape[:n]
  if (canonical and all(k == 1 for k in kernel) and all(p == (0, 0) for p in cfg.pads)
      and all(v == 1 for v in cfg.strides + cfg.lhs_dilation + cfg.rhs_dilation)):
    # A 1x1 convolution is a matmul over the channel axis; XLA:CPU's dot is faster than
    # its convolution kernel (SRCNN's 64 -> 32 on 32 x 33x33 after a ReLU: 3.8 -> 1.5 ms).
    return lax.dot_general(lhs, rhs.reshape(rhs.shape[-2:]), (((n + 1,), (0,)), ((), ())),
                           precision=cfg.precision)
  if (canonical and lhs.shape[-1] >= VALID_AS_PADDED_MIN_CHANNELS
      and any(k > 1 for k in kernel) and all(p == (0, 0) for p in cfg.pads)
      and all(v == 1 for v in cfg.strides + cfg.lhs_dilation + cfg.rhs_dilation)):
    pads = tuple(((k - 1) // 2, k // 2) for k in kernel)
    y = lax.conv_general_dilated(lhs, rhs, cfg.strides, pads, cfg.lhs_dilation,
                                 cfg.rhs_dilation, _channels_last(n),
                                 precision=cfg.precision)  # [B, *spatial, Cout]
    for a, (k, (lo, _)) in enumerate(zip(kernel, pads)):
      y = lax.slice_in_dim(y, lo, lo + lhs.shape[a + 1] - k + 1, axis=a + 1)
    return y
  if canonical and is_subpixel(cfg, rhs.shape):
    return subpixel_conv(cfg, lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, cfg.strides, cfg.pads, cfg.lhs_dilation,
                                  cfg.rhs_dilation, _channels_last(n),
                                  precision=cfg.precision)


def is_subpixel(cfg: _Config, rhs_shape: Sequence[int]) -> bool:
  """Whether :func:`_xla_conv` computes this convolution with :func:`subpixel_conv`.

  Input-dilated (transposed) stride-1 convolutions without kernel dilation, with at
  least ``SUBPIXEL_MIN_OUT_CHANNELS`` outputs, while ``SUBPIXEL`` is on.
  """
  return (SUBPIXEL and any(d > 1 for d in cfg.lhs_dilation)
          and all(v == 1 for v in cfg.strides + cfg.rhs_dilation)
          and rhs_shape[-1] >= SUBPIXEL_MIN_OUT_CHANNELS)


class _Phase(NamedTuple):
  """One output phase ``p`` of one axis of an input-dilated convolution (see
  :func:`subpixel_plan`)."""
  first_tap: int  # k0: the kernel taps k0, k0 + s, ... meet this phase's outputs
  taps: int       # how many (0: the phase's outputs are all zero)
  size: int       # outputs of this phase, at p, p + s, p + 2s, ...
  pad: tuple[int, int]  # padding of the undilated input for the stride-1 sub-convolution


def subpixel_plan(size: int, kernel: int, dilation: int, pad: tuple[int, int]
                  ) -> tuple[int, int, list[_Phase]]:
  """Sub-pixel decomposition of one axis of an input-dilated convolution.

  The input ``x`` (``size`` samples) dilated by ``s = dilation`` (``s - 1`` zeros between
  samples), padded by ``pad = (lo, hi)`` and correlated with a ``kernel``-tap kernel
  ``w`` has ``L = (size - 1) s + 1 + lo + hi - kernel + 1`` outputs. Output ``o = s i + p``
  only meets input samples through the taps ``k = k0 + s t`` with ``k0 = (lo - p) mod s``:
  ``y[s i + p] = sum_t w[k0 + s t] x[i + t + c]``, ``c = (p + k0 - lo) / s`` (an integer),
  i.e. a stride-1 correlation of the *undilated* input with the sub-kernel
  ``w[k0::s]``, padded by ``(-c, c + n_p + T - 2 - (size - 1))`` (``n_p`` outputs, ``T``
  taps; a negative pad crops).

  Returns:
    ``(L, ceil(L / s), [phase 0, ..., phase s - 1])``.
  """
  lo, hi = pad
  out = (size - 1) * dilation + 1 + lo + hi - kernel + 1
  phases = []
  for p in range(dilation):
    k0 = (lo - p) % dilation
    taps = max(0, -(-(kernel - k0) // dilation))
    c = (p + k0 - lo) // dilation
    n_p = max(0, -(-(out - p) // dilation))
    phases.append(_Phase(k0, taps, n_p, (-c, c + n_p + taps - 2 - (size - 1))))
  return out, -(-out // dilation), phases


def subpixel_conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """An input-dilated stride-1 convolution as ``prod(s)`` sub-pixel convolutions.

  A transposed convolution (``lhs_dilation = s``, e.g. DCGAN's 4x4 stride-2 generator
  layers, and the input gradient of every strided convolution) computed by XLA:CPU runs
  its generic convolution over the dilated input. Each output phase ``(p_1, ..., p_n)``
  (outputs at ``s * i + p``) is instead an ordinary stride-1 convolution of the undilated
  input with the sub-kernel of the taps that meet it (:func:`subpixel_plan`; a 4x4
  stride-2 kernel gives four 2x2 ones), which XLA runs through its fast convolution
  kernels; the phases are interleaved (pixel shuffle) and cropped to the output size.
  The same sums of products as the dilated convolution, without its zero terms: equal up
  to float summation order. Measured (AMD EPYC, 2 cores, 2 devices, batch 64): DCGAN's
  ``up0`` 7x7x128 -> 14x14x64 forward 6.1 -> 4.7 ms. Layers with few outputs (DCGAN's
  64 -> 1 ``up1``: 0.7 -> 1.0 ms) keep XLA's form (``SUBPIXEL_MIN_OUT_CHANNELS``). Train
  steps (JAX only, ``SUBPIXEL`` off / on alternated in one process, medians): WGAN-GP
  444.0 -> 431.8 ms (its gradient penalty differentiates the critic's input gradients),
  DCGAN 82.3 -> 81.4 ms, CycleGAN level (140.4 / 140.8 ms).

  Args:
    cfg: window strides and kernel dilation 1; any ``lhs_dilation`` and padding.
    lhs: ``[B, *spatial, Cin]``.
    rhs: ``[*kernel, Cin, Cout]``.

  Returns:
    ``[B, *out_spatial, Cout]``, as ``lax.conv_general_dilated`` with ``cfg``.
  """
  n = lhs.ndim - 2
  plans = [subpixel_plan(lhs.shape[a + 1], rhs.shape[a], cfg.lhs_dilation[a], cfg.pads[a])
           for a in range(n)]
  phases = []
  for index in itertools.product(*[range(d) for d in cfg.lhs_dilation]):
    steps = [plans[a][2][p] for a, p in enumerate(index)]
    if any(st.taps == 0 or st.size == 0 for st in steps):  # no tap meets these outputs
      y = jnp.zeros((lhs.shape[0], *[st.size for st in steps], rhs.shape[-1]),
                    jnp.result_type(lhs, rhs))
    else:
      x, w, pads = lhs, rhs, []
      for a, st in enumerate(steps):
        s = cfg.lhs_dilation[a]
        w = lax.slice_in_dim(w, st.first_tap, st.first_tap + (st.taps - 1) * s + 1, s,
                             axis=a)
        lo, hi = st.pad
        x = lax.slice_in_dim(x, max(-lo, 0), x.shape[a + 1] - max(-hi, 0), axis=a + 1)
        pads.append((max(lo, 0), max(hi, 0)))
      y = lax.conv_general_dilated(x, w, (1,) * n, pads, dimension_numbers=_channels_last(n),
                                   precision=cfg.precision)
    # Every phase to ceil(L / s) outputs per axis (the last phases may have one fewer).
    y = jnp.pad(y, [(0, 0)] + [(0, plans[a][1] - st.size) for a, st in enumerate(steps)]
                + [(0, 0)])
    phases.append(y)
  d = lhs.shape[0]
  y = jnp.stack(phases).reshape(*cfg.lhs_dilation, d, *[pl[1] for pl in plans], -1)
  # [s_1, ..., s_n, B, N_1, ..., N_n, C] -> [B, N_1, s_1, ..., N_n, s_n, C]
  order = [n] + [i for a in range(n) for i in (n + 1 + a, a)] + [2 * n + 1]
  y = jnp.transpose(y, order).reshape(
      d, *[pl[1] * s for pl, s in zip(plans, cfg.lhs_dilation)], -1)
  for a in range(n):
    y = lax.slice_in_dim(y, 0, plans[a][0], axis=a + 1)
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  return _xla_conv(cfg, lhs, rhs)


def _conv_fwd(cfg: _Config, lhs: jax.Array, rhs: jax.Array):
  return _xla_conv(cfg, lhs, rhs), (lhs, rhs)


def input_grad(cfg: _Config, lhs: jax.Array, rhs: jax.Array, g: jax.Array) -> jax.Array:
  """Input gradient of the convolution ``cfg``, itself through :func:`conv_general_dilated`.

  The gradient of ``y = conv(x, w)`` (strides ``s``, padding ``(lo, hi)``, input dilation
  ``a``, kernel dilation ``d``) with respect to ``x`` is the convolution of ``g = dy``,
  input-dilated by ``s``, with the spatially flipped kernel ``w[::-1, ::-1].swap(Cin,
  Cout)``, kernel dilation ``d``, window strides ``a`` and padding ``((K - 1) d - lo,
  (N - 1) a + 1 - ((O - 1) s + 1) + lo)`` per axis (``K`` kernel, ``N`` input and ``O``
  output sizes): the transposed convolution XLA's own rule computes, the same numbers up
  to summation order. Routing it through :func:`conv_general_dilated` makes its *own*
  gradient (second-order terms: WGAN-GP's gradient penalty, R1, path length) take this
  module's weight gradients: XLA:CPU's weight gradient of the input-dilated convolution
  is slow (the gradient-penalty gradient of the DCGAN critic, batch 64: 447 -> 75 ms).
  Where a padding would be negative, XLA's rule is used.

  Args:
    cfg: the forward convolution's settings.
    lhs: ``[B, *spatial, Cin]`` forward input (its shape and dtype matter).
    rhs: ``[*kernel, Cin, Cout]`` kernel.
    g: ``[B, *out_spatial, Cout]`` gradient of the forward output.

  Returns:
    ``[B, *spatial, Cin]``.
  """
  n = lhs.ndim - 2
  kernel = rhs.shape[:n]
  pads = []
  for ax in range(n):
    lo = cfg.pads[ax][0]
    dilated_in = (lhs.shape[ax + 1] - 1) * cfg.lhs_dilation[ax] + 1
    dilated_out = (g.shape[ax + 1] - 1) * cfg.strides[ax] + 1
    pads.append(((kernel[ax] - 1) * cfg.rhs_dilation[ax] - lo, dilated_in - dilated_out + lo))
  if any(p < 0 for pair in pads for p in pair):
    _, lhs_vjp = jax.vjp(lambda x: _xla_conv(cfg, x, rhs), lhs)  # XLA's transposed conv
    return lhs_vjp(g)[0]
  flipped = jnp.flip(rhs, axis=tuple(range(n))).swapaxes(n, n + 1)  # [*K, Cout, Cin]
  return conv_general_dilated(g, flipped, cfg.lhs_dilation, tuple(pads),
                              lhs_dilation=cfg.strides, rhs_dilation=cfg.rhs_dilation,
                              dimension_numbers=_channels_last(n),
                              precision=cfg.precision).astype(lhs.dtype)


def _conv_bwd(cfg: _Config, res: tuple[jax.Array, jax.Array], g: jax.Array):
  lhs, rhs = res
  dlhs = input_grad(cfg, lhs, rhs, g)
  drhs = weight_grad(cfg, lhs, g, rhs.shape[:-2])
  return dlhs, drhs.astype(rhs.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _split_conv(cfg: _Config, chunk: int, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  return _xla_conv(cfg, lhs, rhs)


def _split_conv_fwd(cfg: _Config, chunk: int, lhs: jax.Array, rhs: jax.Array):
  return _xla_conv(cfg, lhs, rhs), (lhs, rhs)


def _split_conv_bwd(cfg: _Config, chunk: int, res: tuple[jax.Array, jax.Array],
                    g: jax.Array):
  lhs, rhs = res
  return input_grad(cfg, lhs, rhs, g), split_weight_grad(cfg, lhs, g, rhs, chunk)


_split_conv.defvjp(_split_conv_fwd, _split_conv_bwd)


def split_weight_grad(cfg: _Config, x: jax.Array, g: jax.Array, rhs: jax.Array,
                      chunk: int) -> jax.Array:
  """Kernel gradient as a sum of XLA's kernel gradients over interleaved batch chunks.

  Chunk ``k`` holds rows ``k, k + n, k + 2n, ...`` (``n = B / chunk`` chunks), i.e.
  ``x.reshape(chunk, n, ...)[:, k]``: with the batch sharded over the devices in
  contiguous blocks and ``chunk`` a multiple of their number, every chunk is split evenly
  over the devices (no rows move). The sum runs over chunks in order, in ``rhs``'s dtype.

  Args:
    cfg: the convolution's settings.
    x: ``[B, *spatial, Cin]`` input of the forward convolution.
    g: ``[B, *out_spatial, Cout]`` gradient of its output.
    rhs: the ``[*kernel, Cin, Cout]`` kernel (only its shape and dtype matter).
    chunk: rows per chunk, a divisor of ``B``.

  Returns:
    ``[*kernel, Cin, Cout]``, equal to ``jax.grad`` of the plain convolution up to float
    rounding (summation order).

  Raises:
    ValueError: ``chunk`` does not divide ``B``.
  """
  batch = x.shape[0]
  if chunk < 1 or batch % chunk:
    raise ValueError(f"split_weight_grad: chunk {chunk} does not divide the batch {batch}.")
  n = batch // chunk
  xs = x.reshape(chunk, n, *x.shape[1:])
  gs = g.reshape(chunk, n, *g.shape[1:])
  dw = None
  for k in range(n):
    _, rhs_vjp = jax.vjp(lambda w, k=k: _xla_conv(cfg, xs[:, k], w), rhs)
    (part,) = rhs_vjp(gs[:, k])
    dw = part if dw is None else dw + part
  return dw


def is_thin_out(cfg: _Config, lhs_shape: Sequence[int], rhs_shape: Sequence[int]) -> bool:
  """Whether :func:`thin_out_conv` computes this convolution under the ``'auto'`` policy.

  2-D, stride 1, no dilation, non-negative padding, at least one output pixel,
  ``Cout * KH * KW <= THIN_MAX_COLUMNS`` and ``Cin >= THIN_MIN_INPUT_CHANNELS``.
  """
  if len(lhs_shape) != 4:
    return False
  kh, kw, cin, cout = rhs_shape
  hp = lhs_shape[1] + sum(cfg.pads[0])
  wp = lhs_shape[2] + sum(cfg.pads[1])
  return (all(v == 1 for v in cfg.strides + cfg.lhs_dilation + cfg.rhs_dilation)
          and all(p >= 0 for pair in cfg.pads for p in pair)
          and hp >= kh and wp >= kw and cout * kh * kw <= THIN_MAX_COLUMNS
          and cin >= THIN_MIN_INPUT_CHANNELS)


def _thin_geometry(cfg: _Config, lhs_shape: Sequence[int], rhs_shape: Sequence[int]):
  """(Hp, Wp, Ho, Wo, tap offsets in the flattened padded image, rows n that hold every
  output): output ``(h, w)`` is row ``h * Wp + w`` and tap ``(i, j)`` reads row ``+ i * Wp
  + j``; rows ``< n = Hp * Wp - max offset`` cover every output."""
  kh, kw = rhs_shape[:2]
  hp = lhs_shape[1] + sum(cfg.pads[0])
  wp = lhs_shape[2] + sum(cfg.pads[1])
  offsets = tuple(i * wp + j for i in range(kh) for j in range(kw))
  return hp, wp, hp - kh + 1, wp - kw + 1, offsets, hp * wp - offsets[-1]


def _thin_rows(cfg: _Config, lhs: jax.Array, hp: int, wp: int) -> jax.Array:
  """``[B, H, W, Cin]`` zero-padded by ``cfg.pads`` and flattened: ``[B, Hp * Wp, Cin]``."""
  return jnp.pad(lhs, ((0, 0), *cfg.pads, (0, 0))).reshape(lhs.shape[0], hp * wp, -1)


def thin_out_conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """Forward of a stride-1 2-D convolution as one matmul and a sum of shifted slices.

  Each zero-padded image is flattened to ``[Hp * Wp, Cin]`` rows; ``Z = rows @ W'`` with
  ``W' [Cin, T * Cout]`` (``T = KH * KW`` taps) gives every tap's contribution at every
  input pixel, and output ``(h, w)`` (row ``p = h * Wp + w``) sums ``Z[p + i * Wp + j, tap
  (i, j)]`` over the taps. For few output columns (``T * Cout``, e.g. SRCNN's 5x5 32 -> 1
  layer: 25) this beats XLA:CPU's convolution kernel, which is built for wide outputs
  (measurements in the module docstring); the same numbers up to float summation order.

  Args:
    cfg: stride-1, undilated, non-negative padding (see :func:`is_thin_out`).
    lhs: ``[B, H, W, Cin]``.
    rhs: ``[KH, KW, Cin, Cout]``, same dtype.

  Returns:
    ``[B, Ho, Wo, Cout]`` in ``lhs``'s dtype (sums in float32 for half precision).
  """
  b, _, _, cin = lhs.shape
  kh, kw, _, cout = rhs.shape
  hp, wp, ho, wo, offsets, n = _thin_geometry(cfg, lhs.shape, rhs.shape)
  acc = jnp.float32 if jnp.finfo(lhs.dtype).bits < 32 else None
  rows = _thin_rows(cfg, lhs, hp, wp)
  z = lax.dot_general(rows, rhs.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout),
                      (((2,), (0,)), ((), ())), precision=cfg.precision,
                      preferred_element_type=acc)  # [B, Hp * Wp, T * Cout]
  y = z[:, offsets[0]:offsets[0] + n, :cout]
  for t, o in enumerate(offsets[1:], start=1):
    y = y + z[:, o:o + n, t * cout:(t + 1) * cout]  # [B, n, Cout]
  y = jnp.pad(y, ((0, 0), (0, hp * wp - n), (0, 0))).reshape(b, hp, wp, cout)
  return y[:, :ho, :wo].astype(lhs.dtype)


def thin_out_weight_grad(cfg: _Config, lhs: jax.Array, g: jax.Array,
                         rhs_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient of :func:`thin_out_conv` as one matmul.

  ``dW[tap, i, o] = sum_{b, q} rows[b, q, i] G[b, (tap, o), q]``, where ``G`` stacks the
  ``T`` copies of the thin output gradient (``Cout`` channels), each shifted by its tap's
  offset in the flattened padded image: one ``[T * Cout, B * Hp * Wp] @ [B * Hp * Wp,
  Cin]`` product instead of XLA's weight-gradient convolution, whose operand transposes
  cost more than the product here (SRCNN's 5x5 32 -> 1 layer, 32 images of 37x37 on
  one core: 6.8 -> 3.0 ms).

  Args:
    cfg: the convolution's settings (see :func:`is_thin_out`).
    lhs: ``[B, H, W, Cin]`` forward input.
    g: ``[B, Ho, Wo, Cout]`` gradient of the forward output.
    rhs_shape: ``(KH, KW, Cin, Cout)``.

  Returns:
    ``[KH, KW, Cin, Cout]``: float32 for half-precision inputs, else ``lhs``'s dtype.
  """
  b, _, _, cin = lhs.shape
  kh, kw, _, cout = rhs_shape
  hp, wp, ho, wo, offsets, n = _thin_geometry(cfg, lhs.shape, rhs_shape)
  acc = jnp.float32 if jnp.finfo(lhs.dtype).bits < 32 else None
  rows = _thin_rows(cfg, lhs, hp, wp)
  g = jnp.pad(g, ((0, 0), (0, hp - ho), (0, wp - wo), (0, 0))).reshape(b, hp * wp, cout)
  g_t = g[:, :n].transpose(0, 2, 1)  # [B, Cout, n]: rows >= n hold no output
  shifted = jnp.concatenate([jnp.pad(g_t, ((0, 0), (0, 0), (o, hp * wp - n - o)))
                             for o in offsets], axis=1)  # [B, T * Cout, Hp * Wp]
  dw = lax.dot_general(shifted, rows, (((0, 2), (0, 1)), ((), ())),
                       precision=cfg.precision, preferred_element_type=acc)
  return dw.reshape(kh, kw, cout, cin).transpose(0, 1, 3, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _thin_conv(cfg: _Config, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  return thin_out_conv(cfg, lhs, rhs)


def _thin_conv_fwd(cfg: _Config, lhs: jax.Array, rhs: jax.Array):
  return thin_out_conv(cfg, lhs, rhs), (lhs, rhs)


def _thin_conv_bwd(cfg: _Config, res: tuple[jax.Array, jax.Array], g: jax.Array):
  lhs, rhs = res
  # The input gradient stays XLA's transposed convolution (the shifted form measured
  # slower there: DnCNN's 64 -> 1 layer 0.25 -> 0.74 ms).
  return (input_grad(cfg, lhs, rhs, g),
          thin_out_weight_grad(cfg, lhs, g, rhs.shape).astype(rhs.dtype))


_thin_conv.defvjp(_thin_conv_fwd, _thin_conv_bwd)


class _AxisPlan(NamedTuple):
  """How one spatial axis is sliced per tap (see :func:`tap_operands`)."""
  on_input: bool  # slice the (padded, dilated) input; else the padded output gradient
  offset: int     # start of tap 0's slice
  step: int       # start moves by -step * tap (gradient) or +step * tap (input)
  stride: int     # slice stride
  length: int     # slice length (output length, or input length)


def tap_operands(cfg: _Config, x: jax.Array, g: jax.Array, kernel: Sequence[int]
                 ) -> list[tuple[jax.Array, jax.Array]]:
  """Per kernel tap, the input and output-gradient slices whose product is ``dW[tap]``.

  On a spatial axis with input length ``n``, output length ``m``, kernel dilation ``r``,
  input dilation ``s_in``, window stride ``s_out`` and padding ``(lo, hi)``, output ``o``
  meets input ``i`` through tap ``t`` iff ``o * s_out + t * r = lo + i * s_in``:

  - ``s_in == 1`` (ordinary axis): ``i = o * s_out + t * r - lo``: slice the zero-padded
    input from ``t * r`` with stride ``s_out``; the gradient is used whole (length ``m``).
  - ``s_out == 1 < s_in`` (transposed axis): ``o = i * s_in + lo - t * r``: slice the
    zero-padded output gradient from ``lo - t * r`` with stride ``s_in``; the input is used
    whole (length ``n``), so the dilation zeros are never materialised.
  - both > 1: the input is dilated explicitly, then as ``s_in == 1``.

  Args:
    cfg: the convolution's settings.
    x: ``[B, *spatial, Cin]`` input of the forward convolution.
    g: ``[B, *out_spatial, Cout]`` gradient of its output.
    kernel: kernel spatial shape.

  Returns:
    ``prod(kernel)`` pairs ``(x_t [B, *L, Cin], g_t [B, *L, Cout])`` in row-major tap
    order; ``L`` is ``m`` on ordinary axes and ``n`` on transposed ones.
  """
  x_pads, g_pads, plans = [(0, 0, 0)], [(0, 0, 0)], []
  for a, k in enumerate(kernel):
    n, m = x.shape[a + 1], g.shape[a + 1]
    s_out, s_in, r = cfg.strides[a], cfg.lhs_dilation[a], cfg.rhs_dilation[a]
    lo, hi = cfg.pads[a]
    if s_in > 1 and s_out == 1:
      g_lo = max(0, (k - 1) * r - lo)           # taps that reach before output 0
      g_hi = max(0, lo + (n - 1) * s_in - (m - 1))  # inputs that land after output m-1
      x_pads.append((0, 0, 0))
      g_pads.append((g_lo, g_hi, 0))
      plans.append(_AxisPlan(False, lo + g_lo, r, s_in, n))
    else:
      x_pads.append((lo, hi, s_in - 1))         # lax.pad accepts negative edge padding
      g_pads.append((0, 0, 0))
      plans.append(_AxisPlan(True, 0, r, s_out, m))
  x_pads.append((0, 0, 0))
  g_pads.append((0, 0, 0))
  if any(p != (0, 0, 0) for p in x_pads):
    x = lax.pad(x, jnp.zeros((), x.dtype), x_pads)
  if any(p != (0, 0, 0) for p in g_pads):
    g = lax.pad(g, jnp.zeros((), g.dtype), g_pads)
  pairs = []
  for tap in itertools.product(*(range(k) for k in kernel)):
    xs, gs = x, g
    for a, (t, plan) in enumerate(zip(tap, plans)):
      start = plan.offset + plan.step * t if plan.on_input else plan.offset - plan.step * t
      stop = start + (plan.length - 1) * plan.stride + 1
      if plan.on_input:
        xs = _slice(xs, a + 1, start, stop, plan.stride)
      else:
        gs = _slice(gs, a + 1, start, stop, plan.stride)
    pairs.append((xs, gs))
  return pairs


def _slice(x: jax.Array, axis: int, start: int, stop: int, stride: int) -> jax.Array:
  if start == 0 and stop == x.shape[axis] and stride == 1:
    return x
  return lax.slice_in_dim(x, start, stop, stride, axis)


def weight_grad(cfg: _Config, x: jax.Array, g: jax.Array,
                kernel: Sequence[int]) -> jax.Array:
  """Kernel gradient of the convolution ``cfg``: one matmul per tap, or one for all taps.

  Transposed convolutions (every tap uses the whole input, see :func:`tap_operands`)
  with :data:`WGRAD_CONCAT` take one product of the input with the taps' gradient slices
  concatenated on the channel axis; other convolutions one product per tap.

  Args:
    cfg: the convolution's settings.
    x: ``[B, *spatial, Cin]`` input of the forward convolution.
    g: ``[B, *out_spatial, Cout]`` gradient of its output, same dtype as ``x``.
    kernel: kernel spatial shape ``K`` (e.g. ``(KH, KW)``).

  Returns:
    ``[*K, Cin, Cout]``: float32 for half-precision inputs, else ``x``'s dtype.
  """
  contract = tuple(range(x.ndim - 1))  # batch and spatial dims
  acc = jnp.float32 if jnp.finfo(x.dtype).bits < 32 else None
  dims = ((contract, contract), ((), ()))
  pairs = tap_operands(cfg, x, g, kernel)
  if WGRAD_CONCAT and len(pairs) > 1 and all(xs is x for xs, _ in pairs):
    # Transposed convolutions use the input whole for every tap: one [Cin, T * Cout]
    # product with the taps' output-gradient slices side by side. Under data parallelism
    # XLA then all-reduces one array instead of one per tap (DCGAN's G: 16 -> 1 buffers
    # per layer; its train step 73.9 -> 72.9 ms on 2 devices).
    gcat = jnp.concatenate([gs for _, gs in pairs], axis=-1)  # [B, *L, T * Cout]
    dw = lax.dot_general(x, gcat, dims, precision=cfg.precision, preferred_element_type=acc)
    cin, cout = x.shape[-1], g.shape[-1]
    return dw.reshape(cin, len(pairs), cout).swapaxes(0, 1).reshape(*kernel, cin, cout)
  if g.shape[-1] < x.shape[-1] and all(d == 1 for d in cfg.lhs_dilation):
    # XLA:CPU transposes the dot's left operand to put its contraction last; the narrower
    # one is cheaper to move: SRCNN's 1x1 64 -> 32 layer, batch 32 of 33x33, 8.0 -> 3.8
    # ms (train step at batch 64 on 2 devices 89 -> 70 ms). For transposed convolutions
    # (the output gradient a strided slice) it was slower: DCGAN's step 87 -> 93 ms.
    dw = [lax.dot_general(gs, xs, dims, precision=cfg.precision,
                          preferred_element_type=acc).T
          for xs, gs in pairs]  # each [Cin, Cout]
  else:
    dw = [lax.dot_general(xs, gs, dims, precision=cfg.precision, preferred_element_type=acc)
          for xs, gs in pairs]  # each [Cin, Cout]
  return jnp.stack(dw).reshape(*kernel, x.shape[-1], g.shape[-1])


class Conv(nn.Conv):
  """``flax.linen.Conv`` computing through :func:`conv_general_dilated`.

  Same fields, parameters (``kernel [*kernel_size, Cin // groups, features]``, ``bias
  [features]``), initialisers and module name as ``nn.Conv``; the field
  ``conv_general_dilated`` defaults to :func:`conv_general_dilated` (policy ``'auto'``).
  Input ``[B, H, W, Cin]`` (flax's extra/missing batch dims allowed), output ``[B, Ho,
  Wo, features]``.

  Raises (when called):
    ValueError: ``feature_group_count != 1`` (use ``nn.Conv``), plus flax's own errors.
  """
  conv_general_dilated: Callable[..., jax.Array] | None = conv_general_dilated


class ConvTranspose(nn.ConvTranspose):
  """``flax.linen.ConvTranspose`` computing through :func:`conv_general_dilated`.

  Same fields, parameters (``kernel [*kernel_size, Cin, features]``, or ``[*kernel_size,
  features, Cin]`` with ``transpose_kernel``; ``bias [features]``), initialisers, RNG use
  and module name as ``nn.ConvTranspose``, and the same output as ``lax.conv_transpose``:
  input ``[B, H, W, Cin]`` (extra or missing batch dims allowed as in flax), output
  ``[B, H', W', features]`` with ``H' = H * stride`` for ``'SAME'`` and ``(H - 1) * stride
  + max(K, stride)`` for ``'VALID'`` (undilated kernel).

  Attributes:
    conv_general_dilated: the convolution function (default :func:`conv_general_dilated`,
      policy ``'auto'``: the weight gradient as matmuls).

  Raises (when called):
    ValueError: ``padding='CIRCULAR'`` or ``preferred_element_type`` (use
      ``nn.ConvTranspose``), a mask of the wrong shape, or a bad padding spec.
  """
  conv_general_dilated: Callable[..., jax.Array] = conv_general_dilated

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Transposed convolution of ``inputs [*batch, *spatial, Cin]``; see the class."""
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    n = len(kernel_size)

    def per_dim(v: int | Sequence[int] | None) -> tuple[int, ...]:
      if v is None:
        return (1,) * n
      return (v,) * n if isinstance(v, int) else tuple(v)

    if self.padding == "CIRCULAR" or self.preferred_element_type is not None:
      raise ValueError("conv.ConvTranspose does not support padding='CIRCULAR' or"
                       " preferred_element_type; use flax.linen.ConvTranspose.")
    batch_shape = inputs.shape[:inputs.ndim - n - 1]
    x = inputs.reshape((-1,) + inputs.shape[len(batch_shape):])  # [B, *spatial, Cin]
    cin = x.shape[-1]
    if self.transpose_kernel:
      kernel_shape = kernel_size + (self.features, cin)
    else:
      kernel_shape = kernel_size + (cin, self.features)
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError(f"conv.ConvTranspose: mask shape {self.mask.shape} differs from the"
                       f" kernel shape {kernel_shape}.")
    # Parameters in flax's order (kernel, then bias), so the same key gives the same init.
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel = kernel * self.mask
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.transpose_kernel:
      # [*K, features, Cin] -> spatially flipped [*K, Cin, features].
      kernel = jnp.flip(kernel, axis=tuple(range(n))).swapaxes(n, n + 1)
    strides, rhs_dilation = per_dim(self.strides), per_dim(self.kernel_dilation)
    dilated = [(k - 1) * r + 1 for k, r in zip(kernel_size, rhs_dilation)]
    pads = transpose_padding(self.padding, dilated, strides)
    y = self.conv_general_dilated(x, kernel, (1,) * n, pads, lhs_dilation=strides,
                                  rhs_dilation=rhs_dilation,
                                  dimension_numbers=_channels_last(n),
                                  precision=self.precision)  # [B, *out, features]
    if bias is not None:
      y = y + bias
    return y.reshape(batch_shape + y.shape[1:])


def transpose_padding(padding: Any, dilated_kernel: Sequence[int],
                      strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Padding of the input-dilated convolution that ``lax.conv_transpose`` performs.

  Args:
    padding: ``'SAME'`` (output = input * stride), ``'VALID'`` (every input position's
      full kernel footprint), an int, or per-dim ints / ``(low, high)`` pairs applied as
      given to the dilated input (flax's and lax's convention for explicit padding).
    dilated_kernel: ``(K - 1) * kernel_dilation + 1`` per spatial dim.
    strides: per spatial dim.

  Returns:
    One ``(low, high)`` pair per spatial dim.

  Raises:
    ValueError: an unknown padding string or malformed padding.
  """
  n = len(strides)
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"conv.ConvTranspose: padding {padding!r} is not 'SAME', 'VALID' or"
                       " explicit.")
    pads = []
    for k, s in zip(dilated_kernel, strides):
      if padding == "SAME":
        total = k + s - 2
        low = k - 1 if s > k - 1 else -(-total // 2)
      else:
        total = k + s - 2 + max(k - s, 0)
        low = k - 1
      pads.append((low, total - low))
    return tuple(pads)
  if isinstance(padding, int):
    return ((padding, padding),) * n
  pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
  if len(pads) != n or any(len(p) != 2 for p in pads):
    raise ValueError(f"conv.ConvTranspose: padding {padding} needs one int or (low, high)"
                     f" pair per spatial dim ({n}).")
  return tuple((int(lo), int(hi)) for lo, hi in pads)
