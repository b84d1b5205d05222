"""Sample-quality metrics of generative models on classifier features: FID, KID, IS.

All computations are NumPy float64 on features or logits that some network (Inception,
or the digit classifier of :mod:`genrepair.metrics.digits`) has already computed; this
module knows nothing about images or networks.

* **FID** (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
  Local Nash Equilibrium", NeurIPS 2017, Sec. 3): the Frechet distance between Gaussians
  fitted to the two feature sets,
  ``d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
  Conventions as in pytorch-fid: covariances with the ``N - 1`` denominator (as
  ``numpy.cov``); the matrix square root by ``scipy.linalg.sqrtm`` in float64; when it is
  not finite (near-singular product) ``eps * I`` is added to both covariances and it is
  recomputed; a complex result whose diagonal has imaginary parts above 1e-3 is an error,
  otherwise the real part is kept.
* **KID** (Binkowski et al., "Demystifying MMD GANs", ICLR 2018, and their code):
  the unbiased estimator of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets (default 100 subsets of
  1,000 samples from each set, drawn without replacement; smaller subsets when a set is
  smaller).
* **IS** (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016, Sec. 4):
  ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean prediction, computed on each of 10
  consecutive splits of the samples; mean and standard deviation over the splits.

:class:`FeatureStats` accumulates the mean and covariance of features arriving in chunks
(float64 sums), so FID needs O(d^2) memory whatever the number of samples.

Units: FID and KID are in squared feature units (KID is often reported x1000); IS is
dimensionless, in ``[1, number of classes]``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special

# pytorch-fid's offset for near-singular covariance products and its tolerance for the
# imaginary part of the matrix square root's diagonal.
_SQRTM_EPS = 1e-6
_IMAG_ATOL = 1e-3


def _features_2d(x: np.ndarray, name: str, min_rows: int) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a [N, D] array of features, got shape {x.shape}.")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} has {x.shape[0]} samples; at least {min_rows} are needed.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or infinite values.")
  return x.astype(np.float64)


def _check_same_dim(a: np.ndarray, b: np.ndarray, names: str) -> None:
  if a.shape[-1] != b.shape[-1]:
    raise ValueError(f"{names}: feature dimensions differ ({a.shape[-1]} vs {b.shape[-1]}).")


class FeatureStats:
  """Streaming mean and covariance of feature vectors (float64).

  Accumulates the count, the sum and the sum of outer products of ``x - shift``, where
  ``shift`` is the mean of the first chunk (shifting keeps ``sum xx^T - n mu mu^T`` from
  cancelling catastrophically when the mean is large against the spread; it does not
  change the result). ``mean()`` and ``cov()`` equal ``np.mean(x, 0)`` and
  ``np.cov(x, rowvar=False)`` (denominator ``N - 1``) of all rows seen, to rounding.

  Attributes:
    dim: feature dimension D (fixed by the first chunk).
    count: number of feature vectors seen.
  """

  def __init__(self, dim: int | None = None):
    self.dim = dim
    self.count = 0
    self._shift: np.ndarray | None = None
    self._sum: np.ndarray | None = None    # float64 [D]
    self._outer: np.ndarray | None = None  # float64 [D, D]

  def update(self, features: np.ndarray) -> FeatureStats:
    """Adds a chunk of features.

    Args:
      features: float ``[n, D]`` (any float dtype; accumulated in float64). ``n = 0`` is
        allowed and changes nothing.

    Returns:
      ``self`` (for chaining).

    Raises:
      ValueError: not 2-D, non-finite values, or D differs from earlier chunks.
    """
    x = _features_2d(features, "features", min_rows=0)
    if self.dim is None:
      self.dim = x.shape[1]
    if x.shape[1] != self.dim:
      raise ValueError(f"FeatureStats: feature dimensions differ ({x.shape[1]} vs"
                       f" {self.dim} before).")
    if x.shape[0] == 0:
      return self
    if self._shift is None:
      self._shift = x.mean(axis=0)
      self._sum = np.zeros(self.dim, np.float64)
      self._outer = np.zeros((self.dim, self.dim), np.float64)
    xs = x - self._shift                 # [n, D]
    self._sum += xs.sum(axis=0)
    self._outer += xs.T @ xs             # [D, D]
    self.count += x.shape[0]
    return self

  def _check(self, min_count: int) -> None:
    if self.count < min_count:
      raise ValueError(f"FeatureStats has {self.count} samples; at least {min_count} are"
                       " needed.")

  def mean(self) -> np.ndarray:
    """float64 ``[D]``: mean of the features.

    Raises:
      ValueError: no features yet.
    """
    self._check(1)
    return self._shift + self._sum / self.count

  def cov(self) -> np.ndarray:
    """float64 ``[D, D]``: covariance with the ``N - 1`` denominator (``numpy.cov``).

    Raises:
      ValueError: fewer than 2 features.
    """
    self._check(2)
    m = self._sum / self.count  # mean of the shifted features
    c = (self._outer - self.count * np.outer(m, m)) / (self.count - 1)
    return (c + c.T) / 2  # exactly symmetric

  @classmethod
  def of(cls, features: np.ndarray) -> FeatureStats:
    """Statistics of one ``[N, D]`` feature array."""
    return cls().update(features)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, *, eps: float = _SQRTM_EPS) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, Sec. 3).

  ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``, in float64,
  with the square root from ``scipy.linalg.sqrtm``. If that is not finite, ``eps * I`` is
  added to both covariances and it is recomputed (pytorch-fid's handling of near-singular
  products); the real part of a complex square root is kept when the imaginary parts of
  its diagonal are below 1e-3.

  Args:
    mu1, mu2: float ``[D]`` means.
    sigma1, sigma2: float ``[D, D]`` covariances (symmetric positive semi-definite).
    eps: diagonal offset used only when the square root is not finite.

  Returns:
    The squared Frechet distance (>= 0 up to rounding), in squared feature units.

  Raises:
    ValueError: shapes that do not match ``[D]`` / ``[D, D]`` with one D, or a square root
      with a large imaginary component (covariances far from positive semi-definite).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
    raise ValueError(f"frechet_distance: expected means [D] and covariances [D, D] with one D;"
                     f" got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}.")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.all(np.isfinite(covmean)):
    offset = np.eye(d) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if imag > _IMAG_ATOL:
      raise ValueError(f"frechet_distance: the matrix square root has an imaginary component"
                       f" of {imag:.3g} on its diagonal (covariances not positive"
                       " semi-definite?).")
    covmean = covmean.real
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
  """FID between two :class:`FeatureStats` (each needs >= 2 samples).

  Raises:
    ValueError: mismatched feature dimensions or too few samples.
  """
  if a.dim != b.dim:
    raise ValueError(f"fid_from_stats: feature dimensions differ ({a.dim} vs {b.dim}).")
  return frechet_distance(a.mean(), a.cov(), b.mean(), b.cov())


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """FID between two feature sets (Heusel et al. 2017), see :func:`frechet_distance`.

  Args:
    features_a, features_b: float ``[N_a, D]``, ``[N_b, D]``; N >= 2 each.

  Returns:
    The FID (squared feature units).

  Raises:
    ValueError: not 2-D, non-finite, fewer than 2 samples, or different D.
  """
  a = _features_2d(features_a, "features_a", min_rows=2)
  b = _features_2d(features_b, "features_b", min_rows=2)
  _check_same_dim(a, b, "fid")
  return fid_from_stats(FeatureStats.of(a), FeatureStats.of(b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """KID's cubic kernel ``k(x, y) = (x . y / D + 1)^3``: float64 ``[N_x, N_y]``."""
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased squared MMD with KID's cubic polynomial kernel.

  The unbiased estimator of Gretton et al. ("A Kernel Two-Sample Test", JMLR 2012,
  Lemma 6), as Binkowski et al. 2018 use it for KID:

  ``sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
  - 2 sum_{i, j} k(x_i, y_j) / (m n)``.

  Args:
    x: float ``[m, D]``, m >= 2.
    y: float ``[n, D]``, n >= 2.

  Returns:
    The estimate (can be slightly negative when the distributions agree).

  Raises:
    ValueError: fewer than 2 samples in a set, or different D.
  """
  x = _features_2d(x, "x", min_rows=2)
  y = _features_2d(y, "y", min_rows=2)
  _check_same_dim(x, y, "mmd2_unbiased")
  m, n = x.shape[0], y.shape[0]
  k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
  yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
  return float(xx + yy - 2.0 * k_xy.sum() / (m * n))


def kid(features_a: np.ndarray, features_b: np.ndarray, *, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance (Binkowski et al. 2018): mean and std of subset MMD^2.

  Each of ``num_subsets`` rounds draws ``s = min(subset_size, N_a, N_b)`` rows of each set
  without replacement (``numpy.random.default_rng(seed)``) and evaluates
  :func:`mmd2_unbiased` on them, as in the authors' ``polynomial_mmd_averages``.

  Args:
    features_a, features_b: float ``[N_a, D]``, ``[N_b, D]``; N >= 2 each.
    num_subsets: number of subsets (>= 1).
    subset_size: samples per subset and set (>= 2); reduced to the smaller N.
    seed: subset-sampling seed (same seed, same number).

  Returns:
    ``(mean, std)`` over the subsets (squared feature units; std with ``ddof=0``).

  Raises:
    ValueError: bad shapes (see :func:`mmd2_unbiased`), ``num_subsets < 1`` or
      ``subset_size < 2``.
  """
  a = _features_2d(features_a, "features_a", min_rows=2)
  b = _features_2d(features_b, "features_b", min_rows=2)
  _check_same_dim(a, b, "kid")
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f"kid: need num_subsets >= 1 and subset_size >= 2, got {num_subsets},"
                     f" {subset_size}.")
  s = min(subset_size, a.shape[0], b.shape[0])
  rng = np.random.default_rng(seed)
  values = np.array([
      mmd2_unbiased(a[rng.choice(a.shape[0], s, replace=False)],
                    b[rng.choice(b.shape[0], s, replace=False)])
      for _ in range(num_subsets)])
  return float(values.mean()), float(values.std())


