"""Importer for the original SRCNN weights exported as text (Dong et al., TPAMI 2016).

The authors released their Caffe-trained models as MATLAB arrays (``x4.mat`` etc.:
``weights_conv1 [f1^2, n1]``, ``weights_conv2 [n1, f2^2, n2]``, ``weights_conv3
[n2, f3^2]``, ``biases_conv{1,2,3}``) together with ``SRCNN.m``, the test code that produced
the published numbers. github.com/Cuda-Chen/SRCNN-cpp ``model/`` stores those arrays as six
text files ``{weights,biases}_conv{1,2,3}.txt``: a header line with the MATLAB dimensions
(``81 64``, ``64 25 32``, ``32 25``, ``64 1``, ``32 1``, ``1 1``), then the values
whitespace-separated in MATLAB column-major order. Files are parsed as plain numbers; nothing
is executed.

Layout facts (checked by reproducing Set5 / Set14 x4 30.48 / 27.50 dB within 0.005 dB, see
``tests/test_weights.py``; filters transposed spatially give 30.507 / 27.486 dB):

- ``SRCNN.m`` reshapes each filter column-major and applies it with ``imfilter`` (a
  correlation): ``filter(r, c) = weights_conv1(r + f1 * c, i)`` (0-based), ``r`` the row
  (image y) and ``c`` the column (x). Flax kernels are ``[kh, kw, cin, cout]`` correlations
  with the same axes, so ``kernel1 = reshape(w1, (f1, f1, n1), order='F')[:, :, None, :]``,
  ``kernel2[r, c, j, i] = weights_conv2[j, r + f2 * c, i]`` and
  ``kernel3[r, c, i, 0] = weights_conv3[i, r + f3 * c]``: the patch index splits
  column-major (row index fastest), i.e. the spatial axes are *not* those of a row-major
  (C/NumPy) reshape, which would transpose every filter.
"""

from __future__ import annotations

import math
import os

import numpy as np

_FILES = ("weights_conv1", "biases_conv1", "weights_conv2", "biases_conv2",
          "weights_conv3", "biases_conv3")


