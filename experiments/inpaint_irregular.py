r"""Inpainting with a U-Net (mask as an input channel), evaluated on NVIDIA irregular masks.

Launch (accelerator budget):

  python launch.py train --config experiments/inpaint_irregular.py --workdir runs/inpaint

CPU budget (2 cores, a smaller U-Net, see `runlocal`):

  python launch.py train --config experiments/inpaint_irregular.py:runlocal --workdir runs/inpaint_cpu
  python launch.py eval --workdir runs/inpaint_cpu --dataset set12

Training masks are free-form brush strokes drawn on device (DeepFill v2's generator, Yu et
al. ICCV 2019); the NVIDIA irregular masks (Liu et al., ECCV 2018) are held out for
evaluation, as in that paper: test image i gets the i-th mask of hole-ratio bin
`mask_bin` (default 2: 20-30% holes) from `$GENREPAIR_DATA/masks/irregular`, cropped to the
image. Model: U-Net (Ronneberger et al. 2015) fed `[image with holes = 0, mask]`; the output
keeps the known pixels (`masked + mask * unet(x)`), so the L1 loss is the hole L1 of Liu et
al. (Eq. 1, without their perceptual/style terms). Baseline: biharmonic inpainting
(scikit-image). Evaluation: Set12, PSNR/SSIM on all pixels of the uint8-rounded output.

Data: Train400 (`$GENREPAIR_DATA/denoise/train400`), else the embedded gray photos with
fixed-seed stroke masks for evaluation.
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
  c.model = ml_collections.ConfigDict(dict(name="unet", variant="inpaint", channels=1,
                                           features=32, depth=4))
  c.degradation = ml_collections.ConfigDict(dict(
      kind="inpaint", sigma=0.0, sigma_max=0.0, density=0.0, scale=1, masks="strokes",
      eval_masks="masks/irregular" if _has_data("masks/irregular") else "", mask_bin=2))
  c.data = ml_collections.ConfigDict(dict(
      name="train400" if real else "natural_photos_gray", split="train",
      patch_size=128, patches_per_image=256 if real else 4096, data_dir="", tfds_dir="",
      seed=0))
  c.losses = ml_collections.ConfigDict(dict(l1=1.0, l2=0.0, charbonnier=0.0, ssim=0.0))
  c.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=2e-4, b1=0.9, b2=0.999, eps=1e-8, schedule="piecewise",
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
    # 2 CPU cores: a 16-wide, 3-level U-Net on 64x64 patches.
    c.model.features = 16
    c.model.depth = 3
    c.data.patch_size = 64
    c.optim.lr = 5e-4
    c.train.num_steps = 3000
    c.train.log_every = 100
    c.train.sample_every = 1000
    c.train.checkpoint_every = 500
    c.optim.boundaries = (2400,)
    c.eval.every = 0
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'runlocal'.")
  c.lock()
  return c