def inception_score(logits: np.ndarray, *, num_splits: int = 10) -> tuple[float, float]:
  """Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split.

  The samples are cut into ``num_splits`` consecutive parts (part i = rows
  ``[i N // k, (i+1) N // k)``, as in the authors' code); in each part ``p(y)`` is the mean
  of ``p(y|x) = softmax(logits)``. Computed in float64 from log-probabilities, so
  confident predictions (``p = 0`` for most classes) are exact.

  Args:
    logits: float ``[N, K]`` class logits (or log-probabilities); N >= ``num_splits``.
    num_splits: number of parts (>= 1).

  Returns:
    ``(mean, std)`` of the per-split scores, each in ``[1, K]`` (std with ``ddof=0``).

  Raises:
    ValueError: not 2-D, non-finite, ``num_splits < 1`` or fewer samples than splits.
  """
  if num_splits < 1:
    raise ValueError(f"inception_score: num_splits must be >= 1, got {num_splits}.")
  z = _features_2d(logits, "logits", min_rows=num_splits)
  log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)  # log p(y|x), [N, K]
  n = z.shape[0]
  scores = []
  for i in range(num_splits):
    part = log_p[i * n // num_splits:(i + 1) * n // num_splits]
    log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(part.shape[0])  # [K]
    kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)  # KL per sample, [n_i]
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))
