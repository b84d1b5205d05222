"""Device mesh from config, batch sharding, and host-local -> global arrays.

Data parallelism is ``jax.jit`` over a :class:`jax.sharding.Mesh` with batches sharded as
``NamedSharding(mesh, P('data'))`` and parameters replicated (``P()``). Under jit, means and
BatchNorm statistics over the batch are global: no ``pmean`` in the models. Tasks whose
losses are means of per-example terms (CycleGAN, the VAE, the restoration models, the
MNIST GANs), with BatchNorm statistics taken over the ``'data'`` axis where there are
any (DCGAN, DnCNN), take their gradients through :func:`data_parallel_value_and_grad`, a
``shard_map`` that reduces every gradient in one flat all-reduce.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
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


def ravel(tree: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
  """Leaves of ``tree`` as one flat vector, and the inverse.

  The same vector and order as ``jax.flatten_util.ravel_pytree`` for a tree of one dtype.

  The vector is built by ``dynamic_update_slice`` into a zero buffer, leaf by leaf,
  rather than by one ``concatenate``: XLA:CPU fused the producers of the leaves
  (transposes, partial sums) into the concatenation and emitted it slowly (DCGAN's
  generator and discriminator gradients, 0.76M and 0.14M floats: 27 and 16 ms per
  device; the DCGAN train step on 2 devices 78.0 -> 72.8 ms, CycleGAN and the VAE level).

  Args:
    tree: a pytree of arrays of one dtype (e.g. float32 gradients).

  Returns:
    ``(flat [N], unravel)``: ``N`` the total size; ``unravel(v)`` maps a ``[N]`` vector
    back to ``tree``'s structure and shapes.
  """
  leaves, treedef = jax.tree.flatten(tree)
  shapes = [leaf.shape for leaf in leaves]
  flat = jnp.zeros((sum(leaf.size for leaf in leaves),),
                   leaves[0].dtype if leaves else jnp.float32)
  offset = 0
  for leaf in leaves:
    flat = jax.lax.dynamic_update_slice(flat, jnp.ravel(leaf), (offset,))
    offset += leaf.size

  def unravel(v: jax.Array) -> Any:
    out, start = [], 0
    for shape in shapes:
      out.append(v[start:start + math.prod(shape)].reshape(shape))
      start += math.prod(shape)
    return jax.tree.unflatten(treedef, out)

  return flat, unravel


def data_parallel_value_and_grad(fn: Callable[..., tuple[jax.Array, Any]],
                                 mesh: Mesh | None, *,
                                 batch_argnums: Sequence[int], aux_specs: Any
                                 ) -> Callable[..., tuple[tuple[jax.Array, Any], Any]]:
  """``jax.value_and_grad(fn, has_aux=True)`` with the gradients reduced as one flat array.

  Under ``jit`` with a sharded batch, XLA reduces every weight gradient across devices
  where it is formed, and combines these reductions into one tuple all-reduce with one
  buffer per parameter array. XLA:CPU's all-reduce costs ~50 us per buffer (README,
  Performance: summing 1M floats over 2 devices as 160 arrays 8.1 ms, as one 0.6 ms); the
  CycleGAN generators' 256 buffers took 13 ms of a ~130 ms step. Here each device
  differentiates ``fn`` on its own shard of the batch (``jax.shard_map`` over the mesh),
  the gradients are raveled into one vector, and one ``pmean`` averages it over the
  ``'data'`` axis: the gradient of the mean of the devices' losses, which equals the
  global loss's gradient when ``fn`` is a mean over examples (equal shards), up to float
  summation order. Train steps (AMD EPYC, 2 cores, 2 devices, JAX only, this and
  ``jax.value_and_grad`` alternated in one process, medians): CycleGAN ``digits-small``
  129.5 -> 111.6 ms, VAE 15.9 -> 14.4 ms, SRCNN 63.2 -> 62.4 ms, ESPCN level (21.3 /
  21.7 ms); on one device CycleGAN level, VAE 19.4 -> 18.0 ms. The GAN task's BatchNorm
  models (axis_name): WGAN-GP 448.1 -> 429.1 ms, DCGAN 73.2 -> 72.8 ms, SNGAN level;
  DnCNN-S 533.1 -> 524.0 ms.

  Requirements on ``fn`` (not checked): its value is a mean over the batch of per-example
  terms, batch-wide quantities are computed across the ``'data'`` axis (e.g. BatchNorm
  with ``axis_name='data'``: each device sees only its shard), and it draws no random
  numbers (draw them outside, for the global batch, and pass them as batch arguments).
  Collectives inside ``fn`` are differentiated per device: the transpose of a ``pmean``
  of per-device statistics sums the devices' cotangents, so the averaged gradient is
  the global loss's gradient (``tests/test_train.py`` checks the BatchNorm DCGAN on 8
  devices against one).

  Args:
    fn: ``fn(params, *args) -> (loss, aux)``; ``loss`` a float32 scalar, differentiated
      with respect to ``params`` (a pytree of float arrays of one dtype).
    mesh: the training mesh (``'data'`` axis; other axes replicate), or None: then
      plain ``jax.value_and_grad(fn, has_aux=True)`` (a task built without a mesh, or
      one whose ``fn`` does not meet the requirements, e.g. with BatchNorm).
    batch_argnums: positions in ``args`` (0 = the first argument after ``params``) of the
      arrays sharded over ``'data'`` on their leading (batch) axis; the other arguments
      are replicated (e.g. another network's parameters).
    aux_specs: a pytree prefix of ``aux``: ``'mean'`` for leaves averaged over the
      devices (per-shard means, e.g. loss terms), ``'batch'`` for leaves with a leading
      batch axis (per-example outputs, e.g. generated images), ``'replicated'`` for
      leaves equal on every device (e.g. BatchNorm running statistics computed across
      the axis), returned from the first device.

  Returns:
    ``g(params, *args) -> ((loss, aux), grads)`` like ``jax.value_and_grad(fn,
    has_aux=True)``, for use inside ``jit``; ``loss``, ``'mean'`` leaves and ``grads``
    replicated, ``'batch'`` leaves sharded over ``'data'``.

  Raises:
    ValueError: an ``aux_specs`` leaf other than ``'mean'`` / ``'batch'`` /
      ``'replicated'``.
  """
  batch_argnums = tuple(batch_argnums)
  for spec in jax.tree.leaves(aux_specs):
    if spec not in ("mean", "batch", "replicated"):
      raise ValueError(f"data_parallel_value_and_grad: aux_specs leaves must be 'mean',"
                       f" 'batch' or 'replicated', got {spec!r}.")
  if mesh is None:
    return jax.value_and_grad(fn, has_aux=True)
  out_aux = jax.tree.map(lambda spec: P(DATA_AXIS) if spec == "batch" else P(), aux_specs)

  def local(params, *args):
    # Unchecked replication (check_vma=False): the gradient of the replicated ``params``
    # is this device's own (no implicit psum), and custom VJPs (genrepair.models.conv)
    # may return device-varying cotangents for replicated inputs.
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(params, *args)
    flat, unravel = ravel(grads)
    grads = unravel(jax.lax.pmean(flat, DATA_AXIS))  # one all-reduce for every parameter
    aux = jax.tree.map(lambda spec, a: jax.tree.map(
        lambda leaf: jax.lax.pmean(leaf, DATA_AXIS), a) if spec == "mean" else a,
                       aux_specs, aux)
    return (jax.lax.pmean(loss, DATA_AXIS), aux), grads

  def value_and_grad(params, *args):
    in_specs = (P(),) + tuple(P(DATA_AXIS) if i in batch_argnums else P()
                              for i in range(len(args)))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs,
                         out_specs=((P(), out_aux), P()), check_vma=False)(params, *args)

  return value_and_grad


CPU_DEVICES_FLAG = "xla_force_host_platform_device_count"


def usable_cores() -> int:
  """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def cpu_device_count(spec: str, batch_size: int, mesh_config: Mapping[str, int], *,
                     cores: int | None = None, num_processes: int = 1,
                     xla_flags: str | None = None) -> int | None:
  """How many CPU devices ``launch.py train --cpu_devices SPEC`` gives this process.

  XLA:CPU runs one device's convolutions with little parallelism (several kernels, e.g.
  weight gradients, are single-threaded), so on a CPU host the same data-parallel step
  over one device per core is faster for convolutional restoration models (2-core Xeon,
  ``python -m benchmarks.step --devices 2``: DnCNN-S 1.4x, SRCNN 1.5x, ESPCN 1.6x; the
  MNIST GANs and the VAE gain nothing). With the oneDNN kernels (``GENREPAIR_CONV``,
  ``genrepair.kernels.onednn``: each call's batch split into cores / devices parts on
  XLA's threads) one device is about as fast as two: in two 1-device runs against one
  2-device run the JAX steps took 0.79-1.17x as long (ESPCN 15.5-16.2 ms against 19.6 and
  the VAE faster; DnCNN-S 444.6-481.3 against 441.5, CycleGAN 59.2-66.7 against 59.2; AMD
  EPYC, 2 cores, 2026-11-30, README Performance, stop 23). Numbers are those of one
  device up to float summation order (batch statistics and means are global under jit;
  random draws do not depend on the sharding). The count only concerns the CPU backend: on GPU/TPU hosts
  the accelerators form the mesh and this is ignored.

  Args:
    spec: ``'1'`` (JAX's default: one CPU device), an integer ``N >= 1``, or ``'auto'``:
      the largest count ``<= cores`` that divides this process's batch
      (``batch_size / num_processes``); ``'auto'`` keeps one device when
      ``mesh_config`` fixes every axis size (no ``-1``).
    batch_size: the global batch (``config.train.batch_size``).
    mesh_config: ``config.mesh``.
    cores: usable cores (default :func:`usable_cores`).
    num_processes: processes of the run.
    xla_flags: ``$XLA_FLAGS`` (default: read from the environment); a
      ``--xla_force_host_platform_device_count`` there is the user's choice and wins.

  Returns:
    The device count to set as ``jax_num_cpu_devices``, or None to leave JAX's default.

  Raises:
    ValueError: ``spec`` is neither ``'auto'`` nor a positive integer, or an explicit
      count > 1 together with the XLA flag.
  """
  spec = str(spec).strip().lower()
  if spec != "auto" and not (spec.isdigit() and int(spec) >= 1):
    raise ValueError(f"--cpu_devices must be 'auto' or a positive integer, got {spec!r}.")
  flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
  if CPU_DEVICES_FLAG in flags:
    if spec not in ("1", "auto"):
      raise ValueError(f"--cpu_devices {spec} and XLA_FLAGS' --{CPU_DEVICES_FLAG} both set"
                       " the CPU device count; give one of them.")
    return None
  if spec != "auto":
    return int(spec) if int(spec) > 1 else None
  if -1 not in [int(v) for v in mesh_config.values()]:
    return None
  local_batch = max(1, batch_size // max(1, num_processes))
  cores = usable_cores() if cores is None else cores
  count = max(d for d in range(1, max(1, cores) + 1) if local_batch % d == 0)
  return count if count > 1 else None


def eval_cpu_device_count(spec: str, *, cores: int | None = None,
                          xla_flags: str | None = None) -> int | None:
  """How many CPU devices ``launch.py eval --cpu_devices SPEC`` gives this process.

  Evaluation runs each whole test image on one device and spreads the images over the
  devices (:func:`genrepair.evaluate.evaluate`), so there is no batch to divide:
  ``'auto'`` is one device per usable core; the rest as :func:`cpu_device_count`.

  Returns:
    The device count to set as ``jax_num_cpu_devices``, or None to leave JAX's default.

  Raises:
    ValueError: as :func:`cpu_device_count`.
  """
  cores = usable_cores() if cores is None else cores
  return cpu_device_count(spec, max(1, cores), {"data": -1}, cores=cores,
                          xla_flags=xla_flags)


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
