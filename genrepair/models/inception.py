"""The FID Inception-v3: the feature network of FID, KID and IS, as a flax linen module.

Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016) in the exact form of the TensorFlow graph ``inception-2015-12-05`` that the
original FID code (Heusel et al. 2017) and the Inception Score code (Salimans et al. 2016)
run, as pytorch-fid ports it (its ``fid_inception_v3()``: torchvision's ``Inception3`` with
the ``FIDInceptionA/C/E_1/E_2`` blocks). It differs from torchvision's ImageNet model in:

* 1008 output classes (the 2015 graph's softmax), no auxiliary classifier;
* the average-pooling branch of ``Mixed_5b..5d`` (A), ``Mixed_6b..6e`` (C) and ``Mixed_7b``
  (E_1) divides by the number of *valid* pixels of each 3x3 window (PyTorch's
  ``count_include_pad=False``, TF's ``SAME`` average pooling), not by 9;
* the pooling branch of the last block ``Mixed_7c`` (E_2) is a 3x3 *max* pool.

Every convolution is ``conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU``.
Module names equal the PyTorch attribute names (``Mixed_5b/branch5x5_2/conv``), so the
converted state dict maps one-to-one (:mod:`genrepair.weights.inception_convert`).

Input: float32 ``[B, H, W, 3]`` in ``[-1, 1]`` (FID uses H = W = 299; any H, W >= 75 runs,
:mod:`genrepair.metrics.inception` does the resize and scaling). Output: the 2048-d
``pool3`` features (global average of ``Mixed_7c``; FID, KID), the 1008 class ``logits``
(``pool3 @ W + b``) and ``logits_unbiased`` (``pool3 @ W``, what the IS code of Salimans
et al. takes the softmax of).

Variants (``Model(variant=...)``):

| variant | classes | params | batch_stats |
|---|---|---|---|
| ``fid`` (default) | 1008 | 23,850,960 | 34,432 |

(The 23,850,960 parameters, as PyTorch counts the same network: 21,751,136 in the 94
convolution kernels, 34,432 BatchNorm scales and offsets (17,216 channels), 2,065,392 in
the 2048 x 1008 + 1008 logits layer; ``batch_stats`` holds the running means and
variances of the 17,216 channels.)

Computations are float32 with ``precision=HIGHEST`` on every convolution and matmul, so
an accelerator computes the same features as the CPU (no bf16/TF32 passes).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import variants

VARIANTS = {"fid": dict(num_classes=1008)}
_DEFAULTS: dict[str, Any] = {}
MIN_SIZE = 75  # smallest H, W for which every stride-2 stage has a pixel left
_BN_EPS = 1e-3  # TF's (and torchvision BasicConv2d's) BatchNorm epsilon
_HIGHEST = jax.lax.Precision.HIGHEST


class ConvBN(nn.Module):
  """``conv (no bias) -> BatchNorm (running statistics) -> ReLU``: PyTorch's ``BasicConv2d``.

  Attributes:
    features: output channels.
    kernel: ``(kh, kw)``.
    stride: the same stride on both axes.
    pad: ``(ph, pw)`` zero padding on each side (PyTorch ``padding``); 0 = ``VALID``.
  """
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  pad: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float32 ``[B, H, W, C_in] -> [B, H', W', features]``, values >= 0."""
    ph, pw = self.pad
    x = nn.Conv(self.features, self.kernel, (self.stride, self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=_HIGHEST,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_valid_count(x: jax.Array) -> jax.Array:
  # 3x3 stride-1 'SAME' average that divides by the in-image pixels of each window.
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
  pad = ((1, 1), (1, 1)) if stride == 1 else "VALID"  # stride 1: E_2's 'SAME' max pool
  return nn.max_pool(x, (3, 3), (stride, stride), padding=pad)


class InceptionA(nn.Module):
  """``FIDInceptionA`` (``Mixed_5b..5d``): 35x35 grid, 64 + 64 + 96 + pool_features channels.

  Attributes:
    pool_features: width of the pooling branch's 1x1 convolution.
  """
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H, W, 224 + pool_features]``."""
    b1 = ConvBN(64, name="branch1x1")(x)
    b5 = ConvBN(48, name="branch5x5_1")(x)
    b5 = ConvBN(64, (5, 5), pad=(2, 2), name="branch5x5_2")(b5)
    b3 = ConvBN(64, name="branch3x3dbl_1")(x)
    b3 = ConvBN(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = ConvBN(96, (3, 3), pad=(1, 1), name="branch3x3dbl_3")(b3)
    bp = ConvBN(self.pool_features, name="branch_pool")(_avg_pool_3x3_valid_count(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """``Mixed_6a``: grid reduction 35x35 -> 17x17, 384 + 96 + C_in channels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, (H-3)//2+1, (W-3)//2+1, 480 + C]``."""
    b3 = ConvBN(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = ConvBN(64, name="branch3x3dbl_1")(x)
    bd = ConvBN(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
    bd = ConvBN(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """``FIDInceptionC`` (``Mixed_6b..6e``): 17x17 grid with factorised 7x7, 768 channels.

  Attributes:
    channels_7x7: width inside the 1x7 / 7x1 chains.
  """
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H, W, 768]``."""
    c7 = self.channels_7x7
    b1 = ConvBN(192, name="branch1x1")(x)
    b7 = ConvBN(c7, name="branch7x7_1")(x)
    b7 = ConvBN(c7, (1, 7), pad=(0, 3), name="branch7x7_2")(b7)
    b7 = ConvBN(192, (7, 1), pad=(3, 0), name="branch7x7_3")(b7)
    bd = ConvBN(c7, name="branch7x7dbl_1")(x)
    bd = ConvBN(c7, (7, 1), pad=(3, 0), name="branch7x7dbl_2")(bd)
    bd = ConvBN(c7, (1, 7), pad=(0, 3), name="branch7x7dbl_3")(bd)
    bd = ConvBN(c7, (7, 1), pad=(3, 0), name="branch7x7dbl_4")(bd)
    bd = ConvBN(192, (1, 7), pad=(0, 3), name="branch7x7dbl_5")(bd)
    bp = ConvBN(192, name="branch_pool")(_avg_pool_3x3_valid_count(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """``Mixed_7a``: grid reduction 17x17 -> 8x8, 320 + 192 + C_in channels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, (H-3)//2+1, (W-3)//2+1, 512 + C]``."""
    b3 = ConvBN(192, name="branch3x3_1")(x)
    b3 = ConvBN(320, (3, 3), stride=2, name="branch3x3_2")(b3)
    b7 = ConvBN(192, name="branch7x7x3_1")(x)
    b7 = ConvBN(192, (1, 7), pad=(0, 3), name="branch7x7x3_2")(b7)
    b7 = ConvBN(192, (7, 1), pad=(3, 0), name="branch7x7x3_3")(b7)
    b7 = ConvBN(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """``FIDInceptionE_1`` (``Mixed_7b``, average pool) / ``_E_2`` (``Mixed_7c``, max pool).

  Attributes:
    pool: ``'avg'`` (valid-pixel 3x3 average) or ``'max'`` (3x3 max) for the pool branch.
  """
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H, W, 2048]``."""
    b1 = ConvBN(320, name="branch1x1")(x)
    b3 = ConvBN(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([ConvBN(384, (1, 3), pad=(0, 1), name="branch3x3_2a")(b3),
                          ConvBN(384, (3, 1), pad=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = ConvBN(448, name="branch3x3dbl_1")(x)
    bd = ConvBN(384, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([ConvBN(384, (1, 3), pad=(0, 1), name="branch3x3dbl_3a")(bd),
                          ConvBN(384, (3, 1), pad=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = _avg_pool_3x3_valid_count(x) if self.pool == "avg" else _max_pool_3x3(x, 1)
    bp = ConvBN(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """Inception-v3 of the FID/IS TF graph: ``image -> {pool3, logits, logits_unbiased}``.

  Variables: ``params`` (conv kernels, BatchNorm scale/bias, ``fc``) and ``batch_stats``
  (BatchNorm running mean/var); inference only (BatchNorm always uses the running
  statistics; there is no training mode).

  Attributes:
    num_classes: logits width (1008 in the 2015 graph).
  """
  num_classes: int = 1008

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """Runs the network.

    Args:
      x: float32 ``[B, H, W, 3]`` in ``[-1, 1]``; H, W >= 75 (FID: 299).

    Returns:
      ``{'pool3': [B, 2048], 'logits': [B, num_classes], 'logits_unbiased':
      [B, num_classes]}`` float32; pool3 >= 0 (mean of ReLU outputs).

    Raises:
      ValueError: not ``[B, H, W, 3]`` or smaller than 75x75.
    """
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"FIDInceptionV3 expects [B, H, W, 3] images with H, W >= {MIN_SIZE},"
                       f" got shape {tuple(x.shape)}.")
    x = ConvBN(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)        # [B, 149, 149, 32]
    x = ConvBN(32, (3, 3), name="Conv2d_2a_3x3")(x)                  # [B, 147, 147, 32]
    x = ConvBN(64, (3, 3), pad=(1, 1), name="Conv2d_2b_3x3")(x)      # [B, 147, 147, 64]
    x = _max_pool_3x3(x, 2)                                          # [B, 73, 73, 64]
    x = ConvBN(80, name="Conv2d_3b_1x1")(x)                          # [B, 73, 73, 80]
    x = ConvBN(192, (3, 3), name="Conv2d_4a_3x3")(x)                 # [B, 71, 71, 192]
    x = _max_pool_3x3(x, 2)                                          # [B, 35, 35, 192]
    x = InceptionA(32, name="Mixed_5b")(x)                           # [B, 35, 35, 256]
    x = InceptionA(64, name="Mixed_5c")(x)                           # [B, 35, 35, 288]
    x = InceptionA(64, name="Mixed_5d")(x)                           # [B, 35, 35, 288]
    x = InceptionB(name="Mixed_6a")(x)                               # [B, 17, 17, 768]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                     ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)                               # [B, 17, 17, 768]
    x = InceptionD(name="Mixed_7a")(x)                               # [B, 8, 8, 1280]
    x = InceptionE("avg", name="Mixed_7b")(x)                        # [B, 8, 8, 2048]
    x = InceptionE("max", name="Mixed_7c")(x)                        # [B, 8, 8, 2048]
    pool3 = jnp.mean(x, axis=(1, 2))                                 # [B, 2048]
    fc = nn.Dense(self.num_classes, precision=_HIGHEST, name="fc")
    logits = fc(pool3)                                               # [B, num_classes]
    # pool3 @ W exactly (not logits - b, which rounds differently): the IS code's logits.
    unbiased = jnp.dot(pool3, fc.variables["params"]["kernel"], precision=_HIGHEST)
    return {"pool3": pool3, "logits": logits, "logits_unbiased": unbiased}


def Model(*, variant: str | None = None, **kw) -> FIDInceptionV3:  # pylint: disable=invalid-name
  """Builds the FID Inception-v3.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'fid'``); ``**kw`` overrides
      ``num_classes``.

  Returns:
    An unbound :class:`FIDInceptionV3`.

  Raises:
    ValueError: unknown variant or option.
  """
  return FIDInceptionV3(**variants.resolve("FIDInceptionV3", VARIANTS, variant, default="fid",
                                           defaults=_DEFAULTS, overrides=kw))
