"""The GAN train step and the loop: 1 vs 8 devices, exact resume, checkpoint fallback."""

import json
import math
import os
import re
import shutil

import jax
import numpy as np
import pytest

from genrepair import checkpoint, data, sharding, train
from tests.conftest import assert_states_close, small_dcgan_config


def _first_batch(config):
  it = data.make_iterator(config.data, global_batch_size=config.train.batch_size,
                          split=config.data.split, seed=config.data.seed)
  return next(it)


def _one_step(config, mesh, host_batch):
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(config, mesh)
  repl = sharding.replicated(mesh)
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  step = jax.jit(task.train_step, out_shardings=(state_sharding, repl))
  state, metrics = step(state, sharding.to_global(host_batch, mesh), train_rng)
  return jax.device_get(state), jax.device_get(metrics)


def test_one_step_same_on_1_and_8_devices(tfds_dir):
  del tfds_dir
  config = small_dcgan_config()
  batch = _first_batch(config)
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (16, 28, 28, 1)
  s1, m1 = _one_step(config, sharding.make_mesh({"data": 1}, jax.devices()[:1]), batch)
  s8, m8 = _one_step(config, sharding.make_mesh({"data": -1}), batch)
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert_states_close(s1, s8, lr=2e-4, steps=1)
  # Numbers, not just agreement: recompute the D update's losses from the initial state
  # with the same keys, outside the step, in float64 NumPy.
  mesh1 = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  task, _, init_rng, train_rng, _, _ = train.build(config, mesh1)
  s0 = task.init(init_rng)
  k_zd, _ = jax.random.split(jax.random.fold_in(train_rng, 0))
  fake, _ = task.generator.apply({"params": s0.g_params, "batch_stats": s0.g_batch_stats},
                                 task.latents(k_zd, 16), train=True, mutable=["batch_stats"])
  d_vars = {"params": s0.d_params, "batch_stats": s0.d_batch_stats}
  real = batch["image"].astype(np.float32) / 127.5 - 1
  r = np.float64(task.discriminator.apply(d_vars, real, train=True, mutable=["batch_stats"])[0])
  f = np.float64(task.discriminator.apply(d_vars, fake, train=True, mutable=["batch_stats"])[0])
  softplus = lambda x: np.logaddexp(0.0, x)
  np.testing.assert_allclose(m1["d_minimax"], np.mean(softplus(-r) + softplus(f)), rtol=1e-5)
  np.testing.assert_allclose(m1["D(x)"], np.mean(1 / (1 + np.exp(-r))), rtol=1e-5)
  np.testing.assert_allclose(m1["D(G(z))"], np.mean(1 / (1 + np.exp(-f))), rtol=1e-5)
  assert 0 < m1["g_nonsaturating"] < 10 and m1["d_loss"] == m1["d_minimax"]
  assert int(s1.step) == 1
  # Adam's first update moves every weight by ~lr (2e-4): the state really changed.
  delta = np.abs(s1.g_params["project"]["kernel"] - s0.g_params["project"]["kernel"])
  np.testing.assert_allclose(np.median(delta), 2e-4, rtol=0.05)


def test_dcgan_step_reduces_each_players_gradients_as_one_flat_vector(tfds_dir):
  # DCGAN's models compute BatchNorm statistics across the mesh (axis_name), so the step
  # differentiates per device and all-reduces D's and G's gradients as one vector each
  # (sharding.data_parallel_value_and_grad); the other all-reduces are BatchNorm
  # statistics and scalars. XLA's own reduction would show each kernel as a buffer.
  del tfds_dir
  config = small_dcgan_config()
  task, mesh, _, train_rng, abstract, _ = train.build(config, sharding.make_mesh({"data": -1}))
  assert mesh.shape["data"] == 8
  batch = sharding.to_global(_first_batch(config), mesh)
  hlo = jax.jit(task.train_step).lower(abstract, batch, train_rng).compile().as_text()
  sizes = []
  for line in hlo.splitlines():
    if " all-reduce(" in line or " all-reduce-start(" in line:
      sizes += [math.prod(int(d) for d in dims.split(",") if d)
                for dims in re.findall(r"f32\[([\d,]*)\]", line.split(" all-reduce")[0])]
  count = lambda tree: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
  widest = 2 * max(leaf.shape[-1] for leaf in jax.tree.leaves(abstract.g_batch_stats))
  assert sorted(s for s in sizes if s > widest) == sorted(
      [count(abstract.d_params), count(abstract.g_params)]), sizes


