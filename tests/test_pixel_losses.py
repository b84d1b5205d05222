"""Pixel losses against hand-computed values and scikit-image's SSIM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import losses


def test_l1_l2_charbonnier_hand_values():
  target = jnp.zeros((2, 1, 2, 1))
  pred = jnp.array([[[[0.1], [0.3]]], [[[-0.2], [0.0]]]])
  np.testing.assert_allclose(losses.l1(pred=pred, target=target), [0.2, 0.1], rtol=1e-6)
  np.testing.assert_allclose(losses.l2(pred=pred, target=target), [0.05, 0.02], rtol=1e-6)
  eps = 1e-3
  expected = [(np.sqrt(0.01 + eps**2) + np.sqrt(0.09 + eps**2)) / 2,
              (np.sqrt(0.04 + eps**2) + eps) / 2]
  np.testing.assert_allclose(losses.charbonnier(pred=pred, target=target), expected,
                             rtol=1e-6)
  # Masked mean: only the second pixel of each example counts.
  mask = jnp.array([[[[0.0], [1.0]]], [[[0.0], [1.0]]]])
  np.testing.assert_allclose(losses.l1(pred=pred, target=target, mask=mask), [0.3, 0.0],
                             atol=1e-7)


def test_ssim_loss_matches_skimage():
  skimage_metrics = pytest.importorskip("skimage.metrics")
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(2, 32, 32, 1)).astype(np.float32)
  b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
  out = jax.jit(lambda p, t: losses.ssim(pred=p, target=t))(b, a)
  for i in range(2):
    ref = skimage_metrics.structural_similarity(
        a[i, ..., 0], b[i, ..., 0], gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0)
    np.testing.assert_allclose(1 - out[i], ref, atol=1e-5)
  np.testing.assert_allclose(losses.ssim(pred=a, target=a), 0.0, atol=1e-6)


def test_pixel_loss_shape_errors():
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    losses.l1(pred=jnp.zeros((1, 4, 4, 1)), target=jnp.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    losses.l2(pred=jnp.zeros((4, 4, 1)), target=jnp.zeros((4, 4, 1)))
