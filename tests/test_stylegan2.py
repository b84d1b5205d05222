"""StyleGAN2: layers against NumPy references (FIR resampling, equalised lr, modulated and
demodulated convolution, minibatch stddev), style mixing, path lengths against finite
differences, pinned parameter counts, and a tiny run that resumes bit-exactly."""

import importlib.util
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import losses, models, sharding, train
from genrepair.models import stylegan2
from genrepair.models import stylegan2_layers as L
from genrepair.tasks import gan
from tests.conftest import REPO
from tests.test_train import _restore


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------ NumPy references

def np_upfirdn(x, f, up, down, pad, gain=1.0):
  """upfirdn2d on one [H, W] plane, by definition: zero insertion, padding, a true
  convolution written as an explicit sum, subsampling."""
  h, w = x.shape
  u = np.zeros((h * up, w * up))
  u[::up, ::up] = x
  u = np.pad(u, ((pad[0], pad[1]), (pad[0], pad[1])))
  k = f.shape[0]
  out = np.zeros((u.shape[0] - k + 1, u.shape[1] - k + 1))
  for i in range(out.shape[0]):
    for j in range(out.shape[1]):
      for a in range(k):
        for b in range(k):  # convolution: y[i] = sum_t u[i + t] f[K - 1 - t]
          out[i, j] += u[i + a, j + b] * f[k - 1 - a, k - 1 - b] * gain
  return out[::down, ::down]


def np_conv_same(x, w):
  """Zero-padded 'SAME' correlation of x [H, W, Cin] with w [K, K, Cin, Cout]."""
  k = w.shape[0]
  p = k // 2
  xp = np.pad(x, ((p, p), (p, p), (0, 0)))
  out = np.zeros(x.shape[:2] + (w.shape[-1],))
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      out[i, j] = np.einsum("abi,abio->o", xp[i:i + k, j:j + k], w)
  return out


# ------------------------------------------------------------------ layers

