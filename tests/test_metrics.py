"""PSNR/SSIM against hand values and scikit-image; image reading; published bicubic baselines."""

import os
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.metrics
from PIL import Image

from genrepair import degradations as deg
from genrepair import io as imageio
from genrepair import metrics

DATA = os.environ.get("GENREPAIR_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="GENREPAIR_DATA is not set (shared data).")


def _pair(shape, seed=0):
  """A smooth 'image' and a noisy copy, both in [0, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:shape[0], :shape[1]] / max(shape[:2])
  base = 0.5 + 0.4 * np.sin(6 * xx + 3 * yy)[..., None] * np.linspace(1, 0.5, shape[2])
  noisy = np.clip(base + rng.normal(0, 0.05, shape), 0, 1)
  return base.astype(np.float32), noisy.astype(np.float32)


# --------------------------------------------------------------------------- PSNR / Y


def test_psnr_hand_values():
  a = jnp.zeros((3, 8, 8, 1))
  b = a + jnp.array([0.1, 0.01, 0.5])[:, None, None, None]    # MSE 1e-2, 1e-4, 0.25
  np.testing.assert_allclose(metrics.psnr(a, b), [20.0, 40.0, 10 * np.log10(4)], atol=1e-4)
  # Same numbers on the 0-255 scale; and the MSE is over pixels and channels.
  p255 = metrics.Protocol(data_range=255.0)
  np.testing.assert_allclose(metrics.psnr(a * 255, b * 255, p255), [20.0, 40.0, 6.0206],
                             atol=1e-4)
  half = jnp.zeros((4, 4, 2)).at[..., 0].set(0.1)               # MSE = 0.01 / 2
  np.testing.assert_allclose(metrics.psnr(jnp.zeros((4, 4, 2)), half), 23.0103, atol=1e-4)


def test_rgb_to_y_matlab_values():
  rgb = jnp.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], jnp.float32)
  y = np.asarray(metrics.rgb_to_y(rgb))[:, 0] * 255
  np.testing.assert_allclose(y, [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-4)
  y255 = metrics.rgb_to_y(rgb * 255, data_range=255.0)[:, 0]
  np.testing.assert_allclose(y255, y, atol=1e-3)
  with pytest.raises(ValueError, match=r"\(2, 4\)"):
    metrics.rgb_to_y(jnp.zeros((2, 4)))


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_ssim_match_skimage(data_range):
  a, b = _pair((48, 40, 3))
  a, b = a * data_range, b * data_range
  p = metrics.Protocol(data_range=data_range)
  ref_psnr = skimage.metrics.peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64),
                                                     data_range=data_range)
  np.testing.assert_allclose(metrics.psnr(a, b, p), ref_psnr, atol=1e-4)
  ref_ssim = skimage.metrics.structural_similarity(
      a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=data_range, channel_axis=-1)
  ours = metrics.ssim(a, b, p)
  np.testing.assert_allclose(ours, ref_ssim, atol=2e-5)
  # skimage's default (7x7 uniform window, sample covariance) is a different number.
  default = skimage.metrics.structural_similarity(a, b, data_range=data_range, channel_axis=-1)
  assert abs(default - ref_ssim) > 1e-3


def test_protocol_pipeline_equals_manual_numpy():
  a, b = _pair((30, 34, 3), seed=1)
  a4, b4 = np.stack([a, a[::-1]]), np.stack([b, b[::-1]])
  p = metrics.Protocol.super_resolution(3)
  assert p == metrics.Protocol(1.0, y_channel=True, crop_border=3, quantize=True)

  def manual(x):
    q = np.floor(np.clip(x, 0, 1) * 255 + 0.5) / 255
    y = (16 + q @ np.array([65.481, 128.553, 24.966])) / 255
    return np.floor(y * 255 + 0.5)[:, 3:-3, 3:-3, None]          # uint8 Y, shaved

  ya, yb = manual(a4), manual(b4)
  ref_psnr = [skimage.metrics.peak_signal_noise_ratio(u, v, data_range=255)
              for u, v in zip(ya, yb)]
  ref_ssim = [skimage.metrics.structural_similarity(
      u[..., 0], v[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=255) for u, v in zip(ya, yb)]
  fn = jax.jit(lambda u, v: (metrics.psnr(u, v, p), metrics.ssim(u, v, p)))
  ours_psnr, ours_ssim = fn(a4, b4)
  np.testing.assert_allclose(ours_psnr, ref_psnr, atol=1e-4)
  np.testing.assert_allclose(ours_ssim, ref_ssim, atol=2e-5)
  # Gray images are their own Y (no [16, 235] mapping).
  g = metrics.psnr(a4[..., :1], b4[..., :1], p)
  ref = [skimage.metrics.peak_signal_noise_ratio(
      np.floor(u[3:-3, 3:-3, :1] * 255 + .5), np.floor(v[3:-3, 3:-3, :1] * 255 + .5),
      data_range=255) for u, v in zip(a4, b4)]
  np.testing.assert_allclose(g, ref, atol=1e-4)


def test_protocol_record_and_errors():
  p = metrics.Protocol.super_resolution(4, data_range=255.0)
  d = p.to_dict()
  assert d["crop_border"] == 4 and d["y_channel"] and d["quantize"] and d["data_range"] == 255
  assert "sigma 1.5" in d["ssim"] and "rgb2ycbcr" in d["y_definition"]
  assert p.describe() == "Y (BT.601), shave 4, uint8, range 255"
  with pytest.raises(ValueError, match="data_range"):
    metrics.Protocol(data_range=2.0)
  with pytest.raises(ValueError, match=r"\(4, 4, 1\).*\(4, 5, 1\)"):
    metrics.psnr(jnp.zeros((4, 4, 1)), jnp.zeros((4, 5, 1)))
  with pytest.raises(ValueError, match="crop_border=4"):
    metrics.psnr(jnp.zeros((8, 8, 1)), jnp.zeros((8, 8, 1)), p)


# --------------------------------------------------------------------------- imageio


def _write_png16(path, arr, color_type):
  """Minimal 16-bit PNG writer (Pillow cannot write 16-bit colour)."""
  h, w = arr.shape[:2]
  raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

  def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16,
                                                             color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_read_image_formats_and_rules(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  for ext in ("png", "bmp"):
    Image.fromarray(rgb).save(tmp_path / f"a.{ext}")
    np.testing.assert_array_equal(imageio.read_image(str(tmp_path / f"a.{ext}")), rgb)
  smooth = np.broadcast_to(np.arange(0, 240, 15, dtype=np.uint8)[:, None, None], (16, 8, 3))
  Image.fromarray(np.ascontiguousarray(smooth)).save(tmp_path / "j.jpg", quality=95)
  jpg = imageio.read_image(str(tmp_path / "j.jpg"))
  assert jpg.shape == (16, 8, 3) and np.abs(jpg.astype(int) - smooth).max() <= 4
  Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
  g = imageio.read_image(str(tmp_path / "g.png"))
  assert g.shape == (5, 7, 1)
  np.testing.assert_array_equal(imageio.read_image(str(tmp_path / "g.png"), mode="rgb"),
                                np.repeat(g, 3, -1))
  gray = imageio.read_image(str(tmp_path / "a.png"), mode="gray")[..., 0]
  ref = np.floor(rgb @ [0.298936021293775, 0.587043074451121, 0.114020904255103] + 0.5)
  np.testing.assert_array_equal(gray, ref)
  # RGBA: opaque alpha dropped; transparency refused unless alpha='drop'.
  rgba = np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / "o.png")
  np.testing.assert_array_equal(imageio.read_image(str(tmp_path / "o.png")), rgb)
  rgba[0, 0, 3] = 10
  Image.fromarray(rgba).save(tmp_path / "t.png")
  with pytest.raises(ValueError, match="t.png.*transparent"):
    imageio.read_image(str(tmp_path / "t.png"))
  np.testing.assert_array_equal(imageio.read_image(str(tmp_path / "t.png"), alpha="drop"), rgb)
  # 16-bit gray: round(v / 257) as MATLAB im2uint8; 16-bit colour: refused.
  _write_png16(tmp_path / "g16.png", np.array([[0, 128, 129, 385, 65535]], np.uint16), 0)
  np.testing.assert_array_equal(imageio.read_image(str(tmp_path / "g16.png"))[0, :, 0],
                                [0, 0, 1, 1, 255])
  _write_png16(tmp_path / "c16.png", np.zeros((2, 2, 3), np.uint16), 2)
  with pytest.raises(ValueError, match="c16.png.*16-bit colour"):
    imageio.read_image(str(tmp_path / "c16.png"))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    imageio.read_image(str(tmp_path / "missing.png"))
  (tmp_path / "bad.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.png"):
    imageio.read_image(str(tmp_path / "bad.png"))


def test_read_image_dir_and_modcrop(tmp_path):
  for name in ("b", "a", "c"):
    Image.fromarray(np.full((10, 13), ord(name), np.uint8)).save(tmp_path / f"{name}.png")
  (tmp_path / "notes.txt").write_text("ignored")
  items = imageio.read_image_dir(str(tmp_path))
  assert [n for n, _ in items] == ["a", "b", "c"] and items[1][1][0, 0, 0] == ord("b")
  img = np.arange(10 * 13).reshape(10, 13)
  np.testing.assert_array_equal(imageio.modcrop(img, 4), img[:8, :12])
  assert imageio.modcrop(np.zeros((10, 13, 3)), 3).shape == (9, 12, 3)
  with pytest.raises(ValueError, match=r"\(2, 2\)"):
    imageio.modcrop(np.zeros((2, 2)), 3)


# ------------------------------------------------------------ published bicubic baselines


def _bicubic_y_psnr(set_dir: str, scale: int) -> float:
  """Mean bicubic PSNR on Y with the SRCNN protocol (see the test docstring)."""
  protocol = metrics.Protocol.super_resolution(scale, data_range=1.0)

  @jax.jit  # one compilation per image size instead of one per op
  def one(hr):                                                              # [H, W, C]
    if hr.shape[-1] == 3:                                                   # uint8 Y
      hr = jnp.floor(metrics.rgb_to_y(hr) * 255.0 + 0.5) / 255.0
    lr = deg.bicubic_downsample(hr, scale=scale)                            # float, no rounding
    sr = deg.imresize(lr, scale=scale)
    return metrics.psnr(hr, sr, protocol)                                   # rounds sr to uint8

  values = [float(one(jnp.asarray(imageio.modcrop(img, scale), jnp.float32) / 255.0))
            for _, img in imageio.read_image_dir(set_dir)]
  return float(np.mean(values))


@needs_data
@pytest.mark.parametrize("set_name,scale,published", [
    ("set5", 2, 33.66), ("set5", 3, 30.39), ("set5", 4, 28.42), ("set14", 4, 26.00)])
def test_published_bicubic_baselines(set_name, scale, published):
  """Bicubic Y-PSNR of SRCNN/VDSR tables (Dong et al. TPAMI 2016, Table 1 / 4).

  Protocol of SRCNN's ``demo_SR.m``: HR -> modcrop -> uint8 Y (MATLAB ``rgb2ycbcr`` on uint8;
  the gray Set14 ``bridge`` is its own Y) -> float ``imresize(., 1/s, 'bicubic')`` ->
  ``imresize(., s, 'bicubic')`` (no rounding in between) -> ``uint8`` -> PSNR with ``s``
  pixels shaved from each border, averaged over images.
  """
  got = _bicubic_y_psnr(os.path.join(DATA, "sr", set_name), scale)
  assert abs(got - published) <= 0.01, f"{set_name} x{scale}: {got:.4f} vs {published}"
