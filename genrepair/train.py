"""The one generic training loop: ``run(config, workdir)``.

Builds the mesh, the input pipeline and the task's state (or restores the newest
checkpoint: re-running the same command resumes), compiles the task's train step once and
loops with periodic actions: progress line + ``metrics.jsonl`` + TensorBoard, a sample grid
of fixed latents, Orbax checkpoints. SIGINT (Ctrl-C) / SIGTERM finish the current step,
write a checkpoint and return; a second Ctrl-C aborts at once. With several processes the
decision to stop is agreed after every step (a one-integer all-gather), so a signal that
reaches only one process (a preempted host) stops all of them at the same step and the
collective checkpoint cannot deadlock. Non-finite metrics stop the
run without checkpointing the broken state.

Exact resume: the state carries the step; the step's key is ``fold_in(base_key, step)``;
the input pipeline's position is saved with every checkpoint; so a resumed run continues
bit-identically (same machine, same device count).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from genrepair import checkpoint, data, io, sharding, tasks, writers
from genrepair.writers import log


class _StopOnSignal:
  """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.reason: str | None = None
    self._old = {}

  def _handle(self, signum, frame):
    del frame
    if self.reason is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # Second Ctrl-C: the user really wants out.
    self.reason = signal.Signals(signum).name
    log(f"{self.reason} received: finishing this step, then checkpointing and exiting."
        " (Ctrl-C again to abort without a checkpoint.)")

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _agree_stop(reason: str | None) -> str | None:
  """The stop decision shared by all processes: a signal on any one stops every one.

  Returns ``reason`` (this process's signal name), ``'<signal> on another process'``, or
  None. One process: ``reason`` unchanged, no communication.
  """
  if jax.process_count() == 1:
    return reason
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  codes = {None: 0, "SIGINT": 1, "SIGTERM": 2}
  mine = codes.get(reason, 2)
  everyone = np.asarray(multihost_utils.process_allgather(np.int32(mine)))  # [P]
  if mine:
    return reason
  if everyone.max() == 0:
    return None
  return f"{'SIGINT' if everyone.max() == 1 else 'SIGTERM'} on another process"


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
  """Task, mesh, key and abstract (sharded) state of a config — no compilation.

  Returns:
    ``(task, mesh, init_rng, train_rng, abstract_state, state_sharding)``.

  Raises:
    ValueError: invalid config values (task, model, losses, optimizers, mesh, batch).
  """
  mesh = mesh or sharding.make_mesh(config.mesh)
  task = tasks.get(config.task)(config, mesh=mesh)
  sharding.check_batch_size(config.train.batch_size, mesh)
  repl = sharding.replicated(mesh)
  # Made under jit with a replicated output sharding, so the keys are global arrays that
  # also work when the mesh spans several processes (device_put cannot target devices
  # of other processes).
  init_rng, train_rng = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                                out_shardings=repl)()
  abstract = checkpoint.abstract_with_sharding(jax.eval_shape(task.init, init_rng), repl)
  state_sharding = jax.tree.map(lambda _: repl, abstract)
  return task, mesh, init_rng, train_rng, abstract, state_sharding


def make_train_iterator(config: ml_collections.ConfigDict, process_index: int = 0,
                        process_count: int = 1):
  """The training input pipeline of ``config.data``.

  Whole images (``data.make_iterator``), random patches when ``config.data`` has a
  ``patch_size`` (restoration; crops aligned to the SR scale for ``bicubic``), or two
  unpaired domains when it has ``domains`` (CycleGAN: ``image_a``/``image_b``).
  """
  dc = config.data
  if "domains" in dc:
    return data.make_unpaired_iterator(dc, global_batch_size=config.train.batch_size,
                                       process_index=process_index,
                                       process_count=process_count)
  common = dict(global_batch_size=config.train.batch_size, split=dc.split, seed=dc.seed,
                process_index=process_index, process_count=process_count)
  if "patch_size" not in dc:
    return data.make_iterator(dc, **common)
  scale = int(config.degradation.scale) if config.degradation.kind == "bicubic" else 1
  return data.make_patch_iterator(dc, patch_size=dc.patch_size, scale=scale,
                                  patches_per_image=dc.get("patches_per_image", 1), **common)


def make_meta(config, task, step: int, mesh) -> dict[str, Any]:
  return {"step": step, "config": json.loads(config.to_json_best_effort()),
          "versions": checkpoint.package_versions(), "protocol": task.protocol(),
          "mesh": {k: int(v) for k, v in mesh.shape.items()},
          "process_count": jax.process_count(), "time": time.time()}