@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5)])
def test_fir_up_and_down_match_numpy(taps):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  f = L.fir_filter(taps)
  np.testing.assert_allclose(f.sum(), 1.0, rtol=1e-6)
  k = len(taps)
  for kw, fn in ((dict(up=2, down=1, pad=((k + 1) // 2, (k - 2) // 2), gain=4.0),
                  lambda v: L.upsample2d(v, taps)),
                 (dict(up=1, down=2, pad=((k - 1) // 2, (k - 2) // 2)),
                  lambda v: L.downsample2d(v, taps)),
                 (dict(up=1, down=2, pad=(2, 2)),
                  lambda v: L.upfirdn2d(v, taps, down=2, pad=(2, 2)))):
    got = np.asarray(jax.jit(fn)(x))
    want = np.stack([np.stack([np_upfirdn(x[b, :, :, c].astype(np.float64), f, **kw)
                               for c in range(3)], -1) for b in range(2)])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if taps == (1, 3, 3, 1):
    assert L.upsample2d(x).shape == (2, 12, 12, 3)
    assert L.downsample2d(x).shape == (2, 3, 3, 3)
    # [1, 3, 3, 1] upsampling: each output is 3/4 of its nearest and 1/4 of the next input.
    up = np.asarray(L.upsample2d(jnp.arange(6.0).reshape(1, 1, 6, 1) * jnp.ones((1, 4, 1, 1))))
    np.testing.assert_allclose(up[0, 3, 2:10, 0], [0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.25])


def test_equalised_lr_scales():
  dense = L.EqualDense(7, lr_mul=0.01, bias_init=0.5)
  x = jax.random.normal(jax.random.key(0), (3, 256))
  v = dense.init(jax.random.key(1), x)
  kernel, bias = np.asarray(v["params"]["kernel"], np.float64), np.asarray(v["params"]["bias"])
  # Stored N(0, 1) / lr_mul; used as kernel * lr_mul / sqrt(fan_in); bias * lr_mul.
  np.testing.assert_allclose(kernel.std(), 100.0, rtol=0.03)
  np.testing.assert_allclose(bias, 0.5)
  want = np.asarray(x, np.float64) @ (kernel * 0.01 / 16.0) + 0.005
  np.testing.assert_allclose(dense.apply(v, x), want, rtol=1e-5, atol=1e-6)
  conv = L.EqualConv(4, 3, activation="linear")
  xc = jax.random.normal(jax.random.key(2), (1, 5, 5, 6))
  vc = conv.init(jax.random.key(3), xc)
  w = np.asarray(vc["params"]["kernel"], np.float64)
  big = L.EqualConv(64, 3).init(jax.random.key(4), jnp.zeros((1, 4, 4, 64)))
  np.testing.assert_allclose(np.std(big["params"]["kernel"]), 1.0, rtol=0.01)  # 36,864 draws
  want = np_conv_same(np.asarray(xc[0], np.float64), w / math.sqrt(6 * 9))
  np.testing.assert_allclose(conv.apply(vc, xc)[0], want, rtol=1e-5, atol=1e-5)
  # lrelu gain sqrt(2): unit-variance N(0, 1) inputs keep a second moment of 1.04 (slope 0.2).
  np.testing.assert_allclose(L.lrelu(jnp.array([-1.0, 2.0])), [-0.2 * math.sqrt(2), 2 * math.sqrt(2)],
                             rtol=1e-6)


def test_demodulation_gives_unit_norm_weights_per_output_channel():
  rng = np.random.default_rng(1)
  weight = rng.normal(size=(3, 3, 5, 4)) / math.sqrt(45)
  styles = rng.normal(size=(2, 5)) + 1.0
  got = np.asarray(L.modulated_weights(jnp.asarray(weight, jnp.float32),
                                       jnp.asarray(styles, jnp.float32)))
  w1 = weight[None] * styles[:, None, None, :, None]        # Eq. 1
  want = w1 / np.sqrt(np.sum(w1 ** 2, axis=(1, 2, 3), keepdims=True) + 1e-8)  # Eq. 3
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.sum(got.astype(np.float64) ** 2, axis=(1, 2, 3)), 1.0, rtol=1e-5)
  plain = np.asarray(L.modulated_weights(jnp.asarray(weight, jnp.float32),
                                         jnp.asarray(styles, jnp.float32), demodulate=False))
  np.testing.assert_allclose(plain, w1, rtol=1e-5, atol=1e-7)
  # Eq. 2: i.i.d. unit-variance inputs give unit-variance outputs (interior pixels).
  mod = L.ModulatedConv(4, 3)
  x = jax.random.normal(jax.random.key(0), (2, 66, 66, 16))
  wlat = jax.random.normal(jax.random.key(1), (2, 8))
  v = mod.init(jax.random.key(2), x, wlat)
  y = np.asarray(mod.apply(v, x, wlat))[:, 1:-1, 1:-1]  # [2, 64, 64, 4]
  np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, rtol=0.1)


@pytest.mark.parametrize("up,demodulate", [(False, True), (True, True), (False, False)])
def test_modulated_conv_equals_explicit_per_sample_conv(up, demodulate):
  mod = L.ModulatedConv(4, 3, demodulate=demodulate, up=up)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  wlat = jax.random.normal(jax.random.key(1), (2, 6))
  v = mod.init(jax.random.key(2), x, wlat)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
  # Styles s = A(w) (equalised affine, bias 1); the weight scaled by 1/sqrt(Cin K K).
  s = np.asarray(wlat, np.float64) @ (p["affine"]["kernel"] / math.sqrt(6)) + p["affine"]["bias"]
  weight = p["kernel"] / math.sqrt(3 * 9)
  got = np.asarray(jax.jit(mod.apply)(v, x, wlat))
  for b in range(2):
    wb = weight * s[b][None, None, :, None]                 # Eq. 1
    if demodulate:
      wb = wb / np.sqrt(np.sum(wb ** 2, axis=(0, 1, 2)) + 1e-8)  # Eq. 3
    xb = np.asarray(x[b], np.float64)
    if up:
      xb = np.stack([np_upfirdn(xb[:, :, c], L.fir_filter(), 2, 1, (2, 1), 4.0)
                     for c in range(3)], -1)
    np.testing.assert_allclose(got[b], np_conv_same(xb, wb), rtol=1e-4, atol=1e-5)


@pytest.fixture(params=["xla", "onednn"])
def conv_backend(request, monkeypatch):
  """GENREPAIR_CONV for conv_s1: XLA's form, and oneDNN's calls where they build."""
  if request.param == "onednn":
    from genrepair.kernels import onednn  # pylint: disable=import-outside-toplevel
    if not onednn.available():
      pytest.skip("oneDNN kernels unavailable here")
  monkeypatch.setenv("GENREPAIR_CONV", request.param)
  return request.param


@pytest.mark.parametrize("k,pads", [(3, ((1, 1), (1, 1))), (1, ((0, 0), (0, 0))),
                                    (3, ((2, 0), (0, 1)))])
def test_conv_s1_derivatives_equal_lax(k, pads, conv_backend):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), pads,
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, w: L.conv_s1(x, w, pads)
  hlo = jax.jit(ours).lower(x, w).as_text()
  assert ("genrepair_onednn_conv_fwd" in hlo) == (conv_backend == "onednn")
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  y = jax.random.normal(jax.random.key(2), ref(x, w).shape)
  # First and second order (the structure of the path-length gradient).
  first = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * y), argnums=(0, 1))
  second = lambda f: jax.grad(lambda x, w: jnp.sum(first(f)(x, w)[0] ** 2), argnums=(0, 1))
  for a, b in zip(first(ours)(x, w) + second(ours)(x, w), first(ref)(x, w) + second(ref)(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,size", [(3, 9), (1, 4), (3, 8)])
def test_conv_s2_and_its_derivatives_equal_lax(k, size, conv_backend):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), "VALID",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(L.conv_s2(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  y = jax.random.normal(jax.random.key(2), ref(x, w).shape)
  first = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * y), argnums=(0, 1))
  second = lambda f: jax.grad(lambda x, w: jnp.sum(first(f)(x, w)[0] ** 2), argnums=(0, 1))
  for a, b in zip(first(L.conv_s2)(x, w) + second(L.conv_s2)(x, w),
                  first(ref)(x, w) + second(ref)(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_minibatch_stddev_matches_numpy():
  x = np.random.default_rng(2).normal(size=(4, 3, 3, 6)).astype(np.float32)
  got = np.asarray(L.minibatch_stddev(jnp.asarray(x), group_size=2, num_features=2))
  assert got.shape == (4, 3, 3, 8)
  np.testing.assert_array_equal(got[..., :6], x)
  for n in range(4):
    m = n % 2  # group of sample n = g * (B / G) + m: samples {m, m + 2}
    grp = x[[m, m + 2]].astype(np.float64)
    std = np.sqrt(grp.var(axis=0) + 1e-8)  # [3, 3, 6]
    for f in range(2):
      np.testing.assert_allclose(got[n, :, :, 6 + f], std[..., 3 * f:3 * f + 3].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="must divide"):
    L.minibatch_stddev(jnp.zeros((6, 2, 2, 4)), group_size=4)


# ------------------------------------------------------------------ networks

@pytest.mark.parametrize("variant,channels,kw,g_count,d_count", [
    ("tiny", 1, {}, 5_195, 5_409),
    ("digits32", 1, {}, 344_795, 218_417),
    ("wide32", 1, {}, 1_529_099, 1_346_049),
    ("ffhq256", 3, {}, 30_034_338, 28_864_129),
    # Config F at 1024x1024: the generator count of the paper's released networks.
    ("ffhq256", 3, dict(resolution=1024, image_size=1024), 30_370_060, 29_012_513),
])
def test_parameter_counts(variant, channels, kw, g_count, d_count):
  g, d = models.get("stylegan2")(variant=variant, channels=channels, **kw)
  z = jnp.zeros((4, g.w_dim))
  g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), z, train=False))
  x = jnp.zeros((4, g.image_size, g.image_size, channels))
  d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), x, train=False))
  assert (_count(g_vars["params"]), _count(d_vars["params"])) == (g_count, d_count)
  assert jax.eval_shape(lambda v: g.apply(v, z, train=False), g_vars).shape == x.shape
  assert set(g_vars) == {"params"} and set(d_vars) == {"params"}  # no BatchNorm


