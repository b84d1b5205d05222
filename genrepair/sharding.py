"""Device mesh from config, batch sharding, and host-local -> global arrays.

Data parallelism is ``jax.jit`` over a :class:`jax.sharding.Mesh` with batches sharded as
``NamedSharding(mesh, P('data'))`` and parameters replicated (``P()``). Under jit, means and
BatchNorm statistics over the batch are global: no ``pmean`` anywhere.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(mesh_config: Mapping[str, int], devices: list[Any] | None = None) -> Mesh:
  """Builds the mesh named by ``config.mesh``.

  Args:
    mesh_config: ordered ``{axis_name: size}``; one size may be ``-1`` (= all remaining
      devices). Must contain the ``'data'`` axis. Default configs use ``{'data': -1}``.
    devices: devices to use (default ``jax.devices()``, all processes' devices).

  Returns:
    A ``Mesh`` over ``devices`` with the given axis names.

  Raises:
    ValueError: no ``data`` axis, more than one ``-1``, or sizes whose product differs
      from the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = list(mesh_config.keys())
  sizes = [int(mesh_config[k]) for k in names]
  if DATA_AXIS not in names:
    raise ValueError(f"config.mesh needs a {DATA_AXIS!r} axis, got {dict(mesh_config)}.")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh may have at most one -1 size, got {dict(mesh_config)}.")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if len(devices) % known:
      raise ValueError(f"config.mesh {dict(mesh_config)} does not divide the"
                       f" {len(devices)} devices.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh {dict(mesh_config)} needs {math.prod(sizes)} devices,"
                     f" {len(devices)} are available.")
  return Mesh(np.asarray(devices).reshape(sizes), tuple(names))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of parameters/optimizer state: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of batches: leading axis split over the ``'data'`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the batch divides over the data axis and processes."""
  n = mesh.shape[DATA_AXIS]
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise ValueError(
        f"config.train.batch_size={global_batch_size} must be divisible by the {n} devices"
        f" of the mesh's '{DATA_AXIS}' axis and by the {jax.process_count()} processes.")


def to_global(host_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the batch into global arrays sharded over ``data``.

  Args:
    host_batch: ``{name: array [b_local, ...]}``, uint8 images stay uint8 (conversion to
      float happens on device, inside the step).
    mesh: the training mesh.

  Returns:
    ``{name: jax.Array [b_local * process_count, ...]}`` with ``P('data')`` sharding.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts JAX's multi-process runtime (call before any other JAX use).

  With all three arguments given, processes find each other through ``coordinator``
  (``host:port`` of process 0). With none given, ``jax.distributed.initialize()``
  auto-detects the cluster (TPU pods, SLURM, Open MPI); on a single machine without a
  cluster this is skipped. On CPU, cross-process collectives use gloo.

  Raises:
    ValueError: only some of the three arguments were given.
  """
  given = [a is not None for a in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise ValueError("--coordinator, --num_processes and --process_id go together; got"
                     f" coordinator={coordinator!r}, num_processes={num_processes!r},"
                     f" process_id={process_id!r}.")
  if not any(given):
    return
  if num_processes == 1:
    return
  # Only affects the CPU backend (harmless on GPU/TPU hosts).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
