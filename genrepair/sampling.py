"""Samples from a trained run's newest (or a given) checkpoint, using only its workdir."""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from genrepair import checkpoint, io, train


def load_run(workdir: str, step: int | None = None):
  """Rebuilds the task from the config stored in a checkpoint and restores its state.

  Args:
    workdir: a run directory written by ``launch.py train``.
    step: checkpoint step (default: newest readable).

  Returns:
    ``(task, state, step, config)``.

  Raises:
    FileNotFoundError: no checkpoint under ``<workdir>/checkpoints``.
    ValueError: ``step`` is not a saved step.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(
        f"No checkpoints in {os.path.abspath(ckpt_dir)}: is --workdir a directory written"
        " by `launch.py train`?")
  ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
  try:
    meta = ckpt.read_meta(step)
    config = ml_collections.ConfigDict(meta["config"])
    task, _, _, _, abstract, _ = train.build(config)
    if step is None:
      restored = ckpt.restore_latest(abstract)
      if restored is None:
        raise FileNotFoundError(f"No checkpoint found in {ckpt.directory}.")
      step, state = restored[0], restored[1]
    else:
      if step not in ckpt.all_steps():
        raise ValueError(f"Step {step} is not saved in {ckpt.directory}; saved steps:"
                         f" {ckpt.all_steps()}.")
      state = ckpt.restore(step, abstract)[0]
  finally:
    ckpt.close()
  return task, state, step, config


def generate(task, state, *, num: int, seed: int, chunk: int = 256) -> np.ndarray:
  """Draws ``num`` samples with latents from ``jax.random.key(seed)``.

  The latents are drawn all at once from the seed, so the first k samples do not depend
  on ``num`` (a 64-grid is the start of a 10,000-sample set with the same seed).

  Returns:
    uint8 ``[num, H, W, C]``.

  Raises:
    ValueError: ``num < 1``.
  """
  if num < 1:
    raise ValueError(f"--num must be >= 1, got {num}.")
  z = task.latents(jax.random.key(seed), num)
  # Sampling is small: run on this process's first device rather than replicated on all.
  state = jax.tree.map(lambda a: a.addressable_data(0), state)
  sample_fn = jax.jit(task.sample)
  out = []
  for i in range(0, num, chunk):
    zc = z[i:i + chunk]
    n = zc.shape[0]
    if n < chunk and num > chunk:  # Pad the last chunk: one compiled shape only.
      zc = np.concatenate([zc, np.zeros((chunk - n, zc.shape[1]), zc.dtype)])
    out.append(io.to_uint8(jax.device_get(sample_fn(state, zc))[:n], task.image_range))
  return np.concatenate(out)


def write(images: np.ndarray, output: str) -> str:
  """Writes samples as a grid image (``.png``/``.jpg``) or raw ``.npz`` (key ``images``).

  Returns:
    A one-line description of what was written.

  Raises:
    ValueError: unsupported output extension.
  """
  ext = os.path.splitext(output)[1].lower()
  if ext == ".npz":
    io.save_npz(output, images)
    return f"wrote {images.shape[0]} samples uint8 {images.shape[1:]} to {output} (key 'images')"
  if ext in (".png", ".jpg", ".jpeg"):
    grid = io.make_grid(images)
    io.save_image(output, grid)
    return f"wrote a grid of {images.shape[0]} samples ({grid.shape[1]}x{grid.shape[0]}) to {output}"
  raise ValueError(f"-o/--output must end in .png, .jpg or .npz, got {output!r}.")
