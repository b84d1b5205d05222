"""genrepair.models.dense: the same layer as flax.linen.Dense, the kernel gradient computed
in the kernel's [in, out] order (no transposed copy for XLA to fuse into its consumers)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from genrepair import sharding
from genrepair.models import dense


def _close(got, want, rtol, what):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape, what
    err, scale = float(np.max(np.abs(g - w))), max(float(np.max(np.abs(w))), 1e-7)
    assert err <= rtol * scale, f"{what}: max error {err:.3g}, scale {scale:.3g}"


def test_same_parameters_outputs_and_gradients_as_flax_dense():
  for shape, bias in (((6, 13), True), ((2, 3, 13), False)):  # [B, in] and [B, T, in]
    x = jax.random.normal(jax.random.key(1), shape)
    ours, flax_dense = dense.Dense(7, use_bias=bias), nn.Dense(7, use_bias=bias)
    params = ours.init(jax.random.key(0), x)
    want_params = flax_dense.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(want_params)
    _close(params, want_params, 0.0, "init")
    c = jax.random.normal(jax.random.key(2), shape[:-1] + (7,))

    def grads(layer):
      loss = lambda p, x: jnp.sum(layer.apply(p, x) * c)
      return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

    (value, (gp, gx)), (want_value, (want_gp, want_gx)) = grads(ours), grads(flax_dense)
    _close(value, want_value, 1e-6, "loss")
    _close(gp, want_gp, 1e-6, "parameter gradients")
    _close(gx, want_gx, 1e-6, "input gradient")
    # The kernel gradient is x^T c, by hand in float64.
    x64 = np.asarray(x, np.float64).reshape(-1, 13)
    c64 = np.asarray(c, np.float64).reshape(-1, 7)
    _close(gp["params"]["kernel"], x64.T @ c64, 1e-6, "kernel gradient vs NumPy")


def test_second_order_gradients_match_flax():
  """WGAN-GP's penalty differentiates the critic's input gradient through this layer."""
  x = jax.random.normal(jax.random.key(1), (5, 11))
  params = nn.Dense(3).init(jax.random.key(0), x)

  def penalty(layer):
    def fn(p):
      gx = jax.grad(lambda x: jnp.sum(jnp.tanh(layer.apply(p, x))))(x)
      return jnp.sum((jnp.sqrt(jnp.sum(gx ** 2, axis=1)) - 1.0) ** 2)
    return jax.jit(jax.grad(fn))(params)

  _close(penalty(dense.Dense(3)), penalty(nn.Dense(3)), 1e-5, "gradient-penalty gradient")


def test_kernel_gradient_is_not_transposed_in_the_data_parallel_step():
  """A VAE-decoder-like MLP (32 -> 512 -> 784) with Adam, the batch sharded over the
  devices: with flax's Dense XLA transposes the [784, 512] kernel gradient into its
  consumers (the all-reduce and Adam's updates); with this layer nothing is transposed."""
  mesh = sharding.make_mesh({"data": -1})
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  z = jax.device_put(jax.random.normal(jax.random.key(0), (128, 32)), batch)
  target = jax.device_put(jnp.ones((128, 784)), batch)

  def transposes(layer_cls):
    class Decoder(nn.Module):
      @nn.compact
      def __call__(self, z):
        return layer_cls(784)(nn.relu(layer_cls(512)(z)))

    model, opt = Decoder(), optax.adam(1e-3)
    params = jax.device_put(model.init(jax.random.key(1), z), sharding.replicated(mesh))

    def step(p, s, z, target):
      g = jax.grad(lambda p: jnp.mean(optax.sigmoid_binary_cross_entropy(
          model.apply(p, z), target)))(p)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s

    hlo = jax.jit(step, out_shardings=sharding.replicated(mesh)).lower(
        params, opt.init(params), z, target).compile().as_text()
    return sum(" transpose(" in line and any(
        shape in line.split("=")[1][:30] for shape in ("[512,784]", "[784,512]"))
               for line in hlo.splitlines())

  assert transposes(nn.Dense) >= 1  # the behaviour this layer exists for
  assert transposes(dense.Dense) == 0


def test_other_contractions_and_switch_fall_back_to_lax(monkeypatch):
  a = jax.random.normal(jax.random.key(0), (4, 3))
  b = jax.random.normal(jax.random.key(1), (4, 5))
  dn = (((0,), (0,)), ((), ()))  # not a dense layer's contraction
  assert "custom_vjp" not in str(jax.make_jaxpr(
      lambda a, b: dense.dense_dot_general(a, b, dn))(a, b))
  _close(dense.dense_dot_general(a, b, dn), a.T @ b, 1e-6, "fallback")
  w = jnp.ones((3, 5))
  assert "custom_vjp" in str(jax.make_jaxpr(
      lambda a, w: dense.dense_dot_general(a, w, (((1,), (0,)), ((), ()))))(a, w))
  monkeypatch.setattr(dense, "ENABLED", False)
  assert "custom_vjp" not in str(jax.make_jaxpr(
      lambda a, w: dense.dense_dot_general(a, w, (((1,), (0,)), ((), ()))))(a, w))
