"""FID, KID, IS and the streaming FeatureStats against closed forms and direct float64 code."""

import numpy as np
import pytest
import scipy.linalg

from genrepair.metrics import generative


def _features(seed, n=600, d=16, shift=0.0):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return (rng.normal(size=(n, d)) @ mix + shift).astype(np.float32)


def _reference_fid(a, b):
  """The reference formula written out directly: float64 np.mean/np.cov + scipy sqrtm."""
  a, b = np.float64(a), np.float64(b)
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)


def test_fid_of_identical_statistics_is_zero():
  x = _features(0)
  assert abs(generative.fid(x, x)) < 1e-6
  s = generative.FeatureStats.of(x)
  assert abs(generative.frechet_distance(s.mean(), s.cov(), s.mean(), s.cov())) < 1e-6


def test_fid_of_diagonal_gaussians_matches_closed_form():
  # For diagonal covariances (S1 S2)^(1/2) = diag(sqrt(a * b)), so the trace term is
  # sum (sqrt(a) - sqrt(b))^2.
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  a, b = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = generative.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # A hand case: N(0, 1) vs N(3, 4) in 1-D: 9 + (1 - 2)^2 = 10.
  np.testing.assert_allclose(generative.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]),
                             10.0, rtol=1e-12)


def test_fid_matches_direct_reference_implementation():
  a, b = _features(2, shift=0.0), _features(3, shift=0.3)
  got = generative.fid(a, b)
  ref = _reference_fid(a, b)
  assert ref > 0.5  # the two sets really differ
  np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_fid_handles_singular_covariances():
  # Fewer samples than dimensions: both covariances are singular (rank 9 of 32); the
  # result must still be finite and agree with the reference formula.
  a, b = _features(4, n=10, d=32), _features(5, n=10, d=32, shift=1.0)
  got = generative.fid(a, b)
  assert np.isfinite(got)
  np.testing.assert_allclose(got, _reference_fid(a, b), rtol=1e-4)


def test_feature_stats_streamed_equals_numpy():
  x = _features(6, n=1003, d=12, shift=50.0)  # a large mean: the shift must not hurt
  stats = generative.FeatureStats()
  for i in range(0, len(x), 97):  # uneven chunks, one of them short
    stats.update(x[i:i + 97])
  stats.update(x[:0])  # empty chunk: no-op
  assert stats.count == 1003 and stats.dim == 12
  x64 = np.float64(x)
  np.testing.assert_allclose(stats.mean(), x64.mean(0), rtol=0, atol=1e-10)
  np.testing.assert_allclose(stats.cov(), np.cov(x64, rowvar=False), rtol=0, atol=1e-10)


def test_feature_stats_errors():
  stats = generative.FeatureStats().update(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="at least 2"):
    stats.cov()
  with pytest.raises(ValueError, match="feature dimensions differ"):
    stats.update(np.zeros((3, 5)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    generative.FeatureStats().update(np.zeros(4))


def test_fid_errors():
  with pytest.raises(ValueError, match="feature dimensions differ"):
    generative.fid(np.zeros((4, 3)), np.zeros((4, 2)))
  with pytest.raises(ValueError, match="at least 2"):
    generative.fid(np.zeros((1, 3)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="NaN"):
    generative.fid(np.full((4, 3), np.nan), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="expected means"):
    generative.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def _direct_mmd2(x, y):
  """O(n^2) double loop of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
  x, y = np.float64(x), np.float64(y)
  d = x.shape[1]
  k = lambda u, v: (np.dot(u, v) / d + 1.0) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return xx + yy - 2 * xy


def test_kid_one_subset_matches_direct_mmd():
  a, b = _features(7, n=40, d=6), _features(8, n=40, d=6, shift=0.5)
  direct = _direct_mmd2(a, b)
  np.testing.assert_allclose(generative.mmd2_unbiased(a, b), direct, rtol=1e-10)
  # One subset covering all samples is the same set (order does not matter): std 0.
  mean, std = generative.kid(a, b, num_subsets=1, subset_size=1000)
  np.testing.assert_allclose(mean, direct, rtol=1e-10)
  assert std == 0.0


def test_kid_subsets():
  a, b = _features(9, n=300, d=8), _features(10, n=200, d=8, shift=0.5)
  mean, std = generative.kid(a, b, num_subsets=20, subset_size=100, seed=3)
  # By hand: the same subsets drawn with the same generator.
  rng = np.random.default_rng(3)
  vals = [generative.mmd2_unbiased(a[rng.choice(300, 100, replace=False)],
                                   b[rng.choice(200, 100, replace=False)]) for _ in range(20)]
  np.testing.assert_allclose([mean, std], [np.mean(vals), np.std(vals)], rtol=1e-12)
  assert mean > 0.01
  # Same distribution: KID near 0 (unbiased), well below the shifted pair.
  same, _ = generative.kid(a[:150], a[150:], num_subsets=20, subset_size=100)
  assert abs(same) < mean / 10
  with pytest.raises(ValueError, match="subset_size >= 2"):
    generative.kid(a, b, subset_size=1)


def test_inception_score_limits():
  k, n = 10, 1000
  labels = np.arange(n) % k  # every split holds each class equally often
  confident = np.where(np.eye(k, dtype=bool)[labels], 0.0, -1e4)  # p(y|x) one-hot
  mean, std = generative.inception_score(confident)
  np.testing.assert_allclose(mean, k, rtol=1e-10)
  assert std < 1e-10
  identical = np.tile(np.random.default_rng(0).normal(size=k), (n, 1))
  mean, std = generative.inception_score(identical)
  np.testing.assert_allclose(mean, 1.0, rtol=1e-12)
  # A hand case with 2 classes and one split: p(y|x) = (1, 0) and (0.5, 0.5):
  # p(y) = (0.75, 0.25); KL = log(4/3) and 0.5 log(2/3) + 0.5 log(2); IS = exp(mean KL).
  logits = np.log(np.array([[1.0, 1e-300], [0.5, 0.5]]))
  kl = [np.log(4 / 3), 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)]
  np.testing.assert_allclose(generative.inception_score(logits, num_splits=1)[0],
                             np.exp(np.mean(kl)), rtol=1e-12)
  with pytest.raises(ValueError, match="at least 10"):
    generative.inception_score(confident[:5])
