"""Image restoration task: clean batches are corrupted on device, a model restores them.

One dataset of clean images serves every restoration problem: the pipeline yields clean
uint8 patches ``[B, P, P, C]``, the step turns them into float32 ``[0, 1]`` targets and
corrupts them with :mod:`genrepair.degradations` using keys from ``fold_in(rng, step)``.
Evaluation corrupts each full-size test image with a fixed key per image, so the numbers
are reproducible.

``config.degradation.kind``:

| kind | corruption (params) | model input |
|---|---|---|
| ``gaussian_noise`` | ``clean + sigma/255 N(0,1)``, not clipped (``sigma``; blind: ``sigma_max`` > 0 draws sigma ~ U[sigma, sigma_max] per image) | noisy image |
| ``salt_and_pepper`` | fraction ``density`` of pixels to 0/1 | noisy image |
| ``bicubic`` | MATLAB bicubic down by ``scale`` | LR image (``sr_input='lr'``) or its bicubic upscale (``'bicubic'``) |
| ``blur`` | circular blur with one of the ``kernels`` (random per image in training, ``i mod N`` for test image ``i``) + ``sigma`` noise | blurred noisy image; with ``deconvolution='wiener'`` (non-blind) ``[Wiener estimate, blurred]``, 2C channels |
| ``inpaint`` | holes (mask 1) set to 0: random brush strokes in training (``masks='strokes'``); at evaluation test image ``i`` gets the ``i``-th NVIDIA mask of hole-ratio bin ``mask_bin`` from ``eval_masks`` (cropped to the image), or a fixed-seed stroke mask if ``eval_masks`` is '' | ``[masked image, mask]``, C + 1 channels |

``kernels`` is ``'gaussian'`` (four isotropic Gaussians, sigma 1.0/1.6/2.2/3.0 px, for a
machine without data), or a ``.mat`` file of kernels, relative to the data root
(``config.data.data_dir`` or ``$GENREPAIR_DATA``) unless absolute, e.g. ``blur/Levin09.mat``
(the 8 Levin et al. 2009 kernels). ``eval_masks`` is resolved the same way
(``masks/irregular``).

``deconvolution='wiener'`` (``blur`` only, ``sigma`` > 0) makes deblurring non-blind: the
model also sees the Wiener deconvolution of the blurred image with the true kernel and
noise level (:mod:`genrepair.deconvolution`; Schuler et al., CVPR 2013), first, so a model
with a global residual (``unet`` variant ``deblur``) refines the Wiener estimate. The
default ``'none'`` feeds the blurred image alone (the model must infer the kernel).

Inpainting output keeps the known pixels: ``out = masked + mask * model(x)``, so every loss
measures the holes only (a masked loss, normalised by all pixels).

``switching=True`` (``salt_and_pepper`` only) is the switching scheme of impulse-noise
filters (Sun & Neuvo, Pattern Recognit. Lett. 1994): a pixel whose channels are all 0 or
all 1 is an impulse candidate (``degradations.impulse_mask``), every other pixel is passed
through unchanged (``out = (1 - mask) noisy + mask model(noisy)``), so the model only
fills the candidates, as an inpainting model fills holes, and the loss sees only them.
Clean pixels that happen to be 0 or 255 are candidates too; the model restores them like
impulses. The classical baseline becomes the switching 3x3 median
(``genrepair.baselines.median_filter(switching=True)``).

``prefilter='median'`` (``salt_and_pepper`` only) makes the model two-stage, like Wiener
deblurring: its input is ``[switching-median estimate (genrepair.filters), noisy]`` (2C
channels) and a residual model (DnCNN with ``extra_inputs=C``) refines the estimate.

Models follow the restoration interface: ``restore(x, *, train) -> image`` (float32, not
clipped), attribute ``sr_input`` (``None`` | ``'lr'`` | ``'bicubic'``).
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genrepair import deconvolution, degradations, filters, losses, metrics, models, sharding
from genrepair.tasks import common

INPUTS = {"pred", "target"}
KINDS = ("gaussian_noise", "salt_and_pepper", "bicubic", "blur", "inpaint")
DECONVOLUTIONS = ("none", "wiener")
PREFILTERS = ("none", "median")
GAUSSIAN_KERNEL_SIGMAS = (1.0, 1.6, 2.2, 3.0)


def resolve_data_path(path: str, config: ml_collections.ConfigDict, key: str) -> str:
  """An absolute path as is; otherwise relative to the data root.

  Raises:
    FileNotFoundError: relative path without a data root (``config.data.data_dir`` or
      ``$GENREPAIR_DATA``), or a path that does not exist; the message names ``key``.
  """
  if os.path.isabs(path):
    resolved = path
  else:
    root = config.data.get("data_dir", "") or os.environ.get("GENREPAIR_DATA", "")
    if not root:
      raise FileNotFoundError(f"{key}={path!r} is relative to the data root, but neither"
                              " config.data.data_dir nor $GENREPAIR_DATA is set.")
    resolved = os.path.join(os.path.expanduser(root), path)
  if not os.path.exists(resolved):
    raise FileNotFoundError(f"{key}={path!r}: {resolved} does not exist.")
  return resolved


def load_kernel_set(config: ml_collections.ConfigDict) -> np.ndarray:
  """The blur kernels of ``config.degradation.kernels`` as a float32 ``[N, K, K]`` stack.

  Raises:
    FileNotFoundError, ValueError: the kernel file cannot be found or read.
  """
  spec = config.degradation.get("kernels", "gaussian")
  if spec == "gaussian":
    kernels = [degradations.gaussian_kernel(s) for s in GAUSSIAN_KERNEL_SIGMAS]
  else:
    kernels = degradations.load_blur_kernels(
        resolve_data_path(spec, config, "config.degradation.kernels"))
  return degradations.stack_kernels(kernels)


@flax.struct.dataclass
class RestorationState:
  """Arrays that change during training.

  Attributes:
    step: int32 scalar, completed steps.
    params: model parameters.
    batch_stats: BatchNorm running statistics (empty dict for models without BatchNorm).
    opt_state: optax state.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def crop_border(x: jax.Array, border: int) -> jax.Array:
  """``x [B, H, W, C]`` (any dtype) without ``border`` pixels on each side.

  Returns ``[B, H - 2 border, W - 2 border, C]``; ``border = 0`` returns ``x`` itself. The
  caller keeps ``0 <= 2 border < H, W`` (``RestorationTask`` checks it against the patch
  size and raises ``ValueError`` naming ``config.train.loss_border``).
  """
  if border == 0:
    return x
  return x[:, border:x.shape[1] - border, border:x.shape[2] - border]


