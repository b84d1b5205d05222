"""launch.py end to end in real subprocesses: the README command, SIGTERM + resume, sample,
and config errors."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from genrepair import checkpoint, train
from tests.conftest import CACHE_DIR, REPO, small_dcgan_config

MAIN = [sys.executable, "launch.py", "train", "--config", "experiments/dcgan_mnist.py"]
# The small-model overrides that tests/conftest.py's small_dcgan_config() applies.
SMALL = ["--config.model.variant=mnist-small", "--config.train.batch_size=16",
         "--config.train.log_every=1", "--config.train.sample_every=1000",
         "--config.train.checkpoint_every=1000",
         "--config.eval.num=100", "--config.eval.kid_subsets=2"]


def _env():
  env = dict(os.environ)
  env["GENREPAIR_JAX_CACHE"] = CACHE_DIR
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env  # XLA_FLAGS (8 devices) and GENREPAIR_TFDS_DIR come from conftest.


def _run(args, timeout=300):
  return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=timeout, check=False)


@pytest.fixture(scope="module")
def trained_workdir(tfds_dir, tmp_path_factory):
  """The README's main command, 2 steps, in a temp workdir."""
  del tfds_dir
  workdir = str(tmp_path_factory.mktemp("readme_run"))
  r = _run(MAIN + ["--workdir", workdir, "--config.train.num_steps=2"])
  assert r.returncode == 0, r.stdout + r.stderr
  return workdir, r.stdout


def test_readme_command_two_steps(trained_workdir):
  workdir, stdout = trained_workdir
  assert "step 2/2" in stdout and "d_loss" in stdout and "D(G(z))" in stdout
  assert "steps/s" in stdout and "ETA" in stdout
  for path in ("metrics.jsonl", "config.json", "samples/final.png", "checkpoints/2"):
    assert os.path.exists(os.path.join(workdir, path)), path
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "final.png")))
  assert grid.shape == (8 * 30 + 2, 8 * 30 + 2)  # 64 tiles of 28x28, 2-pixel padding


