"""Benchmark evaluation of restoration models: full-size test images, fixed corruption seeds,
PSNR/SSIM under the task's recorded protocol, per-image and mean results.

Each test image i is corrupted with ``fold_in(key(eval.seed), i)``, so two evaluations of
the same checkpoint give identical numbers, and the corruption does not depend on which
other images are evaluated. Deblurring uses kernel ``i mod N`` of the task's kernel set for
image ``i``; inpainting uses the ``i``-th mask of the configured NVIDIA hole-ratio bin (see
``eval_masks``).

**A bounded number of compiled models, whatever the dataset.** ``eval.tile``:

* ``0`` (default, automatic): datasets with at most :data:`WHOLE_MAX_SHAPES` distinct
  model-input shapes are evaluated whole (one program per shape; BSD68: two, landscape and
  portrait); larger mixes of shapes run on tiles (one program).
* ``N > 0``: tiles of ``N`` pixels; ``-1``: always whole images.

Tiles: the model runs on fixed-size overlapping tiles (:class:`genrepair.restore.TiledRunner`),
so every image at least a tile large in both directions uses one compiled program. Tiles at
the image border start at the border (the model's zero/edge padding applies at the true
image border) and neighbouring tiles overlap by twice the model's receptive-field radius,
so the output equals whole-image processing up to float summation order
(``tests/test_restoration_task.py`` checks identical per-image PSNR/SSIM). The automatic
tile minimises the pixels computed over the dataset (:func:`choose_tile`; BSD68 with
DnCNN-S: 183, six tiles per image, 1.31x the image pixels). Models whose receptive field
is unknown, or whose 'VALID' padding shrinks the output, are evaluated whole.

Why not always tiles: the overlap is paid in compute. The official DnCNN-S on BSD68, model
time only, idle 2-core Xeon: whole images 42.8 s, 183-px tiles 59.3 s (batch 6 of 184 px:
68.4 s; 192 px: 66.4 s), while the second compiled program is a small part of the 48.1 s
the whole-image evaluation takes end to end (its compile time was not measured
separately). Corruption and PSNR/SSIM are small elementwise programs, one per image shape. The
results record the tiling and the number of compiled model programs (``'tiling'``).

**Devices.** Corruption, tiles and scores run on this process's first device; whole images
go round-robin to every local device (``devices``), all dispatched before the first result
is read, so the devices run concurrently. Each image runs whole on one device with the
same program, so the numbers do not depend on the device count. BSD68 with the shipped
DnCNN-S (``launch.py eval``, which starts one CPU device per core; AMD EPYC, 2 cores):
67.4 s on one device, 61.7 s on two.

Where the degradation has a classical baseline (:mod:`genrepair.baselines`: median filter,
Wiener deconvolution, biharmonic inpainting) it runs on the same corrupted input and is
scored by the same protocol (``baseline_psnr``/``baseline_ssim``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genrepair import baselines, data, degradations, io, metrics, restore
from genrepair.tasks import restoration

# eval.tile = 0: datasets with at most this many distinct model-input shapes run whole.
WHOLE_MAX_SHAPES = 4
_STROKE_SEED_OFFSET = 1_000_003  # eval stroke masks: a key stream apart from the noise keys


def eval_masks(config: ml_collections.ConfigDict,
               shapes: list[tuple[int, int]]) -> list[np.ndarray]:
  """One fixed inpainting mask per test image, float32 ``[1, H, W, 1]`` (1 = hole).

  With ``config.degradation.eval_masks`` set (e.g. ``masks/irregular``), image ``i`` gets
  mask ``i mod n`` of the NVIDIA files of hole-ratio bin ``degradation.mask_bin``, its
  top-left ``H x W`` crop (images larger than a 512x512 mask are padded with known pixels).
  Otherwise a brush-stroke mask drawn from ``fold_in(key(eval.seed + 1000003), i)``.

  Raises:
    FileNotFoundError, ValueError: the mask folder cannot be read.
  """
  dc = config.degradation
  spec = dc.get("eval_masks", "")
  out = []
  if spec:
    folder = restoration.resolve_data_path(spec, config, "config.degradation.eval_masks")
    files = degradations.load_irregular_masks(folder, hole_ratio_bin=int(dc.mask_bin))
    for i, (h, w) in enumerate(shapes):
      m = files[i % len(files)][:h, :w]                               # [h', w', 1]
      m = np.pad(m, ((0, h - m.shape[0]), (0, w - m.shape[1]), (0, 0)))
      out.append(m[None])
    return out
  key = jax.random.key(int(config.eval.seed) + _STROKE_SEED_OFFSET)
  for i, (h, w) in enumerate(shapes):
    out.append(np.asarray(degradations.random_stroke_mask(jax.random.fold_in(key, i),
                                                          (1, h, w, 1))))
  return out


def eval_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The data config of ``config.eval`` (dataset name) with the training data's paths."""
  return ml_collections.ConfigDict(dict(
      name=config.eval.dataset, data_dir=config.data.get("data_dir", ""),
      tfds_dir=config.data.get("tfds_dir", "")))


