"""genrepair.hostmem: a jitted step's large temporary buffer is reused, not faulted in anew.

The allocator settings are process-wide, so each case runs in a fresh Python process.
With ``GENREPAIR_MALLOC=mimalloc`` that process restarts itself with mimalloc preloaded.
"""

import json
import os
import subprocess
import sys

import pytest

from genrepair import hostmem
from tests.conftest import REPO

# A jitted function whose temporaries (four 24 MB arrays materialised together, of which
# XLA keeps two: one 48 MiB block) are above glibc's largest mmap threshold (32 MiB) and
# fit a thread arena's 64 MiB heap. Prints the minor page faults per call over 10 calls
# after 10 warm-up calls.
_SCRIPT = r"""
import json, resource, sys
from genrepair import hostmem
applied = hostmem.configure(restart_argv=sys.orig_argv[1:])
import jax, jax.numpy as jnp
from jax import lax

@jax.jit
def f(x):
  parts = lax.optimization_barrier([op(x * (i + 1.0)) for i, op in
                                    enumerate((jnp.sin, jnp.cos, jnp.tanh, jnp.exp))])
  return jnp.sum(parts[0] * parts[1] + parts[2] * parts[3])

x = jnp.linspace(0.0, 1.0, int(sys.argv[1]) * 2**20, dtype=jnp.float32)
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
for _ in range(10):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": applied, "faults": faults, "temp": temp,
                  "allocator": hostmem.loaded_allocator()}))
"""


def _run(mode, mib_per_array=6):
  """Runs ``_SCRIPT`` (arrays of ``mib_per_array`` Mi floats) under ``mode``."""
  env = dict(os.environ, GENREPAIR_MALLOC=mode, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  for key in ("XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD", "MIMALLOC_PURGE_DELAY"):
    env.pop(key, None)
  out = subprocess.run([sys.executable, "-c", _SCRIPT, str(mib_per_array)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=180)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_bad_mode_is_refused_and_system_changes_nothing():
  with pytest.raises(ValueError, match="GENREPAIR_MALLOC='bogus'.*'mimalloc'"):
    hostmem.configure("bogus")
  assert hostmem.configure("system") is None
  # launch.py applies it first thing and stops on a bad value, naming the variable.
  env = dict(os.environ, GENREPAIR_MALLOC="bogus")
  out = subprocess.run([sys.executable, "launch.py", "train"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode != 0 and "launch.py: GENREPAIR_MALLOC='bogus'" in out.stderr


_GLIBC = hostmem._libc() is not None  # pylint: disable=protected-access


@pytest.mark.skipif(not _GLIBC, reason="glibc's malloc only")
def test_step_temporaries_are_reused_instead_of_faulted_in_every_call():
  system, reuse = _run("system"), _run("reuse")
  pages = system["temp"] // 4096
  assert system["temp"] == 48 * 2**20 == reuse["temp"]  # 12,288 pages of 4 KiB
  assert system["applied"] is None
  assert reuse["applied"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}
  # glibc's default: a fresh mmap per call, every page faulted in again.
  assert system["faults"] > 0.9 * pages, system
  # Kept and reused: ~1 fault per call, except that a call may find its thread's arena
  # without a free block yet (calls run on the client's threads, each with its own arena)
  # and fault one in: measured 1.0-1.3 faults per call, 1,230 or 2,459 in 2 of 8 runs.
  assert reuse["faults"] < 0.5 * pages, reuse


_MIMALLOC = hostmem.mimalloc_library() is not None


@pytest.mark.skipif(not (_GLIBC and _MIMALLOC), reason="needs glibc and the mimalloc extra")
def test_mimalloc_keeps_a_block_larger_than_a_glibc_thread_heap():
  # 96 MiB of temporaries, like DnCNN-S's 109 MiB step: above the 64 MiB heaps of glibc's
  # thread arenas, so even the 'reuse' settings map and fault it in on every call.
  reuse, mim, auto = _run("reuse", 12), _run("mimalloc", 12), _run("auto", 12)
  pages = reuse["temp"] // 4096
  assert reuse["temp"] == 96 * 2**20 == mim["temp"]
  assert reuse["allocator"] is None
  for run in (mim, auto):  # 'auto' (the default) takes mimalloc when it is installed
    assert run["allocator"] == "mimalloc"
    assert run["applied"] == {"allocator": "mimalloc", "library": hostmem.mimalloc_library(),
                              "MIMALLOC_PURGE_DELAY": "-1"}
  assert reuse["faults"] > 0.9 * pages, reuse
  # Measured: 0 faults per call.
  assert mim["faults"] < 0.01 * pages, mim
  assert auto["faults"] < 0.01 * pages, auto


def test_mimalloc_errors_name_the_setting(monkeypatch, tmp_path):
  missing = str(tmp_path / "libmimalloc.so")
  monkeypatch.setenv(hostmem.MIMALLOC_ENV, missing)
  with pytest.raises(ValueError, match=f"GENREPAIR_MIMALLOC='{missing}': no such file"):
    hostmem.configure("mimalloc", restart_argv=["-c", "pass"])
  env = dict(os.environ, GENREPAIR_MALLOC="mimalloc", GENREPAIR_MIMALLOC=missing)
  out = subprocess.run([sys.executable, "launch.py", "train"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode != 0 and f"launch.py: GENREPAIR_MIMALLOC='{missing}'" in out.stderr
  if hostmem.loaded_allocator() is None and _MIMALLOC:
    monkeypatch.delenv(hostmem.MIMALLOC_ENV)
    with pytest.raises(RuntimeError, match="must be loaded when the process starts"):
      hostmem.configure("mimalloc")  # in this process, without a restart: refused


@pytest.mark.skipif(not _MIMALLOC, reason="needs the mimalloc extra")
@pytest.mark.parametrize("mode", ["mimalloc", None])
def test_launch_restarts_itself_with_mimalloc(mode):
  env = dict(os.environ, GENREPAIR_MALLOC=mode or "")  # '' = unset: 'auto'
  env.pop("LD_PRELOAD", None)
  out = subprocess.run([sys.executable, "launch.py", "train"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  # It restarts, reports the allocator, then stops on the missing --config as usual.
  assert (f"launch.py: host malloc: mimalloc ({hostmem.mimalloc_library()},"
          " MIMALLOC_PURGE_DELAY=-1)") in out.stderr, out.stderr
  assert out.returncode != 0


def test_auto_without_mimalloc_takes_glibc_reuse():
  script = ("import json, sys; from genrepair import hostmem;"
            " hostmem.mimalloc_library = lambda: None;"
            " print(json.dumps([hostmem.configure('auto', sys.orig_argv[1:]),"
            " hostmem.loaded_allocator()]))")
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("LD_PRELOAD", None)
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  applied, allocator = json.loads(out.stdout)
  assert allocator is None
  if _GLIBC:
    assert applied == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}
