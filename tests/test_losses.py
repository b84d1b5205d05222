"""Adversarial losses against hand-computed values, registry, combine/evaluate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import losses

LOG2 = math.log(2.0)


def _softplus(x):
  x = np.asarray(x, np.float64)
  return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def test_d_minimax_hand_values():
  # logits 0: D = 1/2 -> -log(1/2) - log(1/2) = 2 log 2.
  out = losses.d_minimax(real_logits=jnp.zeros(3), fake_logits=jnp.zeros(3))
  np.testing.assert_allclose(out, [2 * LOG2] * 3, rtol=1e-6)
  # real logit log(3): D(x) = 3/4 -> -log(3/4); fake logit -log(3): D = 1/4 -> -log(3/4).
  out = losses.d_minimax(real_logits=jnp.array([math.log(3.0)]),
                         fake_logits=jnp.array([-math.log(3.0)]))
  np.testing.assert_allclose(out, [-2 * math.log(0.75)], rtol=1e-6)


def test_generator_losses_hand_values():
  z = jnp.array([0.0, math.log(3.0)])  # D(G(z)) = 1/2, 3/4
  np.testing.assert_allclose(losses.g_nonsaturating(fake_logits=z),
                             [LOG2, -math.log(0.75)], rtol=1e-6)
  # log(1 - D): log(1/2), log(1/4)
  np.testing.assert_allclose(losses.g_minimax(fake_logits=z),
                             [-LOG2, math.log(0.25)], rtol=1e-6)


@pytest.mark.parametrize("fn,kwargs", [
    (losses.d_minimax, ("real_logits", "fake_logits")),
    (losses.g_nonsaturating, ("fake_logits",)),
    (losses.g_minimax, ("fake_logits",)),
])
def test_extreme_logits_finite_and_match_numpy(fn, kwargs):
  logits = jnp.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], jnp.float32)
  args = {k: logits for k in kwargs}
  out = jax.jit(lambda a: fn(**a))(args)
  grads = jax.grad(lambda a: jnp.sum(fn(**a)))(args)
  assert np.all(np.isfinite(out))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  x = np.asarray(logits, np.float64)
  expected = {
      losses.d_minimax: _softplus(-x) + _softplus(x),
      losses.g_nonsaturating: _softplus(-x),
      losses.g_minimax: -_softplus(x),
  }[fn]
  # atol: float32 flushes e^-100 ~ 4e-44 (a subnormal) to 0.
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-37)
  # The saturating/non-saturating distinction, numerically: at a confidently rejected
  # sample (logit -30) the minimax G gradient vanishes, the non-saturating one does not.
  if fn is losses.g_minimax:
    assert abs(float(grads["fake_logits"][2])) < 1e-12
  if fn is losses.g_nonsaturating:
    np.testing.assert_allclose(grads["fake_logits"][2], -1.0, rtol=1e-6)


def test_patch_logits_are_averaged_per_example():
  logits = jnp.array([[0.0, math.log(3.0)], [0.0, 0.0]])  # [B=2, 2 patches]
  out = losses.g_nonsaturating(fake_logits=logits)
  np.testing.assert_allclose(out, [(LOG2 - math.log(0.75)) / 2, LOG2], rtol=1e-6)


def test_batch_mismatch_and_scalar_raise():
  with pytest.raises(ValueError, match="same batch size"):
    losses.d_minimax(real_logits=jnp.zeros(3), fake_logits=jnp.zeros(4))
  with pytest.raises(ValueError, match="batch axis"):
    losses.g_nonsaturating(fake_logits=jnp.float32(0.0))


def test_evaluate_and_combine_weights():
  real = jnp.array([math.log(3.0), 0.0])
  fake = jnp.array([0.0, -math.log(3.0)])
  total, terms = losses.evaluate({"d_minimax": 0.5}, real_logits=real, fake_logits=fake)
  d = np.mean(_softplus(-np.asarray(real)) + _softplus(np.asarray(fake)))
  np.testing.assert_allclose(terms["d_minimax"], d, rtol=1e-6)
  np.testing.assert_allclose(total, 0.5 * d, rtol=1e-6)
  # Weight 0 removes the term: it is not even computed.
  total, terms = losses.evaluate({"g_nonsaturating": 2.0, "g_minimax": 0.0},
                                 fake_logits=fake)
  assert set(terms) == {"g_nonsaturating"}
  np.testing.assert_allclose(total, 2 * np.mean(_softplus(-np.asarray(fake))), rtol=1e-6)
  total, named = losses.combine({"a": 1.0, "b": 3.0, "c": 0.0},
                                {"a": jnp.float32(1.5), "b": jnp.float32(2.0)})
  np.testing.assert_allclose(total, 7.5)
  assert set(named) == {"a", "b"}


def test_check_weights_errors():
  with pytest.raises(ValueError, match="Did you mean.*g_minimax"):
    losses.check_weights({"g_minmax": 1.0}, {"fake_logits"}, "config.losses.g")
  with pytest.raises(ValueError, match="real_logits"):
    losses.check_weights({"d_minimax": 1.0}, {"fake_logits"}, "config.losses.g")
  with pytest.raises(ValueError, match="no loss term"):
    losses.check_weights({"g_minimax": 0.0}, {"fake_logits"}, "config.losses.g")
  with pytest.raises(ValueError, match=">= 0"):
    losses.check_weights({"g_minimax": -1.0}, {"fake_logits"}, "config.losses.g")
  with pytest.raises(ValueError, match="finite"):
    losses.check_weights({"g_minimax": float("nan")}, {"fake_logits"}, "config.losses.g")


def test_wasserstein_hinge_least_squares_hand_values():
  real, fake = jnp.array([2.0, -0.5, 0.3]), jnp.array([-1.5, 0.5, 3.0])
  np.testing.assert_allclose(losses.d_wasserstein(real_logits=real, fake_logits=fake),
                             [-3.5, 1.0, 2.7], rtol=1e-6)
  np.testing.assert_allclose(losses.g_wasserstein(fake_logits=fake), [1.5, -0.5, -3.0])
  # hinge: relu(1 - r) + relu(1 + f): (0 + 0), (1.5 + 1.5), (0.7 + 4.0)
  np.testing.assert_allclose(losses.d_hinge(real_logits=real, fake_logits=fake),
                             [0.0, 3.0, 4.7], rtol=1e-6)
  np.testing.assert_allclose(losses.g_hinge(fake_logits=fake), [1.5, -0.5, -3.0])
  # LSGAN: 0.5 (r - 1)^2 + 0.5 f^2: 0.5 + 1.125, 1.125 + 0.125, 0.245 + 4.5
  np.testing.assert_allclose(losses.d_least_squares(real_logits=real, fake_logits=fake),
                             [1.625, 1.25, 4.745], rtol=1e-6)
  np.testing.assert_allclose(losses.g_least_squares(fake_logits=fake),
                             [3.125, 0.125, 2.0], rtol=1e-6)
  # Patch maps are averaged per example after the nonlinearity.
  patch = jnp.array([[[0.0, 2.0]]])  # [1, 1, 2]: relu(1-0)=1, relu(1-2)=0 -> 0.5
  np.testing.assert_allclose(losses.d_hinge(real_logits=patch, fake_logits=-patch - 2),
                             [0.5 + 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="same batch size"):
    losses.d_hinge(real_logits=real, fake_logits=fake[:2])


def test_penalties_hand_values():
  np.testing.assert_allclose(losses.gradient_penalty(interp_grad_norm=jnp.array([1.0, 0.0, 3.0])),
                             [0.0, 1.0, 4.0])
  np.testing.assert_allclose(losses.r1_penalty(real_grad_sq=jnp.array([0.0, 2.0, 5.0])),
                             [0.0, 1.0, 2.5])
