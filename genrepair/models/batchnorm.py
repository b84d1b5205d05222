"""BatchNorm whose training-mode gradient is two passes over the activations.

Batch normalisation (Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", ICML 2015, Algorithm 1; backward pass in
Sec. 3): per channel ``c`` over the batch and spatial positions (``N`` values),

    mean = E[x],  var = E[x^2] - mean^2,  y = (x - mean) / sqrt(var + eps) * scale + bias.

:class:`BatchNorm` is a drop-in for ``flax.linen.BatchNorm`` as the models use it (feature
axis last, ``use_running_average``, ``momentum``, ``epsilon``, ``axis_name``): the same
class name (hence automatic names ``BatchNorm_0``, ...), parameters ``scale`` / ``bias``
``[C]`` and ``batch_stats`` ``mean`` / ``var`` ``[C]``, initialisers and running-average
update (``ra = momentum * ra + (1 - momentum) * batch``, the biased batch variance), so
checkpoints load either way. In training it computes ``y = x * a + b`` with per-channel
``a = scale / sqrt(var + eps)``, ``b = bias - mean * a``, and its custom VJP takes the
gradient in closed form: with ``g = dL/dy``, ``xhat = (x - mean) / sqrt(var + eps)``,

    dbias = sum(g),  dscale = sum(g * xhat),
    dx = a * (g - dbias / N - xhat * dscale / N),

i.e. one reduction pass over ``(g, x)`` and one elementwise pass, where autodiff of flax's
layer leaves XLA:CPU several reductions and elementwise passes. Measured (AMD EPYC, 2
cores): see :data:`FUSED`. Equal to ``flax.linen.BatchNorm`` up to float rounding (values, input
and parameter gradients, second-order gradients, running statistics, under ``jit`` with a
sharded batch and inside ``shard_map`` with ``axis_name``: ``tests/test_batchnorm.py``).
``BatchNorm(relu=True)`` (not a flax field) is ``nn.relu(BatchNorm()(x))`` with the ReLU
inside the custom VJP (:data:`FOLD_RELU`). Forward-mode differentiation (``jax.jvp``) of
the training mode is not defined (a custom VJP); nothing in genrepair uses it through
BatchNorm.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# The closed-form gradient (False: flax's formula, differentiated by JAX; same numbers up
# to float rounding). Train step, 2 devices, the two alternated in one process: DnCNN-S
# (batch 16 of 40x40, 15 BatchNorm layers) 552.0 -> 528.0 ms; DCGAN level (70.8 / 72.2
# ms, so the DCGAN models keep flax's layer).
FUSED = True
# With ``BatchNorm(relu=True)``, the ReLU inside the custom VJP (False: ``nn.relu`` after
# it, differentiated by JAX; same numbers). The mask is recomputed in the backward's two
# passes instead of a select pass of its own; DnCNN-S's step (2 devices, the two
# alternated in one process, 2026-11-30): 523.9 ms unfolded, 524.0 folded, i.e. level.
FOLD_RELU = True


def _count(x: jax.Array, axis_name: str | None) -> jax.Array | int:
  n = x.size // x.shape[-1]
  return n if axis_name is None else lax.psum(n, axis_name)


def _statistics(x: jax.Array, axis_name: str | None):
  """``(mean, var)`` ``[C]`` of ``x`` over the batch (and the mapped axis), float32."""
  x32 = x.astype(jnp.float32)
  n = _count(x, axis_name)
  moments = jnp.stack([jnp.sum(x32, axis=tuple(range(x.ndim - 1))),
                       jnp.sum(x32 * x32, axis=tuple(range(x.ndim - 1)))])  # [2, C]
  if axis_name is not None:
    moments = lax.psum(moments, axis_name)  # one all-reduce for both
  mean, mean2 = moments[0] / n, moments[1] / n
  return mean, jnp.maximum(0.0, mean2 - mean * mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     axis_name: str | None, relu: bool = False
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode batch normalisation with the closed-form gradient.

  Args:
    x: ``[..., C]`` activations (any float dtype; statistics in float32).
    scale, bias: ``[C]`` float32 parameters.
    epsilon: added to the variance.
    axis_name: a mapped axis (``shard_map`` / ``vmap``) whose shards form the batch
      together, or None.
    relu: apply ``max(y, 0)`` after the normalisation (its mask is recomputed from ``x``
      in the backward pass: no separate pass over the gradient); the gradient at ``y =
      0`` is 0, as ``jax.nn.relu``'s.

  Returns:
    ``(y [..., C] in x's dtype, mean [C], var [C])``. ``mean`` and ``var`` are for the
    running averages: their cotangents are ignored (the caller stops their gradient).
  """
  y, mean, var, _ = _forward(x, scale, bias, epsilon, axis_name, relu)
  return y, mean, var


