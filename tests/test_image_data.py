"""Tests of the restoration image builders (image_folders) and the patch pipeline (patches).

Run: GENREPAIR_DATA=/work/shared/data python -m pytest tests/test_image_data.py -q
Tests of the shared-data folders skip when $GENREPAIR_DATA lacks them; the
natural_photos tests skip without scikit-image; the patch-pipeline semantics
run on an in-memory synthetic source whose pixels encode their coordinates.
"""

import importlib.util
import json
import os
import pathlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from genrepair import data
from genrepair import io as gio
from genrepair.data import builders
from genrepair.data import image_folders
from genrepair.data import patches

_RAW = pathlib.Path(os.environ.get('GENREPAIR_DATA', '/nonexistent'))


def _needs(subdir: str):
  return pytest.mark.skipif(not (_RAW / subdir).is_dir(),
                            reason=f'{_RAW / subdir} not found (set GENREPAIR_DATA)')


_needs_skimage = pytest.mark.skipif(importlib.util.find_spec('skimage') is None,
                                    reason='scikit-image (natural_photos) not installed')


def _config(name: str, tfds_dir: str, data_dir: str = '') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, tfds_dir=tfds_dir))


def _take(it, k: int) -> list[dict[str, np.ndarray]]:
  return [next(it) for _ in range(k)]


# ------------------------------------------------------- image-folder builders

# name -> (split, count, C, {stored shape: count}, (index, file, pixel sum)); the
# sums are of the PNG read with Pillow (bridge.png: gray sum x 3, replicated).
_FOLDERS = {
    'train400': ('train', 400, 1, {(180, 180, 1): 400}, (7, 'test_008.png', 2938176)),
    'bsd68': ('test', 68, 1, {(481, 321, 1): 15, (321, 481, 1): 53}, (0, 'test001.png', 14774848)),
    'set12': ('test', 12, 1, {(256, 256, 1): 7, (512, 512, 1): 5}, (0, '01.png', 7780728)),
    't91': ('train', 91, 3, None, (1, 't10.png', 6904395)),
    'set5': ('test', 5, 3, None, (1, 'bird.png', 16878772)),
    'set14': ('test', 14, 3, None, (2, 'bridge.png', 3 * 29832382)),
}


@pytest.mark.parametrize('name', list(_FOLDERS))
def test_folder_dataset_equals_files(name, tfds_dir):
  split, count, channels, shapes, (index, file_name, pixel_sum) = _FOLDERS[name]
  folder = _RAW / image_folders.FOLDERS[name].subdir
  if not folder.is_dir():
    pytest.skip(f'{folder} not found (set GENREPAIR_DATA)')
  source = data.data_source(_config(name, tfds_dir), split)
  assert len(source) == count == data.num_examples(_config(name, tfds_dir), split)
  examples = source.__getitems__(list(range(count)))
  files = sorted(p.name for p in folder.iterdir())
  assert [e['name'].decode() for e in examples] == files  # Sorted file order,
  assert [int(e['id']) for e in examples] == list(range(count))  # ids 0..N-1.
  stored = [e['image'] for e in examples]
  assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[-1] == channels for im in stored)
  if shapes:
    got = {}
    for im in stored:
      got[im.shape] = got.get(im.shape, 0) + 1
    assert got == shapes
  # Every image equals the file as Pillow reads it (gray replicated for C=3).
  for e, im in zip(examples, stored):
    raw = np.asarray(Image.open(folder / e['name'].decode()))
    raw = raw[..., None] if raw.ndim == 2 else raw
    assert int(e['source_channels']) == raw.shape[-1]
    np.testing.assert_array_equal(im, np.broadcast_to(raw, im.shape))
  assert examples[index]['name'].decode() == file_name
  assert int(stored[index].sum()) == pixel_sum


