"""genrepair.models.conv: same outputs, gradients and parameters as the plain flax layers.

For every convolution type the models use, ``conv.Conv`` / ``conv.ConvTranspose`` under
``jit`` (default policy, and with the matmul weight gradient forced everywhere) against
``flax.linen.Conv`` / ``ConvTranspose``: forward outputs within 1e-6, input and kernel/bias
gradients within 1e-5 of the gradient's scale, identical initial parameters; on one device
and with the batch sharded over the 8 simulated devices. With ``GENREPAIR_CONV=xla`` (the
XLA forms); ``tests/test_onednn.py`` runs the same cases through oneDNN.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from genrepair import sharding
from genrepair.models import conv
from genrepair.models import dcgan

MATMUL = functools.partial(conv.conv_general_dilated, wgrad="matmul")


@pytest.fixture(autouse=True)
def _xla_backend(monkeypatch):
  """These tests are about the XLA formulations; tests/test_onednn.py covers oneDNN."""
  monkeypatch.setenv("GENREPAIR_CONV", "xla")

# name: (transposed?, layer fields, input shape [B, H, W, Cin]); odd sizes throughout.
CASES = {
    # DnCNN, EDSR, DRRN, U-Net / layers.ConvBlock: 3x3 'SAME', with and without bias.
    "3x3_same": (False, dict(features=5, kernel_size=(3, 3), padding="SAME"), (2, 7, 9, 3)),
    "3x3_same_nobias": (False, dict(features=5, kernel_size=(3, 3), padding="SAME",
                                    use_bias=False), (2, 7, 9, 3)),
    # SRCNN: 9x9 / 5x5 / 1x1, 'VALID' after edge padding (default) or 'SAME'.
    "srcnn_9x9_valid": (False, dict(features=4, kernel_size=(9, 9), padding="VALID"),
                        (2, 13, 15, 1)),
    "srcnn_5x5_valid": (False, dict(features=1, kernel_size=(5, 5), padding="VALID"),
                        (2, 7, 9, 3)),
    "srcnn_9x9_same": (False, dict(features=4, kernel_size=(9, 9), padding="SAME"),
                       (2, 7, 9, 1)),
    "1x1": (False, dict(features=3, kernel_size=(1, 1), padding="VALID"), (2, 7, 9, 4)),
    # SRCNN's reconstruction layer / CycleGAN's 7x7 after reflection padding: 'VALID'
    # with >= 8 input channels, computed padded and cropped (conv._xla_conv).
    "valid_5x5_cin8": (False, dict(features=1, kernel_size=(5, 5), padding="VALID"),
                       (2, 9, 11, 8)),
    "valid_7x4_cin8": (False, dict(features=3, kernel_size=(7, 4), padding="VALID"),
                       (2, 9, 11, 8)),
    # Reconstruction layers with few outputs (conv.is_thin_out: matmul + shifted sum):
    # DnCNN's 3x3 64 -> 1, EDSR's 3x3 -> RGB, an asymmetric explicit padding.
    "thin_3x3_same_to1": (False, dict(features=1, kernel_size=(3, 3), padding="SAME"),
                          (2, 7, 9, 16)),
    "thin_3x3_same_to3_nobias": (False, dict(features=3, kernel_size=(3, 3), padding="SAME",
                                             use_bias=False), (2, 7, 9, 8)),
    "thin_4x3_explicit": (False, dict(features=2, kernel_size=(4, 3),
                                      padding=((2, 1), (0, 2))), (2, 7, 9, 8)),
    # CycleGAN's c7s1-1 output layer: 7x7 to one channel, 'VALID' after reflection padding.
    "thin_7x7_valid_to1": (False, dict(features=1, kernel_size=(7, 7), padding="VALID"),
                           (2, 11, 13, 8)),
    # ESPCN: 5x5 and 3x3 'SAME'.
    "espcn_5x5_same": (False, dict(features=4, kernel_size=(5, 5), padding="SAME"),
                       (2, 7, 9, 1)),
    # DCGAN discriminator: 4x4 stride 2 'SAME', bias on the first layer only.
    "dcgan_d_4x4_s2": (False, dict(features=4, kernel_size=(4, 4), strides=(2, 2),
                                   padding="SAME"), (2, 7, 9, 3)),
    "dcgan_d_4x4_s2_nobias": (False, dict(features=4, kernel_size=(4, 4), strides=(2, 2),
                                          padding="SAME", use_bias=False), (2, 7, 9, 3)),
    # DCGAN generator: transposed 4x4 stride 2 'SAME'.
    "dcgan_g_t4x4_s2": (True, dict(features=4, kernel_size=(4, 4), strides=(2, 2),
                                   padding="SAME", use_bias=False), (2, 7, 9, 3)),
    "dcgan_g_t4x4_s2_bias": (True, dict(features=1, kernel_size=(4, 4), strides=(2, 2),
                                        padding="SAME"), (2, 7, 9, 3)),
    # U-Net up-convolution: transposed 2x2 stride 2 (flax's default padding, and 'VALID').
    "unet_t2x2_s2": (True, dict(features=4, kernel_size=(2, 2), strides=(2, 2)),
                     (2, 7, 9, 6)),
    "t2x2_s2_valid": (True, dict(features=4, kernel_size=(2, 2), strides=(2, 2),
                                 padding="VALID"), (2, 7, 9, 3)),
    # Beyond the models: overlapping odd kernels, explicit padding, kernel dilation, 1-D.
    "t3x3_s2_valid": (True, dict(features=4, kernel_size=(3, 3), strides=(2, 2),
                                 padding="VALID"), (2, 7, 9, 3)),
    "t3x3_explicit_dilated": (True, dict(features=4, kernel_size=(3, 3), strides=(2, 1),
                                         padding=((1, 2), (0, 1)), kernel_dilation=(1, 2)),
                              (2, 7, 9, 3)),
    "3x3_s2_explicit_dilated": (False, dict(features=4, kernel_size=(3, 3), strides=(2, 3),
                                            padding=((2, 0), (1, 3)),
                                            kernel_dilation=(2, 1)), (2, 7, 9, 3)),
    "t1d_4_s2_same": (True, dict(features=4, kernel_size=(4,), strides=(2,), padding="SAME"),
                      (2, 7, 3)),
}

SHARDED = ["3x3_same", "dcgan_d_4x4_s2", "dcgan_g_t4x4_s2", "unet_t2x2_s2",
           "thin_3x3_same_to1", "valid_5x5_cin8"]


def _layers(name):
  """(plain flax layer, conv layer with the default policy, conv layer forcing matmuls)."""
  transposed, fields, _ = CASES[name]
  if transposed:
    return (nn.ConvTranspose(**fields), conv.ConvTranspose(**fields),
            conv.ConvTranspose(**fields, conv_general_dilated=MATMUL))
  return nn.Conv(**fields), conv.Conv(**fields), conv.Conv(**fields, conv_general_dilated=MATMUL)


def _value_and_grads(layer):
  """jit(params, x, cotangent) -> (y, d<y, c>/dparams, d<y, c>/dx)."""

  def loss(params, x, c):
    y = layer.apply({"params": params}, x)
    return jnp.sum(y * c), y

  def fn(params, x, c):
    (_, y), (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, x, c)
    return y, g_params, g_x

  return jax.jit(fn)


def _inputs(name, layer):
  x = jax.random.normal(jax.random.key(1), CASES[name][2])
  params = layer.init(jax.random.key(0), x)["params"]
  # Non-zero bias so that the forward check covers it.
  params = jax.tree.map(lambda p: p + 0.1 if p.ndim == 1 else p, params)
  c = jax.random.normal(jax.random.key(2), jax.eval_shape(layer.apply, {"params": params},
                                                          x).shape)
  return params, x, c


def _assert_close(got, want, rtol, what):
  """Every leaf within ``rtol`` times the leaf's max |value| (and 1e-7 absolute)."""
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape, what
    scale = max(float(np.max(np.abs(w))), 1e-7)
    err = float(np.max(np.abs(g - w)))
    assert err <= rtol * scale, f"{what}: max error {err:.3g}, scale {scale:.3g}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_flax(name):
  plain, fast, matmul = _layers(name)
  x = jax.random.normal(jax.random.key(1), CASES[name][2])
  # Same parameter names, shapes and initial values (same RNG use) as flax.
  want_init = plain.init(jax.random.key(0), x)
  for layer in (fast, matmul):
    got_init = layer.init(jax.random.key(0), x)
    assert jax.tree.structure(got_init) == jax.tree.structure(want_init)
    _assert_close(got_init, want_init, 0.0, f"{name} init")
  params, x, c = _inputs(name, plain)
  y_ref, gp_ref, gx_ref = _value_and_grads(plain)(params, x, c)
  assert float(np.max(np.abs(np.asarray(gx_ref)))) > 0.1  # a real check, not zeros
  for label, layer in (("auto", fast), ("matmul", matmul)):
    y, gp, gx = _value_and_grads(layer)(params, x, c)
    _assert_close(y, y_ref, 1e-6, f"{name} {label} forward")
    _assert_close(gx, gx_ref, 1e-5, f"{name} {label} input gradient")
    _assert_close(gp, gp_ref, 1e-5, f"{name} {label} parameter gradients")