def _forward(x, scale, bias, epsilon, axis_name, relu):
  mean, var = _statistics(x, axis_name)
  inv = lax.rsqrt(var + epsilon)
  a = scale * inv
  b = bias - mean * a
  y = x.astype(jnp.float32) * a + b
  if relu:
    y = jnp.maximum(y, 0.0)
  return y.astype(x.dtype), mean, var, inv


def _fwd(x, scale, bias, epsilon, axis_name, relu):
  y, mean, var, inv = _forward(x, scale, bias, epsilon, axis_name, relu)
  return (y, mean, var), (x, scale, bias, mean, inv)


def _bwd(epsilon, axis_name, relu, res, cotangents):
  del epsilon
  x, scale, bias, mean, inv = res
  g = cotangents[0].astype(jnp.float32)  # mean/var cotangents: ignored (see docstring)
  x32 = x.astype(jnp.float32)
  if relu:
    # The normalised value's gradient: g where x * a + b > 0 (recomputed, not stored).
    a = scale * inv
    g = jnp.where(x32 * a + (bias - mean * a) > 0.0, g, 0.0)
  c = x.ndim - 1
  # One pass over (g, x): sum(g) and sum(g * x); sum(g * xhat) follows per channel.
  sums = jnp.stack([jnp.sum(g, axis=tuple(range(c))), jnp.sum(g * x32, axis=tuple(range(c)))])
  local_dbias = sums[0]
  local_dscale = (sums[1] - mean * sums[0]) * inv
  if axis_name is not None:
    # x's gradient needs the sums over every shard; the parameter gradients stay this
    # shard's own (the caller averages them over the devices, as every other gradient).
    total = lax.psum(jnp.stack([local_dbias, local_dscale]), axis_name)
    dbias, dscale = total[0], total[1]
  else:
    dbias, dscale = local_dbias, local_dscale
  n = _count(x, axis_name)
  a = scale * inv
  # dx = a (g - dbias / N - xhat dscale / N), xhat = (x - mean) inv: one elementwise pass.
  k1 = -a * inv * dscale / n
  k0 = -a * dbias / n - k1 * mean
  dx = (g * a + x32 * k1 + k0).astype(x.dtype)
  return dx, local_dscale, local_dbias


batch_norm_train.defvjp(_fwd, _bwd)


class BatchNorm(nn.Module):
  """``flax.linen.BatchNorm`` (feature axis last) with :func:`batch_norm_train` in training.

  Input ``[..., C]`` (e.g. ``[B, H, W, C]``), output the same shape and dtype.

  Attributes:
    use_running_average: normalise with the running statistics (evaluation) if True,
      else with the batch's (training; ``batch_stats`` updated when mutable); or None
      and given at call time.
    momentum: running-average decay (flax's convention: 0.9 is PyTorch's 0.1).
    epsilon: added to the variance.
    axis_name: in training, statistics are over this mapped axis too (inside
      ``shard_map``: the whole batch's); None outside a map.
    relu: a ReLU after the normalisation, inside the custom VJP in training (not a flax
      field; ``nn.relu(BatchNorm()(x))`` computes the same).
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  axis_name: str | None = None
  relu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    """Normalises ``x`` ``[..., C]``; ``use_running_average`` here or as the attribute
    (exactly one of them, as flax's).

    Raises:
      ValueError: ``use_running_average`` given both or neither way (flax's message).
    """
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
    if use_running_average:
      a = scale * lax.rsqrt(ra_var.value + self.epsilon)
      y = x.astype(jnp.float32) * a + (bias - ra_mean.value * a)
      return (jnp.maximum(y, 0.0) if self.relu else y).astype(x.dtype)
    if FUSED:
      fold = self.relu and FOLD_RELU
      y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.axis_name, fold)
      if self.relu and not fold:
        y = nn.relu(y)
    else:
      mean, var = _statistics(x, self.axis_name)
      y = ((x.astype(jnp.float32) - mean) * (scale * lax.rsqrt(var + self.epsilon))
           + bias).astype(x.dtype)
      if self.relu:
        y = nn.relu(y)
    if not self.is_initializing():
      mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    return y
