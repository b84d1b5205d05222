"""Restoring image files (genrepair/restore.py, launch.py restore/export): tiled == whole-image
processing, one compile for all images at least a tile large, export round trip, input/output
rules, the CLI with a shipped model."""

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from genrepair import (baselines, checkpoint, deconvolution, degradations, pretrained, restore,
                       sharding, tasks, train)
from tests.conftest import CACHE_DIR, REPO


def _experiment(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _config(model: dict, **degradation) -> ml_collections.ConfigDict:
  """The DnCNN experiment's config with another model and degradation."""
  c = _experiment("dncnn_sigma25")
  with c.unlocked():
    c.model = ml_collections.ConfigDict(model)
    c.degradation = ml_collections.ConfigDict(dict(
        kind="gaussian_noise", sigma=25.0, sigma_max=0.0, density=0.0, scale=1,
        **degradation))
    c.data.patch_size = 48
  return c


def _model(config, seed=0):
  """Task and a random state; BatchNorm statistics randomised so eval mode matters."""
  task = tasks.get("restoration")(config)
  state = task.init(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  bs = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.asarray(rng.uniform(0.5, 2.0, a.shape) if "var" in str(p[-1])
                               else rng.normal(0, 0.1, a.shape), jnp.float32),
      state.batch_stats)
  return task, state.replace(batch_stats=bs)


DNCNN = dict(name="dncnn", variant="S", channels=1, depth=4, features=8)   # radius 4
ESPCN = dict(name="espcn", variant="x3", channels=1, scale=3, features=(8, 4))  # radius 4
UNET = dict(name="unet", variant="inpaint", channels=1, features=4, depth=2)  # radius 29


@pytest.fixture(scope="module")
def dncnn():
  return _model(_config(DNCNN))


def _whole(task, state, x, mask=None):
  """Reference: the model on the whole image. x: [H, W, C] -> [sH, sW, C]."""
  inp = task.model_input(jnp.asarray(x[None]), None if mask is None else jnp.asarray(mask[None]))
  fn = jax.jit(lambda s, x: task.apply(s.params, s.batch_stats, x, train=False)[0][0])
  return np.asarray(fn(state, inp))


def _support_radius(task, state, size):
  """Largest Chebyshev distance of an input pixel the centre output pixel depends on."""
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, size, size, task.in_channels)),
                  jnp.float32)
  c = size // 2
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  g = jax.jit(jax.grad(lambda x: task.model.apply(variables, x, train=False,
                                                   method="restore")[0, c, c].sum()))(x)
  ys, xs = np.nonzero(np.abs(np.asarray(g[0])).sum(-1))
  return int(max(np.abs(ys - c).max(), np.abs(xs - c).max()))


# ----------------------------------------------------------------------------- tiling


def test_tiled_equals_whole_denoiser_one_compile(dncnn):
  task, state = dncnn
  runner = restore.TiledRunner(task, state, tile=32)
  assert (runner.radius, runner.overlap) == (4, 8)  # default overlap = 2 x radius
  assert _support_radius(task, state, 33) == 4       # the radius is the model's true one
  rng = np.random.default_rng(1)
  for h, w in ((75, 100), (50, 61)):
    x = rng.uniform(size=(h, w, 1)).astype(np.float32)
    out = runner(x)
    assert out.shape == (h, w, 1) and runner.last_num_tiles > 4
    np.testing.assert_allclose(out, _whole(task, state, x), atol=1e-5, rtol=0)
  assert runner.traces == 1 and runner._fn._cache_size() == 1  # one program, 2 sizes
  # Several tiles per call (the last call padded with zero tiles): the same result.
  batched = restore.TiledRunner(task, state, tile=32, batch=4)
  np.testing.assert_allclose(batched(x), out, atol=1e-5, rtol=0)
  assert batched.last_num_tiles % 4 != 0
  # Smaller than a tile along an axis: that axis is processed whole (exact; a new program).
  small = rng.uniform(size=(20, 70, 1)).astype(np.float32)
  out = runner(small)
  assert out.shape == (20, 70, 1) and runner.last_tile_hw == (20, 32)
  np.testing.assert_allclose(out, _whole(task, state, small), atol=1e-5, rtol=0)
  assert runner.traces == 2
  # A too-small overlap is allowed but warned about (seams).
  with pytest.warns(UserWarning, match="seams"):
    restore.TiledRunner(task, state, tile=32, overlap=4)
  with pytest.raises(ValueError, match="overlap"):
    restore.TiledRunner(task, state, tile=16, overlap=16)


