"""Degradations: noise statistics, MATLAB imresize parity, blur vs SciPy, kernels, masks."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from genrepair import degradations as deg

DATA = os.environ.get("GENREPAIR_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="GENREPAIR_DATA is not set (shared data).")


# ------------------------------------------------------------------------------ noise


def test_gaussian_noise_statistics():
  clean = jnp.full((4, 256, 256, 1), 0.5, jnp.float32)     # 262,144 samples
  noisy = deg.gaussian_noise(jax.random.key(0), clean, sigma=25.0)
  n = np.asarray(noisy - clean, np.float64) * 255.0
  # std of a sample std is sigma / sqrt(2N) ~ 0.14 % here; 1 % is > 7 standard errors.
  assert abs(n.std() / 25.0 - 1.0) < 0.01
  assert abs(n.mean()) < 5 * 25.0 / math.sqrt(n.size)
  # Not clipped (DnCNN protocol): 0.5 + 25/255 * N(0,1) leaves [0, 1] for |z| > 5.1, but
  # from 0.95 it leaves often.
  near_white = deg.gaussian_noise(jax.random.key(1), clean + 0.45, sigma=25.0)
  assert float(near_white.max()) > 1.0


def test_gaussian_noise_per_example_sigma_and_unbatched():
  clean = jnp.zeros((3, 128, 128, 1), jnp.float32)
  sigma = jnp.array([0.0, 15.0, 50.0])
  n = np.asarray(deg.gaussian_noise(jax.random.key(2), clean, sigma=sigma)) * 255.0
  assert n[0].std() == 0.0
  np.testing.assert_allclose(n[1:].reshape(2, -1).std(axis=1), [15.0, 50.0], rtol=0.02)
  single = deg.gaussian_noise(jax.random.key(2), clean[0], sigma=15.0)
  assert single.shape == (128, 128, 1)


def test_salt_and_pepper_density_and_split():
  clean = jnp.full((4, 200, 200, 3), 0.5, jnp.float32)
  out = np.asarray(deg.salt_and_pepper(jax.random.key(3), clean, density=0.1))
  # One decision per pixel: the three channels agree everywhere.
  assert np.all(out == out[..., :1])
  hit = out[..., 0] != 0.5
  n = hit.size
  assert abs(hit.mean() - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)          # binomial 4 sigma
  salt = (out[..., 0] == 1.0).sum() / hit.sum()
  assert abs(salt - 0.5) < 4 * math.sqrt(0.25 / hit.sum())
  assert set(np.unique(out)) == {0.0, 0.5, 1.0}
  dens = jnp.array([0.0, 0.5])
  per = np.asarray(deg.salt_and_pepper(jax.random.key(4), clean[:2], density=dens))
  assert np.all(per[0] == 0.5)
  assert abs((per[1] != 0.5).mean() - 0.5) < 0.01


@pytest.mark.parametrize("fn,kw", [
    (deg.gaussian_noise, {"sigma": 25.0}),
    (deg.salt_and_pepper, {"density": 0.2}),
    (lambda r, x, **k: deg.blur_noise(r, x, kernel=np.full((3, 3), 1 / 9), **k),
     {"sigma": 2.55}),
])
def test_determinism_and_jit(fn, kw):
  x = jax.random.uniform(jax.random.key(5), (2, 16, 16, 3))
  a = fn(jax.random.key(7), x, **kw)
  b = fn(jax.random.key(7), x, **kw)
  c = fn(jax.random.key(8), x, **kw)
  j = jax.jit(lambda r, y: fn(r, y, **kw))(jax.random.key(7), x)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_allclose(j, a, atol=1e-6)


def test_shape_errors_name_the_shape():
  with pytest.raises(ValueError, match=r"\(5, 5\)"):
    deg.gaussian_noise(jax.random.key(0), jnp.zeros((5, 5)), sigma=1.0)
  with pytest.raises(ValueError, match=r"\(3,\)"):
    deg.gaussian_noise(jax.random.key(0), jnp.zeros((2, 4, 4, 1)), sigma=jnp.ones(3))
  with pytest.raises(ValueError, match=r"\(1, 2, 3, 4, 5\)"):
    deg.imresize(jnp.zeros((1, 2, 3, 4, 5)), scale=2)
  with pytest.raises(ValueError, match=r"\(1, 10, 12, 1\)"):
    deg.bicubic_downsample(jnp.zeros((1, 10, 12, 1)), scale=4)
  with pytest.raises(ValueError, match=r"\(3, 3, 1\)"):
    deg.blur(jnp.zeros((1, 8, 8, 1)), kernel=jnp.ones((3, 3, 1)))
  with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\)"):
    deg.apply_mask(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8, 3)))


# ------------------------------------------------------------- MATLAB bicubic imresize


def _matlab_imresize_1d(x: np.ndarray, out_len: int, scale: float, antialias: bool,
                        axis: int) -> np.ndarray:
  """NumPy transcription of MATLAB imresize.m's contributions() + resizeAlongDim()."""

  def cubic(t):
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1,
                    np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))

  in_len = x.shape[axis]
  if scale < 1 and antialias:
    h, kw = (lambda t: scale * cubic(scale * t)), 4.0 / scale
  else:
    h, kw = cubic, 4.0
  out = []
  for xo in range(1, out_len + 1):
    u = xo / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - kw / 2)
    ind = np.arange(left, left + math.ceil(kw) + 2)
    w = h(u - ind)
    w = w / w.sum()
    src = []
    for i in ind:                        # symmetric padding, 1-based: 0 -> 1, n+1 -> n
      while i < 1 or i > in_len:
        i = 1 - i if i < 1 else 2 * in_len + 1 - i
      src.append(i - 1)
    out.append(np.tensordot(w, np.take(x, src, axis=axis), axes=([0], [axis])))
  return np.moveaxis(np.stack(out), 0, axis)


