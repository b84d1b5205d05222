"""Host (CPU) malloc for training processes: keep and reuse large blocks (mimalloc or glibc).

XLA:CPU allocates each execution's temporary buffer (all of a step's intermediates in one
block: 35, 37, 46 and 109 MiB per device for the CycleGAN, WGAN-GP, SRCNN and DnCNN-S
benchmark steps on 2 devices) with ``malloc`` and frees it when the execution ends. glibc's malloc
serves blocks above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives
them back with ``munmap``, so every step faults all of that memory in again and the
kernel zero-fills every page: 18,000 minor page faults and 30 ms of system time per
CycleGAN step, 55,700 and 110 ms per DnCNN-S step.

:func:`configure` sets, with ``mallopt(3)``, ``M_MMAP_MAX = 0`` (large blocks come from
the heap too) and ``M_TRIM_THRESHOLD = 2 GiB`` (the heap's free top is not given back):
a freed step buffer stays in the process and the next step reuses it. The cost: the
process keeps its peak heap (resident memory does not shrink after a large temporary
allocation). One limit: a thread's arena grows in heaps of at most 64 MiB, and glibc
still maps a larger block (DnCNN-S's 109 MiB) afresh each time.

Measured (AMD EPYC, 2 cores, 2 devices, ``benchmarks.step``'s JAX steps, one process per
setting, 2026-11-30; ms per step, system malloc -> these settings, three runs):
CycleGAN 135.1 -> 91.6 / 95.0 / 93.1, WGAN-GP 414.1 -> 384.7 / 398.4 / 396.3, SRCNN
63.9 -> 38.2 / 60.0 / 55.5 (its block fits a thread's heap in some runs: 3 faults per
step against 11,800-14,000), DCGAN 75.2 -> 70.5-73.0, DnCNN-S level (512.2 -> 514-521),
SNGAN, ESPCN and the VAE level. PyTorch's steps gain from it too when it runs in the
same process (``python -m benchmarks.step --malloc reuse|system``, README Performance:
SRCNN 85.5 -> 54.6-58.2 ms, WGAN-GP 458.7 -> 380-383). Tried: also one arena for all
threads (``M_ARENA_MAX = 1``, so that every block comes from the main heap, which has no
size limit): DnCNN-S 512 -> 491 ms, but CycleGAN 135 -> 148-165 and WGAN-GP 414 -> 451
ms (more user time in every step), not kept.

**mimalloc** (mode ``'mimalloc'``, and ``'auto'``'s choice when installed: ``pip install
'genrepair[mimalloc]'``, the ``cmeel-mimalloc`` wheel of Microsoft's allocator) has no
such limit: preloaded (``LD_PRELOAD``, so the process restarts itself once at start-up)
with ``MIMALLOC_PURGE_DELAY=-1`` (freed memory is never handed back), every step reuses
the previous step's blocks whatever their size. A jitted function with 96 MiB of
temporaries (``tests/test_hostmem.py``): 24,577 minor faults per call under glibc with or
without the settings above, 0 under mimalloc. JAX steps (2 devices, 2026-11-30, same
probe as above): DnCNN-S 518.5 -> 469.5 ms (55,800 -> 1 fault per step), CycleGAN 133.3
(glibc default) -> 90.6 ms. ``benchmarks.step`` with both frameworks under it (README
Performance): DnCNN-S 515.8 / 490.8 ms (JAX / PyTorch, glibc 'reuse') -> 453.3 / 472.7.
Debian's jemalloc told to keep its memory (``MALLOC_CONF=oversize_threshold:0,
dirty_decay_ms:-1,muzzy_decay_ms:-1``) did as well for DnCNN-S (460.5 ms) but is not on
PyPI, and CycleGAN was slower under it (105.7 ms).

Modes (``GENREPAIR_MALLOC``; ``launch.py`` and ``benchmarks/step.py`` call
:func:`configure` first thing): ``'auto'`` (default: mimalloc when installed, else
``'reuse'``), ``'mimalloc'`` (an error when not installed), ``'reuse'`` (the glibc
settings), ``'system'`` (leave malloc alone). Only glibc (Linux) has the ``'reuse'``
settings; elsewhere they do nothing. The same settings for any process, from the
environment: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``,
or ``LD_PRELOAD=.../libmimalloc.so MIMALLOC_PURGE_DELAY=-1``. The cost of both: the
process keeps its peak heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import sys
from collections.abc import Sequence

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes (mallopt takes an int)

ENV = "GENREPAIR_MALLOC"  # 'auto' (default), 'mimalloc', 'reuse' or 'system'
MODES = ("auto", "mimalloc", "reuse", "system")
MIMALLOC_ENV = "GENREPAIR_MIMALLOC"  # path of libmimalloc.so (default: the cmeel-mimalloc wheel's)
# mimalloc's own options (environment, read when it loads): never return freed memory to
# the system (purge), so a step's blocks stay committed for the next step. A value the
# user already set wins.
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
_REEXEC = "GENREPAIR_MALLOC_REEXEC"  # set in the restarted process (no restart loops)

_applied: dict[str, int] | None = None


def _libc():
  """glibc as a ``ctypes`` library, or None when this is not glibc."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  # glibc only
    libc.mallopt  # pylint: disable=pointless-statement
  except (OSError, AttributeError):
    return None
  return libc


