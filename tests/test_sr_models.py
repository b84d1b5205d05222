"""ESPCN, EDSR, DRRN, U-Net and the plain encoder-decoder: pinned parameter counts against
the papers' / official code's numbers, pixel-shuffle order, residual structure, weight
sharing, odd sizes, jit and one descending gradient step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair.models import drrn
from genrepair.models import edsr
from genrepair.models import encdec
from genrepair.models import espcn
from genrepair.models import layers
from genrepair.models import unet


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_vars(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False,
                                           method="restore"))


def _init(model, x, seed=0):
  """Variables of ``model`` for input ``x`` without compiling the model's initialisers.

  Random init compiles one PRNG program per kernel shape (seconds each on a busy 2-core
  CPU); the functional tests need only some non-degenerate values: kernels
  N(0, 2 / fan_in), small random biases, BatchNorm at identity (scale 1, mean 0, var 1).
  """
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False,
                                               method="restore"))
  rng = np.random.default_rng(seed)

  def fill(path, a):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0.0, np.sqrt(2.0 / np.prod(a.shape[:-1])), a.shape)
    if name == "bias":
      return rng.normal(0.0, 0.05, a.shape)
    return np.ones(a.shape) if name in ("scale", "var") else np.zeros(a.shape)

  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                      jax.tree_util.tree_map_with_path(fill, abstract))


def _block(a, b):
  """Two 3x3 convs a -> b -> b with biases (U-Net / EncDec unit)."""
  return 9 * a * b + b + 9 * b * b + b


# ---------------------------------------------------------------------------- pixel shuffle


@pytest.mark.parametrize("r,c", [(2, 3), (3, 2), (1, 4)])
def test_pixel_shuffle_matches_pytorch_index_formula(r, c):
  x = np.random.default_rng(0).normal(size=(2, 3, 4, c * r * r)).astype(np.float32)
  ref = np.zeros((2, 3 * r, 4 * r, c), np.float32)
  for b in range(2):
    for h in range(3):
      for w in range(4):
        for i in range(r):
          for j in range(r):
            for ch in range(c):
              ref[b, h * r + i, w * r + j, ch] = x[b, h, w, ch * r * r + i * r + j]
  out = jax.jit(layers.pixel_shuffle, static_argnums=1)(jnp.asarray(x), r)
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(layers.pixel_unshuffle(out, r), x)


def test_pixel_shuffle_is_not_tf_depth_to_space_order():
  # tf.nn.depth_to_space reads channel (i*r + j)*C + c; ours reads c*r*r + i*r + j.
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)  # C = 2, r = 2
  out = layers.pixel_shuffle(x, 2)
  np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1], [2, 3]])
  np.testing.assert_array_equal(out[0, :, :, 1], [[4, 5], [6, 7]])


def test_pixel_shuffle_and_padding_errors():
  with pytest.raises(ValueError, match=r"\[B, H, W, C\*4\]"):
    layers.pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)
  with pytest.raises(ValueError, match="multiples of 3"):
    layers.pixel_unshuffle(jnp.zeros((1, 4, 6, 1)), 3)
  with pytest.raises(ValueError, match=r"\(1, 1, 5, 1\)"):
    layers.pad_to_multiple(jnp.zeros((1, 1, 5, 1)), 4)
  x = jnp.arange(10.0).reshape(1, 5, 2, 1)
  padded, hw = layers.pad_to_multiple(x, 4)
  assert hw == (5, 2) and padded.shape == (1, 8, 4, 1)
  np.testing.assert_array_equal(padded[0, :, 0, 0], [0, 2, 4, 6, 8, 6, 4, 2])  # reflect
  np.testing.assert_array_equal(padded[0, 0, :, 0], [0, 1, 0, 1])  # repeated reflection


# ---------------------------------------------------------------------------- ESPCN


def test_espcn_parameter_counts():
  table = {("x2", 1): 21_284, ("x3", 1): 22_729, ("x4", 1): 24_752,
           ("x2", 3): 26_796, ("x3", 3): 31_131, ("x4", 3): 37_200}
  for (variant, c), n in table.items():
    r = espcn.VARIANTS[variant]["scale"]
    # (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3 with C r^2 outputs (Sec. 3.2).
    assert n == 25 * c * 64 + 64 + 9 * 64 * 32 + 32 + 9 * 32 * c * r * r + c * r * r
    model = espcn.Model(variant=variant, channels=c)
    assert _count(_abstract_vars(model, (1, 17, 17, c))["params"]) == n, (variant, c)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_and_edsr_output_shapes(scale):
  for model in (espcn.Model(scale=scale, channels=3),
                edsr.Model(scale=scale, n_resblocks=1, features=8)):
    assert model.sr_input == "lr" and model.scale == scale
    x = jnp.zeros((2, 7, 5, 3))
    out = jax.eval_shape(lambda v, m=model: m.apply(v, x, train=False, method="restore"),
                         _abstract_vars(model, x.shape))
    assert out.shape == (2, 7 * scale, 5 * scale, 3)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("activation,act", [("tanh", np.tanh), ("relu",
                                                                  lambda a: np.maximum(a, 0))])
def test_espcn_is_a_per_pixel_mlp_then_pixel_shuffle(activation, act):
  # With 1x1 kernels ESPCN is an MLP per LR pixel; output pixel (h r + i, w r + j, c) is
  # MLP output channel c r^2 + i r + j: checks the activation and the shuffle wiring.
  r, c = 3, 2
  model = espcn.Model(scale=r, channels=c, kernel_sizes=(1, 1, 1), features=(5, 4),
                      activation=activation)
  x = jax.random.uniform(jax.random.key(1), (1, 2, 3, c))
  v = _init(model, x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
  xn = np.asarray(x, np.float64)
  h1 = act(xn @ p["conv1"]["kernel"][0, 0] + p["conv1"]["bias"])
  h2 = act(h1 @ p["conv2"]["kernel"][0, 0] + p["conv2"]["bias"])
  z = h2 @ p["conv3"]["kernel"][0, 0] + p["conv3"]["bias"]  # [1, 2, 3, c r^2]
  ref = np.zeros((1, 2 * r, 3 * r, c))
  for h in range(2):
    for w in range(3):
      for i in range(r):
        for j in range(r):
          ref[0, h * r + i, w * r + j, :] = z[0, h, w, np.arange(c) * r * r + i * r + j]
  out = jax.jit(lambda v, x: model.apply(v, x, method="restore", train=False))(v, x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- EDSR


@pytest.mark.parametrize("variant,n_blocks,f,official", [
    # Official EDSR-PyTorch README: EDSR_baseline x2/x3/x4 1.37M/1.55M/1.52M, EDSR
    # 40.7M/43.7M/43.1M (the paper's Table 1: "1.5M" and "43M").
    ("baseline", 16, 64, {2: 1_369_859, 3: 1_554_499, 4: 1_517_571}),
    ("large", 32, 256, {2: 40_729_603, 3: 43_680_003, 4: 43_089_923}),
])
def test_edsr_parameter_counts_match_the_official_models(variant, n_blocks, f, official):
  for scale, n in official.items():
    conv = lambda a, b: 9 * a * b + b
    up = conv(f, 9 * f) if scale == 3 else int(np.log2(scale)) * conv(f, 4 * f)
    assert n == conv(3, f) + (2 * n_blocks + 1) * conv(f, f) + up + conv(f, 3)
    model = edsr.Model(variant=variant, scale=scale)
    v = _abstract_vars(model, (1, 12, 12, 3))
    assert set(v) == {"params"}  # MeanShift is a constant, not a (frozen) parameter
    assert _count(v["params"]) == n, (variant, scale)
  # Rounded as in the official README.
  rounded = {s: round(n / 1e6, 2 if variant == "baseline" else 1) for s, n in official.items()}
  assert rounded == ({2: 1.37, 3: 1.55, 4: 1.52} if variant == "baseline" else
                     {2: 40.7, 3: 43.7, 4: 43.1})


def test_edsr_structure_mean_shift_and_residual_scaling():
  v = _abstract_vars(edsr.Model(), (1, 8, 8, 3))["params"]
  blocks = sorted(k for k in v if k.startswith("block"))
  assert blocks == sorted(f"block{i}" for i in range(16))
  assert {"head", "body_conv", "up0", "tail"} <= set(v) and "up1" not in v
  assert edsr.Model(variant="large").res_scale == 0.1 and edsr.Model().res_scale == 1.0
  # All-zero weights: every conv outputs 0, so the output is exactly the added-back mean.
  model = edsr.Model(n_resblocks=2, features=8)
  x = jax.random.uniform(jax.random.key(1), (1, 4, 5, 3))
  zeros = jax.tree.map(jnp.zeros_like, _init(model, x))
  out = jax.jit(model.apply)(zeros, x)
  np.testing.assert_allclose(out, jnp.broadcast_to(jnp.asarray(edsr.DIV2K_RGB_MEAN),
                                                   (1, 8, 10, 3)), rtol=1e-6)


def test_edsr_rgb_range_255_equals_rescaled_biases():
  # Official weights run at [0, 255]: the same network at [0, 1] has biases / 255.
  m1 = edsr.Model(scale=3, n_resblocks=2, features=8)
  m255 = edsr.Model(scale=3, n_resblocks=2, features=8, rgb_range=255.0)
  x = jax.random.uniform(jax.random.key(1), (1, 5, 4, 3))
  v = _init(m1, x)
  v255 = jax.tree_util.tree_map_with_path(
      lambda path, a: a * 255.0 if path[-1].key == "bias" else a, v)
  out1, out255 = jax.jit(lambda v, v255: (m1.apply(v, x), m255.apply(v255, x)))(v, v255)
  np.testing.assert_allclose(out255, out1, rtol=1e-4, atol=1e-5)
  assert float(jnp.std(out1)) > 0.01


# ---------------------------------------------------------------------------- DRRN


@pytest.mark.parametrize("variant,units,n_params,n_stats", [
    # conv weights 297,216 (the paper's 297K) + biases 128 + 2*128 + 1 + BN scale/shift
    # 2 (on the image) + U * 2 * 2 * 128 + 2 * 128.
    ("B1U9", 9, 297_216 + 385 + 2 + 9 * 512 + 256, 2 + 9 * 512 + 256),
    ("B1U25", 25, 297_216 + 385 + 2 + 25 * 512 + 256, 2 + 25 * 512 + 256),
])
def test_drrn_parameter_counts_and_sharing(variant, units, n_params, n_stats):
  assert n_params == {"B1U9": 302_467, "B1U25": 310_659}[variant]
  model = drrn.Model(variant=variant)
  assert model.num_units == units and model.sr_input == "bicubic"
  v = _abstract_vars(model, (1, 31, 31, 1))
  assert _count(v["params"]) == n_params
  assert _count(v["batch_stats"]) == n_stats
  convs = {k: p for k, p in v["params"].items() if "conv" in k}
  # One pair of convs for all U units: the conv weights are the same for U = 9 and 25.
  assert sorted(convs) == ["block0_conv_a", "block0_conv_b", "block0_conv_in", "conv_end"]
  assert _count({k: p["kernel"] for k, p in convs.items()}) == 9 * (128 + 2 * 128 * 128 + 128)
  assert _count({k: p["kernel"] for k, p in convs.items()}) == 297_216
  assert drrn.depth(1, units) == {9: 20, 25: 52}[units]


def test_drrn_multi_block_parameter_count():
  # Each block: its own conv_in (first block from the image) and its own shared pair.
  b, u, f = 3, 2, 16
  v = _abstract_vars(drrn.Model(num_blocks=b, num_units=u, features=f, batch_norm=False),
                     (1, 8, 8, 1))["params"]
  conv = lambda a, c: 9 * a * c + c
  assert _count(v) == conv(1, f) + (b - 1) * conv(f, f) + b * 2 * conv(f, f) + conv(f, 1)


@pytest.mark.parametrize("b,u", [(1, 1), (1, 3), (2, 2)])
def test_drrn_applies_the_papers_number_of_convs(b, u):
  model = drrn.Model(num_blocks=b, num_units=u, features=4)
  x = jax.random.uniform(jax.random.key(1), (1, 6, 6, 1))
  v = _init(model, x)
  _, state = jax.eval_shape(lambda v: model.apply(
      v, x, train=False, mutable=["intermediates"],
      capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv)), v)
  calls = {k: len(c["__call__"]) for k, c in state["intermediates"].items()}
  assert sum(calls.values()) == drrn.depth(b, u) == (1 + 2 * u) * b + 1
  assert calls["block0_conv_a"] == calls["block0_conv_b"] == u  # one module, U applications


@pytest.mark.parametrize("train", [False, True])
def test_drrn_global_residual_is_exact_with_a_zero_last_conv(train):
  model = drrn.Model(num_units=2, features=8)
  x = jax.random.uniform(jax.random.key(1), (2, 9, 7, 1))
  v = _init(model, x)
  f = jax.jit(lambda v: model.apply(v, x, train=train, method="restore",
                                    mutable=["batch_stats"])[0])
  assert float(jnp.max(jnp.abs(f(v) - x))) > 1e-4
  v["params"]["conv_end"] = jax.tree.map(jnp.zeros_like, v["params"]["conv_end"])
  np.testing.assert_array_equal(f(v), x)


# ---------------------------------------------------------------------------- U-Net, EncDec


def _unet_count(cin, c, f, d):
  n = sum(_block(cin if i == 0 else f * 2 ** (i - 1), f * 2 ** i) for i in range(d))
  n += _block(f * 2 ** (d - 1), f * 2 ** d)
  n += sum(4 * f * 2 ** (i + 1) * f * 2 ** i + f * 2 ** i + _block(2 * f * 2 ** i, f * 2 ** i)
           for i in range(d))
  return n + f * c + c


def _encdec_count(cin, c, f, d):
  n = sum(_block(cin if i == 0 else f * 2 ** (i - 1), f * 2 ** i) for i in range(d))
  n += _block(f * 2 ** (d - 1), f * 2 ** d)
  n += sum(_block(f * 2 ** (i + 1), f * 2 ** i) for i in range(d))
  return n + f * c + c


@pytest.mark.parametrize("family,variant,cin,c,n", [
    (unet, "inpaint", 4, 3, 7_760_451), (unet, "deblur", 3, 3, 7_760_163),
    (unet, "inpaint", 2, 1, 7_759_809), (unet, "deblur", 1, 1, 7_759_521),
    (unet, "paper", 1, 2, 31_030_658),  # Ronneberger et al.'s widths: the "31.0M" U-Net
    (encdec, "small", 3, 3, 1_753_411), (encdec, "small", 4, 3, 1_753_699),
    (encdec, "small", 1, 1, 1_752_769), (encdec, "large", 3, 3, 7_063_363),
    (encdec, "large", 4, 3, 7_063_651), (encdec, "large", 1, 1, 7_062_721),
])
def test_unet_and_encdec_parameter_counts(family, variant, cin, c, n):
  kw = {} if variant == "paper" else {"channels": c}
  model = family.Model(variant=variant, **kw)
  formula = _unet_count if family is unet else _encdec_count
  assert n == formula(cin, c, model.features, model.depth)
  assert _count(_abstract_vars(model, (1, 16, 16, cin))["params"]) == n
  assert model.sr_input is None


@pytest.mark.parametrize("family", [unet, encdec])
def test_odd_sizes_are_reflect_padded_and_cropped(family):
  model = family.Model(features=4, depth=3, channels=3)
  x = jax.random.uniform(jax.random.key(1), (2, 13, 22, 4))  # inpainting input, C + 1
  v = _init(model, x)
  f = jax.jit(lambda v, x: model.apply(v, x, train=False, method="restore"))
  out = f(v, x)
  assert out.shape == (2, 13, 22, 3)
  # Exactly the network on the explicitly reflect-padded 16x24 image, cropped.
  padded = np.pad(np.asarray(x), ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
  np.testing.assert_allclose(out, f(v, jnp.asarray(padded))[:, :13, :22], atol=1e-6)
  with pytest.raises(ValueError, match=r"\(1, 1, 8, 4\)"):
    jax.eval_shape(lambda: model.apply(v, jnp.zeros((1, 1, 8, 4)), train=False))


@pytest.mark.parametrize("family", [unet, encdec])
def test_global_residual_is_exact_with_a_zero_output_conv(family):
  model = family.Model(features=4, depth=2, channels=3, residual=True)
  x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 3))
  v = _init(model, x)
  v["params"]["out"] = jax.tree.map(jnp.zeros_like, v["params"]["out"])
  np.testing.assert_array_equal(jax.jit(model.apply)(v, x, train=False), x)


def test_unet_skip_connection_is_a_local_path():
  # With the up-convolutions zeroed, only the level-0 skip reaches the output: a change of
  # one input pixel moves exactly the outputs within the receptive field of down0's and
  # up0's four 3x3 convs (radius 4), however deep the network.
  model = unet.Model(features=4, depth=3, channels=1)
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 2))
  v = _init(model, x)
  cut = jax.tree.map(lambda a: a, v)
  for k in [k for k in v["params"] if k.startswith("upconv")]:
    cut["params"][k] = jax.tree.map(jnp.zeros_like, v["params"][k])
  f = jax.jit(lambda v, x: model.apply(v, x, train=False))
  x2 = x.at[0, 8, 7, 0].add(1.0)
  diff = np.abs(np.asarray(f(cut, x2) - f(cut, x)))[0, :, :, 0]
  rows, cols = np.nonzero(diff > 0)
  assert rows.min() >= 4 and rows.max() <= 12 and cols.min() >= 3 and cols.max() <= 11
  assert diff[8, 7] > 0
  # The intact U-Net (deep path through the bottleneck) reaches beyond that radius.
  far = np.abs(np.asarray(f(v, x2) - f(v, x)))[0, :, :, 0]
  assert far[0, 15] > 0 or far[15, 15] > 0 or far[0, 0] > 0


def test_fixed_upsampling_methods():
  x = jnp.arange(6.0).reshape(1, 2, 3, 1)
  np.testing.assert_array_equal(unet.upsample2x(x, "nearest")[0, :, :, 0],
                                np.repeat(np.repeat(np.asarray(x)[0, :, :, 0], 2, 0), 2, 1))
  # Half-pixel centres (PyTorch align_corners=False): output row 1 sits at input row
  # 0.25, output column 2 at input column 0.75.
  y = unet.upsample2x(x, "bilinear")
  x00, x01, x10, x11 = 0.0, 1.0, 3.0, 4.0
  expect = 0.75 * (0.25 * x00 + 0.75 * x01) + 0.25 * (0.25 * x10 + 0.75 * x11)
  np.testing.assert_allclose(y[0, 1, 2, 0], expect, rtol=1e-6)
  assert expect == 1.5


# ---------------------------------------------------------------------------- all models


_TINY = [
    (espcn, dict(scale=2, channels=1, features=(8, 4)), 1, 2),
    (edsr, dict(scale=2, n_resblocks=2, features=8, channels=3), 3, 2),
    (drrn, dict(num_units=2, features=8), 1, 1),
    (unet, dict(features=4, depth=2, channels=3), 4, 1),
    (encdec, dict(features=4, depth=2, channels=3, upsample="bilinear"), 4, 1),
]


@pytest.mark.parametrize("family,kw,cin,s", _TINY,
                         ids=["espcn", "edsr", "drrn", "unet", "encdec"])
def test_jit_and_one_gradient_step_reduces_l2(family, kw, cin, s):
  model = family.Model(**kw)
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, cin))
  y = jax.random.uniform(jax.random.key(2), (2, 8 * s, 8 * s, model.channels))
  v = _init(model, x)
  stats = v.get("batch_stats", {})

  @jax.jit
  def sgd(params):
    """L2 loss, the restored batch (train mode) and params after one normalised step."""
    def loss(params):
      out = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                        method="restore", mutable=["batch_stats"])[0]
      return jnp.mean((out - y) ** 2), out
    (l, out), g = jax.value_and_grad(loss, has_aux=True)(params)
    gnorm = jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree.leaves(g)))
    return l, out, gnorm, jax.tree.map(lambda p, d: p - 1e-2 * d / gnorm, params, g)

  l0, out, gnorm, stepped = sgd(v["params"])
  assert out.shape == y.shape and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and float(gnorm) > 0
  l1 = sgd(stepped)[0]  # same shapes: no recompilation
  assert float(l1) < float(l0)


def test_initialisers_follow_the_papers():
  # EDSR: PyTorch's default conv init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (official code).
  fan_in = 3 * 3 * 64
  init = edsr._INIT  # pylint: disable=protected-access
  w = np.asarray(init(jax.random.key(0), (3, 3, 64, 64)))
  assert np.max(np.abs(w)) <= 1 / np.sqrt(fan_in) < np.max(np.abs(w)) * 1.01
  np.testing.assert_allclose(np.std(w), 1 / np.sqrt(3 * fan_in), rtol=0.02)
  # DRRN (Caffe "msra"), U-Net (Sec. 3), EncDec: Gaussian with std sqrt(2 / fan_in).
  for init in (drrn._INIT, layers.HE_INIT):  # pylint: disable=protected-access
    w = np.asarray(init(jax.random.key(0), (3, 3, 64, 64)))
    np.testing.assert_allclose(np.std(w), np.sqrt(2 / fan_in), rtol=0.02)
    assert np.max(np.abs(w)) > 3 * np.sqrt(2 / fan_in)  # not truncated at 2 std


def test_factories_accept_the_task_keywords_and_reject_bad_options():
  # tasks/restoration.py passes channels (and scale for SR) to every factory.
  assert espcn.Model(variant="x2", scale=4, channels=1).scale == 4
  assert edsr.Model(scale=4, channels=1).channels == 1
  assert drrn.Model(scale=2, channels=1).scale == 2
  assert unet.Model(channels=1).channels == 1 and encdec.Model(channels=1).channels == 1
  for family, name in ((espcn, "ESPCN"), (edsr, "EDSR"), (drrn, "DRRN"), (unet, "UNet"),
                       (encdec, "EncDec")):
    with pytest.raises(ValueError, match=f"Unknown {name} variant"):
      family.Model(variant="nope")
    with pytest.raises(ValueError, match=f"Unknown {name} options"):
      family.Model(widht=3)
  with pytest.raises(ValueError, match="activation"):
    espcn.Model(activation="gelu")
  with pytest.raises(ValueError, match="scale must be 3 or a power of 2"):
    edsr.Model(scale=5)
  with pytest.raises(ValueError, match="3 entries"):
    edsr.Model(mean=(0.5,))
  with pytest.raises(ValueError, match="num_units >= 1"):
    drrn.Model(num_units=0)
  with pytest.raises(ValueError, match="depth >= 1"):
    unet.Model(depth=0)
  with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
    unet.Model().init(jax.random.key(0), jnp.zeros((1, 8, 8)), train=False)
  with pytest.raises(ValueError, match="upsample in"):
    encdec.Model(upsample="bicubic")
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    espcn.Model().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    edsr.Model().init(jax.random.key(0), jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    drrn.Model().init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)), train=False)


def test_srcnn_edge_pad_equals_numpy_edge_padding_and_its_gradient():
  from genrepair.models.srcnn import edge_pad  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
  c = jax.random.normal(jax.random.key(1), (2, 9, 11, 3))
  np.testing.assert_array_equal(edge_pad(x, 2), np.pad(np.asarray(x),
                                                       ((0, 0), (2, 2), (2, 2), (0, 0)),
                                                       mode="edge"))
  got = jax.grad(lambda x: jnp.sum(edge_pad(x, 2) * c))(x)
  want = jax.grad(lambda x: jnp.sum(jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)),
                                            mode="edge") * c))(x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # The corner pixel collects its own cotangent plus 2 + 2 border copies and 2 x 2 corners.
  assert abs(float(got[0, 0, 0, 0]) - float(jnp.sum(c[0, :3, :3, 0]))) < 1e-5
