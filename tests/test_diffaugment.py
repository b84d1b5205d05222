"""DiffAugment (genrepair/diffaugment.py) against NumPy re-implementations of each policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import diffaugment


def _batch(b=6, h=8, w=10, c=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (b, h, w, c)).astype(np.float32)


def test_translation_is_a_shift_with_fill():
  x = _batch()
  key = jax.random.key(3)
  out = np.asarray(diffaugment.translation(jnp.asarray(x), key, ratio=0.25, fill=-1.0))
  # The shifts the function drew (same key split as the implementation).
  ky, kx = jax.random.split(key)
  dy = np.asarray(jax.random.randint(ky, (6, 1, 1, 1), -2, 3))[:, 0, 0, 0]  # round(0.25*8)=2
  dx = np.asarray(jax.random.randint(kx, (6, 1, 1, 1), -3, 4))[:, 0, 0, 0]  # round(2.5)=3
  assert len(set(zip(dy.tolist(), dx.tolist()))) > 1  # the draws differ between images
  for b in range(6):
    want = np.full_like(x[b], -1.0)
    for i in range(8):
      for j in range(10):
        si, sj = i - dy[b], j - dx[b]
        if 0 <= si < 8 and 0 <= sj < 10:
          want[i, j] = x[b, si, sj]
    np.testing.assert_array_equal(out[b], want)


def test_cutout_sets_one_clipped_square():
  x = _batch(b=32, h=9, w=9, c=1)
  out = np.asarray(diffaugment.cutout(jnp.asarray(x), jax.random.key(1), ratio=0.5, fill=0.5))
  size = 5  # round(0.5 * 9)
  areas = []
  for b in range(32):
    changed = out[b, :, :, 0] != x[b, :, :, 0]
    rows, cols = np.nonzero(changed)
    assert np.all(out[b, :, :, 0][changed] == 0.5)
    # The filled pixels form one axis-aligned rectangle of at most size x size.
    assert changed.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert rows.max() - rows.min() < size and cols.max() - cols.min() < size
    areas.append(changed.sum())
  assert max(areas) == size * size and min(areas) < size * size  # clipped at the border


def test_color_matches_formula():
  x = _batch(b=4, c=3)
  key = jax.random.key(7)
  out = np.asarray(diffaugment.color(jnp.asarray(x), key), np.float64)
  kb, ks, kc = jax.random.split(key, 3)
  u = lambda k, lo, hi: np.asarray(jax.random.uniform(k, (4, 1, 1, 1), jnp.float32, lo, hi),
                                   np.float64)
  y = x.astype(np.float64) + u(kb, -0.5, 0.5)
  m = y.mean(axis=3, keepdims=True)
  y = (y - m) * u(ks, 0.0, 2.0) + m
  m = y.mean(axis=(1, 2, 3), keepdims=True)
  y = (y - m) * u(kc, 0.5, 1.5) + m
  np.testing.assert_allclose(out, y, atol=2e-6)


def test_augment_gradient_flows_and_empty_policy_is_identity():
  x = jnp.asarray(_batch())
  key = jax.random.key(0)
  assert diffaugment.augment(x, key, "") is x
  # Translation and cutout are linear maps with 0/1 weights: d sum(aug(x)) / dx is the
  # 0/1 indicator of the pixels that survive, and the fill contributes nothing.
  f = lambda v: jnp.sum(diffaugment.augment(v, key, "translation,cutout"))
  g = np.asarray(jax.grad(f)(x))
  assert set(np.unique(g).tolist()) <= {0.0, 1.0} and 0 < g.mean() < 1
  out = np.asarray(diffaugment.augment(x, key, "translation,cutout"))
  np.testing.assert_allclose(out.sum(), np.sum(np.asarray(x) * g), rtol=1e-5)


@pytest.mark.parametrize("policy", ["colour", "translation,translation"])
def test_bad_policy_names_the_key(policy):
  with pytest.raises(ValueError, match="config.train.diffaugment"):
    diffaugment.parse(policy, "config.train.diffaugment")
