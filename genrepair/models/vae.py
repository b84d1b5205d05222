"""VAE encoder and decoder (Kingma & Welling, ICLR 2014).

The encoder is the recognition model ``q(z|x) = N(mu(x), diag(exp(log_var(x))))`` (Sec.
2.4, Appendix C.2), the decoder the generative model ``p(x|z)``. The encoder is
convolutional instead of the paper's MLP, in the DCGAN style (Radford et al. 2016: 4x4
stride-2 convolutions, no pooling; 28 -> 14 -> 7 at MNIST's native size); the decoder is
dense or ends in 4x4 stride-2 transposed convolutions (see below). No BatchNorm: every
example is independent of the others in the batch, as the importance-sampled likelihood
(IWAE bound) needs.

Decoder heads (``likelihood``):

- ``'bernoulli'``: one logit per pixel and channel, ``p(x_j = 1 | z) = sigmoid(logit_j)``
  (the paper's Bernoulli MLP decoder, Appendix C.1), for binarised MNIST.
- ``'gaussian'``: per pixel a mean and a log standard deviation (Appendix C.2).
- ``'logistic'``: per pixel the mean and log scale of a logistic distribution discretised
  to 256 levels (Salimans et al. 2017, PixelCNN++ Sec. 2.1, one logistic per sub-pixel,
  no mixture).

Why the default decoder is dense: the test log-likelihood by importance sampling runs the
decoder ``k = 5000`` times per test image, 5 * 10^7 passes for the MNIST test set, and on
XLA:CPU (2 cores, jax 0.10.2) transposed convolutions are slow in the forward pass too:
per 10,000 decoder passes + Bernoulli log-likelihood we measured 147 ms for the dense
512-unit decoder of ``'mnist'`` (~12 min for the test set) against 1.25-2.0 s for
DCGAN-style decoders (7x7x32 -> 4x4 s2 transposed convs to 28x28; 1.7-2.8 hours) and 249 ms
for ``'mnist-conv'`` (one transposed conv). So ``'mnist'`` pairs the convolutional encoder
(run once per test image) with the decoder of Kingma & Welling's MNIST experiments (one
hidden layer, Appendix C; 512 units instead of 500) on a 32-d latent; ``'mnist-conv'`` is
the convolutional alternative.

Variants (``Model(variant=...)``), parameter counts for 1 channel and the Bernoulli head
(the Gaussian / logistic heads double the decoder's output layer):

| variant | encoder | decoder | z | encoder params | decoder params | decoder MACs |
|---|---|---|---|---|---|---|
| ``mnist`` (default) | conv 32, 64 (4x4 s2, ReLU) -> dense 2z | dense 512 -> dense 784 | 32 | 234,144 | 419,088 | 0.42 M |
| ``mnist-conv`` | as ``mnist`` | dense 14x14x16 -> convT 4x4 s2 -> 28x28 | 32 | 234,144 | 103,745 | 0.15 M |
| ``mnist-small`` | conv 16, 32 -> dense 2z | dense 128 -> dense 784 | 16 | 58,704 | 103,312 | 0.10 M |

(``tests/test_vae.py`` pins the counts.)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrepair.models import conv
from genrepair.models import dense
from genrepair.models import variants

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")

_DEFAULTS = dict(image_size=28, enc_features=(32, 64), enc_hidden=(), dec_hidden=(),
                 dec_features=(), latent_dim=32)
VARIANTS = {
    "mnist": dict(dec_hidden=(512,)),
    "mnist-conv": dict(dec_features=(16,)),
    "mnist-small": dict(enc_features=(16, 32), dec_hidden=(128,), latent_dim=16),
}

_ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu, "swish": nn.swish}


def _act(name: str):
  if name not in _ACTIVATIONS:
    raise ValueError(f"VAE activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}.")
  return _ACTIVATIONS[name]


class Encoder(nn.Module):
  """Recognition model ``x -> (mu, log_var)`` of ``q(z|x)``.

  Attributes:
    image_size: input height = width (divisible by ``2 ** len(features)``).
    features: widths of the 4x4 stride-2 convolutions (each halves the resolution).
    hidden: widths of dense layers after the flattened convolutions.
    latent_dim: size of z.
    activation: 'relu' | 'elu' | 'swish'.
  """
  image_size: int = 28
  features: Sequence[int] = (32, 64)
  hidden: Sequence[int] = ()
  latent_dim: int = 32
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes images.

    Args:
      x: float32 ``[B, image_size, image_size, C]`` (binary {0, 1} or [-1, 1] data).

    Returns:
      ``(mu, log_var)``: float32 ``[B, latent_dim]`` each, ``log_var = log sigma^2``.

    Raises:
      ValueError: input spatial size differs from ``image_size``.
    """
    if x.ndim != 4 or x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"VAE encoder expects [B, {self.image_size}, {self.image_size}, C]"
                       f" images, got shape {tuple(x.shape)}.")
    act = _act(self.activation)
    for i, width in enumerate(self.features):
      # [B, r, r, C] -> [B, r/2, r/2, width]
      x = act(conv.Conv(width, (4, 4), strides=(2, 2), padding="SAME", name=f"down{i}")(x))
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = act(dense.Dense(width, name=f"hidden{i}")(x))
    stats = dense.Dense(2 * self.latent_dim, name="to_latent")(x)  # [B, 2 z]
    mu, log_var = jnp.split(stats, 2, axis=-1)
    return mu, log_var