class RestorationTask:
  """Restoration training/evaluation functions bound to one config.

  Images on device are float32 in ``[0, 1]`` (``image_range``).
  """

  image_range = (0.0, 1.0)

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    """Builds the model and optimizer and validates the config (nothing compiles).

    Raises:
      ValueError: unknown degradation kind or bad parameters, unknown model/loss/optimizer,
        a patch size the scale does not divide; messages name the config key.
    """
    self.mesh = mesh  # for the data-parallel gradient (train_step)
    self.config = config
    mc, dc = config.model, config.degradation
    # config.model = the family's Model(...) arguments: name, variant and any overrides.
    kw = {k: v for k, v in mc.items() if k not in ("name", "variant")}
    self.model = models.get(mc.name)(variant=mc.get("variant") or None, **kw)
    # BatchNorm models with an ``axis_name`` field (DnCNN) train inside the data-parallel
    # shard_map with statistics over the mesh (sharding.data_parallel_value_and_grad).
    self._mapped_model = (self.model.clone(axis_name=sharding.DATA_AXIS)
                          if "axis_name" in getattr(self.model, "__dataclass_fields__", {})
                          else None)
    self.channels = int(mc.channels)
    self.sr_input = getattr(self.model, "sr_input", None)
    model_scale = getattr(self.model, "scale", None)
    if model_scale is not None and int(model_scale) != int(dc.scale):
      raise ValueError(f"config.model.scale={model_scale} differs from"
                       f" config.degradation.scale={dc.scale}.")
    if dc.kind not in KINDS:
      raise ValueError(f"config.degradation.kind={dc.kind!r}; known: {KINDS}.")
    if dc.kind == "bicubic":
      if self.sr_input not in ("lr", "bicubic"):
        raise ValueError(f"config.model.name={mc.name!r} is not a super-resolution model"
                         " (no sr_input), but config.degradation.kind='bicubic'.")
      if int(dc.scale) < 2 or config.data.patch_size % int(dc.scale):
        raise ValueError(f"config.degradation.scale={dc.scale} must be >= 2 and divide"
                         f" config.data.patch_size={config.data.patch_size}.")
    elif dc.kind == "gaussian_noise" and (dc.sigma < 0 or 0 < dc.sigma_max <= dc.sigma):
      raise ValueError(f"config.degradation: need 0 <= sigma ({dc.sigma}) and sigma_max"
                       f" ({dc.sigma_max}) either 0 (fixed sigma) or > sigma (blind).")
    elif dc.kind == "salt_and_pepper" and not 0 < dc.density < 1:
      raise ValueError(f"config.degradation.density must be in (0, 1), got {dc.density}.")
    elif dc.kind == "blur" and dc.sigma < 0:
      raise ValueError(f"config.degradation.sigma must be >= 0, got {dc.sigma}.")
    elif dc.kind == "inpaint" and dc.get("masks", "strokes") not in ("strokes", "boxes"):
      raise ValueError(f"config.degradation.masks={dc.get('masks')!r}; known: 'strokes',"
                       " 'boxes' (training masks are drawn on device).")
    self.deconvolution = dc.get("deconvolution", "none")
    if self.deconvolution not in DECONVOLUTIONS:
      raise ValueError(f"config.degradation.deconvolution={self.deconvolution!r}; known:"
                       f" {DECONVOLUTIONS}.")
    if self.deconvolution == "wiener" and (dc.kind != "blur" or not dc.sigma > 0):
      raise ValueError("config.degradation.deconvolution='wiener' needs kind='blur' and"
                       f" sigma > 0, got kind={dc.kind!r}, sigma={dc.sigma}.")
    if dc.kind in ("blur", "inpaint") and self.sr_input is not None:
      raise ValueError(f"config.model.name={mc.name!r} is a super-resolution model;"
                       f" config.degradation.kind={dc.kind!r} needs a same-size model.")
    self.kind = dc.kind
    # An SR model with sr_input='lr' outputs scale x its input size.
    self.output_scale = int(dc.scale) if self.sr_input == "lr" else 1
    self.switching = bool(dc.get("switching", False))
    if self.switching and dc.kind != "salt_and_pepper":
      raise ValueError("config.degradation.switching=True is for kind='salt_and_pepper',"
                       f" got kind={dc.kind!r}.")
    self.prefilter = dc.get("prefilter", "none")
    if self.prefilter not in PREFILTERS:
      raise ValueError(f"config.degradation.prefilter={self.prefilter!r}; known:"
                       f" {PREFILTERS}.")
    if self.prefilter != "none" and dc.kind != "salt_and_pepper":
      raise ValueError(f"config.degradation.prefilter={self.prefilter!r} is for"
                       f" kind='salt_and_pepper', got kind={dc.kind!r}.")
    self.in_channels = self.channels + 1 if dc.kind == "inpaint" else self.channels
    # Two-stage inputs [classical estimate, observation].
    self.two_stage = self.deconvolution == "wiener" or self.prefilter == "median"
    if self.two_stage:
      self.in_channels = 2 * self.channels
    self._kernels = None  # blur kernels: read on first use (restoring needs none)
    self.weights = dict(config.losses)
    losses.check_weights(self.weights, INPUTS, "config.losses")
    # Pixels dropped from each side of the output and the target before the loss (SRCNN
    # Sec. 4.1: 'valid' layers, loss on the central 21x21 of a 33x33 patch = a 6-pixel
    # border with 'same' padding, whose centre outputs equal the valid network's).
    self.loss_border = int(config.train.get("loss_border", 0))
    patch = int(config.data.patch_size)
    if not 0 <= 2 * self.loss_border < patch:
      raise ValueError(f"config.train.loss_border={self.loss_border} must be >= 0 and leave"
                       f" pixels of the config.data.patch_size={patch} patches.")
    self.tx = common.make_optimizer(config.optim, "config.optim")
    self.schedule = common.make_schedule(config.optim, "config.optim")

  # ------------------------------------------------------------------ degradation

  @property
  def kernels(self) -> np.ndarray | None:
    """``blur`` only: the kernel set, float32 ``[N, K, K]``, read once on first use.

    Raises:
      FileNotFoundError, ValueError: the kernel file cannot be found or read.
    """
    if self.kind != "blur":
      return None
    if self._kernels is None:
      self._kernels = load_kernel_set(self.config)
    return self._kernels

  def degrade(self, rng: jax.Array, clean: jax.Array, *, mask: jax.Array | None = None,
              kernel_index: jax.Array | None = None) -> jax.Array:
    """Corrupts clean images into model inputs.

    Args:
      rng: key (the only source of randomness).
      clean: float32 ``[B, H, W, C]`` in ``[0, 1]``; H, W multiples of the SR scale.
      mask: ``inpaint`` only: float ``[B, H, W, 1]``, 1 = hole; default: drawn from ``rng``.
      kernel_index: ``blur`` only: int ``[B]`` indices into ``self.kernels``; default: drawn
        uniformly from ``rng``.

    Returns:
      float32 model input: ``[B, H, W, C]``, ``[B, H/s, W/s, C]`` for ``sr_input='lr'``,
      ``[B, H, W, C + 1]`` for ``inpaint``.
    """
    dc = self.config.degradation
    if dc.kind == "blur":
      k_idx, rng = jax.random.split(rng)
      if kernel_index is None:
        kernel_index = jax.random.randint(k_idx, (clean.shape[0],), 0, len(self.kernels))
      kernels = jnp.asarray(self.kernels)[kernel_index]               # [B, K, K]
      blurred = degradations.blur_noise(rng, clean, kernel=kernels, sigma=dc.sigma)
      return self.model_input(blurred, kernel=kernels)
    if dc.kind == "inpaint":
      if mask is None:
        shape = clean.shape[:3] + (1,)
        if dc.get("masks", "strokes") == "boxes":
          mask = degradations.random_box_mask(rng, shape)
        else:
          mask = degradations.random_stroke_mask(rng, shape)
      return self.model_input(clean, mask)
    if dc.kind == "gaussian_noise":
      sigma = dc.sigma
      if dc.sigma_max:
        k_sigma, rng = jax.random.split(rng)
        sigma = jax.random.uniform(k_sigma, (clean.shape[0],), minval=dc.sigma,
                                   maxval=dc.sigma_max)
      return degradations.gaussian_noise(rng, clean, sigma=sigma)
    if dc.kind == "salt_and_pepper":
      return self.model_input(degradations.salt_and_pepper(rng, clean, density=dc.density))
    lr = degradations.bicubic_downsample(clean, scale=int(dc.scale))  # [B, H/s, W/s, C]
    if self.sr_input == "lr":
      return lr
    return degradations.imresize(lr, scale=float(dc.scale))  # [B, H, W, C]

  # ------------------------------------------------------------------ state and step

  def init(self, rng: jax.Array) -> RestorationState:
    """Initial state (the model's own initialisers), fresh optimizer state."""
    p = int(self.config.data.patch_size)
    if self.sr_input == "lr":
      p //= int(self.config.degradation.scale)
    variables = self.model.init(rng, jnp.zeros((1, p, p, self.in_channels)),
                                train=False, method="restore")
    params = variables["params"]
    return RestorationState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}),
                            opt_state=self.tx.init(params))

  def clean_from_uint8(self, image: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` -> float32 targets in ``[0, 1]`` with the model's channels.

    A 1-channel model on RGB data (SRCNN-style SR on the Y channel) gets the BT.601 Y
    channel rounded to 8 bits, as MATLAB ``rgb2ycbcr`` on uint8 images gives; that is the
    SR benchmark protocol's input.

    Raises:
      ValueError: channel counts that cannot be reconciled.
    """
    x = image.astype(jnp.float32) / 255.0
    c = x.shape[-1]
    if c == self.channels:
      return x
    if self.channels == 1 and c == 3:
      y = metrics.rgb_to_y(x)  # [B, H, W, 1] in [16, 235] / 255
      return jnp.floor(y * 255.0 + 0.5) / 255.0
    raise ValueError(f"Data has {c} channels but config.model.channels={self.channels}.")

  def model_input(self, image: jax.Array, mask: jax.Array | None = None,
                  kernel: jax.Array | np.ndarray | None = None) -> jax.Array:
    """The model input for an already corrupted image (``launch.py restore``, previews).

    Args:
      image: float32 ``[B, H, W, C]`` in ``[0, 1]`` with the model's channel count: the
        noisy/blurred/LR image, or for ``inpaint`` the image whose holes are ignored.
      mask: ``inpaint`` only: float ``[B, H, W, 1]``, 1 = hole.
      kernel: ``deconvolution='wiener'`` only: the blur kernel, float ``[K, K]`` (every
        image) or ``[B, K, K]`` (``K <= H, W``; summing to 1).

    Returns:
      ``inpaint``: ``[B, H, W, C + 1]`` = ``[image with holes set to 0, mask]``; SR with
      ``sr_input='bicubic'``: the MATLAB bicubic upscale ``[B, sH, sW, C]``; Wiener
      deblurring: ``[B, H, W, 2C]`` = ``[Wiener estimate, image]``; ``prefilter='median'``:
      ``[B, H, W, 2C]`` = ``[switching-median estimate, image]``; otherwise ``image``.

    Raises:
      ValueError: ``inpaint`` without a mask, or a mask of the wrong shape; Wiener
        deblurring without a kernel, or a kernel that is not 2-D/3-D or larger than the
        image.
    """
    if self.kind == "inpaint":
      if mask is None:
        raise ValueError("Inpainting needs a mask (1 = hole) of the image's size.")
      mask = jnp.asarray(mask, jnp.float32)
      return jnp.concatenate([degradations.apply_mask(image, mask), mask], axis=-1)
    if self.kind == "bicubic" and self.sr_input == "bicubic":
      return degradations.imresize(image, scale=float(self.config.degradation.scale))
    if self.prefilter == "median":
      return jnp.concatenate([filters.switching_median(image), image], axis=-1)
    if self.deconvolution == "wiener":
      if kernel is None:
        raise ValueError("This is a non-blind (Wiener-conditioned) deblurring model: it"
                         " needs the blur kernel (launch.py restore --kernel).")
      k = jnp.asarray(kernel, jnp.float32)
      if k.ndim == 2:
        k = jnp.broadcast_to(k, (image.shape[0],) + k.shape)
      estimate = deconvolution.wiener(image, k, sigma=float(self.config.degradation.sigma))
      return jnp.concatenate([estimate, image], axis=-1)
    return image

  def observation(self, x: jax.Array) -> jax.Array:
    """The corrupted image inside a model input ``x`` (what the input PSNR scores).

    ``[B, h, w, C]``: the noisy/blurred/LR image, for ``inpaint`` the masked image (holes
    0), for two-stage inputs (Wiener deblurring, median prefilter) the observation (not
    the estimate), for SR with ``sr_input='bicubic'`` the bicubic upscale.
    """
    c = self.channels
    return x[..., c:2 * c] if self.two_stage else x[..., :c]

  def apply(self, params, batch_stats, x: jax.Array, *, train: bool, mapped: bool = False):
    """Runs the model's ``restore``; returns ``(output, new_batch_stats)``.

    ``mapped``: called per device inside the train step's ``shard_map`` (BatchNorm
    statistics over the ``data`` axis; only for models with an ``axis_name`` field).

    For ``inpaint`` (``x = [masked, mask]``) the known pixels are kept:
    ``output = masked + mask * model(x)``; with ``switching`` every pixel that is not an
    impulse candidate is kept: ``output = (1 - m) y + m model(x)``, ``y =
    observation(x)``, ``m = degradations.impulse_mask(y)``.
    """
    variables = {"params": params, "batch_stats": batch_stats}
    if train and batch_stats:
      model = self._mapped_model if mapped else self.model
      out, upd = model.apply(variables, x, train=True, method="restore",
                             mutable=["batch_stats"])
      bs = upd["batch_stats"]
    else:
      out, bs = self.model.apply(variables, x, train=train, method="restore"), batch_stats
    if self.kind == "inpaint":
      c = self.channels
      out = x[..., :c] + x[..., c:] * out
    elif self.switching:
      y = self.observation(x)
      m = degradations.impulse_mask(y)
      out = (1.0 - m) * y + m * out
    return out, bs

  def train_step(self, state: RestorationState, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[RestorationState, dict[str, jax.Array]]:
    """One optimizer step on ``loss(model(degrade(clean)), clean)``.

    Args:
      state: current state.
      batch: ``{'image': uint8 [B, P, P, C]}`` clean patches (sharded over ``data``).
      rng: the run's base key; folded with ``state.step`` here.

    Returns:
      ``(new_state, metrics)``: ``loss``, every loss term, ``psnr`` (dB, batch mean of the
      per-patch PSNR of the clipped float output, a training signal, not the benchmark
      protocol), ``grad_norm``, ``lr``. Loss and ``psnr`` see the patches without
      ``config.train.loss_border`` pixels on each side (default 0).
    """
    rng = jax.random.fold_in(rng, state.step)
    clean = self.clean_from_uint8(batch["image"])  # [B, P, P, C] in [0, 1]
    x = self.degrade(rng, clean)

    target = crop_border(clean, self.loss_border)

    # Per-example terms only: one flat gradient all-reduce (sharding module). BatchNorm's
    # statistics span the whole batch: computed over the mesh's axis by models that take
    # an axis name (DnCNN), else XLA's own data parallelism (mesh None).
    bn = bool(jax.tree.leaves(state.batch_stats))
    mesh = None if bn and self._mapped_model is None else self.mesh
    mapped = bn and mesh is not None

    def loss_fn(params, x, target):
      out, bs = self.apply(params, state.batch_stats, x, train=True, mapped=mapped)
      out = crop_border(out, self.loss_border)
      total, terms = losses.evaluate(self.weights, pred=out, target=target)
      return total, (terms, bs, out)

    value_and_grad = sharding.data_parallel_value_and_grad(
        loss_fn, mesh, batch_argnums=(0, 1),
        aux_specs=("mean", "replicated" if mapped else "mean", "batch"))
    (loss, (terms, bs, out)), grads = value_and_grad(state.params, x, target)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=bs, opt_state=opt_state)
    lr = self.schedule(state.step) if callable(self.schedule) else self.schedule
    return new_state, {
        "loss": loss, **terms,
        "psnr": jnp.mean(metrics.psnr(jnp.clip(out, 0.0, 1.0), target)),
        "grad_norm": optax.tree.norm(grads),
        "lr": jnp.asarray(lr, jnp.float32),
    }

  # ------------------------------------------------------------------ previews

  def preview_inputs(self, rng: jax.Array, batch: dict[str, jax.Array],
                     num: int) -> dict[str, jax.Array]:
    """Fixed preview: the first ``num`` clean patches of the first batch, corrupted once.

    Args:
      rng: preview key (``config.sample.seed``).
      batch: the first global batch ``{'image': uint8 [B, P, P, C]}``.
      num: patches shown (at most B).
    """
    clean = self.clean_from_uint8(batch["image"][:num])
    return {"clean": clean, "input": self.degrade(rng, clean)}

  def preview(self, state: RestorationState, fixed: dict[str, jax.Array]) -> jax.Array:
    """float32 ``[3N, P, P, C]`` in ``[0, 1]``: inputs (LR nearest-upsampled), outputs,
    targets — shown as three rows of N."""
    out, _ = self.apply(state.params, state.batch_stats, fixed["input"], train=False)
    shown = self.observation(fixed["input"])
    if shown.shape[1] != out.shape[1]:
      s = out.shape[1] // shown.shape[1]
      shown = jnp.repeat(jnp.repeat(shown, s, axis=1), s, axis=2)
    return jnp.clip(jnp.concatenate([shown, out, fixed["clean"]]), 0.0, 1.0)

  def preview_columns(self, num: int) -> int:
    """Grid columns of a preview of ``num`` patches (rows: input, output, target)."""
    return num

  # ------------------------------------------------------------------ evaluation

  def eval_protocol(self) -> metrics.Protocol:
    """The benchmark protocol of this task's degradation (recorded with every number)."""
    dc = self.config.degradation
    if dc.kind == "bicubic":
      return metrics.Protocol.super_resolution(int(dc.scale))
    return metrics.Protocol.denoising()

  def protocol(self) -> dict[str, Any]:
    """Metadata: what the evaluation numbers mean."""
    return {"degradation": self.config.degradation.to_dict(),
            "metrics": self.eval_protocol().to_dict()}