@_needs('sr/set14')
def test_set14_gray_image_is_replicated_and_native_for_eval(tfds_dir):
  images = dict(data.eval_images(_config('set14', tfds_dir), 'test'))
  native = dict(data.eval_images(_config('set14', tfds_dir), 'test', native_channels=True))
  assert list(images) == list(native) and len(images) == 14
  bridge = images['bridge.png']
  assert bridge.shape == (512, 512, 3) and native['bridge.png'].shape == (512, 512, 1)
  np.testing.assert_array_equal(bridge, np.repeat(native['bridge.png'], 3, axis=-1))
  # Only bridge.png is gray in the file; the other 13 stay RGB either way.
  assert sorted(k for k, v in native.items() if v.shape[-1] == 1) == ['bridge.png']
  assert native['baboon.png'].shape == (480, 500, 3)


@_needs('denoise/bsd68')
def test_eval_images_bsd68(tfds_dir):
  images = data.eval_images(_config('bsd68', tfds_dir), 'test')
  assert [n for n, _ in images[:2]] == ['test001.png', 'test002.png'] and len(images) == 68
  assert sum(im.shape == (321, 481, 1) for _, im in images) == 53


def test_missing_folder_names_path_and_env(tmp_path, monkeypatch):
  config = _config('train400', str(tmp_path / 'tfds'), data_dir=str(tmp_path / 'nowhere'))
  with pytest.raises(FileNotFoundError, match=r'nowhere/denoise/train400.*GENREPAIR_DATA'):
    data.num_examples(config, 'train')
  assert not (tmp_path / 'tfds' / 'train400').exists()  # Failed before any work.
  monkeypatch.delenv('GENREPAIR_DATA', raising=False)
  with pytest.raises(FileNotFoundError, match=r'sr/set5.*GENREPAIR_DATA'):
    data.eval_images(_config('set5', str(tmp_path / 'tfds')), 'test')
  assert image_folders._DATA_ENV == builders.DATA_ENV  # pylint: disable=protected-access


def _write_pngs(folder: pathlib.Path, modes: list[str]) -> None:
  folder.mkdir(parents=True)
  for i, mode in enumerate(modes):
    Image.new(mode, (8, 6), color=(i * 20,) * len(mode) if mode != 'L' else i * 20).save(
        folder / f'{i:02d}.png')


def test_wrong_count_and_wrong_mode_raise(tmp_path):
  _write_pngs(tmp_path / 'a' / 'denoise' / 'set12', ['L'] * 3)
  (tmp_path / 'a' / 'denoise' / 'set12' / 'notes.txt').write_text('ignored')
  with pytest.raises(ValueError, match='holds 3 image files; expected 12'):
    data.num_examples(_config('set12', str(tmp_path / 'tfds'), str(tmp_path / 'a')), 'test')
  _write_pngs(tmp_path / 'b' / 'denoise' / 'set12', ['L'] * 11 + ['RGB'])
  with pytest.raises(ValueError, match=r'11\.png: an RGB image in a gray dataset'):
    data.num_examples(_config('set12', str(tmp_path / 'tfds'), str(tmp_path / 'b')), 'test')


def test_rgb_to_gray_values():
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], np.uint8)
  # MATLAB rgb2gray: 76.2287, 149.6960, 29.0753, 255, 18.1508 rounded half up.
  np.testing.assert_array_equal(gio.rgb_to_gray(rgb)[..., 0], [[76, 150, 29, 255, 18]])
  with pytest.raises(ValueError, match=r'\[H, W, 3\]'):
    gio.rgb_to_gray(rgb[..., :1])