def test_sample_png_and_npz(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  png, npz, npz16 = (str(tmp_path / n) for n in ("grid.png", "s.npz", "s16.npz"))
  base = [sys.executable, "launch.py", "sample", "--workdir", workdir, "--seed", "0"]
  r = _run(base + ["--num", "64", "-o", png])
  assert r.returncode == 0, r.stderr
  assert Image.open(png).size == (242, 242)
  r = _run(base + ["--num", "64", "-o", npz])
  assert r.returncode == 0, r.stderr
  with np.load(npz) as f:
    images = f["images"]
  assert images.dtype == np.uint8 and images.shape == (64, 28, 28, 1)
  assert len(np.unique(images.reshape(64, -1), axis=0)) == 64  # one image per latent
  # The PNG grid holds exactly these samples.
  grid = np.asarray(Image.open(png))
  np.testing.assert_array_equal(grid[2:30, 32:60], images[1, :, :, 0])
  # Same seed, fewer samples: the same first images.
  r = _run(base + ["--num", "16", "-o", npz16])
  with np.load(npz16) as f:
    np.testing.assert_array_equal(f["images"], images[:16])
  r = _run(base + ["--num", "4", "-o", str(tmp_path / "x.gif2")])
  assert r.returncode != 0 and "must end in .png, .jpg or .npz" in r.stderr


def test_sigterm_checkpoints_and_resume_is_bit_exact(tfds_dir, tmp_path):
  del tfds_dir
  workdir = str(tmp_path / "run")
  cmd = MAIN + ["--workdir", workdir] + SMALL
  proc = subprocess.Popen(cmd + ["--config.train.num_steps=1000"], cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  out = []
  try:
    for line in proc.stdout:
      out.append(line)
      if "step 3/1000" in line:
        proc.send_signal(signal.SIGTERM)
        break
    rest, _ = proc.communicate(timeout=120)
    out.append(rest)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  text = "".join(out)
  assert proc.returncode == 0, text
  assert "Stopped by SIGTERM" in text
  steps = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
  assert len(steps) == 1 and steps[0] >= 3
  stop = steps[0]
  # Running the same command again resumes; run 2 more steps.
  r = _run(cmd + [f"--config.train.num_steps={stop + 2}"])
  assert r.returncode == 0, r.stdout + r.stderr
  assert "Resuming from" in r.stdout and f"step {stop + 2}/{stop + 2}" in r.stdout
  # An uninterrupted run in this process must give the identical state.
  ref_dir = str(tmp_path / "ref")
  train.run(small_dcgan_config(num_steps=stop + 2), ref_dir)
  config = small_dcgan_config(num_steps=stop + 2)
  abstract = train.build(config)[4]
  states = []
  for d in (workdir, ref_dir):
    ckpt = checkpoint.Checkpointer(os.path.join(d, "checkpoints"), async_save=False)
    step, state, data_state, _ = ckpt.restore_latest(abstract)
    ckpt.close()
    assert step == stop + 2
    states.append((jax.device_get(state), data_state))
  assert states[0][1] == states[1][1]
  for a, b in zip(jax.tree.leaves(states[0][0]), jax.tree.leaves(states[1][0])):
    np.testing.assert_array_equal(a, b)


def test_cpu_devices_flag_trains_data_parallel(tfds_dir, tmp_path):
  """``--cpu_devices 2`` (no XLA flag): a 2-device mesh whose run equals this process's."""
  del tfds_dir
  workdir = str(tmp_path / "two")
  env = _env()
  env.pop("XLA_FLAGS", None)
  r = subprocess.run(MAIN + ["--workdir", workdir, "--cpu_devices", "2",
                             "--config.train.num_steps=2"] + SMALL, cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 0, r.stdout + r.stderr
  ref_dir = str(tmp_path / "ref")  # 8 devices here (tests/conftest.py)
  train.run(small_dcgan_config(num_steps=2), ref_dir)
  abstract = train.build(small_dcgan_config(num_steps=2))[4]
  out = []
  for d in (workdir, ref_dir):
    ckpt = checkpoint.Checkpointer(os.path.join(d, "checkpoints"), async_save=False)
    step, state, _, meta = ckpt.restore_latest(abstract)
    ckpt.close()
    out.append((step, jax.device_get(state), meta))
  assert out[0][2]["mesh"] == {"data": 2} and out[1][2]["mesh"] == {"data": 8}
  assert out[0][0] == out[1][0] == 2
  # Equal up to float summation order. Adam's first steps are ~lr * sign(g), so a
  # gradient within rounding of 0 may move one weight differently: at most ~lr (2e-4).
  diffs = np.concatenate([np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
                          for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1]))])
  assert diffs.max() < 2e-4 and np.mean(diffs > 1e-5) < 1e-4, (diffs.max(), np.mean(diffs > 1e-5))
  # Another count where the XLA flag already sets one is an error, before any work.
  r = _run(MAIN + ["--workdir", str(tmp_path / "w"), "--cpu_devices", "2"], timeout=60)
  assert r.returncode != 0 and "xla_force_host_platform_device_count" in r.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("override,expected", [
    ("--config.train.batch_sise=64", 'Did you mean "batch_size"'),
    ("--config.trian.batch_size=64", 'Did you mean "train"'),
    ("--config.train.batch_size=abc", "--config.train.batch_size=abc"),
    ("--config.optim.g.lr=fast", "--config.optim.g.lr=fast"),
])
def test_config_typo_and_type_errors(override, expected, tmp_path):
  r = _run(MAIN + ["--workdir", str(tmp_path / "w"), override], timeout=60)
  assert r.returncode != 0
  assert expected in r.stderr and "FATAL Flags parsing error" in r.stderr
  assert not os.path.exists(tmp_path / "w")  # failed before anything was created


def test_usage_errors(tmp_path):
  r = _run([sys.executable, "launch.py", "trian", "--workdir", str(tmp_path)], timeout=60)
  assert r.returncode != 0 and "train|sample" in r.stderr
  r = _run([sys.executable, "launch.py", "sample", "--workdir", str(tmp_path / "none"),
            "-o", str(tmp_path / "g.png")], timeout=60)
  assert r.returncode != 0 and "No checkpoints in" in r.stderr


def test_many_cpu_devices_train_without_collective_deadlock(tmp_path):
  """Steps queued asynchronously on several CPU devices of one process used to deadlock.

  XLA:CPU runs a step's independent all-reduces concurrently, in an order that can differ
  between devices that share one thread pool; with many steps in flight both pool threads
  ended up waiting in different all-reduces and XLA aborted after 40 s ("Termination
  timeout for all reduce"): SRCNN ``runlocal`` on 8 devices, 200 steps, 3 of 3 runs
  before ``train.run`` waited for each step on multi-device CPU meshes; 2 devices: 1 of
  2 runs. (8 devices here: tests/conftest.py's XLA flag.)
  """
  workdir = str(tmp_path / "srcnn")
  r = _run([sys.executable, "launch.py", "train", "--config", "experiments/srcnn_x3.py:runlocal",
            "--workdir", workdir, "--config.train.num_steps=200",
            "--config.train.log_every=200", "--config.train.sample_every=0",
            "--config.train.checkpoint_every=0", "--config.eval.every=0"], timeout=400)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "Done: 200 steps." in r.stdout + r.stderr
