"""DnCNN and SRCNN models: pinned parameter counts, residual semantics, padding modes, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import models
from genrepair.models import dncnn
from genrepair.models import srcnn


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_vars(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize("variant,channels,n_params,n_stats", [
    # 9 * (C*64 + (D-2)*64*64 + 64*C) conv weights; biases on conv0 and the last conv only
    # (64 + C); BatchNorm scale+shift 2*64 per middle layer. Merged: bias on all D convs.
    ("S", 1, 554_112 + 65 + 15 * 128, 15 * 128),
    ("B", 1, 664_704 + 65 + 18 * 128, 18 * 128),
    ("S-merged", 1, 554_112 + 16 * 64 + 1, 0),
    ("B-merged", 1, 664_704 + 19 * 64 + 1, 0),
    ("S", 3, 556_416 + 67 + 15 * 128, 15 * 128),
    ("B", 3, 667_008 + 67 + 18 * 128, 18 * 128),
])
def test_dncnn_parameter_counts(variant, channels, n_params, n_stats):
  model = models.get("dncnn")(variant=variant, channels=channels)
  v = _abstract_vars(model, (1, 40, 40, channels))
  assert _count(v["params"]) == n_params
  assert _count(v.get("batch_stats", {})) == n_stats
  # The docstring table's numbers, spelled out.
  table = {("S", 1): 556_097, ("B", 1): 667_073, ("S-merged", 1): 555_137,
           ("B-merged", 1): 665_921, ("S", 3): 558_403, ("B", 3): 669_379}
  assert n_params == table[(variant, channels)]


def test_dncnn_structure_matches_the_paper():
  v = _abstract_vars(dncnn.Model(), (1, 40, 40, 1))["params"]
  assert sorted(k for k in v if k.startswith("bn")) == sorted(f"bn{i}" for i in range(1, 16))
  assert sorted(k for k in v if k.startswith("conv")) == sorted(f"conv{i}" for i in range(17))
  assert "bias" in v["conv0"] and "bias" in v["conv16"]
  assert "bias" not in v["conv1"]  # BatchNorm's shift replaces it
  # No BN on the first and last layers (bn1 .. bn15 above).
  merged = _abstract_vars(dncnn.Model(variant="B-merged"), (1, 40, 40, 1))["params"]
  assert sorted(merged) == sorted(f"conv{i}" for i in range(20))
  assert all(merged[k]["kernel"].shape[:2] == (3, 3) for k in merged)


def test_dncnn_residual_semantics_and_jit():
  model = dncnn.Model(variant="S-merged", depth=5, features=16, channels=3)
  y = jax.random.uniform(jax.random.key(1), (2, 23, 17, 3))
  v = model.init(jax.random.key(0), y, train=False)
  noise = jax.jit(lambda v, y: model.apply(v, y, train=False))(v, y)
  clean = jax.jit(lambda v, y: model.apply(v, y, method="denoise"))(v, y)
  assert noise.shape == clean.shape == y.shape  # zero 'same' padding keeps H, W
  np.testing.assert_allclose(clean, y - noise, atol=1e-6)
  assert float(jnp.std(noise)) > 0
  # Eager and jitted agree.
  np.testing.assert_allclose(model.apply(v, y, train=False), noise, atol=1e-5)


def test_dncnn_batch_norm_train_and_eval():
  model = dncnn.Model(depth=4, features=8)
  y = jax.random.uniform(jax.random.key(1), (4, 12, 12, 1))
  v = model.init(jax.random.key(0), y, train=False)
  out, updates = model.apply(v, y, train=True, mutable=["batch_stats"])
  assert out.shape == y.shape
  # Batch statistics moved away from the init values (mean 0).
  assert float(jnp.max(jnp.abs(updates["batch_stats"]["bn1"]["mean"]))) > 0
  assert model.apply(v, y, train=False).shape == y.shape


def test_srcnn_parameter_counts():
  # f1^2*C*n1 + n1 + f2^2*n1*n2 + n2 + f3^2*n2*C + C with n1, n2 = 64, 32.
  expect = {("9-1-5", 1): 8_129, ("9-3-5", 1): 24_513, ("9-5-5", 1): 57_281,
            ("9-1-5", 3): 20_099, ("9-3-5", 3): 36_483, ("9-5-5", 3): 69_251}
  for (variant, c), n in expect.items():
    f1, f2, f3 = srcnn.VARIANTS[variant]["kernel_sizes"]
    assert n == f1 * f1 * c * 64 + 64 + f2 * f2 * 64 * 32 + 32 + f3 * f3 * 32 * c + c
    model = models.get("srcnn")(variant=variant, channels=c)
    assert _count(_abstract_vars(model, (1, 33, 33, c))["params"]) == n, (variant, c)


def test_srcnn_weight_inits_have_their_scales():
  # 'paper': N(0, 0.001) (Sec. 4.1); 'he': N(0, 2 / fan_in); biases zero in both.
  for name, std in [("paper", lambda fan_in: 0.001), ("he", lambda fan_in: (2 / fan_in) ** 0.5)]:
    p = srcnn.Model(variant="9-5-5", weight_init=name).init(
        jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    for layer, fan_in in [("conv1", 81), ("conv2", 25 * 64), ("conv3", 25 * 32)]:
      k = np.asarray(p[layer]["kernel"])
      # He normal in flax is a truncated normal with this std.
      np.testing.assert_allclose(k.std(), std(fan_in), rtol=0.1)
      assert abs(k.mean()) < 0.1 * std(fan_in) and not np.asarray(p[layer]["bias"]).any()


@pytest.mark.parametrize("padding", ["EDGE", "SAME"])
def test_srcnn_output_shape_equals_input(padding):
  model = srcnn.Model(variant="9-5-5", padding=padding)
  x = jnp.zeros((2, 31, 24, 1))
  out = jax.eval_shape(lambda v: model.apply(v, x), _abstract_vars(model, x.shape))
  assert out.shape == x.shape


def test_srcnn_valid_padding_shrinks_like_the_paper():
  # Training in the paper: 33x33 sub-images -> 21x21 outputs for 9-1-5.
  model = srcnn.Model(padding="VALID")
  x = jnp.zeros((1, 33, 33, 1))
  out = jax.eval_shape(lambda v: model.apply(v, x), _abstract_vars(model, x.shape))
  assert out.shape == (1, 21, 21, 1)


def test_srcnn_padding_modes_differ_only_at_borders():
  x = jax.random.uniform(jax.random.key(2), (1, 40, 36, 1))
  edge = srcnn.Model(variant="9-5-5", padding="EDGE")
  zero = srcnn.Model(variant="9-5-5", padding="SAME")
  v = edge.init(jax.random.key(0), x)
  # Larger weights so the border differences are well above float noise.
  v = jax.tree.map(lambda a: a * 100.0, v)
  f = jax.jit(lambda v, x, m: m.apply(v, x), static_argnums=2)
  a, b = np.asarray(f(v, x, edge)), np.asarray(f(v, x, zero))
  r = (9 + 5 + 5 - 3) // 2  # receptive-field radius: 8 pixels
  np.testing.assert_allclose(a[:, r:-r, r:-r], b[:, r:-r, r:-r], rtol=1e-5, atol=1e-6)
  for border in (a[:, :r] - b[:, :r], a[:, -r:] - b[:, -r:],
                 a[:, :, :r] - b[:, :, :r], a[:, :, -r:] - b[:, :, -r:]):
    assert np.max(np.abs(border)) > 1e-3
  # The interior equals the VALID output, which never sees padding.
  valid = srcnn.Model(variant="9-5-5", padding="VALID")
  np.testing.assert_allclose(f(v, x, valid), a[:, r:-r, r:-r], rtol=1e-5, atol=1e-6)


def test_srcnn_edge_padding_matches_a_numpy_reference():
  # One 3x3 layer model (kernel sizes 3-1-1) vs an explicit replicate-pad correlation.
  model = srcnn.Model(kernel_sizes=(3, 1, 1), features=(2, 2))
  x = jax.random.uniform(jax.random.key(3), (1, 5, 6, 1))
  v = model.init(jax.random.key(0), x)
  k1 = np.asarray(v["params"]["conv1"]["kernel"], np.float64) * 100
  b1 = np.asarray(v["params"]["conv1"]["bias"], np.float64)
  v["params"]["conv1"]["kernel"] = jnp.asarray(k1, jnp.float32)
  v["params"]["conv2"]["kernel"] = jnp.eye(2)[None, None]
  v["params"]["conv3"]["kernel"] = jnp.ones((1, 1, 2, 1))
  xp = np.pad(np.asarray(x, np.float64)[0, :, :, 0], 1, mode="edge")
  ref = np.zeros((5, 6))
  for o in range(2):
    h = np.full((5, 6), b1[o])
    for dy in range(3):
      for dx in range(3):
        h += k1[dy, dx, 0, o] * xp[dy:dy + 5, dx:dx + 6]
    ref += np.maximum(np.maximum(h, 0) + float(v["params"]["conv2"]["bias"][o]), 0)
  ref += float(v["params"]["conv3"]["bias"][0])
  np.testing.assert_allclose(model.apply(v, x)[0, :, :, 0], ref, rtol=1e-5, atol=1e-6)


def test_bad_options_and_inputs_raise():
  with pytest.raises(ValueError, match="Unknown DnCNN variant"):
    dncnn.Model(variant="C")
  with pytest.raises(ValueError, match="Unknown DnCNN options"):
    dncnn.Model(width=32)
  with pytest.raises(ValueError, match="depth must be >= 2"):
    dncnn.Model(depth=1)
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    dncnn.Model().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  with pytest.raises(ValueError, match="Unknown SRCNN variant"):
    srcnn.Model(variant="9-9-9")
  with pytest.raises(ValueError, match="padding must be one of"):
    srcnn.Model(padding="REFLECT")
  with pytest.raises(ValueError, match="odd"):
    srcnn.Model(kernel_sizes=(9, 2, 5))
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    srcnn.Model().init(jax.random.key(0), jnp.zeros((8, 8, 1)))
  with pytest.raises(ValueError, match="weight_init must be one of"):
    srcnn.Model(weight_init="xavier")
  with pytest.raises(ValueError, match="Did you mean"):
    models.get("dncn")