@pytest.mark.parametrize("name", SHARDED)
def test_batch_sharded_over_8_devices(name):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh({"data": -1})
  plain, fast, matmul = _layers(name)
  params, x, c = _inputs(name, plain)
  x, c = (jnp.concatenate([a] * 4) for a in (x, c))  # batch 8
  y_ref, gp_ref, gx_ref = _value_and_grads(plain)(params, x, c)
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  x_s, c_s = jax.device_put(x, batch), jax.device_put(c, batch)
  params_s = jax.device_put(params, sharding.replicated(mesh))
  for label, layer in (("auto", fast), ("matmul", matmul)):
    y, gp, gx = _value_and_grads(layer)(params_s, x_s, c_s)
    assert y.sharding.is_equivalent_to(batch, y.ndim)
    _assert_close(y, y_ref, 1e-6, f"{name} {label} sharded forward")
    _assert_close(gx, gx_ref, 1e-5, f"{name} {label} sharded input gradient")
    _assert_close(gp, gp_ref, 1e-5, f"{name} {label} sharded parameter gradients")


def test_policy_selects_matmul_weight_gradient_for_transposed_convs_only():
  x = jnp.ones((1, 5, 5, 2))

  def uses_custom_vjp(layer):
    params = layer.init(jax.random.key(0), x)
    return "custom_vjp" in str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))

  assert uses_custom_vjp(conv.ConvTranspose(3, (4, 4), strides=(2, 2)))
  assert not uses_custom_vjp(conv.Conv(3, (3, 3)))  # XLA's own rule is faster here
  assert not uses_custom_vjp(conv.Conv(3, (4, 4), strides=(2, 2)))
  assert uses_custom_vjp(conv.Conv(3, (3, 3), conv_general_dilated=MATMUL))
  assert not uses_custom_vjp(conv.ConvTranspose(
      3, (4, 4), strides=(2, 2),
      conv_general_dilated=functools.partial(conv.conv_general_dilated, wgrad="xla")))


