"""CycleGAN task: unpaired translation A <-> B (Zhu, Park, Isola & Efros, ICCV 2017).

Two generators, ``G: A -> B`` and ``F: B -> A`` (:mod:`genrepair.models.cyclegan`), and two
discriminators: ``D_A`` judges domain-A images (real A vs. ``F(b)``), ``D_B`` judges
domain-B images (real B vs. ``G(a)``). One jitted :meth:`CycleGANTask.train_step`:

1. **Generators** (one joint update of G and F; Adam is per-coordinate, so one optimizer
   over both equals one per network, as in the reference code): Eq. 3 plus the identity
   term of Sec. 5.2 ("Photo generation from paintings"),

   ``L_G = adv(D_B(G(a))) + adv(D_A(F(b)))
         + lambda (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)          # Eq. 2, lambda = 10
         + 0.5 lambda (|G(b) - b|_1 + |F(a) - a|_1)``           # identity, weight 0.5 lambda

   with the least-squares adversarial loss of Sec. 4 ("Training details"): ``adv = (D(x) -
   1)^2`` = ``losses.g_least_squares`` (``0.5 (D - 1)^2``) with weight 2. Every term is
   chosen by name and weight in ``config.losses.g`` / ``.cycle`` / ``.identity``
   (see :mod:`genrepair.losses`; pixel losses see images in ``[-1, 1]``, as in the code).
2. **Discriminators** (one joint update of D_A and D_B), on real images vs. fakes drawn from
   a **history buffer** of 50 generated images per domain (Shrivastava et al., CVPR 2017,
   Sec. 2.3; CycleGAN Sec. 4): ``L_D = 0.5 [(D(real) - 1)^2 + D(fake)^2]`` per
   discriminator (``losses.d_least_squares``, weight 1: the paper halves D's objective
   "to slow down the rate at which D learns relative to G", Sec. 7.1).

Both gradients are taken at the step's starting parameters, with the fakes of one
generator forward pass, exactly as the reference code (G's update does not change D, and
D's fakes were generated before G's update).

History buffer (:func:`query_pool`), per image of the batch in order: while fewer than
``pool_size`` images are stored, store the new image and return it; afterwards, with
probability 1/2 return a uniformly chosen stored image and store the new one in its slot,
else return the new image. The buffer and its fill counter are arrays of the state, the
draws come from the step's key: a resumed run makes the same choices.

Learning rate: ``config.optim.<g|d>.schedule = 'linear_decay'`` keeps ``lr`` for the
first ``1 - decay_fraction`` of ``config.train.num_steps`` and decays it linearly to 0 at
the last step (the paper: 100 epochs at 2e-4, then 100 epochs of linear decay).

Images: the batch holds uint8 ``{'image_a': [B, H, W, C], 'image_b': [B, H, W, C]}``
(:func:`genrepair.data.unpaired.make_unpaired_iterator`); on device float32 in
``[-1, 1]``. Optional on-device jitter (``config.train.load_size`` > H: bicubic resize to
``load_size`` then a random HxW crop; ``config.train.flip``: random horizontal flips), the
reference code's ``resize_and_crop`` + flip for photographs.

Randomness: ``rng = fold_in(rng, step)``, split into the two buffers' and the two jitter
keys.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genrepair import losses, models, sharding
from genrepair.tasks import common

D_INPUTS = {"real_logits", "fake_logits"}
G_INPUTS = {"fake_logits"}
PIXEL_INPUTS = {"pred", "target"}


@flax.struct.dataclass
class CycleGANState:
  """Everything that changes during CycleGAN training; arrays only (Orbax-saveable).

  Attributes:
    step: int32 scalar, completed train steps.
    g_params: parameters of G: A -> B.
    f_params: parameters of F: B -> A.
    d_a_params: parameters of D_A (real A vs. F(b)).
    d_b_params: parameters of D_B (real B vs. G(a)).
    gen_opt_state: optax state of the generators' optimizer over ``{'g', 'f'}``.
    disc_opt_state: optax state of the discriminators' optimizer over ``{'d_a', 'd_b'}``.
    pool_a: float32 ``[pool_size, H, W, C]`` in ``[-1, 1]``: history of F(b) (fed to D_A).
    pool_a_count: int32 scalar, images stored in ``pool_a`` (<= pool_size).
    pool_b: float32 ``[pool_size, H, W, C]``: history of G(a) (fed to D_B).
    pool_b_count: int32 scalar.
  """
  step: jax.Array
  g_params: Any
  f_params: Any
  d_a_params: Any
  d_b_params: Any
  gen_opt_state: Any
  disc_opt_state: Any
  pool_a: jax.Array
  pool_a_count: jax.Array
  pool_b: jax.Array
  pool_b_count: jax.Array


def pool_draws(rng: jax.Array, batch_size: int, pool_size: int) -> tuple[jax.Array, jax.Array]:
  """The random numbers one :func:`query_pool` call uses.

  Returns:
    ``(u, slot)``: float32 ``[B]`` uniform in ``[0, 1)`` (swap iff ``u > 0.5``) and int32
    ``[B]`` uniform in ``[0, pool_size)`` (the slot read and overwritten on a swap), from
    ``k_u, k_slot = jax.random.split(rng)``.
  """
  k_u, k_slot = jax.random.split(rng)
  return (jax.random.uniform(k_u, (batch_size,), jnp.float32),
          jax.random.randint(k_slot, (batch_size,), 0, pool_size, jnp.int32))


def query_pool(pool: jax.Array, count: jax.Array, images: jax.Array,
               rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The image history buffer (Shrivastava et al. 2017), one batch, inside jit.

  Images are processed in batch order (``lax.scan``), so a later image may draw the slot
  an earlier one of the same batch has just filled, as in the reference ``ImagePool``.

  Args:
    pool: float ``[P, H, W, C]`` stored images (P = pool size; P = 0 disables the buffer).
    count: int32 scalar, filled slots (``0 <= count <= P``; slots ``[0, count)`` hold
      images).
    images: float ``[B, H, W, C]`` newly generated images.
    rng: key of this call (see :func:`pool_draws`).

  Returns:
    ``(pool, count, out)``: the updated buffer and count, and ``out`` float ``[B, H, W,
    C]``, the images to show the discriminator: image ``i`` itself while the buffer is
    filling (it is stored in slot ``count``); once full, with ``u_i > 0.5`` the image of
    slot ``slot_i`` (replaced by image ``i``), otherwise image ``i`` (buffer unchanged).
  """
  size = pool.shape[0]
  if size == 0:
    return pool, count, images
  u, slot = pool_draws(rng, images.shape[0], size)

  def one(carry, inputs):
    pool, count = carry
    image, u_i, slot_i = inputs
    filling = count < size
    swap = jnp.logical_and(jnp.logical_not(filling), u_i > 0.5)
    index = jnp.where(filling, count, slot_i)
    stored = jax.lax.dynamic_index_in_dim(pool, index, 0, keepdims=False)  # [H, W, C]
    out = jnp.where(swap, stored, image)
    written = jnp.where(jnp.logical_or(filling, swap), image, stored)
    pool = jax.lax.dynamic_update_index_in_dim(pool, written.astype(pool.dtype), index, 0)
    return (pool, count + filling.astype(count.dtype)), out

  (pool, count), out = jax.lax.scan(one, (pool, count), (images, u, slot))
  return pool, count, out