def test_tiled_equals_whole_sr_lr_input_and_rgb_ycbcr():
  task, state = _model(_sr_config())
  runner = restore.TiledRunner(task, state, tile=16)
  assert (runner.radius, runner.overlap, runner.scale) == (4, 8, 3)
  x = np.random.default_rng(2).uniform(size=(40, 50, 1)).astype(np.float32)
  out = runner(x)
  assert out.shape == (120, 150, 1) and runner.last_num_tiles == 4 * 6
  np.testing.assert_allclose(out, _whole(task, state, x), atol=1e-5, rtol=0)
  # RGB image, 1-channel SR model: Y by the model, Cb/Cr MATLAB bicubic, back to RGB.
  rgb = np.random.default_rng(3).uniform(size=(40, 50, 3)).astype(np.float32)
  sr = restore.restore_image(runner, rgb)
  assert sr.shape == (120, 150, 3)
  ycc = restore.rgb_to_ycbcr(rgb)
  np.testing.assert_allclose(restore.rgb_to_ycbcr(sr)[..., :1], runner(ycc[..., :1]), atol=1e-5)
  np.testing.assert_allclose(restore.rgb_to_ycbcr(sr)[..., 1:], np.asarray(
      degradations.imresize(jnp.asarray(ycc[..., 1:]), scale=3.0)), atol=1e-5)
  # MATLAB rgb2ycbcr: white -> Y 235, Cb = Cr = 128.
  np.testing.assert_allclose(restore.rgb_to_ycbcr(np.ones((1, 3))) * 255, [[235, 128, 128]],
                             atol=1e-3)
  assert runner.traces == 1


def _sr_config():
  c = _config(ESPCN)
  c.degradation.kind, c.degradation.scale = "bicubic", 3
  return c


def _inpaint_config():
  c = _config(UNET)
  with c.unlocked():
    c.degradation.kind = "inpaint"
    c.degradation.masks = "strokes"
  return c