def test_bfloat16_gradients_keep_dtypes():
  x = jax.random.normal(jax.random.key(1), (2, 7, 9, 3), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(2), (4, 4, 3, 4), jnp.bfloat16)
  dn = ("NHWC", "HWIO", "NHWC")

  def loss(fn):
    return lambda x, w: jnp.sum(fn(x, w, (1, 1), ((2, 2), (2, 2)), (2, 2), None,
                                   dn).astype(jnp.float32))

  gx, gw = jax.jit(jax.grad(loss(MATMUL), (0, 1)))(x, w)
  rx, rw = jax.jit(jax.grad(loss(lax.conv_general_dilated), (0, 1)))(x, w)
  assert gx.dtype == gw.dtype == jnp.bfloat16
  _assert_close(gx, rx, 1e-2, "bf16 input gradient")
  _assert_close(gw, rw, 1e-2, "bf16 weight gradient")


def test_dcgan_generator_gradients_match_plain_flax(monkeypatch):
  gen = dcgan.Model(variant="mnist-small").generator
  z = jax.random.normal(jax.random.key(0), (4, 100))
  variables = gen.init(jax.random.key(1), z, train=False)

  def grads(params):
    def loss(p):
      y, _ = gen.apply({**variables, "params": p}, z, train=True, mutable=["batch_stats"])
      return jnp.sum(y * jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape))
    return jax.jit(jax.grad(loss))(params)

  fast = grads(variables["params"])
  monkeypatch.setattr(conv, "ConvTranspose", nn.ConvTranspose)  # plain flax layers
  plain = grads(variables["params"])
  assert jax.tree.structure(fast) == jax.tree.structure(plain)
  _assert_close(fast, plain, 1e-5, "DCGAN generator gradients")


