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
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrepair import losses, models
from genrepair.tasks import common

# Inputs the GAN task provides to loss functions (see losses.check_weights).
D_INPUTS = {"real_logits", "fake_logits"}
G_INPUTS = {"fake_logits"}


@flax.struct.dataclass
class GANState:
  """Everything that changes during GAN training; arrays only (Orbax-saveable).

  Attributes:
    step: int32 scalar, number of completed train steps.
    g_params, d_params: generator / discriminator parameters.
    g_batch_stats, d_batch_stats: BatchNorm running statistics.
    g_opt_state, d_opt_state: optax states of the two optimizers.
  """
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_batch_stats: Any
  g_opt_state: Any
  d_opt_state: Any


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
    pair = models.get(mc.name)(variant=mc.variant, channels=mc.channels)
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

  def init(self, rng: jax.Array) -> GANState:
    """Initial state: N(0, 0.02) weights (DCGAN Sec. 4), fresh optimizer states."""
    k_g, k_d = jax.random.split(rng)
    g_vars = self.generator.init(k_g, jnp.zeros((1, self.z_dim)), train=False)
    d_vars = self.discriminator.init(k_d, jnp.zeros((1, *self.image_shape)), train=False)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"], g_batch_stats=g_vars.get("batch_stats", {}),
        d_params=d_vars["params"], d_batch_stats=d_vars.get("batch_stats", {}),
        g_opt_state=self.tx_g.init(g_vars["params"]),
        d_opt_state=self.tx_d.init(d_vars["params"]))

  def latents(self, rng: jax.Array, num: int) -> jax.Array:
    """z ~ N(0, I): float32 ``[num, z_dim]``."""
    return jax.random.normal(rng, (num, self.z_dim), jnp.float32)

  def _batch_latents(self, rng: jax.Array, num: int) -> jax.Array:
    """Latents of a training batch, sharded over ``data`` like the images.

    The values do not depend on the sharding (JAX's threefry is partitionable), so 1 and 8
    devices draw the same numbers.
    """
    z = self.latents(rng, num)
    if self._batch_sharding is not None:
      z = jax.lax.with_sharding_constraint(z, self._batch_sharding)
    return z

  def _generate(self, params, batch_stats, z, train: bool):
    return self.generator.apply({"params": params, "batch_stats": batch_stats}, z,
                                train=train, mutable=["batch_stats"] if train else False)

  def _discriminate(self, params, batch_stats, x):
    logits, upd = self.discriminator.apply({"params": params, "batch_stats": batch_stats},
                                           x, train=True, mutable=["batch_stats"])
    return logits, upd["batch_stats"]

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[GANState, dict[str, jax.Array]]:
    """One D update then one G update.

    Args:
      state: current :class:`GANState`.
      batch: ``{'image': uint8 [B, H, W, C], ...}`` (sharded over ``data``).
      rng: the run's base key; folded with ``state.step`` here.

    Returns:
      ``(new_state, metrics)``; metrics is a flat dict of float32 scalars: ``d_loss``,
      ``g_loss``, every loss term by name, ``D(x)`` and ``D(G(z))`` (mean sigmoid of D's
      logits on the real and generated batch of the D update), ``d_grad_norm``,
      ``g_grad_norm`` (global L2 norms).
    """
    rng = jax.random.fold_in(rng, state.step)
    k_zd, k_zg = jax.random.split(rng)
    real = batch["image"].astype(jnp.float32) / 127.5 - 1.0  # [B, H, W, C] in [-1, 1]
    num = real.shape[0]

    # Discriminator update on real vs. G(z); G's BatchNorm statistics advance as in
    # the reference implementations (G runs in train mode to make the fake batch).
    fake, g_upd = self._generate(state.g_params, state.g_batch_stats,
                                 self._batch_latents(k_zd, num), train=True)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
      # Separate D passes for the real and fake batches, so BatchNorm normalises each
      # with its own statistics (as in the DCGAN reference code).
      real_logits, bs = self._discriminate(d_params, state.d_batch_stats, real)
      fake_logits, bs = self._discriminate(d_params, bs, fake)
      total, terms = losses.evaluate(self.d_weights, real_logits=real_logits,
                                     fake_logits=fake_logits)
      return total, (terms, bs, real_logits, fake_logits)

    (d_loss, (d_terms, d_bs, real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt_state = self.tx_d.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # Generator update against the updated discriminator, on fresh latents.
    z_g = self._batch_latents(k_zg, num)

    def g_loss_fn(g_params):
      fake, g_upd2 = self._generate(g_params, g_upd["batch_stats"], z_g, train=True)
      logits, bs = self._discriminate(d_params, d_bs, fake)
      total, terms = losses.evaluate(self.g_weights, fake_logits=logits)
      return total, (terms, g_upd2["batch_stats"], bs)

    (g_loss, (g_terms, g_bs, d_bs)), g_grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt_state = self.tx_g.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_batch_stats=g_bs, d_params=d_params,
        d_batch_stats=d_bs, g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    metrics = {
        "d_loss": d_loss, "g_loss": g_loss, **d_terms, **g_terms,
        "D(x)": jnp.mean(jax.nn.sigmoid(real_logits)),
        "D(G(z))": jnp.mean(jax.nn.sigmoid(fake_logits)),
        "d_grad_norm": optax.tree.norm(d_grads),
        "g_grad_norm": optax.tree.norm(g_grads),
    }
    return new_state, metrics

  def sample(self, state: GANState, z: jax.Array) -> jax.Array:
    """Generates images with BatchNorm in inference mode (running statistics).

    Args:
      state: a :class:`GANState`.
      z: float32 ``[N, z_dim]`` latents.

    Returns:
      float32 ``[N, H, W, C]`` in ``[-1, 1]``.
    """
    return self._generate(state.g_params, state.g_batch_stats, z, train=False)

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

  def protocol(self) -> dict[str, Any]:
    """What a sample means, stored in checkpoint metadata."""
    return {"samples": "G(z), z ~ N(0, I) float32 [N, z_dim]; BatchNorm running"
                       " statistics; images [-1, 1] -> uint8 by round((x + 1) * 127.5)"}
