r"""FID, KID and IS of image sets and generators on FID Inception features (``launch.py eval``).

Images go through :class:`genrepair.metrics.inception.InceptionExtractor` (the FID
Inception-v3 of Szegedy et al. 2016 in the TF 2015-12-05 form, weights from a verified local
file, the resize and scaling of that module's docstring) in fixed-size batches; the results
are accumulated as they arrive (:class:`FeatureSet`: float64 streaming statistics for FID,
the kept rows for KID and IS), and scored by :mod:`genrepair.metrics.generative`:

* **FID** (Heusel et al., NeurIPS 2017): Frechet distance of the pool3 Gaussians;
* **KID** (Binkowski et al., ICLR 2018): unbiased MMD^2, cubic polynomial kernel, mean and
  std over 100 subsets of min(1000, N);
* **IS** (Salimans et al., NeurIPS 2016): softmax of ``pool3 @ W`` (no bias) over 1008
  classes, 10 splits.

:func:`evaluate_generator` is what a GAN task's ``evaluate`` calls for image datasets: N
samples drawn chunk by chunk (never all in memory) against a dataset split, with
:func:`protocol` stored beside the numbers. Memory: O(2048^2) for the statistics plus
12 KB per image for KID/IS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genrepair.metrics import generative
from genrepair.metrics import inception
from genrepair.metrics.inception import InceptionExtractor


@dataclasses.dataclass
class FeatureSet:
  """Features of one image set, accumulated chunk by chunk.

  Attributes:
    stats: streaming float64 mean/covariance of ``pool3`` (FID).
    pool3: the ``[n, 2048]`` chunks kept for KID (empty when not kept).
    logits: the ``[n, 1008]`` ``logits_unbiased`` chunks kept for IS (empty when not kept).
  """
  stats: generative.FeatureStats = dataclasses.field(default_factory=generative.FeatureStats)
  pool3: list[np.ndarray] = dataclasses.field(default_factory=list)
  logits: list[np.ndarray] = dataclasses.field(default_factory=list)

  def add(self, feats: Mapping[str, np.ndarray], *, keep: bool = True) -> None:
    """Adds an extractor output; ``keep`` stores the rows for KID and IS."""
    self.stats.update(feats["pool3"])
    if keep:
      self.pool3.append(feats["pool3"])
      self.logits.append(feats["logits_unbiased"])

  def features(self) -> np.ndarray:
    """float32 ``[N, 2048]`` of the kept rows."""
    return np.concatenate(self.pool3) if self.pool3 else np.zeros((0, 2048), np.float32)

  def all_logits(self) -> np.ndarray:
    """float32 ``[N, 1008]`` of the kept rows."""
    return np.concatenate(self.logits) if self.logits else np.zeros((0, 1008), np.float32)


def extract(extractor: InceptionExtractor, batches: Iterable[np.ndarray], *,
            keep: bool = True) -> FeatureSet:
  """Streams image batches (each ``[n, H, W, C]``, any n) through ``extractor``.

  Host memory is O(2048^2) for the statistics, plus 12 KB per image when ``keep`` (KID, IS).
  """
  out = FeatureSet()
  for batch in batches:
    out.add(extractor(batch), keep=keep)
  return out


def scores(fake: FeatureSet, real: FeatureSet, *, kid_subsets: int = 100,
           kid_subset_size: int = 1000, seed: int = 0, is_splits: int = 10) -> dict[str, float]:
  """FID, KID and IS of ``fake`` against ``real`` (KID/IS need kept rows).

  Returns:
    ``{'fid', 'kid', 'kid_std', 'is', 'is_std', 'num_fake', 'num_real'}``: FID from the
    streaming float64 statistics (Heusel et al. 2017); KID mean/std over subsets of the kept
    pool3 rows (Binkowski et al. 2018); IS of ``fake``'s logits (Salimans et al. 2016).

  Raises:
    ValueError: fewer than 2 samples in a set, or fewer fake samples than IS splits.
  """
  kid_mean, kid_std = generative.kid(real.features(), fake.features(), num_subsets=kid_subsets,
                                     subset_size=kid_subset_size, seed=seed)
  is_mean, is_std = generative.inception_score(fake.all_logits(), num_splits=is_splits)
  return {"fid": generative.fid_from_stats(real.stats, fake.stats), "kid": kid_mean,
          "kid_std": kid_std, "is": is_mean, "is_std": is_std,
          "num_fake": float(fake.stats.count), "num_real": float(real.stats.count)}


def protocol(extractor: InceptionExtractor, **extra: Any) -> dict[str, Any]:
  """What a FID/KID/IS number from ``extractor`` means; store it with every number."""
  resize = {"pil_bicubic": "PIL Image.resize BICUBIC (a=-0.5, antialiased) of float32"
                           " per-channel images, clipped to [0, 255] (clean-fid 'clean')",
            "bilinear": "F.interpolate bilinear, align_corners=False, no antialias"
                        " (pytorch-fid)"}[extractor.resize]
  return {
      "network": "FID Inception-v3 (TF inception-2015-12-05 graph as pytorch-fid's"
                 " fid_inception_v3: FIDInceptionA/C/E_1/E_2), float32, precision HIGHEST",
      "weights_sha256": extractor.weights_sha256,
      "weights_source_sha256": extractor.source_sha256,
      "resize": f"{extractor.resize}: to {inception.SIZE}x{inception.SIZE}, {resize}",
      "input": "uint8 u -> u/127.5 - 1 after resizing (pytorch-fid 2x-1 of [0, 1]); float"
               " [-1, 1] -> (x+1)*127.5 first; 1 channel repeated to 3",
      "fid": "pool3 2048-d; float64 streaming mean and covariance (N-1); scipy sqrtm",
      "kid": "pool3; cubic polynomial kernel (x.y/d + 1)^3; unbiased MMD^2; mean/std over"
             " subsets of min(1000, N) without replacement",
      "is": "softmax(pool3 @ W) over 1008 classes (no bias, as Salimans et al.'s code);"
            " 10 consecutive splits",
      **extra,
  }


# ---------------------------------------------------------------- evaluation

def _source_batches(source, batch_size: int, limit: int | None) -> Iterator[np.ndarray]:
  # Consecutive examples, grouped into batches of equal image shape.
  n = len(source) if limit is None else min(limit, len(source))
  pending: list[np.ndarray] = []
  for i in range(n):
    image = np.asarray(source[i]["image"])
    if image.ndim == 2:
      image = image[..., None]
    if pending and (image.shape != pending[0].shape or len(pending) == batch_size):
      yield np.stack(pending)
      pending = []
    pending.append(image)
  if pending:
    yield np.stack(pending)


def reference_features(extractor: InceptionExtractor, data_config, split: str, *,
                       limit: int | None = None) -> FeatureSet:
  """Features of a dataset split (``data.data_source``), streamed in batches.

  Args:
    extractor: the feature extractor.
    data_config: ``name``, ``data_dir``, ``tfds_dir`` (as ``data.default_data_config``).
    split: e.g. ``'train'``; examples need an ``'image'`` (uint8 ``[H, W, C]``).
    limit: only the first ``limit`` examples.

  Raises:
    ValueError, FileNotFoundError: as ``data.data_source``.
  """
  from genrepair import data  # pylint: disable=import-outside-toplevel
  source = data.data_source(data_config, split)
  return extract(extractor, _source_batches(source, extractor.batch_size, limit))


def generated_batches(task, state, *, num: int, seed: int,
                      chunk: int = inception.DEFAULT_BATCH) -> Iterator[np.ndarray]:
  """uint8 ``[<= chunk, H, W, C]`` batches of ``num`` samples, in the order and with the
  latents of ``sampling.generate(task, state, num=num, seed=seed)`` (one ``latents`` draw
  from ``seed``), without holding all samples in memory.
  """
  from genrepair import io  # pylint: disable=import-outside-toplevel
  z = task.latents(jax.random.key(seed), num)
  state = jax.tree.map(lambda a: a.addressable_data(0), state)
  sample_fn = jax.jit(task.sample)
  for i in range(0, num, chunk):
    zc = z[i:i + chunk]
    n = zc.shape[0]
    if n < chunk and num > chunk:  # pad: one compiled shape
      zc = jnp.concatenate([zc, jnp.zeros((chunk - n, *zc.shape[1:]), zc.dtype)])
    yield io.to_uint8(jax.device_get(sample_fn(state, zc))[:n], task.image_range)


def evaluate_generator(task, state, config) -> dict[str, Any]:
  """FID, KID and IS of a generator's samples against a dataset split (``launch.py eval``).

  Reads ``config.eval``: ``num`` (samples, >= 10), ``seed``, ``inception_weights`` (path;
  default :func:`default_weights_path` of ``config.data.data_dir``), ``inception_sha256``
  (optional pin), ``resize`` (default ``'pil_bicubic'``), ``batch_size`` (default 50),
  ``reference_split`` (default ``'train'``) and ``reference_limit`` (default all) of the
  training dataset ``config.data``, ``kid_subsets`` (default 100). The weights are checked
  before any sample is drawn or any program is compiled.

  Returns:
    ``{'fid', 'kid', 'kid_std', 'is', 'is_std', 'num_fake', 'num_real', 'protocol'}``.

  Raises:
    FileNotFoundError: no weights file (the message says how to make it), or the
      reference data is missing.
    inception.ChecksumError, inception.WeightsError: see
      :func:`genrepair.metrics.inception.load_weights`.
    ValueError: ``num < 10``.
  """
  ec = config.eval
  num = int(ec.num)
  if num < 10:
    raise ValueError(f"evaluate_generator: config.eval.num must be >= 10 (IS uses 10 splits),"
                     f" got {num}.")
  path = (ec.get("inception_weights", "")
          or inception.default_weights_path(config.data.get("data_dir", "")))
  weights = inception.load_weights(path, sha256=ec.get("inception_sha256", None) or None)
  extractor = InceptionExtractor(weights, resize=ec.get("resize", inception.DEFAULT_RESIZE),
                                 batch_size=int(ec.get("batch_size", inception.DEFAULT_BATCH)))
  split = ec.get("reference_split", "train")
  limit = ec.get("reference_limit", None)
  real = reference_features(extractor, config.data, split, limit=limit)
  fake = extract(extractor, generated_batches(task, state, num=num, seed=int(ec.seed),
                                              chunk=extractor.batch_size))
  results = scores(fake, real, kid_subsets=int(ec.get("kid_subsets", 100)))
  results["protocol"] = protocol(
      extractor, samples=f"{num} samples, latents from seed {int(ec.seed)}, quantised to uint8",
      reference=f"{config.data.name} split {split!r}"
                + (f" first {limit}" if limit else "") + f" ({int(real.stats.count)} images)")
  return results
