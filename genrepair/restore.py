r"""Restoring a user's image file with a trained restoration model (``launch.py restore``).

A model comes from a run directory (``load_model(workdir=...)``, the newest or a given
checkpoint), from an exported weights file (``load_exported``, written by ``export`` /
``launch.py export``) or from a shipped model (``--model NAME``, :mod:`genrepair.pretrained`).

**Tiling.** The model runs on fixed-size overlapping tiles of its input, so every image at
least a tile large uses one compiled program (one per tile shape and tile batch;
``TiledRunner.traces`` counts them) and bounded memory:

* ``tile`` and ``overlap`` are in **model-input pixels** (low-resolution pixels for
  ``sr_input='lr'`` models such as ESPCN, whose output tile is ``scale`` x larger; pixels
  of the bicubic upscale for ``sr_input='bicubic'`` models such as SRCNN).
* Along each axis tiles start at 0 and step by ``tile - overlap``; the last tile is aligned
  to the image end. Neighbouring tiles overlap by at least ``overlap``; each tile writes only
  its part up to the middle of each overlap (at least ``overlap // 2`` pixels away from
  every inner tile edge), the tiles at the image border write up to the border. Border tiles
  start exactly at the border, so the model's own zero padding there is the same as when
  the whole image is processed.
* With ``overlap // 2`` >= the model's receptive-field radius (``receptive_radius``), the
  result equals whole-image processing up to float rounding (tested to 1e-5). The default
  ``overlap`` is ``2 * radius`` (DnCNN-S: 34, ESPCN: 8 LR pixels), rounded up to the
  model's alignment; the default ``tile`` is 128, or ``2 * overlap`` when that is larger.
  A smaller ``overlap`` than ``2 * radius`` is allowed with a warning (seams possible).
* U-Nets (and the encoder-decoder) pool ``depth`` times: tiles start at multiples of
  ``2^depth`` (``tile`` and ``overlap`` must be such multiples), and an image whose size is
  not a multiple is first reflect-padded at the bottom/right to one, as the model itself
  does on a whole image.
* **Images smaller than a tile** along an axis are processed whole along that axis (the
  tile shrinks to the image there), so the result equals whole-image processing for every
  image size; each such smaller size compiles its own program (all images at least a tile
  large in both directions share one). Reflect-padding small images to the tile instead
  would keep one program but change the output near the bottom/right border (measured:
  up to 0.18 on ESPCN x3's 85x85 LR butterfly, -0.025 dB).

**Channels.** The output has the input's channel count:

* Model channels == image channels: used as is.
* 1-channel **SR** model on an RGB image: the standard SRCNN/ESPCN demo: the BT.601 Y
  channel (MATLAB ``rgb2ycbcr``, not rounded) is super-resolved, Cb and Cr are upscaled with
  MATLAB bicubic (``degradations.imresize``), and the result is converted back to RGB.
* 1-channel **denoising/deblurring/inpainting** model on an RGB image: ``ValueError`` naming
  the file (convert it to grayscale first); restoring the channels one by one would apply a
  model to colour statistics it was not trained on.
* 3-channel model on a gray image: the gray channel is repeated to RGB, and the RGB output
  is turned back into gray with MATLAB ``rgb2gray``'s weights.

**Input files** are read with :func:`genrepair.io.read_image`'s rules: an opaque alpha
channel is dropped, any transparent pixel is refused (``ValueError``); palette images are
expanded; 16-bit colour PNGs are refused. **16-bit gray** PNG/TIFF images are read at full
precision (``v / 65535``) and the output is written as a 16-bit PNG/TIFF (``round(65535
x)``); a JPEG/BMP output path for a 16-bit input is refused. 8-bit inputs give 8-bit
outputs (``io.to_uint8``). The float output is clipped to ``[0, 1]`` only when written.

**Inpainting** needs a mask image of the input's size: gray value > 127 (white) = hole.
**Non-blind deblurring** (``degradation.deconvolution='wiener'``) needs the blur kernel
(``--kernel``, :func:`read_kernel`); its Wiener estimate is computed on the whole image.
An existing output file is never overwritten unless ``overwrite=True`` (``--overwrite``).

**Exported weights** (``export``): one ``.npz`` file, arrays only (loaded with
``allow_pickle=False``): ``'params/<module>/<name>'`` and ``'batch_stats/<module>/<name>'``
float32 arrays, the run's config as UTF-8 JSON bytes (uint8 ``[N]``) under
``'__config__'``, and ``'__meta__'`` (uint8 JSON: format version, step, source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from genrepair import degradations, io, tasks
from genrepair.models import dncnn, drrn, edsr, espcn, srcnn, unet

EXPORT_FORMAT = 1
DEFAULT_TILE = 128
_CONFIG_KEY = "__config__"
_META_KEY = "__meta__"
_COLLECTIONS = ("params", "batch_stats")
_16BIT_EXTENSIONS = (".png", ".tif", ".tiff")
# MATLAB rgb2ycbcr for double RGB in [0, 1], output in [0, 1]: ycc = RGB @ T.T + offset.
_YCC_T = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]]) / 255.0
_YCC_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


# ------------------------------------------------------------------------ loading models


def _restoration_task(config: ml_collections.ConfigDict, source: str):
  """Builds the task of a config for inference (no mesh, no data).

  Raises:
    ValueError: not a restoration config.
  """
  if config.get("task") != "restoration":
    raise ValueError(f"{source} is a {config.get('task')!r} model; restore needs a"
                     " restoration model (denoising, SR, deblurring, inpainting).")
  # The task reads training-only files (blur kernels) lazily: restoring needs none.
  return tasks.get(config.task)(config)


def _single_device(state):
  """The state's arrays on this process's first device (restoring is one image at a time)."""
  def one(a):
    if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
      return a.addressable_data(0)
    return jnp.asarray(a)
  return jax.tree.map(one, state)


def load_model(*, workdir: str | None = None, step: int | None = None,
               weights: str | None = None, model: str | None = None):
  """Loads a restoration model from exactly one source.

  Args:
    workdir: a run directory (``launch.py train``/``import``); ``step`` picks a checkpoint.
    step: checkpoint step with ``workdir`` (default: newest).
    weights: an exported ``.npz`` (``launch.py export``).
    model: a shipped model name (``genrepair.pretrained.MODELS``).

  Returns:
    ``(task, state, description)``: a ``RestorationTask``, an :class:`InferenceState`
    (``params``, ``batch_stats`` on one device) and a one-line description of the source.

  Raises:
    ValueError: not exactly one source, ``step`` without ``workdir``, an unknown model
      name, a non-restoration run, a damaged weights file.
    FileNotFoundError: missing run directory or file.
  """
  given = [n for n, v in (("--workdir", workdir), ("--weights", weights), ("--model", model))
           if v]
  if len(given) != 1:
    raise ValueError("Give exactly one model source of --workdir, --weights, --model; got"
                     f" {given or 'none'}.")
  if step is not None and not workdir:
    raise ValueError("--step selects a checkpoint of --workdir; it cannot be used with"
                     f" {given[0]}.")
  if workdir:
    from genrepair import sampling  # pylint: disable=import-outside-toplevel
    task, state, step, config = sampling.load_run(workdir, step)
    if config.get("task") != "restoration":
      raise ValueError(f"{workdir} is a {config.get('task')!r} run; restore needs a"
                       " restoration run.")
    state = InferenceState(params=_single_device(state.params),
                           batch_stats=_single_device(state.batch_stats))
    return task, state, f"{workdir} step {step}"
  if model:
    from genrepair import pretrained  # pylint: disable=import-outside-toplevel
    weights = pretrained.path(model)
  task, state = load_exported(weights)
  return task, state, (f"--model {model} ({weights})" if model else weights)


# ------------------------------------------------------------------------ export / import


def _flatten(collection: str, tree: Any) -> dict[str, np.ndarray]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree) if tree else {}, sep="/")
  return {f"{collection}/{k}": np.asarray(jax.device_get(v)) for k, v in flat.items()}


def _flatten_abstract(collection: str, tree: Any) -> dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree) if tree else {}, sep="/")
  return {f"{collection}/{k}": v for k, v in flat.items()}


def _json_array(obj: Any) -> np.ndarray:
  return np.frombuffer(json.dumps(obj, sort_keys=True).encode("utf-8"), np.uint8)


def export(config: ml_collections.ConfigDict, state, path: str, *, step: int | None = None,
           source: str = "", overwrite: bool = False) -> str:
  """Writes a restoration model's weights and config to one ``.npz`` (no pickle).

  Args:
    config: the run config (``sampling.load_run``'s fourth result).
    state: its state; only ``params`` and ``batch_stats`` are written (float32 as stored).
    path: output ``.npz`` path (parent directories are created).
    step: training step, recorded in ``'__meta__'``.
    source: where the weights came from (e.g. the workdir), recorded in ``'__meta__'``.
    overwrite: replace an existing file.

  Returns:
    The sha256 hex digest of the written file.

  Raises:
    ValueError: not a restoration config, or ``path`` does not end in ``.npz``.
    FileExistsError: ``path`` exists and not ``overwrite``.
  """
  if config.get("task") != "restoration":
    raise ValueError(f"export writes restoration models; this run is a {config.get('task')!r}"
                     " run.")
  if not path.endswith(".npz"):
    raise ValueError(f"Exported weights must be an .npz file, got {path!r}.")
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
  arrays = {**_flatten("params", state.params), **_flatten("batch_stats", state.batch_stats)}
  arrays[_CONFIG_KEY] = np.frombuffer(config.to_json_best_effort().encode("utf-8"), np.uint8)
  arrays[_META_KEY] = _json_array({"format": EXPORT_FORMAT, "step": step, "source": source})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path[:-4] + ".tmp.npz"
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)
  return sha256(path)


def sha256(path: str) -> str:
  """sha256 hex digest of a file."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


@flax.struct.dataclass
class InferenceState:
  """The arrays a restoration model needs at inference (an exported file's content).

  Attributes:
    params: model parameters.
    batch_stats: BatchNorm running statistics (empty dict without BatchNorm).
  """
  params: Any
  batch_stats: Any


def load_exported(path: str):
  """Loads an exported ``.npz`` (``export``): rebuilds the task from its config.

  Args:
    path: the ``.npz`` file.

  Returns:
    ``(task, state)``: a ``RestorationTask`` and an :class:`InferenceState` (float32 arrays
    on the default device).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: not a readable ``.npz`` without pickles, no ``'__config__'``, a
      non-restoration config, a missing or unexpected array (named), or an array whose
      shape differs from the model's (the key and both shapes are named).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Weights file not found: {path!r}.")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError) as e:  # not a zip / pickled object arrays
    raise ValueError(f"Cannot read exported weights {path!r} (arrays only, no pickle): {e}")
  if _CONFIG_KEY not in arrays:
    raise ValueError(f"{path!r} has no {_CONFIG_KEY!r} entry: not written by"
                     " `launch.py export`.")
  config = ml_collections.ConfigDict(json.loads(arrays.pop(_CONFIG_KEY).tobytes()))
  arrays.pop(_META_KEY, None)
  task = _restoration_task(config, path)
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  want = {}
  for collection in _COLLECTIONS:
    want.update(_flatten_abstract(collection, getattr(abstract, collection)))
  missing = sorted(set(want) - set(arrays))
  if missing:
    raise ValueError(f"{path!r} lacks {missing[0]!r} ({len(missing)} missing array(s)) that"
                     " the model of its config needs.")
  extra = sorted(set(arrays) - set(want))
  if extra:
    raise ValueError(f"{path!r} holds {extra[0]!r} ({len(extra)} unexpected array(s)),"
                     " which the model of its config does not have.")
  for k, spec in want.items():
    if tuple(arrays[k].shape) != tuple(spec.shape):
      raise ValueError(f"{path!r}: {k} has shape {tuple(arrays[k].shape)}, but the model of"
                       f" its config needs {tuple(spec.shape)}.")
  trees = {}
  for collection in _COLLECTIONS:
    flat = {k[len(collection) + 1:]: jnp.asarray(arrays[k], spec.dtype)
            for k, spec in want.items() if k.startswith(collection + "/")}
    trees[collection] = flax.traverse_util.unflatten_dict(flat, sep="/") if flat else {}
  return task, InferenceState(params=trees["params"], batch_stats=trees["batch_stats"])


# ------------------------------------------------------------------------ tiling


def receptive_radius(model) -> int | None:
  """Receptive-field radius of a restoration model, in model-input pixels (an upper bound).

  An output pixel depends only on input pixels at most this far away (Chebyshev distance;
  for ``sr_input='lr'`` models: from the low-resolution pixel it lies in).

  Returns:
    The radius, or None for a model family not listed here.
  """
  if isinstance(model, dncnn.DnCNN):
    return int(model.depth)                                  # depth 3x3 convs
  if isinstance(model, (espcn.ESPCN, srcnn.SRCNN)):
    return sum(int(k) // 2 for k in model.kernel_sizes)
  if isinstance(model, drrn.DRRN):
    return drrn.depth(model.num_blocks, model.num_units)      # every conv is 3x3
  if isinstance(model, edsr.EDSR):
    # head + 2 per block + body conv at LR, then <= 2 LR pixels for upsampler and tail.
    return 2 * int(model.n_resblocks) + 4
  if isinstance(model, unet.UNet):
    # Per level i (scale 2^i): two convs down, the pooling window, the upsampling and two
    # convs up, each <= 2^i input pixels per 3x3 conv (<= 2 * 2^i for the upsampling);
    # the bottleneck's two convs at 2^depth. 9 * 2^depth - 7 (depth 4: 137).
    return 9 * 2 ** int(model.depth) - 7
  return None


def alignment(model) -> int:
  """Tile starts must be multiples of this (``2^depth`` for U-Nets, else 1)."""
  if isinstance(model, unet.UNet):
    return 2 ** int(model.depth)
  return 1


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _starts(length: int, tile: int, stride: int) -> list[int]:
  """Tile starts along one axis of ``length >= tile``: 0, stride, ..., length - tile."""
  if length <= tile:
    return [0]
  return list(range(0, length - tile, stride)) + [length - tile]


def _spans(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
  """The part ``[lo, hi)`` each tile writes: up to the middle of each overlap."""
  cuts = [0] + [(s1 + s0 + tile) // 2 for s0, s1 in zip(starts, starts[1:])] + [length]
  return list(zip(cuts, cuts[1:]))


class TiledRunner:
  """Runs a restoration model on one image in fixed-size overlapping tiles.

  Attributes:
    task: the ``RestorationTask``.
    tile: tile size in model-input pixels.
    overlap: minimum overlap of neighbouring tiles in model-input pixels.
    batch: tiles per compiled call (the last call is padded with zero tiles).
    radius: the model's receptive-field radius (None if unknown).
    traces: how many times the model function was traced (= compiled programs).
    last_num_tiles: tiles of the last image.
    last_tile_hw: ``(height, width)`` of the last image's tiles (smaller than ``tile``
      along an axis where the image is).
  """

  def __init__(self, task, state, *, tile: int | None = None, overlap: int | None = None,
               batch: int | None = None):
    """Validates the tiling.

    Args:
      task: a ``RestorationTask``.
      state: anything with ``params`` and ``batch_stats`` (moved to one device).
      tile: tile size (default: 128, or ``2 * overlap`` if larger, rounded to the
        alignment).
      overlap: default ``2 * receptive_radius`` rounded up to the alignment (32 if the
        radius is unknown).
      batch: tiles per call (default 1 on CPU, 8 on accelerators).

    Raises:
      ValueError: ``tile``/``overlap`` not multiples of the model's alignment, ``overlap``
        negative or ``>= tile``, ``batch < 1``, a model with 'VALID' padding.
    """
    if getattr(task.model, "padding", None) == "VALID":
      raise ValueError(f"{type(task.model).__name__} with padding='VALID' shrinks its output;"
                       " restore needs a same-size model ('SAME' or 'EDGE' padding).")
    self.task = task
    self.params = _single_device(state.params)
    self.batch_stats = _single_device(state.batch_stats)
    self.radius = receptive_radius(task.model)
    self.align = alignment(task.model)
    if overlap is None:
      if self.radius is None:
        warnings.warn(f"Unknown receptive field of {type(task.model).__name__}; using"
                      " --overlap 32 (pass a larger one if tiles show seams).", stacklevel=2)
      overlap = _round_up(2 * self.radius if self.radius is not None else 32, self.align)
    if tile is None:
      tile = _round_up(max(DEFAULT_TILE, 2 * overlap), self.align)
    if batch is None:
      batch = 1 if jax.default_backend() == "cpu" else 8
    if tile % self.align or overlap % self.align:
      raise ValueError(f"--tile ({tile}) and --overlap ({overlap}) must be multiples of"
                       f" {self.align} for {type(task.model).__name__} (2^depth poolings).")
    if not 0 <= overlap < tile or batch < 1:
      raise ValueError(f"Need 0 <= --overlap ({overlap}) < --tile ({tile}) and a tile batch"
                       f" >= 1 ({batch}).")
    if self.radius is not None and overlap // 2 < self.radius:
      warnings.warn(f"--overlap {overlap} is less than twice the receptive-field radius"
                    f" ({self.radius}) of {type(task.model).__name__}: tile seams may be"
                    f" visible; use --overlap {_round_up(2 * self.radius, self.align)}.",
                    stacklevel=2)
    self.tile, self.overlap, self.batch = int(tile), int(overlap), int(batch)
    self.scale = int(task.output_scale)
    self.traces = 0
    self.last_num_tiles, self.last_tile_hw = 0, (0, 0)
    self._fn = jax.jit(self._apply)

  def _apply(self, params, batch_stats, tiles: jax.Array) -> jax.Array:
    self.traces += 1  # Runs only when jax traces (compiles) a new shape.
    return self.task.apply(params, batch_stats, tiles, train=False)[0]

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """Restores one model input.

    Args:
      x: float32 ``[H, W, Cin]``: the model input (``task.model_input`` of the image),
        any H, W >= 1.

    Returns:
      float32 ``[sH, sW, C]`` (``s = task.output_scale``, C the model's channels), not
      clipped.
    """
    x = np.asarray(x, np.float32)
    h, w = x.shape[:2]
    # Bottom/right reflection to the alignment, as the model does on a whole image.
    ph, pw = -h % self.align, -w % self.align
    if ph or pw:
      x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    hp, wp = x.shape[:2]
    # An axis shorter than the tile is one whole tile (another compiled shape).
    th, tw = min(self.tile, hp), min(self.tile, wp)
    s, stride = self.scale, self.tile - self.overlap
    rows, cols = _starts(hp, th, stride), _starts(wp, tw, stride)
    boxes = [(r, c, rs, cs) for r, rs in zip(rows, _spans(rows, th, hp))
             for c, cs in zip(cols, _spans(cols, tw, wp))]
    self.last_num_tiles, self.last_tile_hw = len(boxes), (th, tw)
    out = None
    for i in range(0, len(boxes), self.batch):
      chunk = boxes[i:i + self.batch]
      tiles = np.zeros((self.batch, th, tw, x.shape[-1]), np.float32)
      for j, (r, c, _, _) in enumerate(chunk):
        tiles[j] = x[r:r + th, c:c + tw]
      y = np.asarray(self._fn(self.params, self.batch_stats, tiles))  # [N, s th, s tw, C]
      if out is None:
        out = np.empty((s * hp, s * wp, y.shape[-1]), np.float32)
      for j, (r, c, (r0, r1), (c0, c1)) in enumerate(chunk):
        out[s * r0:s * r1, s * c0:s * c1] = y[j, s * (r0 - r):s * (r1 - r),
                                             s * (c0 - c):s * (c1 - c)]
    return out[:s * h, :s * w]


# ------------------------------------------------------------------------ images


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
  """MATLAB ``rgb2ycbcr`` for float RGB in ``[0, 1]``: ``[..., 3] -> [..., 3]`` in ``[0, 1]``
  (Y in ``[16, 235] / 255``), not rounded."""
  return (np.asarray(rgb, np.float64) @ _YCC_T.T + _YCC_OFFSET).astype(np.float32)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
  """Inverse of :func:`rgb_to_ycbcr` (MATLAB ``ycbcr2rgb``), float32, not clipped."""
  return ((np.asarray(ycc, np.float64) - _YCC_OFFSET) @ np.linalg.inv(_YCC_T).T).astype(
      np.float32)


def _describe_kind(task) -> str:
  return {"gaussian_noise": "denoising", "salt_and_pepper": "impulse-noise removal",
          "bicubic": "super-resolution", "blur": "deblurring",
          "inpaint": "inpainting"}.get(task.kind, task.kind)


def restore_image(runner: TiledRunner, image: np.ndarray, mask: np.ndarray | None = None,
                  *, kernel: np.ndarray | None = None, name: str = "the image") -> np.ndarray:
  """Restores one image with a tiled model, reconciling channels (see the module doc).

  Args:
    runner: a :class:`TiledRunner`.
    image: float32 ``[H, W, C]`` in ``[0, 1]``, C in {1, 3}.
    mask: ``inpaint`` only: float32/bool ``[H, W]`` or ``[H, W, 1]``, 1 = hole.
    kernel: non-blind (Wiener-conditioned) deblurring only: the blur kernel, float
      ``[K, K]`` summing to 1 (:func:`read_kernel`). The Wiener estimate is computed on
      the whole image, then the model runs in tiles.
    name: how errors name the image (its file).

  Returns:
    float32 ``[sH, sW, C]`` (``s`` the SR scale, 1 otherwise), not clipped.

  Raises:
    ValueError: a mask for a model that takes none or none for an inpainting model, a
      mask of another size, a kernel for a model that takes none or none for a non-blind
      deblurring model, a kernel larger than the image, or channels that cannot be
      reconciled.
  """
  task = runner.task
  image = np.asarray(image, np.float32)
  h, w, c = image.shape
  if task.kind == "inpaint":
    if mask is None:
      raise ValueError(f"The model is an inpainting model: it needs --mask (an image of"
                       f" {name}'s size, white = hole).")
    mask = np.asarray(mask, np.float32).reshape(mask.shape[:2] + (1,))
    if mask.shape[:2] != (h, w):
      raise ValueError(f"Mask shape {mask.shape[:2]} differs from {name}'s {(h, w)}.")
  elif mask is not None:
    raise ValueError(f"--mask is for inpainting models; this is a {_describe_kind(task)}"
                     " model.")
  if getattr(task, "deconvolution", "none") == "wiener":
    if kernel is None:
      raise ValueError("The model is a non-blind deblurring model: it needs --kernel (the"
                       " blur kernel as .npy or a gray image, normalised to sum 1).")
    if kernel.shape[0] > h or kernel.shape[1] > w:
      raise ValueError(f"The kernel ({kernel.shape[0]}x{kernel.shape[1]}) is larger than"
                       f" {name} ({h}x{w}).")
  elif kernel is not None:
    raise ValueError(f"--kernel is for non-blind deblurring models; this is a"
                     f" {_describe_kind(task)} model.")
  mc = task.channels
  sr = task.kind == "bicubic"
  scale = int(task.config.degradation.scale) if sr else 1

  def run(img):  # float32 [H, W, mc] -> [sH, sW, mc]
    inp = task.model_input(jnp.asarray(img[None]),
                           None if mask is None else jnp.asarray(mask[None]),
                           kernel=None if kernel is None else jnp.asarray(kernel))
    return runner(np.asarray(inp[0]))

  if c == mc:
    return run(image)
  if mc == 1 and c == 3:
    if not sr:
      raise ValueError(f"{name} is an RGB image, but the model is a 1-channel (grayscale)"
                       f" {_describe_kind(task)} model: convert the image to grayscale first"
                       " (e.g. io.read_image(path, mode='gray')).")
    ycc = rgb_to_ycbcr(image)                                      # [H, W, 3]
    y = run(ycc[..., :1])                                          # [sH, sW, 1]
    cbcr = np.asarray(degradations.imresize(jnp.asarray(ycc[..., 1:]), scale=float(scale)))
    return ycbcr_to_rgb(np.concatenate([y, cbcr], axis=-1))
  if mc == 3 and c == 1:
    rgb = run(np.repeat(image, 3, axis=-1))
    return (rgb.astype(np.float64) @ _GRAY_WEIGHTS)[..., None].astype(np.float32)
  raise ValueError(f"{name} has {c} channels; the model has {mc}.")


@dataclasses.dataclass
class InputImage:
  """An image file read for restoring.

  Attributes:
    pixels: float32 ``[H, W, C]`` in ``[0, 1]``, C in {1, 3}.
    bits: 8 or 16 (16 only for 16-bit gray PNG/TIFF).
  """
  pixels: np.ndarray
  bits: int


def read_input(path: str) -> InputImage:
  """Reads an image to restore: ``io.read_image`` rules, plus 16-bit gray at full precision.

  Raises:
    FileNotFoundError: no such file.
    ValueError: as ``io.read_image`` (transparent pixels, 16-bit colour, undecodable).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Input image not found: {path!r}.")
  try:
    with Image.open(path) as im:
      if im.mode.startswith("I;16"):
        return InputImage(np.asarray(im).astype(np.float32)[..., None] / 65535.0, 16)
  except (OSError, SyntaxError) as e:
    raise ValueError(f"Cannot decode image {path!r}: {e}") from e
  return InputImage(io.read_image(path).astype(np.float32) / 255.0, 8)


def read_mask(path: str) -> np.ndarray:
  """A mask image as float32 ``[H, W, 1]``: 1 where the gray value is > 127 (hole).

  Raises:
    FileNotFoundError, ValueError: as ``io.read_image``.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Mask image not found: {path!r}.")
  return (io.read_image(path, mode="gray", alpha="drop") > 127).astype(np.float32)


def read_kernel(path: str) -> np.ndarray:
  """A blur kernel file as float32 ``[K, K']`` normalised to sum 1.

  ``.npy``: a 2-D float array (no pickle: ``allow_pickle=False``); otherwise an image
  (PNG, ...) read as gray, its values proportional to the kernel's, as motion-blur kernels
  are usually distributed.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not 2-D, negative or non-finite values, or a zero sum.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Kernel file not found: {path!r}.")
  if path.lower().endswith(".npy"):
    k = np.load(path, allow_pickle=False).astype(np.float64)
  else:
    k = io.read_image(path, mode="gray", alpha="drop")[..., 0].astype(np.float64)
  if k.ndim != 2 or not np.all(np.isfinite(k)) or np.any(k < 0) or not k.sum() > 0:
    raise ValueError(f"Kernel {path!r} must be a 2-D array of finite values >= 0 with a"
                     f" positive sum; got shape {k.shape}.")
  return (k / k.sum()).astype(np.float32)


def check_output(path: str, *, bits: int = 8, overwrite: bool = False) -> None:
  """Refuses an output path before any work: existing file, unknown or unfit extension.

  Raises:
    FileExistsError: ``path`` exists and not ``overwrite``.
    ValueError: an extension Pillow cannot write, or not PNG/TIFF for a 16-bit image.
  """
  ext = os.path.splitext(path)[1].lower()
  if Image.registered_extensions().get(ext) is None:
    raise ValueError(f"Cannot tell the image format of output {path!r} from its extension"
                     " (use .png).")
  if bits == 16 and ext not in _16BIT_EXTENSIONS:
    raise ValueError(f"The input is a 16-bit image; write it to .png or .tif, not {path!r}.")
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"Output {path} exists; pass --overwrite to replace it.")


def write_output(path: str, image: np.ndarray, bits: int = 8) -> None:
  """Writes float ``[H, W, C]`` (clipped to ``[0, 1]``) as 8-bit, or 16-bit gray PNG/TIFF."""
  if bits == 8:
    io.save_image(path, io.to_uint8(image, (0.0, 1.0)))
    return
  q = np.round(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fmt = Image.registered_extensions()[os.path.splitext(path)[1].lower()]
  tmp = path + ".tmp"
  Image.fromarray(q[..., 0]).save(tmp, format=fmt)
  os.replace(tmp, path)


# launch.py restore --task: the degradation kinds each task name covers.
TASKS = {"denoise": ("gaussian_noise", "salt_and_pepper"), "sr": ("bicubic",),
         "deblur": ("blur",), "inpaint": ("inpaint",)}


def check_task(task, name: str, source: str) -> None:
  """``launch.py restore --task NAME``: checks that the model does that task.

  Args:
    task: the model's ``RestorationTask``.
    name: a key of :data:`TASKS` (denoise, sr, deblur, inpaint).
    source: the model's description, for the message.

  Raises:
    ValueError: an unknown task name, or a model of another task (both named).
  """
  if name not in TASKS:
    raise ValueError(f"--task {name!r}: expected one of {sorted(TASKS)}.")
  if task.kind not in TASKS[name]:
    mine = [n for n, kinds in TASKS.items() if task.kind in kinds]
    raise ValueError(f"--task {name}: {source} is a {mine[0] if mine else task.kind} model"
                     f" ({_describe_kind(task)}), not a {name} model.")


def restore_file(task, state, input_path: str, output_path: str, *,
                 mask_path: str | None = None, kernel_path: str | None = None,
                 tile: int | None = None,
                 overlap: int | None = None, overwrite: bool = False) -> str:
  """Restores an image file and writes the result (``launch.py restore``).

  Args:
    task: a ``RestorationTask``; state: its state (``load_model``).
    input_path: the image to restore (PNG/JPEG/BMP/TIFF).
    output_path: where to write (the extension picks the format).
    mask_path: ``inpaint`` only: the hole mask image (white = hole), the input's size.
    kernel_path: non-blind deblurring only: the blur kernel (:func:`read_kernel`).
    tile, overlap: as :class:`TiledRunner` (model-input pixels).
    overwrite: replace an existing ``output_path``.

  Returns:
    A one-line summary.

  Raises:
    FileNotFoundError: missing input, mask or kernel.
    FileExistsError: existing output without ``overwrite``.
    ValueError: unreadable input, channel or mask problems (see :func:`restore_image`),
      an output extension that cannot hold the result, bad tiling options.
  """
  t0 = time.perf_counter()
  image = read_input(input_path)
  check_output(output_path, bits=image.bits, overwrite=overwrite)
  mask = None
  if mask_path:
    mask = read_mask(mask_path)
    if mask.shape[:2] != image.pixels.shape[:2]:
      raise ValueError(f"Mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the"
                       f" input {input_path} is {image.pixels.shape[1]}x"
                       f"{image.pixels.shape[0]}; they must be the same size.")
  kernel = read_kernel(kernel_path) if kernel_path else None
  runner = TiledRunner(task, state, tile=tile, overlap=overlap)
  out = restore_image(runner, image.pixels, mask, kernel=kernel, name=input_path)
  write_output(output_path, out, image.bits)
  h, w, c = image.pixels.shape
  return (f"{_describe_kind(task)}: {input_path} ({w}x{h}, {c} ch, {image.bits}-bit) ->"
          f" {output_path} ({out.shape[1]}x{out.shape[0]}); {runner.last_num_tiles} tile(s)"
          f" of {runner.last_tile_hw[1]}x{runner.last_tile_hw[0]} (--tile {runner.tile},"
          f" --overlap {runner.overlap}"
          f", receptive-field radius {runner.radius}); {time.perf_counter() - t0:.1f} s")
