"""Image corruptions for restoration: noise, MATLAB bicubic resizing, blur, inpainting masks.

Every random corruption is a pure function ``f(rng, clean, **params) -> degraded`` whose only
source of randomness is ``rng``, so training corrupts clean batches on device inside the
jitted step and evaluation reproduces a corruption from a fixed key. Images are float32
``[B, H, W, C]`` (``[H, W, C]`` is accepted where noted) with values in ``[0, 1]``.
Static parameters (shapes, kernels' sizes, scales) are Python values, fixed at trace time.

Loaders for the published kernels and masks (``load_blur_kernels``, ``load_irregular_masks``)
run on the host with NumPy and are not jitted.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
from PIL import Image

_HIGHEST = jax.lax.Precision.HIGHEST


def _as_batch(x: jax.Array, name: str = "clean") -> tuple[jax.Array, bool]:
  """Returns ``(x as float32 [B, H, W, C], whether a batch axis was added)``."""
  x = jnp.asarray(x)
  if x.ndim == 3:
    return x[None].astype(jnp.float32), True
  if x.ndim == 4:
    return x.astype(jnp.float32), False
  raise ValueError(f"{name} must be [B, H, W, C] or [H, W, C], got shape {x.shape}.")


def _per_example(v: float | jax.Array, batch: int, name: str) -> jax.Array:
  """Broadcasts a scalar or ``[B]`` parameter to ``[B, 1, 1, 1]``."""
  v = jnp.asarray(v, jnp.float32)
  if v.ndim and v.shape != (batch,):
    raise ValueError(f"{name} must be a scalar or [B] = ({batch},), got shape {v.shape}.")
  return jnp.broadcast_to(v, (batch,))[:, None, None, None]


# ---------------------------------------------------------------------------------- noise


def gaussian_noise(rng: jax.Array, clean: jax.Array, *,
                   sigma: float | jax.Array) -> jax.Array:
  """Additive white Gaussian noise, sigma on the 0-255 scale, not clipped.

  ``noisy = clean + sigma / 255 * N(0, 1)`` i.i.d. per pixel and channel; the result is not
  clipped to ``[0, 1]`` because the DnCNN protocol (Zhang et al., TIP 2017,
  ``Demo_test_DnCNN.m``) feeds the unclipped noisy image to the network.

  Args:
    rng: PRNG key.
    clean: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, 1]``.
    sigma: noise std in 0-255 units; a scalar, or ``[B]`` per example (blind denoising draws
      a sigma per image, e.g. uniform in ``[0, 55]`` for DnCNN-B).

  Returns:
    float32, the shape of ``clean``.

  Raises:
    ValueError: ``clean`` is not 3-D/4-D, or ``sigma`` is neither scalar nor ``[B]``.
  """
  x, unbatch = _as_batch(clean)
  s = _per_example(sigma, x.shape[0], "sigma")
  y = x + s / 255.0 * jax.random.normal(rng, x.shape, jnp.float32)
  return y[0] if unbatch else y


def salt_and_pepper(rng: jax.Array, clean: jax.Array, *,
                    density: float | jax.Array) -> jax.Array:
  """Impulse noise: a fraction ``density`` of pixels is set to 0 or 1 with equal odds.

  One uniform draw ``u`` per pixel (shared by all channels, so a corrupted pixel is black or
  white, as MATLAB ``imnoise(I, 'salt & pepper', d)`` does per pixel of a gray image):
  ``u < d/2`` -> 0 (pepper), ``d/2 <= u < d`` -> 1 (salt), otherwise unchanged.

  Args:
    rng: PRNG key.
    clean: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, 1]``.
    density: probability in ``[0, 1]`` that a pixel is corrupted; scalar or ``[B]``.

  Returns:
    float32, the shape of ``clean``.

  Raises:
    ValueError: bad ``clean`` rank or ``density`` shape.
  """
  x, unbatch = _as_batch(clean)
  d = _per_example(density, x.shape[0], "density")
  u = jax.random.uniform(rng, x.shape[:3] + (1,), jnp.float32)
  y = jnp.where(u < d / 2, 0.0, jnp.where(u < d, 1.0, x))
  return y[0] if unbatch else y


def impulse_mask(noisy: jax.Array) -> jax.Array:
  """Salt-and-pepper candidates: 1 where every channel of a pixel is 0 or every one is 1.

  The detector of switching impulse filters (Sun & Neuvo, Pattern Recognit. Lett. 1994)
  for ``salt_and_pepper``'s impulses, which set all channels of a pixel to 0 or to 1.
  Clean pixels at 0 or 1 are flagged too.

  Args:
    noisy: float ``[..., C]`` in ``[0, 1]``.

  Returns:
    float32 ``[..., 1]`` of 0/1.
  """
  x = jnp.asarray(noisy)
  hit = jnp.all(x <= 0.0, axis=-1, keepdims=True) | jnp.all(x >= 1.0, axis=-1, keepdims=True)
  return hit.astype(jnp.float32)


# ------------------------------------------------------------------- MATLAB bicubic resize


def _cubic(t: np.ndarray) -> np.ndarray:
  """Keys (1981) cubic convolution kernel with a = -0.5, as in MATLAB ``imresize``."""
  a = np.abs(t)
  return ((1.5 * a**3 - 2.5 * a**2 + 1.0) * (a <= 1)
          + (-0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2)))


@functools.lru_cache(maxsize=512)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
  """float64 ``[out_len, in_len]`` matrix of MATLAB ``imresize``'s ``contributions()``."""
  width = 4.0
  if scale < 1 and antialias:
    # Antialiasing: the kernel is stretched by 1/scale (a low-pass filter matched to the
    # output sampling rate) and its height scaled to keep unit area.
    kernel = lambda t: scale * _cubic(scale * t)
    width /= scale
  else:
    kernel = _cubic
  x = np.arange(1, out_len + 1, dtype=np.float64)            # 1-based output coordinates
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)                  # their position in the input
  left = np.floor(u - width / 2)
  taps = int(math.ceil(width)) + 2
  ind = left[:, None] + np.arange(taps)[None, :]             # [out, taps], 1-based
  w = kernel(u[:, None] - ind)
  w /= w.sum(axis=1, keepdims=True)
  # 'symmetric' boundary: MATLAB mirrors indices with aux = [1:n, n:-1:1] (edge repeated).
  aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
  idx = aux[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
  m = np.zeros((out_len, in_len), np.float64)
  np.add.at(m, (np.repeat(np.arange(out_len), taps), idx.ravel()), w.ravel())
  return m


def _quantize(x: jax.Array) -> jax.Array:
  """Rounds ``[0, 1]`` values to the 8-bit grid (half away from zero, as MATLAB ``uint8``)."""
  return jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0 + 0.5) / 255.0