def _tiny():
  g, d = stylegan2.Model(variant="tiny", style_mixing_prob=1.0)
  z = jax.random.normal(jax.random.key(0), (4, 8))
  return g, d, z, g.init(jax.random.key(1), z, train=False)


def test_generator_crop_noise_and_style_mixing():
  g, d, z, v = _tiny()
  assert g.num_ws == 8
  img = g.apply(v, z, train=False)
  assert img.shape == (4, 28, 28, 1)  # 32x32 synthesis, centre crop
  full = g.apply(v, g.apply(v, z, train=False, method="map"), train=False,
                 method=lambda m, ws, train: m.synthesis(ws, train=train))
  np.testing.assert_array_equal(full[:, 2:30, 2:30], img)
  np.testing.assert_array_equal(g.apply(v, z, train=False), img)  # fixed noise maps
  # Noise strengths start at 0; with a non-zero strength the noise comes from the rng.
  v2 = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 0.5 if "noise_strength" in jax.tree_util.keystr(p) else a, v)
  rngs = lambda k: {"noise": jax.random.key(k), "mixing": jax.random.key(k)}
  a = g.apply(v2, z, train=True, rngs=rngs(3))
  np.testing.assert_array_equal(a, g.apply(v2, z, train=True, rngs=rngs(3)))
  assert np.abs(np.asarray(a - g.apply(v2, z, train=True, rngs=rngs(4)))).max() > 1e-3
  # Style mixing (probability 1): layers < cutoff from w(z), the rest from w(z2).
  w = np.asarray(g.apply(v, z, train=False, method="map"))
  assert np.all(w == w[:, :1])  # without mixing every layer gets the same w
  cutoffs = set()
  for k in range(6):
    ws = np.asarray(g.apply(v, z, train=True, rngs=rngs(k), method="map"))
    same = np.all(ws == w, axis=(0, 2))  # [num_ws]
    c = int(np.argmin(same))
    assert 1 <= c < 8 and same[:c].all() and not same[c:].any()
    assert np.all(ws[:, c:] == ws[:, c:c + 1])
    cutoffs.add(c)
  assert len(cutoffs) > 1
  g0, _ = stylegan2.Model(variant="tiny", style_mixing_prob=0.0)
  np.testing.assert_array_equal(g0.apply(v, z, train=True, rngs=rngs(0), method="map"), w)
  # The discriminator pads 28x28 with -1 to 32x32: logits per example.
  vd = d.init(jax.random.key(2), img, train=False)
  assert d.apply(vd, img, train=False).shape == (4,)
  with pytest.raises(ValueError, match="expects"):
    d.apply(vd, jnp.zeros((4, 32, 32, 1)), train=False)


