"""PyTorch reference versions of the benchmarked models and train steps (eager, CPU).

Written from the papers and the genrepair model docstrings, with the same layer shapes and
parameter counts (``benchmarks.step`` asserts the counts at start-up). They exist only to
time the same computation in another framework: the initialisation and padding details
that do not change the arithmetic (e.g. where a transposed convolution's padding sits) are
not matched, so outputs differ from genrepair's.

Layout is PyTorch's NCHW. Needs ``torch`` (``pip install -e .[bench]``); nothing in
``genrepair`` imports this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import flops


def num_params(module: nn.Module) -> int:
  """Trainable parameters (BatchNorm scale/shift included, running statistics not)."""
  return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- DCGAN


class DCGANGenerator(nn.Sequential):
  """z [B, z_dim] -> image [B, C, 28, 28] in [-1, 1] (genrepair.models.dcgan.Generator)."""

  def __init__(self, z_dim: int = 100, channels: int = 1, base: int = 64):
    self.start_width = 2 * base
    super().__init__(
        nn.Linear(z_dim, 7 * 7 * 2 * base, bias=False),  # no bias before BatchNorm
        nn.Unflatten(1, (2 * base, 7, 7)),
        nn.BatchNorm2d(2 * base, eps=1e-5, momentum=0.1), nn.ReLU(),
        nn.ConvTranspose2d(2 * base, base, 4, 2, 1, bias=False),  # 7 -> 14
        nn.BatchNorm2d(base, eps=1e-5, momentum=0.1), nn.ReLU(),
        nn.ConvTranspose2d(base, channels, 4, 2, 1),  # 14 -> 28
        nn.Tanh())
    for p in self.parameters():  # DCGAN Sec. 4: N(0, 0.02) weights.
      if p.dim() > 1:
        nn.init.normal_(p, std=0.02)


class ChannelLayerNorm(nn.Module):
  """flax ``LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1)`` in NCHW: statistics over
  C, H, W of each example, then a per-channel scale and shift (``[C]`` each)."""

  def __init__(self, channels: int, eps: float = 1e-5):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.layer_norm(x, x.shape[1:], eps=self.eps)
    return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class DCGANDiscriminator(nn.Sequential):
  """image [B, C, 28, 28] -> logit [B] (genrepair.models.dcgan.Discriminator).

  ``norm``: 'batch' (DCGAN), 'layer' (:class:`ChannelLayerNorm`, the WGAN-GP critic) or
  'none' (a bias instead); ``spectral_norm``: every weight
  spectrally normalised (Miyato et al. 2018; one power iteration per training forward
  pass, as flax's ``SpectralNorm(n_steps=1)``).
  """

  def __init__(self, channels: int = 1, base: int = 64, norm: str = "batch",
               spectral_norm: bool = False):
    hidden = [nn.Conv2d(base, 2 * base, 4, 2, 1, bias=norm == "none")]  # 14 -> 7
    if norm == "batch":
      hidden.append(nn.BatchNorm2d(2 * base, eps=1e-5, momentum=0.1))
    elif norm == "layer":
      hidden.append(ChannelLayerNorm(2 * base))
    elif norm != "none":
      raise ValueError(f"DCGANDiscriminator norm must be 'batch', 'layer' or 'none', got"
                       f" {norm!r}.")
    super().__init__(
        nn.Conv2d(channels, base, 4, 2, 1), nn.LeakyReLU(0.2),  # 28 -> 14, no norm
        *hidden, nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(7 * 7 * 2 * base, 1), nn.Flatten(0))
    for p in self.parameters():
      if p.dim() > 1:
        nn.init.normal_(p, std=0.02)
    if spectral_norm:
      for i, m in enumerate(self):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
          self[i] = nn.utils.parametrizations.spectral_norm(m, n_power_iterations=1)


# (D loss of real and fake logits, G loss of fake logits), batch means of the per-example
# losses of genrepair.losses.adversarial.
GAN_LOSSES = {
    "logistic": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),  # d_minimax
                 lambda f: F.softplus(-f).mean()),                         # g_nonsaturating
    "least_squares": (lambda r, f: 0.5 * (r - 1).square().mean() + 0.5 * f.square().mean(),
                      lambda f: 0.5 * (f - 1).square().mean()),
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
}


class GANStep:
  """genrepair.tasks.gan.GANTask.train_step in eager PyTorch: one D then one G update.

  ``loss``: a key of :data:`GAN_LOSSES` (DCGAN: 'logistic', the minimax D loss and the
  non-saturating G loss on logits), Adam for both; G runs in train mode to make the D
  update's fake batch (no gradient); the G update goes through the updated D (its weights
  frozen, so no D weight gradient is computed, as in JAX); with ``ema_decay`` > 0 an
  exponential moving average of G's parameters is updated after each G step.
  """

  def __init__(self, *, z_dim: int, channels: int, base: int, lr: float, b1: float,
               b2: float, eps: float, loss: str = "logistic", d_norm: str = "batch",
               spectral_norm: bool = False, ema_decay: float = 0.0):
    self.z_dim = z_dim
    self.g = DCGANGenerator(z_dim, channels, base).train()
    self.d = DCGANDiscriminator(channels, base, d_norm, spectral_norm).train()
    self.d_loss_fn, self.g_loss_fn = GAN_LOSSES[loss]
    self.ema_decay = ema_decay
    self.g_ema = [p.detach().clone() for p in self.g.parameters()] if ema_decay else []
    self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=(b1, b2), eps=eps)

  def num_params(self) -> dict[str, int]:
    return {"generator": num_params(self.g), "discriminator": num_params(self.d)}

  def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[B, C, H, W]`` real images; returns the metrics."""
    real = images.float() / 127.5 - 1.0
    b = real.shape[0]
    with torch.no_grad():
      fake = self.g(torch.randn(b, self.z_dim))
    self.opt_d.zero_grad(set_to_none=True)
    real_logits, fake_logits = self.d(real), self.d(fake)
    d_loss = self.d_loss_fn(real_logits, fake_logits)
    d_loss.backward()
    self.opt_d.step()

    self.opt_g.zero_grad(set_to_none=True)
    self.d.requires_grad_(False)
    g_loss = self.g_loss_fn(self.d(self.g(torch.randn(b, self.z_dim))))
    g_loss.backward()
    self.opt_g.step()
    self.d.requires_grad_(True)
    with torch.no_grad():
      if self.ema_decay:
        torch._foreach_lerp_(self.g_ema, list(self.g.parameters()), 1.0 - self.ema_decay)  # pylint: disable=protected-access
      return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
              "D(x)": torch.sigmoid(real_logits).mean(),
              "D(G(z))": torch.sigmoid(fake_logits).mean(),
              "d_grad_norm": _grad_norm(self.d), "g_grad_norm": _grad_norm(self.g)}