def configure(mode: str | None = None, restart_argv: Sequence[str] | None = None
              ) -> dict[str, int | str] | None:
  """Applies the host malloc mode (module docstring); idempotent.

  Args:
    mode: ``'mimalloc'`` (mimalloc with :data:`MIMALLOC_OPTIONS`, see
      :func:`mimalloc_library`), ``'reuse'`` (the glibc settings above), ``'system'``
      (change nothing) or ``'auto'``: ``'mimalloc'`` when its library is installed and
      ``restart_argv`` is given (or it is loaded already), else ``'reuse'``. Default: the
      environment variable ``GENREPAIR_MALLOC``, else ``'auto'``.
    restart_argv: when mimalloc is wanted but not loaded, the process restarts itself
      (``os.execve``, same process id) as ``sys.executable *restart_argv`` with
      ``LD_PRELOAD`` set, so this must be called before anything worth keeping has run
      (``launch.py`` and ``benchmarks.step`` pass ``sys.orig_argv[1:]`` at start-up).
      None: no restart (see Raises).

  Returns:
    mimalloc: ``{'allocator': 'mimalloc', 'library': path, 'MIMALLOC_PURGE_DELAY':
    value}``. ``'reuse'``: the settings applied (``{'M_MMAP_MAX': 0, 'M_TRIM_THRESHOLD':
    2147483647}``), or None when not glibc. ``'system'``: None.

  Raises:
    ValueError: ``mode`` (or ``GENREPAIR_MALLOC``) is not one of :data:`MODES`;
      ``'mimalloc'`` and no library found (install hint); ``GENREPAIR_MIMALLOC`` names
      no file.
    RuntimeError: ``'mimalloc'`` is not loaded and ``restart_argv`` is None.
    OSError: glibc refused a setting (``mallopt`` returned 0), or the restarted process
      still has no mimalloc (``LD_PRELOAD`` ignored; ``'auto'`` then warns on stderr and
      takes ``'reuse'``).
  """
  global _applied
  mode = mode or os.environ.get(ENV) or "auto"
  if mode not in MODES:
    raise ValueError(f"{ENV}={mode!r}: expected one of {', '.join(map(repr, MODES))}"
                     " (genrepair/hostmem.py).")
  if mode == "system":
    return None
  if mode == "mimalloc":
    return _mimalloc(restart_argv)
  if mode == "auto" and (loaded_allocator() == "mimalloc" or (
      restart_argv is not None and mimalloc_library() is not None)):
    try:
      return _mimalloc(restart_argv)
    except OSError as e:  # LD_PRELOAD had no effect: glibc's settings instead
      print(f"genrepair.hostmem: {e} Using glibc's malloc ('reuse').", file=sys.stderr)
  if _applied is not None:
    return _applied
  libc = _libc()
  if libc is None:
    return None
  settings = {"M_MMAP_MAX": (M_MMAP_MAX, 0),
              "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, TRIM_THRESHOLD)}
  for name, (param, value) in settings.items():
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise OSError(f"mallopt({name}, {value}) failed; set {ENV}=system to skip.")
  _applied = {name: value for name, (_, value) in settings.items()}
  return _applied


def mimalloc_library() -> str | None:
  """Path of the mimalloc shared library: ``$GENREPAIR_MIMALLOC``, else the
  ``cmeel-mimalloc`` wheel's (``pip install 'genrepair[mimalloc]'``), else None.

  Raises:
    ValueError: ``GENREPAIR_MIMALLOC`` is set but names no file.
  """
  path = os.environ.get(MIMALLOC_ENV)
  if path:
    if not os.path.isfile(path):
      raise ValueError(f"{MIMALLOC_ENV}={path!r}: no such file (expected libmimalloc.so).")
    return path
  try:
    dist = importlib.metadata.distribution("cmeel-mimalloc")
  except importlib.metadata.PackageNotFoundError:
    return None
  names = sorted(str(f) for f in dist.files or ()
                 if os.path.basename(str(f)).startswith("libmimalloc.so"))
  for name in names:  # libmimalloc.so, .so.3, .so.3.4: the same library
    path = str(dist.locate_file(name))
    if os.path.isfile(path):
      return path
  return None


def loaded_allocator() -> str | None:
  """``'mimalloc'`` when this process has mimalloc mapped (``/proc/self/maps``), else None
  (glibc's malloc, or no ``/proc``)."""
  try:
    with open("/proc/self/maps", encoding="utf-8") as f:
      maps = f.read()
  except OSError:
    return None
  return "mimalloc" if "libmimalloc" in maps else None


def _mimalloc(restart_argv: Sequence[str] | None) -> dict[str, int | str]:
  """Mode ``'mimalloc'`` of :func:`configure`: checks it is loaded, else restarts with it."""
  if loaded_allocator() == "mimalloc":
    os.environ.pop(_REEXEC, None)  # children that restart may do so again
    lib = next((p for p in os.environ.get("LD_PRELOAD", "").split(":") if "mimalloc" in p), "")
    return {"allocator": "mimalloc", "library": lib,
            **{k: os.environ.get(k, "") for k in MIMALLOC_OPTIONS}}
  if os.environ.pop(_REEXEC, None):
    raise OSError(f"{ENV}=mimalloc: restarted with LD_PRELOAD="
                  f"{os.environ.get('LD_PRELOAD', '')!r}, but mimalloc is not loaded.")
  lib = mimalloc_library()
  if lib is None:
    raise ValueError(f"{ENV}=mimalloc: mimalloc not found; pip install 'genrepair[mimalloc]'"
                     f" (the cmeel-mimalloc wheel) or set {MIMALLOC_ENV}=/path/libmimalloc.so.")
  if restart_argv is None:
    raise RuntimeError(f"{ENV}=mimalloc: mimalloc must be loaded when the process starts:"
                       f" LD_PRELOAD={lib} (launch.py and benchmarks.step restart themselves"
                       " so).")
  env = dict(os.environ)
  env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
  for key, value in MIMALLOC_OPTIONS.items():
    env.setdefault(key, value)
  env[_REEXEC] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *restart_argv], env)
  raise AssertionError("unreachable")  # execve does not return
