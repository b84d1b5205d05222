"""tfds builders for the restoration datasets: folders of real images, and offline photos.

Every builder here stores one example per image file, as ArrayRecord that
`tfds.data_source` reads without TensorFlow:

  'image': uint8 [H, W, C] in [0, 255], H and W vary per image (zlib Tensor)
  'id': int64, the record index: 0..N-1 in the stored order
  'name': bytes, the source file name, e.g. b'test001.png' (for per-image results)
  'source_channels': int64, channels of the file as decoded: 1 (gray) or 3 (RGB)

Datasets (raw folders relative to the raw root, `data_config.data_dir` or
`$GENREPAIR_DATA`; see its README for sources and licences):

| name | folder | split | images | C |
|---|---|---|---|---|
| `train400` | `denoise/train400` | train | 400 (gray 180x180, DnCNN training set) | 1 |
| `bsd68` | `denoise/bsd68` | test | 68 (gray 481x321 / 321x481) | 1 |
| `set12` | `denoise/set12` | test | 12 (gray 256x256 / 512x512) | 1 |
| `t91` | `sr/t91` | train | 91 (RGB, SRCNN/ESPCN training set) | 3 |
| `set5` | `sr/set5` | test | 5 (RGB) | 3 |
| `set14` | `sr/set14` | test | 14 (13 RGB + gray `bridge.png`) | 3 |
| `natural_photos` | scikit-image / matplotlib | train 6, test 2 | embedded photos | 3 |
| `natural_photos_gray` | same files | train 6, test 2 | same, as luma | 1 |

Pixels are exactly what Pillow decodes; the only conversions are these:
* A gray file in a C=3 dataset is replicated to 3 channels (Set14's `bridge.png`,
  skimage's `camera`/`coins`), and `source_channels` stays 1. SR evaluation on
  the Y channel should take channel 0 of such images as Y, as the SRCNN MATLAB
  code does for gray files (`rgb2ycbcr` is only applied to 3-channel files).
* `natural_photos_gray` turns RGB files into gray with MATLAB `rgb2gray`
  (`genrepair.io.rgb_to_gray`); gray files are kept as they are.
Files are decoded by `genrepair.io.read_image`, whose rules (alpha, 16-bit,
palette) are the project's one definition of what an image file means. Files are stored in
sorted file-name order (so `t91` starts t1, t10, t11, ...); other files in a
folder (non-image suffixes, hidden files) are ignored, and a folder whose image
count differs from the published one is refused, since a missing test image
changes every mean PSNR.

`natural_photos` is the offline default for a machine without
`$GENREPAIR_DATA`: photos that ship inside scikit-image (`skimage/data/*`,
loadable offline) and matplotlib's `grace_hopper.jpg`, split by `PHOTO_SPLITS`.
`camera` (the cameraman of Set12) and `chelsea` are held out as `test`. Without
matplotlib installed, `grace_hopper.jpg` is left out (with a warning) and `train`
has 5 images. JPEG pixels (`rocket.jpg`, `grace_hopper.jpg`) are as decoded by
the installed Pillow's libjpeg.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import pathlib
from typing import Any, ClassVar, Iterator

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from genrepair import io

# Same as builders.DATA_ENV (a test checks); builders imports this module, so
# importing the name from there would be circular.
_DATA_ENV = 'GENREPAIR_DATA'
IMAGE_SUFFIXES = ('.png', '.bmp', '.tif', '.tiff', '.jpg', '.jpeg')


@dataclasses.dataclass(frozen=True)
class FolderSpec:
  """A published image folder: where it is under the raw root and what it holds.

  Attributes:
    subdir: folder relative to the raw data root.
    split: the one split it becomes ('train' or 'test').
    count: number of image files it must hold.
    channels: stored C, 1 (files must be gray) or 3 (gray files replicated).
    description: one line for the tfds DatasetInfo.
    homepage: where the copy in shared/data comes from.
  """

  subdir: str
  split: str
  count: int
  channels: int
  description: str
  homepage: str


_DNCNN = 'https://github.com/cszn/DnCNN'
_SRCNN = 'https://github.com/tegg89/SRCNN-Tensorflow'
FOLDERS: dict[str, FolderSpec] = {
    'train400': FolderSpec(
        'denoise/train400', 'train', 400, 1,
        'The 400 gray 180x180 training images of DnCNN (Zhang et al. 2017).', _DNCNN),
    'bsd68': FolderSpec('denoise/bsd68', 'test', 68, 1, 'BSD68 gray denoising test set.', _DNCNN),
    'set12': FolderSpec('denoise/set12', 'test', 12, 1, 'Set12 gray denoising test set.', _DNCNN),
    't91': FolderSpec(
        'sr/t91', 'train', 91, 3, 'The 91-image SR training set (Yang et al. 2010).', _SRCNN),
    'set5': FolderSpec('sr/set5', 'test', 5, 3, 'Set5 SR test set (HR images).', _SRCNN),
    'set14': FolderSpec(
        'sr/set14', 'test', 14, 3,
        'Set14 SR test set (HR images; bridge.png is gray, replicated to RGB).', _SRCNN),
}

# File names of the embedded photos: skimage/data/<name>, except grace_hopper.jpg
# (matplotlib/mpl-data/sample_data). Held out: `camera` (gray, the cameraman of
# Set12, a classic denoising test image) and `chelsea` (RGB). motorcycle_left is
# the left view of skimage.data.stereo_motorcycle().
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    'train': ('astronaut.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png', 'coins.png',
              'grace_hopper.jpg'),
    'test': ('camera.png', 'chelsea.png'),
}


def _to_channels(image: np.ndarray, channels: int, *, luma: bool, path: pathlib.Path) -> np.ndarray:
  if image.shape[-1] == channels:
    return image
  if channels == 3:  # Gray file in an RGB dataset.
    return np.repeat(image, 3, axis=-1)
  if luma:
    return io.rgb_to_gray(image)
  raise ValueError(f'{path}: an RGB image in a gray dataset; expected a gray (mode L) file.')


def image_files(folder: str | os.PathLike[str]) -> list[pathlib.Path]:
  """The image files of `folder` (by suffix, not hidden), sorted by file name."""
  return sorted(
      p for p in pathlib.Path(folder).iterdir()
      if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.') and p.is_file()
  )


def raw_dir(name: str, raw_root: str | os.PathLike[str] | None) -> pathlib.Path:
  """Returns the raw folder of image-folder dataset `name`, checked.

  Args:
    name: a key of `FOLDERS`.
    raw_root: the raw data root, or None when neither `data_config.data_dir`
      nor `$GENREPAIR_DATA` is set.

  Raises:
    FileNotFoundError: root unset or folder missing (the message names both
      the path and `$GENREPAIR_DATA`).
    ValueError: the folder does not hold the published number of images.
  """
  spec = FOLDERS[name]
  if not raw_root:
    raise FileNotFoundError(
        f'{name} needs its images in <data root>/{spec.subdir}; set data_config.data_dir '
        f'or ${_DATA_ENV}.')
  folder = pathlib.Path(raw_root).expanduser() / spec.subdir
  if not folder.is_dir():
    raise FileNotFoundError(
        f'{name}: image folder {folder} not found; expected {spec.count} images in '
        f'{spec.subdir} under the data root {raw_root} (data_config.data_dir or ${_DATA_ENV}).')
  found = len(image_files(folder))
  if found != spec.count:
    raise ValueError(f'{name}: {folder} holds {found} image files; expected {spec.count}.')
  return folder


def photo_files() -> dict[str, list[pathlib.Path]]:
  """Returns `{'train': [...], 'test': [...]}`: paths of the embedded photos.

  Raises:
    FileNotFoundError: scikit-image is not installed, or lacks one of the photos.
  """
  skimage = importlib.util.find_spec('skimage')
  if skimage is None or not skimage.submodule_search_locations:
    raise FileNotFoundError(
        'natural_photos reads the photos shipped inside scikit-image; install '
        'scikit-image>=0.24, or use $GENREPAIR_DATA datasets (train400, t91, ...).')
  skimage_data = pathlib.Path(list(skimage.submodule_search_locations)[0]) / 'data'
  mpl = importlib.util.find_spec('matplotlib')
  mpl_data = (pathlib.Path(list(mpl.submodule_search_locations)[0]) / 'mpl-data' / 'sample_data'
              if mpl and mpl.submodule_search_locations else None)
  files = {}
  for split, names in PHOTO_SPLITS.items():
    files[split] = []
    for file_name in names:
      if file_name == 'grace_hopper.jpg':
        path = mpl_data / file_name if mpl_data else None
        if path is None or not path.is_file():
          logging.warning('natural_photos: matplotlib (grace_hopper.jpg) not found; '
                          'the train split has %d images.', len(names) - 1)
          continue
      else:
        path = skimage_data / file_name
        if not path.is_file():
          raise FileNotFoundError(f'natural_photos: {path} is missing from scikit-image.')
      files[split].append(path)
  return files


def _info(builder: tfds.core.DatasetBuilder, *, channels: int, description: str,
          homepage: str) -> tfds.core.DatasetInfo:
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=tfds.features.FeaturesDict({
          # Tensor, not Image: tfds encodes images with TensorFlow, which
          # genrepair does not install. zlib stores a 180x180 gray image in
          # ~25 KB; two None dims make tfds store the shape per example.
          'image': tfds.features.Tensor(shape=(None, None, channels), dtype=np.uint8,
                                        encoding='zlib'),
          'id': tfds.features.Scalar(dtype=np.int64),
          'name': tfds.features.Text(),
          'source_channels': tfds.features.Scalar(dtype=np.int64),
      }),
      homepage=homepage,
      # Keep file order so record i is file i (ids match across builds).
      disable_shuffling=True,
  )


def _examples(paths: list[pathlib.Path], channels: int, *,
              luma: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
  for i, path in enumerate(paths):
    image = io.read_image(str(path))
    yield i, {
        'image': _to_channels(image, channels, luma=luma, path=path),
        'id': i,
        'name': path.name,
        'source_channels': image.shape[-1],
    }


class _ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder for the folder `FOLDERS[name]`, given as the tfds manual dir."""

  SPEC: ClassVar[FolderSpec]
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'shared/data copy, sorted file order.'}

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f'Place the {cls.SPEC.count} images of {cls.SPEC.homepage} in '
        f'${_DATA_ENV}/{cls.SPEC.subdir}.')

  def _info(self) -> tfds.core.DatasetInfo:
    return _info(self, channels=self.SPEC.channels, description=self.SPEC.description,
                 homepage=self.SPEC.homepage)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = pathlib.Path(dl_manager.manual_dir)
    paths = image_files(folder)
    if len(paths) != self.SPEC.count:
      raise ValueError(
          f'{self.name}: {folder} holds {len(paths)} images; expected {self.SPEC.count}.')
    return {self.SPEC.split: self._generate_examples(paths)}

  def _generate_examples(self, paths: list[pathlib.Path]):
    return _examples(paths, self.SPEC.channels)