def _matlab_imresize(x, scale, out_hw=None, quantize=False):
  """[H, W, C] float64 reference; H first unless W has the smaller scale."""
  in_hw = x.shape[:2]
  if out_hw is None:
    out_hw = [math.ceil(scale * n - 1e-9) for n in in_hw]
    scales = [scale, scale]
  else:
    scales = [o / n for o, n in zip(out_hw, in_hw)]
  for axis in sorted((0, 1), key=lambda a: scales[a]):
    x = _matlab_imresize_1d(x, out_hw[axis], scales[axis], True, axis)
    if quantize:
      x = np.clip(np.floor(x * 255 + 0.5), 0, 255) / 255
  return x


def test_imresize_hand_values():
  # MATLAB imresize(1:4, 2), worked by hand: output 1 samples u = 0.75; its taps at input
  # positions -1, 0, 1, 2 mirror to values [2, 1, 1, 2] with Keys weights [-0.0234375,
  # 0.2265625, 0.8671875, -0.0703125] -> 0.90625. Output 2 (u = 1.25): taps 0..3 -> values
  # [1, 1, 2, 3], weights [-0.0703125, 0.8671875, 0.2265625, -0.0234375] -> 1.1796875.
  x = jnp.arange(1.0, 5.0).reshape(1, 4, 1)
  y = np.asarray(deg.imresize(x, scale=2))[0, :, 0]
  np.testing.assert_allclose(y[:2], [0.90625, 1.1796875], atol=1e-6)
  np.testing.assert_allclose(y + y[::-1], 5.0, atol=1e-5)  # the ramp is odd about 2.5
  # A constant image stays constant whatever the scale (weights sum to 1).
  c = deg.imresize(jnp.full((1, 9, 12, 2), 0.3), scale=1 / 3)
  np.testing.assert_allclose(c, 0.3, atol=1e-6)


@pytest.mark.parametrize("shape,kw", [
    ((12, 16, 1), {"scale": 1 / 2}),
    ((15, 9, 3), {"scale": 1 / 3}),
    ((16, 20, 1), {"scale": 1 / 4}),
    ((7, 5, 1), {"scale": 3}),
    ((10, 13, 2), {"scale": 0.6}),
    ((11, 17, 1), {"out_hw": (23, 6)}),     # one axis up, one down: W (smaller scale) first
])
def test_imresize_matches_matlab_reference(shape, kw):
  x = np.random.default_rng(0).random(shape)
  ref = _matlab_imresize(x, kw.get("scale"), kw.get("out_hw"))
  ours = jax.jit(lambda a: deg.imresize(a, **kw))(jnp.asarray(x, jnp.float32))
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_imresize_quantize_follows_matlab_uint8_order():
  # With rounding after each pass the axis order matters; W has the smaller scale here.
  x = np.floor(np.random.default_rng(1).random((9, 14, 1)) * 256) / 255
  ref = _matlab_imresize(x, None, (12, 7), quantize=True)
  ours = deg.imresize(jnp.asarray(x, jnp.float32), out_hw=(12, 7), quantize=True)
  np.testing.assert_allclose(np.asarray(ours) * 255, ref * 255, atol=1e-3)
  down = deg.bicubic_downsample(jnp.asarray(x[:9, :12], jnp.float32)[None], scale=3)
  np.testing.assert_allclose(down[0], _matlab_imresize(x[:9, :12], 1 / 3), atol=2e-6)