def test_path_lengths_match_finite_differences():
  g, _, z, _ = _tiny()
  with jax.enable_x64(True):  # float64, so central differences are accurate to ~1e-8
    v = g.init(jax.random.key(1), jnp.asarray(z[:2], jnp.float64), train=False)
    ws = g.apply(v, jnp.asarray(z[:2], jnp.float64), train=False, method="map")  # [2, 8, 8]
    assert ws.dtype == jnp.float64
    synth = jax.jit(lambda w: g.apply(v, w, train=False, method="synthesize"))
    y = jax.random.normal(jax.random.key(5), (2, 28, 28, 1), jnp.float64) / 28.0
    got = np.asarray(jax.jit(lambda w: gan.path_lengths(synth, w, y))(ws))
    h, n = 1e-5, 8 * 8
    eye = np.eye(n).reshape(n, 8, 8) * h
    for b in range(2):
      plus, minus = np.asarray(synth(ws[b][None] + eye)), np.asarray(synth(ws[b][None] - eye))
      jty = np.sum((plus - minus) * np.asarray(y[b]), axis=(1, 2, 3)) / (2 * h)  # J^T y
      want = math.sqrt(np.mean(np.sum(jty.reshape(8, 8) ** 2, axis=1)))  # mean over layers
      np.testing.assert_allclose(got[b], want, rtol=1e-6)
  assert np.all(got > 0)
  # The penalty of Eq. 4 against the hand formula.
  pen = losses.get("path_length")(pl_lengths=jnp.array([1.0, 3.0]), pl_mean=jnp.array(1.5))
  np.testing.assert_allclose(pen, [0.25, 2.25])


# ------------------------------------------------------------------ task integration

