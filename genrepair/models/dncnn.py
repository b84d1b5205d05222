"""DnCNN: residual-learning denoiser (Zhang, Zuo, Chen, Meng & Zhang, IEEE TIP 2017).

"Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising", Sec. III-A:
a plain stack of ``depth`` 3x3 convolutions with 64 features: Conv+ReLU (first layer),
Conv+BN+ReLU (layers 2 .. depth-1), Conv (last layer). Zero padding keeps every feature map
the size of the input (Sec. III-B, "simply pad zeros before convolution"). The network
predicts the **noise** ``v = R(y)`` and the clean estimate is ``x = y - R(y)`` (residual
learning, Eq. 1).

``DnCNN.__call__`` returns the predicted residual (what the loss of Eq. 1 compares with
``y - x``); ``DnCNN.denoise`` (via ``model.apply(v, y, method="denoise", train=False)``)
returns the clean estimate ``y - R(y)``.

The official MatConvNet weights (github.com/cszn/DnCNN ``model/``) have BatchNorm folded
into the convolutions, leaving a bias on every conv; the ``*-merged`` variants
(``batch_norm=False``) are that network, and ``genrepair.weights.load_dncnn_matconvnet``
produces their parameter trees.

Variants (``Model(variant=...)``), parameter counts (``params`` collection only) for 64
features:

| variant | depth | BatchNorm | channels | params | batch_stats |
|---|---|---|---|---|---|
| ``S`` (default; DnCNN-S, known sigma) | 17 | yes | 1 | 556,097 | 1,920 |
| ``B`` (DnCNN-B / -3, blind) | 20 | yes | 1 | 667,073 | 2,304 |
| ``S-merged`` (official weights) | 17 | folded | 1 | 555,137 | 0 |
| ``B-merged`` (official weights) | 20 | folded | 1 | 665,921 | 0 |
| ``S``, ``channels=3`` (CDnCNN-S) | 17 | yes | 3 | 558,403 | 1,920 |
| ``B``, ``channels=3`` (CDnCNN-B) | 20 | yes | 3 | 669,379 | 2,304 |

How they are counted: conv weights ``9 * (C*64 + (depth-2)*64*64 + 64*C)`` (554,112 for
DnCNN-S gray, the number usually quoted as "0.55M"); biases on the first and last conv
(``64 + C``), none on the middle convs because BatchNorm's shift replaces them (the
MatConvNet training code fixes those biases at zero, ``learningRate [1 0]``); BatchNorm
scale and shift ``2 * 64`` per middle layer. Merged variants have a bias on all ``depth``
convs and no BatchNorm. ``tests/test_restoration_models.py`` pins these counts. The
BatchNorm layers are :class:`genrepair.models.batchnorm.BatchNorm` (flax's names and
numbers, a closed-form training gradient: DnCNN-S's step 4% faster on CPU) with the ReLU
folded in. With ``axis_name`` the statistics span a mapped axis: the restoration task
trains DnCNN per device inside its data-parallel ``shard_map`` with one flat gradient
all-reduce (DnCNN-S on 2 CPU devices 533.1 -> 524.0 ms per step, alternated in one
process; ``tests/test_restoration_task.py`` checks 8 devices against 1).

``extra_inputs`` = E > 0 (default 0) widens the input to ``C + E`` channels, as FFDNet
(Zhang et al., TIP 2018) feeds a noise-level map: the first conv sees all of them
(``9 * E * 64`` more weights) and the residual is taken from the first ``C``: ``x =
y[..., :C] - R(y)``. Two-stage restoration uses it for ``[classical estimate,
observation]`` inputs (``config.degradation.prefilter``), with ``zero_last=True``: the
last convolution starts at zero, so ``R(y) = 0`` and the output is the classical estimate
at step 0 (the residual-branch zero init of Goyal et al. 2017, Sec. 2.3, for the same
reason: start from the identity).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from genrepair.models import batchnorm
from genrepair.models import conv
from genrepair.models import variants

# Sec. III-C: weights initialised by He et al.'s method (rectifier networks).
_INIT = nn.initializers.he_normal()

VARIANTS = {
    "S": dict(depth=17, batch_norm=True),
    "B": dict(depth=20, batch_norm=True),
    "S-merged": dict(depth=17, batch_norm=False),
    "B-merged": dict(depth=20, batch_norm=False),
}


class DnCNN(nn.Module):
  """DnCNN noise predictor ``y -> R(y)`` (Zhang et al., TIP 2017).

  Attributes:
    depth: number of convolutions (17 for DnCNN-S, 20 for DnCNN-B and DnCNN-3); >= 2.
    features: width of the hidden layers (64 in the paper).
    channels: image channels (1 grayscale, 3 colour).
    batch_norm: BatchNorm after the middle convolutions (training form, no bias on those
      convs) if True; a bias on every conv and no BatchNorm (the official merged weights)
      if False.
    extra_inputs: input channels after the image's ``channels`` (module docstring).
    zero_last: initialise the last convolution (weights and bias) at zero.
    axis_name: BatchNorm statistics over this mapped axis too (inside ``shard_map``:
      the whole batch's; the restoration task sets it), None outside a map.
  """
  depth: int = 17
  features: int = 64
  channels: int = 1
  batch_norm: bool = True
  extra_inputs: int = 0
  zero_last: bool = False
  axis_name: str | None = None

  sr_input = None  # Restoration interface: not a super-resolution model.

  @nn.compact
  def __call__(self, y: jax.Array, *, train: bool) -> jax.Array:
    """Predicts the noise residual.

    Args:
      y: float32 ``[B, H, W, channels + extra_inputs]`` noisy images (then the extra
        inputs), nominally in ``[0, 1]`` (the network was trained on unclipped noisy
        inputs, so values outside are fine).
      train: BatchNorm uses batch statistics (and updates ``batch_stats``) if True;
        ignored when ``batch_norm`` is False.

    Returns:
      float32 ``[B, H, W, channels]``: the predicted noise ``R(y)``; the clean estimate
      is ``y[..., :channels] - R(y)`` (see :meth:`denoise`).

    Raises:
      ValueError: ``y`` is not ``[B, H, W, channels + extra_inputs]`` or ``depth < 2``.
    """
    if self.depth < 2:
      raise ValueError(f"DnCNN depth must be >= 2, got {self.depth}.")
    cin = self.channels + self.extra_inputs
    if y.ndim != 4 or y.shape[-1] != cin:
      raise ValueError(f"DnCNN expects [B, H, W, {cin}] inputs ({self.channels} image"
                       f" channels + {self.extra_inputs} extra), got shape {tuple(y.shape)}.")
    # [B, H, W, C] -> [B, H, W, features]; zero 'same' padding keeps H, W throughout.
    x = conv.Conv(self.features, (3, 3), padding="SAME", kernel_init=_INIT, name="conv0")(y)
    x = nn.relu(x)
    for i in range(1, self.depth - 1):
      x = conv.Conv(self.features, (3, 3), padding="SAME", use_bias=not self.batch_norm,
                    kernel_init=_INIT, name=f"conv{i}")(x)
      if self.batch_norm:
        # epsilon 1e-4 as MatConvNet's vl_nnbnorm (the authors' training code); the ReLU
        # folded into the layer's gradient.
        x = batchnorm.BatchNorm(use_running_average=not train, momentum=0.9,
                                epsilon=1e-4, axis_name=self.axis_name, relu=True,
                                name=f"bn{i}")(x)
      else:
        x = nn.relu(x)
    # [B, H, W, features] -> [B, H, W, C]
    last_init = nn.initializers.zeros if self.zero_last else _INIT
    return conv.Conv(self.channels, (3, 3), padding="SAME", kernel_init=last_init,
                     name=f"conv{self.depth - 1}")(x)

  def denoise(self, y: jax.Array, *, train: bool = False) -> jax.Array:
    """Clean estimate ``y - R(y)`` (Eq. 1 of the paper).

    Use as ``model.apply(variables, y, method="denoise")``.

    Args:
      y: float32 ``[B, H, W, channels + extra_inputs]`` noisy images in ``[0, 1]`` (then
        the extra inputs).
      train: as in ``__call__``.

    Returns:
      float32 ``[B, H, W, channels]`` denoised images, not clipped.
    """
    return y[..., :self.channels] - self(y, train=train)

  def restore(self, y: jax.Array, *, train: bool) -> jax.Array:
    """Restoration interface (``genrepair.tasks.restoration``): the clean estimate.

    Training the clean estimate against the clean image with L2 is the paper's residual
    loss ``||R(y) - (y - x)||^2`` exactly (Eq. 1), since ``(y - R(y)) - x = -(R(y) - (y -
    x))``.
    """
    return self.denoise(y, train=train)


def Model(*, variant: str | None = None, **kw) -> DnCNN:  # pylint: disable=invalid-name
  """Builds a DnCNN.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'S'``); ``**kw`` overrides its fields
      or sets ``features`` / ``channels`` / ``extra_inputs`` / ``zero_last``.

  Returns:
    An unbound :class:`DnCNN`.

  Raises:
    ValueError: unknown variant or option.
  """
  cfg = variants.resolve("DnCNN", VARIANTS, variant, default="S",
                         defaults=dict(features=64, channels=1, extra_inputs=0,
                                       zero_last=False), overrides=kw)
  if cfg["depth"] < 2:
    raise ValueError(f"DnCNN depth must be >= 2, got {cfg['depth']}.")
  return DnCNN(**cfg)
