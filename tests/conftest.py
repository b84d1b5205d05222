"""Test set-up: 8 simulated CPU devices, a persistent compilation cache, shared data paths.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

CACHE_DIR = os.environ.get("GENREPAIR_JAX_CACHE",
                           os.path.expanduser("~/.cache/genrepair/jax-tests"))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A session-wide tfds data dir, also exported as GENREPAIR_TFDS_DIR for subprocesses."""
  path = str(tmp_path_factory.mktemp("tfds"))
  old = os.environ.get("GENREPAIR_TFDS_DIR")
  os.environ["GENREPAIR_TFDS_DIR"] = path
  yield path
  if old is None:
    os.environ.pop("GENREPAIR_TFDS_DIR", None)
  else:
    os.environ["GENREPAIR_TFDS_DIR"] = old


def small_dcgan_config(**train):
  """The DCGAN experiment config shrunk for tests (small model, few steps)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "dcgan_mnist", os.path.join(REPO, "experiments", "dcgan_mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.variant = "mnist-small"
  c.train.batch_size = 16
  c.train.log_every = 1
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.num, c.eval.kid_subsets = 100, 2  # FID-digits at the end: a quick one
  for k, v in train.items():
    c.train[k] = v
  return c


def assert_states_close(a, b, *, lr: float, steps: int, atol: float = 1e-5) -> None:
  """Asserts two train states (pytrees) agree to ``atol``, allowing Adam sign flips.

  Runs that differ only in the order of floating-point sums (1 vs 8 devices, 1 vs 2
  processes) agree to ~1e-7 in gradients. Adam's early updates are lr * m / (sqrt(v) +
  eps) ~ lr * sign(g), so a weight whose gradient is ~0 can take a step of opposite sign:
  a difference of up to 2 * lr per step. Such weights must be rare (at most 1 in 100,000)
  and within that bound; every other value must agree to ``atol``.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  total, flips = 0, 0
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape
    diff = np.abs(x - y)
    total += x.size
    flips += int(np.sum(diff > atol + 1e-5 * np.abs(y)))
    assert np.all(diff <= max(atol, 2 * lr * steps) + 1e-5 * np.abs(y)), float(diff.max())
  assert flips <= max(1, total // 100_000), (flips, total)