@_needs_skimage
def test_natural_photos_splits_are_disjoint_and_match_the_files(tfds_dir, monkeypatch):
  import skimage.data  # pylint: disable=import-outside-toplevel
  monkeypatch.delenv('GENREPAIR_DATA', raising=False)  # The offline default needs no data root.
  n_train = 6 if importlib.util.find_spec('matplotlib') else 5
  rgb, gray = ({s: data.eval_images(_config(name, tfds_dir), s) for s in ('train', 'test')}
               for name in ('natural_photos', 'natural_photos_gray'))
  assert [len(rgb['train']), len(rgb['test'])] == [n_train, 2]
  assert [n for n, _ in rgb['test']] == ['camera.png', 'chelsea.png']
  assert not {n for n, _ in rgb['train']} & {n for n, _ in rgb['test']}
  pixels = {s: {im.tobytes() for _, im in rgb[s]} for s in rgb}
  assert len(pixels['train']) == n_train and not pixels['train'] & pixels['test']
  images = dict(rgb['train'] + rgb['test'])
  # Same pixels as skimage's own loaders (PNG sources; rocket.jpg may differ by decoder).
  np.testing.assert_array_equal(images['astronaut.png'], skimage.data.astronaut())
  np.testing.assert_array_equal(images['motorcycle_left.png'],
                                skimage.data.stereo_motorcycle()[0])  # The left view.
  np.testing.assert_array_equal(images['camera.png'],
                                np.repeat(skimage.data.camera()[..., None], 3, -1))
  assert all(im.ndim == 3 and im.shape[-1] == 3 for im in images.values())
  # Gray version: native gray kept, RGB -> rounded BT.601 luma.
  gray_images = dict(gray['train'] + gray['test'])
  assert list(gray_images) == list(images)
  np.testing.assert_array_equal(gray_images['camera.png'][..., 0], skimage.data.camera())
  np.testing.assert_array_equal(gray_images['chelsea.png'], gio.rgb_to_gray(images['chelsea.png']))
  # Pillow's fixed-point ITU-R 601-2 luma agrees to within one level.
  pil_luma = np.asarray(Image.fromarray(images['chelsea.png']).convert('L'), np.int64)
  assert np.abs(gray_images['chelsea.png'][..., 0] - pil_luma).max() <= 1


# ------------------------------------------------------------ dihedral


def test_dihedral_gives_8_distinct_invertible_transforms():
  image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
  outs = [data.dihedral(image, k) for k in range(8)]
  assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
  np.testing.assert_array_equal(outs[0], image)
  np.testing.assert_array_equal(outs[1][..., 0], [[2, 5], [1, 4], [0, 3]])  # rot90 CCW.
  np.testing.assert_array_equal(outs[4][..., 0], [[2, 1, 0], [5, 4, 3]])  # left-right flip.
  for k in range(8):
    np.testing.assert_array_equal(data.dihedral(outs[k], k, inverse=True), image)
  batch = np.stack([image, image + 6])  # [2, H, W, C]: transforms each image.
  np.testing.assert_array_equal(data.dihedral(batch, 5)[1], data.dihedral(image + 6, 5))
  with pytest.raises(ValueError, match='k in'):
    data.dihedral(image, 8)


# ------------------------------------------------- patch pipeline (synthetic)

# 5 images whose pixels are (row, column, image id): a patch tells where it came from.
_SIZES = [(40, 60), (52, 45), (64, 64), (45, 70), (50, 50)]


def _coordinate_image(i: int, h: int, w: int) -> np.ndarray:
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  return np.stack([rows, cols, np.full_like(rows, i)], axis=-1).astype(np.uint8)  # [H, W, 3]


@pytest.fixture
def synthetic(monkeypatch):
  source = [{'image': _coordinate_image(i, h, w), 'name': f's{i}'.encode()}
            for i, (h, w) in enumerate(_SIZES)]
  monkeypatch.setattr(patches.pipeline, 'data_source', lambda config, split: source)
  return ml_collections.ConfigDict(dict(name='synthetic', data_dir='', tfds_dir=''))


def _decode(patch: np.ndarray) -> tuple[int, int, int, int]:
  """uint8 [P, P, 3] coordinate patch -> (image id, y0, x0, dihedral k)."""
  for k in range(8):
    plain = data.dihedral(patch, k, inverse=True).astype(int)
    y0, x0 = plain[0, 0, :2]
    rows, cols = np.indices(plain.shape[:2])
    if np.array_equal(plain[..., 0], y0 + rows) and np.array_equal(plain[..., 1], x0 + cols):
      return int(plain[0, 0, 2]), int(y0), int(x0), k
  raise AssertionError('not a transformed crop')


