"""Scale by config: 2 real processes (4 CPU devices each, gloo) == 1 process with 8 devices;
restoring a checkpoint onto another mesh; the compiled step's collectives."""

import math
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from genrepair import checkpoint, sharding, train
from tests.conftest import CACHE_DIR, REPO, assert_states_close, small_dcgan_config

SMALL = ["--config.model.variant=mnist-small", "--config.train.batch_size=16",
         "--config.train.log_every=1", "--config.train.sample_every=1000",
         "--config.train.checkpoint_every=1000",
         "--config.eval.num=100", "--config.eval.kid_subsets=2", "--config.train.num_steps=3"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _restore_state(workdir, mesh=None, config=None):
  abstract = train.build(config or small_dcgan_config(num_steps=3), mesh)[4]
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    return ckpt.restore_latest(abstract)
  finally:
    ckpt.close()


def test_two_processes_equal_one_process(tfds_dir, tmp_path):
  del tfds_dir
  workdir = str(tmp_path / "mp")
  port = _free_port()
  env = dict(os.environ, GENREPAIR_JAX_CACHE=CACHE_DIR, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = []
  try:
    for pid in range(2):
      cmd = [sys.executable, "launch.py", "train", "--config", "experiments/dcgan_mnist.py",
             "--workdir", workdir, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={pid}"] + SMALL
      procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:  # Never leave processes (and their port) behind.
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert "step 3/3" in outs[0] and "step 3/3" not in outs[1]  # process 0 logs only
  ref = str(tmp_path / "single")
  train.run(small_dcgan_config(num_steps=3), ref)  # 1 process, 8 devices
  step_a, state_a, data_a, _ = _restore_state(workdir)
  step_b, state_b, data_b, _ = _restore_state(ref)
  assert step_a == step_b == 3 and data_a == data_b
  assert_states_close(jax.device_get(state_a), jax.device_get(state_b), lr=2e-4, steps=3)


def test_restore_onto_another_mesh(tfds_dir, tmp_path):
  del tfds_dir
  workdir = str(tmp_path / "run8")
  train.run(small_dcgan_config(num_steps=2), workdir)  # saved from 8 devices
  one = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  _, s8, _, _ = _restore_state(workdir)
  _, s1, _, _ = _restore_state(workdir, one)
  leaf8, leaf1 = jax.tree.leaves(s8)[3], jax.tree.leaves(s1)[3]
  assert len(leaf8.sharding.device_set) == 8 and leaf1.sharding.device_set == {jax.devices()[0]}
  for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # And back: continue training on 1 device from the 8-device checkpoint.
  r = train.run(small_dcgan_config(num_steps=3), workdir, mesh=one)
  assert r["step"] == 3


def test_compiled_step_reduces_gradients_and_stays_on_device(tfds_dir):
  del tfds_dir
  config = small_dcgan_config()
  task, mesh, init_rng, train_rng, abstract, state_sharding = train.build(config)
  repl = sharding.replicated(mesh)
  batch = {"image": jax.ShapeDtypeStruct((16, 28, 28, 1), np.uint8,
                                         sharding=sharding.batch_sharding(mesh))}
  compiled = jax.jit(task.train_step, donate_argnums=0,
                     out_shardings=(state_sharding, repl)).lower(
                         abstract, batch, train_rng).compile()
  text = compiled.as_text()
  reduces = [l for l in text.split("\n") if " all-reduce(" in l or " all-reduce-start(" in l]
  assert reduces
  # Every all-reduce spans the 8 devices of the 'data' axis (HLO spells the group in one
  # of these forms depending on the XLA version).
  for line in reduces:
    assert ("'axis_0'=8" in line or "{0,1,2,3,4,5,6,7}" in line or "[1,8]" in line), line
  # Gradients are reduced inside the step. DCGAN's models compute BatchNorm statistics
  # across the mesh, so each player's gradients are all-reduced as one flat vector of all
  # its parameters (sharding.data_parallel_value_and_grad): D's and G's parameter counts
  # appear as all-reduce buffers (G's are only reduced if its latents are sharded like
  # the batch; replicated latents would make every device run the generator on the whole
  # batch and need no reduction).
  count = lambda tree: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))
  for params in (abstract.d_params, abstract.g_params):
    assert any(f"f32[{count(params)}]" in l.split(" all-reduce")[0] for l in reduces), (
        count(params), reduces)
  # Nothing leaves the device inside the step: no host callbacks, infeed/outfeed,
  # send/recv.
  for op in ("xla_python_cpu_callback", "xla_ffi_python_cpu_callback", " infeed(",
             " outfeed(", " send(", " recv("):
    assert op not in text, op


def test_sigterm_to_one_process_stops_both_at_the_same_step(tfds_dir, tmp_path):
  """A preempted host: SIGTERM reaches process 1 only; both agree, checkpoint and exit 0."""
  del tfds_dir
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "mp_stop")
  port = _free_port()
  env = dict(os.environ, GENREPAIR_JAX_CACHE=CACHE_DIR, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONUNBUFFERED="1")
  long = [a for a in SMALL if "num_steps" not in a] + ["--config.train.num_steps=100000"]
  procs = []
  try:
    for pid in range(2):
      cmd = [sys.executable, "launch.py", "train", "--config", "experiments/dcgan_mnist.py",
             "--workdir", workdir, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={pid}"] + long
      procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
    lines = []
    deadline = time.time() + 240
    while time.time() < deadline:  # process 0 logs every step; wait for step 5
      line = procs[0].stdout.readline()
      lines.append(line)
      if "step 5/" in line or not line:
        break
    assert any("step 5/" in l for l in lines), "".join(lines)
    procs[1].send_signal(signal.SIGTERM)
    outs = ["".join(lines) + procs[0].communicate(timeout=120)[0],
            procs[1].communicate(timeout=120)[0]]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert "SIGTERM on another process" in outs[0], outs[0][-2000:]
  step, _, _, _ = _restore_state(workdir)
  assert 5 <= step < 100000
  assert f"Stopped by SIGTERM on another process at step {step}" in outs[0]
