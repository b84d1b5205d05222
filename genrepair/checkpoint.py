"""Orbax checkpoints of a run: train state + data-iterator state + metadata.

Layout: ``<workdir>/checkpoints/<step>/{state,data,meta}``, written atomically by Orbax's
``CheckpointManager`` (a step directory appears only when complete). ``meta`` holds the
step, the config (JSON), package versions and the task's protocol, so ``launch.py sample``
and ``eval`` can rebuild the run from the workdir alone.

Restoring walks from the newest step down: an unreadable checkpoint is skipped with a
warning, and the next older one is used. No pickle anywhere.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint directory exists but no checkpoint in it could be read."""


def package_versions() -> dict[str, str]:
  """Versions of the packages that determine a run's numbers."""
  out = {"python": sys.version.split()[0]}
  for name in ("genrepair", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
               "tensorflow-datasets", "numpy"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


class Checkpointer:
  """Saves and restores ``(state, data_state, meta)`` under one directory.

  Args:
    directory: checkpoint root (created if missing).
    keep: how many newest checkpoints to keep (older ones are deleted by Orbax).
    async_save: write in a background thread; call :meth:`wait` before reading back or
      exiting (done by :meth:`close`).
  """

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "meta"))

  def all_steps(self) -> list[int]:
    """Saved steps, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           meta: dict[str, Any]) -> None:
    """Saves a checkpoint for ``step`` (no-op if that step is already saved).

    Args:
      step: train step the state has completed.
      state: pytree of ``jax.Array`` (the task state).
      data_state: JSON-serialisable input-pipeline state (``iterator.get_state()``).
      meta: JSON-serialisable metadata (config, versions, protocol).
    """
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores checkpoint ``step`` onto the shardings of ``abstract_state``.

    Args:
      step: a saved step.
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set (from
        ``jax.eval_shape(task.init, rng)``); arrays are restored with these shardings,
        whatever mesh they were saved from.

    Returns:
      ``(state, data_state, meta)``.
    """
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["meta"]

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
    """Restores the newest readable checkpoint.

    Returns:
      ``(step, state, data_state, meta)``, or None if there is no checkpoint.

    Raises:
      CheckpointError: checkpoints exist but none could be read (each failure is warned).
    """
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      try:
        return (step, *self.restore(step, abstract_state))
      except Exception as e:  # pylint: disable=broad-except
        # A half-written or corrupted checkpoint must not stop a resume: warn, go older.
        msg = f"checkpoint {self.directory}/{step} is unreadable ({type(e).__name__}: {e})"
        warnings.warn(msg + "; trying an older one.")
        errors.append(msg)
    if steps:
      raise CheckpointError(
          f"No readable checkpoint in {self.directory}: " + "; ".join(errors))
    return None

  def read_meta(self, step: int | None = None) -> dict:
    """Reads only the metadata of ``step`` (default: newest).

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    if step is None:
      steps = self.all_steps()
      if not steps:
        raise FileNotFoundError(f"No checkpoint found in {self.directory}.")
      step = steps[-1]
    return self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_sharding(abstract_tree: Any, sharding: Any) -> Any:
  """Attaches ``sharding`` (one for all leaves) to a tree of ``ShapeDtypeStruct``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      abstract_tree)
