"""genrepair.models.batchnorm against flax.linen.BatchNorm: values, gradients, statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from genrepair import sharding
from genrepair.models import batchnorm


def _layers(axis_name=None, relu=False):
  """Ours (with the ReLU folded in if ``relu``) and flax's layer (use :func:`_post`)."""
  kw = dict(momentum=0.9, epsilon=1e-4, axis_name=axis_name)
  return batchnorm.BatchNorm(**kw, relu=relu), nn.BatchNorm(**kw)


def _post(relu):
  """What follows flax's layer to compute what ours with ``relu`` computes."""
  return nn.relu if relu else (lambda y: y)


def _inputs(shape=(8, 5, 5, 6)):
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), shape)  # mean far from 0
  c = jax.random.normal(jax.random.key(1), shape)  # a non-uniform output cotangent
  params = {"scale": jax.random.uniform(jax.random.key(2), shape[-1:], minval=0.5, maxval=2),
            "bias": jax.random.normal(jax.random.key(3), shape[-1:])}
  stats = {"mean": jnp.full(shape[-1:], 0.5), "var": jnp.full(shape[-1:], 2.0)}
  return x, c, {"params": params, "batch_stats": stats}


def _train_loss(layer, c, post=lambda y: y):
  def loss(variables, x):
    y, upd = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    y = post(y)
    return jnp.sum(jnp.sin(y) * c), (y, upd["batch_stats"])
  return loss


def test_variables_match_flax():
  ours, ref = _layers()
  x = jnp.ones((2, 3, 3, 4))
  a = ours.init(jax.random.key(0), x, use_running_average=False)
  b = ref.init(jax.random.key(0), x, use_running_average=False)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(u, v)
  # Automatic names inside a parent are flax's, so checkpoints load either way.
  class Parent(nn.Module):
    bn: type
    @nn.compact
    def __call__(self, x):
      return self.bn(use_running_average=True)(x)
  assert (list(Parent(batchnorm.BatchNorm).init(jax.random.key(0), x)["params"])
          == list(Parent(nn.BatchNorm).init(jax.random.key(0), x)["params"]) == ["BatchNorm_0"])


@pytest.mark.parametrize("fused,relu,fold", [(True, False, True), (False, False, True),
                                             (True, True, True), (True, True, False),
                                             (False, True, True)])
def test_training_values_gradients_and_running_stats_match_flax(monkeypatch, fused, relu,
                                                                fold):
  # relu: ours with the ReLU folded into its gradient (FOLD_RELU) or applied after it,
  # against flax's layer followed by nn.relu.
  monkeypatch.setattr(batchnorm, "FUSED", fused)
  monkeypatch.setattr(batchnorm, "FOLD_RELU", fold)
  ours, ref = _layers(relu=relu)
  x, c, variables = _inputs()
  (l1, (y1, s1)), (gv1, gx1) = jax.jit(jax.value_and_grad(
      _train_loss(ours, c), argnums=(0, 1), has_aux=True))(variables, x)
  (l2, (y2, s2)), (gv2, gx2) = jax.value_and_grad(
      _train_loss(ref, c, _post(relu)), argnums=(0, 1), has_aux=True)(variables, x)
  if relu:  # the ReLU really cut: a good share of the outputs (and their gradients) is 0
    assert 0.2 < float(jnp.mean(y1 == 0)) < 0.8 and float(jnp.min(y1)) == 0.0
  np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  np.testing.assert_allclose(gx1, gx2, rtol=1e-4, atol=1e-5)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(gv1["params"][k], gv2["params"][k], rtol=1e-4, atol=1e-5)
  for k in ("mean", "var"):
    np.testing.assert_allclose(s1[k], s2[k], rtol=1e-5)
  if not relu:  # the batch really normalised: per-channel mean ~ bias, std ~ scale.
    np.testing.assert_allclose(jnp.mean(y1, axis=(0, 1, 2)), variables["params"]["bias"],
                               atol=1e-4)


