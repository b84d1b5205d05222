"""genrepair.hostmem: a jitted step's large temporary buffer is reused, not faulted in anew.

The allocator settings are process-wide, so each case runs in a fresh Python process.
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
applied = hostmem.configure()
import jax, jax.numpy as jnp
from jax import lax

@jax.jit
def f(x):
  parts = lax.optimization_barrier([op(x * (i + 1.0)) for i, op in
                                    enumerate((jnp.sin, jnp.cos, jnp.tanh, jnp.exp))])
  return jnp.sum(parts[0] * parts[1] + parts[2] * parts[3])

x = jnp.linspace(0.0, 1.0, 6 * 2**20, dtype=jnp.float32)
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
for _ in range(10):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": applied, "faults": faults, "temp": temp}))
"""


def _run(mode):
  env = dict(os.environ, GENREPAIR_MALLOC=mode, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  env.pop("GLIBC_TUNABLES", None)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_bad_mode_is_refused_and_system_changes_nothing():
  with pytest.raises(ValueError, match="GENREPAIR_MALLOC='bogus'"):
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
