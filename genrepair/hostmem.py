"""Host (CPU) malloc settings for training processes: keep and reuse large blocks.

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

``launch.py`` and ``benchmarks/step.py`` call :func:`configure` at start-up;
``GENREPAIR_MALLOC=system`` leaves malloc alone. Only glibc (Linux) has these settings;
elsewhere :func:`configure` does nothing. The same settings for any process, from the
environment: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes (mallopt takes an int)

ENV = "GENREPAIR_MALLOC"  # 'reuse' (default) or 'system'

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


def configure(mode: str | None = None) -> dict[str, int] | None:
  """Makes glibc's malloc keep and reuse large blocks (module docstring); idempotent.

  Args:
    mode: ``'reuse'`` (the settings above) or ``'system'`` (change nothing); default the
      environment variable ``GENREPAIR_MALLOC``, else ``'reuse'``.

  Returns:
    The settings applied (``{'M_MMAP_MAX': 0, 'M_TRIM_THRESHOLD': 2147483647}``), or
    None when nothing was changed (``'system'``, or not glibc).

  Raises:
    ValueError: ``mode`` (or ``GENREPAIR_MALLOC``) is neither ``'reuse'`` nor ``'system'``.
    OSError: glibc refused a setting (``mallopt`` returned 0).
  """
  global _applied
  mode = mode or os.environ.get(ENV) or "reuse"
  if mode not in ("reuse", "system"):
    raise ValueError(f"{ENV}={mode!r}: expected 'reuse' (keep and reuse large malloc blocks)"
                     " or 'system' (leave malloc as it is).")
  if mode == "system":
    return None
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