@pytest.mark.parametrize("relu", [False, True])
def test_evaluation_uses_running_statistics(relu):
  ours, ref = _layers(relu=relu)
  x, _, variables = _inputs()
  y1 = ours.apply(variables, x, use_running_average=True)
  y2 = _post(relu)(ref.apply(variables, x, use_running_average=True))
  np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
  want = ((x - 0.5) / np.sqrt(2.0 + 1e-4) * variables["params"]["scale"]
          + variables["params"]["bias"])
  np.testing.assert_allclose(y1, np.maximum(want, 0) if relu else want, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_closed_form_gradient_against_finite_differences(relu):
  # Independent of flax: the custom VJP against float32 central differences (step 1e-2,
  # hence the 2% tolerance).
  x, c, variables = _inputs((4, 3, 3, 2))
  f = lambda x: _train_loss(_layers(relu=relu)[0], c)(variables, x)[0]
  gx = jax.grad(f)(x)
  rng = np.random.default_rng(0)
  for _ in range(5):
    idx = tuple(int(rng.integers(0, s)) for s in x.shape)
    h = 1e-2
    fd = (f(x.at[idx].add(h)) - f(x.at[idx].add(-h))) / (2 * h)
    np.testing.assert_allclose(gx[idx], fd, rtol=2e-2, atol=2e-3)


def test_second_order_gradients_match_flax():
  # d/dparams of ||dL/dx||^2 (as a gradient penalty through BatchNorm would take it).
  ours, ref = _layers()
  x, c, variables = _inputs((4, 3, 3, 3))

  def penalty(layer):
    def f(variables):
      gx = jax.grad(lambda x: _train_loss(layer, c)(variables, x)[0])(x)
      return jnp.sum(gx ** 2)
    return jax.grad(f)(variables)["params"]

  a, b = penalty(ours), penalty(ref)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-4)


def _assert_close(got, want):
  """Outputs, running statistics, parameter and input gradients ``(y, s, gv, gx)``."""
  (y, s, gv, gx), (y_ref, s_ref, gv_ref, gx_ref) = got, want
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(gv["params"][k], gv_ref["params"][k], rtol=1e-4, atol=1e-5)
  for k in ("mean", "var"):
    np.testing.assert_allclose(s[k], s_ref[k], rtol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_sharded_batch_and_shard_map_axis_name_match_one_device(relu):
  mesh = sharding.make_mesh({"data": -1})
  assert mesh.shape["data"] == 8
  x, c, variables = _inputs((16, 4, 4, 5))
  ours, ref = _layers(relu=relu)
  vg = jax.value_and_grad(_train_loss(ours, c), argnums=(0, 1), has_aux=True)
  (_, (y_ref, s_ref)), (gv_ref, gx_ref) = jax.value_and_grad(
      _train_loss(ref, c, _post(relu)), argnums=(0, 1), has_aux=True)(variables, x)
  ref = (y_ref, s_ref, gv_ref, gx_ref)
  # Under jit with the batch sharded over 8 devices (XLA's all-reduces).
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  (_, (y, s)), (gv, gx) = jax.jit(vg)(variables, jax.device_put(x, batch))
  _assert_close((y, s, gv, gx), ref)
  # Per device inside shard_map with axis_name: x's gradient uses every shard's sums,
  # the parameter gradients are the shard's own and sum over the devices to the total.
  dp, _ = _layers(axis_name=sharding.DATA_AXIS, relu=relu)
  c_s = jax.device_put(c, batch)

  def local(variables, x, c):
    (_, (y, s)), (gv, gx) = jax.value_and_grad(
        _train_loss(dp, c), argnums=(0, 1), has_aux=True)(variables, x)
    return y, s, jax.lax.psum(gv, sharding.DATA_AXIS), gx

  y, s, gv, gx = jax.jit(jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS), P(sharding.DATA_AXIS)),
      out_specs=(P(sharding.DATA_AXIS), P(), P(), P(sharding.DATA_AXIS)),
      check_vma=False))(variables, jax.device_put(x, batch), c_s)
  _assert_close((y, s, gv, gx), ref)
