r"""One-time offline converter: pytorch-fid's FID Inception ``.pth`` -> genrepair's ``.npz``.

genrepair never downloads weights and never unpickles at run time. The FID Inception
weights (the TF ``inception-2015-12-05`` graph that Heusel et al. 2017 and Salimans et al.
2016 used, ported to PyTorch by pytorch-fid) enter the project once, through this script:

1. Download ``pt_inception-2015-12-05-6726825d.pth`` (about 91 MB) from the ``fid_weights``
   release of the GitHub project mseitzer/pytorch-fid (the file its ``FID_WEIGHTS_URL``
   names), on any machine with internet access.
2. With any recent ``torch`` installed (``pip install 'genrepair[bench]'`` or
   ``'genrepair[fid-ref]'``; torchvision is not needed), run::

     python -m genrepair.weights.inception_convert pt_inception-2015-12-05-6726825d.pth \
         "$GENREPAIR_DATA/weights/inception/fid_inception_v3_2015-12-05.npz"

   It refuses a file whose sha256 does not start with ``6726825d`` (the torch.hub naming
   convention: the 8 hex digits in the file name are the start of its sha256; the full
   digest reported for this file elsewhere is ``6726825d0af5f729cebd5821db510b11b1cfad8faa``
   ``d88a03f1befd49fb9129b2``, not checked here), reads it with
   ``torch.load(weights_only=True)`` (tensors and containers only: no code from the file
   runs), maps every tensor to :mod:`genrepair.models.inception`'s variable tree, and
   writes an arrays-only ``.npz`` plus the source file's sha256. It prints the ``.npz``'s
   own sha256: the writer is byte-deterministic (sorted keys, fixed zip timestamps), so the
   same ``.pth`` gives the same ``.npz`` and the same digest on every machine; pin it with
   ``config.eval.inception_sha256`` to make every later load check it.
3. FID/KID/IS then load the ``.npz`` with :func:`genrepair.metrics.inception.load_weights`
   (``allow_pickle=False``), from ``config.eval.inception_weights`` or by default
   ``$GENREPAIR_DATA/weights/inception/fid_inception_v3_2015-12-05.npz``.

The mapping (PyTorch NCHW / ``[out, in]`` -> flax HWIO / ``[in, out]``):

| PyTorch key | npz key | transform |
|---|---|---|
| ``<m>.conv.weight`` ``[O, I, kh, kw]`` | ``params/<m>/conv/kernel`` ``[kh, kw, I, O]`` | transpose (2, 3, 1, 0) |
| ``<m>.bn.weight`` / ``.bias`` | ``params/<m>/bn/scale`` / ``bias`` | — |
| ``<m>.bn.running_mean`` / ``_var`` | ``batch_stats/<m>/bn/mean`` / ``var`` | — |
| ``<m>.bn.num_batches_tracked`` | dropped | — |
| ``fc.weight`` ``[1008, 2048]`` / ``fc.bias`` | ``params/fc/kernel`` ``[2048, 1008]`` / ``bias`` | transpose |

where ``<m>`` is a dotted module path (``Mixed_6b.branch7x7_2``) written with ``/``.
``AuxLogits.*`` (not part of the FID network) is dropped; any other key is an error.
This module imports torch only inside :func:`convert_file`; the mapping itself is NumPy,
and nothing in genrepair imports this module (the CLI and the tests do).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile
from typing import Mapping

import numpy as np

from genrepair.metrics import inception
from genrepair.metrics.inception import FORMAT
from genrepair.metrics.inception import META_FORMAT
from genrepair.metrics.inception import META_SOURCE
from genrepair.metrics.inception import SOURCE_FILE
from genrepair.metrics.inception import SOURCE_SHA256_PREFIX
from genrepair.metrics.inception import sha256_of

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: same bytes whenever the file is written
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Maps a pytorch-fid FID-Inception state dict to genrepair's flat npz keys.

  Args:
    state_dict: ``{torch key: array}`` (NumPy arrays, e.g. ``t.numpy()`` of each tensor).

  Returns:
    ``{'params/...' | 'batch_stats/...': float32 array}`` in flax layouts (table in the
    module docstring). Shapes are not checked against the model here;
    :func:`genrepair.metrics.inception.load_weights` does that.

  Raises:
    ValueError: a key outside the table (names it), or a tensor of the wrong rank.
  """
  out: dict[str, np.ndarray] = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    parts = key.split(".")
    if parts[0] == "AuxLogits" or parts[-1] == "num_batches_tracked":
      continue
    if parts[0] == "fc" and len(parts) == 2 and parts[1] in ("weight", "bias"):
      if parts[1] == "weight":
        _check_rank(key, value, 2)
        out["params/fc/kernel"] = value.T
      else:
        out["params/fc/bias"] = value
    elif len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
      _check_rank(key, value, 4)
      out["params/" + "/".join(parts[:-1]) + "/kernel"] = value.transpose(2, 3, 1, 0)
    elif len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in _BN:
      collection, name = _BN[parts[-1]]
      out[f"{collection}/{'/'.join(parts[:-1])}/{name}"] = value
    else:
      raise ValueError(f"convert_state_dict: unexpected key {key!r} (shape {value.shape}); an"
                       " FID Inception state dict has only '<module>.conv.weight',"
                       " '<module>.bn.{weight,bias,running_mean,running_var}' and"
                       " 'fc.{weight,bias}'.")
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _check_rank(key: str, value: np.ndarray, rank: int) -> None:
  if value.ndim != rank:
    raise ValueError(f"convert_state_dict: {key!r} should have {rank} dimensions, got shape"
                     f" {value.shape}.")