def test_tiled_equals_whole_inpainting_unet():
  task, state = _model(_inpaint_config())
  assert task.in_channels == 2
  runner = restore.TiledRunner(task, state, tile=80)
  assert (runner.radius, runner.align, runner.overlap) == (29, 4, 60)
  assert 16 < _support_radius(task, state, 64) <= 29
  rng = np.random.default_rng(4)
  x = rng.uniform(size=(100, 130, 1)).astype(np.float32)  # 130: not a multiple of 4
  mask = (rng.uniform(size=(100, 130, 1)) < 0.3).astype(np.float32)
  out = restore.restore_image(runner, x, mask)
  assert out.shape == (100, 130, 1) and runner.last_num_tiles == 2 * 4
  np.testing.assert_allclose(out, _whole(task, state, x, mask), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(out[mask == 0], x[mask == 0])  # known pixels kept
  with pytest.raises(ValueError, match="multiples of 4"):
    restore.TiledRunner(task, state, tile=80, overlap=30)


def _deblur_config():
  c = _config(dict(name="unet", variant="deblur", channels=1, features=4, depth=2))
  with c.unlocked():
    c.degradation.kind, c.degradation.sigma = "blur", 2.55
    c.degradation.kernels = "gaussian"
    c.degradation.deconvolution = "wiener"
  return c


def test_non_blind_deblurring_wiener_on_the_whole_image_then_tiles(tmp_path):
  task, state = _model(_deblur_config())
  assert task.in_channels == 2
  rng = np.random.default_rng(5)
  x = rng.uniform(size=(90, 110, 1)).astype(np.float32)
  kernel = degradations.gaussian_kernel(1.6)
  runner = restore.TiledRunner(task, state, tile=64)
  out = restore.restore_image(runner, x, kernel=kernel)
  assert runner.last_num_tiles > 1
  # Reference: the Wiener estimate of the whole image (not per tile), then the whole model.
  inp = jnp.concatenate([deconvolution.wiener(jnp.asarray(x[None]), kernel[None], sigma=2.55),
                         jnp.asarray(x[None])], -1)
  whole = task.apply(state.params, state.batch_stats, inp, train=False)[0][0]
  np.testing.assert_allclose(out, np.asarray(whole), atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="needs --kernel"):
    restore.restore_image(runner, x)
  with pytest.raises(ValueError, match="larger than"):
    restore.restore_image(runner, x[:8, :8], kernel=kernel)
  # Kernel files: .npy and a gray image, both normalised to sum 1; bad ones refused.
  np.save(tmp_path / "k.npy", kernel * 7.0)
  np.testing.assert_allclose(restore.read_kernel(str(tmp_path / "k.npy")), kernel, rtol=1e-6)
  img = np.zeros((5, 7), np.uint8)
  img[2, 1:6] = 255
  Image.fromarray(img).save(tmp_path / "k.png")
  want = np.zeros((5, 7), np.float32)
  want[2, 1:6] = 0.2
  np.testing.assert_allclose(restore.read_kernel(str(tmp_path / "k.png")), want, rtol=1e-6)
  np.save(tmp_path / "neg.npy", -kernel)
  with pytest.raises(ValueError, match="neg.npy.*>= 0"):
    restore.read_kernel(str(tmp_path / "neg.npy"))
  with pytest.raises(FileNotFoundError, match="nope.npy"):
    restore.read_kernel(str(tmp_path / "nope.npy"))
  # The file path end to end.
  Image.fromarray((x[..., 0] * 255).astype(np.uint8)).save(tmp_path / "in.png")
  msg = restore.restore_file(task, state, str(tmp_path / "in.png"), str(tmp_path / "out.png"),
                             kernel_path=str(tmp_path / "k.npy"), tile=64)
  assert "deblurring" in msg and os.path.isfile(tmp_path / "out.png")


# ----------------------------------------------------------------------------- export


def test_export_round_trip_bit_identical_and_shape_errors(dncnn, tmp_path):
  task, state = dncnn
  path = str(tmp_path / "m.npz")
  digest = restore.export(task.config, state, path, step=7)
  assert digest == restore.sha256(path) and len(digest) == 64
  with np.load(path, allow_pickle=False) as f:
    keys = set(f.files)
    assert f["__config__"].dtype == np.uint8
    assert "params/conv0/kernel" in keys and "batch_stats/bn1/mean" in keys
  task2, state2 = restore.load_exported(path)
  assert task2.config.model.to_dict() == task.config.model.to_dict()
  for a, b in zip(jax.tree.leaves((state.params, state.batch_stats)),
                  jax.tree.leaves((state2.params, state2.batch_stats))):
    np.testing.assert_array_equal(a, b)
  x = np.random.default_rng(5).uniform(size=(70, 45, 1)).astype(np.float32)
  np.testing.assert_array_equal(restore.TiledRunner(task, state, tile=32)(x),
                                restore.TiledRunner(task2, state2, tile=32)(x))
  with pytest.raises(FileExistsError, match="--overwrite"):
    restore.export(task.config, state, path)
  # A wrong shape names the key and both shapes; a missing array is named.
  with np.load(path, allow_pickle=False) as f:
    arrays = dict(f)
  arrays["params/conv0/kernel"] = np.zeros((3, 3, 1, 9), np.float32)
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=r"params/conv0/kernel has shape \(3, 3, 1, 9\).*"
                                       r"\(3, 3, 1, 8\)"):
    restore.load_exported(str(tmp_path / "bad.npz"))
  del arrays["params/conv0/kernel"]
  np.savez(tmp_path / "missing.npz", **arrays)
  with pytest.raises(ValueError, match="lacks 'params/conv0/kernel'"):
    restore.load_exported(str(tmp_path / "missing.npz"))


def _env():
  env = dict(os.environ)
  env["GENREPAIR_JAX_CACHE"] = CACHE_DIR
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _run(args, timeout=300):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_export_cli_from_a_run_matches_the_checkpoint(dncnn, tmp_path):
  task, state = dncnn
  workdir = str(tmp_path / "run")
  mesh = sharding.make_mesh({"data": -1})
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  ckpt.save(3, state, {}, train.make_meta(task.config, task, 3, mesh))
  ckpt.close()
  out = str(tmp_path / "exported.npz")
  r = _run(["export", "--workdir", workdir, "-o", out])
  assert r.returncode == 0, r.stderr
  assert f"sha256 {restore.sha256(out)}" in r.stdout and "step 3" in r.stdout
  task_w, state_w, source = restore.load_model(workdir=workdir)
  task_e, state_e, _ = restore.load_model(weights=out)
  assert source.endswith("step 3")
  x = np.random.default_rng(6).uniform(size=(40, 36, 1)).astype(np.float32)
  np.testing.assert_array_equal(restore.TiledRunner(task_w, state_w, tile=32)(x),
                                restore.TiledRunner(task_e, state_e, tile=32)(x))
  with pytest.raises(ValueError, match="exactly one model source of"):
    restore.load_model(workdir=workdir, weights=out)