def _interleave(x: jax.Array, y: jax.Array) -> jax.Array:
  """``[x_0, y_0, x_1, y_1, ...]``: two ``[B, ...]`` batches as one ``[2B, ...]`` batch."""
  return jnp.stack([x, y], axis=1).reshape((2 * x.shape[0],) + x.shape[1:])


def _deinterleave(xy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of :func:`_interleave`: ``[2B, ...]`` -> ``([B, ...], [B, ...])``."""
  pairs = xy.reshape((xy.shape[0] // 2, 2) + xy.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def _optimizer(cfg: ml_collections.ConfigDict, num_steps: int,
               where: str) -> tuple[optax.GradientTransformation, Any]:
  """``common.make_optimizer`` plus the ``'linear_decay'`` schedule.

  With ``schedule='linear_decay'`` the optimizer's update is multiplied by ``factor(t)``
  = 1 for ``t < num_steps - n_decay``, then ``1 - (t - (num_steps - n_decay)) / n_decay``
  (0 at ``t = num_steps``), ``n_decay = round(decay_fraction * num_steps)``; for Adam or
  SGD this equals the learning rate ``lr * factor(t)``.

  Returns:
    ``(tx, factor)``: the transformation and the factor as a function of the step (a
    constant 1 without decay), for logging.

  Raises:
    ValueError: bad optimizer fields (``common.make_optimizer``) or ``decay_fraction``
      outside ``(0, 1]``.
  """
  if cfg.get("schedule", "constant") != "linear_decay":
    return common.make_optimizer(cfg, where), lambda step: jnp.ones((), jnp.float32)
  frac = float(cfg.get("decay_fraction", 0.5))
  if not 0.0 < frac <= 1.0:
    raise ValueError(f"{where}.decay_fraction must be in (0, 1], got {frac}.")
  n_decay = max(1, round(frac * num_steps))
  factor = optax.linear_schedule(1.0, 0.0, transition_steps=n_decay,
                                 transition_begin=num_steps - n_decay)
  plain = ml_collections.ConfigDict({k: v for k, v in cfg.items()
                                     if k not in ("schedule", "decay_fraction")})
  tx = optax.chain(common.make_optimizer(plain, where), optax.scale_by_schedule(factor))
  return tx, factor


def _check_weights(weights: dict[str, float], inputs: set[str], where: str,
                   allow_empty: bool = False) -> dict[str, float]:
  if allow_empty and not any(float(w) for w in weights.values()):
    return {}
  losses.check_weights(weights, inputs, where)
  return weights


class CycleGANTask:
  """CycleGAN training / translation functions bound to one config (by closure).

  Attributes:
    generator, discriminator: unbound Flax modules (each used for two networks).
    image_shape: ``(H, W, C)`` of both domains' training images.
    pool_size: history buffer size per domain (50 in the paper; 0 disables it).
  """

  image_range = (-1.0, 1.0)

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    """Builds models and optimizers; validates the config (nothing compiles here).

    Raises:
      ValueError: bad model / loss / optimizer / pool / jitter settings, naming the key.
    """
    # Every loss is a mean of per-example terms, so each update's gradients are computed
    # per device and reduced as one flat array (sharding.data_parallel_value_and_grad:
    # XLA's own reduction is one all-reduce buffer per parameter array, ~50 us each on
    # CPU). Without a mesh (a task built on its own) jax.value_and_grad is used.
    self.mesh = mesh
    self.config = config
    mc = config.model
    kw = {k: v for k, v in mc.items() if k not in ("name", "variant", "channels")}
    nets = models.get(mc.name)(variant=mc.variant, channels=mc.get("channels", None), **kw)
    self.generator, self.discriminator = nets.generator, nets.discriminator
    self.image_shape = (nets.image_size, nets.image_size, nets.channels)
    lc = config.losses
    self.g_weights = _check_weights(dict(lc.g), G_INPUTS, "config.losses.g")
    self.d_weights = _check_weights(dict(lc.d), D_INPUTS, "config.losses.d")
    self.cycle_weights = _check_weights(dict(lc.cycle), PIXEL_INPUTS, "config.losses.cycle")
    self.identity_weights = _check_weights(dict(lc.get("identity", {})), PIXEL_INPUTS,
                                           "config.losses.identity", allow_empty=True)
    tc = config.train
    self.num_steps = int(tc.num_steps)
    self.tx_gen, self.lr_factor_g = _optimizer(config.optim.g, self.num_steps, "config.optim.g")
    self.tx_disc, self.lr_factor_d = _optimizer(config.optim.d, self.num_steps,
                                                "config.optim.d")
    self.pool_size = int(tc.get("pool_size", 50))
    self.load_size = int(tc.get("load_size", 0))
    self.flip = bool(tc.get("flip", False))
    if self.pool_size < 0:
      raise ValueError(f"config.train.pool_size must be >= 0, got {self.pool_size}.")
    if self.load_size and self.load_size < nets.image_size:
      raise ValueError(f"config.train.load_size={self.load_size} must be 0 (no jitter) or"
                       f" >= the image size {nets.image_size}.")

  # ------------------------------------------------------------------ state

  def init(self, rng: jax.Array) -> CycleGANState:
    """Initial state: N(0, 0.02) weights, fresh optimizers, empty history buffers."""
    k_g, k_f, k_da, k_db = jax.random.split(rng, 4)
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    gen = {"g": self.generator.init(k_g, x)["params"],
           "f": self.generator.init(k_f, x)["params"]}
    disc = {"d_a": self.discriminator.init(k_da, x)["params"],
            "d_b": self.discriminator.init(k_db, x)["params"]}
    pool = jnp.zeros((self.pool_size, *self.image_shape), jnp.float32)
    zero = jnp.zeros((), jnp.int32)
    return CycleGANState(
        step=zero, g_params=gen["g"], f_params=gen["f"], d_a_params=disc["d_a"],
        d_b_params=disc["d_b"], gen_opt_state=self.tx_gen.init(gen),
        disc_opt_state=self.tx_disc.init(disc), pool_a=pool, pool_a_count=zero,
        pool_b=pool, pool_b_count=zero)

  # ------------------------------------------------------------------ pieces

  def to_float(self, images: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` -> float32 in ``[-1, 1]`` (``u / 127.5 - 1``)."""
    return images.astype(jnp.float32) / 127.5 - 1.0

  def generate(self, params: Any, x: jax.Array) -> jax.Array:
    """One generator (G or F by ``params``): float32 ``[B, H, W, C]`` -> same, ``[-1, 1]``."""
    return self.generator.apply({"params": params}, x)

  def score(self, params: Any, x: jax.Array) -> jax.Array:
    """One discriminator: ``[B, H, W, C]`` -> raw patch scores float32 ``[B, H', W']``."""
    return self.discriminator.apply({"params": params}, x)

  def jitter(self, rng: jax.Array, x: jax.Array) -> jax.Array:
    """Training jitter of float ``[B, H, W, C]`` images (identity when switched off)."""
    if not self.load_size and not self.flip:
      return x
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(rng)
    if self.load_size > h or self.load_size > w:
      s = self.load_size
      x = jnp.clip(jax.image.resize(x, (b, s, s, c), "bicubic"), -1.0, 1.0)
      offsets = jax.random.randint(k_crop, (b, 2), 0, jnp.array([s - h + 1, s - w + 1]))
      x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(
          x, offsets)                                     # [B, H, W, C]
    if self.flip:
      flip = jax.random.bernoulli(k_flip, 0.5, (b,))
      x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return x

  # ------------------------------------------------------------------ step

  def generator_losses(self, gen: dict[str, Any], d_a_params: Any, d_b_params: Any,
                       real_a: jax.Array, real_b: jax.Array):
    """The generators' objective at ``gen = {'g': ..., 'f': ...}``.

    Args:
      gen: G's and F's parameters.
      d_a_params, d_b_params: the discriminators' parameters (held fixed).
      real_a, real_b: float32 ``[B, H, W, C]`` in ``[-1, 1]``.

    Returns:
      ``(total, (terms, images))``: float32 scalar; ``terms`` = every unweighted loss term
      by ``'<part>/<loss>'`` name; ``images`` = ``{'fake_a': F(b), 'fake_b': G(a),
      'rec_a': F(G(a)), 'rec_b': G(F(b))}``.
    """
    ident = bool(self.identity_weights)
    # G sees a (translation) and b (identity) in one pass; F likewise. The pass's batch
    # interleaves the two ([a_0, b_0, a_1, b_1, ...]), so that with the batch sharded
    # over devices every device keeps its own rows (a concatenation [a; b] moved half of
    # them between devices, an all-to-all each step).
    if ident:
      fake_b, ident_b = _deinterleave(self.generate(gen["g"], _interleave(real_a, real_b)))
      fake_a, ident_a = _deinterleave(self.generate(gen["f"], _interleave(real_b, real_a)))
    else:
      fake_b, fake_a = self.generate(gen["g"], real_a), self.generate(gen["f"], real_b)
    rec_a, rec_b = self.generate(gen["f"], fake_b), self.generate(gen["g"], fake_a)
    parts = {
        "g_ab": (self.g_weights, dict(fake_logits=self.score(d_b_params, fake_b))),
        "f_ba": (self.g_weights, dict(fake_logits=self.score(d_a_params, fake_a))),
        "cycle_aba": (self.cycle_weights, dict(pred=rec_a, target=real_a)),
        "cycle_bab": (self.cycle_weights, dict(pred=rec_b, target=real_b)),
    }
    if ident:
      parts["identity_b"] = (self.identity_weights, dict(pred=ident_b, target=real_b))
      parts["identity_a"] = (self.identity_weights, dict(pred=ident_a, target=real_a))
    total, terms = jnp.zeros((), jnp.float32), {}
    for part, (weights, inputs) in parts.items():
      t, named = losses.evaluate(weights, **inputs)
      total = total + t
      terms.update({f"{part}/{k}": v for k, v in named.items()})
    images = {"fake_a": fake_a, "fake_b": fake_b, "rec_a": rec_a, "rec_b": rec_b}
    return total, (terms, images)

  def train_step(self, state: CycleGANState, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[CycleGANState, dict[str, jax.Array]]:
    """One generators' update and one discriminators' update (see the module docstring).

    Args:
      state: current :class:`CycleGANState`.
      batch: ``{'image_a': uint8 [B, H, W, C], 'image_b': uint8 [B, H, W, C]}``.
      rng: the run's base key; folded with ``state.step`` here.

    Returns:
      ``(new_state, metrics)``; float32 scalars: ``g_loss``, ``d_loss``, every term
      (``g_ab/...``, ``f_ba/...``, ``cycle_aba/...``, ``cycle_bab/...``,
      ``identity_a/...``, ``identity_b/...``, ``d_a/...``, ``d_b/...``),
      ``cycle_l1_aba`` / ``cycle_l1_bab`` (mean ``|F(G(a)) - a|`` / ``|G(F(b)) - b|`` on
      the ``[0, 1]`` scale), ``D_A(real)``, ``D_A(fake)``, ``D_B(real)``, ``D_B(fake)``
      (mean raw scores; LSGAN targets 1 and 0; fakes as drawn from the buffers),
      ``g_grad_norm``, ``d_grad_norm``, ``lr_factor`` (the schedule's factor this step).
    """
    rng = jax.random.fold_in(rng, state.step)
    k_pool_a, k_pool_b, k_jit_a, k_jit_b = jax.random.split(rng, 4)
    real_a = self.jitter(k_jit_a, self.to_float(batch["image_a"]))  # [B, H, W, C]
    real_b = self.jitter(k_jit_b, self.to_float(batch["image_b"]))

    gen = {"g": state.g_params, "f": state.f_params}
    g_value_and_grad = sharding.data_parallel_value_and_grad(
        self.generator_losses, self.mesh, batch_argnums=(2, 3), aux_specs=("mean", "batch"))
    (g_loss, (g_terms, images)), g_grads = g_value_and_grad(
        gen, state.d_a_params, state.d_b_params, real_a, real_b)
    g_updates, gen_opt_state = self.tx_gen.update(g_grads, state.gen_opt_state, gen)
    gen = optax.apply_updates(gen, g_updates)

    fake_a = jax.lax.stop_gradient(images["fake_a"])
    fake_b = jax.lax.stop_gradient(images["fake_b"])
    pool_a, count_a, shown_a = query_pool(state.pool_a, state.pool_a_count, fake_a, k_pool_a)
    pool_b, count_b, shown_b = query_pool(state.pool_b, state.pool_b_count, fake_b, k_pool_b)

    def d_loss_fn(disc, real_a, shown_a, real_b, shown_b):
      scores = {"a_real": self.score(disc["d_a"], real_a),
                "a_fake": self.score(disc["d_a"], shown_a),
                "b_real": self.score(disc["d_b"], real_b),
                "b_fake": self.score(disc["d_b"], shown_b)}
      t_a, n_a = losses.evaluate(self.d_weights, real_logits=scores["a_real"],
                                 fake_logits=scores["a_fake"])
      t_b, n_b = losses.evaluate(self.d_weights, real_logits=scores["b_real"],
                                 fake_logits=scores["b_fake"])
      terms = {**{f"d_a/{k}": v for k, v in n_a.items()},
               **{f"d_b/{k}": v for k, v in n_b.items()}}
      return t_a + t_b, (terms, scores)

    disc = {"d_a": state.d_a_params, "d_b": state.d_b_params}
    d_value_and_grad = sharding.data_parallel_value_and_grad(
        d_loss_fn, self.mesh, batch_argnums=(0, 1, 2, 3), aux_specs=("mean", "batch"))
    (d_loss, (d_terms, scores)), d_grads = d_value_and_grad(disc, real_a, shown_a, real_b,
                                                            shown_b)
    d_updates, disc_opt_state = self.tx_disc.update(d_grads, state.disc_opt_state, disc)
    disc = optax.apply_updates(disc, d_updates)

    new_state = state.replace(
        step=state.step + 1, g_params=gen["g"], f_params=gen["f"], d_a_params=disc["d_a"],
        d_b_params=disc["d_b"], gen_opt_state=gen_opt_state, disc_opt_state=disc_opt_state,
        pool_a=pool_a, pool_a_count=count_a, pool_b=pool_b, pool_b_count=count_b)
    metrics = {
        "g_loss": g_loss, **g_terms, "d_loss": d_loss, **d_terms,
        "cycle_l1_aba": jnp.mean(jnp.abs(images["rec_a"] - real_a)) / 2.0,
        "cycle_l1_bab": jnp.mean(jnp.abs(images["rec_b"] - real_b)) / 2.0,
        "D_A(real)": jnp.mean(scores["a_real"]), "D_A(fake)": jnp.mean(scores["a_fake"]),
        "D_B(real)": jnp.mean(scores["b_real"]), "D_B(fake)": jnp.mean(scores["b_fake"]),
        "g_grad_norm": optax.tree.norm(g_grads), "d_grad_norm": optax.tree.norm(d_grads),
        "lr_factor": jnp.asarray(self.lr_factor_g(state.step), jnp.float32),
    }
    return new_state, metrics

  # ------------------------------------------------------------------ translation

  def translate(self, state: CycleGANState, images: jax.Array, direction: str) -> jax.Array:
    """``G(a)`` (``direction='ab'``) or ``F(b)`` (``'ba'``): float32 ``[N, H, W, C]``,
    ``[-1, 1]`` in and out.

    Raises:
      ValueError: another direction.
    """
    if direction not in ("ab", "ba"):
      raise ValueError(f"direction must be 'ab' (G) or 'ba' (F), got {direction!r}.")
    return self.generate(state.g_params if direction == "ab" else state.f_params, images)

  def preview_inputs(self, rng: jax.Array, batch: dict[str, jax.Array],
                     num: int) -> dict[str, jax.Array]:
    """The first ``min(num, B)`` images of each domain of the first batch, in ``[-1, 1]``."""
    del rng
    return {"a": self.to_float(batch["image_a"][:num]),
            "b": self.to_float(batch["image_b"][:num])}

  def preview(self, state: CycleGANState, fixed: dict[str, jax.Array]) -> jax.Array:
    """Rows (of k images each): real A, G(A), F(G(A)), real B, F(B), G(F(B)).

    Returns:
      float32 ``[6k, H, W, C]`` in ``[-1, 1]``.
    """
    a, b = fixed["a"], fixed["b"]
    g_a, f_b = self.translate(state, a, "ab"), self.translate(state, b, "ba")
    return jnp.concatenate([a, g_a, self.translate(state, g_a, "ba"),
                            b, f_b, self.translate(state, f_b, "ab")])

  def preview_columns(self, num: int) -> int:
    """Grid columns = images per row of :meth:`preview` = ``min(num, batch_size)``."""
    return min(num, int(self.config.train.batch_size))

  def evaluate(self, state, config: ml_collections.ConfigDict, *,
               final: bool = True) -> dict[str, Any]:
    """Held-out cycle L1 and FID-digits per direction: :func:`evaluate` (``train.run``
    calls this at the end of a run whose config has an ``eval`` section, and every
    ``eval.every`` steps; ``final``, the tasks' common interface, changes nothing here)."""
    return evaluate(self, state, config)

  def protocol(self) -> dict[str, Any]:
    """What the logged and evaluated numbers mean (stored in checkpoint metadata)."""
    return {
        "images": "uint8 u -> u / 127.5 - 1 in [-1, 1]; outputs -> uint8 by"
                  " round((x + 1) * 127.5)",
        "cycle_l1": "mean |F(G(a)) - a| (aba) and |G(F(b)) - b| (bab) over pixels and"
                    " images, on the [0, 1] scale (float outputs, not quantised)",
        "fid": "FID-digits (genrepair.metrics.digits) of uint8 translations vs. held-out"
               " real images of the target domain",
    }


# ---------------------------------------------------------------------- evaluation


def _held_out(config: ml_collections.ConfigDict, domain: str) -> np.ndarray:
  """All images of ``config.eval.domains.<domain>``: uint8 ``[N, H, W, C]``."""
  from genrepair.data import pipeline, unpaired  # pylint: disable=import-outside-toplevel
  ec = config.eval.domains[domain]
  dc = ml_collections.ConfigDict({
      "name": ec.name, "data_dir": ec.get("data_dir", "") or config.data.get("data_dir", ""),
      "tfds_dir": ec.get("tfds_dir", "") or config.data.get("tfds_dir", "")})
  unpaired.check_available(dc)
  source = pipeline.data_source(dc, ec.split)
  getitems = getattr(source, "__getitems__", None)
  examples = getitems(list(range(len(source)))) if getitems else list(source)
  return np.stack([np.asarray(e["image"]) for e in examples])


def fid_digits_hook():
  """``genrepair.metrics.digits.fid_digits`` if importable, else None (FID is skipped)."""
  try:
    from genrepair.metrics import digits  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return getattr(digits, "fid_digits", None)


def evaluate(task: CycleGANTask, state: CycleGANState,
             config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Cycle-reconstruction error and FID-digits per direction on held-out images.

  Held-out data: ``config.eval.domains = {'a': {name, split}, 'b': {name, split}}``
  (paths from ``config.data``); translated in chunks of ``config.eval.batch_size``
  (one compilation; the last chunk is padded). ``config.eval.fid`` (default True)
  switches FID-digits off.

  Returns:
    ``{'cycle_l1_aba', 'cycle_l1_bab'}``: mean ``|F(G(a)) - a|`` / ``|G(F(b)) - b|`` on the
    ``[0, 1]`` scale (float outputs); ``'num_a'``, ``'num_b'``; for 28x28x1 images, when
    FID-digits is available: ``'fid_ab'`` = FID(real held-out B, uint8 G(a)), ``'fid_ba'``
    = FID(real held-out A, uint8 F(b)), and the no-translation reference
    ``'fid_identity_ab'`` = FID(real B, real A) (= ``'fid_identity_ba'``: FID is
    symmetric); ``'fid_error'`` if FID-digits failed (e.g. the classifier file is
    missing); ``'seconds'``.

  Raises:
    FileNotFoundError, ValueError: held-out data that cannot be read.
  """
  t0 = time.perf_counter()
  chunk = int(config.eval.get("batch_size", 100))

  @functools.partial(jax.jit, static_argnums=2)
  def fwd(s, x, direction):  # translation and its reconstruction, [chunk, H, W, C] each
    y = task.translate(s, x, direction)
    return y, task.translate(s, y, "ba" if direction == "ab" else "ab")

  results: dict[str, Any] = {}
  real, fake = {}, {}
  for src, direction in (("a", "ab"), ("b", "ba")):
    images = _held_out(config, src)
    n = len(images)
    outs, errs = [], []
    for i in range(0, n, chunk):
      x = images[i:i + chunk]
      m = len(x)
      x = np.concatenate([x, np.zeros((chunk - m, *x.shape[1:]), x.dtype)])
      xf = x.astype(np.float32) / 127.5 - 1.0
      y, rec = jax.device_get(fwd(state, xf, direction))
      outs.append(np.asarray(y[:m]))
      errs.append(np.abs(np.asarray(rec[:m], np.float64) - xf[:m]).mean(axis=(1, 2, 3)) / 2)
    real[src], fake[direction] = images, np.concatenate(outs)
    results[f"cycle_l1_{src}{direction[1]}{src}"] = float(np.mean(np.concatenate(errs)))
    results[f"num_{src}"] = n
  fid = fid_digits_hook()
  digits_shaped = all(tuple(real[d].shape[1:]) == (28, 28, 1) for d in ("a", "b"))
  if config.eval.get("fid", True) and fid is not None and digits_shaped:
    to_u8 = lambda x: np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    try:
      results["fid_ab"] = float(fid(real["b"], to_u8(fake["ab"])))
      results["fid_ba"] = float(fid(real["a"], to_u8(fake["ba"])))
      results["fid_identity_ab"] = float(fid(real["b"], real["a"]))
    except (ValueError, FileNotFoundError, OSError) as e:
      results["fid_error"] = f"{type(e).__name__}: {e}"
  results["seconds"] = time.perf_counter() - t0
  return results


__all__ = ["CycleGANState", "CycleGANTask", "evaluate", "fid_digits_hook", "pool_draws",
           "query_pool"]
