"""Benchmark evaluation of restoration models: full-size test images, fixed corruption seeds,
PSNR/SSIM under the task's recorded protocol, per-image and mean results.

Each test image i is corrupted with ``fold_in(key(eval.seed), i)``, so two evaluations of
the same checkpoint give identical numbers, and the corruption does not depend on which
other images are evaluated. Deblurring uses kernel ``i mod N`` of the task's kernel set for
image ``i``; inpainting uses the ``i``-th mask of the configured NVIDIA hole-ratio bin (see
``eval_masks``). Images are evaluated whole (zero/edge padding of the model applies at the
true image border); one compilation per distinct image shape (BSD68: two).

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

from genrepair import baselines, data, degradations, io, metrics
from genrepair.tasks import restoration

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


def evaluate(task, state, config: ml_collections.ConfigDict,
             limit: int | None = None) -> dict[str, Any]:
  """Evaluates a restoration state on ``config.eval.dataset`` / ``config.eval.split``.

  Args:
    task: a ``RestorationTask``.
    state: its state (replicated arrays).
    config: the run config; uses ``eval.dataset``, ``eval.split``, ``eval.seed``.
    limit: evaluate only the first ``limit`` images (smoke tests).

  Returns:
    ``{'dataset', 'split', 'num_images', 'psnr' (dB mean), 'ssim' (mean), 'input_psnr',
    'per_image': [{'name', 'psnr', 'ssim', 'input_psnr'[, 'baseline_psnr',
    'baseline_ssim']}], 'protocol', 'seed', 'seconds'}`` (plus ``'baseline'`` (its name),
    ``'baseline_psnr'``, ``'baseline_ssim'`` means where the kind has a classical baseline).
    ``input_psnr`` is the PSNR of the corrupted input itself (bicubic upscale for SR; the
    masked image with zero holes for inpainting), the floor any model must beat.

  Raises:
    ValueError, FileNotFoundError: the eval dataset cannot be read.
  """
  t0 = time.perf_counter()
  ec = config.eval
  scale = int(config.degradation.scale) if config.degradation.kind == "bicubic" else 1
  images = data.eval_images(eval_data_config(config), ec.split, native_channels=scale > 1)
  if limit:
    images = images[:limit]
  protocol = task.eval_protocol()
  kind = task.kind
  masks = (eval_masks(config, [im.shape[:2] for _, im in images]) if kind == "inpaint"
           else [None] * len(images))
  with_baseline = kind in baselines.KINDS and ec.get("baseline", True)

  @jax.jit
  def measure(state, image, key, mask, kernel_index):
    # One compiled program per image shape: corrupt, restore, measure output and input.
    clean = task.clean_from_uint8(image)  # [1, H, W, C] in [0, 1]
    x = task.degrade(key, clean, mask=mask, kernel_index=kernel_index)
    out = jnp.clip(task.apply(state.params, state.batch_stats, x, train=False)[0], 0.0, 1.0)
    # The input's own score: the noisy image, or the bicubic upscale for SR.
    floor = x[..., :clean.shape[-1]]
    if floor.shape != clean.shape:
      floor = degradations.imresize(x, scale=float(scale))
    floor = jnp.clip(floor, 0.0, 1.0)
    return (metrics.psnr(out, clean, protocol)[0], metrics.ssim(out, clean, protocol)[0],
            metrics.psnr(floor, clean, protocol)[0], x, clean)

  @jax.jit
  def score(pred, clean):
    pred = jnp.clip(pred, 0.0, 1.0)
    return metrics.psnr(pred, clean, protocol)[0], metrics.ssim(pred, clean, protocol)[0]

  # One image at a time cannot be split over devices, and a replicated state would make
  # jit run every image on every device: evaluate on this process's first device.
  state = jax.tree.map(lambda a: a.addressable_data(0), state)
  key = jax.random.key(int(ec.seed))
  rows = []
  for i, (name, image) in enumerate(images):
    if scale > 1:
      image = io.modcrop(image, scale)
    k_index = None
    if kind == "blur":
      k_index = jnp.full((1,), i % len(task.kernels), jnp.int32)
    p, s, p_in, x, clean = measure(state, jnp.asarray(image[None]),
                                   jax.random.fold_in(key, i), masks[i], k_index)
    row = {"name": name, "psnr": float(p), "ssim": float(s), "input_psnr": float(p_in)}
    if with_baseline:
      params = {}
      if kind == "blur":
        params = dict(kernel=task.kernels[i % len(task.kernels)],
                      sigma=float(config.degradation.sigma))
      pred = baselines.run(kind, np.asarray(x[0]), **params)
      b_p, b_s = score(jnp.asarray(pred[None], jnp.float32), clean)
      row.update(baseline_psnr=float(b_p), baseline_ssim=float(b_s))
    rows.append(row)
  results = {
      "dataset": ec.dataset, "split": ec.split, "num_images": len(rows),
      "psnr": float(np.mean([r["psnr"] for r in rows])),
      "ssim": float(np.mean([r["ssim"] for r in rows])),
      "input_psnr": float(np.mean([r["input_psnr"] for r in rows])),
      "per_image": rows, "protocol": task.protocol(), "seed": int(ec.seed),
  }
  if with_baseline:
    results.update(baseline=baselines.NAMES[kind],
                   baseline_psnr=float(np.mean([r["baseline_psnr"] for r in rows])),
                   baseline_ssim=float(np.mean([r["baseline_ssim"] for r in rows])))
  results["seconds"] = time.perf_counter() - t0
  return results


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