def test_patches_are_crops_with_all_8_transforms(synthetic):
  it = data.make_patch_iterator(synthetic, global_batch_size=64, patch_size=16, split='train',
                                seed=0)
  batch = next(it)['image']
  assert batch.dtype == np.uint8 and batch.shape == (64, 16, 16, 3)
  decoded = [_decode(p) for p in batch]
  for i, y0, x0, _ in decoded:
    h, w = _SIZES[i]
    assert 0 <= y0 <= h - 16 and 0 <= x0 <= w - 16
  counts = np.bincount([k for *_, k in decoded], minlength=8)
  assert counts.tolist() == [8, 13, 5, 5, 8, 9, 9, 7]  # All 8 transforms occur.
  plain = next(data.make_patch_iterator(synthetic, global_batch_size=64, patch_size=16,
                                        split='train', seed=0, augment=False))['image']
  # augment=False: same crops, untransformed.
  assert [_decode(p) for p in plain] == [(i, y, x, 0) for i, y, x, _ in decoded]


def test_in_memory_images_give_the_same_patches(synthetic, monkeypatch):
  """Images decoded once at start-up (within pipeline.IN_MEMORY_MAX_BYTES) give the patches
  that decoding per batch gives, across epochs."""
  kw = dict(global_batch_size=12, patch_size=8, split='train', seed=4, patches_per_image=2)
  cached = _take(data.make_patch_iterator(synthetic, **kw), 3)  # 36 patches: 3.6 epochs
  monkeypatch.setattr(patches.pipeline, 'IN_MEMORY_MAX_BYTES', 0)
  per_batch = _take(data.make_patch_iterator(synthetic, **kw), 3)
  assert all(np.array_equal(a['image'], b['image']) for a, b in zip(cached, per_batch))
  source = patches.pipeline.data_source(synthetic, 'train')
  total = sum(e['image'].nbytes for e in source)
  kept = patches._decode_and_check(source, 'train', 8, total)  # pylint: disable=protected-access
  assert [k.shape for k in kept] == [(h, w, 3) for h, w in _SIZES]
  assert patches._decode_and_check(source, 'train', 8, total - 1) is None  # pylint: disable=protected-access


def test_each_epoch_visits_every_image_k_times(synthetic):
  it = data.make_patch_iterator(synthetic, global_batch_size=15, patch_size=8, split='train',
                                seed=4, patches_per_image=3)
  ids = [[_decode(p)[0] for p in next(it)['image']] for _ in range(2)]
  assert [np.bincount(e, minlength=5).tolist() for e in ids] == [[3] * 5] * 2
  assert ids[0] != ids[1]  # Reshuffled each epoch.


def test_sr_scale_puts_corners_on_the_lr_grid(synthetic):
  it = data.make_patch_iterator(synthetic, global_batch_size=64, patch_size=24, split='train',
                                seed=1, scale=3)
  decoded = [_decode(p) for p in next(it)['image']]
  assert all(y0 % 3 == 0 and x0 % 3 == 0 for _, y0, x0, _ in decoded)
  assert len({(y0, x0) for _, y0, x0, _ in decoded}) > 50  # Still random.
  with pytest.raises(ValueError, match='multiple of scale=3'):
    data.make_patch_iterator(synthetic, global_batch_size=8, patch_size=25, split='train',
                             seed=0, scale=3)


def test_patch_larger_than_an_image_raises_naming_it(synthetic):
  with pytest.raises(ValueError, match=r'patch_size=41.*image 0 \(s0\).*40x60'):
    data.make_patch_iterator(synthetic, global_batch_size=8, patch_size=41, split='train', seed=0)


def test_patches_deterministic_given_seed(synthetic):
  kw = dict(global_batch_size=16, patch_size=8, split='train')
  a, b, c = (_take(data.make_patch_iterator(synthetic, seed=s, **kw), 3) for s in (7, 7, 8))
  assert all(np.array_equal(x['image'], y['image']) for x, y in zip(a, b))
  assert not any(np.array_equal(x['image'], y['image']) for x, y in zip(a, c))


