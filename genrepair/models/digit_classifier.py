"""A small CNN digit classifier: the feature network of FID-/KID-/IS-digits.

Inception-v3 features (FID's usual network) know nothing about 28x28 grayscale digits, so
digit GANs are scored on the features of a classifier trained on the digits themselves
(:mod:`genrepair.metrics.digits`). The network is LeNet-like: two 3x3 'SAME' convolutions
with ReLU, each followed by 2x2 max pooling, a dense "feature" layer with LeakyReLU (slope
0.1) and a linear layer to the class logits; dropout between the feature layer and the
logits during training only. The feature layer's activations play the role of Inception's
pool3 features.

Input: float32 ``[B, 28, 28, 1]`` in ``[-1, 1]`` (the GAN image range: uint8 ``u`` maps to
``u / 127.5 - 1``).

Variants (``Model(variant=...)``), parameter counts for 28x28x1 inputs and 10 classes:

| variant | convolutions | pooled map | feature layer | params |
|---|---|---|---|---|
| ``mnist`` (default) | 3x3x32 -> pool -> 3x3x64 -> pool | 7x7x64 | 128 | 421,642 |
| ``mnist-small`` | 3x3x8 -> pool -> 3x3x16 -> pool | 7x7x16 | 32 | 26,698 |

(``mnist``: conv 320 + 18,496, dense 3,136 x 128 + 128 = 401,536, logits 1,290.)
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import variants

VARIANTS = {
    "mnist": dict(conv_features=(32, 64), feature_dim=128),
    "mnist-small": dict(conv_features=(8, 16), feature_dim=32),
}
_FEATURE_SLOPE = 0.1
_DEFAULTS = dict(image_size=28, channels=1, num_classes=10, dropout=0.5)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2, the same values as ``nn.max_pool(x, (2, 2), (2, 2))``.

  Written as a reshape and a max because XLA:CPU's gradient of ``reduce_window``
  (select-and-scatter) is slow: 139 ms against 9 ms for a [128, 28, 28, 32] batch here.
  """
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class DigitClassifier(nn.Module):
  """CNN ``image -> (features, logits)``.

  Attributes:
    image_size: input height = width (checked against the input).
    channels: input channels.
    conv_features: widths of the 3x3 convolutions (each followed by 2x2 max pooling).
    feature_dim: width of the dense feature layer.
    num_classes: number of logits.
    dropout: dropout rate on the features before the logits (training only).
  """
  image_size: int = 28
  channels: int = 1
  conv_features: Sequence[int] = (32, 64)
  feature_dim: int = 128
  num_classes: int = 10
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """Classifies images.

    Args:
      x: float32 ``[B, image_size, image_size, channels]`` in ``[-1, 1]``.
      train: applies dropout (needs a ``'dropout'`` rng) if True.

    Returns:
      ``(features, logits)``: float32 ``[B, feature_dim]`` (after the LeakyReLU, never
      dropped out)
      and ``[B, num_classes]``.

    Raises:
      ValueError: input shape differs from ``[B, image_size, image_size, channels]``.
    """
    expected = (self.image_size, self.image_size, self.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"DigitClassifier expects [B, {', '.join(map(str, expected))}] images,"
                       f" got shape {tuple(x.shape)}.")
    for i, width in enumerate(self.conv_features):
      x = nn.relu(conv.Conv(width, (3, 3), padding="SAME", name=f"conv{i}")(x))
      x = _max_pool_2x2(x)  # [B, r, r, C] -> [B, r/2, r/2, C]
    x = x.reshape(x.shape[0], -1)                 # [B, r * r * C]
    # Leaky, not plain, ReLU: the pooled inputs are all >= 0, so a unit's pre-activation
    # carries an offset shared by all images; with ReLU 78 of the 128 units ended up dead
    # (0 on every test image: a rank-50 feature covariance), with slope 0.1 none did.
    features = nn.leaky_relu(nn.Dense(self.feature_dim, name="features")(x),
                             negative_slope=_FEATURE_SLOPE)  # [B, feature_dim]
    h = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, name="logits")(h)               # [B, num_classes]
    return features, logits


def Model(*, variant: str | None = None, **kw) -> DigitClassifier:  # pylint: disable=invalid-name
  """Builds a digit classifier.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'mnist'``); ``**kw`` overrides its fields
      or the shared ones (``image_size``, ``channels``, ``num_classes``, ``dropout``).

  Returns:
    An unbound :class:`DigitClassifier`.

  Raises:
    ValueError: unknown variant or option, or a size the poolings do not divide.
  """
  cfg = variants.resolve("DigitClassifier", VARIANTS, variant, default="mnist",
                         defaults=_DEFAULTS, overrides=kw)
  cfg["conv_features"] = tuple(int(f) for f in cfg["conv_features"])
  if cfg["image_size"] % 2 ** len(cfg["conv_features"]):
    raise ValueError(f"DigitClassifier image_size {cfg['image_size']} is not divisible by"
                     f" 2^{len(cfg['conv_features'])} (one 2x2 pooling per convolution).")
  if not 0 <= cfg["dropout"] < 1:
    raise ValueError(f"DigitClassifier dropout must be in [0, 1), got {cfg['dropout']}.")
  return DigitClassifier(**cfg)