def imresize(x: jax.Array, *, scale: float | Sequence[float] | None = None,
             out_hw: Sequence[int] | None = None, antialias: bool = True,
             quantize: bool = False) -> jax.Array:
  """MATLAB-compatible bicubic ``imresize`` (deterministic, jit-able, separable).

  Reproduces MATLAB's ``imresize(A, scale, 'bicubic')`` (Image Processing Toolbox): Keys
  cubic kernel (a = -0.5); when shrinking with ``antialias`` the kernel is widened by
  ``1/scale``; output pixel ``x`` (1-based) samples input position
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; out-of-range taps are mirrored with the edge
  pixel repeated (``aux = [1:n, n:-1:1]``); weights are normalised to sum to 1; the two
  axes are resized one after the other, the axis with the smaller scale first (H first on
  ties). Each axis is one precomputed ``[out, in]`` matrix (NumPy, at trace time) applied with
  ``jnp.einsum`` at HIGHEST precision.

  Args:
    x: float ``[B, H, W, C]`` or ``[H, W, C]`` (any range; integer inputs are cast to float32).
    scale: scale factor, one float for both axes or ``(s_h, s_w)``; the output size is
      ``ceil(scale * size)`` as in MATLAB (a 1e-9 tolerance absorbs float error, e.g.
      ``255 * (1/3)``) and the kernel uses ``scale`` itself.
    out_hw: ``(H_out, W_out)`` instead of ``scale``; then ``scale = out / in`` per axis.
    antialias: MATLAB's ``'Antialiasing'`` option (default true; only affects shrinking).
    quantize: emulate MATLAB on ``uint8`` input (values in ``[0, 1]``): clip and round to the
      8-bit grid after each axis pass, as ``imresizemex`` returns the input class.

  Returns:
    float32 ``[B, H_out, W_out, C]`` (or ``[H_out, W_out, C]``), not clipped (bicubic
    overshoots at edges) unless ``quantize``.

  Raises:
    ValueError: bad rank, neither or both of ``scale``/``out_hw``, or a non-positive size.
  """
  x4, unbatch = _as_batch(x, "x")
  in_hw = x4.shape[1:3]
  if (scale is None) == (out_hw is None):
    raise ValueError(f"imresize needs exactly one of scale / out_hw, got scale={scale!r},"
                     f" out_hw={out_hw!r}.")
  if scale is not None:
    scales = tuple(float(s) for s in (scale if isinstance(scale, Sequence) else (scale,) * 2))
    sizes = tuple(int(math.ceil(s * n - 1e-9)) for s, n in zip(scales, in_hw))
  else:
    sizes = tuple(int(n) for n in out_hw)
    scales = tuple(o / n for o, n in zip(sizes, in_hw))
  if len(sizes) != 2 or min(sizes) <= 0 or min(scales) <= 0:
    raise ValueError(f"imresize: invalid output size {sizes} for input {x4.shape}.")
  y = x4
  for axis in np.argsort(scales, kind="stable"):              # smaller scale first
    m = jnp.asarray(_resize_matrix(in_hw[axis], sizes[axis], scales[axis], antialias),
                    jnp.float32)
    spec = "oh,bhwc->bowc" if axis == 0 else "ow,bhwc->bhoc"
    y = jnp.einsum(spec, m, y, precision=_HIGHEST)
    if quantize:
      y = _quantize(y)
  return y[0] if unbatch else y


