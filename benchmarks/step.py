r"""Times genrepair's real train step against the same model in eager PyTorch.

  python -m benchmarks.step --model all                  # every model, JAX and PyTorch
  python -m benchmarks.step --model dncnn --steps 10     # one model, fewer steps
  GENREPAIR_DATA=/work/shared/data python -m benchmarks.step --mode pipeline --model dncnn

``--mode step`` (default): for each model, genrepair's ``task.train_step`` jitted with
state donation exactly as ``genrepair.train.run`` does it, on a 1-device mesh, fed a
device-resident synthetic uint8 batch of the experiment's shape; then the PyTorch
reference (``benchmarks/torch_models.py``) on the same batch: forward, loss, backward,
Adam, with the restoration degradation done on the fly. Both run in one process, one
after the other (``--order sequential``, the default: all JAX steps, then all PyTorch
steps) or alternating step by step (``--order interleaved``: both see the same background
load on a shared machine, but PyTorch's OpenMP threads spin for a while after each of its
steps and slow the JAX step that follows: ESPCN's 22.9 ms sequential, 28.7-31.1 ms
interleaved). Each side: ``--warmup`` untimed steps, then the median of
``--steps`` timed steps (``block_until_ready`` on the JAX outputs; PyTorch CPU
is synchronous). FLOPs per step come from XLA's ``cost_analysis()`` of the compiled step
plus the oneDNN convolution calls it cannot see (``genrepair.kernels.onednn.hlo_flops``)
(the analytic count of :mod:`benchmarks.flops` when XLA gives none) and are divided by
each framework's median time; peak = the faster of a jitted ``jnp.dot`` and ``torch.mm``
of two ``--peak-size`` square float32 matrices (median of 10).

``--mode pipeline``: the same jitted step fed by genrepair's real input pipeline
(``train.make_train_iterator`` + ``sharding.to_global`` per step, as ``train.run``) vs the
step on a device-resident synthetic batch; the data come from ``$GENREPAIR_DATA`` when it
holds the experiment's dataset (the config decides, as in training).

``--malloc`` sets the host allocator of the whole process, so of both frameworks, as
``launch.py`` does (:mod:`genrepair.hostmem`): ``mimalloc`` restarts the benchmark with
mimalloc preloaded (the ``mimalloc`` extra), ``reuse`` makes glibc's malloc keep large
freed blocks for the next step, ``system`` measures glibc's default, ``auto`` (default)
is ``mimalloc`` when installed, else ``reuse``. The allocator in use is printed and
stored in the JSON (``meta.malloc``).

Configs: ``experiments/dcgan_mnist.py``, ``lsgan_mnist.py``, ``sngan_mnist.py`` and the
``runlocal`` (CPU) variants of
``dncnn_sigma25.py``, ``srcnn_x3.py``, ``espcn_x3.py``, ``vae_mnist.py``,
``wgan_gp_mnist.py`` (5 critic updates of 64 + one G update per step),
``cyclegan_digits.py``, and ``stylegan2_digits.py``; ``--batch`` overrides the batch.

Lazy regularisers (StyleGAN2: R1 every 16 steps, path length every 4) make steps unequal:
for such a model the timed unit is one whole cycle of ``lcm(r1_every, pl_every)``
consecutive steps on both sides (each side keeps its own step counter and runs the lazy
terms on the same schedule as training: genrepair compiles one program per variant, as
``train.run`` does), and the reported time per step is the cycle's time divided by its
length: the mean over the schedule, not the median of the cheap steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import flops as flops_lib
from genrepair import hostmem, sharding, train
from genrepair.kernels import onednn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_HINT = ("PyTorch is not installed: timing the JAX side only. For the comparison:"
                " pip install -e .[bench]   (CPU torch==2.13.0)")


@dataclasses.dataclass(frozen=True)
class Bench:
  """One benchmarked model.

  Attributes:
    experiment: file name in ``experiments/`` (without ``.py``).
    arg: the config argument (``'runlocal'``: the CPU setting), or None.
    data_channels: channels of the training data (T91 patches are RGB; the step reduces
      them to Y for the 1-channel models); None: the model's image shape (GAN, VAE).
  """
  experiment: str
  arg: str | None
  data_channels: int | None


BENCHES = {
    "dcgan": Bench("dcgan_mnist", None, None),
    "lsgan": Bench("lsgan_mnist", None, None),
    "sngan": Bench("sngan_mnist", None, None),
    "dncnn": Bench("dncnn_sigma25", "runlocal", 1),
    "srcnn": Bench("srcnn_x3", "runlocal", 3),
    "espcn": Bench("espcn_x3", "runlocal", 3),
    "vae": Bench("vae_mnist", "runlocal", None),
    "wgan_gp": Bench("wgan_gp_mnist", "runlocal", None),
    "cyclegan": Bench("cyclegan_digits", "runlocal", None),
    "stylegan2": Bench("stylegan2_digits", None, None),
}


def num_cores() -> int:
  """CPU cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def load_config(model: str, batch: int | None = None) -> ml_collections.ConfigDict:
  """The benchmark config of ``model``; ``batch`` overrides ``train.batch_size``."""
  b = BENCHES[model]
  path = os.path.join(REPO, "experiments", f"{b.experiment}.py")
  spec = importlib.util.spec_from_file_location(b.experiment, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(b.arg)
  if batch is not None:
    config.train.batch_size = int(batch)
  return config


def synthetic_batch(model: str, config: ml_collections.ConfigDict, task: Any,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Random uint8 ``{'image': [B, H, W, C]}`` of the shape the real pipeline yields
  (CycleGAN: ``{'image_a', 'image_b'}``, one batch per domain)."""
  b = int(config.train.batch_size)
  rng = np.random.default_rng(seed)
  if model == "cyclegan":
    shape = (b, *task.image_shape)
    return {k: rng.integers(0, 256, shape, dtype=np.uint8) for k in ("image_a", "image_b")}
  if BENCHES[model].data_channels is None:
    shape = (b, *task.image_shape)
  else:
    p = int(config.data.patch_size)
    shape = (b, p, p, BENCHES[model].data_channels)
  return {"image": rng.integers(0, 256, shape, dtype=np.uint8)}


def _median_ms(times: Sequence[float]) -> float:
  return 1e3 * statistics.median(times)


def _timed(fn: Callable[[], Any], steps: int, warmup: int) -> list[float]:
  """Runs ``fn`` ``warmup`` times, then returns the durations (s) of ``steps`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def _xla_flops(compiled: Any) -> float | None:
  """FLOPs from a compiled executable's ``cost_analysis()`` (None if XLA gives none)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  value = (cost or {}).get("flops")
  return float(value) if value and value > 0 else None


def program_flops(compiled: Any) -> float | None:
  """FLOPs of one compiled program: XLA's ``cost_analysis()`` plus the oneDNN convolution
  calls it cannot see into (``genrepair.kernels.onednn.hlo_flops``); None if XLA gives none."""
  flops = _xla_flops(compiled)
  if flops is None:
    return None
  return flops + onednn.hlo_flops(compiled.as_text())


def _param_counts(model: str, state: Any) -> dict[str, int]:
  size = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  if model in ("dcgan", "lsgan", "sngan", "wgan_gp", "stylegan2"):
    return {"generator": size(state.g_params), "discriminator": size(state.d_params)}
  if model == "vae":
    return {"encoder": size(state.params["encoder"]), "decoder": size(state.params["decoder"])}
  if model == "cyclegan":
    return {"G": size(state.g_params), "F": size(state.f_params),
            "D_A": size(state.d_a_params), "D_B": size(state.d_b_params)}
  return {"model": size(state.params)}


def lazy_cycle(config: ml_collections.ConfigDict) -> int:
  """Steps in one cycle of the lazy regularisers: ``lcm`` of ``train.r1_every`` (with an
  R1 weight) and ``train.pl_every`` (with a path length weight); 1 without lazy terms."""
  tc, intervals = config.train, [1]
  if float(config.losses.get("d", {}).get("r1_penalty", 0.0)) > 0:
    intervals.append(int(tc.get("r1_every", 1)))
  if float(config.losses.get("g", {}).get("path_length", 0.0)) > 0:
    intervals.append(int(tc.get("pl_every", 1)))
  return math.lcm(*intervals)


class JaxStep:
  """genrepair's jitted, donating train step on a ``devices``-device mesh, and its state.

  Tasks with lazy regularisers (``task.step_variant``) get one compiled program per
  variant, chosen from a host step counter, as in ``genrepair.train.run``.
  """

  def __init__(self, model: str, config: ml_collections.ConfigDict, devices: int = 1):
    if devices > len(jax.devices()):
      raise ValueError(f"--devices {devices}: only {len(jax.devices())} devices exist.")
    mesh = sharding.make_mesh({"data": devices}, jax.devices()[:devices])
    self.task, self.mesh, init_rng, self.rng, _, state_sharding = train.build(config, mesh)
    repl = sharding.replicated(self.mesh)
    self.state = jax.jit(self.task.init, out_shardings=state_sharding)(init_rng)
    self.params = _param_counts(model, self.state)
    self.step = 0
    self._variant = getattr(self.task, "step_variant", lambda step: None)
    self._fns: dict[Any, Any] = {}
    # As genrepair.train.run: the old state's buffers are donated to the new one.
    self._jit = lambda fn: jax.jit(fn, donate_argnums=0, out_shardings=(state_sharding, repl))

  def fn(self, variant: Any) -> Any:
    """The jitted step of one lazy-regulariser variant (None: the only one)."""
    if variant not in self._fns:
      self._fns[variant] = self._jit(
          self.task.train_step if variant is None
          else functools.partial(self.task.train_step, variant=variant))
    return self._fns[variant]

  def __call__(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    fn = self.fn(self._variant(self.step))
    with jax.transfer_guard("disallow"):  # as train.run: no hidden host<->device copies
      self.state, metrics = fn(self.state, batch, self.rng)
    jax.block_until_ready((self.state, metrics))
    self.step += 1
    return metrics

  def first_call(self, batch: dict[str, jax.Array], cycle: int = 1
                 ) -> tuple[float, float | None]:
    """Runs the first ``cycle`` steps (compiling every variant); returns ``(seconds incl.
    tracing + compilation, XLA FLOPs per step averaged over the cycle)``."""
    t0 = time.perf_counter()
    variants = []
    for _ in range(cycle):
      variants.append(self._variant(self.step))
      self(batch)
    seconds = time.perf_counter() - t0
    total = 0.0
    for variant in set(variants):  # each distinct program once, weighted by its count
      # Served from jit's cache: the executable that just ran, not a second compilation.
      flops = program_flops(self.fn(variant).lower(self.state, batch, self.rng).compile())
      if flops is None:
        return seconds, None
      total += flops * variants.count(variant)
    # XLA counts one device's (SPMD-partitioned) program.
    return seconds, total / cycle * self.mesh.size


def torch_step(model: str, config: ml_collections.ConfigDict, host_batch: dict[str, Any],
               threads: int, expected_params: dict[str, int]) -> tuple[Callable[[], Any], float]:
  """The PyTorch reference step (eager, CPU) on the same uint8 batch, after its first call.

  Returns:
    ``(step, seconds of the first call)``.

  Raises:
    AssertionError: the PyTorch model's parameter counts differ from genrepair's.
  """
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  step = torch_models.make_step(model, config)
  counts = step.num_params()
  if counts != expected_params:
    raise AssertionError(f"{model}: PyTorch parameter counts {counts} differ from"
                         f" genrepair's {expected_params}; the architectures differ.")
  # NHWC -> NCHW; CycleGAN's step takes both domains' batches (image_a, image_b).
  images = [torch.from_numpy(np.ascontiguousarray(host_batch[k].transpose(0, 3, 1, 2)))
            for k in sorted(host_batch)]
  t0 = time.perf_counter()
  step(*images)
  return (lambda: step(*images)), time.perf_counter() - t0


def _time_interleaved(fns: Sequence[Callable[[], Any]], steps: int,
                      warmup: int, block: int = 1) -> list[list[float]]:
  """Alternates the ``fns`` in blocks of ``block`` steps (the last block may be shorter);
  returns each one's ``steps`` durations (s)."""
  for _ in range(warmup):
    for fn in fns:
      fn()
  times = [[] for _ in fns]
  done = 0
  while done < steps:
    n = min(block, steps - done)
    for fn, t in zip(fns, times):
      for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    done += n
  return times


def matmul_peak(n: int, use_torch: bool, reps: int = 10) -> dict[str, float]:
  """GFLOP/s of an ``n x n`` float32 matmul: median of ``reps`` (JAX, and PyTorch if used)."""
  flop = 2.0 * n ** 3
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  times = _timed(lambda: dot(a, b).block_until_ready(), reps, warmup=2)
  out = {"jax": flop / statistics.median(times) / 1e9}
  if use_torch:
    import torch  # pylint: disable=import-outside-toplevel
    ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
    times = _timed(lambda: torch.mm(ta, tb), reps, warmup=2)
    out["torch"] = flop / statistics.median(times) / 1e9
  return out


def bench_step(model: str, *, steps: int, warmup: int, batch: int | None,
               use_torch: bool, threads: int, peak: float,
               interleave: bool = False, devices: int = 1, block: int = 1
               ) -> dict[str, Any]:
  """``--mode step`` for one model: the JAX and (optionally) PyTorch measurements."""
  config = load_config(model, batch)
  b = int(config.train.batch_size)
  step = JaxStep(model, config, devices)
  host = synthetic_batch(model, config, step.task)
  analytic = flops_lib.step_flops(model, config)
  r: dict[str, Any] = {"model": model, "config": f"{BENCHES[model].experiment}"
                       + (f":{BENCHES[model].arg}" if BENCHES[model].arg else ""),
                       "batch": b, "input_shape": list(next(iter(host.values())).shape),
                       "devices": devices,
                       "flops_analytic": analytic}
  device_batch = sharding.to_global(host, step.mesh)
  cycle = r["cycle"] = lazy_cycle(config)
  r["compile_s"], r["flops_xla"] = step.first_call(device_batch, cycle)
  r["params"] = step.params
  fns = [lambda: step(device_batch)]
  if use_torch:
    fn, r["torch_first_s"] = torch_step(model, config, host, threads, step.params)
    fns.append(fn)
    r["torch_threads"] = threads
  if cycle > 1:  # time whole lazy cycles: one "step" of the timing is `cycle` steps
    fns = [lambda f=f: [f() for _ in range(cycle)] for f in fns]
  if interleave:
    times = _time_interleaved(fns, steps, warmup, block)
  else:  # JAX's steps, then PyTorch's
    times = [_timed(fn, steps, warmup) for fn in fns]
  times = [[t / cycle for t in ts] for ts in times]  # seconds per train step
  r["jax_ms"], r["jax_times_ms"] = _median_ms(times[0]), [1e3 * t for t in times[0]]
  if use_torch:
    r["torch_ms"], r["torch_times_ms"] = _median_ms(times[1]), [1e3 * t for t in times[1]]
  r["flops"] = r["flops_xla"] or analytic
  r["flops_source"] = "xla_cost_analysis" if r["flops_xla"] else "analytic"
  if r["flops"] is None:  # wgan_gp has no analytic count
    raise RuntimeError(f"{model}: XLA's cost_analysis() gave no FLOP count and the model has"
                       " no analytic one (benchmarks/flops.py).")
  r["jax_steps_per_s"] = 1e3 / r["jax_ms"]
  r["jax_images_per_s"] = b * r["jax_steps_per_s"]
  r["jax_gflops"] = r["flops"] / r["jax_ms"] / 1e6
  r["jax_pct_peak"] = 100.0 * r["jax_gflops"] / peak
  if use_torch:
    r["ratio"] = r["jax_ms"] / r["torch_ms"]
    r["torch_images_per_s"] = b * 1e3 / r["torch_ms"]
    r["torch_gflops"] = r["flops"] / r["torch_ms"] / 1e6
    r["torch_pct_peak"] = 100.0 * r["torch_gflops"] / peak
  return r


def bench_pipeline(model: str, *, steps: int, warmup: int,
                   batch: int | None) -> dict[str, Any]:
  """``--mode pipeline`` for one model: real-data step vs synthetic device-resident batch."""
  config = load_config(model, batch)
  step = JaxStep(model, config)
  data_it = train.make_train_iterator(config)
  t0 = time.perf_counter()
  first = next(data_it)
  first_batch_s = time.perf_counter() - t0
  synth = synthetic_batch(model, config, step.task)
  for key in synth:
    if key not in first or first[key].shape != synth[key].shape or first[key].dtype != np.uint8:
      got = (first[key].dtype, first[key].shape) if key in first else "nothing"
      raise ValueError(f"{model}: the real pipeline gives {got} for {key!r}, the synthetic"
                       f" batch uint8 {synth[key].shape}; fix BENCHES[{model!r}].")
  compile_s, _ = step.first_call(sharding.to_global(first, step.mesh))

  fetch: list[float] = []

  def real_step():
    t = time.perf_counter()
    b = sharding.to_global(next(data_it), step.mesh)
    fetch.append(time.perf_counter() - t)
    step(b)

  real = _timed(real_step, steps, warmup)
  data_it.close()  # stop its prefetch thread before the synthetic run
  device_batch = sharding.to_global(synth, step.mesh)
  synthetic = _timed(lambda: step(device_batch), steps, warmup)
  # The iterator alone (no step running): how fast the input pipeline can produce batches.
  # Its first batches (prefetch buffer) are skipped; the mean of the next `steps`.
  data_it = train.make_train_iterator(config)
  for _ in range(warmup + 5):
    next(data_it)
  t0 = time.perf_counter()
  for _ in range(steps):
    next(data_it)
  iterator_s = (time.perf_counter() - t0) / steps
  data_it.close()
  b = int(config.train.batch_size)
  dataset = config.data.get("name") or " + ".join(  # CycleGAN: one dataset per domain
      d.name for d in config.data.domains.values())
  return {"model": model, "dataset": dataset,
          "data_root": os.environ.get("GENREPAIR_DATA", ""), "batch": b,
          "input_shape": list(next(iter(synth.values())).shape), "compile_s": compile_s,
          "first_batch_s": first_batch_s,
          "real_ms": _median_ms(real), "synthetic_ms": _median_ms(synthetic),
          "fetch_ms": _median_ms(fetch[-steps:]), "iterator_ms": 1e3 * iterator_s,
          "ratio": statistics.median(real) / statistics.median(synthetic),
          "real_images_per_s": b / statistics.median(real),
          "real_times_ms": [1e3 * t for t in real],
          "synthetic_times_ms": [1e3 * t for t in synthetic]}


# ------------------------------------------------------------------------------ output


def _f(value: float | None, fmt: str) -> str:
  return "n/a" if value is None else format(value, fmt)


def step_table(results: Sequence[dict[str, Any]], peak: float) -> str:
  """Markdown table of ``--mode step`` results (one row per model)."""
  head = ("| model | batch | jax ms | torch ms | ratio jax/torch | jax steps/s | images/s"
          " | compile s | GFLOP/s jax (% peak) | GFLOP/s torch (% peak) | peak GFLOP/s |")
  rows = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in results:
    torch_gf = (None if "torch_gflops" not in r
                else f"{r['torch_gflops']:.1f} ({r['torch_pct_peak']:.0f}%)")
    rows.append(
        f"| {r['model']} | {r['batch']} | {r['jax_ms']:.1f} | {_f(r.get('torch_ms'), '.1f')}"
        f" | {_f(r.get('ratio'), '.2f')} | {r['jax_steps_per_s']:.2f}"
        f" | {r['jax_images_per_s']:.0f} | {r['compile_s']:.1f}"
        f" | {r['jax_gflops']:.1f} ({r['jax_pct_peak']:.0f}%) | {torch_gf or 'n/a'}"
        f" | {peak:.0f} |")
  return "\n".join(rows)


def pipeline_table(results: Sequence[dict[str, Any]]) -> str:
  """Markdown table of ``--mode pipeline`` results."""
  rows = ["| model | dataset | batch | real-data ms | synthetic ms | ratio real/synthetic"
          " | fetch + to_global ms | iterator alone ms | real images/s |",
          "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    rows.append(f"| {r['model']} | {r['dataset']} | {r['batch']} | {r['real_ms']:.1f}"
                f" | {r['synthetic_ms']:.1f} | {r['ratio']:.2f} | {r['fetch_ms']:.1f}"
                f" | {r['iterator_ms']:.1f} | {r['real_images_per_s']:.0f} |")
  return "\n".join(rows)


def machine_info(argv: Sequence[str], threads: int, use_torch: bool) -> dict[str, Any]:
  """Machine, versions and load: what a number in the README must be quoted with."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": " ".join(["python -m benchmarks.step", *argv]),
          "cpu": cpu, "cores": num_cores(), "torch_threads": threads,
          "python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
          "flax": _version("flax"), "optax": _version("optax"),
          "backend": jax.default_backend(), "load_avg_start": list(os.getloadavg())}
  if use_torch:
    import torch  # pylint: disable=import-outside-toplevel
    info["torch"] = torch.__version__
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
  return info


def _version(package: str) -> str | None:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def torch_available() -> bool:
  """Whether torch is installed (found without importing it: see OMP_WAIT_POLICY)."""
  try:
    return importlib.util.find_spec("torch") is not None
  except (ImportError, ValueError):
    return False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="all", choices=[*BENCHES, "all"])
  p.add_argument("--mode", default="step", choices=["step", "pipeline"])
  p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
  p.add_argument("--batch", type=int, default=None, help="override the config's batch")
  p.add_argument("--threads", type=int, default=None,
                 help="torch.set_num_threads (default: the cores of this process)")
  p.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak")
  p.add_argument("--no-torch", action="store_true", help="time the JAX side only")
  p.add_argument("--order", default="sequential", choices=["sequential", "interleaved"],
                 help="step mode: JAX and PyTorch steps alternating, or all JAX steps first")
  p.add_argument("--omp-wait-policy", default="default",
                 choices=["default", "passive", "active"],
                 help="PyTorch's OpenMP wait policy; 'default' leaves OMP_WAIT_POLICY as the"
                      " environment has it (unset: PyTorch's own default)")
  p.add_argument("--block", type=int, default=1,
                 help="--order interleaved: alternate the two sides every BLOCK steps")
  p.add_argument("--malloc", default=os.environ.get("GENREPAIR_MALLOC") or "auto",
                 choices=list(hostmem.MODES),
                 help="host malloc for both sides, as launch.py (genrepair/hostmem.py):"
                 " 'mimalloc' restarts with mimalloc preloaded; 'reuse' makes glibc keep"
                 " large blocks for the next step; 'system' leaves malloc alone; 'auto'"
                 " (default): mimalloc when installed, else reuse")
  p.add_argument("--json", default=None, help="write the results to this JSON file")
  p.add_argument("--devices", type=int, default=1,
                 help="step mode: shard the batch over this many CPU devices (the process"
                      " starts that many, as jax_num_cpu_devices)")
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0:
    p.error("--steps must be >= 1 and --warmup >= 0.")
  if args.devices < 1:
    p.error("--devices must be >= 1.")
  if args.block < 1:
    p.error("--block must be >= 1.")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; prints a Markdown table and returns ``{'meta', 'results'}``."""
  # Run as a script, --malloc mimalloc restarts the process with mimalloc preloaded.
  restart = sys.orig_argv[1:] if argv is None else None
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  malloc = hostmem.configure(args.malloc, restart)  # process-wide: JAX and PyTorch alike
  models = list(BENCHES) if args.model == "all" else [args.model]
  threads = args.threads or num_cores()
  use_torch = args.mode == "step" and not args.no_torch and torch_available()
  if args.mode == "step" and not args.no_torch and not use_torch:
    print(INSTALL_HINT, flush=True)
  if use_torch and args.omp_wait_policy != "default":
    # Read once, when torch loads (benchmarks/README.md, OpenMP): PASSIVE helps PyTorch on
    # a machine loaded by other processes and slows it on an idle one; ACTIVE spins
    # without end and takes a core from the JAX steps of the same process.
    if "torch" in sys.modules:
      raise RuntimeError("--omp-wait-policy: torch is already imported; set"
                         " OMP_WAIT_POLICY in the environment instead.")
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
  if args.devices > 1:  # before the first use of the backend
    jax.config.update("jax_num_cpu_devices", args.devices)
  meta = machine_info(argv, threads, use_torch)
  meta["malloc"] = {"mode": args.malloc, "allocator": hostmem.loaded_allocator() or "glibc",
                    "settings": malloc}
  from genrepair.models import conv  # pylint: disable=import-outside-toplevel
  meta["conv"] = conv.backend_summary()  # GENREPAIR_CONV: oneDNN or XLA convolutions
  results = []
  if args.mode == "step":
    meta["peak_gflops"] = matmul_peak(args.peak_size, use_torch)
    meta["peak_size"] = args.peak_size
    peak = max(meta["peak_gflops"].values())
    print(f"Peak (median {args.peak_size}^2 float32 matmul): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in meta["peak_gflops"].items()),
          flush=True)
    for m in models:
      r = bench_step(m, steps=args.steps, warmup=args.warmup, batch=args.batch,
                     use_torch=use_torch, threads=threads, peak=peak,
                     interleave=args.order == "interleaved", devices=args.devices,
                     block=args.block)
      results.append(r)
      print(f"{m}: jax {r['jax_ms']:.1f} ms, torch {_f(r.get('torch_ms'), '.1f')} ms;"
            f" {r['flops'] / 1e9:.3f} GFLOP/step ({r['flops_source']}; analytic conv/dense"
            f" {_f(r['flops_analytic'] and r['flops_analytic'] / 1e9, '.3f')});"
            f" params {r['params']}", flush=True)
    table = step_table(results, peak)
  else:
    for m in models:
      r = bench_pipeline(m, steps=args.steps, warmup=args.warmup, batch=args.batch)
      results.append(r)
      print(f"{m} ({r['dataset']}): real {r['real_ms']:.1f} ms, synthetic"
            f" {r['synthetic_ms']:.1f} ms", flush=True)
    table = pipeline_table(results)
  meta["load_avg_end"] = list(os.getloadavg())
  meta["steps"], meta["warmup"], meta["mode"] = args.steps, args.warmup, args.mode
  meta["order"], meta["block"] = args.order, args.block
  print(f"\n{table}\n")
  print(f"{meta['date']}; {meta['cpu']}, {meta['cores']} cores; jax {meta['jax']}"
        + (f", torch {meta['torch']} ({threads} threads, OMP_WAIT_POLICY="
           f"{meta['omp_wait_policy'] or 'unset'})" if use_torch else "")
        + f"; malloc {args.malloc} ({meta['malloc']['allocator']}); convolutions"
        f" {meta['conv']}"
        + f"; load average {meta['load_avg_start'][0]:.2f} -> {meta['load_avg_end'][0]:.2f}")
  out = {"meta": meta, "results": results}
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
