"""Benchmark evaluation of restoration models: full-size test images, fixed corruption seeds,
PSNR/SSIM under the task's recorded protocol, per-image and mean results.

Each test image i is corrupted with ``fold_in(key(eval.seed), i)``, so two evaluations of
the same checkpoint give identical numbers, and the corruption does not depend on which
other images are evaluated. Images are evaluated whole (zero/edge padding of the model
applies at the true image border); one compilation per distinct image shape (BSD68: two).
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

from genrepair import data, degradations, io, metrics


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
    ``{'dataset', 'split', 'num_images', 'psnr' (dB mean), 'ssim' (mean), 'per_image':
    [{'name', 'psnr', 'ssim', 'input_psnr'}], 'protocol', 'seed', 'seconds'}``.
    ``input_psnr`` is the PSNR of the corrupted input itself (bicubic upscale for SR), the
    baseline any model must beat.

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

  @jax.jit
  def measure(state, image, key):
    # One compiled program per image shape: corrupt, restore, measure output and input.
    clean = task.clean_from_uint8(image)  # [1, H, W, C] in [0, 1]
    x = task.degrade(key, clean)
    out = jnp.clip(task.apply(state.params, state.batch_stats, x, train=False)[0], 0.0, 1.0)
    # The input's own score: the noisy image, or the bicubic upscale for SR.
    baseline = x if x.shape == clean.shape else degradations.imresize(x, scale=float(scale))
    baseline = jnp.clip(baseline, 0.0, 1.0)
    return (metrics.psnr(out, clean, protocol)[0], metrics.ssim(out, clean, protocol)[0],
            metrics.psnr(baseline, clean, protocol)[0])

  # One image at a time cannot be split over devices, and a replicated state would make
  # jit run every image on every device: evaluate on this process's first device.
  state = jax.tree.map(lambda a: a.addressable_data(0), state)
  key = jax.random.key(int(ec.seed))
  rows = []
  for i, (name, image) in enumerate(images):
    if scale > 1:
      image = io.modcrop(image, scale)
    p, s, p_in = measure(state, jnp.asarray(image[None]), jax.random.fold_in(key, i))
    rows.append({"name": name, "psnr": float(p), "ssim": float(s), "input_psnr": float(p_in)})
  return {
      "dataset": ec.dataset, "split": ec.split, "num_images": len(rows),
      "psnr": float(np.mean([r["psnr"] for r in rows])),
      "ssim": float(np.mean([r["ssim"] for r in rows])),
      "input_psnr": float(np.mean([r["input_psnr"] for r in rows])),
      "per_image": rows, "protocol": task.protocol(), "seed": int(ec.seed),
      "seconds": time.perf_counter() - t0,
  }


def write(results: dict[str, Any], path: str) -> None:
  """Writes results as JSON (atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, path)


def table(results: dict[str, Any]) -> str:
  """A plain-text table: one row per image, then the mean."""
  lines = [f"{'image':<24} {'PSNR (dB)':>10} {'SSIM':>8} {'input PSNR':>11}"]
  for r in results["per_image"]:
    lines.append(f"{r['name']:<24} {r['psnr']:>10.2f} {r['ssim']:>8.4f} {r['input_psnr']:>11.2f}")
  lines.append(f"{'mean (' + str(results['num_images']) + ')':<24} {results['psnr']:>10.2f}"
               f" {results['ssim']:>8.4f} {results['input_psnr']:>11.2f}")
  return "\n".join(lines)
