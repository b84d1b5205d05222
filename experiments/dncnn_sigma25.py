r"""DnCNN-S for Gaussian denoising at sigma = 25 (Zhang et al., IEEE TIP 2017).

Launch (paper setting; an accelerator job):

  python launch.py train --config experiments/dncnn_sigma25.py --workdir runs/dncnn_s25

CPU budget (<= 60 min on 2 cores; fewer steps, see `runlocal` below):

  python launch.py train --config experiments/dncnn_sigma25.py:runlocal --workdir runs/dncnn_s25_cpu

(add ``--cpu_devices auto`` for one JAX device per core: 1.43 -> 1.76 steps/s on 2 cores,
the same model up to float rounding; README, Performance)

The authors' released weights, imported and evaluated (BSD68: 29.23 dB published):

  python launch.py import --config experiments/dncnn_sigma25.py:official \
      --weights $GENREPAIR_DATA/weights/dncnn/sigma25.mat --workdir runs/dncnn_s25_official
  python launch.py eval --workdir runs/dncnn_s25_official

Evaluate a run (BSD68, the authors' protocol: unclipped noise with a fixed seed per image,
output rounded to uint8, mean PSNR over the 68 images):

  python launch.py eval --workdir runs/dncnn_s25

Data: Train400 (`$GENREPAIR_DATA/denoise/train400`) when `$GENREPAIR_DATA` holds it, else
the gray natural photos that ship inside scikit-image/matplotlib (an offline default for a
fresh machine; held-out photos `camera`, `chelsea` for evaluation). The choice is recorded in
the run's config.json and checkpoint metadata.

Paper setting (Sec. IV-A): 17 layers, 40x40 patches, 128 x 1,600 patches per epoch, batch
128, Adam, lr 1e-3 for 30 epochs then 1e-4 to epoch 50 (the authors' MatConvNet code),
residual learning with an L2 loss. Published: BSD68 29.23 dB (BM3D: 28.57 dB).
"""

import os

import ml_collections

_PATCHES_PER_EPOCH = 128 * 1600  # Sec. IV-A
_BATCH = 128


def _has_data(subdir: str) -> bool:
  root = os.environ.get("GENREPAIR_DATA", "")
  return bool(root) and os.path.isdir(os.path.join(root, subdir))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' (paper), 'runlocal' (CPU), 'official'."""
  real = _has_data("denoise/train400")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "restoration"
  # zero_last: the last conv starts at zero (output = input at step 0); the paper's
  # He init for it is the default (False).
  c.model = ml_collections.ConfigDict(dict(name="dncnn", variant="S", channels=1,
                                           zero_last=False))
  c.degradation = ml_collections.ConfigDict(dict(
      kind="gaussian_noise", sigma=25.0, sigma_max=0.0, density=0.0, scale=1))
  c.data = ml_collections.ConfigDict(dict(
      name="train400" if real else "natural_photos_gray", split="train",
      patch_size=40,
      # 512 visits per image = 204,800 patches per epoch with Train400's 400 images.
      patches_per_image=_PATCHES_PER_EPOCH // 400 if real else _PATCHES_PER_EPOCH // 6,
      data_dir="", tfds_dir="", seed=0))
  c.losses = ml_collections.ConfigDict(dict(l2=1.0, l1=0.0, charbonnier=0.0, ssim=0.0))
  epoch = _PATCHES_PER_EPOCH // _BATCH  # 1,600 steps
  c.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8,
      schedule="piecewise", boundaries=(30 * epoch,), decay=0.1,
      # Read only with --config.optim.schedule=cosine (decay_steps > 0 then).
      decay_steps=0, alpha=0.0))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=_BATCH, num_steps=50 * epoch, log_every=100, sample_every=5000,
      checkpoint_every=5000, keep_checkpoints=3))
  # eval.tile: 0 = automatic (whole images for <= 4 distinct shapes, else tiles sized for
  # the dataset: one compiled model), N = tiles of N px, -1 = whole (genrepair/evaluate.py).
  c.eval = ml_collections.ConfigDict(dict(
      dataset="bsd68" if _has_data("denoise/bsd68") else "natural_photos_gray",
      split="test", seed=0, every=20000, tile=0))
  c.sample = ml_collections.ConfigDict(dict(num=8, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "runlocal":
    # 2 CPU cores (~22 patches/s at batch 16 or 32): 4,500 steps of 16 = 72,000 patches,
    # 0.35 of one paper epoch, in under an hour. Three changes from the paper make that
    # budget count: the last conv starts at zero (with the paper's He init the initial
    # residual is as large as the image, and unlearning it took ~2,000 of our steps:
    # training PSNR 22.9 dB at step 250 against 27.6 with the zero init), the lr decays to
    # 0 on a cosine, and batch 16 (as many patches per second as 32 here, twice the
    # updates; training loss 0.0029 after 1,600 patches at batch 16, 0.0070 at 32).
    c.model.zero_last = True
    c.train.batch_size = 16
    c.train.num_steps = 4500
    c.train.log_every = 100
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    c.optim.schedule = "cosine"
    c.optim.decay_steps = 4500
    c.eval.every = 0  # evaluate once, at the end
  elif arg == "official":
    # The authors' released model: BatchNorm folded into the convolutions (import with
    # launch.py import --weights $GENREPAIR_DATA/weights/dncnn/sigma25.mat).
    c.model.variant = "S-merged"
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '', 'runlocal' or 'official'.")
  c.lock()
  return c
