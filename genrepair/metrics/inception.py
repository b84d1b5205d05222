r"""The FID Inception-v3 as a feature extractor: weights file, preprocessing, batched features.

The network is :mod:`genrepair.models.inception` (Szegedy et al., CVPR 2016, in the form of
the TF ``inception-2015-12-05`` graph that the FID code of Heusel et al. 2017 and the IS code
of Salimans et al. 2016 run). :class:`InceptionExtractor` returns its 2048-d ``pool3``
features (FID, KID: Binkowski et al. 2018) and bias-free ``logits_unbiased`` (IS);
:mod:`genrepair.metrics.fid` turns them into numbers with a recorded protocol.

**Weights** come from a local ``.npz`` only: ``load_weights`` reads it with
``allow_pickle=False``, checks its sha256 when one is given (``config.eval.inception_sha256``),
checks that it was converted from the official ``pt_inception-2015-12-05-6726825d.pth``
(whose sha256 the converter records in the file) and checks every key and shape. The file is
not shipped (91 MB, and its licence is that of the TF model); how to make it, once, offline:
:mod:`genrepair.weights.inception_convert`. Default location:
``$GENREPAIR_DATA/weights/inception/fid_inception_v3_2015-12-05.npz``.

**Preprocessing** (recorded by :func:`genrepair.metrics.fid.protocol` with every number):

1. uint8 ``u`` in ``[0, 255]`` as float, or float ``x`` in ``[-1, 1]`` (the GAN range) as
   ``(x + 1) * 127.5``;
2. resize to 299x299, per channel, in float32, by ``resize`` mode:

   * ``'pil_bicubic'`` (default): PIL's ``Image.resize(BICUBIC)`` of a float32 ``'F'``
     image (Keys cubic, a = -0.5, the kernel widened by the scale factor when shrinking,
     i.e. antialiased), then clipped to ``[0, 255]``; clean-fid's "clean" resize
     (Parmar et al., CVPR 2022), which the issue's protocol asks for;
   * ``'bilinear'``: PyTorch ``F.interpolate(mode='bilinear', align_corners=False)``
     without antialiasing, as pytorch-fid (aliased when shrinking);

   both are exact per-axis resampling matrices applied as two float32 matmuls
   (width first, as PIL);
3. scaled to ``[-1, 1]`` as pytorch-fid: ``v / 127.5 - 1`` (= ``2 (v / 255) - 1``);
4. one-channel images are repeated to three.

So numbers are comparable with clean-fid's "clean" FID only in resize; clean-fid's network
normalises with ``(v - 128) / 128``, pytorch-fid's (used here) with ``v / 127.5 - 1``.

Features are computed in batches of fixed size (the last one padded), jitted once per input
shape, float32 with ``precision=HIGHEST``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genrepair.metrics.digits import sha256_of
from genrepair.models import inception as inception_model

SIZE = 299
RESIZE_MODES = ("pil_bicubic", "bilinear")
DEFAULT_RESIZE = "pil_bicubic"
WEIGHTS_FILE = "fid_inception_v3_2015-12-05.npz"
WEIGHTS_SUBPATH = os.path.join("weights", "inception", WEIGHTS_FILE)
DEFAULT_BATCH = 50
_BICUBIC_A = -0.5  # PIL's (and Keys') cubic convolution parameter
# The official source file and what the converter records in the .npz.
SOURCE_FILE = "pt_inception-2015-12-05-6726825d.pth"
SOURCE_SHA256_PREFIX = "6726825d"  # torch.hub names files with their sha256's first digits
FORMAT = "genrepair/fid-inception-v3/1"
META_FORMAT = "meta/format"
META_SOURCE = "meta/source_sha256"


class WeightsError(ValueError):
  """The Inception weights file has missing, unexpected or misshapen arrays."""


class ChecksumError(ValueError):
  """The Inception weights file is not the expected one (sha256 or source)."""


# ---------------------------------------------------------------- weights

def default_weights_path(data_dir: str = "") -> str:
  """``<data_dir or $GENREPAIR_DATA>/weights/inception/fid_inception_v3_2015-12-05.npz``.

  Returns the relative ``weights/inception/...`` path when neither is set (so the error
  that follows names what is missing).
  """
  root = data_dir or os.environ.get("GENREPAIR_DATA", "")
  return os.path.join(root, WEIGHTS_SUBPATH) if root else WEIGHTS_SUBPATH


def _missing_message(path: str) -> str:
  return (f"FID Inception weights not found at {path!r}. They are not shipped; make them once,"
          f" offline: download {SOURCE_FILE} from the 'fid_weights' release of"
          " mseitzer/pytorch-fid on GitHub, then run `python -m"
          f" genrepair.weights.inception_convert {SOURCE_FILE} {path}` (needs torch),"
          " or point config.eval.inception_weights at an existing converted file.")


@dataclasses.dataclass(frozen=True)
class InceptionWeights:
  """Verified FID Inception variables.

  Attributes:
    variables: ``{'params': ..., 'batch_stats': ...}`` of
      :class:`genrepair.models.inception.FIDInceptionV3`, float32 NumPy arrays.
    sha256: the ``.npz`` file's sha256 (recorded in the protocol).
    source_sha256: sha256 of the ``.pth`` it was converted from.
    path: the file read.
  """
  variables: Mapping[str, Any]
  sha256: str
  source_sha256: str
  path: str


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
  """``{npz key: shape}`` of the model's variables (computed abstractly, no FLOPs)."""
  model = inception_model.Model()
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, SIZE, SIZE, 3), jnp.float32))
  return {k: tuple(v.shape) for k, v in flatten(abstract).items()}


