"""Deblurring, inpainting and salt-and-pepper tasks and their classical baselines: kernel
stacking is exact, the task's corruptions and masked loss against independent computations,
the baselines against closed-form cases, 2-step runs of the three experiments with eval."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data

from genrepair import baselines, deconvolution, degradations, evaluate, sharding, train
from tests.test_restoration_task import _experiment


def _levin():
  path = os.path.join(os.environ.get("GENREPAIR_DATA", ""), "blur", "Levin09.mat")
  if not os.path.isfile(path):
    pytest.skip("needs $GENREPAIR_DATA/blur/Levin09.mat")
  return degradations.load_blur_kernels(path)


def test_stack_kernels_keeps_every_blur_exact():
  rng = np.random.default_rng(0)
  # Odd and even sizes, non-square: the origin k // 2 must land on K // 2.
  kernels = [rng.random((3, 5)), rng.random((6, 4)), rng.random((9, 9)), rng.random((2, 2))]
  stack = degradations.stack_kernels(kernels)
  assert stack.shape == (4, 9, 9)
  x = rng.random((4, 20, 17, 2)).astype(np.float32)
  for k, padded in zip(kernels, stack):
    want = np.stack([scipy.ndimage.convolve(x[0, ..., c], k, mode="wrap") for c in range(2)], -1)
    np.testing.assert_allclose(degradations.blur(x[:1], kernel=padded)[0], want, atol=1e-5)
  # One kernel per image (vmapped) equals blurring each image alone.
  per_image = degradations.blur(x, kernel=stack)
  for i in range(4):
    np.testing.assert_allclose(per_image[i], degradations.blur(x[i], kernel=kernels[i]),
                               atol=1e-5)
  with pytest.raises(ValueError, match="one kernel per image"):
    degradations.blur(x, kernel=stack[:3])


def test_levin_kernels_stack_and_gaussian_kernel():
  stack = degradations.stack_kernels(_levin())
  assert stack.shape == (8, 27, 27)
  np.testing.assert_allclose(stack.sum(axis=(1, 2)), 1.0, atol=1e-5)
  g = degradations.gaussian_kernel(1.5)
  assert g.shape == (11, 11) and abs(g.sum() - 1) < 1e-6
  np.testing.assert_allclose(g, g.T)
  # The 1-D profile is exp(-t^2 / (2 sigma^2)), normalised.
  t = np.arange(11) - 5
  prof = np.exp(-t**2 / 4.5)
  np.testing.assert_allclose(g[5] / g[5, 5], prof, rtol=1e-5)


def test_wiener_otf_matches_blur_and_inverts_noise_free_blur():
  rng = np.random.default_rng(1)
  x = scipy.ndimage.gaussian_filter(rng.random((32, 24, 1)), (2, 2, 0))  # smooth image
  k = rng.random((5, 4)) + 0.1
  k /= k.sum()
  y = np.asarray(degradations.blur(x.astype(np.float32), kernel=k), np.float64)
  # fft(blur(x)) = fft(x) * otf: the baseline's forward model is the task's blur.
  otf = baselines.kernel_otf(k, (32, 24))
  np.testing.assert_allclose(np.fft.fft2(y[..., 0]), np.fft.fft2(x[..., 0]) * otf, atol=1e-4)
  # With no noise and a tiny regulariser, Wiener inverts the blur.
  kg = degradations.gaussian_kernel(0.6)
  yg = np.asarray(degradations.blur(x.astype(np.float32), kernel=kg), np.float64)
  back = baselines.wiener_deconvolution(yg, kernel=kg, sigma=0.0, nsr=1e-9)
  np.testing.assert_allclose(back, x, atol=2e-4)
  # The 1/|f|^2 prior's NSR vanishes with the noise: the same exact inverse.
  np.testing.assert_allclose(baselines.wiener_deconvolution(yg, kernel=kg, sigma=1e-7), x,
                             atol=2e-4)
  # With the true noise level it improves a real photo blurred by a Levin-size kernel
  # (measured: 19.5 -> 28.0 dB on camera with Levin kernel 4, 27x27).
  import skimage.data  # pylint: disable=import-outside-toplevel
  cam = skimage.data.camera()[128:384, 128:384, None] / 255.0
  kb = degradations.gaussian_kernel(2.0)
  yb = np.asarray(degradations.blur_noise(jax.random.key(0), cam.astype(np.float32),
                                          kernel=kb, sigma=2.55), np.float64)
  err = lambda a: np.mean((np.clip(a, 0, 1) - cam) ** 2)
  deblurred = baselines.wiener_deconvolution(yb, kernel=kb, sigma=2.55)
  assert 10 * np.log10(err(yb) / err(deblurred)) > 1.5


def test_impulse_mask_and_switching_median():
  x = np.full((6, 7, 3), 0.5, np.float32)
  x[1, 2] = 0.0        # pepper (every channel)
  x[4, 5] = 1.0        # salt
  x[2, 2, 0] = 0.0     # one dark channel only: a colour, not an impulse
  x[0, 0] = (1.0, 1.0, 0.0)  # not all equal: not an impulse
  m = np.asarray(degradations.impulse_mask(x))
  assert m.shape == (6, 7, 1) and m.dtype == np.float32
  want = np.zeros((6, 7, 1), np.float32)
  want[1, 2] = want[4, 5] = 1.0
  np.testing.assert_array_equal(m, want)
  # On a real photo: the switching median keeps every non-candidate pixel exactly and is
  # far closer to the photo than the plain median, which smooths every pixel (on this
  # textured crop, the photographer's coat and tripod: 34.1 against 27.8 dB).
  clean = skimage.data.camera()[200:328, 200:328, None].astype(np.float32) / 255
  noisy = np.asarray(degradations.salt_and_pepper(jax.random.key(0), clean, density=0.1))
  plain = baselines.median_filter(noisy)
  sw = baselines.run("salt_and_pepper", noisy, switching=True)
  hit = np.asarray(degradations.impulse_mask(noisy))[..., 0] > 0
  np.testing.assert_array_equal(sw[~hit], noisy[~hit])
  np.testing.assert_array_equal(sw[hit], plain[hit])
  psnr = lambda y: -10 * np.log10(np.mean((np.clip(y, 0, 1) - clean) ** 2))
  assert psnr(sw) > psnr(plain) + 3.0, (psnr(sw), psnr(plain))
  assert baselines.name("salt_and_pepper", switching=True) == "switching median 3x3"
  assert baselines.name("salt_and_pepper") == "median 3x3"


def test_switching_prefilter_task_keeps_uncorrupted_pixels_and_loss_sees_impulses_only(
    tfds_dir, monkeypatch):
  del tfds_dir
  c = _tiny("saltpepper_dncnn", monkeypatch)
  assert c.degradation.switching and c.degradation.prefilter == "median"
  mesh = sharding.make_mesh({"data": -1})
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  assert task.in_channels == 2  # [switching-median estimate, noisy]
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  batch = next(train.make_train_iterator(c))
  # Independently: the step's noisy batch, SciPy's switching median, the raw DnCNN output,
  # float64 L2 with only the impulse candidates taken from the model.
  clean = batch["image"].astype(np.float64) / 255
  noisy = np.asarray(degradations.salt_and_pepper(jax.random.fold_in(train_rng, 0),
                                                  jnp.asarray(clean, jnp.float32),
                                                  density=0.1), np.float64)
  estimate = np.stack([baselines.median_filter(n, switching=True) for n in noisy])
  x = np.concatenate([estimate, noisy], -1).astype(np.float32)
  np.testing.assert_array_equal(task.model_input(jnp.asarray(noisy, jnp.float32)), x)
  hit = np.all(noisy <= 0, -1, keepdims=True) | np.all(noisy >= 1, -1, keepdims=True)
  assert 0.05 < hit.mean() < 0.2
  # At step 0 (zero last layer) the model's output is the switching median exactly.
  out0, _ = task.apply(state.params, state.batch_stats, jnp.asarray(x), train=False)
  np.testing.assert_array_equal(out0, estimate.astype(np.float32))
  state = state.replace(params=jax.tree.map(lambda a: a + 0.01, state.params))
  _, m = jax.jit(task.train_step)(state, sharding.to_global(batch, mesh), train_rng)
  variables = {"params": jax.device_get(state.params),
               "batch_stats": jax.device_get(state.batch_stats)}
  raw, _ = task.model.apply(variables, jnp.asarray(x), train=True, method="restore",
                            mutable=["batch_stats"])
  out = np.where(hit, np.asarray(raw, np.float64), noisy)
  np.testing.assert_allclose(m["l2"], np.mean((out - clean) ** 2), rtol=1e-4)
  # apply keeps every non-candidate pixel bit-exactly.
  kept, _ = task.apply(state.params, state.batch_stats, jnp.asarray(x), train=False)
  np.testing.assert_array_equal(np.asarray(kept)[~hit[..., 0]],
                                noisy.astype(np.float32)[~hit[..., 0]])
  np.testing.assert_array_equal(task.observation(jnp.asarray(x)), x[..., 1:])
  for bad, match in [(dict(kind="gaussian_noise", sigma=25.0), "switching=True is for"),
                     (dict(switching=False, prefilter="mean"), "prefilter='mean'; known"),
                     (dict(switching=False, kind="gaussian_noise", sigma=25.0),
                      "prefilter='median' is for kind='salt_and_pepper'")]:
    c2 = _tiny("saltpepper_dncnn", monkeypatch)
    for k, v in bad.items():
      setattr(c2.degradation, k, v)
    with pytest.raises(ValueError, match=match):
      train.build(c2)


def test_median_and_biharmonic_baselines():
  x = np.full((16, 16, 1), 0.5)
  x[3, 4], x[9, 9] = 1.0, 0.0  # isolated salt and pepper
  np.testing.assert_allclose(baselines.median_filter(x), 0.5)
  # A linear ramp is biharmonic: the holes are filled exactly.
  yy, xx = np.mgrid[0:24, 0:24]
  ramp = (0.2 + 0.01 * yy + 0.02 * xx)[..., None]
  mask = np.zeros((24, 24, 1))
  mask[6:12, 8:15] = 1
  masked = ramp * (1 - mask)
  np.testing.assert_allclose(baselines.biharmonic_inpaint(masked, mask), ramp, atol=1e-6)
  out = baselines.run("inpaint", np.concatenate([masked, mask], -1))
  np.testing.assert_allclose(out, ramp, atol=1e-6)
  with pytest.raises(ValueError, match="No classical baseline"):
    baselines.run("gaussian_noise", x)
  with pytest.raises(ValueError, match="does not match"):
    baselines.biharmonic_inpaint(masked, mask[:5])


def _tiny(name, monkeypatch, offline=True):
  if offline:
    monkeypatch.delenv("GENREPAIR_DATA", raising=False)
  c = _experiment(name, "runlocal")
  if c.model.name == "unet":
    c.model.features, c.model.depth = 4, 2
  else:
    with c.unlocked():
      c.model.depth = 3
  c.data.patch_size = 32
  c.data.patches_per_image = 4
  c.train.batch_size = 8
  c.train.log_every = 1
  c.sample.num = 4
  return c


def test_blur_task_degradation_and_errors(monkeypatch):
  c = _tiny("deblur_levin", monkeypatch)
  assert c.degradation.kernels == "gaussian" and c.data.name == "natural_photos_gray"
  task = train.build(c)[0]
  # Non-blind: the model input is [Wiener estimate, blurred], 2 channels.
  assert c.degradation.deconvolution == "wiener"
  assert task.kernels.shape == (4, 19, 19) and task.in_channels == 2
  clean = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1))
  idx = jnp.array([0, 1, 2, 3])
  x = task.degrade(jax.random.key(1), clean, kernel_index=idx)
  assert x.shape == (4, 32, 32, 2)
  y = task.observation(x)
  np.testing.assert_array_equal(y, x[..., 1:])
  blurred = degradations.blur(clean, kernel=task.kernels[np.asarray(idx)])
  np.testing.assert_allclose(np.std(np.asarray(y - blurred)) * 255, 2.55, rtol=0.03)
  np.testing.assert_allclose(x[..., :1], deconvolution.wiener(
      y, task.kernels[np.asarray(idx)], sigma=2.55), atol=1e-6)
  # model_input of an already blurred image: one kernel for the batch, or one per image.
  np.testing.assert_allclose(task.model_input(y[:1], kernel=task.kernels[0]), x[:1],
                             atol=1e-6)
  with pytest.raises(ValueError, match="needs the blur kernel"):
    task.model_input(y)
  # Blind ('none'): the blurred image alone, the same draw.
  c.degradation.deconvolution = "none"
  blind = train.build(c)[0]
  assert blind.in_channels == 1
  np.testing.assert_array_equal(blind.degrade(jax.random.key(1), clean, kernel_index=idx), y)
  for bad, match in [(dict(deconvolution="richardson"), "known"),
                     (dict(deconvolution="wiener", sigma=0.0), "sigma > 0"),
                     (dict(deconvolution="wiener", kind="salt_and_pepper", density=0.1),
                      "kind='blur'")]:
    c2 = _tiny("deblur_levin", monkeypatch)
    for k, v in bad.items():
      setattr(c2.degradation, k, v)
    with pytest.raises(ValueError, match=f"config.degradation.deconvolution.*{match}"):
      train.build(c2)
  for i in range(4):  # kernel i is the Gaussian of sigma GAUSSIAN_KERNEL_SIGMAS[i]
    one = degradations.blur(clean[i], kernel=degradations.gaussian_kernel(
        (1.0, 1.6, 2.2, 3.0)[i]))
    np.testing.assert_allclose(blurred[i], one, atol=1e-5)
  c.degradation.kernels = "blur/nope.mat"
  task = train.build(c)[0]  # kernels are read on first use (restoring needs none)
  with pytest.raises(FileNotFoundError, match="config.degradation.kernels"):
    task.degrade(jax.random.key(0), clean)


def test_inpaint_task_keeps_known_pixels_and_loss_is_hole_l1(tfds_dir, monkeypatch):
  del tfds_dir
  c = _tiny("inpaint_irregular", monkeypatch)
  mesh = sharding.make_mesh({"data": -1})
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(c, mesh)
  assert task.in_channels == 2
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  batch = next(train.make_train_iterator(c))
  _, m = jax.jit(task.train_step)(state, sharding.to_global(batch, mesh), train_rng)
  # Independently: the stroke mask the step drew, the raw U-Net output, float64 hole L1.
  clean = batch["image"].astype(np.float64) / 255
  mask = np.asarray(degradations.random_stroke_mask(jax.random.fold_in(train_rng, 0),
                                                    (8, 32, 32, 1)), np.float64)
  assert 0 < mask.mean() < 0.9
  x = np.concatenate([clean * (1 - mask), mask], -1)
  raw = np.asarray(task.model.apply({"params": jax.device_get(state.params)},
                                    jnp.asarray(x, jnp.float32), train=True,
                                    method="restore"), np.float64)
  out = clean * (1 - mask) + mask * raw
  np.testing.assert_allclose(m["l1"], np.mean(np.abs(out - clean)), rtol=1e-4)
  np.testing.assert_allclose(m["l1"], np.mean(mask * np.abs(raw - clean)), rtol=1e-4)
  # apply keeps every known pixel bit-exactly.
  composite, _ = task.apply(state.params, state.batch_stats, jnp.asarray(x, jnp.float32),
                            train=False)
  known = mask[..., 0] == 0
  np.testing.assert_array_equal(np.asarray(composite)[known],
                                np.asarray(x[..., :1], np.float32)[known])
  with pytest.raises(ValueError, match="needs a mask"):
    task.model_input(jnp.zeros((1, 8, 8, 1)))


def test_eval_masks_are_the_nvidia_files_cropped(monkeypatch):
  root = os.environ.get("GENREPAIR_DATA", "")
  if not os.path.isdir(os.path.join(root, "masks", "irregular")):
    pytest.skip("needs $GENREPAIR_DATA/masks/irregular")
  c = _experiment("inpaint_irregular", "runlocal")
  masks = evaluate.eval_masks(c, [(256, 256), (481, 321), (512, 600)])
  files = degradations.load_irregular_masks(os.path.join(root, "masks", "irregular"),
                                            hole_ratio_bin=2, limit=3)
  np.testing.assert_array_equal(masks[0][0], files[0][:256, :256])
  np.testing.assert_array_equal(masks[1][0], files[1][:481, :321])
  assert masks[2].shape == (1, 512, 600, 1) and not masks[2][0, :, 512:].any()
  # Bin 2 holds 20-30% holes.
  assert 0.2 <= files.mean(axis=(1, 2, 3)).min() and files.mean(axis=(1, 2, 3)).max() <= 0.3


@pytest.mark.parametrize("name", ["deblur_levin", "inpaint_irregular", "saltpepper_dncnn"])
def test_two_steps_with_eval_and_baseline(name, tfds_dir, tmp_path, monkeypatch):
  del tfds_dir
  c = _tiny(name, monkeypatch)
  c.train.num_steps = 2
  c.eval.every = 1000
  workdir = str(tmp_path / name)
  r = train.run(c, workdir)
  assert r["step"] == 2
  results = json.load(open(os.path.join(workdir, "eval", "step_0000002.json")))
  assert results["num_images"] == 2
  want = {"deblur_levin": "Wiener", "inpaint_irregular": "biharmonic",
          "saltpepper_dncnn": "switching median 3x3"}[name]
  assert results["baseline"] == want
  # Every classical baseline improves on its corrupted input on real photos.
  for row in results["per_image"]:
    assert row["baseline_psnr"] > row["input_psnr"] + 1.0, row
  np.testing.assert_allclose(results["baseline_psnr"],
                             np.mean([x["baseline_psnr"] for x in results["per_image"]]))
  assert f"{want} PSNR" in evaluate.table(results).splitlines()[0]
