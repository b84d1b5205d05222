"""genrepair.kernels.onednn: oneDNN convolutions equal XLA's, to third order, sharded.

Every layer type of ``tests/test_conv.py`` (all the models' convolutions, plus strided,
dilated and explicitly padded ones) through ``conv.Conv`` / ``conv.ConvTranspose`` with
``GENREPAIR_CONV=onednn``, against the plain flax layers: forward within 1e-6, first
derivatives within 1e-5 and gradient-penalty-style second derivatives within 1e-5 of their
scale; with the batch sharded over 8 devices each device runs oneDNN on its own rows and
the weight gradient is one all-reduce. Skipped when the kernels cannot be built here
(no ``onednn-cpu-gomp`` wheel or no g++), unless ``GENREPAIR_REQUIRE_ONEDNN=1`` (CI).
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from genrepair import sharding
from genrepair.kernels import onednn
from genrepair.models import conv
from tests import test_conv

if not onednn.available():
  if os.environ.get("GENREPAIR_REQUIRE_ONEDNN") == "1":
    onednn.load()  # raises, with the reason
  pytest.skip("oneDNN kernels unavailable here", allow_module_level=True)

CASES_2D = sorted(k for k, v in test_conv.CASES.items() if len(v[2]) == 4)
# Layers policy 'auto' keeps in XLA's faster forms: few output channels (conv.is_thin_out)
# and unpadded 1x1 convolutions (a matmul).
XLA_FORMS = {"1x1", "valid_5x5_cin8"} | {k for k in CASES_2D if k.startswith("thin_")}
NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _onednn_backend(monkeypatch):
  monkeypatch.setenv("GENREPAIR_CONV", "onednn")


def _uses_onednn(fn, *args) -> int:
  """oneDNN calls computing a layer's output in ``fn``'s HLO: forward, or backward-data for
  a transposed layer (a fresh trace, since GENREPAIR_CONV is read when tracing)."""
  text = jax.jit(lambda *a: fn(*a)).lower(*args).as_text()
  return text.count(onednn.TARGETS["fwd"]) + text.count(onednn.TARGETS["bwd_data"])


# Batch parts per call (genrepair.kernels.onednn.parts_per_call; 1 under the suite's 8
# devices on 2 cores): 2 splits these batches of 2 (the parts run on XLA's pool threads and
# the weight gradient adds them), 5 leaves fewer rows than parts (OpenMP threads instead).
PARTS = [1, 2, 5]


@pytest.fixture(params=PARTS, ids=lambda p: f"parts{p}")
def parts(request, monkeypatch):
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", str(request.param))
  return request.param


@pytest.mark.parametrize("name", CASES_2D)
def test_layers_match_flax(name, parts):
  plain, fast, _ = test_conv._layers(name)
  params, x, c = test_conv._inputs(name, plain)
  assert _uses_onednn(lambda p, x: fast.apply({"params": p}, x), params, x) == (
      name not in XLA_FORMS)
  y_ref, gp_ref, gx_ref = test_conv._value_and_grads(plain)(params, x, c)
  y, gp, gx = test_conv._value_and_grads(fast)(params, x, c)
  test_conv._assert_close(y, y_ref, 1e-6, f"{name} forward")
  test_conv._assert_close(gx, gx_ref, 1e-5, f"{name} input gradient")
  test_conv._assert_close(gp, gp_ref, 1e-5, f"{name} parameter gradients")


@pytest.mark.parametrize("name", ["3x3_same", "dcgan_d_4x4_s2", "dcgan_g_t4x4_s2",
                                  "3x3_s2_explicit_dilated", "t3x3_explicit_dilated",
                                  "srcnn_5x5_valid", "thin_4x3_explicit"])
def test_second_order_gradients_match_flax(name, parts):
  """d/d(params, x) of ||d<layer(x), c>/dx||^2 + <sin(dx), x> (WGAN-GP / R1 terms)."""
  plain, fast, _ = test_conv._layers(name)
  params, x, c = test_conv._inputs(name, plain)

  def penalty(layer):
    def fn(params, x):
      gx = jax.grad(lambda x: jnp.sum(layer.apply({"params": params}, x) * c))(x)
      return jnp.sum(gx ** 2) + jnp.sum(jnp.sin(gx) * x)
    return jax.jit(jax.grad(fn, argnums=(0, 1)))

  want = penalty(plain)(params, x)
  assert float(np.max(np.abs(np.asarray(want[0]["kernel"])))) > 0.1
  test_conv._assert_close(penalty(fast)(params, x), want, 1e-5, f"{name} second order")


def test_third_order_of_the_primitives_matches_lax(parts):
  geo = onednn.Geometry((2, 1), ((1, 2), (0, 1)), (1, 2))
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

  def ref(x, w):
    return lax.conv_general_dilated(x, w, geo.strides, geo.pads, rhs_dilation=geo.dilation,
                                    dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)

  def chain(f):
    inner = lambda x, w: jnp.sum(jnp.tanh(f(x, w)))
    second = lambda x, w: jnp.sum(jax.grad(inner, (0, 1))(x, w)[1] ** 2)
    third = lambda x, w: jnp.sum(jnp.cos(jax.grad(second, 0)(x, w)))
    return jax.jit(jax.grad(third, (0, 1)))(x, w)

  got, want = chain(lambda x, w: onednn.conv(geo, x, w)), chain(ref)
  test_conv._assert_close(got, want, 1e-4, "third order")


@pytest.mark.parametrize("name", test_conv.SHARDED)
def test_batch_sharded_over_8_devices(name, parts):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh({"data": -1})
  plain, fast, _ = test_conv._layers(name)
  params, x, c = test_conv._inputs(name, plain)
  x, c = (jnp.concatenate([a] * 4) for a in (x, c))  # batch 8
  y_ref, gp_ref, gx_ref = test_conv._value_and_grads(plain)(params, x, c)
  batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
  x_s, c_s = jax.device_put(x, batch), jax.device_put(c, batch)
  params_s = jax.device_put(params, sharding.replicated(mesh))
  y, gp, gx = test_conv._value_and_grads(fast)(params_s, x_s, c_s)
  assert y.sharding.is_equivalent_to(batch, y.ndim)
  assert gx.sharding.is_equivalent_to(batch, gx.ndim)
  test_conv._assert_close(y, y_ref, 1e-6, f"{name} sharded forward")
  test_conv._assert_close(gx, gx_ref, 1e-5, f"{name} sharded input gradient")
  test_conv._assert_close(gp, gp_ref, 1e-5, f"{name} sharded parameter gradients")


def test_compiled_step_runs_oneDNN_on_local_rows_and_all_reduces_the_kernel_gradient():
  mesh = sharding.make_mesh({"data": -1})
  geo = onednn.Geometry((1, 1), ((1, 1), (1, 1)), (1, 1))
  x = jax.device_put(jnp.ones((16, 6, 6, 4)), NamedSharding(mesh, P("data")))
  w = jax.device_put(jnp.ones((3, 3, 4, 5)), NamedSharding(mesh, P()))
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv(geo, x, w) ** 2), (0, 1)))
  text = grad.lower(x, w).compile().as_text()
  calls = [line for line in text.splitlines() if "custom_call_target=\"genrepair_onednn" in line]
  assert len(calls) == 3, calls  # forward, input gradient, weight gradient
  # Each device's calls see its own 2 rows, never the gathered batch of 16.
  assert all(re.search(r"f32\[2,6,6,[45]\]", line) for line in calls), calls
  assert "all-gather" not in text and "all-to-all" not in text
  assert len(re.findall(r"= f32\[3,3,4,5\]\{[^}]*\} all-reduce", text)) == 1
  gx, gw = grad(x, w)
  # d/dw sum(y^2) = sum over the batch, computed on 8 devices and all-reduced.
  y = lax.conv_general_dilated(jnp.ones((16, 6, 6, 4)), jnp.ones((3, 3, 4, 5)), (1, 1),
                               ((1, 1), (1, 1)), dimension_numbers=NHWC)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      jnp.ones((16, 6, 6, 4)), w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC),
                   jnp.ones((3, 3, 4, 5)))
  np.testing.assert_allclose(np.asarray(gw), np.asarray(vjp(2 * y)[0]), rtol=1e-6)


def test_policy_and_backend_selection(monkeypatch):
  layer = conv.Conv(4, (3, 3))
  x = jnp.ones((2, 5, 5, 3))
  params = layer.init(jax.random.key(0), x)
  apply = lambda p, x: layer.apply(p, x)
  assert _uses_onednn(apply, params, x) == 1
  monkeypatch.setenv("GENREPAIR_CONV", "xla")
  assert _uses_onednn(apply, params, x) == 0
  monkeypatch.setenv("GENREPAIR_CONV", "auto")
  assert _uses_onednn(apply, params, x) == 1
  # Explicit XLA formulations, other dtypes and other ranks stay in XLA.
  explicit = conv.Conv(4, (3, 3), conv_general_dilated=test_conv.MATMUL)
  assert _uses_onednn(lambda p, x: explicit.apply(p, x), params, x) == 0
  half = conv.Conv(4, (3, 3), dtype=jnp.bfloat16)
  assert _uses_onednn(lambda p, x: half.apply(p, x), params, x) == 0
  conv1d = conv.Conv(4, (3,))
  x1 = jnp.ones((2, 5, 3))
  assert _uses_onednn(lambda p, x: conv1d.apply(p, x), conv1d.init(jax.random.key(0), x1),
                      x1) == 0
  monkeypatch.setenv("GENREPAIR_CONV", "fast")
  with pytest.raises(ValueError, match="GENREPAIR_CONV must be one of"):
    layer.apply(params, x)


@pytest.mark.parametrize("transposed,fields,onednn_calls", [
    (False, dict(features=3, kernel_size=(3, 3), padding=((3, 1), (1, 1))), 1),  # > K - 1
    (False, dict(features=3, kernel_size=(3, 3), padding=((-1, 1), (1, 1))), 0),  # negative
    (True, dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding="VALID"), 1),
    # Transposed with padding > K - 1: oneDNN's padding K - 1 - p would be negative.
    (True, dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding=((3, 2), (1, 1))), 0),
])
def test_wide_and_negative_paddings(transposed, fields, onednn_calls):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  plain = (nn.ConvTranspose if transposed else nn.Conv)(**fields)
  fast = (conv.ConvTranspose if transposed else conv.Conv)(**fields)
  x = jax.random.normal(jax.random.key(1), (2, 7, 8, 4))
  params = plain.init(jax.random.key(0), x)
  assert _uses_onednn(lambda p, x: fast.apply(p, x), params, x) == onednn_calls
  test_conv._assert_close(fast.apply(params, x), plain.apply(params, x), 1e-6, "forward")
  loss = lambda layer: jax.grad(lambda p: jnp.sum(jnp.sin(layer.apply(p, x))))
  test_conv._assert_close(loss(fast)(params), loss(plain)(params), 1e-5, "gradients")


def test_parts_per_call_split_the_cores_over_the_devices(monkeypatch):
  monkeypatch.delenv("GENREPAIR_ONEDNN_PARTS", raising=False)
  monkeypatch.delenv("GENREPAIR_ONEDNN_THREADS", raising=False)
  monkeypatch.setattr(sharding, "usable_cores", lambda: 16)
  assert onednn.parts_per_call() == 2  # 16 cores, 8 devices
  assert onednn.threads_per_call() == 1
  monkeypatch.setattr(sharding, "usable_cores", lambda: 4)
  assert onednn.parts_per_call() == 1
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "6")
  monkeypatch.setenv("GENREPAIR_ONEDNN_THREADS", "3")
  assert (onednn.parts_per_call(), onednn.threads_per_call()) == (6, 3)
  assert "in 6 parts on XLA's threads, 3 OpenMP threads per part" in conv.backend_summary()
  for name in ("GENREPAIR_ONEDNN_PARTS", "GENREPAIR_ONEDNN_THREADS"):
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError, match=name + " must be a positive integer, got '0'"):
      onednn.parts_per_call() if "PARTS" in name else onednn.threads_per_call()
    monkeypatch.setenv(name, "1")


def test_parts_are_reproducible_and_sum_in_a_fixed_order(monkeypatch):
  """Batch 7 in 3 parts (rows 3 + 2 + 2): the same bits on every run, whichever thread runs
  which part; the weight gradient is the in-order sum of the parts' gradients."""
  geo = onednn.Geometry((1, 1), ((1, 1), (1, 1)), (1, 1))
  x = jax.random.normal(jax.random.key(0), (7, 9, 8, 16))
  g = jax.random.normal(jax.random.key(1), (7, 9, 8, 32))
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "3")
  wgrad = jax.jit(lambda x, g: onednn.conv_weight_grad(geo, x, g, (3, 3)))
  runs = [np.asarray(wgrad(x, g)) for _ in range(5)]
  assert all(np.array_equal(r, runs[0]) for r in runs)
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "1")
  whole = jax.jit(lambda x, g: onednn.conv_weight_grad(geo, x, g, (3, 3)))
  by_part = [np.asarray(whole(x[a:b], g[a:b])) for a, b in ((0, 3), (3, 5), (5, 7))]
  np.testing.assert_array_equal(runs[0], (by_part[0] + by_part[1]) + by_part[2])
  assert not np.array_equal(runs[0], np.asarray(whole(x, g)))  # the split did happen


