r"""Non-blind deblurring with a U-Net: Levin et al. (2009) motion kernels + 1% Gaussian noise.

Launch (accelerator budget):

  python launch.py train --config experiments/deblur_levin.py --workdir runs/deblur_levin

CPU budget (2 cores, a smaller U-Net, see `runlocal`):

  python launch.py train --config experiments/deblur_levin.py:runlocal --workdir runs/deblur_levin_cpu
  python launch.py eval --workdir runs/deblur_levin_cpu --dataset set12

Setting: the IRCNN/DPIR deblurring benchmark (Zhang et al., CVPR 2017 Sec. 5.2; TPAMI 2021
Sec. 6.2): ``y = k (*) x + n`` with circular convolution by one of the 8 real camera-shake
kernels of Levin et al. (CVPR 2009, `$GENREPAIR_DATA/blur/Levin09.mat`, 13x13 to 27x27) and
white noise of sigma 2.55 (1% of 255). The setting is non-blind: the kernel and sigma are
known. The network gets the Wiener deconvolution of the blurred image with the true kernel
(genrepair.deconvolution) next to the blurred image and refines it through a global
residual: the two-stage scheme of Schuler et al. (CVPR 2013), "regularised inversion, then
a learned artifact remover" (`degradation.deconvolution='wiener'`). With
`--config.degradation.deconvolution=none` the network sees the blurred image alone and has
to infer the 8 kernels itself (the blind row of experiments/README.md). The Wiener
deconvolution baseline is given the true kernel and noise level (genrepair.baselines).
Restoring a file needs its kernel: `launch.py restore blurred.png -o out.png --workdir W
--kernel k.npy`.

Model: the U-Net of Ronneberger et al. (2015) with a global residual (`unet`, variant
`deblur`: the output is the Wiener estimate plus the U-Net's correction), L1 loss, Adam
1e-4 (the common restoration setting, e.g. DPIR's DRUNet training).
Evaluation: Set12 (12 grayscale images), image i blurred by kernel i mod 8, noise from
fold_in(key(0), i); PSNR/SSIM on all pixels of the uint8-rounded output. DPIR reports its
numbers on Set3C/CBSD, not Set12, so there is no published row to match here: the table in
experiments/README.md compares against the blurred input and Wiener deconvolution.

Measured (`runlocal`, 6,000 steps, 23 min 38 s on 2 CPU cores, experiments/README.md):
Set12 **30.42 dB / SSIM 0.862** against Wiener's 28.07 dB / 0.709 and the blurred input's
20.93 dB; the blind form (`deconvolution=none`, 3,000 steps) reached 22.79 dB.

Data: Train400 (`$GENREPAIR_DATA/denoise/train400`), else the embedded gray photos (and 4
Gaussian kernels instead of Levin's, since those ship in the data folder only).
"""

import os

import ml_collections


def _has_data(subdir: str) -> bool:
  root = os.environ.get("GENREPAIR_DATA", "")
  return bool(root) and os.path.exists(os.path.join(root, subdir))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' or 'runlocal'."""
  real = _has_data("denoise/train400")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "restoration"
  c.model = ml_collections.ConfigDict(dict(name="unet", variant="deblur", channels=1,
                                           features=32, depth=4))
  c.degradation = ml_collections.ConfigDict(dict(
      kind="blur", sigma=2.55, sigma_max=0.0, density=0.0, scale=1,
      kernels="blur/Levin09.mat" if _has_data("blur/Levin09.mat") else "gaussian",
      # Non-blind: the model sees [Wiener estimate with the true kernel, blurred] and
      # refines the estimate ('none': the blurred image alone).
      deconvolution="wiener"))
  c.data = ml_collections.ConfigDict(dict(
      name="train400" if real else "natural_photos_gray", split="train",
      patch_size=128, patches_per_image=256 if real else 4096, data_dir="", tfds_dir="",
      seed=0))
  c.losses = ml_collections.ConfigDict(dict(l1=1.0, l2=0.0, charbonnier=0.0, ssim=0.0))
  c.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, schedule="piecewise",
      boundaries=(80_000,), decay=0.5))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=16, num_steps=100_000, log_every=100, sample_every=5000,
      checkpoint_every=5000, keep_checkpoints=3))
  # eval.tile: 0 = automatic (whole images for <= 4 distinct shapes, else tiles sized for
  # the dataset: one compiled model), N = tiles of N px, -1 = whole (genrepair/evaluate.py).
  c.eval = ml_collections.ConfigDict(dict(
      dataset="set12" if _has_data("denoise/set12") else "natural_photos_gray",
      split="test", seed=0, every=20_000, baseline=True, tile=0))
  c.sample = ml_collections.ConfigDict(dict(num=8, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "runlocal":
    # 2 CPU cores: a 16-wide, 3-level U-Net (~0.5M parameters) on 64x64 patches, a higher
    # lr with a cosine decay to 0; 6,000 steps at ~4 steps/s on idle cores (~25 min).
    c.model.features = 16
    c.model.depth = 3
    c.data.patch_size = 64
    c.optim.lr = 5e-4
    c.optim.schedule = "cosine"
    c.optim.decay_steps = 6000
    c.optim.alpha = 0.0
    c.train.num_steps = 6000
    c.train.log_every = 100
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    c.eval.every = 2000
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'runlocal'.")
  c.lock()
  return c
