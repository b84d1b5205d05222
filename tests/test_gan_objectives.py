"""GAN objectives selected by config: the gradient penalty against finite differences,
spectral norm's sigma against an SVD, n_critic, lazy R1, generator EMA, 2-step runs of the
WGAN-GP / SNGAN / LSGAN experiments."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import diffaugment, models, sharding, train
from genrepair.tasks import gan
from tests.conftest import REPO, small_dcgan_config


def _experiment(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _small(name, **train_kw):
  c = _experiment(name)
  c.model.variant = "mnist-small"
  c.train.batch_size = 16 * c.train.n_critic
  c.train.log_every = 1
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.num, c.eval.kid_subsets = 100, 2
  for k, v in train_kw.items():
    c.train[k] = v
  return c


def _first_batch(config):
  return next(train.make_train_iterator(config))


def test_input_gradient_norms_match_finite_differences():
  pair = models.get("dcgan")(variant="mnist-small", d_norm="none")
  d = pair.discriminator
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1), minval=-1, maxval=1)
  params = d.init(jax.random.key(1), x, train=False)
  score = lambda v: d.apply(params, v, train=False)  # [B]
  got = np.sqrt(np.asarray(gan.input_gradient_sq_norms(score, x)))
  # Central differences, every pixel of each example, in one batched call.
  h = 1e-2
  eye = np.eye(784, dtype=np.float32).reshape(784, 28, 28, 1) * h
  for i in range(2):
    plus = np.asarray(score(x[i][None] + eye))
    minus = np.asarray(score(x[i][None] - eye))
    fd = (plus - minus) / (2 * h)  # [784]
    np.testing.assert_allclose(got[i], np.linalg.norm(fd), rtol=2e-3)
  assert np.all(got > 0)


def _wgan_gp_first_step(**train_overrides):
  """One WGAN-GP step (batch 16, 1 device) and what an independent check needs.

  Returns ``(metrics, task, s0, k_zd, real, fake)``: the step's keys give the latents
  (``k_zd``) and interpolation weights (``fold_in(k_zd, 1)``); ``fake`` = G(z) in train mode.
  """
  c = _small("wgan_gp_mnist", n_critic=1)
  c.train.batch_size = 16
  with c.unlocked():
    for k, v in train_overrides.items():
      c.train[k] = v
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  batch = _first_batch(c)
  s0 = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  _, m = jax.jit(task.train_step)(s0, sharding.to_global(batch, mesh), train_rng)
  k_zd, _ = jax.random.split(jax.random.fold_in(train_rng, 0))
  fake, _ = task.generator.apply({"params": s0.g_params, "batch_stats": s0.g_batch_stats},
                                 task.latents(k_zd, 16), train=True, mutable=["batch_stats"])
  real = batch["image"].astype(np.float32) / 127.5 - 1
  return m, task, s0, k_zd, real, fake


def test_wgan_gp_step_terms_from_independent_computation(tfds_dir):
  del tfds_dir
  m, task, s0, k_zd, real, fake = _wgan_gp_first_step()
  eps = jax.random.uniform(jax.random.fold_in(k_zd, 1), (16, 1, 1, 1))
  x_hat = eps * real + (1 - eps) * fake
  d_vars = {"params": s0.d_params, "batch_stats": s0.d_batch_stats}
  score = lambda v: task.discriminator.apply(d_vars, v, train=False)
  norms = np.sqrt(np.asarray(gan.input_gradient_sq_norms(score, x_hat), np.float64))
  np.testing.assert_allclose(m["gradient_penalty"], np.mean((norms - 1) ** 2), rtol=1e-4)
  r, f = np.asarray(score(real), np.float64), np.asarray(score(fake), np.float64)
  np.testing.assert_allclose(m["d_wasserstein"], np.mean(f - r), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m["d_loss"], m["d_wasserstein"] + 10 * m["gradient_penalty"],
                             rtol=1e-5)


def test_diffaugment_step_terms_from_independent_computation(tfds_dir):
  """config.train.diffaugment: D sees augment(real), augment(fake); the penalty is the
  gradient of D(augment(x_hat)) w.r.t. the un-augmented x_hat (Zhao et al. 2020)."""
  del tfds_dir
  m, task, s0, k_zd, real, fake = _wgan_gp_first_step(diffaugment="translation,cutout",
                                                      diffaugment_fill=-1.0)
  aug = lambda v, i: diffaugment.augment(v, jax.random.fold_in(k_zd, i), "translation,cutout",
                                         fill=-1.0)
  d_vars = {"params": s0.d_params, "batch_stats": s0.d_batch_stats}
  score = lambda v: task.discriminator.apply(d_vars, v, train=False)
  r = np.asarray(score(aug(real, 3)), np.float64)
  f = np.asarray(score(aug(fake, 4)), np.float64)
  np.testing.assert_allclose(m["d_wasserstein"], np.mean(f - r), rtol=1e-4, atol=1e-6)
  # Without augmentation the critic's scores differ: the policy is really applied.
  assert abs(np.mean(f - r) - np.mean(np.asarray(score(fake)) - np.asarray(score(real)))) > 1e-4
  eps = jax.random.uniform(jax.random.fold_in(k_zd, 1), (16, 1, 1, 1))
  x_hat = eps * real + (1 - eps) * fake
  norms = np.sqrt(np.asarray(
      gan.input_gradient_sq_norms(lambda v: score(aug(v, 3)), x_hat), np.float64))
  np.testing.assert_allclose(m["gradient_penalty"], np.mean((norms - 1) ** 2), rtol=1e-4)


def test_spectral_norm_sigma_matches_svd():
  pair = models.get("dcgan")(variant="mnist-small", d_norm="none", spectral_norm=True)
  d = pair.discriminator
  x = jnp.zeros((2, 28, 28, 1))
  variables = d.init(jax.random.key(0), x, train=False)
  update = jax.jit(lambda st: d.apply({"params": variables["params"], "batch_stats": st}, x,
                                      train=True, mutable=["batch_stats"])[1]["batch_stats"])
  stats = variables["batch_stats"]
  # Power iteration, one per training call. The top two singular values of down1's
  # reshaped kernel are close (1.2402 vs 1.2342), so it needs ~500 calls to reach 1e-5.
  for _ in range(1000):
    stats = update(stats)
  params = variables["params"]
  for name, kernel in (("down0", params["down0"]["kernel"]),
                       ("down1", params["down1"]["kernel"]),
                       ("logit", params["logit"]["kernel"])):
    sigma = float(stats[f"sn_{name}"][f"{name}/kernel/sigma"])
    want = np.linalg.svd(np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]),
                         compute_uv=False)[0]
    np.testing.assert_allclose(sigma, want, rtol=1e-4, err_msg=name)
  # The normalised layer's weight has spectral norm 1: scaling W scales nothing.
  big = jax.tree.map(lambda a: a * 3.0, params)
  out = d.apply({"params": params, "batch_stats": stats}, x + 0.3, train=False)
  out_big = d.apply({"params": big, "batch_stats": stats}, x + 0.3, train=False)
  # Only the biases differ in effect (x3); with zero-initialised biases the two agree.
  np.testing.assert_allclose(out, out_big, rtol=1e-5, atol=1e-6)


def test_n_critic_lazy_r1_and_ema(tfds_dir):
  del tfds_dir
  c = _small("lsgan_mnist")
  c.train.batch_size = 32
  c.train.n_critic = 2
  c.train.r1_every = 4
  c.losses.d.r1_penalty = 0.5
  mesh = sharding.make_mesh({"data": -1})
  with pytest.raises(ValueError, match="n_critic=3 must be >= 1 and divide"):
    bad = _small("lsgan_mnist")
    bad.train.batch_size, bad.train.n_critic = 32, 3
    train.build(bad, mesh)
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  step = jax.jit(task.train_step)
  batch = sharding.to_global(_first_batch(c), mesh)
  s0 = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  s1, m1 = step(s0, batch, train_rng)
  s2, m2 = step(s1, batch, train_rng)
  # Two D updates and one G update per step (Adam's update counters).
  assert int(s1.d_opt_state[0].count) == 2 and int(s1.g_opt_state[0].count) == 1
  # Lazy R1: evaluated on step 0 with weight 0.5 * 4, skipped (0) on step 1.
  assert m1["r1_penalty"] > 0 and float(m2["r1_penalty"]) == 0.0
  np.testing.assert_allclose(m1["d_loss"], m1["d_least_squares"] + 2.0 * m1["r1_penalty"],
                             rtol=1e-5)
  np.testing.assert_allclose(m2["d_loss"], m2["d_least_squares"], rtol=1e-6)
  # EMA: ema_1 = d ema_0 + (1 - d) params_1, with ema_0 = the initial weights.
  d = 0.999
  want = jax.tree.map(lambda e, p: d * np.asarray(e) + (1 - d) * np.asarray(p),
                      s0.g_params, s1.g_params)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(s1.g_ema_params)):
    np.testing.assert_allclose(np.asarray(b), a, rtol=1e-6, atol=1e-7)
  # Sampling uses the EMA weights.
  z = task.latents(jax.random.key(5), 4)
  ema_out = task.generator.apply({"params": s2.g_ema_params, "batch_stats": s2.g_batch_stats},
                                 z, train=False)
  np.testing.assert_allclose(task.sample(s2, z), ema_out, atol=1e-6)
  # The training loop's static variants (no lax.cond) give the lax.cond path's numbers.
  assert [task.step_variant(i) for i in (0, 1, 4)] == [(True, True), (False, True),
                                                       (True, True)]
  for s_in, s_want, m_want in ((s0, s1, m1), (s1, s2, m2)):
    variant = task.step_variant(int(s_in.step))
    fn = jax.jit(functools.partial(task.train_step, variant=variant))
    assert "cond[" not in str(jax.make_jaxpr(fn)(s_in, batch, train_rng))
    s_got, m_got = fn(s_in, batch, train_rng)
    for k in ("d_loss", "r1_penalty", "g_loss"):
      np.testing.assert_allclose(m_got[k], m_want[k], rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(s_want.d_params), jax.tree.leaves(s_got.d_params)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  assert "cond[" in str(jax.make_jaxpr(task.train_step)(s0, batch, train_rng))


@pytest.mark.parametrize("name", ["wgan_gp_mnist", "sngan_mnist", "lsgan_mnist"])
def test_two_steps_of_each_gan_experiment(name, tfds_dir, tmp_path):
  del tfds_dir
  c = _small(name, num_steps=2)
  r = train.run(c, str(tmp_path / name))
  assert r["step"] == 2 and np.isfinite(r["metrics"]["d_loss"])
  assert os.path.isfile(tmp_path / name / "samples" / "final.png")


def test_fid_digits_evaluated_periodically_during_training(tfds_dir, tmp_path):
  """eval.every: FID/KID/IS-digits at steps 1, 2 (periodic) and at the end (3), in the
  run's eval/ JSONs and its metrics log; evaluating does not change the training."""
  del tfds_dir
  import json  # pylint: disable=import-outside-toplevel
  c = _small("lsgan_mnist", num_steps=3)
  c.eval.every = 1
  r = train.run(c, str(tmp_path / "periodic"))
  evals = {step: json.load(open(tmp_path / "periodic" / "eval" / f"step_{step:07d}.json"))
           for step in (1, 2, 3)}
  assert all(np.isfinite(e["fid_digits"]) and e["num_samples"] == 100
             for e in evals.values())
  assert evals[3]["fid_digits"] == r["metrics"]["eval/fid_digits"]
  logged = [json.loads(line) for line in open(tmp_path / "periodic" / "metrics.jsonl")]
  assert sorted(m["step"] for m in logged if "eval/fid_digits" in m) == [1, 2, 3]
  c.eval.every = 0
  quiet = train.run(c, str(tmp_path / "end_only"))
  assert quiet["metrics"]["eval/fid_digits"] == r["metrics"]["eval/fid_digits"]
  assert not (tmp_path / "end_only" / "eval" / "step_0000001.json").exists()