def test_weight_gradient_parts_are_capped(monkeypatch):
  """16 parts asked for, batch 20: the weight gradient takes onednn.MAX_WEIGHT_PARTS = 8
  parts (rows 3 x 4 + 2 x 4) with 16 // 8 = 2 OpenMP threads each, summed in order."""
  geo = onednn.Geometry((1, 1), ((1, 1), (1, 1)), (1, 1))
  x = jax.random.normal(jax.random.key(0), (20, 6, 5, 8))
  g = jax.random.normal(jax.random.key(1), (20, 6, 5, 16))
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "16")
  got = np.asarray(jax.jit(lambda x, g: onednn.conv_weight_grad(geo, x, g, (3, 3)))(x, g))
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "1")
  monkeypatch.setenv("GENREPAIR_ONEDNN_THREADS", "2")
  whole = jax.jit(lambda x, g: onednn.conv_weight_grad(geo, x, g, (3, 3)))
  bounds = np.cumsum([0, 3, 3, 3, 3, 2, 2, 2, 2])
  assert onednn.MAX_WEIGHT_PARTS == len(bounds) - 1
  total = np.asarray(whole(x[:3], g[:3]))
  for a, b in zip(bounds[1:-1], bounds[2:]):
    total = total + np.asarray(whole(x[a:b], g[a:b]))
  np.testing.assert_array_equal(got, total)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (1, 1), geo.pads,
                                                      dimension_numbers=NHWC,
                                                      precision=lax.Precision.HIGHEST),
                   jnp.zeros((3, 3, 8, 16)))
  test_conv._assert_close(got, vjp(g)[0], 1e-5, "capped weight gradient")


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_a_failing_call_raises_instead_of_hanging(n_parts, monkeypatch):
  """Every part fails (an output shape that does not fit the geometry): the error comes
  back through XLA, whoever ran the parts."""
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", str(n_parts))
  geo = onednn.Geometry((1, 1), ((1, 1), (1, 1)), (1, 1))
  bad = jax.jit(lambda x, w: onednn._call("fwd", geo, (4, 9, 6, 5), x, w))  # Ho is 6
  with pytest.raises(Exception, match="genrepair oneDNN conv: could not create a primitive"):
    bad(jnp.ones((4, 6, 6, 3)), jnp.ones((3, 3, 3, 5))).block_until_ready()