def bicubic_downsample(clean: jax.Array, *, scale: int, quantize: bool = False) -> jax.Array:
  """The standard SR degradation: MATLAB ``imresize(clean, 1/scale, 'bicubic')``.

  Args:
    clean: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, 1]``, H and W multiples of
      ``scale`` (``io.modcrop`` first, as the SR benchmarks do).
    scale: integer factor (2, 3, 4, ...).
    quantize: round to the 8-bit grid as MATLAB does on ``uint8`` input (see ``imresize``).

  Returns:
    float32 ``[B, H / scale, W / scale, C]`` (or unbatched).

  Raises:
    ValueError: H or W not divisible by ``scale``.
  """
  x = jnp.asarray(clean)
  if x.ndim not in (3, 4) or x.shape[-3] % scale or x.shape[-2] % scale:  # exact LR size
    raise ValueError(f"bicubic_downsample needs [B, H, W, C] with H, W multiples of scale="
                     f"{scale}, got shape {x.shape}; modcrop the image first.")
  return imresize(x, scale=1.0 / scale, antialias=True, quantize=quantize)


# -------------------------------------------------------------------------------- blur


def blur(clean: jax.Array, *, kernel: np.ndarray | jax.Array) -> jax.Array:
  """Convolves every channel with a 2-D kernel, circular ('wrap') boundary.

  Circular boundaries are what the IRCNN/DPIR non-blind deblurring benchmarks use
  (``scipy.ndimage.convolve(x, k[..., None], mode='wrap')`` in DPIR's
  ``main_dpir_deblur.py``): the blur is then exactly diagonal in the Fourier domain, which
  is what FFT-based data terms assume. The result equals that SciPy call, also for
  even-sized kernels (true convolution, kernel flipped).

  Args:
    clean: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, 1]``.
    kernel: float ``[kh, kw]`` (normally summing to 1, e.g. from ``load_blur_kernels``),
      or ``[B, kh, kw]``: one kernel per image (e.g. ``stack_kernels(...)[index]``).

  Returns:
    float32, the shape of ``clean``.

  Raises:
    ValueError: bad rank of ``clean`` or ``kernel``, or a per-image kernel stack whose
      length is not the batch size.
  """
  x, unbatch = _as_batch(clean)
  k = jnp.asarray(kernel, jnp.float32)
  if k.ndim == 3:
    if k.shape[0] != x.shape[0]:
      raise ValueError(f"per-image kernels {k.shape} need one kernel per image of"
                       f" {x.shape}.")
    y = jax.vmap(lambda xi, ki: _blur_one(xi[None], ki)[0])(x, k)
  elif k.ndim == 2:
    y = _blur_one(x, k)
  else:
    raise ValueError(f"kernel must be [kh, kw] or [B, kh, kw], got shape {k.shape}.")
  return y[0] if unbatch else y