def _restore(workdir, config):
  _, _, _, _, abstract, _ = train.build(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  step, state, data_state, meta = ckpt.restore_latest(abstract)
  ckpt.close()
  return step, jax.device_get(state), data_state, meta


def _next_batch(config, data_state):
  it = data.make_iterator(config.data, global_batch_size=config.train.batch_size,
                          split=config.data.split, seed=config.data.seed)
  it.set_state(data_state)
  return next(it)


def test_resume_is_bit_exact(tfds_dir, tmp_path):
  del tfds_dir
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  r = train.run(small_dcgan_config(num_steps=4), straight)
  assert r["step"] == 4
  train.run(small_dcgan_config(num_steps=2), split)
  # A new run() = new CheckpointManager, new iterator, new jit: resumes from step 2.
  r2 = train.run(small_dcgan_config(num_steps=4), split)
  assert r2["step"] == 4
  config = small_dcgan_config(num_steps=4)
  step_a, state_a, data_a, meta_a = _restore(straight, config)
  step_b, state_b, data_b, _ = _restore(split, config)
  assert step_a == step_b == 4 and meta_a["step"] == 4
  assert data_a == data_b
  leaves_a, leaves_b = jax.tree.leaves(state_a), jax.tree.leaves(state_b)
  assert len(leaves_a) == len(leaves_b) > 20
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)  # params, BatchNorm stats, both Adam states
  np.testing.assert_array_equal(_next_batch(config, data_a)["image"],
                                _next_batch(config, data_b)["image"])
  # The logged training curves are identical too (every step logged; the split run also
  # logged the FID-digits evaluation that ends its first, 2-step part).
  read = lambda d: [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                    if not any(k.startswith("eval/") for k in m)]
  assert read(straight) == read(split)
  assert [m["step"] for m in read(split)] == [1, 2, 3, 4]
  assert os.path.exists(os.path.join(split, "samples", "final.png"))
  assert meta_a["config"]["model"]["variant"] == "mnist-small"
  assert "jax" in meta_a["versions"] and "samples" in meta_a["protocol"]


def test_unreadable_newest_checkpoint_falls_back(tfds_dir, tmp_path):
  del tfds_dir
  workdir = str(tmp_path / "run")
  train.run(small_dcgan_config(num_steps=3, checkpoint_every=2), workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) == [2, 3]
  shutil.rmtree(os.path.join(ckpt_dir, "3", "state"))  # Simulate a damaged checkpoint.
  with pytest.warns(UserWarning, match="unreadable"):
    step, state, _, _ = _restore(workdir, small_dcgan_config())
  assert step == 2 and int(state.step) == 2


def test_bad_config_values_fail_before_compiling(tfds_dir, tmp_path):
  del tfds_dir
  c = small_dcgan_config()
  c.losses.g.g_nonsaturating = 0.0
  with pytest.raises(ValueError, match="config.losses.g selects no loss"):
    train.run(c, str(tmp_path / "a"))
  c = small_dcgan_config()
  c.train.batch_size = 12
  with pytest.raises(ValueError, match="batch_size=12 must be divisible by the 8"):
    train.run(c, str(tmp_path / "b"))
  c = small_dcgan_config()
  c.model.channels = 3
  with pytest.raises(ValueError, match=r"expects uint8 \(28, 28, 3\)"):
    train.run(c, str(tmp_path / "c"))
  c = small_dcgan_config()
  c.optim.d.name = "adan"
  with pytest.raises(ValueError, match="config.optim.d.name"):
    train.run(c, str(tmp_path / "d"))


def test_train_intervals_checked_and_zero_means_only_at_the_end(tfds_dir, tmp_path):
  del tfds_dir
  for key, value in [("log_every", 0), ("sample_every", -1), ("checkpoint_every", -500),
                     ("keep_checkpoints", 0), ("num_steps", -1)]:
    with pytest.raises(ValueError, match=f"config.train.{key}={value}: expected"):
      train.run(small_dcgan_config(**{key: value}), str(tmp_path / key))
    assert not (tmp_path / key).exists()  # nothing written
  workdir = tmp_path / "ends"
  c = small_dcgan_config(num_steps=3, sample_every=0, checkpoint_every=0)
  c.eval.every = 0
  assert train.run(c, str(workdir))["step"] == 3
  assert sorted(os.listdir(workdir / "samples")) == ["final.png", "step_0000003.png"]
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).all_steps() == [3]


def test_non_finite_loss_stops_without_checkpoint(tfds_dir, tmp_path):
  del tfds_dir
  c = small_dcgan_config(num_steps=5, checkpoint_every=1)
  c.optim.d.lr = c.optim.g.lr = 1e38  # Adam moves weights by ~lr: overflow within a step.
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError, match="Non-finite"):
    train.run(c, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  saved = [s for s in os.listdir(ckpt_dir) if s.isdigit()] if os.path.isdir(ckpt_dir) else []
  # Only states whose logged metrics were finite may have been checkpointed.
  logged = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert all(int(s) <= max(logged, default=0) for s in saved)
