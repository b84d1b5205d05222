"""Analytic FLOP counts of the benchmarked train steps, from the layers' shapes.

Only convolutions and dense layers are counted (they are > 95% of the arithmetic of these
models); BatchNorm, activations, losses, the degradation and Adam are left out. One
multiply-add is 2 FLOPs. A training step costs, per layer:

- forward: ``2 * macs``;
- weight gradient: ``2 * macs`` (every forward multiply-add has one in the weight
  gradient);
- input gradient: ``2 * macs``, except where nothing upstream needs it (the first layer of
  a network fed with data; XLA removes that computation, PyTorch never builds it).

``macs`` counts only the taps that land on real input values, not on zero padding or on the
holes of a fractionally-strided (transposed) convolution; this is the convention of XLA's
``cost_analysis()``. The textbook ``H * W * Cin * Cout * k * k`` is larger by the border
fraction (e.g. 16% for a 5x5 'SAME' convolution on a 17x17 image).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import ml_collections


@dataclasses.dataclass(frozen=True)
class Conv:
  """One 2-D convolution (a dense layer is a 1x1 convolution on a 1x1 map).

  Attributes:
    name: layer name (for printing).
    in_hw: input height and width (after any explicit padding such as SRCNN's edge pad).
    cin, cout: input / output channels.
    k: square kernel size.
    stride: window stride (regular convolution).
    dilation: input (lhs) dilation: the stride of a transposed convolution.
    padding: ``(low, high)`` zero padding on each spatial side, after dilation.
    input_grad: whether the step needs the gradient with respect to the input.
  """
  name: str
  in_hw: tuple[int, int]
  cin: int
  cout: int
  k: int
  stride: int = 1
  dilation: int = 1
  padding: tuple[int, int] = (0, 0)
  input_grad: bool = True

  def _axis(self, n: int) -> tuple[int, int]:
    """``(output size, (output, tap) pairs hitting a real input)`` along one axis."""
    lo, hi = self.padding
    span = self.dilation * (n - 1) + 1  # dilated input length
    m = (span + lo + hi - self.k) // self.stride + 1
    pairs = 0
    for o in range(m):
      for t in range(self.k):
        p = o * self.stride + t - lo  # position in the dilated input
        if 0 <= p < span and p % self.dilation == 0:
          pairs += 1
    return m, pairs

  @property
  def out_hw(self) -> tuple[int, int]:
    return self._axis(self.in_hw[0])[0], self._axis(self.in_hw[1])[0]

  def macs(self, batch: int) -> int:
    """Multiply-adds of the forward pass on ``batch`` examples."""
    return batch * self._axis(self.in_hw[0])[1] * self._axis(self.in_hw[1])[1] * (
        self.cin * self.cout)

  def naive_macs(self, batch: int) -> int:
    """Textbook count ``B * Hout * Wout * Cin * Cout * k * k`` (padding included)."""
    h, w = self.out_hw
    return batch * h * w * self.cin * self.cout * self.k * self.k


def same_padding(n: int, k: int, stride: int) -> tuple[int, int]:
  """XLA/TensorFlow 'SAME' padding of a regular convolution."""
  out = math.ceil(n / stride)
  total = max((out - 1) * stride + k - n, 0)
  return total // 2, total - total // 2


def transpose_same_padding(k: int, stride: int) -> tuple[int, int]:
  """Padding of ``jax.lax.conv_transpose(..., padding='SAME')`` (Flax ``ConvTranspose``)."""
  pad_len = k + stride - 2
  low = k - 1 if stride > k - 1 else math.ceil(pad_len / 2)
  return low, pad_len - low


def dense(name: str, fin: int, fout: int, input_grad: bool = True) -> Conv:
  return Conv(name, (1, 1), fin, fout, 1, input_grad=input_grad)


def _conv_same(name: str, hw: int, cin: int, cout: int, k: int, stride: int = 1,
               input_grad: bool = True) -> Conv:
  return Conv(name, (hw, hw), cin, cout, k, stride=stride,
              padding=same_padding(hw, k, stride), input_grad=input_grad)


# ------------------------------------------------------------------------ layer lists


def dncnn_layers(config: ml_collections.ConfigDict) -> list[Conv]:
  """DnCNN: ``depth`` 3x3 'SAME' convolutions on ``patch_size`` patches."""
  p, c = int(config.data.patch_size), int(config.model.channels)
  depth = int(config.model.get("depth", 20 if str(config.model.variant).startswith("B")
                               else 17))
  f = int(config.model.get("features", 64))
  widths = [c] + [f] * (depth - 1) + [c]
  return [_conv_same(f"conv{i}", p, widths[i], widths[i + 1], 3, input_grad=i > 0)
          for i in range(depth)]


def srcnn_layers(config: ml_collections.ConfigDict) -> list[Conv]:
  """SRCNN (edge padding: each layer is a valid conv on the edge-padded map)."""
  p, c = int(config.data.patch_size), int(config.model.channels)
  ks = {"9-1-5": (9, 1, 5), "9-3-5": (9, 3, 5), "9-5-5": (9, 5, 5)}[config.model.variant]
  n1, n2 = 64, 32
  widths = [c, n1, n2, c]
  return [Conv(f"conv{i + 1}", (p + k - 1, p + k - 1), widths[i], widths[i + 1], k,
               input_grad=i > 0) for i, k in enumerate(ks)]


def espcn_layers(config: ml_collections.ConfigDict) -> list[Conv]:
  """ESPCN on the LR patch (``patch_size / scale``): 5x5x64, 3x3x32, 3x3x(C r^2)."""
  r, c = int(config.degradation.scale), int(config.model.channels)
  lr = int(config.data.patch_size) // r
  return [_conv_same("conv1", lr, c, 64, 5, input_grad=False),
          _conv_same("conv2", lr, 64, 32, 3),
          _conv_same("conv3", lr, 32, c * r * r, 3)]


def _reject_unmodelled(options: dict, what: str) -> None:
  """Raises ValueError naming every ``key: (value, expected)`` of ``options`` that differs."""
  bad = {k: v for k, (v, ok) in options.items() if v != ok}
  if bad:
    raise ValueError(f"{what}; config has {bad}.")


# The DCGAN-family objectives the benchmark's PyTorch step implements: (D, G) loss names.
GAN_LOSS_PAIRS = {("d_minimax", "g_nonsaturating"): "logistic",
                  ("d_least_squares", "g_least_squares"): "least_squares",
                  ("d_hinge", "g_hinge"): "hinge"}


def check_dcgan_config(config: ml_collections.ConfigDict) -> str:
  """Returns the objective (a value of :data:`GAN_LOSS_PAIRS`) of a DCGAN-family config.

  Raises:
    ValueError: options the benchmark does not model: more than one D update per G
      update, a layer-normalised D, R1, another loss pair or loss weights other than 1,
      different optimizers for the two players.
  """
  def selected(losses):
    return tuple(sorted((k, float(v)) for k, v in losses.items() if float(v)))
  d, g = selected(config.losses.d), selected(config.losses.g)
  pair = (d[0][0], g[0][0]) if len(d) == len(g) == 1 else None
  norm = config.model.get("d_norm", "batch")
  options = {"model.d_norm": (norm if norm not in ("batch", "none") else "ok", "ok"),
             "train.n_critic": (int(config.train.get("n_critic", 1)), 1),
             "losses": ((d, g) if pair not in GAN_LOSS_PAIRS or d[0][1] != 1.0
                        or g[0][1] != 1.0 else "ok", "ok"),
             "optim.g == optim.d": (config.optim.g.to_dict() == config.optim.d.to_dict(), True)}
  _reject_unmodelled(options, "The dcgan/lsgan/sngan benchmarks model one D update per G"
                     " update with a batch- or un-normalised D and the loss pairs"
                     f" {list(GAN_LOSS_PAIRS)} (weights 1)")
  return GAN_LOSS_PAIRS[pair]


def check_wgan_gp_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError unless ``config`` is the WGAN-GP setting the benchmark's PyTorch
  reference implements: the DCGAN players with a layer-normalised critic, the Wasserstein
  losses with a gradient penalty, no R1, no EMA, equal Adam settings for both players."""
  options = {"model.d_norm": (config.model.get("d_norm"), "layer"),
             "model.spectral_norm": (bool(config.model.get("spectral_norm", False)), False),
             "model.ema_decay": (float(config.model.get("ema_decay", 0.0)), 0.0),
             "losses.d": (sorted(k for k, v in config.losses.d.items() if v),
                          ["d_wasserstein", "gradient_penalty"]),
             "losses.g": (sorted(k for k, v in config.losses.g.items() if v),
                          ["g_wasserstein"]),
             "optim.g == optim.d": (config.optim.g.to_dict() == config.optim.d.to_dict(), True)}
  _reject_unmodelled(options, "The wgan_gp benchmark models WGAN-GP with the DCGAN players"
                     " only")


def dcgan_layers(config: ml_collections.ConfigDict) -> tuple[list[Conv], list[Conv]]:
  """DCGAN 28x28 (``mnist`` / ``mnist-small``): ``(generator layers, discriminator layers)``."""
  check_dcgan_config(config)
  base = {"mnist": 64, "mnist-small": 32}[config.model.variant]
  c, z = int(config.model.channels), int(config.model.z_dim)
  pad = transpose_same_padding(4, 2)
  g = [dense("project", z, 7 * 7 * 2 * base, input_grad=False),
       Conv("up0", (7, 7), 2 * base, base, 4, dilation=2, padding=pad),
       Conv("to_image", (14, 14), base, c, 4, dilation=2, padding=pad)]
  d = [_conv_same("down0", 28, c, base, 4, 2, input_grad=False),
       _conv_same("down1", 14, base, 2 * base, 4, 2),
       dense("logit", 7 * 7 * 2 * base, 1)]
  return g, d


def vae_layers(config: ml_collections.ConfigDict) -> list[Conv]:
  """VAE with a dense decoder (``models/vae.py`` variants ``mnist``, ``mnist-small``):
  encoder 4x4 stride-2 'SAME' convolutions, dense to ``2 z``; decoder dense layers to every
  pixel's logit. Every layer but the first convolution needs its input gradient (the
  reparameterised z carries the decoder's gradient back into the encoder).

  Raises:
    ValueError: a convolutional decoder or a non-Bernoulli head (not modelled here).
  """
  from genrepair.models import vae  # pylint: disable=import-outside-toplevel
  mc = config.model
  spec = {**vae._DEFAULTS, **vae.VARIANTS[mc.variant]}  # pylint: disable=protected-access
  if spec["dec_features"] or spec["enc_hidden"] or mc.get("likelihood") != "bernoulli":
    raise ValueError(f"The vae benchmark models the dense-decoder Bernoulli VAE (variants"
                     f" mnist, mnist-small); config has variant {mc.variant!r}, likelihood"
                     f" {mc.get('likelihood')!r}.")
  size, c, z = int(spec["image_size"]), int(mc.channels), int(spec["latent_dim"])
  layers, width, hw = [], c, size
  for i, f in enumerate(spec["enc_features"]):
    layers.append(_conv_same(f"down{i}", hw, width, f, 4, 2, input_grad=i > 0))
    width, hw = f, math.ceil(hw / 2)
  layers.append(dense("to_latent", hw * hw * width, 2 * z))
  fin = z
  for i, f in enumerate(spec["dec_hidden"]):
    layers.append(dense(f"hidden{i}", fin, f))
    fin = f
  layers.append(dense("to_image", fin, size * size * c))
  return layers


def cyclegan_variant(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The CycleGAN networks' sizes (``channels``, ``image_size``, ``g_features``,
  ``num_down``, ``num_blocks``, ``d_features``, ``d_layers``) of ``config``.

  Raises:
    ValueError: options the benchmark's PyTorch step does not implement (training jitter,
      other losses, different optimizers for generators and discriminators).
  """
  from genrepair.models import cyclegan  # pylint: disable=import-outside-toplevel
  mc = config.model
  kw = {k: v for k, v in mc.items() if k not in ("name", "variant")}
  nets = cyclegan.Model(variant=mc.get("variant") or None, **kw)
  lo = config.losses
  options = {"train.load_size": (int(config.train.get("load_size", 0)), 0),
             "train.flip": (bool(config.train.get("flip", False)), False),
             "losses": ({k: sorted(lo[k]) for k in lo},
                        {"g": ["g_least_squares"], "d": ["d_least_squares"],
                         "cycle": ["l1"], "identity": ["l1"]}),
             "optim.g == optim.d": (config.optim.g.to_dict() == config.optim.d.to_dict(), True)}
  _reject_unmodelled(options, "The cyclegan benchmark models the digits CycleGAN setting only")
  g, d = nets.generator, nets.discriminator
  return dict(channels=nets.channels, image_size=nets.image_size, g_features=g.features,
              num_down=g.num_down, num_blocks=g.num_blocks, d_features=d.features,
              d_layers=d.num_layers)


def cyclegan_layers(config: ml_collections.ConfigDict) -> tuple[list[Conv], list[Conv]]:
  """CycleGAN's ResNet generator and PatchGAN discriminator: ``(G layers, D layers)`` (one
  of each; the step uses two of each). Reflection-padded convolutions are 'VALID' ones on
  the padded map; the generator's first layer needs no input gradient (on real images)."""
  v = cyclegan_variant(config)
  c, size, k = v["channels"], v["image_size"], v["g_features"]
  g = [Conv("c7s1_in", (size + 6, size + 6), c, k, 7, input_grad=False)]
  hw, w = size, k
  for i in range(v["num_down"]):
    g.append(Conv(f"down{i}", (hw, hw), w, 2 * w, 3, stride=2, padding=(1, 1)))
    hw, w = (hw - 1) // 2 + 1, 2 * w
  for i in range(v["num_blocks"]):
    g += [Conv(f"block{i}_conv{j}", (hw + 2, hw + 2), w, w, 3) for j in range(2)]
  for i in range(v["num_down"]):
    g.append(Conv(f"up{i}", (hw, hw), w, w // 2, 3, dilation=2, padding=(1, 2)))
    hw, w = 2 * hw, w // 2
  g.append(Conv("c7s1_out", (hw + 6, hw + 6), w, c, 7))
  f, hw = v["d_features"], size
  d = [Conv("conv0", (hw, hw), c, f, 4, stride=2, padding=(1, 1), input_grad=False)]
  hw, w = d[0].out_hw[0], f
  for i in range(1, v["d_layers"] + 1):
    out = f * min(2 ** i, 8)
    d.append(Conv(f"conv{i}", (hw, hw), w, out, 4, stride=2 if i < v["d_layers"] else 1,
                  padding=(1, 1)))
    hw, w = d[-1].out_hw[0], out
  d.append(Conv("score", (hw, hw), w, 1, 4, padding=(1, 1)))
  return g, d


def cyclegan_step_flops(g: Sequence[Conv], d: Sequence[Conv], batch: int) -> int:
  """``genrepair.tasks.cyclegan.CycleGANTask.train_step`` with the identity loss.

  Generators' update, per generator (G; F alike): forward on ``[a; b]`` (2B) and on the
  other generator's output (B, the cycle); weight gradients over those 3B; input
  gradients on the 2B real images (not at the first layer) and through every layer on the
  B generated ones (they depend on the other generator). Per discriminator: forward on B
  generated images and input gradients through every layer (no weight gradient).
  Discriminators' update, per discriminator: forward, weight and input gradients (not at
  the first layer) on B real + B buffered images.
  """
  gen = (2 * _fwd(g, 3 * batch) + _input_grad(g, 2 * batch)
         + _input_grad(g, batch, all_layers=True))
  disc_in_g = _fwd(d, batch) + _input_grad(d, batch, all_layers=True)
  disc = 2 * _fwd(d, 2 * batch) + _input_grad(d, 2 * batch)
  return 2 * (gen + disc_in_g + disc)


# ------------------------------------------------------------------------ step counts


def _fwd(layers: Sequence[Conv], batch: int) -> int:
  return sum(2 * l.macs(batch) for l in layers)


def _input_grad(layers: Sequence[Conv], batch: int, *, all_layers: bool = False) -> int:
  return sum(2 * l.macs(batch) for l in layers if all_layers or l.input_grad)


def restoration_step_flops(layers: Sequence[Conv], batch: int) -> int:
  """Forward + weight gradient + input gradient (where ``input_grad``): any one-network
  step (the restoration models, the VAE's encoder + decoder)."""
  return 2 * _fwd(layers, batch) + _input_grad(layers, batch)


def gan_step_flops(g: Sequence[Conv], d: Sequence[Conv], batch: int) -> int:
  """``genrepair.tasks.gan.GANTask.train_step``: one D update, then one G update.

  D update: G forward (no gradient), D forward on the real and on the fake batch, D weight
  and input gradients on both (no input gradient at D's first layer: neither batch needs
  one). G update: G forward, D forward, D input gradients through every layer down to
  the image (no D weight gradient), G weight and input gradients.
  """
  d_update = _fwd(g, batch) + 2 * (2 * _fwd(d, batch) + _input_grad(d, batch))
  g_update = (_fwd(g, batch) + _fwd(d, batch) + _input_grad(d, batch, all_layers=True)
              + _fwd(g, batch) + _input_grad(g, batch))
  return d_update + g_update


def step_flops(model: str, config: ml_collections.ConfigDict) -> int | None:
  """Analytic FLOPs of one train step of a benchmark ``model`` under ``config``; None for
  ``wgan_gp`` and ``stylegan2`` (the gradient penalty, R1 and the path length term
  differentiate a network twice: XLA's count only)."""
  batch = int(config.train.batch_size)
  if model == "wgan_gp":
    check_wgan_gp_config(config)
    return None
  if model == "stylegan2":
    return None
  if model in ("dcgan", "lsgan", "sngan"):
    return gan_step_flops(*dcgan_layers(config), batch)
  if model == "cyclegan":
    return cyclegan_step_flops(*cyclegan_layers(config), batch)
  layers = {"dncnn": dncnn_layers, "srcnn": srcnn_layers, "espcn": espcn_layers,
            "vae": vae_layers}[model]
  return restoration_step_flops(layers(config), batch)
