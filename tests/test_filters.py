"""The JAX median filters (genrepair/filters.py) against SciPy and the NumPy baseline, and
DnCNN's extra inputs and zero-initialised last layer that two-stage models use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data

from genrepair import baselines, degradations, filters
from genrepair.models import dncnn


def test_median3x3_equals_scipy_reflect():
  x = np.random.default_rng(0).random((2, 13, 17, 2)).astype(np.float32)
  want = np.stack([scipy.ndimage.median_filter(x[b], size=(3, 3, 1), mode="reflect")
                   for b in range(2)])
  np.testing.assert_array_equal(np.asarray(jax.jit(filters.median3x3)(x)), want)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    filters.median3x3(x[0])


def test_switching_median_equals_the_baseline_on_a_real_photo():
  clean = skimage.data.camera()[200:328, 200:328, None].astype(np.float32) / 255
  noisy = np.asarray(degradations.salt_and_pepper(jax.random.key(1), clean, density=0.1))
  got = np.asarray(filters.switching_median(noisy[None]))[0]
  np.testing.assert_array_equal(got, baselines.median_filter(noisy, switching=True))
  # 34.1 dB on this crop (tests/test_restoration_kinds.py); the noisy input ~15 dB.
  psnr = -10 * np.log10(np.mean((got - clean) ** 2))
  assert psnr > 33.0, psnr


def test_dncnn_extra_inputs_and_zero_last():
  y = jax.random.uniform(jax.random.key(0), (2, 12, 12, 2))
  base = dncnn.Model(depth=4, features=8)
  wide = dncnn.Model(depth=4, features=8, extra_inputs=1, zero_last=True)
  v0 = base.init(jax.random.key(0), y[..., :1], train=False)
  v1 = wide.init(jax.random.key(0), y, train=False)
  n = lambda v: sum(a.size for a in jax.tree.leaves(v["params"]))
  assert n(v1) - n(v0) == 9 * 1 * 8  # one more input channel into conv0
  # Zero last layer: R(y) = 0, so the estimate is the first channel exactly.
  out = wide.apply(v1, y, train=False, method="denoise")
  np.testing.assert_array_equal(out, y[..., :1])
  assert not np.asarray(v1["params"]["conv3"]["kernel"]).any()
  # With weights, the residual is still taken from the first C channels only.
  v1 = jax.tree.map(lambda a: a + 0.01, v1)
  r = wide.apply(v1, y, train=False)
  np.testing.assert_allclose(wide.apply(v1, y, train=False, method="denoise"),
                             y[..., :1] - r, atol=1e-6)
  with pytest.raises(ValueError, match=r"\[B, H, W, 2\] inputs \(1 image channels \+ 1"):
    wide.init(jax.random.key(0), y[..., :1], train=False)