class WGANGPStep(GANStep):
  """genrepair.tasks.gan.GANTask.train_step with the WGAN-GP objective (Gulrajani et al.
  2017, Algorithm 1): ``n_critic`` critic updates, update ``j`` on real rows ``j, j + n,
  ...`` of the step's batch and as many G(z) (G in train mode, no gradient), loss
  ``E D(G(z)) - E D(x) + lambda E (||grad D(x_hat)|| - 1)^2`` (``x_hat`` a per-example
  uniform interpolate; the norm as ``sqrt(sum g^2 + 1e-12)``, double back-propagation
  through ``create_graph=True``); then one G update ``-E D(G(z))`` on fresh latents.
  """

  def __init__(self, *, z_dim: int, channels: int, base: int, n_critic: int, gp: float,
               lr: float, b1: float, b2: float, eps: float):
    super().__init__(z_dim=z_dim, channels=channels, base=base, lr=lr, b1=b1, b2=b2, eps=eps,
                     d_norm="layer")
    self.n_critic, self.gp = n_critic, gp

  def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[n_critic * B, C, H, W]`` real images; returns the metrics."""
    reals = images.float() / 127.5 - 1.0
    n = self.n_critic
    b = reals.shape[0] // n
    for j in range(n):
      real = reals[j::n]
      with torch.no_grad():
        fake = self.g(torch.randn(b, self.z_dim))
      self.opt_d.zero_grad(set_to_none=True)
      real_scores, fake_scores = self.d(real), self.d(fake)
      eps = torch.rand(b, 1, 1, 1)
      x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
      (grad,) = torch.autograd.grad(self.d(x_hat).sum(), x_hat, create_graph=True)
      norm = torch.sqrt(grad.square().sum(dim=(1, 2, 3)) + 1e-12)
      gp = (norm - 1.0).square().mean()
      d_loss = fake_scores.mean() - real_scores.mean() + self.gp * gp
      d_loss.backward()
      self.opt_d.step()

    self.opt_g.zero_grad(set_to_none=True)
    self.d.requires_grad_(False)
    g_loss = -self.d(self.g(torch.randn(b, self.z_dim))).mean()
    g_loss.backward()
    self.opt_g.step()
    self.d.requires_grad_(True)
    with torch.no_grad():
      return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
              "gradient_penalty": gp.detach(), "d_real_score": real_scores.mean(),
              "d_fake_score": fake_scores.mean(),
              "d_grad_norm": _grad_norm(self.d), "g_grad_norm": _grad_norm(self.g)}


# -------------------------------------------------------------------------- CycleGAN


def _cyclegan_init(module: nn.Module) -> nn.Module:
  """N(0, 0.02) weights, zero biases (genrepair.models.cyclegan, the reference code)."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, std=0.02)
      nn.init.zeros_(m.bias)
  return module