def _check_batch(host_batch: dict[str, np.ndarray], task, config) -> None:
  """Checks the first batch against the model before anything compiles.

  Every ``image*`` entry is checked (``image``; ``image_a``/``image_b`` of two domains).
  """
  expected = getattr(task, "image_shape", None)
  for key in sorted(k for k in host_batch if k.startswith("image")):
    image = host_batch[key]
    name = config.data.get("name", key)
    if expected is None:  # Patches: the task converts channels itself (e.g. RGB -> Y).
      if image.dtype != np.uint8 or image.ndim != 4:
        raise ValueError(f"Dataset {name!r} gives {key} {image.dtype} {image.shape};"
                         " expected uint8 [B, H, W, C].")
      continue
    if image.dtype != np.uint8 or tuple(image.shape[1:]) != tuple(expected):
      raise ValueError(
          f"Dataset {name!r} gives {key} {image.dtype} {tuple(image.shape[1:])}"
          f" but config.model expects uint8 {tuple(expected)} (check"
          " config.model.variant / channels).")


def check_train_intervals(tc: ml_collections.ConfigDict) -> None:
  """Checks ``config.train``'s step counts before anything is built.

  ``num_steps >= 0``; ``log_every >= 1``; ``sample_every`` and ``checkpoint_every`` >= 0,
  where 0 means only at the end (the final samples and checkpoint are always written, and
  a stop signal still checkpoints); ``keep_checkpoints >= 1``.

  Raises:
    ValueError: naming the first bad key and its value.
  """
  lowest = {"num_steps": 0, "log_every": 1, "sample_every": 0, "checkpoint_every": 0,
            "keep_checkpoints": 1}
  for key, low in lowest.items():
    value = tc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      what = "0 = only at the end, or a positive interval" if low == 0 and key != "num_steps" \
          else f"an int >= {low}"
      raise ValueError(f"config.train.{key}={value!r}: expected {what}.")


def _every(step: int, interval: int) -> bool:
  """Whether ``step`` is on a positive ``interval`` (never for 0: see check_train_intervals)."""
  return interval > 0 and step % interval == 0


