"""Restoration task: the step's loss against an independent computation, the corruption's
statistics, a 2-step run of the DnCNN experiment with evaluation, the eval CLI."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import data, evaluate, sharding, tasks, train
from tests.conftest import CACHE_DIR, REPO


def _experiment(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tiny_dncnn(monkeypatch):
  """DnCNN experiment on the embedded photos, shrunk: depth 3, 16x16 patches, batch 8."""
  monkeypatch.delenv("GENREPAIR_DATA", raising=False)  # the offline default data
  c = _experiment("dncnn_sigma25", "runlocal")
  assert c.data.name == "natural_photos_gray" and c.eval.dataset == "natural_photos_gray"
  with c.unlocked():
    c.model.depth = 3
  c.data.patch_size = 16
  c.data.patches_per_image = 4
  c.train.batch_size = 8
  c.train.log_every = 1
  c.sample.num = 4
  return c


@pytest.mark.parametrize("border", [0, 3])
def test_step_loss_matches_independent_computation(tfds_dir, monkeypatch, border):
  del tfds_dir
  c = _tiny_dncnn(monkeypatch)
  with c.unlocked():
    c.train.loss_border = border  # the loss on the central 10x10 of the 16x16 patches
  mesh = sharding.make_mesh({"data": -1})
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  batch = next(train.make_train_iterator(c))
  assert batch["image"].shape == (8, 16, 16, 1) and batch["image"].dtype == np.uint8
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  new_state, m = jax.jit(task.train_step)(state, sharding.to_global(batch, mesh), train_rng)
  # Independently: the noise the step drew, the model's clean estimate, float64 MSE.
  clean = batch["image"].astype(np.float64) / 255.0
  noise = np.asarray(jax.random.normal(jax.random.fold_in(train_rng, 0), clean.shape))
  noisy = clean + 25.0 / 255.0 * noise
  params = jax.device_get(state.params)
  out, _ = task.model.apply({"params": params, "batch_stats": jax.device_get(state.batch_stats)},
                            jnp.asarray(noisy, jnp.float32), train=True, method="restore",
                            mutable=["batch_stats"])
  b, p = border, clean.shape[1]
  mse = np.mean((np.asarray(out, np.float64) - clean)[:, b:p - b, b:p - b] ** 2)
  np.testing.assert_allclose(m["l2"], mse, rtol=1e-4)
  np.testing.assert_allclose(m["loss"], mse, rtol=1e-4)
  psnr = np.mean([10 * np.log10(1 / np.mean(
      (np.clip(np.asarray(o, np.float64), 0, 1) - t)[b:p - b, b:p - b] ** 2))
                  for o, t in zip(out, clean)])
  np.testing.assert_allclose(m["psnr"], psnr, rtol=1e-4)
  np.testing.assert_allclose(m["lr"], 1e-3)
  assert int(new_state.step) == 1


def _two_steps(c, mesh, batches):
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  step = jax.jit(task.train_step, out_shardings=(state_sharding, sharding.replicated(mesh)))
  for b in batches:
    state, m = step(state, sharding.to_global(b, mesh), train_rng)
  return jax.device_get(state), jax.device_get(m), task


def test_batchnorm_step_same_on_1_and_8_devices_with_one_flat_gradient(tfds_dir, monkeypatch):
  """DnCNN (BatchNorm with an axis name) trains per device inside the data-parallel
  shard_map: statistics over the whole batch, one flat gradient all-reduce. Two steps
  equal a 1-device run (parameters and running statistics); the compiled 8-device step's
  only all-reduce wider than the statistics is the parameter vector."""
  del tfds_dir
  c = _tiny_dncnn(monkeypatch)
  with c.unlocked():
    c.model.depth = 4  # two BatchNorm layers
  it = train.make_train_iterator(c)
  batches = [next(it), next(it)]
  s1, m1, _ = _two_steps(c, sharding.make_mesh({"data": 1}, jax.devices()[:1]), batches)
  s8, m8, task = _two_steps(c, sharding.make_mesh({"data": -1}), batches)
  assert task.mesh.shape["data"] == 8 and task._mapped_model.axis_name == "data"
  assert set(s1.batch_stats) == {"bn1", "bn2"}
  for k in ("loss", "psnr", "grad_norm"):
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
  for tree in ("params", "batch_stats"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
                 getattr(s8, tree), getattr(s1, tree))
  # The running statistics moved from their initial (0, 1) by the batch statistics.
  assert np.abs(s1.batch_stats["bn1"]["mean"]).max() > 1e-4
  task, mesh, _, train_rng, abstract, _ = train.build(c, sharding.make_mesh({"data": -1}))
  hlo = jax.jit(task.train_step).lower(
      abstract, sharding.to_global(batches[0], mesh), train_rng).compile().as_text()
  sizes = []
  for line in hlo.splitlines():
    if " all-reduce(" in line or " all-reduce-start(" in line:
      sizes += [math.prod(int(d) for d in dims.split(",") if d)
                for dims in re.findall(r"f32\[([\d,]*)\]", line.split(" all-reduce")[0])]
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract.params))
  assert [s for s in sizes if s > 2 * 64] == [count], sizes


def test_gaussian_noise_statistics_in_the_task(monkeypatch):
  c = _tiny_dncnn(monkeypatch)
  task = train.build(c)[0]
  clean = jnp.full((4, 64, 64, 1), 0.5)
  noisy = task.degrade(jax.random.key(3), clean)
  np.testing.assert_allclose(np.std(np.asarray(noisy - clean)) * 255, 25.0, rtol=0.02)
  c.degradation.sigma, c.degradation.sigma_max = 0.0, 55.0  # blind: sigma ~ U[0, 55]
  task = train.build(c)[0]
  stds = np.std(np.asarray(task.degrade(jax.random.key(4), jnp.zeros((64, 32, 32, 1)))),
                axis=(1, 2, 3)) * 255
  assert 0 <= stds.min() < 10 and 45 < stds.max() <= 57
  np.testing.assert_allclose(stds.mean(), 27.5, atol=4)


def test_config_errors(monkeypatch):
  c = _tiny_dncnn(monkeypatch)
  c.degradation.kind = "gaussian"
  with pytest.raises(ValueError, match="config.degradation.kind='gaussian'"):
    train.build(c)
  c = _tiny_dncnn(monkeypatch)
  c.degradation.kind = "bicubic"
  with pytest.raises(ValueError, match="not a super-resolution model"):
    train.build(c)
  c = _tiny_dncnn(monkeypatch)
  c.losses.l2 = 0.0
  with pytest.raises(ValueError, match="selects no loss term"):
    train.build(c)
  c = _tiny_dncnn(monkeypatch)
  with c.unlocked():
    c.train.loss_border = 8  # 16x16 patches: nothing left
  with pytest.raises(ValueError, match="config.train.loss_border=8"):
    train.build(c)


def test_two_steps_with_eval_and_eval_cli(tfds_dir, tmp_path, monkeypatch):
  del tfds_dir
  c = _tiny_dncnn(monkeypatch)
  c.train.num_steps = 2
  c.eval.every = 1000  # > 0: evaluated at the end
  workdir = str(tmp_path / "dncnn")
  r = train.run(c, workdir)
  assert r["step"] == 2
  results = json.load(open(os.path.join(workdir, "eval", "step_0000002.json")))
  assert results["num_images"] == 2 and results["dataset"] == "natural_photos_gray"
  assert [x["name"] for x in results["per_image"]] == ["camera.png", "chelsea.png"]
  # sigma 25 on the 0-255 scale: 20log10(255/25) = 20.17 dB before clipping/rounding
  # (clipping at 0 and 1 removes a little error on saturated pixels).
  assert 20.0 < results["input_psnr"] < 21.0
  assert results["protocol"]["metrics"]["quantize"] is True
  assert results["protocol"]["degradation"]["sigma"] == 25.0
  assert math.isclose(r["metrics"]["eval/psnr"], results["psnr"])
  grid = os.path.join(workdir, "samples", "final.png")
  from PIL import Image  # pylint: disable=import-outside-toplevel
  assert Image.open(grid).size == (4 * 18 + 2, 3 * 18 + 2)  # 3 rows x 4 patches
  # The eval CLI on the same checkpoint gives the same numbers (fixed noise seeds).
  env = dict(os.environ, GENREPAIR_JAX_CACHE=CACHE_DIR, JAX_PLATFORMS="cpu")
  env.pop("GENREPAIR_DATA", None)
  out = subprocess.run([sys.executable, "launch.py", "eval", "--workdir", workdir],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "mean (2)" in out.stdout and "uint8" in out.stdout
  again = json.load(open(os.path.join(workdir, "eval", "natural_photos_gray_step_0000002.json")))
  assert again["psnr"] == results["psnr"]


def test_tiled_eval_equals_whole_images_with_one_program(tfds_dir, monkeypatch):
  """eval.tile: tiled evaluation gives the whole-image numbers with one compiled model for
  images of different shapes; automatic: whole images for few shapes, else tiles."""
  del tfds_dir
  from genrepair import evaluate  # pylint: disable=import-outside-toplevel
  c = _tiny_dncnn(monkeypatch)  # depth 3: receptive-field radius 3, tile overlap 6
  task, mesh, init_rng, _, _, state_sharding = train.build(c, sharding.make_mesh({"data": -1}))
  del mesh
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  # Perturb BatchNorm statistics so that the random network is far from the identity.
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.3, state.batch_stats))
  runs = {}
  for tile in (-1, 0, 24):
    c.eval.tile = tile
    runs[tile] = evaluate.evaluate(task, state, c)
  assert runs[0]["tiling"] == runs[-1]["tiling"]  # automatic: 2 shapes <= 4, whole images
  monkeypatch.setattr(evaluate, "WHOLE_MAX_SHAPES", 1)
  c.eval.tile = 0
  runs[0] = evaluate.evaluate(task, state, c)  # automatic: 2 shapes > 1, tiles
  whole, auto, small = runs[-1], runs[0], runs[24]
  images = data.eval_images(evaluate.eval_data_config(c), c.eval.split)
  assert len(whole["per_image"]) == 2 and len({im.shape for _, im in images}) == 2
  assert whole["tiling"] == {"tile": None, "overlap": None, "model_programs": 2}
  assert auto["tiling"]["model_programs"] == 1 and auto["tiling"]["overlap"] == 6
  assert small["tiling"] == {"tile": 24, "overlap": 6, "model_programs": 1}
  for r in (auto, small):
    for a, b in zip(whole["per_image"], r["per_image"]):
      assert abs(a["psnr"] - b["psnr"]) < 1e-3 and abs(a["ssim"] - b["ssim"]) < 1e-5, (a, b)
    assert whole["psnr"] != 0 and abs(whole["psnr"] - r["psnr"]) < 1e-3
  c.eval.tile = 10  # < 2 x overlap: refused before any image is read
  with pytest.raises(ValueError, match="eval.tile=10 .* at least 12"):
    evaluate.evaluate(task, state, c)


def test_whole_image_eval_on_every_device_equals_one_device(tfds_dir, monkeypatch):
  """Whole images go round-robin to the local devices (8 here): the same numbers, to the
  bit, as on one device."""
  del tfds_dir
  from genrepair import evaluate  # pylint: disable=import-outside-toplevel
  c = _tiny_dncnn(monkeypatch)
  task, _, init_rng, _, _, state_sharding = train.build(c, sharding.make_mesh({"data": -1}))
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.3, state.batch_stats))
  c.eval.tile = -1
  many = evaluate.evaluate(task, state, c)
  one = evaluate.evaluate(task, state, c, devices=jax.local_devices()[:1])
  assert len(jax.local_devices()) == 8 and len(many["per_image"]) == 2
  assert many["model_devices"] == 2 and one["model_devices"] == 1
  assert many["per_image"] == one["per_image"] and many["psnr"] == one["psnr"] != 0


def test_choose_tile_minimises_computed_pixels():
  from genrepair import evaluate  # pylint: disable=import-outside-toplevel
  # BSD68 (321x481 both ways), DnCNN-S overlap 34: 2 x 3 tiles need 2T - 34 >= 321 and
  # 3T - 68 >= 481, i.e. T >= 183; fewer tiles per image need T >= 321 > the short side.
  assert evaluate.choose_tile([(321, 481), (481, 321)], overlap=34) == 183
  # Brute force over the same candidates and the same tile layout.
  shapes = [(256, 256), (512, 512), (228, 344)]
  def cost(t):
    n = lambda length: 1 if length <= t else -(-(length - t) // (t - 16)) + 1
    return sum(n(h) * n(w) * t * t for h, w in shapes)
  want = min(range(228, 127, -1), key=cost)
  assert evaluate.choose_tile(shapes, overlap=16) == want
  # Alignment (U-Nets): tiles are multiples of 8; an image below the minimum tile keeps it.
  assert evaluate.choose_tile([(500, 500)], overlap=40, align=8) % 8 == 0
  assert evaluate.choose_tile([(60, 90)], overlap=16) == 128
  with pytest.raises(ValueError, match="at least one image shape"):
    evaluate.choose_tile([], overlap=4)


def _data_root():
  root = os.environ.get("GENREPAIR_DATA", "")
  if not os.path.isfile(os.path.join(root, "weights", "dncnn", "sigma25.mat")):
    pytest.skip("needs $GENREPAIR_DATA/weights/dncnn/sigma25.mat and denoise/set12")
  return root


def test_import_official_dncnn_and_eval_cli_on_set12(tfds_dir, tmp_path):
  del tfds_dir
  root = _data_root()
  weights = os.path.join(root, "weights", "dncnn", "sigma25.mat")
  env = dict(os.environ, GENREPAIR_JAX_CACHE=CACHE_DIR, JAX_PLATFORMS="cpu")
  workdir = str(tmp_path / "official")
  run = lambda *a: subprocess.run([sys.executable, "launch.py", *a], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300)
  r = run("import", "--config", "experiments/dncnn_sigma25.py:official", "--weights", weights,
          "--workdir", workdir)
  assert r.returncode == 0, r.stderr
  assert "imported 555,137 parameters" in r.stdout
  r = run("eval", "--workdir", workdir, "--dataset", "set12")
  assert r.returncode == 0, r.stderr
  results = json.load(open(os.path.join(workdir, "eval", "set12_step_0000000.json")))
  # Published DnCNN-S sigma 25 on Set12: 30.44 dB. Our noise draws are not MATLAB's; the
  # importer tests measured 30.41-30.42 over 4 seeds (see tests/test_weights.py).
  assert results["num_images"] == 12
  assert abs(results["psnr"] - 30.44) <= 0.035, results["psnr"]
  # Importing twice into the same run directory is refused (nothing is overwritten).
  r = run("import", "--config", "experiments/dncnn_sigma25.py:official", "--weights", weights,
          "--workdir", workdir)
  assert r.returncode != 0 and "already holds checkpoints" in r.stderr


def test_import_refuses_mismatched_model(tmp_path, monkeypatch):
  root = _data_root()
  from genrepair import weights  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("GENREPAIR_DATA", root)
  c = _experiment("dncnn_sigma25")  # variant 'S' (BatchNorm), not the merged release
  with pytest.raises(ValueError, match="parameter shapes do not match"):
    weights.import_weights(c, os.path.join(root, "weights", "dncnn", "sigma25.mat"),
                           str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints" / "0")


def test_official_srcnn_through_import_and_generic_eval(tfds_dir, tmp_path, monkeypatch):
  """The generic path (import -> checkpoint -> load_run -> evaluate) reproduces SRCNN's
  published Set5/Set14 x4 numbers and the bicubic baselines (SRCNN demo_SR.m protocol)."""
  del tfds_dir
  root = os.environ.get("GENREPAIR_DATA", "")
  weights_dir = os.path.join(root, "weights", "srcnn_955_x4")
  if not (os.path.isdir(weights_dir) and os.path.isdir(os.path.join(root, "sr", "set14"))):
    pytest.skip("needs $GENREPAIR_DATA/weights/srcnn_955_x4 and sr/set5, sr/set14")
  from genrepair import evaluate, sampling, weights  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("GENREPAIR_DATA", root)
  workdir = str(tmp_path / "srcnn")
  weights.import_weights(_experiment("srcnn_x3", "official_x4"), weights_dir, workdir)
  task, state, step, config = sampling.load_run(workdir)
  assert step == 0
  for dataset, published, bicubic in (("set5", 30.48, 28.42), ("set14", 27.50, 26.00)):
    config.eval.dataset = dataset
    r = evaluate.evaluate(task, state, config)
    assert abs(r["psnr"] - published) <= 0.01, (dataset, r["psnr"])
    assert abs(r["input_psnr"] - bicubic) <= 0.01, (dataset, r["input_psnr"])


def test_eval_at_another_noise_level_leaves_the_run_config(monkeypatch):
  """evaluate.with_degradation: a blind DnCNN-B config evaluated at a fixed sigma 15; the
  degradation really changes (the noise drawn has std 15/255), the given config does not."""
  monkeypatch.delenv("GENREPAIR_DATA", raising=False)
  c = _experiment("dncnn_sigma25", "runlocal")
  c.degradation.sigma, c.degradation.sigma_max = 0.0, 55.0  # blind, as DnCNN-B
  task = tasks.get("restoration")(c)
  task15, c15, tag = evaluate.with_degradation(task, c, sigma=15)
  assert tag == "sigma15" and (c15.degradation.sigma, c15.degradation.sigma_max) == (15.0, 0.0)
  assert (c.degradation.sigma, c.degradation.sigma_max) == (0.0, 55.0)
  clean = jnp.full((4, 64, 64, 1), 0.5)
  noise = np.asarray(task15.degrade(jax.random.key(0), clean)) - 0.5
  np.testing.assert_allclose(noise.std() * 255, 15.0, rtol=0.02)
  assert evaluate.with_degradation(task, c) == (task, c, "")
  with pytest.raises(ValueError, match="--density applies to salt_and_pepper"):
    evaluate.with_degradation(task, c, density=0.1)
  with pytest.raises(ValueError, match="--sigma must be >= 0"):
    evaluate.with_degradation(task, c, sigma=-1)