def choose_tile(shapes: list[tuple[int, int]], *, overlap: int, align: int = 1,
                min_tile: int = restore.DEFAULT_TILE, max_tile: int = 512) -> int:
  """The tile size that computes the fewest pixels over a dataset with one tile shape.

  For each candidate tile ``T`` (multiples of ``align`` from ``max(min_tile, 2 * overlap
  + align)`` up to ``max_tile`` and up to the smallest image side, so that every image
  is at least one tile in both directions and all share one compiled program), the cost
  is the summed area of the tiles :class:`genrepair.restore.TiledRunner` lays over each
  image (starts ``0, T - overlap, ...``, the last one aligned to the image end). Ties go
  to the larger tile (fewer calls).

  Args:
    shapes: ``(height, width)`` of each model input, in model-input pixels.
    overlap: the tiles' minimum overlap (pixels).
    align: tile starts and sizes must be multiples of this (U-Nets: ``2^depth``).
    min_tile, max_tile: the range searched.

  Returns:
    The tile size. If the smallest image side is below the smallest candidate, that
    candidate (images smaller than it along an axis then get their own program).

  Raises:
    ValueError: no shapes.
  """
  if not shapes:
    raise ValueError("choose_tile needs at least one image shape.")
  padded = [(h + -h % align, w + -w % align) for h, w in shapes]
  lo = -(-max(min_tile, 2 * overlap + align) // align) * align
  hi = min(max_tile, min(min(hw) for hw in padded)) // align * align
  best, best_cost = lo, None
  for tile in (range(hi, lo - 1, -align) if hi >= lo else [lo]):
    stride = tile - overlap
    cost = 0
    for h, w in padded:
      th, tw = min(tile, h), min(tile, w)
      cost += (len(restore._starts(h, th, stride)) * len(restore._starts(w, tw, stride))  # pylint: disable=protected-access
               * th * tw)
    if best_cost is None or cost < best_cost:
      best, best_cost = tile, cost
  return best


def evaluate(task, state, config: ml_collections.ConfigDict,
             limit: int | None = None, devices: list[Any] | None = None) -> dict[str, Any]:
  """Evaluates a restoration state on ``config.eval.dataset`` / ``config.eval.split``.

  Args:
    task: a ``RestorationTask``.
    state: its state (replicated arrays).
    config: the run config; uses ``eval.dataset``, ``eval.split``, ``eval.seed`` and
      ``eval.tile`` (optional, default 0: see the module docstring).
    limit: evaluate only the first ``limit`` images (smoke tests).
    devices: where whole images run, round-robin (default: ``jax.local_devices()``).
      Results do not depend on it (the same program on every device).

  Returns:
    ``{'dataset', 'split', 'num_images', 'psnr' (dB mean), 'ssim' (mean), 'input_psnr',
    'per_image': [{'name', 'psnr', 'ssim', 'input_psnr'[, 'baseline_psnr',
    'baseline_ssim']}], 'protocol', 'seed', 'seconds'}`` (plus ``'baseline'`` (its name),
    ``'baseline_psnr'``, ``'baseline_ssim'`` means where the kind has a classical baseline).
    ``input_psnr`` is the PSNR of the corrupted input itself (bicubic upscale for SR; the
    masked image with zero holes for inpainting), the floor any model must beat.
    ``'tiling'``: ``{'tile', 'overlap', 'model_programs'}`` (``tile`` None: whole images;
    ``model_programs``: how many model programs were traced, one per input shape; each is
    compiled once per device it runs on). ``'model_devices'``: how many devices the
    model's outputs came from (whole images: round-robin over ``devices``; tiles: the
    first).

  Raises:
    ValueError, FileNotFoundError: the eval dataset cannot be read; a positive
      ``eval.tile`` that is not a multiple of the model's alignment or is smaller than
      twice the tile overlap (the overlap being twice the receptive-field radius).
  """
  t0 = time.perf_counter()
  ec = config.eval
  scale = int(config.degradation.scale) if config.degradation.kind == "bicubic" else 1
  images = data.eval_images(eval_data_config(config), ec.split, native_channels=scale > 1)
  if limit:
    images = images[:limit]
  if task.channels == 3:  # gray files of a folder, for an RGB model
    images = [(n, np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im) for n, im in images]
  protocol = task.eval_protocol()
  kind = task.kind
  masks = (eval_masks(config, [im.shape[:2] for _, im in images]) if kind == "inpaint"
           else [None] * len(images))
  with_baseline = kind in baselines.KINDS and ec.get("baseline", True)

  tile_cfg = int(ec.get("tile", 0))
  radius = restore.receptive_radius(task.model)
  # 'VALID' models (SRCNN as published) shrink their output: evaluated whole.
  tiled = (tile_cfg >= 0 and radius is not None
           and getattr(task.model, "padding", None) != "VALID")
  if tiled:  # tiles overlap by twice the receptive-field radius, rounded to the alignment
    align = restore.alignment(task.model)
    overlap = -(-2 * radius // align) * align
  if tiled and tile_cfg:
    if tile_cfg < 2 * overlap or tile_cfg % align:
      raise ValueError(f"eval.tile={tile_cfg} does not suit {type(task.model).__name__}:"
                       f" tiles overlap by {overlap} pixels (twice the receptive-field"
                       f" radius {radius}), so eval.tile must be a multiple of {align} and"
                       f" at least {2 * overlap} (or 0 = automatic, -1 = whole images).")

  @jax.jit
  def corrupt(image, key, mask, kernel_index):
    # The model input and the input's own score: the noisy image, or the bicubic upscale
    # for SR (one small program per image shape).
    clean = task.clean_from_uint8(image)  # [1, H, W, C] in [0, 1]
    x = task.degrade(key, clean, mask=mask, kernel_index=kernel_index)
    floor = task.observation(x)
    if floor.shape != clean.shape:
      floor = degradations.imresize(x, scale=float(scale))
    floor = jnp.clip(floor, 0.0, 1.0)
    return x, clean, metrics.psnr(floor, clean, protocol)[0]

  @jax.jit
  def score(pred, clean):
    pred = jnp.clip(pred, 0.0, 1.0)
    return metrics.psnr(pred, clean, protocol)[0], metrics.ssim(pred, clean, protocol)[0]

  # One image is not split over devices, and a replicated state would make jit run every
  # image on every device: corruption, tiles and scores run on this process's first
  # device; whole images go round-robin to every local device (module docstring).
  state = jax.tree.map(lambda a: a.addressable_data(0), state)
  devices = list(jax.local_devices() if devices is None else devices)
  key = jax.random.key(int(ec.seed))
  corrupted = []
  for i, (name, image) in enumerate(images):
    if scale > 1:
      image = io.modcrop(image, scale)
    k_index = None
    if kind == "blur":
      k_index = jnp.full((1,), i % len(task.kernels), jnp.int32)
    corrupted.append(corrupt(jnp.asarray(image[None]), jax.random.fold_in(key, i), masks[i],
                             k_index))

  shapes = [tuple(x.shape[1:3]) for x, _, _ in corrupted]
  if tiled and not tile_cfg and len(set(shapes)) <= WHOLE_MAX_SHAPES:
    tiled = False  # few shapes: whole images are faster than the tiles' overlap
  if tiled:
    tile = tile_cfg or choose_tile(shapes, overlap=overlap, align=align)
    runner = restore.TiledRunner(task, state, tile=tile, overlap=overlap, batch=1)
    preds = [jnp.asarray(runner(np.asarray(x[0])))[None] for x, _, _ in corrupted]
  else:
    traces = []

    @jax.jit
    def whole(state, x):
      traces.append(x.shape)
      return task.apply(state.params, state.batch_stats, x, train=False)[0]
    # The same program on each device (one compilation per shape and device), dispatched
    # for every image before any result is read, so the devices run concurrently.
    states = [jax.device_put(state, d) for d in devices]
    preds = [whole(states[i % len(devices)], jax.device_put(x, devices[i % len(devices)]))
             for i, (x, _, _) in enumerate(corrupted)]

  rows = []
  for i, ((name, _), (x, clean, p_in)) in enumerate(zip(images, corrupted)):
    p, s = score(jax.device_put(preds[i], clean.devices().pop()), clean)
    row = {"name": name, "psnr": float(p), "ssim": float(s), "input_psnr": float(p_in)}
    if with_baseline:
      params = {}
      if kind == "salt_and_pepper":
        params = dict(switching=task.switching)
      if kind == "blur":
        params = dict(kernel=task.kernels[i % len(task.kernels)],
                      sigma=float(config.degradation.sigma))
      # The baseline sees the corrupted image (inpainting: with its mask channel).
      pred = baselines.run(kind, np.asarray(x[0] if kind == "inpaint"
                                            else task.observation(x)[0]), **params)
      b_p, b_s = score(jnp.asarray(pred[None], jnp.float32), clean)
      row.update(baseline_psnr=float(b_p), baseline_ssim=float(b_s))
    rows.append(row)
  results = {
      "dataset": ec.dataset, "split": ec.split, "num_images": len(rows),
      "psnr": float(np.mean([r["psnr"] for r in rows])),
      "ssim": float(np.mean([r["ssim"] for r in rows])),
      "input_psnr": float(np.mean([r["input_psnr"] for r in rows])),
      "per_image": rows, "protocol": task.protocol(), "seed": int(ec.seed),
      "tiling": (dict(tile=runner.tile, overlap=runner.overlap, model_programs=runner.traces)
                 if tiled else dict(tile=None, overlap=None, model_programs=len(traces))),
      "model_devices": len({d for p in preds for d in p.devices()}),  # observed
  }
  if with_baseline:
    results.update(baseline=baselines.name(kind, switching=task.switching),
                   baseline_psnr=float(np.mean([r["baseline_psnr"] for r in rows])),
                   baseline_ssim=float(np.mean([r["baseline_ssim"] for r in rows])))
  results["seconds"] = time.perf_counter() - t0
  return results


def with_degradation(task, config: ml_collections.ConfigDict, *, sigma: float | None = None,
                     density: float | None = None, scale: int | None = None):
  """The task and config to evaluate at another degradation level than the model's own.

  ``launch.py eval --sigma/--density/--scale``: a Gaussian denoiser (blind or not) at a
  fixed ``sigma`` (noise std on the 0-255 scale; also the noise of a deblurring model), an
  impulse-noise model at another ``density``; ``scale`` only checks that an SR model is
  the one asked for (a model has one scale factor).

  Args:
    task: the model's ``RestorationTask``.
    config: its config (not modified).
    sigma: noise std on the 0-255 scale (``gaussian_noise``: fixed, ``sigma_max`` 0;
      ``blur``: the added noise).
    density: impulse density in ``(0, 1)`` (``salt_and_pepper``).
    scale: SR scale factor (``bicubic``); must equal the model's.

  Returns:
    ``(task, config, tag)``: the task rebuilt on a copy of the config (the same ``task``
    and ``config`` when nothing is overridden), and a file-name tag such as ``'sigma15'``
    (``''`` without overrides).

  Raises:
    ValueError: a flag that does not apply to the model's degradation kind, a value out
      of range, or a scale factor other than the SR model's (all named).
  """
  kind = config.degradation.kind
  applies = {"sigma": ("gaussian_noise", "blur"), "density": ("salt_and_pepper",),
             "scale": ("bicubic",)}
  given = {k: v for k, v in (("sigma", sigma), ("density", density), ("scale", scale))
           if v is not None}
  for k in given:
    if kind not in applies[k]:
      raise ValueError(f"--{k} applies to {' / '.join(applies[k])} models; this model's"
                       f" degradation is {kind!r}.")
  if sigma is not None and not sigma >= 0:
    raise ValueError(f"--sigma must be >= 0 (noise std on the 0-255 scale), got {sigma}.")
  if density is not None and not 0 < density < 1:
    raise ValueError(f"--density must be in (0, 1), got {density}.")
  if scale is not None and int(scale) != int(config.degradation.scale):
    raise ValueError(f"--scale {scale}: this is an x{int(config.degradation.scale)}"
                     " super-resolution model (one scale factor per model); evaluate an"
                     f" x{scale} model for that scale.")
  if not {k: v for k, v in given.items() if k != "scale"}:
    return task, config, ""
  config = ml_collections.ConfigDict(config.to_dict())  # a copy; the run's stays as saved
  tag = ""
  if sigma is not None:
    config.degradation.sigma = float(sigma)
    if kind == "gaussian_noise":
      config.degradation.sigma_max = 0.0
    tag = f"sigma{sigma:g}"
  if density is not None:
    config.degradation.density = float(density)
    tag = f"density{density:g}"
  return type(task)(config), config, tag


def write(results: dict[str, Any], path: str) -> None:
  """Writes results as JSON (atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, path)


def table(results: dict[str, Any]) -> str:
  """A plain-text table: one row per image, then the mean."""
  base = "baseline_psnr" in results
  head = f"{'image':<24} {'PSNR (dB)':>10} {'SSIM':>8} {'input PSNR':>11}"
  if base:
    head += f" {results['baseline'] + ' PSNR':>16} {'SSIM':>7}"
  lines = [head]

  def row(name, r):
    line = f"{name:<24} {r['psnr']:>10.2f} {r['ssim']:>8.4f} {r['input_psnr']:>11.2f}"
    if base:
      line += f" {r['baseline_psnr']:>16.2f} {r['baseline_ssim']:>7.4f}"
    return line

  for r in results["per_image"]:
    lines.append(row(r["name"], r))
  lines.append(row(f"mean ({results['num_images']})", results))
  return "\n".join(lines)