def test_patch_resume_is_exact(synthetic):
  kw = dict(global_batch_size=12, patch_size=8, split='train', seed=3, patches_per_image=2)
  reference = _take(data.make_patch_iterator(synthetic, **kw), 6)  # Batches straddle epochs.
  for k in (0, 1, 4):
    it = data.make_patch_iterator(synthetic, **kw)
    _take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    assert state == {
        'version': 1, 'global_batches_read': k, 'kind': 'patches', 'name': 'synthetic',
        'split': 'train', 'num_examples': 5, 'seed': 3, 'global_batch_size': 12,
        'patch_size': 8, 'scale': 1, 'augment': True, 'patches_per_image': 2}
    it.close()
    resumed = data.make_patch_iterator(synthetic, **kw)
    next(resumed)  # Resuming must not depend on where the new iterator was.
    resumed.set_state(state)
    for got, want in zip(_take(resumed, 2), reference[k:k + 2]):
      np.testing.assert_array_equal(got['image'], want['image'])
  other = data.make_patch_iterator(synthetic, **{**kw, 'patch_size': 10})
  with pytest.raises(ValueError, match='patch_size'):
    other.set_state(state)


def test_patch_process_split_keeps_the_global_batch(synthetic):
  kw = dict(global_batch_size=16, patch_size=8, split='train', seed=1)
  whole = _take(data.make_patch_iterator(synthetic, **kw), 4)
  parts = [_take(data.make_patch_iterator(synthetic, process_index=i, process_count=2, **kw), 4)
           for i in range(2)]
  for step, batch in enumerate(whole):
    assert parts[0][step]['image'].shape == (8, 8, 8, 3)
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step]['image'], parts[1][step]['image']]), batch['image'])
  # A 1-process state resumes on process 1 of 4 with that process's rows.
  single = data.make_patch_iterator(synthetic, **kw)
  _take(single, 2)
  fourth = data.make_patch_iterator(synthetic, process_index=1, process_count=4, **kw)
  fourth.set_state(single.get_state())
  np.testing.assert_array_equal(next(fourth)['image'], whole[2]['image'][4:8])


def test_patch_bad_arguments_raise(synthetic):
  kw = dict(patch_size=8, split='train', seed=0)
  with pytest.raises(ValueError, match='not divisible by process_count=3'):
    data.make_patch_iterator(synthetic, global_batch_size=16, process_count=3, **kw)
  with pytest.raises(ValueError, match='process_index=2'):
    data.make_patch_iterator(synthetic, global_batch_size=16, process_index=2, process_count=2,
                             **kw)
  with pytest.raises(ValueError, match='patches_per_image'):
    data.make_patch_iterator(synthetic, global_batch_size=16, patches_per_image=0, **kw)
  with pytest.raises(ValueError, match='seed'):
    data.make_patch_iterator(synthetic, global_batch_size=16, patch_size=8, split='train', seed=-1)


# --------------------------------------------------- patch pipeline (real data)


@_needs('denoise/train400')
def test_train400_dncnn_batches(tfds_dir):
  config = _config('train400', tfds_dir)
  it = data.make_patch_iterator(config, global_batch_size=128, patch_size=40, split='train',
                                seed=0)
  batches = _take(it, 4)  # 512 patches: more than one epoch of 400 images.
  assert all(b['image'].shape == (128, 40, 40, 1) and b['image'].dtype == np.uint8 for b in batches)
  assert int(batches[0]['image'].sum()) == 22362938  # Pins the stream (seed 0).
  again = next(data.make_patch_iterator(config, global_batch_size=128, patch_size=40,
                                        split='train', seed=0))
  np.testing.assert_array_equal(again['image'], batches[0]['image'])


@_needs('sr/t91')
def test_t91_sr_patches(tfds_dir):
  it = data.make_patch_iterator(_config('t91', tfds_dir), global_batch_size=16, patch_size=33,
                                split='train', seed=0, scale=3)
  batch = next(it)['image']
  assert batch.shape == (16, 33, 33, 3) and batch.dtype == np.uint8
  assert int(batch.sum()) == 6259314  # Pins the stream (seed 0).