def test_errors():
  x, w = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 2, 4))
  dn = ("NHWC", "HWIO", "NHWC")
  with pytest.raises(ValueError, match="feature_group_count"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                              feature_group_count=2)
  with pytest.raises(ValueError, match="channels-last"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW",
                                                                        "NCHW"))
  with pytest.raises(ValueError, match="channels-last"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME")
  with pytest.raises(ValueError, match="wgrad"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, wgrad="fast")
  with pytest.raises(ValueError, match="lhs_dilation"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", (2, 2), dimension_numbers=dn)
  with pytest.raises(ValueError, match="feature_group_count"):
    conv.Conv(4, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="CIRCULAR"):
    conv.ConvTranspose(4, (3, 3), padding="CIRCULAR").init(jax.random.key(0), x)


# The 'split' weight gradient (XLA's rule summed over interleaved batch chunks): layers
# wide enough for the default policy to pick it (Cin, Cout >= SPLIT_MIN_CHANNELS).
SPLIT_CASES = {
    "3x3_same_16": (dict(features=16, kernel_size=(3, 3), padding="SAME"), (16, 9, 7, 16)),
    "4x4_s2_32": (dict(features=32, kernel_size=(4, 4), strides=(2, 2), padding="SAME",
                       use_bias=False), (16, 9, 7, 16)),
}


def test_split_chunk_sizes():
  dncnn = ((32, 40, 40, 64), (3, 3, 64, 64))  # 1,600 pixels per image
  assert conv.split_chunk(*dncnn, device_count=1) == 2  # 4096 // 1600 images
  assert conv.split_chunk(*dncnn, device_count=8) == 16  # 2 images on each of 8 devices
  assert conv.split_chunk(*dncnn, device_count=32) is None  # one chunk only
  assert conv.split_chunk((32, 40, 40, 64), (3, 3, 64, 1), device_count=1) is None
  assert conv.split_chunk((32, 40, 40, 1), (3, 3, 1, 64), device_count=1) is None  # 9 taps
  assert conv.split_chunk((64, 41, 41, 1), (9, 9, 1, 64), device_count=1) == 2  # 81 taps
  assert conv.split_chunk((8, 128, 128, 32), (3, 3, 32, 32), device_count=1) == 1
  # 4 images would fit (4096 // 1024) but do not divide 30: the largest k that does.
  assert conv.split_chunk((30, 32, 32, 64), (3, 3, 64, 64), device_count=1) == 3
  assert conv.split_chunk((6, 40, 40, 64), (3, 3, 64, 64), device_count=4) is None
  # By default D is the devices the traced batch spans: all 8 under jit, 1 inside a
  # shard_map over them (the batch there is one device's shard).
  assert jax.device_count() == 8 and conv.split_chunk(*dncnn) == 16
  mesh = sharding.make_mesh({"data": -1})
  seen = []

  def local(x):
    seen.append(conv.split_chunk(x.shape, dncnn[1]))
    return x

  jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=P("data")))(
      jnp.zeros((64, 40, 40, 64)))
  assert seen == [2]  # 8 images per device: 2 per chunk, as on one device