def _blur_one(x: jax.Array, k: jax.Array) -> jax.Array:
  """``blur`` of ``[B, H, W, C]`` with one ``[kh, kw]`` kernel."""
  kh, kw = k.shape
  c = x.shape[-1]
  # scipy's convolve centres the flipped kernel at index k // 2 (origin shifted for even
  # sizes), i.e. y[i] = sum_j k[j] x[i - j + k // 2].
  ch, cw = kh // 2, kw // 2
  xp = jnp.pad(x, ((0, 0), (kh - 1 - ch, ch), (kw - 1 - cw, cw), (0, 0)), mode="wrap")
  rhs = jnp.tile(k[::-1, ::-1, None, None], (1, 1, 1, c))      # HWIO, one filter per channel
  return jax.lax.conv_general_dilated(
      xp, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c, precision=_HIGHEST)


def stack_kernels(kernels: Sequence[np.ndarray]) -> np.ndarray:
  """Zero-pads kernels of different sizes to one ``[N, K, K]`` stack, origins aligned.

  Each kernel's origin (index ``k // 2`` per axis, the centre ``blur`` uses) lands on
  index ``K // 2``, so ``blur(x, kernel=stack[i])`` equals ``blur(x, kernel=kernels[i])``
  exactly (added zeros contribute nothing). ``K`` is the largest side, made odd.

  Args:
    kernels: 2-D float arrays, e.g. the 8 Levin kernels (13x13 to 27x27).

  Returns:
    float32 ``[N, K, K]``.

  Raises:
    ValueError: no kernels, or one that is not 2-D.
  """
  if not kernels:
    raise ValueError("stack_kernels needs at least one kernel.")
  for i, k in enumerate(kernels):
    if np.ndim(k) != 2:
      raise ValueError(f"kernel {i} has shape {np.shape(k)}, expected [kh, kw].")
  size = max(max(np.shape(k)) for k in kernels) | 1
  out = np.zeros((len(kernels), size, size), np.float32)
  for i, k in enumerate(kernels):
    kh, kw = np.shape(k)
    top, left = size // 2 - kh // 2, size // 2 - kw // 2
    out[i, top:top + kh, left:left + kw] = k
  return out


def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
  """Normalised isotropic Gaussian blur kernel ``[size, size]`` (float32, sums to 1).

  ``size`` defaults to ``2 * ceil(3 sigma) + 1``. The offline stand-in for the Levin
  kernels when ``$GENREPAIR_DATA`` is absent (and the 'Gaussian' kernels of IRCNN).

  Raises:
    ValueError: ``sigma <= 0`` or an even/non-positive ``size``.
  """
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}.")
  size = size or 2 * math.ceil(3 * sigma) + 1
  if size < 1 or size % 2 == 0:
    raise ValueError(f"size must be odd and positive, got {size}.")
  t = np.arange(size, dtype=np.float64) - size // 2
  g = np.exp(-0.5 * (t / sigma) ** 2)
  k = np.outer(g, g)
  return (k / k.sum()).astype(np.float32)


def blur_noise(rng: jax.Array, clean: jax.Array, *, kernel: np.ndarray | jax.Array,
               sigma: float | jax.Array) -> jax.Array:
  """``blur`` followed by ``gaussian_noise`` (sigma on the 0-255 scale, not clipped).

  The non-blind deblurring setting of IRCNN/DPIR (Zhang et al., CVPR 2017 / TPAMI 2021):
  ``y = k (*) x + n``, e.g. sigma = 2.55 (1% noise) or 7.65 (3%). Arguments, shapes and
  errors as ``blur`` and ``gaussian_noise``; returns float32 of the shape of ``clean``.
  """
  return gaussian_noise(rng, blur(clean, kernel=kernel), sigma=sigma)