def to_state_dict(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Inverse of :func:`convert_state_dict` (``meta/*`` keys are skipped); for tests.

  Raises:
    ValueError: a key that is not ``params/...`` or ``batch_stats/...`` of the model.
  """
  inverse_bn = {v: k for k, v in _BN.items()}
  out = {}
  for key, value in flat.items():
    collection, *path, leaf = key.split("/")
    if collection == "meta":
      continue
    if key == "params/fc/kernel":
      out["fc.weight"] = np.asarray(value).T
    elif key == "params/fc/bias":
      out["fc.bias"] = np.asarray(value)
    elif collection == "params" and leaf == "kernel":
      out[".".join(path) + ".weight"] = np.asarray(value).transpose(3, 2, 0, 1)
    elif (collection, leaf) in inverse_bn:
      out[".".join(path) + "." + inverse_bn[(collection, leaf)]] = np.asarray(value)
    else:
      raise ValueError(f"to_state_dict: unexpected key {key!r}.")
  return out


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> str:
  """Writes arrays as a byte-deterministic ``.npz`` (atomically); returns its sha256.

  Keys are sorted, members are stored uncompressed with the zip epoch as their time, and
  arrays go through ``np.lib.format.write_array(allow_pickle=False)``: the bytes depend
  only on the arrays. ``np.load(path, allow_pickle=False)`` reads it.

  Raises:
    ValueError: an object-dtype array (would need pickle).
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
      for key in sorted(arrays):
        a = np.asarray(arrays[key])
        if not a.flags.c_contiguous:  # one layout, so one byte stream per array
          a = a.copy(order="C")
        buf = io.BytesIO()
        np.lib.format.write_array(buf, a, allow_pickle=False)
        info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_TIME)
        info.external_attr = 0o644 << 16
        zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return sha256_of(path)


def convert_file(source: str, output: str, *, check_hash: bool = True) -> str:
  """Converts pytorch-fid's ``.pth`` into genrepair's ``.npz``; needs torch.

  Args:
    source: ``pt_inception-2015-12-05-6726825d.pth``.
    output: the ``.npz`` to write (folders are created).
    check_hash: refuse a source whose sha256 does not start with ``6726825d``.

  Returns:
    The written ``.npz``'s sha256.

  Raises:
    FileNotFoundError: no ``source``.
    ValueError: wrong sha256 prefix, or a state dict that is not the FID Inception's
      (keys or shapes; the output is checked by loading it back).
    ImportError: torch is not installed.
  """
  if not os.path.isfile(source):
    raise FileNotFoundError(f"{source}: no such file; download {SOURCE_FILE} from the"
                            " 'fid_weights' release of mseitzer/pytorch-fid on GitHub.")
  digest = sha256_of(source)  # checked before anything is deserialised
  if check_hash and not digest.startswith(SOURCE_SHA256_PREFIX):
    raise ValueError(f"{source}: sha256 {digest} does not start with {SOURCE_SHA256_PREFIX}"
                     f" (the digest prefix in the official file name {SOURCE_FILE}).")
  import torch  # pylint: disable=import-outside-toplevel
  # weights_only=True: torch's restricted unpickler that only rebuilds tensors and plain
  # containers, so no code stored in the file can run (the .pth format is pickle-based).
  state = torch.load(source, map_location="cpu", weights_only=True)
  state = state.get("state_dict", state)
  arrays = convert_state_dict({k: v.detach().cpu().numpy() for k, v in state.items()})
  arrays[META_FORMAT] = np.array(FORMAT)
  arrays[META_SOURCE] = np.array(digest)
  out_digest = write_npz(output, arrays)
  inception.load_weights(output, sha256=out_digest, require_official=check_hash)
  return out_digest


def main(argv: list[str] | None = None) -> int:
  """Command line: ``python -m genrepair.weights.inception_convert SOURCE.pth OUTPUT.npz``."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("source", help=f"pytorch-fid's {SOURCE_FILE}")
  parser.add_argument("output", help="the .npz to write")
  parser.add_argument("--no-check-hash", action="store_true",
                      help=f"accept a source whose sha256 does not start with"
                           f" {SOURCE_SHA256_PREFIX} (the result is then not the FID network)")
  args = parser.parse_args(argv)
  digest = convert_file(args.source, args.output, check_hash=not args.no_check_hash)
  print(f"wrote {args.output}\nsha256 {digest}\n(pin it: --config.eval.inception_sha256={digest})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
