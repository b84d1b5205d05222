"""Image I/O helpers and mesh construction."""

import jax
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