def test_parts_of_concurrent_calls_share_a_busy_pool(monkeypatch):
  """Eight independent convolutions in one program (XLA runs them concurrently on its
  pool threads), each split into 4 parts that are scheduled on that same pool: every call
  finishes (no thread waits for a queued task) and each equals XLA's convolution."""
  monkeypatch.setenv("GENREPAIR_ONEDNN_PARTS", "4")
  geo = onednn.Geometry((1, 1), ((1, 1), (1, 1)), (1, 1))
  xs = jax.random.normal(jax.random.key(0), (8, 6, 10, 10, 8))
  ws = jax.random.normal(jax.random.key(1), (8, 3, 3, 8, 8))
  many = jax.jit(lambda xs, ws: [jnp.tanh(onednn.conv(geo, xs[i], ws[i])) for i in range(8)])
  for _ in range(3):
    got = many(xs, ws)
  for i in range(8):
    want = jnp.tanh(lax.conv_general_dilated(xs[i], ws[i], (1, 1), geo.pads,
                                             dimension_numbers=NHWC,
                                             precision=lax.Precision.HIGHEST))
    test_conv._assert_close(got[i], want, 1e-6, f"call {i}")


def test_build_errors_name_the_cause(tmp_path, monkeypatch):
  monkeypatch.setenv("CXX", "/bin/false")
  with pytest.raises(onednn.OneDNNUnavailable, match="building onednn_conv.cc failed"):
    onednn.build(tmp_path)
  assert not list(tmp_path.iterdir())  # no half-written library left behind
  monkeypatch.setattr(onednn, "RUNTIME_DIST", "onednn-not-installed")
  with pytest.raises(onednn.OneDNNUnavailable, match="onednn-not-installed"):
    onednn.build(tmp_path)


def test_build_is_cached_by_content(tmp_path):
  first = onednn.build(tmp_path)
  mtime = first.stat().st_mtime_ns
  assert onednn.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
  assert onednn.version().startswith("3.")


def test_hlo_flops_counts_every_call_of_the_step():
  geo = onednn.Geometry((2, 1), ((1, 1), (0, 2)), (1, 1))
  x, w = jnp.ones((4, 7, 6, 3)), jnp.ones((3, 3, 3, 5))
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv(geo, x, w) ** 2), (0, 1)))
  # Output rows 0..3 read input rows 2o-1..2o+1: 2 + 3 + 3 + 2 taps meet rows 0..6;
  # output columns 0..5 read columns o..o+2 of the input padded by 2 on the right:
  # 3 + 3 + 3 + 3 + 2 + 1 taps meet columns 0..5.
  per_call = 2 * 4 * 5 * 3 * (2 + 3 + 3 + 2) * (3 + 3 + 3 + 3 + 2 + 1)
  assert onednn.hlo_flops(grad.lower(x, w).compile().as_text()) == 3 * per_call
  assert onednn.hlo_flops(jax.jit(jnp.sin).lower(x).compile().as_text()) == 0.0
