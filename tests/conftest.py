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
  for k, v in train.items():
    c.train[k] = v
  return c
