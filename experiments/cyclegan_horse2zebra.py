r"""CycleGAN horse <-> zebra at 256x256: the paper's setup (Zhu et al., ICCV 2017).

Needs an accelerator and the tfds dataset ``cycle_gan/horse2zebra`` (1,067 horse and 1,334
zebra training photos, 120 / 140 test photos; 256x256 RGB). Preparing it needs internet and
TensorFlow, once (genrepair reads the prepared ArrayRecord files without TensorFlow):

  pip install tensorflow
  tfds build cycle_gan/horse2zebra --data_dir=$GENREPAIR_TFDS_DIR --file_format=array_record
  python launch.py train --config experiments/cyclegan_horse2zebra.py \
      --workdir runs/cyclegan_horse2zebra

Without the prepared data the run stops before compiling with a FileNotFoundError that
names the directory and these commands.

Settings (Sec. 4 and appendix 7.1/7.2, and the reference code's defaults): ResNet generator
with 9 residual blocks and instance norm (``resnet_9blocks``, 11,378,179 parameters),
70x70 PatchGAN (2,764,737); least-squares adversarial loss (weight 2 on
``g_least_squares`` = the paper's ``(D(G(x)) - 1)^2``; D's objective halved), cycle loss
lambda = 10, identity loss 0.5 lambda (the reference code's ``--lambda_identity 0.5``
default); history buffer of 50 images; Adam lr 2e-4, betas (0.5, 0.999); batch 1;
200 epochs (an epoch = 1,334 steps, the larger domain, as the reference data loader),
the lr constant for the first 100 and linearly decayed to 0 over the last 100; training
jitter: resize to 286x286 (bicubic), random 256x256 crop, random horizontal flip.

Batch 1 needs a mesh of one device (``--config.mesh.data=1``) or a batch size that is a
multiple of the device count; instance norm keeps examples independent, so a larger batch
changes only the number of images per Adam step.

Expected: qualitatively the paper's Figure 13 (horses striped, zebras unstriped), cycle
reconstructions close to the inputs. ``genrepair.tasks.cyclegan.evaluate`` gives the
cycle-reconstruction L1 per direction on the test photos (FID-digits applies only to 28x28
digits; the paper reports AMT studies and FCN scores for this pair, which we do not
reproduce). Not run here (no accelerator, no internet).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; ``arg``: '' only."""
  if arg:
    raise ValueError(f"Unknown config argument {arg!r} for cyclegan_horse2zebra; use ''.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "cyclegan"
  c.model = ml_collections.ConfigDict(dict(name="cyclegan", variant="resnet_9blocks",
                                           channels=3))
  c.data = ml_collections.ConfigDict(dict(
      data_dir="", tfds_dir="",
      domains=dict(a=dict(name="cycle_gan/horse2zebra", split="trainA", seed=0),
                   b=dict(name="cycle_gan/horse2zebra", split="trainB", seed=1))))
  c.losses = ml_collections.ConfigDict(dict(
      g=dict(g_least_squares=2.0), d=dict(d_least_squares=1.0), cycle=dict(l1=10.0),
      identity=dict(l1=5.0)))
  adam = dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, eps=1e-8, schedule="linear_decay",
              decay_fraction=0.5)
  c.optim = ml_collections.ConfigDict(dict(g=dict(adam), d=dict(adam)))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=1,
      num_steps=200 * 1334,  # 200 epochs of the larger domain (zebras) at batch 1
      pool_size=50,
      load_size=286,  # resize to 286, random 256 crop (reference code: resize_and_crop)
      flip=True,
      log_every=500,
      sample_every=10_000,
      checkpoint_every=10_000,
      keep_checkpoints=3,
  ))
  c.sample = ml_collections.ConfigDict(dict(num=1, seed=0))  # batch 1: one column
  c.eval = ml_collections.ConfigDict(dict(
      domains=dict(a=dict(name="cycle_gan/horse2zebra", split="testA"),
                   b=dict(name="cycle_gan/horse2zebra", split="testB")),
      batch_size=10,
      fid=False))  # FID-digits is for 28x28 digits only
  c.mesh = ml_collections.ConfigDict({"data": -1})
  c.lock()
  return c
