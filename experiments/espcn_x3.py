r"""ESPCN x3 on T91 (Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016).

Launch (paper-like setting; an accelerator job):

  python launch.py train --config experiments/espcn_x3.py --workdir runs/espcn_x3

CPU budget (<= 60 min on 2 cores):

  python launch.py train --config experiments/espcn_x3.py:runlocal --workdir runs/espcn_x3_cpu
      # add --cpu_devices auto: one JAX device per core, the step 1.6x faster on 2 cores
  python launch.py eval --workdir runs/espcn_x3_cpu --dataset set5

Setting (Sec. 3.2): Y channel; HR sub-images 17r x 17r from T91 (r = 3: 51x51), LR made by
bicubic down-sampling (MATLAB imresize, as the benchmark protocol), layers 5x5x64 - 3x3x32 -
3x3x(r^2) with tanh, then the sub-pixel (pixel-shuffle) layer; L2 loss. The paper trained
with plain SGD (lr 0.01 -> 0.0001); we use Adam (lr 1e-3), the usual re-implementation.
Published: Set5 x3 32.55 dB (ImageNet-trained, the paper's Table). Bicubic: 30.39 dB. Same
evaluation protocol as srcnn_x3.py.
"""

import os

import ml_collections


def _has_data(subdir: str) -> bool:
  root = os.environ.get("GENREPAIR_DATA", "")
  return bool(root) and os.path.isdir(os.path.join(root, subdir))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' or 'runlocal'."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "restoration"
  c.model = ml_collections.ConfigDict(dict(name="espcn", variant="x3", channels=1, scale=3))
  c.degradation = ml_collections.ConfigDict(dict(
      kind="bicubic", scale=3, sigma=0.0, sigma_max=0.0, density=0.0))
  real = _has_data("sr/t91")
  c.data = ml_collections.ConfigDict(dict(
      name="t91" if real else "natural_photos", split="train", patch_size=51,
      patches_per_image=256 if real else 4096, data_dir="", tfds_dir="", seed=0))
  c.losses = ml_collections.ConfigDict(dict(l2=1.0, l1=0.0, charbonnier=0.0, ssim=0.0))
  c.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, schedule="piecewise",
      boundaries=(80_000,), decay=0.1))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, num_steps=100_000, log_every=100, sample_every=10_000,
      checkpoint_every=10_000, keep_checkpoints=3))
  # eval.tile: 0 = automatic (whole images for <= 4 distinct shapes, else tiles sized for
  # the dataset: one compiled model), N = tiles of N px, -1 = whole (genrepair/evaluate.py).
  c.eval = ml_collections.ConfigDict(dict(
      dataset="set5" if _has_data("sr/set5") else "natural_photos", split="test", seed=0,
      every=20_000, tile=0))
  c.sample = ml_collections.ConfigDict(dict(num=8, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "runlocal":
    # ~0.1 s per step of 64 patches on 2 cores: 15,000 steps in about 30 minutes.
    c.train.num_steps = 15_000
    c.train.log_every = 250
    c.train.sample_every = 2500
    c.train.checkpoint_every = 1000
    c.optim.boundaries = (12_000,)
    c.eval.every = 0
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'runlocal'.")
  c.lock()
  return c