def load_blur_kernels(path: str) -> list[np.ndarray]:
  """Reads a cell array of blur kernels from a MATLAB ``.mat`` file.

  Handles both MATLAB v7.3 (HDF5, read with h5py: ``Levin09.mat``, a cell array of object
  references that are dereferenced and transposed from column-major storage) and v5
  (``kernels_12.mat`` is v5 despite its origin, read with ``scipy.io.loadmat``, which builds
  plain arrays and executes nothing). The variable ``kernels`` is used, else the only one.

  Args:
    path: the ``.mat`` file, e.g. ``$GENREPAIR_DATA/blur/Levin09.mat``.

  Returns:
    list of float32 ``[kh, kw]`` arrays in file (cell) order, row-major ``[y, x]``.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: no unique kernel variable, or a cell is not a 2-D array.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Blur kernel file not found: {path!r}.")
  if h5py.is_hdf5(path):
    with h5py.File(path, "r") as f:
      names = [n for n in f.keys() if not n.startswith("#")]
      name = "kernels" if "kernels" in names else (names[0] if len(names) == 1 else None)
      if name is None:
        raise ValueError(f"{path!r}: expected a 'kernels' variable, found {names}.")
      cells = f[name][()]
      kernels = [np.asarray(f[ref][()]).T for ref in cells.T.ravel()]  # MATLAB order
  else:
    m = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    name = "kernels" if "kernels" in m else (next(iter(m)) if len(m) == 1 else None)
    if name is None:
      raise ValueError(f"{path!r}: expected a 'kernels' variable, found {sorted(m)}.")
    cells = m[name]
    kernels = list(cells.T.ravel()) if cells.dtype == object else [cells]
  out = []
  for i, k in enumerate(kernels):
    k = np.asarray(k, np.float32)
    if k.ndim != 2:
      raise ValueError(f"{path!r}: kernel {i} has shape {k.shape}, expected [kh, kw].")
    out.append(k)
  return out


# ------------------------------------------------------------------------- inpainting


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
  if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 1):
    raise ValueError(f"mask shape must be (B, H, W) or (B, H, W, 1), got {tuple(shape)}.")
  return int(shape[0]), int(shape[1]), int(shape[2])


def random_box_mask(rng: jax.Array, shape: Sequence[int], *, num_boxes: int = 1,
                    min_frac: float = 0.1, max_frac: float = 0.5) -> jax.Array:
  """Axis-aligned rectangular holes at uniformly random positions.

  Each box's height and width are drawn uniformly in ``[min_frac, max_frac]`` of H and W
  (independently), and its top-left corner uniformly so the box lies inside the image, as in
  the centre/random-block masks of Context Encoders (Pathak et al., CVPR 2016).

  Args:
    rng: PRNG key.
    shape: ``(B, H, W)`` or ``(B, H, W, 1)``.
    num_boxes: boxes per image (they may overlap).
    min_frac: smallest box side as a fraction of the image side, in ``(0, 1]``.
    max_frac: largest box side fraction, ``>= min_frac``.

  Returns:
    float32 ``[B, H, W, 1]``, 1 = hole, 0 = known pixel.

  Raises:
    ValueError: bad ``shape`` or fractions.
  """
  b, h, w = _check_shape(shape)
  if not 0 < min_frac <= max_frac <= 1:
    raise ValueError(f"need 0 < min_frac <= max_frac <= 1, got {min_frac}, {max_frac}.")
  u = jax.random.uniform(rng, (4, b, num_boxes))
  bh = jnp.floor((min_frac + (max_frac - min_frac) * u[0]) * h)     # [B, N] pixels
  bw = jnp.floor((min_frac + (max_frac - min_frac) * u[1]) * w)
  top = jnp.floor(u[2] * (h - bh + 1))
  left = jnp.floor(u[3] * (w - bw + 1))
  ys = jnp.arange(h, dtype=jnp.float32)[None, None, :, None]         # [1, 1, H, 1]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, None, :]         # [1, 1, 1, W]
  e = lambda v: v[:, :, None, None]
  inside = ((ys >= e(top)) & (ys < e(top + bh)) & (xs >= e(left)) & (xs < e(left + bw)))
  return jnp.any(inside, axis=1).astype(jnp.float32)[..., None]


def random_stroke_mask(rng: jax.Array, shape: Sequence[int], *, max_strokes: int = 3,
                       min_vertices: int = 4, max_vertices: int = 11,
                       min_width: float = 12.0, max_width: float = 40.0) -> jax.Array:
  """Free-form brush-stroke holes, after DeepFill v2's ``brush_stroke_mask``.

  Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019: 1..max_strokes
  polylines of min..max_vertices segments with zig-zag angles (mean 2pi/5, spread 2pi/15,
  alternately mirrored), segment lengths ~ N(r, r/2) clipped to ``[0, 2r]`` with
  ``r = sqrt(H^2 + W^2) / 8``, vertices clipped to the image, and a brush width uniform in
  ``[min_width, max_width]`` pixels at 256x256 (scaled by ``min(H, W) / 256``). A pixel is a
  hole when its distance to a segment is at most half the width (round joints and caps, as
  the reference's line + circles at vertices).

  Args:
    rng: PRNG key.
    shape: ``(B, H, W)`` or ``(B, H, W, 1)``.
    max_strokes: most strokes per image (at least one is drawn).
    min_vertices: fewest segments per stroke.
    max_vertices: most segments per stroke (the static length of the scan).
    min_width: smallest brush width in pixels at 256x256.
    max_width: largest brush width in pixels at 256x256.

  Returns:
    float32 ``[B, H, W, 1]``, 1 = hole.

  Raises:
    ValueError: bad ``shape`` or counts.
  """
  b, h, w = _check_shape(shape)
  if not 1 <= min_vertices <= max_vertices or max_strokes < 1:
    raise ValueError(f"need max_strokes >= 1 and 1 <= min_vertices <= max_vertices, got"
                     f" {max_strokes}, {min_vertices}, {max_vertices}.")
  s, v = max_strokes, max_vertices
  # One uniform and one normal draw (fewer PRNG kernels to compile), sliced per quantity.
  k_u, k_n = jax.random.split(rng)
  u = jax.random.uniform(k_u, (b, s, v + 7))
  size = jnp.array([w, h], jnp.float32)
  radius = math.sqrt(h * h + w * w) / 8
  n_strokes = 1 + jnp.floor(u[:, :1, 0] * s)                                  # [B, 1]
  n_vert = min_vertices + jnp.floor(u[..., 1] * (v - min_vertices + 1))       # [B, S]
  mean, spread = 2 * math.pi / 5, 2 * math.pi / 15
  lo, hi = mean - spread * u[..., 2:3], mean + spread * u[..., 3:4]
  start = u[..., 4:6] * size                                                   # [B, S, 2]
  half = (min_width + (max_width - min_width) * u[..., 6]) * min(h, w) / 256 / 2
  ang = lo + (hi - lo) * u[..., 7:]                                            # [B, S, V]
  ang = jnp.where(jnp.arange(v) % 2 == 0, 2 * math.pi - ang, ang)
  length = jnp.clip(radius + radius / 2 * jax.random.normal(k_n, (b, s, v)), 0, 2 * radius)

  def vertex(p, inp):                                    # p [B, S, 2] = (x, y)
    a, r = inp                                           # [B, S] each
    q = jnp.clip(p + r[..., None] * jnp.stack([jnp.cos(a), jnp.sin(a)], -1), 0, size)
    return q, q

  _, ends = jax.lax.scan(vertex, start, (jnp.moveaxis(ang, -1, 0),
                                         jnp.moveaxis(length, -1, 0)))  # [V, B, S, 2]
  begins = jnp.concatenate([start[None], ends[:-1]], 0)
  active = ((jnp.arange(s)[None, None, :] < n_strokes[None])
            & (jnp.arange(v)[:, None, None] < n_vert[None]))          # [V, B, S]
  flat = lambda t: jnp.moveaxis(t, 2, 1).reshape((v * s, b) + t.shape[3:])
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :]

  def segment(hole, inp):                                # hole [B, H, W]
    p, q, act, r = inp                                   # [B, 2], [B, 2], [B], [B]
    d = q - p
    dd = jnp.maximum(jnp.sum(d * d, -1), 1e-12)[:, None, None]
    px, py = xs - p[:, 0, None, None], ys - p[:, 1, None, None]      # [B, H, W]
    dx, dy = d[:, 0, None, None], d[:, 1, None, None]
    t = jnp.clip((px * dx + py * dy) / dd, 0, 1)        # closest point on the segment
    near = (px - t * dx)**2 + (py - t * dy)**2 <= r[:, None, None]**2
    return hole | (act[:, None, None] & near), None

  hole, _ = jax.lax.scan(segment, jnp.zeros((b, h, w), bool),
                         (flat(begins), flat(ends), flat(active),
                          flat(jnp.broadcast_to(half[None], (v, b, s)))))
  return hole.astype(jnp.float32)[..., None]


def load_irregular_masks(directory: str, *, hole_ratio_bin: int | None = None,
                         limit: int | None = None) -> np.ndarray:
  """Reads NVIDIA irregular inpainting masks (Liu et al., ECCV 2018) from PNG files.

  Pixels > 127 are holes (the files are 0/255 with 255 = hole). The NVIDIA test set numbers
  its 12,000 files so that ``number // 2000`` is the hole-ratio bin (0: 1-10%, 1: 10-20%, ...,
  5: 50-60%), which ``hole_ratio_bin`` selects.

  Args:
    directory: folder of ``NNNNN.png`` masks, e.g. ``$GENREPAIR_DATA/masks/irregular``.
    hole_ratio_bin: keep only this bin (0..5); ``None`` keeps all.
    limit: keep at most this many (after sorting by name and filtering).

  Returns:
    float32 ``[N, H, W, 1]`` in {0, 1}, 1 = hole, sorted by file name.

  Raises:
    FileNotFoundError: ``directory`` missing or no PNG selected.
    ValueError: masks of different sizes, or a bad ``hole_ratio_bin``.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"Mask directory not found: {directory!r}.")
  if hole_ratio_bin is not None and hole_ratio_bin not in range(6):
    raise ValueError(f"hole_ratio_bin must be in 0..5, got {hole_ratio_bin!r}.")
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(".png"))
  if hole_ratio_bin is not None:
    names = [n for n in names
             if n[:-4].isdigit() and int(n[:-4]) // 2000 == hole_ratio_bin]
  names = names[:limit]
  if not names:
    raise FileNotFoundError(f"No mask PNGs selected in {directory!r} "
                            f"(hole_ratio_bin={hole_ratio_bin}, limit={limit}).")
  masks = []
  for n in names:
    with Image.open(os.path.join(directory, n)) as im:
      masks.append(np.asarray(im.convert("L")) > 127)
  if len({m.shape for m in masks}) != 1:
    raise ValueError(f"Masks in {directory!r} differ in size: {sorted({m.shape for m in masks})}.")
  return np.stack(masks).astype(np.float32)[..., None]


def apply_mask(clean: jax.Array, mask: jax.Array, fill: float = 0.0) -> jax.Array:
  """Replaces hole pixels (mask = 1) with ``fill``: ``clean * (1 - mask) + fill * mask``.

  Args:
    clean: float ``[B, H, W, C]`` or ``[H, W, C]`` in ``[0, 1]``.
    mask: float ``[B, H, W, 1]`` (or ``[H, W, 1]``), 1 = hole; broadcast over channels.
    fill: value written into holes.

  Returns:
    float32, the shape of ``clean``.

  Raises:
    ValueError: ``mask`` does not broadcast against ``clean``'s spatial shape.
  """
  x = jnp.asarray(clean, jnp.float32)
  m = jnp.asarray(mask, jnp.float32)
  if m.ndim != x.ndim or m.shape[-1] != 1 or m.shape[:-1] != x.shape[:-1]:
    raise ValueError(f"mask must have shape {x.shape[:-1] + (1,)} for clean {x.shape},"
                     f" got {m.shape}.")
  return x * (1.0 - m) + fill * m