# ------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("kshape", [(5, 5), (4, 6), (3, 1)])
def test_blur_equals_scipy_wrap_convolution(kshape):
  rng = np.random.default_rng(2)
  x = rng.random((2, 11, 13, 3)).astype(np.float32)
  k = rng.random(kshape).astype(np.float32)
  k /= k.sum()
  ref = scipy.ndimage.convolve(x.astype(np.float64), k[None, :, :, None].astype(np.float64),
                               mode="wrap")
  np.testing.assert_allclose(jax.jit(lambda a: deg.blur(a, kernel=k))(x), ref, atol=1e-6)


@needs_data
def test_blur_kernels_load_and_orientation():
  levin = deg.load_blur_kernels(os.path.join(DATA, "blur", "Levin09.mat"))
  k12 = deg.load_blur_kernels(os.path.join(DATA, "blur", "kernels_12.mat"))
  assert len(levin) == 8 and len(k12) == 12
  assert [k.shape[0] for k in levin] == [19, 17, 15, 27, 13, 21, 23, 23]
  assert all(k.dtype == np.float32 and k.shape == (25, 25) for k in k12)
  np.testing.assert_allclose([k.sum() for k in levin + k12], 1.0, atol=1e-4)
  # Orientation: Levin09 is HDF5 (column-major, transposed on load), kernels_12 is MATLAB
  # v5 (row-major via scipy). Two Levin kernels appear verbatim in kernels_12, embedded at
  # offset (1, 1); they only match if the transpose was right (both kernels are asymmetric).
  for li, kj in ((6, 9), (7, 8)):
    padded = np.zeros((25, 25), np.float32)
    padded[1:24, 1:24] = levin[li]
    np.testing.assert_array_equal(padded, k12[kj])
    assert not np.allclose(levin[li], levin[li].T, atol=1e-3)
  # The first four of kernels_12 are isotropic Gaussians.
  assert all(np.allclose(k, k.T, atol=1e-6) for k in k12[:4])


# -------------------------------------------------------------------------- masks


def test_box_and_stroke_masks():
  box = np.asarray(deg.random_box_mask(jax.random.key(0), (64, 40, 60), min_frac=0.25,
                                       max_frac=0.5))
  assert box.shape == (64, 40, 60, 1) and set(np.unique(box)) <= {0.0, 1.0}
  rows, cols = box[..., 0].any(axis=2).sum(1), box[..., 0].any(axis=1).sum(1)
  assert rows.min() >= 10 and rows.max() <= 20 and cols.min() >= 15 and cols.max() <= 30
  # A single box is exactly a rectangle: area = rows * cols.
  np.testing.assert_array_equal(box.sum(axis=(1, 2, 3)), rows * cols)
  strokes = jax.jit(lambda r: deg.random_stroke_mask(r, (8, 64, 64)))
  stroke = strokes(jax.random.key(1))
  ratio = np.asarray(stroke).mean(axis=(1, 2, 3))
  assert stroke.shape == (8, 64, 64, 1) and set(np.unique(stroke)) == {0.0, 1.0}
  # Brush widths of 3-10 px at 64x64 and 4-11 segments of ~11 px: a few % to ~half.
  assert np.all(ratio > 0.01) and np.all(ratio < 0.8) and len(np.unique(ratio)) == 8
  np.testing.assert_array_equal(strokes(jax.random.key(1)), stroke)
  assert not np.array_equal(strokes(jax.random.key(2)), stroke)
  x = jnp.full((8, 64, 64, 3), 0.7)
  masked = np.asarray(deg.apply_mask(x, stroke, fill=1.0))
  np.testing.assert_allclose(masked.mean(axis=(1, 2, 3)), 0.7 + 0.3 * ratio, rtol=1e-5)


@needs_data
def test_irregular_masks_hole_ratio_bins():
  d = os.path.join(DATA, "masks", "irregular")
  for b in (0, 2, 5):
    masks = deg.load_irregular_masks(d, hole_ratio_bin=b, limit=10)
    assert masks.shape == (10, 512, 512, 1) and set(np.unique(masks)) == {0.0, 1.0}
    ratio = masks.mean(axis=(1, 2, 3))
    # Bin b holds hole ratios in [10 b %, 10 (b + 1) %] (bin 0 starts at 1 %).
    assert np.all(ratio >= max(0.1 * b, 0.01) - 0.005) and np.all(ratio <= 0.1 * (b + 1) + 0.005)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    deg.load_irregular_masks(os.path.join(d, "nowhere"))
