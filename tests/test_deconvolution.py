"""The JAX Wiener deconvolution against the NumPy float64 classical baseline on a real photo,
its transfer function against the baseline's, and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data

from genrepair import baselines, deconvolution, degradations


def _photo_batch():
  """Two real 64x80 gray crops (camera, astronaut's gray) in [0, 1], [2, 64, 80, 1]."""
  cam = skimage.data.camera()[100:164, 200:280]
  ast = skimage.color.rgb2gray(skimage.data.astronaut())[50:114, 180:260] * 255
  return np.stack([cam, ast]).astype(np.float32)[..., None] / 255


def _kernels():
  """A Gaussian and an asymmetric even-sized 'motion' kernel, unstacked and stacked."""
  motion = np.zeros((6, 10))
  motion[2, :] = 1.0
  motion[3, 4:9] = 0.5
  motion /= motion.sum()
  ks = [degradations.gaussian_kernel(1.6), motion]
  return ks, degradations.stack_kernels(ks)


def test_otf_equals_the_baseline_otf():
  ks, stack = _kernels()
  otf = np.asarray(deconvolution.kernel_otf(stack, (64, 80)))
  for i, k in enumerate(ks):
    np.testing.assert_allclose(otf[i], baselines.kernel_otf(k, (64, 80)), atol=2e-6)


@pytest.mark.parametrize("sigma", [2.55, 10.0])
def test_wiener_equals_the_numpy_baseline_per_image(sigma):
  x = _photo_batch()
  ks, stack = _kernels()
  y = degradations.blur_noise(jax.random.key(3), jnp.asarray(x), kernel=stack, sigma=sigma)
  got = np.asarray(jax.jit(lambda y, k: deconvolution.wiener(y, k, sigma=sigma))(y, stack))
  assert got.dtype == np.float32 and got.shape == x.shape
  for i, k in enumerate(ks):
    want = baselines.wiener_deconvolution(np.asarray(y[i]), kernel=k, sigma=sigma)
    np.testing.assert_allclose(got[i], want, atol=2e-5)
    # And it deblurs: the clipped estimate is closer to the photo than the blurred input.
    err_y = np.mean((np.asarray(y[i]) - x[i]) ** 2)
    err_w = np.mean((np.clip(got[i], 0, 1) - x[i]) ** 2)
    assert 10 * np.log10(err_y / err_w) > 1.0, (i, err_y, err_w)


def test_wiener_errors():
  _, stack = _kernels()
  y = jnp.zeros((2, 32, 32, 1))
  with pytest.raises(ValueError, match="sigma must be > 0"):
    deconvolution.wiener(y, stack, sigma=0.0)
  with pytest.raises(ValueError, match=r"\[B, K, K\] with B = 2"):
    deconvolution.wiener(y, stack[:1], sigma=2.55)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    deconvolution.wiener(y[0], stack, sigma=2.55)
  with pytest.raises(ValueError, match="fit in"):
    deconvolution.kernel_otf(stack, (8, 8))