class Decoder(nn.Module):
  """Generative model ``z -> parameters of p(x|z)``.

  ``z`` goes through dense layers of widths ``hidden``; then either (``features`` empty) a
  dense layer to every pixel's parameters, or a dense projection to ``features[0]``
  channels at ``image_size / 2**len(features)`` followed by one 4x4 stride-2 transposed
  convolution per further entry of ``features`` and a last one to the image resolution.

  Attributes:
    image_size: output height = width (divisible by ``2 ** len(features)``).
    channels: image channels C.
    hidden: widths of the dense layers applied to z first.
    features: widths of the convolutional part (see above); ``()`` for none.
    likelihood: one of :data:`LIKELIHOODS` (the head).
    activation: 'relu' | 'elu' | 'swish'.
  """
  image_size: int = 28
  channels: int = 1
  hidden: Sequence[int] = ()
  features: Sequence[int] = (32, 32)
  likelihood: str = "bernoulli"
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Decodes latents.

    Args:
      z: float32 ``[B, latent_dim]``.

    Returns:
      ``'bernoulli'``: float32 logits ``[B, H, W, C]``. ``'gaussian'`` / ``'logistic'``:
      ``(mean, log_scale)``, float32 ``[B, H, W, C]`` each (mean unconstrained, on the
      [-1, 1] data scale; log_scale = log of the standard deviation / logistic scale).
    """
    act = _act(self.activation)
    heads = 1 if self.likelihood == "bernoulli" else 2
    size, b = self.image_size, z.shape[0]
    x = z
    for i, width in enumerate(self.hidden):
      x = act(dense.Dense(width, name=f"hidden{i}")(x))
    if not self.features:
      x = dense.Dense(size * size * heads * self.channels, name="to_image")(x)
      x = x.reshape(b, size, size, heads * self.channels)  # [B, H, W, heads * C]
    else:
      n = len(self.features)
      start = size // 2 ** n
      x = dense.Dense(start * start * self.features[0], name="project")(x)
      x = act(x.reshape(b, start, start, self.features[0]))  # [B, s, s, F0]
      for i, width in enumerate(self.features[1:]):
        # [B, r, r, C] -> [B, 2r, 2r, width]
        x = act(conv.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME",
                                   name=f"up{i}")(x))
      x = conv.ConvTranspose(heads * self.channels, (4, 4), strides=(2, 2), padding="SAME",
                             name="to_image")(x)  # [B, H, W, heads * C]
    if heads == 1:
      return x
    mean, log_scale = jnp.split(x, 2, axis=-1)
    return mean, log_scale


class VAEPair(NamedTuple):
  """The two networks of a VAE (separate parameter trees)."""
  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  image_size: int
  channels: int
  likelihood: str


def Model(*, variant: str | None = None, channels: int = 1,  # pylint: disable=invalid-name
          likelihood: str = "bernoulli", activation: str = "relu", **kw: Any) -> VAEPair:
  """Builds a VAE encoder/decoder pair.

  Args:
    variant: a key of :data:`VARIANTS` (default ``'mnist'``); ``**kw`` overrides its
      fields (``image_size``, ``enc_features``, ``enc_hidden``, ``dec_hidden``,
      ``dec_features``, ``latent_dim``).
    channels: image channels.
    likelihood: the decoder head, one of :data:`LIKELIHOODS`.
    activation: hidden activation, 'relu' | 'elu' | 'swish'.

  Returns:
    :class:`VAEPair` of unbound Flax modules and their sizes.

  Raises:
    ValueError: unknown variant, override, likelihood or activation; an image size not
      divisible by the number of stride-2 stages.
  """
  cfg = variants.resolve("VAE", VARIANTS, variant, default="mnist", defaults=_DEFAULTS,
                         overrides=kw)
  if likelihood not in LIKELIHOODS:
    raise ValueError(f"VAE likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
  _act(activation)
  size = int(cfg["image_size"])
  widths = {k: tuple(int(w) for w in cfg[k])
            for k in ("enc_features", "enc_hidden", "dec_hidden", "dec_features")}
  for name in ("enc_features", "dec_features"):
    if size % 2 ** len(widths[name]):
      raise ValueError(f"VAE image_size {size} must be divisible by 2^len({name}) ="
                       f" {2 ** len(widths[name])}, got {name}={widths[name]}.")
  latent = int(cfg["latent_dim"])
  return VAEPair(
      encoder=Encoder(image_size=size, features=widths["enc_features"],
                      hidden=widths["enc_hidden"], latent_dim=latent, activation=activation),
      decoder=Decoder(image_size=size, channels=channels, hidden=widths["dec_hidden"],
                      features=widths["dec_features"], likelihood=likelihood,
                      activation=activation),
      latent_dim=latent, image_size=size, channels=channels, likelihood=likelihood)
