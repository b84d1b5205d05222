"""2-D float32 convolutions on XLA:CPU through oneDNN (Intel's DNN library, as PyTorch uses).

Why (GitHub issue "scale and speed"): on the 2-core AMD EPYC (Zen 4) of stops 21-22,
XLA's own CPU convolutions (YNNPACK) reach ~95 GFLOP/s per core, oneDNN's ~115-126
(ESPCN's 3x3 64 -> 32 layer on 32 maps of 17x17, one thread: forward 3.6 ms in XLA
against 2.7 ms, oneDNN's input and weight gradients 2.7 and 3.0 ms; DnCNN's 3x3 64 -> 64
on a 481x321 image: 99 ms forward). PyTorch's CPU training steps use oneDNN, which left
genrepair's steps up to 19% behind them; with these kernels every benchmarked step is
faster (README, Performance, stop 23: JAX / PyTorch 0.53-0.96 on one CPU device, 0.52-0.92
on two).

Layouts: the forward call reads and writes NHWC directly (oneDNN's brgemm kernels); the
gradient calls reorder their operands to the blocked layouts oneDNN picks and the result
back (its NHWC gradient kernels are gemm-based: 1.4-4.7x slower on the ESPCN and DnCNN
layers above). Reorder buffers and scratchpads are per executing thread and grow to the
largest call (kept for the process).

What: three XLA FFI custom calls (``onednn_conv.cc``, built with ``g++`` against the
``onednn-cpu-gomp`` wheel on first use and cached) compute, for one geometry (window
strides ``s``, padding ``(lo, hi)`` per axis, kernel dilation ``d``):

- :func:`conv` ``y = conv(x, w)``: ``x [B, H, W, Cin]``, ``w [KH, KW, Cin, Cout]`` ->
  ``y [B, Ho, Wo, Cout]`` (``lax.conv_general_dilated`` with ``('NHWC', 'HWIO', 'NHWC')``);
- :func:`conv_input_grad` ``dx = dL/dx`` from ``g = dL/dy`` and ``w``;
- :func:`conv_weight_grad` ``dw = dL/dw`` from ``x`` and ``g``.

Each is differentiable (``jax.custom_vjp``) in terms of the other two, to any order: with
``B(x, w, g) = <conv(x, w), g>`` the three are ``conv = dB/dg``, ``input_grad = dB/dx``,
``weight_grad = dB/dw``, so e.g. the VJP of ``input_grad(g, w)`` with cotangent ``c`` is
``(conv(c, w), weight_grad(c, g))``. Second-order terms (WGAN-GP's gradient penalty, R1)
stay in oneDNN.

Data parallelism: each call is wrapped in ``custom_partitioning``. With the batch axis of
``x``/``g`` sharded over mesh axes (and nothing else sharded), every device runs oneDNN
on its own rows; the weight gradient is summed over the batch axes with ``psum``. Any
other sharding is gathered to that form first.

Threads: a call's batch rows are split into ``parts`` contiguous parts
(:func:`parts_per_call`: the usable cores divided by the local CPU device count, so 2 on a
2-core host with one device, 1 with one device per core). The XLA thread that executes the
call schedules the other parts on XLA's intra-op thread pool and runs parts itself; every
part is one single-threaded oneDNN call (``threads`` OpenMP threads, :func:`threads_per_call`,
1 unless set). A part is run by whichever thread claims it first and the caller waits only
for parts already running, so a busy pool never stalls a call. The split depends only on
the batch size and ``parts``, never on which thread runs what, so results are
reproducible; the weight gradient adds the parts' gradients in part order (float
summation order differs from one call). A call with fewer rows than ``parts`` gives each
row ``parts // rows`` OpenMP threads instead (a single 481x321 image on one device). A
weight gradient takes at most :data:`MAX_WEIGHT_PARTS` parts (each part adds a
kernel-sized buffer and a pass over it), its other threads again as OpenMP threads; this
and ``parts`` beyond 2 are not measured (only a 2-core VM so far).
Why not OpenMP threads inside oneDNN (stop 22's way: one call, cores // devices threads):
on one device of the 2-core VM the JAX steps were slower (CycleGAN 98.7 ms, WGAN-GP 443.1,
StyleGAN2 137.6-149.7, SNGAN 72.1 against 58.7, 344.5, 97.7 and 60.3 split into parts;
ESPCN 15.6-17.6 against 14.1-15.0 in 5 of 8 runs, 18.6-18.9 in 3: a slow mode that
comes in spells with either allocator, README Performance), and PyTorch's own
OpenMP steps later in the same process ran slower (ESPCN 20.8-23.2 ms against 17.4-18.3
with XLA's kernels; with parts 17.5 and 18.5 ms, against 18.0 and 18.6 next to a
2-device JAX step).

Numbers: the same convolution as XLA's up to float summation order (``tests/test_onednn.py``
compares values and first and second derivatives with ``jax.grad`` of
``lax.conv_general_dilated`` for every stride, padding and dilation the models use).
oneDNN's float32 convolutions do not use reduced precision (its default fpmath mode).

Raises: :class:`OneDNNUnavailable` from :func:`load` when the wheels or ``g++`` are
missing or the build fails (its message has the compiler's output).

Not covered: other dtypes (bfloat16, float16), grouped convolutions, 1-D/3-D, input
dilation together with window strides (``genrepair.models.conv`` keeps XLA's path there).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
TARGETS = {"fwd": "genrepair_onednn_conv_fwd",
           "bwd_data": "genrepair_onednn_conv_bwd_data",
           "bwd_weights": "genrepair_onednn_conv_bwd_weights"}
_SYMBOLS = {"fwd": "GenrepairConvFwd", "bwd_data": "GenrepairConvBwdData",
            "bwd_weights": "GenrepairConvBwdWeights"}
RUNTIME_DIST = "onednn-cpu-gomp"
HEADERS_DIST = "onednn-devel-cpu-gomp"


class OneDNNUnavailable(RuntimeError):
  """The oneDNN kernels cannot be built or loaded here (the message says why)."""


def _dist_file(dist: str, name: str) -> pathlib.Path:
  try:
    files = importlib.metadata.distribution(dist).files or []
  except importlib.metadata.PackageNotFoundError:
    raise OneDNNUnavailable(
        f"the Python package {dist!r} is not installed (pip install 'genrepair[onednn]')."
    ) from None
  for f in files:
    if str(f).endswith(name):
      return pathlib.Path(importlib.metadata.distribution(dist).locate_file(f)).resolve()
  raise OneDNNUnavailable(f"{dist!r} has no file {name!r}.")


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("GENREPAIR_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "genrepair")
  return pathlib.Path(root) / "onednn"


def build(out_dir: pathlib.Path | None = None) -> pathlib.Path:
  """Compiles ``onednn_conv.cc`` (once per source/oneDNN/jaxlib version) and returns the .so.

  The library goes to ``$GENREPAIR_CACHE/onednn`` (default ``~/.cache/genrepair/onednn``)
  under a hash of the source, oneDNN's header, its library's path, size and modification
  time, jaxlib's version and the compiler; it is written
  to a temporary name and renamed, so concurrent processes do not see half a file.

  Raises:
    OneDNNUnavailable: ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` not installed, no
      ``g++`` (or ``$CXX``), or the compiler failed (its output is in the message).
  """
  lib = _dist_file(RUNTIME_DIST, "libdnnl.so.3")
  header = _dist_file(HEADERS_DIST, "include/dnnl.hpp")
  cxx = os.environ.get("CXX") or shutil.which("g++")
  if not cxx:
    raise OneDNNUnavailable("no C++ compiler: install g++ or set CXX.")
  import jaxlib
  src = SOURCE.read_bytes()
  stat = lib.stat()  # a reinstalled oneDNN at the same path gets a new build
  digest = hashlib.sha256(src + header.read_bytes() + str(lib).encode()
                          + f"{stat.st_size}:{stat.st_mtime_ns}".encode()
                          + jaxlib.__version__.encode() + cxx.encode()).hexdigest()[:16]
  out_dir = out_dir or _cache_dir()
  target = out_dir / f"libgenrepair_onednn_{digest}.so"
  if target.exists():
    return target
  out_dir.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".so.tmp", delete=False) as tmp:
    tmp_path = pathlib.Path(tmp.name)
  cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp",
         f"-I{header.parent}", f"-I{jax.ffi.include_dir()}", str(SOURCE),
         f"-L{lib.parent}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib.parent}",
         "-o", str(tmp_path)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    tmp_path.unlink(missing_ok=True)
    raise OneDNNUnavailable(f"building {SOURCE.name} failed ({' '.join(cmd)}):\n"
                            f"{proc.stderr[-4000:]}")
  os.replace(tmp_path, target)
  return target


_lock = threading.Lock()
_state: dict[str, object] = {}


def load() -> ctypes.CDLL:
  """Builds (if needed) and loads the kernels, and registers the FFI targets (once).

  Raises:
    OneDNNUnavailable: see :func:`build`; the error is remembered for the process.
  """
  with _lock:
    if "lib" in _state:
      return _state["lib"]  # type: ignore[return-value]
    if "error" in _state:
      raise OneDNNUnavailable(str(_state["error"]))
    try:
      path = build()
      lib = ctypes.CDLL(str(path))
    except (OneDNNUnavailable, OSError) as e:
      _state["error"] = e
      raise OneDNNUnavailable(str(e)) from None
    for kind, target in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, _SYMBOLS[kind])),
                                  platform="cpu")
    lib.genrepair_onednn_version.restype = ctypes.c_char_p
    _state["lib"] = lib
    _state["version"] = lib.genrepair_onednn_version().decode()
    return lib


def available() -> bool:
  """Whether :func:`load` succeeds (builds on first call)."""
  try:
    load()
    return True
  except OneDNNUnavailable:
    return False


def version() -> str:
  """oneDNN's version string, e.g. ``'3.2.0'`` (loads the kernels)."""
  load()
  return str(_state["version"])


MAX_WEIGHT_PARTS = 8  # kMaxWeightParts in onednn_conv.cc


def _positive_env(name: str) -> int | None:
  value = os.environ.get(name)
  if not value:
    return None
  if not value.isdigit() or int(value) < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")
  return int(value)


def threads_per_call() -> int:
  """OpenMP threads per oneDNN call (per batch part): ``$GENREPAIR_ONEDNN_THREADS`` when
  set, else 1 (parallelism comes from :func:`parts_per_call`).

  Raises:
    ValueError: ``GENREPAIR_ONEDNN_THREADS`` is not a positive integer.
  """
  return _positive_env("GENREPAIR_ONEDNN_THREADS") or 1


def parts_per_call() -> int:
  """Batch parts per oneDNN call, run in parallel on XLA's intra-op threads:
  ``$GENREPAIR_ONEDNN_PARTS`` when set, else usable cores // local CPU devices, at least 1.

  Raises:
    ValueError: ``GENREPAIR_ONEDNN_PARTS`` is not a positive integer.
  """
  parts = _positive_env("GENREPAIR_ONEDNN_PARTS")
  if parts:
    return parts
  from genrepair import sharding
  devices = max(1, len(jax.local_devices(backend="cpu")))
  return max(1, sharding.usable_cores() // devices)


class Geometry(NamedTuple):
  """One convolution's static settings (hashable)."""
  strides: tuple[int, int]
  pads: tuple[tuple[int, int], tuple[int, int]]
  dilation: tuple[int, int]


def _attrs(geo: Geometry, threads: int, parts: int) -> dict[str, object]:
  return dict(strides=np.asarray(geo.strides, np.int64),
              pad_lo=np.asarray([p[0] for p in geo.pads], np.int64),
              pad_hi=np.asarray([p[1] for p in geo.pads], np.int64),
              dilation=np.asarray(geo.dilation, np.int64),
              threads=np.int64(threads), parts=np.int64(parts))


def _call(kind: str, geo: Geometry, out_shape: tuple[int, ...], a: jax.Array,
          b: jax.Array) -> jax.Array:
  load()
  return jax.ffi.ffi_call(TARGETS[kind], jax.ShapeDtypeStruct(out_shape, jnp.float32))(
      a, b, **_attrs(geo, threads_per_call(), parts_per_call()))


def _batch_spec(sharding) -> tuple:
  """Mesh axes of dim 0 in a NamedSharding's spec (``()`` when unsharded)."""
  spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
  first = spec[0] if len(spec) else None
  if first is None:
    return ()
  return tuple(first) if isinstance(first, tuple) else (first,)


def _partitioned(kind: str):
  """The FFI call ``kind`` as a ``custom_partitioning`` op, batch-parallel."""

  def impl(geo, out_shape, a, b):
    return _call(kind, geo, out_shape, a, b)

  op = custom_partitioning(impl, static_argnums=(0, 1))

  def spec_axes(mesh, arg_shapes):
    axes = _batch_spec(arg_shapes[0].sharding)
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if axes and arg_shapes[0].shape[0] % size:
      axes = ()
    return axes

  def infer(geo, out_shape, mesh, arg_shapes, result_shape):
    axes = spec_axes(mesh, arg_shapes)
    if kind == "bwd_weights" or not axes:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(axes))

  def partition(geo, out_shape, mesh, arg_shapes, result_shape):
    axes = spec_axes(mesh, arg_shapes)
    batched = P(axes) if axes else P()
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if kind == "bwd_weights":
      arg_shardings = (NamedSharding(mesh, batched), NamedSharding(mesh, batched))
      out_sharding = NamedSharding(mesh, P())

      def lower(a, b):
        dw = _call(kind, geo, out_shape, a, b)
        return jax.lax.psum(dw, axes) if axes else dw
    else:
      arg_shardings = (NamedSharding(mesh, batched), NamedSharding(mesh, P()))
      out_sharding = NamedSharding(mesh, batched)
      local = (out_shape[0] // size,) + tuple(out_shape[1:])

      def lower(a, b):
        return _call(kind, geo, local, a, b)
    return mesh, lower, out_sharding, arg_shardings

  rule = {"fwd": "b h w i, k l i o -> b p q o",
          "bwd_data": "b p q o, k l i o -> b h w i",
          "bwd_weights": "b h w i, b p q o -> k l i o"}[kind]
  op.def_partition(infer_sharding_from_operands=infer, partition=partition,
                   sharding_rule=rule)
  return op


_fwd_op = _partitioned("fwd")
_bwd_data_op = _partitioned("bwd_data")
_bwd_weights_op = _partitioned("bwd_weights")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv(geo: Geometry, x: jax.Array, w: jax.Array) -> jax.Array:
  """Forward convolution ``[B, H, W, Cin] x [KH, KW, Cin, Cout] -> [B, Ho, Wo, Cout]``.

  Output size per axis: ``(N + lo + hi - ((K - 1) d + 1)) // s + 1``. float32 only.
  """
  return _fwd_op(geo, out_spatial(geo, x.shape, w.shape), x, w)


def out_spatial(geo: Geometry, x_shape: Sequence[int], w_shape: Sequence[int]
                ) -> tuple[int, int, int, int]:
  """``[B, Ho, Wo, Cout]`` of :func:`conv` for ``x_shape`` and ``w_shape``."""
  sizes = []
  for ax in range(2):
    span = (w_shape[ax] - 1) * geo.dilation[ax] + 1
    n = x_shape[ax + 1] + sum(geo.pads[ax]) - span
    sizes.append(n // geo.strides[ax] + 1)
  return (x_shape[0], sizes[0], sizes[1], w_shape[3])


def conv_input_grad(geo: Geometry, g: jax.Array, w: jax.Array,
                    x_spatial: tuple[int, int]) -> jax.Array:
  """``dL/dx [B, H, W, Cin]`` of :func:`conv` from ``g = dL/dy [B, Ho, Wo, Cout]``."""
  return _input_grad(geo, x_spatial, g, w)


def conv_weight_grad(geo: Geometry, x: jax.Array, g: jax.Array,
                     kernel: tuple[int, int]) -> jax.Array:
  """``dL/dw [KH, KW, Cin, Cout]`` of :func:`conv` from ``x`` and ``g = dL/dy``."""
  return _weight_grad(geo, kernel, x, g)


def _conv_fwd(geo, x, w):
  return conv(geo, x, w), (x, w)


def _conv_bwd(geo, res, g):
  x, w = res
  return (_input_grad(geo, (x.shape[1], x.shape[2]), g, w),
          _weight_grad(geo, (w.shape[0], w.shape[1]), x, g))


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _input_grad(geo, x_spatial, g, w):
  shape = (g.shape[0], x_spatial[0], x_spatial[1], w.shape[2])
  return _bwd_data_op(geo, shape, g, w)


def _input_grad_fwd(geo, x_spatial, g, w):
  return _input_grad(geo, x_spatial, g, w), (g, w)


def _input_grad_bwd(geo, x_spatial, res, c):
  g, w = res  # c: cotangent of dx, shaped like x
  return conv(geo, c, w), _weight_grad(geo, (w.shape[0], w.shape[1]), c, g)


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _weight_grad(geo, kernel, x, g):
  shape = (kernel[0], kernel[1], x.shape[3], g.shape[3])
  return _bwd_weights_op(geo, shape, x, g)


def _weight_grad_fwd(geo, kernel, x, g):
  return _weight_grad(geo, kernel, x, g), (x, g)


def _weight_grad_bwd(geo, kernel, res, c):
  x, g = res  # c: cotangent of dw, shaped like w
  return _input_grad(geo, (x.shape[1], x.shape[2]), g, c), conv(geo, x, c)


_weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)


_RESULT = re.compile(r"= f32\[([0-9,]*)\]\S* custom-call\(")
_TARGET = re.compile(r'custom_call_target="(genrepair_onednn_conv_\w+)"')
_OPERANDS = re.compile(r"operand_layout_constraints=\{f32\[([0-9,]*)\]\S*, f32\[([0-9,]*)\]")


_ATTR = re.compile(r"(strides|pad_lo|dilation) = dense<\[?([-0-9, ]*)\]?>")


def _dims(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def _taps(size: int, out: int, kernel: int, stride: int, lo: int, dilation: int) -> int:
  """Kernel taps, summed over the outputs of one axis, that meet the input (not padding)."""
  return sum(1 for o in range(out) for k in range(kernel)
             if 0 <= o * stride - lo + k * dilation < size)


def hlo_flops(hlo_text: str) -> float:
  """FLOPs of the oneDNN convolution calls in an HLO module's text (XLA's
  ``cost_analysis()`` does not see inside custom calls).

  Each call of forward, input or weight gradient counts the convolution's multiply-adds
  twice: ``2 * B * Cout * Cin`` times, per spatial axis, the kernel taps summed over the
  outputs that meet the input rather than the zero padding (XLA's convention for its own
  convolutions, and :mod:`benchmarks.flops`'s).

  Raises:
    ValueError: a call whose attributes cannot be read.

  Args:
    hlo_text: e.g. ``jit(f).lower(...).compile().as_text()`` (one device's program).

  Returns:
    The sum over the calls (0.0 when there are none).
  """
  total = 0.0
  for line in hlo_text.splitlines():
    target, result, operands = (_TARGET.search(line), _RESULT.search(line),
                                _OPERANDS.search(line))
    if not (target and result and operands):
      continue
    target = target.group(1)
    out_d, a_d, b_d = (_dims(result.group(1)), _dims(operands.group(1)),
                       _dims(operands.group(2)))
    if target == TARGETS["fwd"]:  # x, w -> y
      y, kernel = out_d, b_d
    elif target == TARGETS["bwd_data"]:  # g, w -> dx
      y, kernel = a_d, b_d
    else:  # x, g -> dw
      y, kernel = b_d, out_d
    x = {TARGETS["fwd"]: a_d, TARGETS["bwd_data"]: out_d, TARGETS["bwd_weights"]: a_d}[target]
    attrs = {}
    for name, values in _ATTR.findall(line):
      v = [int(t) for t in values.replace(" ", "").split(",") if t]
      attrs[name] = v * 2 if len(v) == 1 else v  # a splat holds one value for both axes
    if set(attrs) != {"strides", "pad_lo", "dilation"}:
      raise ValueError(f"hlo_flops: cannot read the attributes of {target} in: {line[:300]}")
    taps = [_taps(x[1 + ax], y[1 + ax], kernel[ax], attrs["strides"][ax],
                  attrs["pad_lo"][ax], attrs["dilation"][ax]) for ax in range(2)]
    total += 2.0 * y[0] * y[3] * kernel[2] * taps[0] * taps[1]
  return total
