"""DCGAN model: pinned parameter counts, output ranges, the paper's N(0, 0.02) init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import models
from genrepair.models import dcgan


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("variant,channels,g_count,d_count,size", [
    ("mnist", 1, 759_681, 138_689, 28),
    ("mnist-small", 1, 347_073, 36_577, 28),
    ("paper64", 3, 12_658_435, 11_036_289, 64),
])
def test_parameter_counts_and_shapes(variant, channels, g_count, d_count, size):
  g, d = models.get("dcgan")(variant=variant, channels=channels)
  z = jnp.zeros((2, 100))
  g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), z, train=False))
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  assert _count(g_vars["params"]) == g_count
  assert _count(d_vars["params"]) == d_count
  out = jax.eval_shape(lambda v: g.apply(v, z, train=False), g_vars)
  assert out.shape == (2, size, size, channels)


def test_paper64_matches_the_paper_projection():
  # Fig. 1 of the paper: z (100) projected and reshaped to 4x4x1024.
  g, _ = dcgan.Model(variant="paper64", channels=3)
  v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 100)), train=False))
  assert v["params"]["project"]["kernel"].shape == (100, 4 * 4 * 1024)


def test_init_is_normal_002_and_outputs_in_range():
  g, d = dcgan.Model()
  z = jax.random.normal(jax.random.key(1), (8, 100))
  g_vars = g.init(jax.random.key(0), z, train=False)
  kernel = np.asarray(g_vars["params"]["project"]["kernel"])
  assert abs(kernel.mean()) < 1e-3
  np.testing.assert_allclose(kernel.std(), 0.02, rtol=0.01)  # 627k samples
  assert "bias" not in g_vars["params"]["project"]  # followed by BatchNorm
  np.testing.assert_array_equal(g_vars["params"]["to_image"]["bias"], 0.0)
  x, _ = g.apply(g_vars, z, train=True, mutable=["batch_stats"])
  assert x.shape == (8, 28, 28, 1)
  assert float(jnp.max(jnp.abs(x))) <= 1.0 and float(jnp.std(x)) > 0
  d_vars = d.init(jax.random.key(2), x, train=False)
  logits = d.apply(d_vars, x, train=False)
  assert logits.shape == (8,)
  # Small init weights: logits near 0, so D starts at ~1/2 and d_minimax at ~2 log 2.
  assert float(jnp.max(jnp.abs(logits))) < 0.5
  # No BatchNorm in the first D layer, BatchNorm in the second (paper Sec. 3).
  assert "BatchNorm_0" in d_vars["batch_stats"] and "BatchNorm_1" not in d_vars["batch_stats"]


def test_bad_inputs_raise():
  _, d = dcgan.Model()
  with pytest.raises(ValueError, match=r"\[B, 28, 28, C\]"):
    d.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
  with pytest.raises(ValueError, match="Unknown DCGAN variant"):
    dcgan.Model(variant="mnist-large")
  with pytest.raises(ValueError, match="image_size"):
    dcgan.Model(image_size=30)
  with pytest.raises(ValueError, match="Did you mean"):
    models.get("dcgam")
