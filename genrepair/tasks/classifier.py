"""Image classification task: state, ``init``, one jitted ``train_step``, ``predict``.

Trains the feature network of the digit metrics (:mod:`genrepair.metrics.digits`) with the
generic loop: softmax cross-entropy on integer labels, optimizer from ``config.optim``,
light augmentation on device.

Images: the batch holds uint8 ``[B, H, W, C]`` and int32 labels ``[B]``; on device the
images become float32 in ``[-1, 1]`` (``x / 127.5 - 1``), the GAN image range, so the
classifier scores generator outputs without conversion.

Augmentation (``config.augment``, training only): each image is moved by a random whole
number of pixels in ``[-max_shift, max_shift]`` along each axis and, when ``max_rotation``
(degrees) or ``max_scale`` (fraction) are > 0, rotated and scaled about its centre by
uniform random amounts (bilinear resampling); pixels from outside the image are the
background value -1. With rotation and scale 0 the shift is an exact pixel copy.

Randomness: ``rng = fold_in(rng, state.step)``, split into the augmentation key and the
dropout key, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrepair import models
from genrepair.tasks import common


@flax.struct.dataclass
class ClassifierState:
  """Everything that changes during classifier training; arrays only (Orbax-saveable).

  Attributes:
    step: int32 scalar, number of completed train steps.
    params: model parameters.
    opt_state: optax optimizer state.
  """
  step: jax.Array
  params: Any
  opt_state: Any


def augment(rng: jax.Array, images: jax.Array, *, max_shift: int = 0,
            max_rotation: float = 0.0, max_scale: float = 0.0,
            background: float = -1.0) -> jax.Array:
  """Random per-image shift / rotation / scale (see the module docstring).

  Args:
    rng: key; one draw per image.
    images: float32 ``[B, H, W, C]``.
    max_shift: largest shift in pixels (integer, >= 0).
    max_rotation: largest rotation in degrees (>= 0).
    max_scale: largest relative scale change (``s in [1 - max_scale, 1 + max_scale]``).
    background: value of pixels moved in from outside the image.

  Returns:
    float32 ``[B, H, W, C]``.
  """
  b, h, w, _ = images.shape
  k_shift, k_rot, k_scale = jax.random.split(rng, 3)
  shift = jax.random.randint(k_shift, (b, 2), -max_shift, max_shift + 1).astype(jnp.float32)
  angle = jnp.deg2rad(jax.random.uniform(k_rot, (b,), minval=-max_rotation,
                                         maxval=max_rotation))
  scale = jax.random.uniform(k_scale, (b,), minval=1.0 - max_scale, maxval=1.0 + max_scale)
  # Output pixel p samples the input at c + R(-angle) (p - c - shift) / scale.
  centre = jnp.array([(h - 1) / 2, (w - 1) / 2], jnp.float32)
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                            jnp.arange(w, dtype=jnp.float32), indexing="ij")
  grid = jnp.stack([rows, cols])                                  # [2, H, W]

  def one(image, shift, angle, scale):                            # image [H, W, C]
    d = grid - (centre + shift)[:, None, None]                    # [2, H, W]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src = jnp.stack([cos * d[0] + sin * d[1], -sin * d[0] + cos * d[1]]) / scale
    src = src + centre[:, None, None]
    return jnp.stack([
        jax.scipy.ndimage.map_coordinates(image[..., c], [src[0], src[1]], order=1,
                                          mode="constant", cval=background)
        for c in range(image.shape[-1])], axis=-1)

  return jax.vmap(one)(images, shift, angle, scale)


class ClassifierTask:
  """Classifier training/prediction functions bound to one config (closures).

  Attributes:
    model: unbound Flax module returning ``(features, logits)``.
    image_shape: ``(H, W, C)`` the data must have.
    num_classes: number of logits.
  """

  image_range = (-1.0, 1.0)

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    """Builds the model and optimizer and validates the config (nothing compiles).

    Raises:
      ValueError: unknown model/variant/option or optimizer, bad augmentation values;
        messages name the config key.
    """
    del mesh  # Everything in the step is per-example: the batch sharding propagates.
    self.config = config
    mc = config.model
    kw = {k: v for k, v in mc.items() if k not in ("name", "variant")}
    self.model = models.get(mc.name)(variant=mc.get("variant") or None, **kw)
    self.image_shape = (self.model.image_size, self.model.image_size, self.model.channels)
    self.num_classes = int(self.model.num_classes)
    ac = config.get("augment") or ml_collections.ConfigDict()
    self.augment_kw = dict(max_shift=int(ac.get("max_shift", 0)),
                           max_rotation=float(ac.get("max_rotation", 0.0)),
                           max_scale=float(ac.get("max_scale", 0.0)))
    if (self.augment_kw["max_shift"] < 0 or self.augment_kw["max_rotation"] < 0
        or not 0 <= self.augment_kw["max_scale"] < 1):
      raise ValueError(f"config.augment: need max_shift >= 0, max_rotation >= 0 and"
                       f" 0 <= max_scale < 1, got {self.augment_kw}.")
    self.tx = common.make_optimizer(config.optim, "config.optim")
    self._eval_fn = None  # jitted apply, made on the first evaluate()

  def init(self, rng: jax.Array) -> ClassifierState:
    """Initial state: flax default initialisers (LeCun normal kernels, zero biases)."""
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape)), train=False)["params"]
    return ClassifierState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=self.tx.init(params))

  @staticmethod
  def to_float(images: jax.Array) -> jax.Array:
    """uint8 ``[B, H, W, C]`` -> float32 in ``[-1, 1]``."""
    return images.astype(jnp.float32) / 127.5 - 1.0

  def augment(self, rng: jax.Array, x: jax.Array) -> jax.Array:
    """``config.augment`` applied to float32 ``[B, H, W, C]`` images."""
    return augment(rng, x, **self.augment_kw)

  def apply(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inference: float32 ``[B, H, W, C]`` in ``[-1, 1]`` -> ``(features, logits)``."""
    return self.model.apply({"params": params}, x, train=False)

  def train_step(self, state: ClassifierState, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[ClassifierState, dict[str, jax.Array]]:
    """One optimizer step on the mean cross-entropy of an augmented batch.

    Args:
      state: current :class:`ClassifierState`.
      batch: ``{'image': uint8 [B, H, W, C], 'label': int32 [B]}`` (sharded over ``data``).
      rng: the run's base key; folded with ``state.step`` here.

    Returns:
      ``(new_state, metrics)``; metrics: ``cross_entropy`` (mean, nats), ``accuracy``
      (fraction of the augmented batch classified correctly, dropout on), ``grad_norm``.
    """
    rng = jax.random.fold_in(rng, state.step)
    k_aug, k_drop = jax.random.split(rng)
    x = self.augment(k_aug, self.to_float(batch["image"]))  # [B, H, W, C]
    labels = batch["label"]

    def loss_fn(params):
      _, logits = self.model.apply({"params": params}, x, train=True,
                                   rngs={"dropout": k_drop})
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
      return jnp.mean(ce), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "cross_entropy": loss,
        "accuracy": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
        "grad_norm": optax.tree.norm(grads),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def evaluate(self, state: ClassifierState, config: ml_collections.ConfigDict, *,
               final: bool = True) -> dict[str, Any]:
    """Top-1 accuracy on ``config.eval`` (what ``train.run`` calls at the end of a run).

    ``final`` (periodic vs end-of-run evaluation, the tasks' common interface) changes
    nothing here.

    Reads ``config.eval.dataset`` / ``config.eval.split`` whole (e.g. ``'mnist_idx'`` /
    ``'test'``: the 10,000 MNIST test images) through the data pipeline with
    ``config.data``'s paths; images are not augmented.

    Returns:
      ``{'accuracy': fraction correct in [0, 1], 'num_images', 'dataset', 'split'}``.

    Raises:
      ValueError, FileNotFoundError: the eval dataset cannot be read or has no labels.
    """
    from genrepair.metrics import digits  # pylint: disable=import-outside-toplevel
    ec = config.eval
    images, labels = digits.load_split(ml_collections.ConfigDict(dict(
        name=ec.dataset, data_dir=config.data.get("data_dir", ""),
        tfds_dir=config.data.get("tfds_dir", ""))), ec.split)
    # This process's copy of the (replicated) parameters: evaluation is small, and one
    # device does it instead of every device repeating it.
    params = jax.tree.map(lambda a: a.addressable_data(0), state.params)
    if self._eval_fn is None:
      self._eval_fn = jax.jit(lambda p, x: self.apply(p, self.to_float(x)))  # x: uint8
    accuracy = digits.test_accuracy(params, images, labels, apply_fn=self._eval_fn)
    return {"accuracy": accuracy, "num_images": int(len(labels)), "dataset": ec.dataset,
            "split": ec.split}

  def predict(self, state: ClassifierState, images: jax.Array) -> jax.Array:
    """Predicted classes of uint8 ``[B, H, W, C]`` images: int32 ``[B]``."""
    _, logits = self.apply(state.params, self.to_float(images))
    return jnp.argmax(logits, -1).astype(jnp.int32)

  def preview_inputs(self, rng: jax.Array, batch: dict[str, jax.Array],
                     num: int) -> jax.Array:
    """The first ``num`` images of the first batch, augmented once with ``rng``."""
    return self.augment(rng, self.to_float(batch["image"][:num]))

  def preview(self, state: ClassifierState, x: jax.Array) -> jax.Array:
    """The periodic grid: what the classifier trains on (augmented inputs), float32
    ``[N, H, W, C]`` in ``[-1, 1]`` (the state is not used)."""
    del state
    return x

  def preview_columns(self, num: int) -> int:
    """Grid columns: a square-ish grid."""
    return math.ceil(math.sqrt(num))

  def protocol(self) -> dict[str, Any]:
    """What the inputs and metrics mean, stored in checkpoint metadata."""
    return {"inputs": "uint8 [B, H, W, C] -> float32 x / 127.5 - 1 in [-1, 1]",
            "augment": dict(self.augment_kw),
            "metrics": "cross_entropy (nats) and accuracy on the augmented training batch"}