@pytest.mark.parametrize("name", sorted(SPLIT_CASES))
def test_split_weight_gradient_matches_flax(name):
  fields, shape = SPLIT_CASES[name]
  plain, fast = nn.Conv(**fields), conv.Conv(**fields)
  x = jax.random.normal(jax.random.key(1), shape)
  params = plain.init(jax.random.key(0), x)["params"]
  assert conv.split_chunk(x.shape, params["kernel"].shape) == 8  # 2 chunks of 8 rows

  def uses_split(layer):
    return "_split_conv" in str(jax.make_jaxpr(lambda p: layer.apply({"params": p}, x))(
        params))

  assert uses_split(fast) and not uses_split(plain)
  c = jax.random.normal(jax.random.key(2), jax.eval_shape(plain.apply, {"params": params},
                                                          x).shape)
  y_ref, gp_ref, gx_ref = _value_and_grads(plain)(params, x, c)
  y, gp, gx = _value_and_grads(fast)(params, x, c)
  _assert_close(y, y_ref, 0.0, f"{name} forward")  # the same XLA convolution
  # A transposed convolution (strided layers): the sub-pixel form, summation order only.
  _assert_close(gx, gx_ref, 1e-6, f"{name} input gradient")
  _assert_close(gp, gp_ref, 1e-5, f"{name} parameter gradients")
  # One chunk's gradient alone is far from the whole (the test sees every chunk).
  cfg = conv._Config((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), None)  # pylint: disable=protected-access
  if name == "3x3_same_16":
    half = conv.split_weight_grad(cfg, x[::2], c[::2], params["kernel"], 8)
    assert float(jnp.max(jnp.abs(half - gp_ref["kernel"]))) > 0.1
  with pytest.raises(ValueError, match="does not divide"):
    conv.split_weight_grad(cfg, x, c, params["kernel"], 5)

  # Batch sharded over the 8 devices: same numbers, rows never move between devices
  # (no all-gather / all-to-all / permute), the gradients reduced across devices.
  mesh = sharding.make_mesh({"data": -1})
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  args = (jax.device_put(params, sharding.replicated(mesh)), jax.device_put(x, batch),
          jax.device_put(c, batch))
  y, gp, gx = _value_and_grads(fast)(*args)
  _assert_close(gp, gp_ref, 1e-5, f"{name} sharded parameter gradients")
  _assert_close(gx, gx_ref, 1e-6, f"{name} sharded input gradient")
  hlo = _value_and_grads(fast).lower(*args).compile().as_text()
  for op in ("all-gather(", "all-to-all(", "collective-permute("):
    assert f" {op}" not in hlo, op
  assert " all-reduce(" in hlo


def test_thin_output_layers_take_the_shifted_matmul_form():
  """conv.is_thin_out: stride 1, undilated, Cout * taps <= 64, Cin >= 8; nothing else."""
  dn = ("NHWC", "HWIO", "NHWC")

  def thin(x_shape, w_shape, strides=(1, 1), padding="SAME", wgrad="auto", dilation=None):
    x, w = jnp.ones(x_shape), jnp.ones(w_shape)
    f = functools.partial(conv.conv_general_dilated, wgrad=wgrad)
    return "_thin_conv" in str(jax.make_jaxpr(lambda x, w: f(
        x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn))(x, w))

  assert thin((2, 9, 9, 64), (3, 3, 64, 1))              # DnCNN's last layer
  assert thin((2, 21, 21, 32), (5, 5, 32, 1), padding="VALID")  # SRCNN's last layer
  assert thin((2, 9, 9, 8), (3, 3, 8, 3))                # 27 columns
  assert thin((2, 34, 34, 16), (7, 7, 16, 1), padding="VALID")  # CycleGAN's c7s1-1: 49
  assert thin((2, 9, 9, 8), (4, 4, 8, 4))                # 64 columns
  assert not thin((2, 9, 9, 8), (3, 3, 8, 8))            # 72 columns
  assert not thin((2, 9, 9, 7), (3, 3, 7, 1))            # too few input channels
  assert not thin((2, 9, 9, 64), (3, 3, 64, 1), strides=(2, 2))
  assert not thin((2, 9, 9, 64), (3, 3, 64, 1), dilation=(2, 2))
  assert not thin((2, 9, 9, 64), (3, 3, 64, 1), wgrad="xla")
  assert not thin((2, 9, 9, 64), (3, 3, 64, 1), padding=((-1, 1), (1, 1)))
  assert not thin((2, 9, 9, 1), (3, 3, 1, 64))            # the first layer: XLA's kernel
  # The forward is the convolution (up to summation order), on an asymmetric padding.
  x = jax.random.normal(jax.random.key(1), (3, 6, 8, 16))
  w = jax.random.normal(jax.random.key(2), (4, 3, 16, 2))
  pads = ((2, 0), (1, 3))
  got = conv.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=dn)
  want = lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=dn,
                                  precision=lax.Precision.HIGHEST)
  assert got.shape == want.shape == (3, 5, 10, 2)
  _assert_close(got, want, 1e-6, "thin forward")


