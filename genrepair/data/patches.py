"""Random patches of restoration images for training, and whole images for evaluation.

`make_patch_iterator` yields host batches `{'image': uint8 [b, P, P, C]}` of
random P x P crops with random dihedral augmentation, from datasets of
variable-size images (`image_folders`: train400, t91, natural_photos, ...).
Restoration tasks corrupt these clean patches on device.

The stream is defined on global example positions p = 0, 1, 2, ...:

  positions p -> batch(b) -> [process_index::process_count] -> for each p:
    epoch e = p // (n k), image = perm_e[p mod (n k)] mod n,
      perm_e = default_rng([seed, 1, e]).permutation(n k)
    crop + transform with default_rng([seed, 0, p])

with n images and k = patches_per_image: an epoch visits every image k times in
a random order. Image, crop position and transform depend only on (seed, p),
never on the order of reads or on the process, so global batch t is the same
for any process count (process i holds rows [i*b, (i+1)*b)) and resuming from
"global batches read" is exact. The state is `pipeline.DataIterator`'s (see
`make_patch_iterator`). The shuffle is numpy's rather than grain's index
shuffle, which costs ~10 ms per element for 5 images (0.16 ms for 400) with
grain 0.2.18, and the stream then does not change with grain's algorithm.

What we do vs. DnCNN's paper setting: the authors' MATLAB code extracts 40x40
patches from Train400 with a stride, at scales 1, 0.9, 0.8, 0.7, with one of the
8 flips/rotations per patch (128 x 1600 patches per epoch, batch 128). We use
the common re-implementation (KAIR, BasicSR): uniform random crops at scale 1
plus a uniform random one of the 8 dihedral transforms, no rescaling; a config
sets patches_per_image to define what an "epoch" is (e.g. 512 gives 400 x 512
= 204,800 patches per epoch, DnCNN's count).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import grain
import ml_collections
import numpy as np

from genrepair import io
from genrepair.data import pipeline

# A fingerprint key that tells patch-iterator states from whole-image ones.
_KIND = 'patches'
# Second seed word: independent streams for crops and for the epoch shuffles.
_CROP_STREAM, _SHUFFLE_STREAM = 0, 1


def dihedral(image: np.ndarray, k: int, *, inverse: bool = False) -> np.ndarray:
  """Applies dihedral transform k (or its inverse) to the H, W axes of [..., H, W, C].

  k in [0, 8): rotate by k % 4 quarter turns (np.rot90, counter-clockwise),
  then flip left-right if k >= 4. k = 0 is the identity. `inverse=True` undoes
  transform k (for test-time self-ensembles).

  Returns:
    A view of `image` (shape [..., W, H, C] for odd rotations).

  Raises:
    ValueError: k outside [0, 8) or image with fewer than 3 dims.
  """
  if not 0 <= k < 8 or image.ndim < 3:
    raise ValueError(f'Expected k in [0, 8) and an image [..., H, W, C]; got k={k}, {image.shape}.')
  axes = (image.ndim - 3, image.ndim - 2)
  if inverse:
    image = np.flip(image, axes[1]) if k >= 4 else image
    return np.rot90(image, -(k % 4), axes=axes)
  image = np.rot90(image, k % 4, axes=axes)
  return np.flip(image, axes[1]) if k >= 4 else image


def crop_and_transform(
    image: np.ndarray, *, seed: int, position: int, patch_size: int, scale: int = 1,
    augment: bool = True,
) -> np.ndarray:
  """Returns the patch of global example `position`: uint8 [P, P, C].

  Draws, from `np.random.default_rng([seed, 0, position])`, the top-left corner
  (y, x), multiples of `scale` with y + P <= H and x + P <= W, uniform over
  those; then a dihedral index in [0, 8), applied if `augment` (drawn either
  way, so `augment` does not move the crops).

  Raises:
    ValueError: the image is smaller than the patch.
  """
  height, width = image.shape[:2]
  if height < patch_size or width < patch_size:
    raise ValueError(f'Image {height}x{width} is smaller than patch_size={patch_size}.')
  rng = np.random.default_rng([seed, _CROP_STREAM, position])
  y = scale * int(rng.integers((height - patch_size) // scale + 1))
  x = scale * int(rng.integers((width - patch_size) // scale + 1))
  k = int(rng.integers(8))
  patch = image[y:y + patch_size, x:x + patch_size]  # [P, P, C]
  return np.ascontiguousarray(dihedral(patch, k) if augment else patch)


def _position(position: int, element: int) -> int:
  del element  # p mod (n k); the reader needs p itself.
  return position


class _ReadPatches:
  """Global positions int64 [b] -> {'image': uint8 [b, P, P, C]}."""

  def __init__(self, source: Sequence[Mapping[str, Any]], *, seed: int, patches_per_image: int,
               **crop_kw: Any):
    self._source = source
    self._n = len(source)
    self._epoch_size = self._n * patches_per_image
    self._seed = seed
    self._crop_kw = dict(seed=seed, **crop_kw)
    # A batch spans one or two epochs (more only when the epoch is shorter than
    # the batch); permuting an epoch of DnCNN's size (204,800) takes ~7 ms.
    self._permutation = functools.lru_cache(maxsize=4)(self._make_permutation)

  def _make_permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self._seed, _SHUFFLE_STREAM, epoch]).permutation(self._epoch_size)

  def __call__(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    image_ids = [
        int(self._permutation(int(p) // self._epoch_size)[int(p) % self._epoch_size]) % self._n
        for p in positions
    ]
    # A batch may hold an image several times (k > 1, or an epoch shorter than
    # the batch): read and decode it once. Decoding (zlib, ~0.2 ms per Train400
    # image) is most of the ~65 ms per batch of 128 measured on this CPU.
    unique = sorted(set(image_ids))
    getitems = getattr(self._source, '__getitems__', None)
    examples = getitems(unique) if getitems else [self._source[i] for i in unique]
    images = {i: np.asarray(e['image']) for i, e in zip(unique, examples)}
    patches = [
        crop_and_transform(images[i], position=int(p), **self._crop_kw)
        for p, i in zip(positions, image_ids)
    ]
    return {'image': np.stack(patches)}  # [b, P, P, C]


class _InMemoryImages:
  """Decoded images of a split as a source: item i = `{'image': images[i]}` (read-only)."""

  def __init__(self, images: list[np.ndarray]):
    self._images = images

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {'image': self._images[i]}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [{'image': self._images[i]} for i in indices]


def _decode_and_check(source: Sequence[Mapping[str, Any]], split: str, patch_size: int,
                      max_bytes: int) -> list[np.ndarray] | None:
  """Decodes every image once; returns them if they total at most `max_bytes`, else None.

  Fails at start-up, naming the image, rather than in a prefetch thread steps later.
  Decoding every image costs ~0.15 s for Train400 or T91; keeping them (13 MB for
  Train400) spares the per-batch decoding that made ESPCN's training input-bound (T91:
  ~54 ms to decode the images of a batch of 64 patches, against a ~26 ms step).

  Raises:
    ValueError: an image smaller than `patch_size`.
  """
  images, total = [], 0
  for i in range(len(source)):
    example = source[i]
    image = np.asarray(example['image'])
    height, width = image.shape[:2]
    if min(height, width) < patch_size:
      name = example.get('name', b'')
      name = name.decode() if isinstance(name, bytes) else str(name)
      raise ValueError(
          f'patch_size={patch_size} is larger than image {i} ({name}) of split '
          f'{split!r}, {height}x{width}.')
    total += image.nbytes
    if images is not None:
      if total <= max_bytes:
        image.flags.writeable = False
        images.append(image)
      else:
        images = None
  return images


def make_patch_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    patch_size: int,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    augment: bool = True,
    patches_per_image: int = 1,
    scale: int = 1,
) -> pipeline.DataIterator:
  """Returns this process's endless iterator of random-patch batches of `split`.

  Args:
    data_config: `name`, `data_dir`, `tfds_dir` (see
      `pipeline.default_data_config`); e.g. name='train400' or 'natural_photos'.
    global_batch_size: patches per step over all processes (DnCNN: 128).
    patch_size: P, the side of the square crops (DnCNN: 40); for SR the HR
      patch, a multiple of `scale`.
    split: tfds split, e.g. 'train'.
    seed: non-negative seed of the per-epoch shuffle, crops and transforms.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the stream.
    augment: apply a random one of the 8 flips/rotations to each patch.
    patches_per_image: k, visits of each image per epoch (defines the epoch
      only; crops are fresh on every visit).
    scale: SR factor: crop corners on multiples of `scale`, so the patch lines
      up with the LR pixel grid of the (modcropped) image.

  Returns:
    A `pipeline.DataIterator` of `{'image': uint8 [b, P, P, C] in [0, 255]}`,
    b = global_batch_size // process_count. Its `get_state()` is the JSON dict

      {'version': 1, 'global_batches_read': int, 'kind': 'patches',
       'name': str, 'split': str, 'num_examples': int, 'seed': int,
       'global_batch_size': int, 'patch_size': int, 'scale': int,
       'augment': bool, 'patches_per_image': int}

    and `set_state` resumes exactly, with any process_count.

  Raises:
    ValueError: bad sizes/indices/seed; global_batch_size not divisible by
      process_count; patch_size not a multiple of scale or larger than an
      image; unknown dataset or split.
    FileNotFoundError: raw files needed to prepare the dataset are missing.
  """
  if global_batch_size <= 0 or process_count <= 0 or patches_per_image <= 0 or scale <= 0:
    raise ValueError(
        'Expected global_batch_size, process_count, patches_per_image and scale > 0; got '
        f'{global_batch_size}, {process_count}, {patches_per_image}, {scale}.')
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size={global_batch_size} is not divisible by '
        f'process_count={process_count}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
  if patch_size <= 0 or patch_size % scale:
    raise ValueError(f'patch_size={patch_size} must be a positive multiple of scale={scale}.')
  local_batch_size = global_batch_size // process_count

  source = pipeline.data_source(data_config, split)
  n = len(source)
  # Splits that fit pipeline.IN_MEMORY_MAX_BYTES are decoded once and read from memory
  # (the same images, so the same patches).
  images = _decode_and_check(source, split, patch_size, pipeline.IN_MEMORY_MAX_BYTES)
  if images is not None:
    source = _InMemoryImages(images)

  # Endless global positions p; the shuffle happens in _ReadPatches.
  ds = grain.MapDataset.range(n * patches_per_image).repeat().map_with_index(_position)
  ds = ds.batch(local_batch_size)  # int64 [b]
  ds = ds[process_index::process_count].map(_ReadPatches(
      source, seed=int(seed), patches_per_image=patches_per_image, patch_size=patch_size,
      scale=scale, augment=augment))

  # process_count is left out on purpose: the global stream does not depend on it.
  fingerprint = dict(
      kind=_KIND, name=pipeline._field(data_config, 'name'),  # pylint: disable=protected-access
      split=split, num_examples=n, seed=int(seed), global_batch_size=global_batch_size,
      patch_size=patch_size, scale=scale, augment=augment, patches_per_image=patches_per_image,
  )
  return pipeline.DataIterator(ds, fingerprint)


def eval_images(
    data_config: ml_collections.ConfigDict, split: str, *, native_channels: bool = False
) -> list[tuple[str, np.ndarray]]:
  """Returns every image of `split` whole, in stored order, for evaluation.

  Args:
    data_config: `name`, `data_dir`, `tfds_dir`; e.g. name='bsd68', 'set5', or a
      folder of images (any path that is a directory, or that contains a path
      separator): its files are read as they are (`io.read_image_dir`: gray files
      [H, W, 1], colour [H, W, 3]; named by file name without extension).
    split: tfds split, e.g. 'test' (ignored for a folder).
    native_channels: return images whose file was gray (`source_channels` 1,
      e.g. Set14's bridge.png) as [H, W, 1] instead of the stored replicated
      [H, W, 3], so SR evaluation can use them as Y directly (MATLAB protocol).

  Returns:
    `[(name, image)]`: the file name (e.g. 'test001.png'; f'{i}' for datasets
    without names) and uint8 [H, W, C] in [0, 255]; sizes differ per image.

  Raises:
    ValueError, FileNotFoundError: as `pipeline.data_source`; for a folder, as
      `io.read_image_dir` (missing folder, no images, unreadable file: named).
  """
  name = str(data_config.name)
  if os.path.isdir(name) or os.sep in name:
    return io.read_image_dir(name)
  source = pipeline.data_source(data_config, split)
  images = []
  for i in range(len(source)):
    example = source[i]
    image = np.asarray(example['image'])  # [H, W, C]
    if native_channels and int(example.get('source_channels', image.shape[-1])) == 1:
      image = image[..., :1]
    name = example.get('name', str(i))
    images.append((name.decode() if isinstance(name, bytes) else str(name), image))
  return images
