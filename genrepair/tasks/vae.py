r"""Variational autoencoder task (Kingma & Welling, ICLR 2014): state, ``init``, one jitted
``train_step``, ``sample``, previews, and the test log-likelihood by importance sampling.

The step maximises the evidence lower bound with the reparameterisation trick (Sec. 2.4):
``z = mu(x) + sigma(x) * eps``, ``eps ~ N(0, I)``, one sample per example (L = 1, Sec. 2.3,
Eq. 10: the KL term in closed form, Appendix B). The loss is ``-ELBO`` generalised to the
beta-VAE (Higgins et al., ICLR 2017, Eq. 4):

    loss = E_x[ -log p(x|z) + beta * KL(q(z|x) || N(0, I)) ]

selected through the loss registry: ``config.losses = {<recon term>: 1.0, 'kl_normal':
beta}`` with the reconstruction term matching ``config.model.likelihood``:

| likelihood | data on device (from uint8 pixels p) | recon term |
|---|---|---|
| ``bernoulli`` | dynamic binarisation ``x ~ Bernoulli(p / 255)`` drawn on device every step from the step's key (as in Burda et al. 2016, Sec. 5.1), x in {0, 1} | ``bernoulli_nll`` |
| ``gaussian`` | uniform dequantisation ``x = (p + u) / 128 - 1``, ``u ~ U[0, 1)`` (Theis et al. 2016), x in [-1, 1) | ``gaussian_nll`` |
| ``logistic`` | ``x = p / 127.5 - 1`` on the 256-level grid (PixelCNN++ Sec. 2.1) | ``logistic_nll`` |

Units: every metric is in **nats per image** of the discrete data (binarised images for
Bernoulli, 8-bit images otherwise); for the Gaussian the density of the dequantised
``x`` is converted with ``log P(p) >= E_u log p(x) - D log 128`` (the change of variables
``x = (p + u) / 128 - 1``). Bits per dimension = nats / (D ln 2), ``D = H W C``.

Test log-likelihood: :func:`evaluate_nll` estimates ``log p(x)`` with the importance-
weighted bound of Burda et al. (2016, Eq. 8) with k samples from ``q(z|x)``:
``-L_k`` is an upper bound on the NLL that tightens as k grows (k = 5000 is the reporting
convention of Burda et al. and later work).

Randomness: ``rng = fold_in(rng, state.step)``, split into the binarisation (or
dequantisation) key and the reparameterisation key, so a resumed run draws the same
numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genrepair import losses, models, sharding, writers
from genrepair.losses import likelihood as lik
from genrepair.tasks import common

# The reconstruction loss of each likelihood and the inputs the task provides to losses.
RECON_LOSS = {"bernoulli": "bernoulli_nll", "gaussian": "gaussian_nll",
              "logistic": "logistic_nll"}
_INPUTS = {"bernoulli": {"logits", "x", "mu", "log_var"},
           "gaussian": {"mean", "log_scale", "x", "mu", "log_var"},
           "logistic": {"mean", "log_scale", "x", "mu", "log_var"}}
_LOG_2PI = math.log(2.0 * math.pi)


@flax.struct.dataclass
class VAEState:
  """Everything that changes during VAE training; arrays only (Orbax-saveable).

  Attributes:
    step: int32 scalar, number of completed train steps.
    params: ``{'encoder': ..., 'decoder': ...}`` parameters.
    opt_state: optax state of the one optimizer over both networks.
  """
  step: jax.Array
  params: Any
  opt_state: Any


class VAETask:
  """VAE training / sampling / likelihood functions bound to one config (closures).

  Attributes:
    encoder, decoder: unbound Flax modules (``models.vae``).
    likelihood: 'bernoulli' | 'gaussian' | 'logistic'.
    z_dim: latent size.
    image_shape: ``(H, W, C)`` the data must have.
    num_dims: ``D = H * W * C``.
  """

  image_range = (0.0, 1.0)

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    """Builds the model and optimizer and validates the config (nothing compiles).

    Raises:
      ValueError: unknown model/variant/option, likelihood, a loss selection that does not
        match the likelihood, a bad optimizer; messages name the config key.
    """
    self.mesh = mesh  # for the data-parallel gradient (train_step)
    self.config = config
    mc = config.model
    kw = {k: v for k, v in mc.items() if k not in ("name", "variant")}
    pair = models.get(mc.name)(variant=mc.get("variant") or None, **kw)
    self.encoder, self.decoder = pair.encoder, pair.decoder
    self.likelihood = pair.likelihood
    self.z_dim = int(pair.latent_dim)
    self.image_shape = (pair.image_size, pair.image_size, pair.channels)
    self.num_dims = int(np.prod(self.image_shape))
    # Nats added to convert a density of dequantised data on [-1, 1) to 8-bit pixels.
    self.nats_offset = self.num_dims * math.log(128.0) if self.likelihood == "gaussian" else 0.0
    self.weights = dict(config.losses)
    losses.check_weights(self.weights, _INPUTS[self.likelihood], "config.losses")
    recon = RECON_LOSS[self.likelihood]
    if float(self.weights.get(recon, 0.0)) <= 0.0:
      raise ValueError(f"config.losses must select {recon!r} (the reconstruction term of"
                       f" likelihood {self.likelihood!r}) with a weight > 0; got"
                       f" {self.weights}.")
    wrong = [n for n in RECON_LOSS.values()
             if n != recon and float(self.weights.get(n, 0.0)) != 0.0]
    if wrong:
      raise ValueError(f"config.losses selects {wrong}, which do not match"
                       f" config.model.likelihood={self.likelihood!r} (use {recon!r}).")
    self.tx = common.make_optimizer(config.optim, "config.optim")
    self._nll_blocks = {}  # (k, kc) -> jitted IWAE block, see evaluate_nll

  # ------------------------------------------------------------------ model pieces

  def init(self, rng: jax.Array) -> VAEState:
    """Initial state: flax default initialisers (LeCun normal kernels, zero biases)."""
    k_e, k_d = jax.random.split(rng)
    params = {
        "encoder": self.encoder.init(k_e, jnp.zeros((1, *self.image_shape)))["params"],
        "decoder": self.decoder.init(k_d, jnp.zeros((1, self.z_dim)))["params"],
    }
    return VAEState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=self.tx.init(params))

  def to_data(self, rng: jax.Array, images: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` pixels -> the float32 data the likelihood models.

    Bernoulli: ``x = 1[u < p / 255]``, ``u ~ U[0, 1)`` (dynamic binarisation), {0, 1}.
    Gaussian: ``(p + u) / 128 - 1`` in [-1, 1). Logistic: ``p / 127.5 - 1`` in [-1, 1]
    (``rng`` unused).
    """
    p = images.astype(jnp.float32)
    if self.likelihood == "bernoulli":
      return (jax.random.uniform(rng, p.shape) < p / 255.0).astype(jnp.float32)
    if self.likelihood == "gaussian":
      return (p + jax.random.uniform(rng, p.shape)) / 128.0 - 1.0
    return p / 127.5 - 1.0

  def encode(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``q(z|x)``: float32 ``[B, H, W, C]`` data -> ``(mu, log_var)``, ``[B, z_dim]``."""
    return self.encoder.apply({"params": params["encoder"]}, x)

  def decode(self, params, z: jax.Array) -> dict[str, jax.Array]:
    """``p(x|z)``'s parameters as loss inputs: ``{'logits'}`` or ``{'mean', 'log_scale'}``,
    float32 ``[B, H, W, C]``."""
    out = self.decoder.apply({"params": params["decoder"]}, z)
    if self.likelihood == "bernoulli":
      return {"logits": out}
    return {"mean": out[0], "log_scale": out[1]}

  def log_likelihood(self, decoded: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``log p(x|z)`` per example, float32 ``[B]`` nats (of ``x`` as :meth:`to_data` makes it)."""
    if self.likelihood == "bernoulli":
      return lik.bernoulli_log_likelihood(logits=decoded["logits"], x=x)
    if self.likelihood == "gaussian":
      return lik.gaussian_log_likelihood(x=x, **decoded)
    return lik.discretized_logistic_log_likelihood(x=x, **decoded)

  def mean_image(self, decoded: dict[str, jax.Array]) -> jax.Array:
    """The decoder's mean as an image in [0, 1]: ``sigmoid(logits)`` (Bernoulli) or the
    location mapped from [-1, 1] and clipped. float32 ``[B, H, W, C]``."""
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(decoded["logits"])
    return jnp.clip((decoded["mean"] + 1.0) / 2.0, 0.0, 1.0)

  # ------------------------------------------------------------------ training

  def train_step(self, state: VAEState, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[VAEState, dict[str, jax.Array]]:
    """One optimizer step on the batch mean of ``-log p(x|z) + beta KL``.

    Args:
      state: current :class:`VAEState`.
      batch: ``{'image': uint8 [B, H, W, C], ...}`` (sharded over ``data``).
      rng: the run's base key; folded with ``state.step`` here.

    Returns:
      ``(new_state, metrics)``; metrics (float32 scalars, batch means, nats per image):
      ``loss`` (the weighted total), each selected loss term by name, ``elbo`` (= -(recon +
      KL), whatever beta), ``recon`` (-log p(x|z), one z sample), ``kl``,
      ``bits_per_dim`` (-ELBO / (D ln 2)), ``grad_norm``.
    """
    rng = jax.random.fold_in(rng, state.step)
    k_data, k_eps = jax.random.split(rng)
    x = self.to_data(k_data, batch["image"])  # [B, H, W, C]

    eps = jax.random.normal(k_eps, (x.shape[0], self.z_dim), jnp.float32)  # [B, Z]

    def loss_fn(params, x, eps):
      mu, log_var = self.encode(params, x)  # [B, Z] each
      z = mu + jnp.exp(0.5 * log_var) * eps  # reparameterisation, Sec. 2.4
      decoded = self.decode(params, z)
      total, terms = losses.evaluate(self.weights, x=x, mu=mu, log_var=log_var, **decoded)
      recon = -self.log_likelihood(decoded, x) + self.nats_offset  # [B]
      kl = lik.kl_normal(mu=mu, log_var=log_var)  # [B]
      return total, (terms, jnp.mean(recon), jnp.mean(kl))

    # Every term is a batch mean: gradients per device, one flat all-reduce (see
    # sharding.data_parallel_value_and_grad); plain value_and_grad without a mesh.
    value_and_grad = sharding.data_parallel_value_and_grad(
        loss_fn, self.mesh, batch_argnums=(0, 1), aux_specs="mean")
    (loss, (terms, recon, kl)), grads = value_and_grad(state.params, x, eps)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    elbo = -(recon + kl)
    metrics = {"loss": loss, **terms, "elbo": elbo, "recon": recon, "kl": kl,
               "bits_per_dim": -elbo / (self.num_dims * math.log(2.0)),
               "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  # ------------------------------------------------------------------ sampling, previews

  def latents(self, rng: jax.Array, num: int) -> jax.Array:
    """z ~ N(0, I) (the prior): float32 ``[num, z_dim]``."""
    return jax.random.normal(rng, (num, self.z_dim), jnp.float32)

  def sample(self, state: VAEState, z: jax.Array) -> jax.Array:
    """Decoder means of latents ``z [N, z_dim]``: float32 ``[N, H, W, C]`` in [0, 1]
    (Bernoulli: pixel probabilities, the usual way to show binarised-MNIST samples)."""
    return self.mean_image(self.decode(state.params, z))

  def _preview_layout(self, num: int) -> tuple[int, int]:
    """``(data images, prior samples)`` of a ``num``-image grid: the top half of the rows
    alternates data and reconstructions, the bottom half holds samples."""
    cols = self.preview_columns(num)
    pairs = max(1, num // cols // 4)  # data rows (each followed by its reconstructions)
    return pairs * cols, max(0, num - 2 * pairs * cols)

  def preview_inputs(self, rng: jax.Array, batch: dict[str, jax.Array],
                     num: int) -> dict[str, jax.Array]:
    """Fixed preview inputs: the first images of the first batch (as data, binarised with
    ``rng``), a fixed reparameterisation noise and prior latents."""
    n_data, n_prior = self._preview_layout(num)
    images = batch["image"][:n_data]
    k_data, k_eps, k_z = jax.random.split(rng, 3)
    return {"x": self.to_data(k_data, images),
            "eps": jax.random.normal(k_eps, (images.shape[0], self.z_dim)),
            "z": self.latents(k_z, n_prior)}

  def preview(self, state: VAEState, inputs: dict[str, jax.Array]) -> jax.Array:
    """The periodic grid: rows of data, each followed by a row of its reconstructions
    (decoder mean at ``z = mu + sigma eps``), then decoder means of prior samples.
    float32 ``[N, H, W, C]`` in [0, 1]."""
    x = inputs["x"]
    mu, log_var = self.encode(state.params, x)
    recon = self.sample(state, mu + jnp.exp(0.5 * log_var) * inputs["eps"])
    shown = self.mean_image({"mean": x}) if self.likelihood != "bernoulli" else x
    cols = self.preview_columns(x.shape[0] * 2 + inputs["z"].shape[0])
    rows = []
    for i in range(0, x.shape[0], cols):
      rows += [shown[i:i + cols], recon[i:i + cols]]
    return jnp.concatenate(rows + [self.sample(state, inputs["z"])], axis=0)

  def preview_columns(self, num: int) -> int:
    """Grid columns: a square-ish grid."""
    return math.ceil(math.sqrt(num))

  def protocol(self) -> dict[str, Any]:
    """What the data and metrics mean, stored in checkpoint metadata."""
    data = {"bernoulli": "dynamic binarisation x ~ Bernoulli(p / 255), {0, 1}",
            "gaussian": "uniform dequantisation (p + u) / 128 - 1, u ~ U[0, 1)",
            "logistic": "p / 127.5 - 1 on the 256-level grid"}[self.likelihood]
    return {"likelihood": self.likelihood, "data": data,
            "metrics": "nats per image of the discrete data; elbo = -(recon + kl) with one"
                       " z sample and the analytic KL; bits_per_dim = -elbo / (D ln 2)",
            "losses": dict(self.weights),
            "test_nll": "-IWAE_k (Burda et al. 2016, Eq. 8); see evaluate_nll"}

  # ------------------------------------------------------------------ evaluation

  def evaluate(self, state: VAEState, config: ml_collections.ConfigDict, *,
               final: bool = True) -> dict[str, Any]:
    """Test log-likelihood and FID-digits (what ``train.run`` calls).

    Reads ``config.eval``: ``dataset`` / ``split`` (the images, e.g. ``'mnist_idx'`` /
    ``'test'``, through the data pipeline with ``config.data``'s paths), ``k`` (importance
    samples), ``seed``, ``chunk`` (decoder batch), ``num_images`` (0: all) and
    ``fid_num`` (optional, default 0 = off): FID/KID/IS-digits of that many prior samples
    (decoder means, quantised to uint8, latents from ``seed``) against the 5,000 training
    digits (:func:`genrepair.metrics.digits.evaluate_generator`; 28x28x1 models only).

    Args:
      state: the state.
      config: the run config.
      final: False for the periodic evaluations during training (``eval.every``): only
        FID-digits then (the k = 5000 likelihood takes ~12 min on 2 CPU cores).

    Returns:
      :func:`evaluate_nll`'s dict plus ``dataset`` and ``split`` (final), and
      ``fid_digits``, ``kid_digits``, ``kid_digits_std``, ``is_digits``, ``is_digits_std``,
      ``num_samples`` with ``fid_num`` > 0.

    Raises:
      ValueError, FileNotFoundError: the eval dataset cannot be read; FID-digits of
        images that are not 28x28x1.
    """
    from genrepair import data  # pylint: disable=import-outside-toplevel
    ec = config.eval
    fid = {}
    if int(ec.get("fid_num", 0)) > 0:
      from genrepair.metrics import digits  # pylint: disable=import-outside-toplevel
      fid = digits.evaluate_generator(self, state, num=int(ec.fid_num), seed=int(ec.seed))
    if not final:
      return fid
    source = data.data_source(ml_collections.ConfigDict(dict(
        name=ec.dataset, data_dir=config.data.get("data_dir", ""),
        tfds_dir=config.data.get("tfds_dir", ""))), ec.split)
    num = len(source) if not ec.get("num_images", 0) else min(int(ec.num_images), len(source))
    images = np.stack([np.asarray(source[i]["image"]) for i in range(num)])  # uint8
    results = evaluate_nll(self, state, images, k=int(ec.k), seed=int(ec.seed),
                           chunk=int(ec.get("chunk", 0)) or None)
    return {"dataset": ec.dataset, "split": ec.split, **results, **fid}


def _largest_divisor_at_most(n: int, limit: int) -> int:
  return max(d for d in range(1, min(n, max(limit, 1)) + 1) if n % d == 0)


def _nll_block(task: VAETask, k: int, kc: int):
  """The jitted IWAE block of :func:`evaluate_nll` for ``k`` samples in chunks of ``kc``,
  cached on the task so repeated evaluations (``eval.every``) compile once."""
  cache = task._nll_blocks  # pylint: disable=protected-access
  if (k, kc) in cache:
    return cache[(k, kc)]
  z_dim = task.z_dim

  @jax.jit
  def block(params, pixels, index, base):
    # pixels uint8 [n, H, W, C], index int32 [n] (image indices: the keys), base: key.
    k_bin, k_eps = jax.random.fold_in(base, 0), jax.random.fold_in(base, 1)
    n = pixels.shape[0]
    x = jax.vmap(lambda p, i: task.to_data(jax.random.fold_in(k_bin, i), p[None])[0])(
        pixels, index)  # [n, H, W, C]
    mu, log_var = task.encode(params, x)  # [n, Z]
    sigma = jnp.exp(0.5 * log_var)
    eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_eps, i), (k, z_dim)))(
        index)  # [n, k, Z]
    eps = jnp.swapaxes(eps, 0, 1).reshape(k // kc, kc, n, z_dim)
    # log q(z|x) - log p(z) = -0.5 |eps|^2 - sum(log sigma) + 0.5 |z|^2 (the 2 pi cancel).
    log_sigma = 0.5 * jnp.sum(log_var, axis=-1)  # [n]
    x_rep = jnp.broadcast_to(x, (kc, *x.shape)).reshape(kc * n, *x.shape[1:])

    def body(carry, e):  # e [kc, n, Z]
      run_max, run_sum, recon_sum = carry
      z = mu + sigma * e  # [kc, n, Z]
      ll = task.log_likelihood(task.decode(params, z.reshape(kc * n, z_dim)), x_rep)
      ll = ll.reshape(kc, n)
      log_w = ll + 0.5 * jnp.sum(jnp.square(e) - jnp.square(z), axis=-1) + log_sigma
      # Running logsumexp over the chunks: rescale the old sum to the new maximum.
      new_max = jnp.maximum(run_max, jnp.max(log_w, axis=0))
      run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(log_w - new_max), 0)
      return (new_max, run_sum, recon_sum + jnp.sum(ll, axis=0)), None

    init = (jnp.full((n,), -jnp.inf), jnp.zeros((n,)), jnp.zeros((n,)))
    (run_max, run_sum, recon_sum), _ = jax.lax.scan(body, init, eps)
    bound = run_max + jnp.log(run_sum) - math.log(k) - task.nats_offset  # [n] L_k
    recon = -recon_sum / k + task.nats_offset  # [n] E_q[-log p(x|z)]
    kl = lik.kl_normal(mu=mu, log_var=log_var)  # [n]
    return -bound, recon, kl

  cache[(k, kc)] = block
  return block


def evaluate_nll(task: VAETask, state: VAEState, images: np.ndarray, *, k: int,
                 seed: int = 0, chunk: int | None = None,
                 progress_every: float = 60.0) -> dict[str, Any]:
  r"""Test negative log-likelihood by importance sampling (IWAE bound, Burda et al. 2016).

  For each image ``x`` (binarised once with a fixed key for Bernoulli: pixel ``j`` of image
  ``i`` is 1 iff ``u_ij < p_ij / 255`` with ``u_i = uniform(fold_in(fold_in(key(seed), 0),
  i))``; dequantised the same way for Gaussian) draws ``z_1..z_k ~ q(z|x)`` with noise
  ``normal(fold_in(fold_in(key(seed), 1), i), [k, z_dim])`` and computes

      L_k(x) = logsumexp_i [log p(x|z_i) + log N(z_i; 0, I) - log q(z_i|x)] - log k,

  an upper bound ``-L_k`` on ``-log p(x)`` (Eq. 8; tight as k -> infinity). Keys depend
  only on ``seed`` and the image index, so results do not depend on ``chunk`` or on how
  many images are evaluated. Alongside, the ELBO with the analytic KL and the reconstruction
  term averaged over the same k samples.

  Speed: one jitted program scans the k samples in chunks with a running logsumexp, for a
  block of images at a time, on this process's first device; the decoder runs ``k`` times
  per image (5 * 10^7 passes for k = 5000 on the 10,000 MNIST test images).

  Args:
    task: a :class:`VAETask`.
    state: its state (replicated or single-device arrays).
    images: uint8 ``[N, H, W, C]`` test images.
    k: importance samples per image (>= 1).
    seed: the evaluation seed (binarisation and samples).
    chunk: decoder batch size (images x samples per call), default 8192; the samples of
      one image are split into chunks of ``kc`` = the largest divisor of ``k`` <= chunk.
    progress_every: seconds between progress lines (images done, running mean NLL, ETA;
      :func:`genrepair.writers.log`); 0 = silent. k = 5000 on the MNIST test set takes
      ~12 minutes on 2 CPU cores.

  Returns:
    ``{'nll': mean -L_k (nats per image), 'nll_std_err': its standard error over images,
    'elbo': mean ELBO, 'recon': mean E_q[-log p(x|z)], 'kl': mean KL (all nats),
    'bits_per_dim': nll / (D ln 2), 'k', 'num_images', 'seed', 'seconds',
    'per_image_nll': list of N floats (nats, 4 decimals)}``: JSON-serialisable.

  Raises:
    ValueError: ``k < 1``, or images that are not uint8 of the task's shape.
  """
  t0 = time.perf_counter()
  images = np.asarray(images)
  if k < 1:
    raise ValueError(f"evaluate_nll: k must be >= 1, got {k}.")
  if images.dtype != np.uint8 or tuple(images.shape[1:]) != tuple(task.image_shape):
    raise ValueError(f"evaluate_nll: images must be uint8 [N, {task.image_shape}], got"
                     f" {images.dtype} {images.shape}.")
  chunk = int(chunk or 8192)
  kc = _largest_divisor_at_most(k, chunk)  # samples per image per decoder call
  # Images per jitted call (no more than there are: padding would be wasted work).
  per_call = min(max(1, chunk // k) if kc == k else 1, images.shape[0])
  block = _nll_block(task, k, kc)
  base = jax.random.key(seed)

  # Evaluate on one device: a replicated state would run every block on every device.
  params = jax.tree.map(lambda a: a.addressable_data(0) if hasattr(a, "addressable_data")
                        else a, state.params)
  n_img = images.shape[0]
  nll, recon, kl = [], [], []
  last_report = t0
  for start in range(0, n_img, per_call):
    pix = images[start:start + per_call]
    idx = np.arange(start, start + pix.shape[0], dtype=np.int32)
    if pix.shape[0] < per_call:  # Pad the last block: one compiled shape.
      pad = per_call - pix.shape[0]
      pix = np.concatenate([pix, np.zeros((pad, *pix.shape[1:]), pix.dtype)])
      idx = np.concatenate([idx, np.full((pad,), idx[-1], np.int32)])
    out = jax.device_get(block(params, pix, idx, base))
    m = min(per_call, n_img - start)
    for acc, values in zip((nll, recon, kl), out):
      acc.append(values[:m])
    now = time.perf_counter()
    if progress_every and now - last_report >= progress_every and start + m < n_img:
      last_report, done = now, start + m
      eta = (now - t0) / done * (n_img - done)
      writers.log(f"IWAE-{k} NLL: {done}/{n_img} images, running mean"
                  f" {float(np.mean(np.concatenate(nll))):.2f} nats, ETA {eta / 60:.1f} min")
  nll, recon, kl = (np.concatenate(v).astype(np.float64) for v in (nll, recon, kl))
  return {"nll": float(nll.mean()),
          "nll_std_err": float(nll.std(ddof=1) / math.sqrt(n_img)) if n_img > 1 else 0.0,
          "elbo": float(-(recon + kl).mean()), "recon": float(recon.mean()),
          "kl": float(kl.mean()),
          "bits_per_dim": float(nll.mean() / (task.num_dims * math.log(2.0))),
          "k": int(k), "num_images": int(n_img), "seed": int(seed),
          "seconds": time.perf_counter() - t0,
          "per_image_nll": [round(float(v), 4) for v in nll]}