def run(config: ml_collections.ConfigDict, workdir: str,
        mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint).

  Args:
    config: experiment config (see ``experiments/``).
    workdir: run directory; holds ``checkpoints/``, ``samples/``, ``tb/``,
      ``metrics.jsonl`` and ``config.json``.
    mesh: optional mesh overriding ``config.mesh`` (tests use it to pick devices).

  Returns:
    ``{'step': last completed step, 'metrics': last logged metrics, 'stopped_by':
    signal name or None}``.

  Raises:
    ValueError: invalid config (e.g. :func:`check_train_intervals`) or data (before
      compilation).
    FloatingPointError: a logged metric became NaN/inf (no checkpoint is written).
  """
  tc = config.train
  check_train_intervals(tc)
  task, mesh, init_rng, train_rng, abstract, state_sharding = build(config, mesh)
  repl = sharding.replicated(mesh)
  pid, nproc = jax.process_index(), jax.process_count()
  # The first batch of the stream: checked against the model before anything compiles or
  # is written, and the source of the fixed preview (the same whether or not we resume).
  # One iterator, rewound after that first batch: building it can decode a small dataset
  # into memory (genrepair/data/pipeline.py), which need not happen twice.
  data_it = make_train_iterator(config, pid, nproc)
  start = data_it.get_state()
  first_batch = next(data_it)
  try:
    _check_batch(first_batch, task, config)
  except ValueError:
    data_it.close()
    raise
  data_it.set_state(start)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=tc.keep_checkpoints)
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    step, state, data_state, _ = restored
    if data_state:  # Empty for imported published weights: the stream starts afresh.
      data_it.set_state(data_state)
    log(f"Resuming from {ckpt.directory}/{step} (step {step}/{tc.num_steps}).")
  else:
    step = 0
    state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
    log(f"Starting a new run in {os.path.abspath(workdir)}.")
  if pid == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))

  writer = writers.MetricWriter(workdir, enabled=pid == 0, resume_step=step)
  progress = writers.Progress(tc.num_steps, step)
  # One compiled step, or one per static variant where the task has them (GANs with lazy
  # regularisers: ``task.step_variant(step)``, a hashable chosen on the host from the step).
  step_variant = getattr(task, "step_variant", lambda step: None)
  step_fns = {}

  def step_fn_for(step):
    variant = step_variant(step)
    if variant not in step_fns:
      fn = (task.train_step if variant is None
            else functools.partial(task.train_step, variant=variant))
      step_fns[variant] = jax.jit(fn, donate_argnums=0, out_shardings=(state_sharding, repl))
    return step_fns[variant]
  preview_fn = jax.jit(task.preview, out_shardings=repl)
  preview_in = jax.jit(
      lambda b: task.preview_inputs(jax.random.key(config.sample.seed), b, config.sample.num),
      out_shardings=repl)(sharding.to_global(first_batch, mesh))
  # Benchmark evaluation at the end of every run that has one, and every `eval.every` steps
  # when that is > 0: restoration tasks through genrepair.evaluate; other tasks through
  # their own ``task.evaluate(state, config, final=...) -> {name: float, ...}`` (FID, NLL,
  # accuracy; ``final`` is False for the periodic ones).
  evaluating = "eval" in config and (hasattr(task, "eval_protocol")
                                     or hasattr(task, "evaluate"))

  def save(step, state):
    ckpt.save(step, state, data_it.get_state(), make_meta(config, task, step, mesh))

  def write_samples(step, state, final=False):
    images = io.to_uint8(jax.device_get(preview_fn(state, preview_in)), task.image_range)
    grid = io.make_grid(images, cols=task.preview_columns(config.sample.num))
    if pid == 0:
      io.save_image(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
      if final:
        io.save_image(os.path.join(workdir, "samples", "final.png"), grid)
      writer.image(step, "samples", grid)

  def run_eval(step, state, final=False):
    from genrepair import evaluate  # pylint: disable=import-outside-toplevel
    path = os.path.join(workdir, "eval", f"step_{step:07d}.json")
    if not hasattr(task, "eval_protocol"):  # a task's own evaluation
      # `final`: the end-of-run evaluation (the VAE's k = 5000 likelihood runs only then).
      results = task.evaluate(state, config, final=final)
      if pid == 0:
        evaluate.write(results, path)
      scalars = {k: float(v) for k, v in results.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
      writer.scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
      log(f"eval step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
      return scalars
    results = evaluate.evaluate(task, state, config)
    if pid == 0:
      evaluate.write(results, path)
    writer.scalars(step, {"eval/psnr": results["psnr"], "eval/ssim": results["ssim"]})
    base = (f"; {results['baseline']} {results['baseline_psnr']:.2f} dB"
            if "baseline" in results else "")
    log(f"eval step {step}: {config.eval.dataset} {results['psnr']:.2f} dB, SSIM"
        f" {results['ssim']:.4f} (input {results['input_psnr']:.2f} dB{base};"
        f" {results['num_images']} images, {results['seconds']:.0f}s)")
    return {"psnr": results["psnr"], "ssim": results["ssim"]}

  # Several CPU devices in one process share one thread pool, and XLA:CPU runs the
  # independent collectives of a step concurrently, in an order that can differ between
  # devices. With steps queued asynchronously, both pool threads can end up waiting in
  # two different all-reduces, each for the other device: XLA aborts the process after
  # 40 s ("Termination timeout for all reduce"; SRCNN `runlocal`, 200 steps: 1 of 2 runs
  # with `--cpu_devices 2`, 3 of 3 with 8). Waiting for each step before queueing the
  # next avoids it (tests/test_launch.py).
  one_step_at_a_time = (jax.default_backend() == "cpu"
                        and len(mesh.local_devices) > 1)
  pending, last, stopped_by, first = [], {}, None, True
  t_start = time.perf_counter()
  with _StopOnSignal() as stop:
    while step < tc.num_steps:
      host_batch = next(data_it)
      batch = sharding.to_global(host_batch, mesh)
      with jax.transfer_guard("disallow"):  # No hidden host<->device copies in the loop.
        state, metrics = step_fn_for(step)(state, batch, train_rng)
      step += 1
      pending.append(metrics)
      if one_step_at_a_time:
        jax.block_until_ready(metrics)
      if first:
        first = False
        jax.block_until_ready(metrics)
        log(f"First step (compilation included) took {time.perf_counter() - t_start:.1f}s.")
        progress.reset_clock(step)
      if step % tc.log_every == 0 or step == tc.num_steps:
        host = jax.device_get(pending)
        last = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        pending = []
        bad = [k for k, v in last.items() if not math.isfinite(v)]
        if bad:
          raise FloatingPointError(
              f"Non-finite {bad} at step {step}; stopping without checkpointing. Newest"
              f" good checkpoint: steps {ckpt.all_steps()} in {ckpt.directory}.")
        writer.scalars(step, last)
        log(progress.line(step, last))
      if _every(step, tc.sample_every) and step != tc.num_steps:
        write_samples(step, state)
      if (evaluating and config.eval.get("every", 0) > 0 and step % config.eval.every == 0
          and step != tc.num_steps):
        run_eval(step, state)
      reason = _agree_stop(stop.reason)
      if reason is not None:
        stopped_by = reason
        break
      if _every(step, tc.checkpoint_every) and step != tc.num_steps:
        save(step, state)
    save(step, state)
    if step == tc.num_steps:
      write_samples(step, state, final=True)
      if evaluating:
        final_eval = run_eval(step, state, final=True)
        last = {**last, **{f"eval/{k}": v for k, v in final_eval.items()}}
      log(f"Done: {step} steps. Final samples: "
          f"{os.path.join(os.path.abspath(workdir), 'samples', 'final.png')}")
    ckpt.close()
    writer.close()
  if stopped_by:
    log(f"Stopped by {stopped_by} at step {step}; checkpoint written. Run the same command"
        " to resume.")
  return {"step": step, "metrics": last, "stopped_by": stopped_by}