def test_eval_cli_on_a_gan_run_gives_fid_digits(tfds_dir, tmp_path):
  """`launch.py eval` on a GAN run: the task's own metrics, same numbers as the run's end."""
  del tfds_dir
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from tests.conftest import CACHE_DIR  # pylint: disable=import-outside-toplevel
  c = _small("sngan_mnist", num_steps=1)
  workdir = str(tmp_path / "sn")
  r = train.run(c, workdir)
  env = dict(os.environ, GENREPAIR_JAX_CACHE=CACHE_DIR, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "launch.py", "eval", "--workdir", workdir], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "fid_digits" in out.stdout
  again = json.load(open(os.path.join(workdir, "eval", "step_0000001.json")))
  np.testing.assert_allclose(again["fid_digits"], r["metrics"]["eval/fid_digits"], rtol=1e-6)
  assert again["fid_digits"] > 100  # one step from random init: far from the digits


def test_evaluate_inception_metric_checks_its_weights_before_sampling(tmp_path):
  """config.eval.metric selects FID-digits or the Inception FID; missing weights are named."""
  from genrepair import tasks  # pylint: disable=import-outside-toplevel
  c = small_dcgan_config()
  c.eval.metric = "inception"
  c.data.data_dir = str(tmp_path)
  task = tasks.get("gan")(c, mesh=sharding.make_mesh({"data": 1}, jax.devices()[:1]))
  # state None: the weights are checked before any sample is drawn.
  with pytest.raises(FileNotFoundError, match=str(tmp_path) + ".*fid_inception_v3"):
    task.evaluate(None, c)
  c.eval.metric = "fid"
  with pytest.raises(ValueError, match="'digits' or 'inception'"):
    task.evaluate(None, c)