def test_split_policy_by_name_and_in_the_dncnn_step_jaxpr():
  x = jax.random.normal(jax.random.key(1), (16, 5, 5, 2))
  w = jax.random.normal(jax.random.key(2), (3, 3, 2, 3))
  dn = ("NHWC", "HWIO", "NHWC")
  split = functools.partial(conv.conv_general_dilated, wgrad="split")
  # Forced by name, the split applies to any width (min_channels 1).
  got = jax.jit(jax.grad(lambda w: jnp.sum(split(x, w, (1, 1), "SAME",
                                                 dimension_numbers=dn) ** 2)))(w)
  want = jax.jit(jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2)))(w)
  _assert_close(got, want, 1e-5, "forced split")
  assert "_split_conv" in str(jax.make_jaxpr(
      lambda w: split(x, w, (1, 1), "SAME", dimension_numbers=dn))(w))


def test_valid_convolutions_are_computed_padded_and_cropped():
  x = jax.random.normal(jax.random.key(1), (2, 9, 11, 8))
  w = jax.random.normal(jax.random.key(2), (5, 4, 8, 4))  # 80 columns: not thin
  dn = ("NHWC", "HWIO", "NHWC")
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=dn))(x, w))
  assert "padding=((2, 2), (1, 2))" in jaxpr and "slice" in jaxpr
  y = conv.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
  want = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
  assert y.shape == want.shape == (2, 5, 8, 4)
  _assert_close(y, want, 1e-6, "VALID as padded + crop")
  # Not for one input channel (slower there) and never with wgrad='xla'.
  for args in ((x[..., :1], w[:, :, :1]), (x, w)):
    xla = functools.partial(conv.conv_general_dilated, wgrad="xla") if args[0].shape[-1] == 8 \
        else conv.conv_general_dilated
    jaxpr = str(jax.make_jaxpr(lambda x, w, f=xla: f(x, w, (1, 1), "VALID",
                                                      dimension_numbers=dn))(*args))
    assert "padding=((0, 0), (0, 0))" in jaxpr and "slice" not in jaxpr


@pytest.mark.parametrize("name", ["3x3_same", "dcgan_d_4x4_s2", "dcgan_g_t4x4_s2",
                                  "3x3_s2_explicit_dilated", "t3x3_explicit_dilated",
                                  "srcnn_5x5_valid", "valid_5x5_cin8",
                                  "thin_4x3_explicit"])
def test_second_order_gradients_match_flax(name):
  """Gradient-penalty style terms (WGAN-GP, R1): d/dparams of ||d<layer(x), c>/dx||^2.

  The input gradient goes through ``conv.input_grad`` (itself a ``conv_general_dilated``),
  so these second-order terms use this module's weight gradients."""
  plain, fast, matmul = _layers(name)
  params, x, c = _inputs(name, plain)

  def penalty(layer):
    def fn(params, x):
      gx = jax.grad(lambda x: jnp.sum(layer.apply({"params": params}, x) * c))(x)
      return jnp.sum(gx ** 2) + jnp.sum(jnp.sin(gx) * x)  # depends on x and on gx
    return jax.jit(jax.grad(fn, argnums=(0, 1)))

  want = penalty(plain)(params, x)
  assert float(np.max(np.abs(np.asarray(want[0]["kernel"])))) > 0.1
  for label, layer in (("auto", fast), ("matmul", matmul)):
    _assert_close(penalty(layer)(params, x), want, 1e-5, f"{name} {label} second order")



