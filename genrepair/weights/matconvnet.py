"""Importer for the official DnCNN MatConvNet weights (MATLAB v7.3 ``.mat`` = HDF5).

The files of github.com/cszn/DnCNN (``model/specifics/sigma=*.mat``, ``model/GD_*.mat``,
``model/DnCNN3.mat``) hold a MatConvNet SimpleNN ``net`` whose ``net.layers`` is a cell
array of structs with fields ``type`` ('conv' | 'relu' | 'bnorm' | 'loss'), ``weights``
(a cell: ``{W, b}`` for conv, ``{gain, shift, moments}`` for bnorm), ``pad``, ``stride``, ...
MATLAB v7.3 stores that as HDF5: the cell and the ``weights`` cells are datasets of object
references into ``/#refs#``; strings are ``uint16`` character codes. Only arrays are read
(h5py); nothing in the file is executed.

Layout facts (``tests/test_weights.py`` reproduces the published BSD68 PSNR, 29.23 dB, and
checks a synthetic file against a NumPy ``vl_nnconv``; the spatial orientation cannot be
read off PSNR: DnCNN was trained with flip/rotation augmentation, so kernels transposed
spatially score within 0.003 dB, and the orientation below follows MATLAB's semantics):

- HDF5 stores MATLAB arrays column-major, so h5py sees the **reversed** shape: a MATLAB conv
  weight ``W`` of size ``[kh, kw, cin, cout]`` arrives as ``[cout, cin, kw, kh]``, and
  ``np.transpose`` (reverse all axes) recovers MATLAB indexing.
- MATLAB drops trailing singleton dimensions: the last gray conv ``[3, 3, 64, 1]`` is stored
  as ``[3, 3, 64]`` (h5py: ``[64, 3, 3]``); we pad the reversed shape back to 4-D.
- MatConvNet's ``vl_nnconv`` is a correlation (no kernel flip) with rows = image y, like
  ``flax.linen.Conv``, so the Flax kernel ``[kh, kw, cin, cout]`` *is* MATLAB's ``W``:
  ``kernel = np.transpose(h5_array)`` with no spatial flip or swap.
- Biases are ``[cout, 1]`` (h5py ``[1, cout]``). ``pad = 1`` on 3x3 convs is zero 'same'
  padding.
- ``bnorm`` layers (present only in un-merged training snapshots) are folded into the
  preceding conv as MatConvNet computes them in test mode:
  ``y = gain * (Wx + b - mu) / sigma + shift`` with ``moments = [mu, sigma]`` (sigma already
  includes epsilon), i.e. ``W' = W * gain / sigma``, ``b' = (b - mu) * gain / sigma + shift``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

# Layer types that may follow the last conv in a training snapshot and do not change the
# network's output at test time.
_TRAILING_LOSS_TYPES = ("loss", "pdist", "euclideanloss", "vl_nnloss")


def _as_str(ds: Any) -> str:
  """MATLAB char array (uint16 codes) -> str."""
  return "".join(chr(int(c)) for c in np.asarray(ds[()]).ravel())


def _is_empty(ds: Any) -> bool:
  """MATLAB ``[]`` / ``{}`` are stored as their dims with the ``MATLAB_empty`` attribute."""
  return bool(ds.attrs.get("MATLAB_empty", 0))


def _matlab_array(ds: Any, ndim: int) -> np.ndarray:
  """Reads a numeric dataset in MATLAB index order, padded with trailing 1s to ``ndim``."""
  a = np.transpose(np.asarray(ds[()]))  # column-major HDF5 -> MATLAB indexing
  if a.ndim > ndim:
    raise ValueError(f"expected at most {ndim} dims, got MATLAB shape {a.shape}")
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def _read_layers(f: Any, path: str) -> list[dict[str, Any]]:
  """Returns ``[{type, name, weights: [arrays in MATLAB order], pad, stride, leak}]``."""
  if "net" not in f or "layers" not in f["net"]:
    raise ValueError(f"{path}: no 'net.layers' (expected a MatConvNet SimpleNN model saved"
                     f" by MATLAB with -v7.3); top-level keys: {sorted(f.keys())}.")
  cell = f["net"]["layers"]
  if not hasattr(cell, "dtype") or cell.dtype.kind != "O":
    raise ValueError(f"{path}: 'net.layers' is not a cell array of structs (DagNN or a"
                     f" struct array are not supported).")
  layers = []
  for i, ref in enumerate(np.asarray(cell[()]).ravel()):
    g = f[ref]
    where = f"{path}: layer {i + 1}"
    if "type" not in g:
      raise ValueError(f"{where} has no 'type' field; fields: {sorted(g.keys())}.")
    layer = dict(type=_as_str(g["type"]).lower(), index=i + 1,
                 name=_as_str(g["name"]) if "name" in g else f"layer{i + 1}")
    where = f"{path}: layer {i + 1} ({layer['name']!r}, type {layer['type']!r})"
    layer["where"] = where
    weights = []
    if "weights" in g and not _is_empty(g["weights"]):
      for j, wref in enumerate(np.asarray(g["weights"][()]).ravel()):
        w = f[wref]
        if _is_empty(w):
          weights.append(None)
          continue
        if w.dtype.kind not in "fiu":
          raise ValueError(f"{where}: weights{{{j + 1}}} is not a numeric array ({w.dtype}).")
        try:
          weights.append(np.asarray(_matlab_array(w, 4), np.float64))
        except ValueError as e:
          raise ValueError(f"{where}: weights{{{j + 1}}}: {e}.") from None
    layer["weights"] = weights
    for key in ("pad", "stride", "leak"):
      if key in g and not _is_empty(g[key]):
        layer[key] = np.asarray(g[key][()], np.float64).ravel()
    layers.append(layer)
  return layers


def _conv(layer: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Checks a conv layer; returns float64 ``kernel [kh, kw, cin, cout]`` and ``bias``."""
  where = layer["where"]
  if not layer["weights"] or layer["weights"][0] is None:
    raise ValueError(f"{where}: conv layer without weights.")
  kernel = layer["weights"][0]
  kh, kw, _, cout = kernel.shape
  if kh != kw or kh % 2 == 0:
    raise ValueError(f"{where}: expected an odd square kernel, got {kernel.shape}.")
  bias = layer["weights"][1] if len(layer["weights"]) > 1 else None
  bias = np.zeros(cout) if bias is None else bias.ravel()
  if bias.shape != (cout,):
    raise ValueError(f"{where}: bias has {bias.size} values for {cout} filters.")
  pad = layer.get("pad", np.zeros(1))
  if not np.all(pad == (kh - 1) // 2):
    raise ValueError(f"{where}: pad {pad.tolist()} is not 'same' padding for a {kh}x{kh}"
                     f" kernel; DnCNN keeps the image size.")
  if not np.all(layer.get("stride", np.ones(1)) == 1):
    raise ValueError(f"{where}: stride {layer['stride'].tolist()} != 1.")
  return kernel, bias


def _fold_bnorm(layer: dict[str, Any], kernel: np.ndarray,
                bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Folds a MatConvNet ``bnorm`` (test mode) into the preceding conv."""
  where = layer["where"]
  cout = kernel.shape[-1]
  if len(layer["weights"]) != 3 or any(w is None for w in layer["weights"]):
    raise ValueError(f"{where}: bnorm needs {{gain, shift, moments}}, got"
                     f" {len(layer['weights'])} arrays.")
  gain, shift, moments = layer["weights"]
  gain, shift = gain.ravel(), shift.ravel()
  moments = moments.reshape(moments.shape[0], -1)
  if gain.shape != (cout,) or shift.shape != (cout,) or moments.shape != (cout, 2):
    raise ValueError(f"{where}: bnorm shapes {gain.shape}, {shift.shape}, {moments.shape}"
                     f" do not match {cout} channels (moments must be [C, 2]).")
  mu, sigma = moments[:, 0], moments[:, 1]
  scale = gain / sigma
  return kernel * scale, (bias - mu) * scale + shift


def load_dncnn_matconvnet(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
  """Reads official DnCNN MatConvNet weights into a merged-BN DnCNN parameter tree.

  Implements the weight layout of Zhang et al., "Beyond a Gaussian Denoiser" (TIP 2017),
  github.com/cszn/DnCNN. The depth, channels and width are read from the file, so it loads
  DnCNN-S (17 convs, any sigma), DnCNN-B / DnCNN-3 (20 convs) and the colour models; BN
  layers still present in the file are folded into the convs.

  Use with ``genrepair.models.dncnn.DnCNN(**dncnn_config(params))``::

    params = load_dncnn_matconvnet(path)
    model = dncnn.DnCNN(**dncnn_config(params))
    noise = model.apply({"params": params}, noisy, train=False)  # [B, H, W, C]

  Args:
    path: a MATLAB v7.3 ``.mat`` file holding ``net`` (MatConvNet SimpleNN).

  Returns:
    ``{"conv0": {"kernel": [3, 3, C, F], "bias": [F]}, ..., "conv{D-1}": {"kernel":
    [3, 3, F, C], "bias": [C]}}``, float32 numpy arrays, for
    ``DnCNN(depth=D, features=F, channels=C, batch_norm=False)``.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: not a v7.3 (HDF5) ``.mat`` file, or a layer (named in the message) is not
      what a DnCNN has: unknown type, leaky ReLU, non-'same' padding, stride, mismatched
      channels, ReLU after the last conv or missing between convs.
  """
  import h5py  # pylint: disable=import-outside-toplevel

  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"DnCNN weights file not found: {path!r}.")
  if not h5py.is_hdf5(path):
    raise ValueError(f"{path}: not a MATLAB v7.3 (HDF5) .mat file; re-save it in MATLAB with"
                     f" save(file, 'net', '-v7.3').")
  with h5py.File(path, "r") as f:
    layers = _read_layers(f, path)
  while layers and layers[-1]["type"] in _TRAILING_LOSS_TYPES:
    layers.pop()

  # Group the layer list into conv blocks: conv [bnorm] [relu].
  blocks: list[dict[str, Any]] = []
  for layer in layers:
    kind = layer["type"]
    if kind == "conv":
      kernel, bias = _conv(layer)
      blocks.append(dict(kernel=kernel, bias=bias, relu=False, where=layer["where"]))
    elif not blocks:
      raise ValueError(f"{layer['where']}: expected the network to start with a conv.")
    elif kind == "bnorm":
      if blocks[-1]["relu"]:
        raise ValueError(f"{layer['where']}: bnorm after ReLU; DnCNN has conv-BN-ReLU.")
      blocks[-1]["kernel"], blocks[-1]["bias"] = _fold_bnorm(
          layer, blocks[-1]["kernel"], blocks[-1]["bias"])
    elif kind == "relu":
      if float(layer.get("leak", np.zeros(1))[0]) != 0.0:
        raise ValueError(f"{layer['where']}: leaky ReLU (leak {layer['leak'][0]}) is not"
                         f" DnCNN's ReLU.")
      if blocks[-1]["relu"]:
        raise ValueError(f"{layer['where']}: two ReLUs in a row.")
      blocks[-1]["relu"] = True
    else:
      raise ValueError(f"{layer['where']}: unsupported layer type for DnCNN (expected conv,"
                       f" bnorm, relu, or a trailing loss).")

  if len(blocks) < 2:
    raise ValueError(f"{path}: found {len(blocks)} conv layers; DnCNN has at least 2.")
  channels = blocks[0]["kernel"].shape[2]
  features = blocks[0]["kernel"].shape[3]
  params = {}
  for i, block in enumerate(blocks):
    last = i == len(blocks) - 1
    cin = channels if i == 0 else features
    cout = channels if last else features
    kernel = block["kernel"]
    if kernel.shape != (3, 3, cin, cout):
      raise ValueError(f"{block['where']}: kernel shape {kernel.shape} (MATLAB order"
                       f" [kh, kw, cin, cout]); expected {(3, 3, cin, cout)} for conv {i} of"
                       f" a DnCNN with {channels} channels and {features} features.")
    if block["relu"] == last:
      raise ValueError(f"{block['where']}: "
                       + ("ReLU after the last conv" if last else "no ReLU after this conv")
                       + "; DnCNN has ReLU after every conv but the last.")
    params[f"conv{i}"] = dict(kernel=kernel.astype(np.float32),
                              bias=block["bias"].astype(np.float32))
  return params


def dncnn_config(params: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
  """``DnCNN`` keyword arguments matching a merged-BN parameter tree.

  Args:
    params: a tree from :func:`load_dncnn_matconvnet` (``conv0`` .. ``conv{D-1}``).

  Returns:
    ``dict(depth=D, features=F, channels=C, batch_norm=False)``.

  Raises:
    ValueError: the tree is not ``conv0`` .. ``conv{D-1}`` with 4-D kernels.
  """
  names = [f"conv{i}" for i in range(len(params))]
  if sorted(params) != sorted(names) or len(names) < 2:
    raise ValueError(f"Not a merged DnCNN parameter tree: keys {sorted(params)}.")
  first = np.shape(params["conv0"]["kernel"])
  if len(first) != 4:
    raise ValueError(f"conv0 kernel must be [3, 3, C, F], got {first}.")
  return dict(depth=len(names), features=first[3], channels=first[2], batch_norm=False)