# ----------------------------------------------------------------------------- files


def _png16_rgb(path, arr):
  """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
  h, w, _ = arr.shape
  raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_file_rules_and_errors(dncnn, tmp_path):
  task, state = dncnn
  rng = np.random.default_rng(7)
  gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
  src, out = str(tmp_path / "in.png"), str(tmp_path / "out.png")
  Image.fromarray(gray).save(src)
  kw = dict(tile=32)
  restore.restore_file(task, state, src, out, **kw)
  expected = restore.TiledRunner(task, state, **kw)(gray[..., None] / np.float32(255))
  written = np.asarray(Image.open(out))
  np.testing.assert_array_equal(written, np.round(np.clip(expected[..., 0], 0, 1) * 255))
  # Existing output: refused (unchanged) without overwrite, replaced with it.
  with pytest.raises(FileExistsError, match="--overwrite"):
    restore.restore_file(task, state, src, out, **kw)
  Image.fromarray(gray).save(src)  # an opaque alpha channel is dropped: same result
  la = str(tmp_path / "la.png")
  Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA").save(la)
  restore.restore_file(task, state, la, out, overwrite=True, **kw)
  np.testing.assert_array_equal(np.asarray(Image.open(out)), written)
  # Transparent pixels, missing file, unknown output extension.
  rgba = np.dstack([np.repeat(gray[..., None], 3, -1), np.full_like(gray, 255)])
  rgba[0, 0, 3] = 0
  Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
  with pytest.raises(ValueError, match="transparent"):
    restore.restore_file(task, state, str(tmp_path / "rgba.png"), str(tmp_path / "o1.png"))
  with pytest.raises(FileNotFoundError, match="nope.png"):
    restore.restore_file(task, state, str(tmp_path / "nope.png"), str(tmp_path / "o2.png"))
  with pytest.raises(ValueError, match="extension"):
    restore.restore_file(task, state, src, str(tmp_path / "o.xyz"))
  # RGB image to a gray denoiser: named file, grayscale suggested.
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
  with pytest.raises(ValueError, match=r"rgb.png is an RGB image.*grayscale"):
    restore.restore_file(task, state, str(tmp_path / "rgb.png"), str(tmp_path / "o3.png"))
  # A mask for a model that takes none.
  with pytest.raises(ValueError, match="--mask is for inpainting"):
    restore.restore_file(task, state, src, str(tmp_path / "o4.png"), mask_path=src)
  np.save(tmp_path / "k.npy", np.ones((3, 3)))  # a kernel for a model that takes none
  with pytest.raises(ValueError, match="--kernel is for non-blind deblurring"):
    restore.restore_file(task, state, src, str(tmp_path / "o4.png"),
                         kernel_path=str(tmp_path / "k.npy"))
  assert not any(os.path.exists(tmp_path / f"o{i}.png") for i in range(1, 5))


def test_16bit_gray_in_16bit_out_and_16bit_colour_refused(dncnn, tmp_path):
  task, state = dncnn
  v = np.random.default_rng(8).integers(0, 65536, (36, 44), dtype=np.uint16)
  src = str(tmp_path / "in16.png")
  Image.fromarray(v).save(src)
  out = str(tmp_path / "out16.png")
  restore.restore_file(task, state, src, out, tile=32)
  with Image.open(out) as im:
    assert im.mode == "I;16"
    got = np.asarray(im)
  expected = restore.TiledRunner(task, state, tile=32)(v[..., None] / np.float32(65535))
  # The writer scales in float64 (restore.write_output); float32 would round some
  # values just below k + 0.5 up.
  np.testing.assert_array_equal(
      got, np.round(np.clip(expected[..., 0].astype(np.float64), 0, 1) * 65535))
  assert len(np.unique(got)) > 256  # really 16-bit, not 8 bits scaled
  with pytest.raises(ValueError, match="16-bit.*png or .tif"):
    restore.restore_file(task, state, src, str(tmp_path / "out.jpg"))
  _png16_rgb(str(tmp_path / "rgb16.png"), np.zeros((8, 8, 3), np.uint16))
  with pytest.raises(ValueError, match="16-bit colour PNG"):
    restore.restore_file(task, state, str(tmp_path / "rgb16.png"), str(tmp_path / "o.png"))


def test_inpainting_mask_rules(tmp_path):
  task, state = _model(_inpaint_config())
  img = np.random.default_rng(9).integers(0, 256, (30, 40), dtype=np.uint8)
  src, out = str(tmp_path / "in.png"), str(tmp_path / "out.png")
  Image.fromarray(img).save(src)
  hole = np.zeros((30, 40), np.uint8)
  hole[10:20, 5:15] = 255
  Image.fromarray(hole).save(tmp_path / "mask.png")
  Image.fromarray(hole[:20]).save(tmp_path / "small_mask.png")
  with pytest.raises(ValueError, match="needs --mask"):
    restore.restore_file(task, state, src, out, tile=64)
  with pytest.raises(ValueError, match=r"small_mask.png is 40x20.*in.png is 40x30"):
    restore.restore_file(task, state, src, out, mask_path=str(tmp_path / "small_mask.png"),
                         tile=64)
  restore.restore_file(task, state, src, out, mask_path=str(tmp_path / "mask.png"), tile=64)
  got = np.asarray(Image.open(out))
  np.testing.assert_array_equal(got[hole == 0], img[hole == 0])  # known pixels kept


# ----------------------------------------------------------------------------- CLI


def test_shipped_models_are_small_and_load():
  total = 0
  for name, (file, _) in pretrained.MODELS.items():
    path = pretrained.path(name)
    assert os.path.basename(path) == file
    total += os.path.getsize(path)
    task, _ = restore.load_exported(path)
    assert task.channels == 1
  assert total < 6_500_000
  task, _ = restore.load_exported(pretrained.path("espcn_x3"))
  assert (task.kind, task.output_scale) == ("bicubic", 3)
  task, _ = restore.load_exported(pretrained.path("dncnn_s25_gray"))
  assert (task.kind, task.config.degradation.sigma) == ("gaussian_noise", 25.0)
  with pytest.raises(ValueError, match="Did you mean"):
    pretrained.path("espcn")


def test_shipped_impulse_model_beats_the_median_filters():
  """The shipped salt-and-pepper model against the 3x3 median and the switching 3x3 median
  on a real photo (density 0.1)."""
  from skimage import data  # pylint: disable=import-outside-toplevel
  clean = data.camera()[128:256, 128:256].astype(np.float64) / 255.0
  rng = np.random.default_rng(0)
  hit = rng.random(clean.shape) < 0.1
  noisy = np.where(hit, (rng.random(clean.shape) < 0.5).astype(np.float64), clean)
  task, state = restore.load_exported(pretrained.path("dncnn_sp10_gray"))
  assert (task.kind, task.config.degradation.density) == ("salt_and_pepper", 0.1)
  assert task.switching and task.prefilter == "median"
  out = restore.restore_image(restore.TiledRunner(task, state), noisy[..., None])[..., 0]
  # Switching: every pixel that is not 0 or 1 in the input is returned unchanged.
  keep = (noisy > 0) & (noisy < 1)
  np.testing.assert_array_equal(out[keep], noisy[keep].astype(np.float32))

  def psnr(a):
    a = np.clip(np.round(np.asarray(a, np.float64) * 255), 0, 255) / 255
    return 10 * np.log10(1 / np.mean((a - clean) ** 2))
  p_median = psnr(baselines.median_filter(noisy[..., None])[..., 0])
  p_switch = psnr(baselines.median_filter(noisy[..., None], switching=True)[..., 0])
  p_in, p_model = psnr(noisy), psnr(out)
  # Measured: input 14.14 dB, median 31.60, switching median 38.70, model 43.93 dB.
  assert p_in < 16 and p_model > p_switch + 1.0 > p_median + 1.0, (
      p_in, p_median, p_switch, p_model)


def test_cli_restore_with_shipped_model_raises_psnr(tmp_path):
  from skimage import data  # pylint: disable=import-outside-toplevel
  clean = data.camera()[200:296, 200:296].astype(np.float64)
  noisy = np.clip(np.round(clean + 25.0 * np.random.default_rng(0).normal(size=clean.shape)),
                  0, 255).astype(np.uint8)
  src, out = str(tmp_path / "noisy.png"), str(tmp_path / "out.png")
  Image.fromarray(noisy).save(src)
  assert os.path.isfile(pretrained.path("dncnn_s25_gray"))
  r = _run(["restore", src, "-o", out, "--model", "dncnn_s25_gray"])
  assert r.returncode == 0, r.stderr
  assert "denoising" in r.stdout and "1 tile(s) of 96x96 (--tile 128, --overlap 34" in r.stdout

  def psnr(a):
    return 10 * np.log10(255.0 ** 2 / np.mean((np.asarray(a, np.float64) - clean) ** 2))
  restored = np.asarray(Image.open(out))
  assert restored.shape == (96, 96) and restored.dtype == np.uint8
  p_in, p_out = psnr(noisy), psnr(restored)
  assert 19.0 < p_in < 22.0 and p_out > p_in + 4.0, (p_in, p_out)
  # Existing output, unknown model, no model: one-line errors, exit 1.
  r = _run(["restore", src, "-o", out, "--model", "dncnn_s25_gray"], timeout=120)
  assert r.returncode == 1 and "ERROR: FileExistsError" in r.stderr and "--overwrite" in r.stderr
  np.testing.assert_array_equal(np.asarray(Image.open(out)), restored)
  r = _run(["restore", src, "-o", str(tmp_path / "x.png"), "--model", "dncnn_s25"], timeout=120)
  assert r.returncode == 1 and "Did you mean ['dncnn_s25_gray']" in r.stderr


def test_cli_restore_task_check(tmp_path):
  src = str(tmp_path / "in.png")
  Image.fromarray(np.full((32, 32), 128, np.uint8)).save(src)
  r = _run(["restore", src, "-o", str(tmp_path / "o.png"), "--model", "dncnn_s25_gray",
            "--task", "sr"], timeout=120)
  assert r.returncode == 1 and "--task sr:" in r.stderr and "a denoise model" in r.stderr, r.stderr
  assert not os.path.exists(tmp_path / "o.png")
  r = _run(["restore", src, "-o", str(tmp_path / "o.png"), "--model", "espcn_x3",
            "--task", "sr"], timeout=120)
  assert r.returncode == 0, r.stderr
  assert np.asarray(Image.open(tmp_path / "o.png")).shape == (96, 96)


def test_cli_eval_shipped_and_exported_model_at_another_sigma(tmp_path):
  """eval --model / --weights on a folder of images, at sigma 15 instead of the model's 25:
  the input PSNR is that of sigma-15 noise (20 log10(255 / 15) = 24.61 dB unclipped)."""
  from skimage import data  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "imgs"
  folder.mkdir()
  Image.fromarray(data.camera()[100:228, 100:228]).save(folder / "camera.png")
  r = _run(["eval", "--model", "dncnn_s25_gray", "--dataset", str(folder), "--sigma", "15",
            "-o", str(tmp_path / "r15.json")])
  assert r.returncode == 0, r.stderr
  res15 = json.load(open(tmp_path / "r15.json", encoding="utf-8"))
  assert res15["protocol"]["degradation"]["sigma"] == 15.0
  assert "dncnn_s25_gray" in res15["model"] and res15["num_images"] == 1
  # The input PSNR clips the noisy image to [0, 1] (no rounding), which can only raise it
  # above the unclipped 24.61 dB (sigma 25: 20.17 dB); this crop has saturated regions.
  assert 24.55 < res15["input_psnr"] < 25.6 and res15["psnr"] > res15["input_psnr"] + 4
  weights = shutil.copy(pretrained.path("dncnn_s25_gray"), tmp_path / "m.npz")
  r = _run(["eval", "--weights", str(weights), "--dataset", str(folder)])
  assert r.returncode == 0, r.stderr
  res25 = json.load(open(tmp_path / "m_eval_imgs.json", encoding="utf-8"))
  assert res25["protocol"]["degradation"]["sigma"] == 25.0
  assert 20.1 < res25["input_psnr"] < 21.2 and res25["psnr"] < res15["psnr"]
  r = _run(["eval", "--model", "dncnn_s25_gray", "--dataset", str(folder), "--density", "0.2"],
           timeout=120)
  assert r.returncode == 1 and "--density applies to salt_and_pepper" in r.stderr, r.stderr
  r = _run(["eval", "--model", "espcn_x3", "--dataset", str(folder), "--scale", "4"],
           timeout=120)
  assert r.returncode == 1 and "x3 super-resolution model" in r.stderr, r.stderr