def _config(**train_kw):
  spec = importlib.util.spec_from_file_location(
      "stylegan2_digits", os.path.join(REPO, "experiments", "stylegan2_digits.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.variant, c.model.z_dim = "tiny", 8
  c.train.update(dict(batch_size=16, log_every=1, sample_every=1000, checkpoint_every=1000,
                      r1_every=2, pl_every=2))
  c.train.update(train_kw)
  c.eval.num, c.eval.kid_subsets = 100, 2
  return c


def test_configs_build_and_reject_bad_settings():
  ffhq = importlib.util.spec_from_file_location(
      "s", os.path.join(REPO, "experiments", "stylegan2_digits.py"))
  module = importlib.util.module_from_spec(ffhq)
  ffhq.loader.exec_module(module)
  c = module.get_config("ffhq256")
  assert c.model.variant == "ffhq256" and "eval" not in c and c.losses.d.r1_penalty == 10.0
  np.testing.assert_allclose(c.optim.g.lr, 0.002 * 4 / 5)
  np.testing.assert_allclose(c.optim.d.b2, 0.99 ** (16 / 17))
  # The default and the `wide32` recipe as measured (experiments/README.md): gamma 10.
  c = module.get_config()
  assert (c.model.variant, c.losses.d.r1_penalty, c.train.num_steps) == ("digits32", 10.0, 10_000)
  c = module.get_config("wide32")
  assert (c.model.variant, c.model.z_dim, c.model.style_mixing_prob) == ("wide32", 256, 0.0)
  assert (c.losses.d.r1_penalty, c.losses.g.path_length, c.train.batch_size) == (10.0, 0.0, 64)
  np.testing.assert_allclose([c.optim.g.lr, c.optim.d.lr], [0.0025 * 4 / 5, 0.0025 * 16 / 17])
  np.testing.assert_allclose(c.model.ema_decay, 0.5 ** (64 / 20_000))
  with pytest.raises(ValueError, match="wide32"):
    module.get_config("wide")
  bad = _config()
  bad.unlock()
  del bad.model["style_mixing_prob"]  # a StyleGAN2 option DCGAN does not take
  bad.model.name, bad.model.variant = "dcgan", "mnist-small"
  with pytest.raises(ValueError, match="map/synthesize"):
    gan.GANTask(bad)
  bad = _config(pl_batch_shrink=3)
  with pytest.raises(ValueError, match="pl_batch_shrink"):
    gan.GANTask(bad)


def test_two_steps_resume_bit_exactly_with_pl_and_lazy_r1(tfds_dir, tmp_path):
  """4 steps straight vs. resumed from the step-2 checkpoint by a new run(); one device
  (1 vs 8 devices is tested for the GAN step in test_train.py)."""
  del tfds_dir
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  c = _config(num_steps=4, checkpoint_every=2)
  r = train.run(c, straight, mesh=mesh)
  assert r["step"] == 4 and np.isfinite(r["metrics"]["eval/fid_digits"])
  # The same run interrupted after step 2: its workdir without the step-4 checkpoint.
  shutil.copytree(straight, split)
  shutil.rmtree(os.path.join(split, "checkpoints", "4"))
  assert train.run(c, split, mesh=mesh)["step"] == 4
  step_a, state_a, data_a, _ = _restore(straight, c)
  step_b, state_b, data_b, _ = _restore(split, c)
  assert step_a == step_b == 4 and data_a == data_b
  assert float(state_a.pl_mean) > 0  # the path-length EMA is state, checkpointed
  leaves_a, leaves_b = jax.tree.leaves(state_a), jax.tree.leaves(state_b)
  assert len(leaves_a) == len(leaves_b) > 50
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)
  read = lambda d: [m for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                    if not any(k.startswith("eval/") for k in m)]
  logs = read(straight)
  assert [m["step"] for m in logs] == [1, 2, 3, 4]
  assert read(split) == logs  # the resumed run rewrote steps 3, 4 with the same numbers
  # Lazy terms on steps 0 and 2 (logged as steps 1 and 3), weights x2; zero otherwise.
  assert [m["path_length"] > 0 for m in logs] == [True, False, True, False]
  assert [m["r1_penalty"] > 0 for m in logs] == [True, False, True, False]
  # Step 0 recomputed outside the run: a_1 = a_0 + 0.01 (mean(lengths) - a_0), a_0 = 0,
  # and the logged term is mean((lengths - a_1)^2) (the paper's code uses the updated a).
  task, _, init_rng, train_rng, _, _ = train.build(c, mesh)
  s0 = jax.jit(task.init)(init_rng)
  _, k_zg = jax.random.split(jax.random.fold_in(train_rng, 0))
  lengths = np.asarray(jax.jit(lambda p: task._path_lengths(p, jax.random.fold_in(k_zg, 2), 8))(
      s0.g_params), np.float64)
  a1 = 0.01 * lengths.mean()
  np.testing.assert_allclose(logs[0]["pl_mean"], a1, rtol=1e-4)
  np.testing.assert_allclose(logs[0]["path_length"], np.mean((lengths - a1) ** 2), rtol=1e-4)
  np.testing.assert_allclose(logs[0]["g_loss"],
                             logs[0]["g_nonsaturating"] + 2 * 2.0 * logs[0]["path_length"],
                             rtol=1e-5)
  np.testing.assert_allclose(logs[1]["pl_mean"], logs[0]["pl_mean"], rtol=0)
  assert os.path.isfile(os.path.join(straight, "samples", "final.png"))