class ResnetBlock(nn.Module):
  """``x + IN(conv3(pad(ReLU(IN(conv3(pad(x)))))))`` with reflection padding."""

  def __init__(self, k: int):
    super().__init__()
    self.body = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(k, k, 3), nn.InstanceNorm2d(k), nn.ReLU(),
        nn.ReflectionPad2d(1), nn.Conv2d(k, k, 3), nn.InstanceNorm2d(k))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.body(x)


def resnet_generator(channels: int, k: int, num_down: int, num_blocks: int) -> nn.Sequential:
  """genrepair.models.cyclegan.ResnetGenerator: c7s1-k, d2k, ..., R x n, ..., u k, c7s1-C."""
  layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, k, 7), nn.InstanceNorm2d(k), nn.ReLU()]
  width = k
  for _ in range(num_down):
    layers += [nn.Conv2d(width, 2 * width, 3, 2, 1), nn.InstanceNorm2d(2 * width), nn.ReLU()]
    width *= 2
  layers += [ResnetBlock(width) for _ in range(num_blocks)]
  for _ in range(num_down):
    layers += [nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1),
               nn.InstanceNorm2d(width // 2), nn.ReLU()]
    width //= 2
  layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
  return _cyclegan_init(nn.Sequential(*layers))


def patch_discriminator(channels: int, k: int, num_layers: int) -> nn.Sequential:
  """genrepair.models.cyclegan.PatchDiscriminator: 4x4 convs with padding 1, strides 2 then
  1, instance norm after all but the first, LeakyReLU 0.2, a 1-channel score map."""
  layers = [nn.Conv2d(channels, k, 4, 2, 1), nn.LeakyReLU(0.2)]
  width = k
  for i in range(1, num_layers + 1):
    out = k * min(2 ** i, 8)
    layers += [nn.Conv2d(width, out, 4, 2 if i < num_layers else 1, 1),
               nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
    width = out
  layers.append(nn.Conv2d(width, 1, 4, 1, 1))
  return _cyclegan_init(nn.Sequential(*layers))


class ImagePool:
  """The history buffer of generated images (Shrivastava et al. 2017; CycleGAN Sec. 4)."""

  def __init__(self, size: int):
    self.size, self.images = size, []

  def query(self, images: torch.Tensor) -> torch.Tensor:
    if self.size == 0:
      return images
    out = []
    for image in images:
      image = image.unsqueeze(0)
      if len(self.images) < self.size:
        self.images.append(image)
        out.append(image)
      elif torch.rand(()) > 0.5:
        i = int(torch.randint(0, self.size, ()))
        out.append(self.images[i].clone())
        self.images[i] = image
      else:
        out.append(image)
    return torch.cat(out)


class CycleGANStep:
  """genrepair.tasks.cyclegan.CycleGANTask.train_step in eager PyTorch.

  Generators' update: G on ``[a; b]`` and F on ``[b; a]`` in one pass each (translation and
  identity), the cycles F(G(a)) and G(F(b)), least-squares adversarial terms through the
  (frozen) discriminators, cycle and identity L1; one Adam over G and F. Then the
  discriminators' update on real images and generated ones drawn from the history buffers;
  one Adam over D_A and D_B. Loss weights from the config (``losses.g``, ``cycle``,
  ``identity``); lr constant (genrepair's linear decay is one scalar per step).
  """

  def __init__(self, *, channels: int, g_features: int, num_down: int, num_blocks: int,
               d_features: int, d_layers: int, pool_size: int, w_adv: float, w_cycle: float,
               w_identity: float, w_d: float, lr: float, b1: float, b2: float, eps: float):
    gen = lambda: resnet_generator(channels, g_features, num_down, num_blocks).train()
    disc = lambda: patch_discriminator(channels, d_features, d_layers).train()
    self.g, self.f, self.d_a, self.d_b = gen(), gen(), disc(), disc()
    self.w_adv, self.w_cycle, self.w_identity, self.w_d = w_adv, w_cycle, w_identity, w_d
    self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
    adam = lambda params: torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps)
    self.opt_gen = adam([*self.g.parameters(), *self.f.parameters()])
    self.opt_disc = adam([*self.d_a.parameters(), *self.d_b.parameters()])

  def num_params(self) -> dict[str, int]:
    return {"G": num_params(self.g), "F": num_params(self.f), "D_A": num_params(self.d_a),
            "D_B": num_params(self.d_b)}

  def __call__(self, images_a: torch.Tensor, images_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[B, C, H, W]`` images of each domain; returns the metrics."""
    real_a, real_b = images_a.float() / 127.5 - 1.0, images_b.float() / 127.5 - 1.0
    n = real_a.shape[0]
    lsq = lambda x, target: 0.5 * (x - target).square().mean()
    self.opt_gen.zero_grad(set_to_none=True)
    for d in (self.d_a, self.d_b):
      d.requires_grad_(False)
    out_g, out_f = self.g(torch.cat([real_a, real_b])), self.f(torch.cat([real_b, real_a]))
    fake_b, fake_a = out_g[:n], out_f[:n]
    rec_a, rec_b = self.f(fake_b), self.g(fake_a)
    g_loss = (self.w_adv * (lsq(self.d_b(fake_b), 1.0) + lsq(self.d_a(fake_a), 1.0))
              + self.w_cycle * ((rec_a - real_a).abs().mean() + (rec_b - real_b).abs().mean())
              + self.w_identity * ((out_g[n:] - real_b).abs().mean()
                                   + (out_f[n:] - real_a).abs().mean()))
    g_loss.backward()
    self.opt_gen.step()
    for d in (self.d_a, self.d_b):
      d.requires_grad_(True)

    shown_a = self.pool_a.query(fake_a.detach())
    shown_b = self.pool_b.query(fake_b.detach())
    self.opt_disc.zero_grad(set_to_none=True)
    s = {"a_real": self.d_a(real_a), "a_fake": self.d_a(shown_a),
         "b_real": self.d_b(real_b), "b_fake": self.d_b(shown_b)}
    d_loss = self.w_d * (lsq(s["a_real"], 1.0) + lsq(s["a_fake"], 0.0)
                         + lsq(s["b_real"], 1.0) + lsq(s["b_fake"], 0.0))
    d_loss.backward()
    self.opt_disc.step()
    with torch.no_grad():
      return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(),
              "cycle_l1_aba": (rec_a - real_a).abs().mean() / 2.0,
              "cycle_l1_bab": (rec_b - real_b).abs().mean() / 2.0,
              **{f"D({k})": v.mean() for k, v in s.items()}}


# ----------------------------------------------------------------------- restoration


class DnCNN(nn.Module):
  """DnCNN (Zhang et al. 2017): ``y - R(y)``, R = Conv+ReLU, (depth-2) x Conv+BN+ReLU, Conv."""

  def __init__(self, depth: int = 17, features: int = 64, channels: int = 1):
    super().__init__()
    layers = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 2):
      layers += [nn.Conv2d(features, features, 3, padding=1, bias=False),
                 nn.BatchNorm2d(features, eps=1e-4, momentum=0.1), nn.ReLU()]
    layers.append(nn.Conv2d(features, channels, 3, padding=1))
    self.body = nn.Sequential(*layers)

  def forward(self, y: torch.Tensor) -> torch.Tensor:
    return y - self.body(y)


class SRCNN(nn.Module):
  """SRCNN (Dong et al. 2014) with edge-replicate padding before each valid convolution."""

  def __init__(self, kernel_sizes: tuple[int, int, int] = (9, 1, 5),
               features: tuple[int, int] = (64, 32), channels: int = 1):
    super().__init__()
    widths = (channels, *features, channels)
    self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], k)
                               for i, k in enumerate(kernel_sizes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i, conv in enumerate(self.convs):
      p = conv.kernel_size[0] // 2
      x = conv(F.pad(x, (p, p, p, p), mode="replicate") if p else x)
      if i < len(self.convs) - 1:
        x = F.relu(x)
    return x


class ESPCN(nn.Sequential):
  """ESPCN (Shi et al. 2016): 5x5x64 tanh, 3x3x32 tanh, 3x3x(C r^2), pixel shuffle."""

  def __init__(self, scale: int = 3, channels: int = 1):
    super().__init__(
        nn.Conv2d(channels, 64, 5, padding=2), nn.Tanh(),
        nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
        nn.Conv2d(32, channels * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale))


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
  """BT.601 Y of RGB ``[B, 3, H, W]`` in [0, 1], rounded to 8 bits (as the JAX task)."""
  w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255.0
  y = 16.0 / 255.0 + (x * w).sum(dim=1, keepdim=True)
  return torch.floor(y * 255.0 + 0.5) / 255.0


class RestorationStep:
  """genrepair.tasks.restoration.RestorationTask.train_step in eager PyTorch.

  The clean uint8 batch is converted (and reduced to Y when the model is 1-channel and the
  data RGB), degraded on the fly, restored, and the L2 loss minimised with Adam.
  Degradations: Gaussian noise (``sigma`` on the 0-255 scale, not clipped) or bicubic
  down-sampling by ``scale`` with ``F.interpolate(mode='bicubic', antialias=True)``, an
  approximation of the MATLAB ``imresize`` that genrepair implements (same kind of
  separable filtering, not the same numbers), followed for SRCNN by bicubic up-sampling.
  """

  def __init__(self, model: nn.Module, *, channels: int, kind: str, sigma: float = 0.0,
               scale: int = 1, sr_input: str | None = None, lr: float, b1: float,
               b2: float, eps: float):
    self.model = model.train()
    self.channels, self.kind, self.sigma = channels, kind, sigma
    self.scale, self.sr_input = scale, sr_input
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=eps)

  def num_params(self) -> dict[str, int]:
    return {"model": num_params(self.model)}

  def degrade(self, clean: torch.Tensor) -> torch.Tensor:
    if self.kind == "gaussian_noise":
      return clean + self.sigma / 255.0 * torch.randn_like(clean)
    h, w = clean.shape[-2:]
    lr = F.interpolate(clean, size=(h // self.scale, w // self.scale), mode="bicubic",
                       align_corners=False, antialias=True)
    if self.sr_input == "lr":
      return lr
    return F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False)

  def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[B, C, H, W]`` clean patches; returns the metrics."""
    clean = images.float() / 255.0
    if clean.shape[1] != self.channels:
      clean = rgb_to_y(clean)
    with torch.no_grad():
      x = self.degrade(clean)
    self.opt.zero_grad(set_to_none=True)
    out = self.model(x)
    loss = F.mse_loss(out, clean)
    loss.backward()
    self.opt.step()
    with torch.no_grad():
      mse = (out.clamp(0, 1) - clean).square().mean(dim=(1, 2, 3))
      return {"loss": loss.detach(), "psnr": (-10.0 * torch.log10(mse)).mean(),
              "grad_norm": _grad_norm(self.model)}


# ------------------------------------------------------------------------------- VAE


class VAE(nn.Module):
  """genrepair.models.vae with a dense decoder (variants ``mnist``, ``mnist-small``).

  Encoder: 4x4 stride-2 convolutions with padding 1 (= 'SAME' on 28 -> 14 -> 7), ReLU,
  flatten, dense to ``(mu, log_var)``. Decoder: dense + ReLU layers, dense to one logit per
  pixel. Input ``[B, C, H, W]`` in {0, 1}; ``forward(x, eps)`` -> (logits ``[B, C*H*W]``,
  mu, log_var ``[B, z]``).
  """

  def __init__(self, *, image_size: int = 28, channels: int = 1,
               enc_features: tuple[int, ...] = (32, 64),
               dec_hidden: tuple[int, ...] = (512,), latent_dim: int = 32):
    super().__init__()
    layers, width, hw = [], channels, image_size
    for f in enc_features:
      layers += [nn.Conv2d(width, f, 4, 2, 1), nn.ReLU()]
      width, hw = f, (hw + 1) // 2
    self.encoder = nn.Sequential(*layers, nn.Flatten(),
                                 nn.Linear(hw * hw * width, 2 * latent_dim))
    layers, fin = [], latent_dim
    for f in dec_hidden:
      layers += [nn.Linear(fin, f), nn.ReLU()]
      fin = f
    self.decoder = nn.Sequential(*layers, nn.Linear(fin, image_size * image_size * channels))

  def forward(self, x: torch.Tensor, eps: torch.Tensor):
    mu, log_var = self.encoder(x).chunk(2, dim=1)
    z = mu + torch.exp(0.5 * log_var) * eps  # reparameterisation (Kingma & Welling Sec. 2.4)
    return self.decoder(z), mu, log_var


class VAEStep:
  """genrepair.tasks.vae.VAETask.train_step (Bernoulli likelihood) in eager PyTorch.

  Dynamic binarisation ``x = 1[u < p / 255]``, one reparameterised sample, loss = batch
  mean of ``-log p(x|z) + beta KL`` (nats per image; the KL in closed form), Adam.
  """

  def __init__(self, model: VAE, *, beta: float, lr: float, b1: float, b2: float,
               eps: float):
    self.model, self.beta = model.train(), beta
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=eps)

  def num_params(self) -> dict[str, int]:
    return {"encoder": num_params(self.model.encoder),
            "decoder": num_params(self.model.decoder)}

  def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on uint8 ``[B, C, H, W]`` digits; returns the metrics."""
    with torch.no_grad():
      x = (torch.rand(images.shape) < images.float() / 255.0).float()
    self.opt.zero_grad(set_to_none=True)
    logits, mu, log_var = self.model(x, torch.randn(x.shape[0], self.model.decoder[0].in_features))
    recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
    kl = 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).sum(1)
    loss = (recon + self.beta * kl).mean()
    loss.backward()
    self.opt.step()
    with torch.no_grad():
      elbo = -(recon.mean() + kl.mean())
      return {"loss": loss.detach(), "elbo": elbo, "recon": recon.mean(), "kl": kl.mean(),
              "bits_per_dim": -elbo / (x[0].numel() * math.log(2.0)),
              "grad_norm": _grad_norm(self.model)}


def _grad_norm(module: nn.Module) -> torch.Tensor:
  grads = [p.grad for p in module.parameters() if p.grad is not None]
  return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# ----------------------------------------------------------------------- from config


def make_step(model: str, config) -> GANStep | RestorationStep | VAEStep | CycleGANStep:
  """The PyTorch train step of benchmark ``model`` for a genrepair experiment ``config``."""
  mc = config.model
  if model == "stylegan2":
    from benchmarks import torch_stylegan2  # pylint: disable=import-outside-toplevel
    return torch_stylegan2.make_step(config)
  if model == "cyclegan":
    v = flops.cyclegan_variant(config)
    o = config.optim.g
    return CycleGANStep(
        channels=int(v["channels"]), g_features=int(v["g_features"]),
        num_down=int(v["num_down"]), num_blocks=int(v["num_blocks"]),
        d_features=int(v["d_features"]), d_layers=int(v["d_layers"]),
        pool_size=int(config.train.pool_size),
        w_adv=float(config.losses.g.g_least_squares), w_cycle=float(config.losses.cycle.l1),
        w_identity=float(config.losses.identity.l1), w_d=float(config.losses.d.d_least_squares),
        lr=o.lr, b1=o.b1, b2=o.b2, eps=o.eps)
  if model == "wgan_gp":
    flops.check_wgan_gp_config(config)
    o = config.optim.d
    return WGANGPStep(z_dim=int(mc.z_dim), channels=int(mc.channels),
                      base={"mnist": 64, "mnist-small": 32}[mc.variant],
                      n_critic=int(config.train.n_critic),
                      gp=float(config.losses.d.gradient_penalty), lr=o.lr, b1=o.b1, b2=o.b2,
                      eps=o.eps)
  if model == "vae":
    from genrepair.models import vae  # pylint: disable=import-outside-toplevel
    flops.vae_layers(config)  # raises for the variants this reference does not cover
    spec = {**vae._DEFAULTS, **vae.VARIANTS[mc.variant]}  # pylint: disable=protected-access
    if set(config.losses) != {"bernoulli_nll", "kl_normal"} or mc.get("activation") != "relu":
      raise ValueError(f"The vae benchmark models losses bernoulli_nll + kl_normal with ReLU;"
                       f" config has {dict(config.losses)}, {mc.get('activation')!r}.")
    o = config.optim
    net = VAE(image_size=int(spec["image_size"]), channels=int(mc.channels),
              enc_features=tuple(spec["enc_features"]),
              dec_hidden=tuple(spec["dec_hidden"]), latent_dim=int(spec["latent_dim"]))
    return VAEStep(net, beta=float(config.losses.kl_normal), lr=o.lr, b1=o.b1, b2=o.b2,
                   eps=o.eps)
  if model in ("dcgan", "lsgan", "sngan"):
    loss = flops.check_dcgan_config(config)
    base = {"mnist": 64, "mnist-small": 32}[mc.variant]
    o = config.optim.d
    return GANStep(z_dim=int(mc.z_dim), channels=int(mc.channels), base=base, lr=o.lr,
                   b1=o.b1, b2=o.b2, eps=o.eps, loss=loss,
                   d_norm=mc.get("d_norm", "batch"),
                   spectral_norm=bool(mc.get("spectral_norm", False)),
                   ema_decay=float(mc.get("ema_decay", 0.0)))
  dc, o, c = config.degradation, config.optim, int(mc.channels)
  if model == "dncnn":
    depth = {"S": 17, "B": 20}[mc.variant]
    net, sr_input = DnCNN(depth=depth, channels=c), None
  elif model == "srcnn":
    ks = tuple(int(k) for k in mc.variant.split("-"))
    net, sr_input = SRCNN(kernel_sizes=ks, channels=c), "bicubic"
  elif model == "espcn":
    net, sr_input = ESPCN(scale=int(dc.scale), channels=c), "lr"
  else:
    raise ValueError(f"No PyTorch reference for model {model!r}.")
  return RestorationStep(net, channels=c, kind=dc.kind, sigma=float(dc.sigma),
                         scale=int(dc.scale), sr_input=sr_input, lr=o.lr, b1=o.b1, b2=o.b2,
                         eps=o.eps)
