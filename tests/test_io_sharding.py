"""Image I/O helpers and mesh construction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genrepair import io, sharding


def test_to_uint8_values():
  x = np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
  np.testing.assert_array_equal(io.to_uint8(x), [0, 0, 128, 191, 255, 255])
  np.testing.assert_array_equal(io.to_uint8(np.array([0.0, 0.5, 1.0]), (0, 1)), [0, 128, 255])


def test_grid_layout_and_png(tmp_path):
  imgs = np.stack([np.full((4, 5, 1), i, np.uint8) for i in range(1, 8)])  # 7 tiles
  grid = io.make_grid(imgs, pad=1)  # 3 columns, 3 rows
  assert grid.shape == (3 * 5 + 1, 3 * 6 + 1, 1)
  assert grid[1, 1, 0] == 1 and grid[1 + 5, 1 + 6, 0] == 5 and grid[-2, -2, 0] == 0
  path = tmp_path / "g.png"
  io.save_image(str(path), grid)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid[..., 0])
  with pytest.raises(ValueError, match="uint8"):
    io.make_grid(imgs.astype(np.float32))
  with pytest.raises(ValueError, match="format"):
    io.save_image(str(tmp_path / "g.xyz"), grid)


def test_make_mesh():
  assert jax.device_count() == 8
  assert sharding.make_mesh({"data": -1}).shape["data"] == 8
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  assert mesh.shape["data"] == 1
  with pytest.raises(ValueError, match="needs a 'data' axis"):
    sharding.make_mesh({"model": -1})
  with pytest.raises(ValueError, match="needs 4 devices"):
    sharding.make_mesh({"data": 4})
  with pytest.raises(ValueError, match="divisible"):
    sharding.check_batch_size(12, sharding.make_mesh({"data": -1}))


def test_to_global_shards_over_data():
  mesh = sharding.make_mesh({"data": -1})
  batch = {"image": np.arange(16 * 2, dtype=np.uint8).reshape(16, 2)}
  out = sharding.to_global(batch, mesh)
  assert out["image"].dtype == np.uint8
  assert len(out["image"].addressable_shards) == 8
  assert out["image"].addressable_shards[1].data.shape == (2, 2)
  np.testing.assert_array_equal(out["image"], batch["image"])


def test_cpu_device_count():
  count = sharding.cpu_device_count
  mesh = {"data": -1}
  # 'auto': the largest count <= cores that divides this process's batch.
  assert count("auto", 32, mesh, cores=2, xla_flags="") == 2
  assert count("auto", 48, mesh, cores=8, xla_flags="") == 8
  assert count("auto", 12, mesh, cores=8, xla_flags="") == 6
  assert count("auto", 7, mesh, cores=4, xla_flags="") is None  # 1 device
  assert count("auto", 1, mesh, cores=16, xla_flags="") is None  # CycleGAN's batch 1
  assert count("auto", 16, mesh, cores=4, num_processes=2, xla_flags="") == 4
  assert count("auto", 12, mesh, cores=8, num_processes=2, xla_flags="") == 6
  assert count("auto", 64, {"data": 1}, cores=8, xla_flags="") is None  # fixed mesh
  # Explicit counts; 1 leaves JAX's default.
  assert count("3", 64, mesh, cores=2, xla_flags="") == 3
  assert count("1", 64, mesh, cores=2, xla_flags="") is None
  # The user's XLA flag wins over 'auto'; with an explicit count it is an error.
  flag = "--xla_force_host_platform_device_count=8"
  assert count("auto", 64, mesh, cores=2, xla_flags=flag) is None
  with pytest.raises(ValueError, match="both set"):
    count("2", 64, mesh, cores=2, xla_flags=flag)
  for bad in ("0", "-2", "two", "1.5"):
    with pytest.raises(ValueError, match="--cpu_devices"):
      count(bad, 64, mesh, cores=2, xla_flags="")
  # eval: no batch to divide; 'auto' is one device per core.
  ecount = sharding.eval_cpu_device_count
  assert ecount("auto", cores=2, xla_flags="") == 2
  assert ecount("auto", cores=7, xla_flags="") == 7
  assert ecount("auto", cores=1, xla_flags="") is None
  assert ecount("3", cores=2, xla_flags="") == 3
  assert ecount("auto", cores=2, xla_flags=flag) is None
  with pytest.raises(ValueError, match="--cpu_devices"):
    ecount("two", cores=2, xla_flags="")


def test_data_parallel_value_and_grad_equals_value_and_grad_with_one_flat_all_reduce():
  """A conv + dense model, the batch over the 8 devices: loss, aux and gradients equal
  jax.value_and_grad's (the global mean's gradient, not the sum over devices), and the
  gradients are reduced as one flat buffer."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from genrepair.models import conv, dense  # pylint: disable=import-outside-toplevel

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(conv.Conv(16, (3, 3), strides=(2, 2))(x))
      h = conv.ConvTranspose(8, (4, 4), strides=(2, 2))(h)
      return dense.Dense(3)(h.reshape(h.shape[0], -1))

  mesh = sharding.make_mesh({"data": -1})
  net = Net()
  x = jax.random.normal(jax.random.key(0), (16, 8, 8, 2))
  target = jax.random.normal(jax.random.key(1), (16, 3))
  scale = jnp.float32(0.5)  # a replicated non-batch argument
  params = net.init(jax.random.key(2), x)

  def fn(params, x, scale, target):
    y = net.apply(params, x)
    loss = jnp.mean((y - target) ** 2) * scale
    return loss, ({"mse": jnp.mean((y - target) ** 2)}, y)

  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  args = (jax.device_put(params, sharding.replicated(mesh)), jax.device_put(x, batch),
          scale, jax.device_put(target, batch))
  ours = jax.jit(sharding.data_parallel_value_and_grad(
      fn, mesh, batch_argnums=(0, 2), aux_specs=({"mse": "mean"}, "batch")))
  (loss, (terms, y)), grads = ours(*args)
  (want_loss, (want_terms, want_y)), want_grads = jax.jit(
      jax.value_and_grad(fn, has_aux=True))(params, x, scale, target)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(terms["mse"], want_terms["mse"], rtol=1e-6)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
  assert y.sharding.spec == P(sharding.DATA_AXIS)
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(w))))
  # Every gradient in one all-reduce of one flat f32 buffer (+ scalars for loss and aux).
  hlo = ours.lower(*args).compile().as_text()
  n_params = sum(p.size for p in jax.tree.leaves(params))
  reduces = [line for line in hlo.splitlines() if " all-reduce(" in line]
  assert any(f"f32[{n_params}]" in line.split("all-reduce(")[0] for line in reduces)
  assert not any(line.split("=")[1].lstrip().startswith("(") and
                 line.count("f32[") > 3 for line in reduces), reduces
  # Without a mesh: jax.value_and_grad itself.
  (loss, _), grads = jax.jit(sharding.data_parallel_value_and_grad(
      fn, None, batch_argnums=(0, 2), aux_specs=({"mse": "mean"}, "batch")))(
          params, x, scale, target)
  assert float(loss) == float(want_loss)
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_array_equal(g, w)
  with pytest.raises(ValueError, match="'mean', 'batch' or 'replicated'"):
    sharding.data_parallel_value_and_grad(fn, mesh, batch_argnums=(0,), aux_specs="sum")


def test_ravel_matches_ravel_pytree_and_round_trips():
  import jax.flatten_util  # pylint: disable=import-outside-toplevel
  tree = {"b": jnp.arange(6.0).reshape(2, 3), "a": [jnp.ones((4,)) * 7, jnp.zeros((1, 1, 2))],
          "c": jnp.full((), 3.0)}
  flat = jax.jit(lambda t: sharding.ravel(t)[0])(tree)
  _, unravel = sharding.ravel(tree)
  ref, _ = jax.flatten_util.ravel_pytree(tree)
  np.testing.assert_array_equal(flat, ref)
  assert flat.shape == (6 + 4 + 2 + 1,)
  back = unravel(flat * 2)
  for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want * 2)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