def test_subpixel_form_of_input_dilated_convolutions_equals_lax():
  """conv.subpixel_conv: every phase geometry (1-, 2- and 3-D; phases no tap meets;
  negative padding), equal to lax's dilated convolution up to summation order."""
  rng = np.random.default_rng(0)
  cases = [((7, 9), (4, 4), (2, 2), ((2, 2), (2, 2))),      # DCGAN's 4x4 stride 2 'SAME'
           ((7,), (1,), (3,), ((0, 0),)),                     # 2 of 3 phases without taps
           ((5, 6), (2, 3), (3, 2), ((-1, 2), (1, -1))),      # cropping pads
           ((4, 3, 5), (3, 2, 4), (2, 3, 1), ((1, 0), (2, 1), (0, 3)))]
  for _ in range(10):
    n = int(rng.integers(1, 4))
    kernel = tuple(int(k) for k in rng.integers(1, 6, n))
    cases.append((tuple(int(s) for s in rng.integers(1, 7, n)), kernel,
                  tuple(int(d) for d in rng.integers(2, 4, n)),
                  tuple((int(rng.integers(-1, k + 1)), int(rng.integers(-1, k + 1)))
                        for k in kernel)))
  checked = 0
  for size, kernel, dilation, pads in cases:
    out = [(s - 1) * d + 1 + lo + hi - k + 1
           for s, d, (lo, hi), k in zip(size, dilation, pads, kernel)]
    if min(out) <= 0:
      continue
    n = len(size)
    x = jnp.asarray(rng.standard_normal((2, *size, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, 3, 8)), jnp.float32)
    cfg = conv._Config((1,) * n, pads, dilation, (1,) * n, None)  # pylint: disable=protected-access
    assert conv.is_subpixel(cfg, w.shape)
    want = lax.conv_general_dilated(x, w, (1,) * n, pads, lhs_dilation=dilation,
                                    dimension_numbers=conv._channels_last(n),  # pylint: disable=protected-access
                                    precision=lax.Precision.HIGHEST)
    got = jax.jit(functools.partial(conv.subpixel_conv, cfg))(x, w)
    assert got.shape == want.shape, (size, kernel, dilation, pads)
    _assert_close(got, want, 1e-6, f"sub-pixel {size} {kernel} {dilation} {pads}")
    checked += 1
  assert checked >= 10


def test_transposed_layers_run_as_subpixel_convolutions(monkeypatch):
  """The policy: no input-dilated convolution left in the forward of a transposed layer
  with >= 8 outputs (DCGAN's up0), XLA's form below that and with ``SUBPIXEL`` off."""
  x = jnp.ones((2, 7, 7, 16))

  def dilated_convs(features):
    layer = conv.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME",
                               use_bias=False)
    params = layer.init(jax.random.key(0), x)
    return str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params)).count(
        "lhs_dilation=(2, 2)")

  assert dilated_convs(8) == 0
  assert dilated_convs(7) == 1
  monkeypatch.setattr(conv, "SUBPIXEL", False)
  assert dilated_convs(8) == 1


def _all_reduce_shapes(hlo: str) -> list[str]:
  """Array shapes of every all-reduce of a compiled module's text."""
  shapes = []
  for line in hlo.splitlines():
    if " all-reduce(" in line or " all-reduce-start(" in line:
      shapes += re.findall(r"f32\[[\d,]*\]", line.split(" all-reduce")[0])
  return shapes


@pytest.mark.parametrize("concat", [True, False])
def test_transposed_kernel_gradient_is_one_product_and_one_all_reduce_buffer(
    monkeypatch, concat):
  # A 4x4 stride-2 transposed conv, batch sharded over 8 devices: with WGRAD_CONCAT its
  # kernel gradient is one [Cin, 16 * Cout] product, reduced as one buffer; without, one
  # [Cin, Cout] buffer per tap. Both equal jax.grad of the plain layer.
  monkeypatch.setattr(conv, "WGRAD_CONCAT", concat)
  mesh = sharding.make_mesh({"data": -1})
  layer = conv.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)
  plain = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)
  x = jax.random.normal(jax.random.key(0), (8, 6, 6, 3))
  params = layer.init(jax.random.key(1), x)
  c = jax.random.normal(jax.random.key(2), (8, 12, 12, 5))
  loss = lambda m: lambda p, x: jnp.sum(m.apply(p, x) * c)
  x_s = jax.device_put(x, NamedSharding(mesh, P(sharding.DATA_AXIS)))
  grad = jax.jit(jax.grad(loss(layer)))
  _assert_close(grad(params, x_s), jax.grad(loss(plain))(params, x), 1e-5, "kernel gradient")
  shapes = _all_reduce_shapes(grad.lower(params, x_s).compile().as_text())
  assert shapes == (["f32[3,80]"] if concat else ["f32[3,5]"] * 16), shapes