def flatten(variables: Mapping[str, Any]) -> dict[str, Any]:
  """``{'<collection>/<module path>/<leaf>': array}`` of a variables tree."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
    flat["/".join(str(k.key) for k in path)] = leaf
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of :func:`flatten`."""
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _meta_str(value: np.ndarray | None) -> str:
  if value is None or value.size != 1 or value.dtype.kind != "U":
    return ""
  return str(value.reshape(()))


def load_weights(path: str, *, sha256: str | None = None,
                 require_official: bool = True) -> InceptionWeights:
  """Reads and verifies a converted FID Inception ``.npz`` (never unpickles).

  Args:
    path: the file written by :mod:`genrepair.weights.inception_convert`.
    sha256: expected hex sha256 of the file (``None``: not pinned, only recorded).
    require_official: the file must record a source whose sha256 starts with
      ``6726825d`` (pytorch-fid's official file). ``False`` for test weights.

  Returns:
    :class:`InceptionWeights`.

  Raises:
    FileNotFoundError: no file (the message says how to make one).
    ChecksumError: sha256 differs from ``sha256``, or the source is not official.
    WeightsError: not this format, a missing or unexpected key, a wrong shape or a
      non-float array (each message names the key).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(_missing_message(path))
  digest = sha256_of(path)
  if sha256 and digest != sha256.strip().lower():
    raise ChecksumError(f"{path}: sha256 {digest} differs from the expected {sha256}; the file"
                        " is not the one the protocol pins (re-convert it, or fix"
                        " config.eval.inception_sha256).")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (ValueError, OSError) as e:  # not a zip, or an object array
    raise WeightsError(f"{path}: not an arrays-only .npz ({e}).") from e
  fmt, source = _meta_str(arrays.pop(META_FORMAT, None)), _meta_str(arrays.pop(META_SOURCE, None))
  if fmt != FORMAT:
    raise WeightsError(f"{path}: key {META_FORMAT!r} is {fmt!r}, expected"
                       f" {FORMAT!r} (write the file with"
                       " genrepair.weights.inception_convert).")
  if require_official and not source.startswith(SOURCE_SHA256_PREFIX):
    raise ChecksumError(f"{path}: converted from a file with sha256 {source or '(none)'}, not"
                        f" from the official {SOURCE_FILE} (sha256"
                        f" {SOURCE_SHA256_PREFIX}...).")
  want = expected_shapes()
  for key in sorted(want):
    if key not in arrays:
      raise WeightsError(f"{path}: missing key {key!r} (shape {want[key]}); "
                         f"{len(set(want) - set(arrays))} of {len(want)} keys are missing.")
  for key in sorted(arrays):
    if key not in want:
      raise WeightsError(f"{path}: unexpected key {key!r} (shape {arrays[key].shape}); not a"
                         " variable of the FID Inception.")
    if tuple(arrays[key].shape) != want[key]:
      raise WeightsError(f"{path}: key {key!r} has shape {tuple(arrays[key].shape)}, the model"
                         f" needs {want[key]}.")
    if not np.issubdtype(arrays[key].dtype, np.floating):
      raise WeightsError(f"{path}: key {key!r} has dtype {arrays[key].dtype}, expected float.")
  variables = unflatten({k: v.astype(np.float32) for k, v in arrays.items()})
  return InceptionWeights(variables, digest, source, path)


# ---------------------------------------------------------------- preprocessing

def _cubic(x: np.ndarray) -> np.ndarray:
  x = np.abs(x)
  a = _BICUBIC_A
  return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_matrix(in_size: int, out_size: int, mode: str = DEFAULT_RESIZE) -> np.ndarray:
  """The ``[out_size, in_size]`` matrix of one axis of a separable resize.

  ``'pil_bicubic'``: Pillow's ``precompute_coeffs`` (Resample.c) with its bicubic filter:
  for output pixel ``i``, ``center = (i + 0.5) * s`` with ``s = in / out``, the kernel
  support ``2 * max(s, 1)``, taps ``j`` in ``[int(center - support + 0.5), int(center +
  support + 0.5))`` clipped to the image, weights ``cubic((j - center + 0.5) / max(s, 1))``
  normalised to sum 1. ``'bilinear'``: PyTorch ``upsample_bilinear2d`` with
  ``align_corners=False``: source ``max((i + 0.5) * s - 0.5, 0)``, linear between its floor
  and the next pixel (the last pixel repeats).

  Args:
    in_size, out_size: lengths >= 1.
    mode: one of :data:`RESIZE_MODES`.

  Returns:
    float64 ``[out_size, in_size]``, rows summing to 1 (the identity when sizes agree).

  Raises:
    ValueError: unknown mode or a size < 1.
  """
  if mode not in RESIZE_MODES:
    raise ValueError(f"Unknown resize mode {mode!r}; known: {RESIZE_MODES}.")
  if in_size < 1 or out_size < 1:
    raise ValueError(f"resize_matrix: sizes must be >= 1, got {in_size} -> {out_size}.")
  scale = in_size / out_size
  m = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    if mode == "bilinear":
      src = max((i + 0.5) * scale - 0.5, 0.0)
      j0 = min(int(np.floor(src)), in_size - 1)
      j1 = min(j0 + 1, in_size - 1)
      frac = min(max(src - j0, 0.0), 1.0)
      m[i, j0] += 1.0 - frac
      m[i, j1] += frac
    else:
      filterscale = max(scale, 1.0)
      support = 2.0 * filterscale
      center = (i + 0.5) * scale
      lo = max(int(center - support + 0.5), 0)
      hi = min(int(center + support + 0.5), in_size)
      taps = np.arange(lo, hi)
      w = _cubic((taps - center + 0.5) / filterscale)
      m[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
  return m


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"{name}: expected [N, H, W, C] images with C in {{1, 3}}, got shape"
                     f" {images.shape}.")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"{name}: expected uint8 in [0, 255] or float in [-1, 1], got"
                     f" {images.dtype}.")
  if images.size:
    lo, hi = float(images.min()), float(images.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.001 or hi > 1.001:
      raise ValueError(f"{name}: float images must lie in [-1, 1] (the GAN range), got values"
                       f" in [{lo:.3g}, {hi:.3g}].")
  return images.astype(np.float32)


def preprocess(images: jax.Array, resize: str = DEFAULT_RESIZE) -> jax.Array:
  """Images -> the network's input (steps 1-4 of the module docstring); traceable.

  Args:
    images: uint8 ``[B, H, W, C]`` in ``[0, 255]`` or float ``[B, H, W, C]`` in ``[-1, 1]``,
      C in {1, 3}.
    resize: one of :data:`RESIZE_MODES`.

  Returns:
    float32 ``[B, 299, 299, 3]`` in ``[-1, 1]``.
  """
  if images.dtype == jnp.uint8:
    v = images.astype(jnp.float32)                       # [B, H, W, C] in [0, 255]
  else:
    v = (images.astype(jnp.float32) + 1.0) * 127.5
  _, h, w, _ = images.shape
  hi = jax.lax.Precision.HIGHEST
  if w != SIZE:  # width first, as PIL
    v = jnp.einsum("pw,bhwc->bhpc", jnp.asarray(resize_matrix(w, SIZE, resize), jnp.float32),
                   v, precision=hi)                      # [B, H, 299, C]
  if h != SIZE:
    v = jnp.einsum("oh,bhpc->bopc", jnp.asarray(resize_matrix(h, SIZE, resize), jnp.float32),
                   v, precision=hi)                      # [B, 299, 299, C]
  if resize == "pil_bicubic":
    v = jnp.clip(v, 0.0, 255.0)  # clean-fid clips the cubic overshoot
  x = v / 127.5 - 1.0
  if x.shape[-1] == 1:
    x = jnp.tile(x, (1, 1, 1, 3))
  return x


# ---------------------------------------------------------------- features

class InceptionExtractor:
  """Batched, jitted FID Inception features of uint8 or [-1, 1] images.

  Every device call gets ``batch_size`` images (the last chunk is zero-padded and the
  padding dropped), so N images of one size compile once. The variables are placed on
  the default device once and passed as an argument (not baked into the program).

  Attributes:
    resize: the resize mode (:data:`RESIZE_MODES`).
    batch_size: images per call.
    weights_sha256, source_sha256: of the weights file (``''`` for raw variables).
  """

  def __init__(self, weights: InceptionWeights | Mapping[str, Any], *,
               resize: str = DEFAULT_RESIZE, batch_size: int = DEFAULT_BATCH):
    """Builds the extractor.

    Args:
      weights: :class:`InceptionWeights`, or a raw ``{'params', 'batch_stats'}`` tree.
      resize: one of :data:`RESIZE_MODES`.
      batch_size: images per compiled call (>= 1).

    Raises:
      ValueError: unknown resize mode or batch_size < 1.
    """
    if resize not in RESIZE_MODES:
      raise ValueError(f"Unknown resize mode {resize!r}; known: {RESIZE_MODES}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.resize = resize
    self.batch_size = int(batch_size)
    is_file = isinstance(weights, InceptionWeights)
    self.weights_sha256 = weights.sha256 if is_file else ""
    self.source_sha256 = weights.source_sha256 if is_file else ""
    self._variables = jax.device_put(dict(weights.variables if is_file else weights))
    model = inception_model.Model()

    def forward(variables, images):  # [B, H, W, C] -> {pool3 [B, 2048], logits_unbiased}
      out = model.apply(variables, preprocess(images, resize))
      return {"pool3": out["pool3"], "logits_unbiased": out["logits_unbiased"]}

    self._forward = jax.jit(forward)

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """Features of ``images``.

    Args:
      images: uint8 ``[N, H, W, C]`` in ``[0, 255]`` or float in ``[-1, 1]``; C in {1, 3}.

    Returns:
      ``{'pool3': float32 [N, 2048], 'logits_unbiased': float32 [N, 1008]}``.

    Raises:
      ValueError: bad shape, dtype or range (see :func:`preprocess`).
    """
    images = _check_images(images)
    n = images.shape[0]
    out: dict[str, list[np.ndarray]] = {"pool3": [], "logits_unbiased": []}
    for i in range(0, n, self.batch_size):
      chunk = images[i:i + self.batch_size]
      m = chunk.shape[0]
      if m < self.batch_size:  # pad: one compiled shape per image size
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - m, *chunk.shape[1:]),
                                                chunk.dtype)])
      for k, v in jax.device_get(self._forward(self._variables, chunk)).items():
        out[k].append(np.asarray(v[:m], np.float32))
    return {k: (np.concatenate(v) if v else np.zeros((0, d), np.float32))
            for (k, v), d in zip(out.items(), (2048, 1008))}