def read_matlab_text(path: str | os.PathLike) -> np.ndarray:
  """Reads one ``rows cols [...]`` header + column-major values text file.

  Args:
    path: the text file.

  Returns:
    float64 array with the header's shape, in MATLAB index order.

  Raises:
    FileNotFoundError: no such file.
    ValueError: bad header, non-numeric values, or a value count that differs from the
      header's product (message names the file).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"SRCNN weight file not found: {path!r}.")
  with open(path, "r", encoding="ascii") as fh:
    header = fh.readline().split()
    body = fh.read().split()
  try:
    shape = tuple(int(h) for h in header)
  except ValueError:
    raise ValueError(f"{path}: header {' '.join(header)!r} is not a list of dimensions.") \
        from None
  if not shape or any(d <= 0 for d in shape):
    raise ValueError(f"{path}: header {' '.join(header)!r} is not a list of dimensions.")
  try:
    values = np.array([float(v) for v in body], np.float64)
  except ValueError:
    raise ValueError(f"{path}: contains a value that is not a number.") from None
  if values.size != math.prod(shape):
    raise ValueError(f"{path}: header says {shape} = {math.prod(shape)} values, file has"
                     f" {values.size}.")
  return values.reshape(shape, order="F")


def _side(patch: int, path: str) -> int:
  k = math.isqrt(patch)
  if k * k != patch or k % 2 == 0:
    raise ValueError(f"{path}: {patch} taps per filter is not an odd square kernel.")
  return k


def load_srcnn_text(directory: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Reads SRCNN text weights into the parameter tree of ``genrepair.models.srcnn.SRCNN``.

  Implements the layout of Dong et al.'s ``SRCNN.m`` (TPAMI 2016); kernel sizes and widths
  come from the headers, so 9-1-5, 9-3-5 and 9-5-5 models all load.

  Use as::

    params = load_srcnn_text(d)
    model = srcnn.SRCNN(**srcnn_config(params))  # padding 'EDGE' as SRCNN.m
    y_sr = model.apply({"params": params}, y_bicubic)  # [B, H, W, 1] in [0, 1]

  Args:
    directory: folder with ``weights_conv{1,2,3}.txt`` and ``biases_conv{1,2,3}.txt``.

  Returns:
    ``{"conv1": {"kernel": [f1, f1, 1, n1], "bias": [n1]}, "conv2": {"kernel":
    [f2, f2, n1, n2], "bias": [n2]}, "conv3": {"kernel": [f3, f3, n2, 1], "bias": [1]}}``,
    float32 numpy arrays.

  Raises:
    FileNotFoundError: the folder or one of the six files is missing (named).
    ValueError: a file is malformed or the shapes do not chain (file named).
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"SRCNN weights folder not found: {directory!r}.")
  paths = {n: os.path.join(directory, n + ".txt") for n in _FILES}
  a = {n: read_matlab_text(p) for n, p in paths.items()}

  w1, w2, w3 = a["weights_conv1"], a["weights_conv2"], a["weights_conv3"]
  if w1.ndim != 2:
    raise ValueError(f"{paths['weights_conv1']}: expected [f1^2, n1], got {w1.shape}.")
  if w2.ndim == 2:  # header written as n1 x (f2^2 * n2): recover from conv3's n2.
    w2 = w2.reshape((w2.shape[0], -1, w3.shape[0]), order="F")
  if w2.ndim != 3:
    raise ValueError(f"{paths['weights_conv2']}: expected [n1, f2^2, n2], got {w2.shape}.")
  if w3.ndim != 2:
    raise ValueError(f"{paths['weights_conv3']}: expected [n2, f3^2], got {w3.shape}.")
  f1 = _side(w1.shape[0], paths["weights_conv1"])
  f2 = _side(w2.shape[1], paths["weights_conv2"])
  f3 = _side(w3.shape[1], paths["weights_conv3"])
  n1, n2 = w1.shape[1], w2.shape[2]
  if w2.shape[0] != n1 or w3.shape[0] != n2:
    raise ValueError(f"{directory}: layer widths do not chain: conv1 {w1.shape}, conv2"
                     f" {w2.shape}, conv3 {w3.shape}.")
  for name, n in (("biases_conv1", n1), ("biases_conv2", n2), ("biases_conv3", 1)):
    if a[name].size != n:
      raise ValueError(f"{paths[name]}: {a[name].size} biases, expected {n}.")

  # Column-major split of the patch index: tap p = r + f * c (r = row/y, c = column/x).
  k1 = w1.reshape((f1, f1, n1), order="F")[:, :, None, :]  # [f1, f1, 1, n1]
  k2 = w2.reshape((n1, f2, f2, n2), order="F").transpose(1, 2, 0, 3)  # [f2, f2, n1, n2]
  k3 = w3.reshape((n2, f3, f3), order="F").transpose(1, 2, 0)[..., None]  # [f3, f3, n2, 1]
  f32 = lambda x: np.ascontiguousarray(x, np.float32)  # noqa: E731
  return {
      "conv1": dict(kernel=f32(k1), bias=f32(a["biases_conv1"].ravel())),
      "conv2": dict(kernel=f32(k2), bias=f32(a["biases_conv2"].ravel())),
      "conv3": dict(kernel=f32(k3), bias=f32(a["biases_conv3"].ravel())),
  }


def srcnn_config(params: dict[str, dict[str, np.ndarray]]) -> dict:
  """``SRCNN`` keyword arguments matching a parameter tree (padding ``'EDGE'``).

  Args:
    params: a tree from :func:`load_srcnn_text` (``conv1``, ``conv2``, ``conv3``).

  Returns:
    ``dict(kernel_sizes=(f1, f2, f3), features=(n1, n2), channels=C, padding='EDGE')``.

  Raises:
    ValueError: the tree does not have ``conv1`` .. ``conv3`` with 4-D kernels.
  """
  if sorted(params) != ["conv1", "conv2", "conv3"]:
    raise ValueError(f"Not an SRCNN parameter tree: keys {sorted(params)}.")
  shapes = [np.shape(params[f"conv{i}"]["kernel"]) for i in (1, 2, 3)]
  if any(len(s) != 4 for s in shapes):
    raise ValueError(f"SRCNN kernels must be [k, k, cin, cout], got {shapes}.")
  return dict(kernel_sizes=tuple(s[0] for s in shapes),
              features=(shapes[0][3], shapes[1][3]), channels=shapes[0][2], padding="EDGE")