class Train400(_ImageFolder):
  """DnCNN's Train400 (split `train`): image uint8 [180, 180, 1]."""
  SPEC = FOLDERS['train400']


class Bsd68(_ImageFolder):
  """BSD68 (split `test`): image uint8 [481, 321, 1] or [321, 481, 1]."""
  SPEC = FOLDERS['bsd68']


class Set12(_ImageFolder):
  """Set12 (split `test`): image uint8 [256, 256, 1] or [512, 512, 1]."""
  SPEC = FOLDERS['set12']


class T91(_ImageFolder):
  """T91 (split `train`): image uint8 [H, W, 3], H and W in ~[70, 300]."""
  SPEC = FOLDERS['t91']


class Set5(_ImageFolder):
  """Set5 HR (split `test`): image uint8 [H, W, 3]."""
  SPEC = FOLDERS['set5']


class Set14(_ImageFolder):
  """Set14 HR (split `test`): image uint8 [H, W, 3]; bridge.png replicated gray."""
  SPEC = FOLDERS['set14']


class NaturalPhotos(tfds.core.GeneratorBasedBuilder):
  """Embedded photos, RGB (splits `train`, `test`): image uint8 [H, W, 3]."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'PHOTO_SPLITS: 6 train (5 without matplotlib), 2 test.'}
  CHANNELS = 3

  def _info(self) -> tfds.core.DatasetInfo:
    return _info(self, channels=self.CHANNELS,
                 description='Photos shipped inside scikit-image and matplotlib (offline).',
                 homepage='https://scikit-image.org/docs/stable/api/skimage.data.html')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The photos ship inside installed packages.
    return {split: self._generate_examples(paths) for split, paths in photo_files().items()}

  def _generate_examples(self, paths: list[pathlib.Path]):
    return _examples(paths, self.CHANNELS, luma=True)


class NaturalPhotosGray(NaturalPhotos):
  """`natural_photos` as BT.601 luma (splits `train`, `test`): uint8 [H, W, 1]."""

  CHANNELS = 1


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    'train400': Train400, 'bsd68': Bsd68, 'set12': Set12, 't91': T91, 'set5': Set5,
    'set14': Set14, 'natural_photos': NaturalPhotos, 'natural_photos_gray': NaturalPhotosGray,
}
