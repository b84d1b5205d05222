"""The FID Inception port against pytorch-fid itself, with identical random weights.

Needs torch, torchvision and pytorch-fid (the ``fid-ref`` extra; ``.ci/run`` runs this file in
a venv of its own, where their absence is an error); skips without them elsewhere. Nothing is downloaded: pytorch-fid's
``fid_inception_v3()`` fetches its state dict through ``load_state_dict_from_url``, which the
test replaces by a function returning a randomly initialised state dict of the same network
(``load_state_dict`` is strict, so the keys and shapes are pytorch-fid's own). BatchNorm
running statistics are set from a calibration batch (as training would), so every layer has
O(1) activations, then the same state dict goes through genrepair's converter into our
``.npz`` and loader.

Checks: pool3 features and logits agree within 1e-4 relative (max error over the max
magnitude; the agreement is printed), through the full pipeline including pytorch-fid's
bilinear resize and [0, 1] -> [-1, 1] scaling; FID from our streaming float64 statistics
equals pytorch-fid's ``calculate_frechet_distance`` within 1e-6 relative; KID equals the
unbiased MMD^2 estimator written as in Binkowski et al.'s code, within 1e-6 relative.
"""

import copy
import importlib
import os

import numpy as np
import pytest
from PIL import Image

# .ci/run's fid-ref step sets GENREPAIR_REQUIRE_FID_REF=1: there a missing package is a
# failure, not a silent skip.
_import = (importlib.import_module if os.environ.get("GENREPAIR_REQUIRE_FID_REF")
           else pytest.importorskip)
torch = _import("torch")
_import("torchvision")
pfi = _import("pytorch_fid.inception")
fid_score = _import("pytorch_fid.fid_score")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from genrepair.metrics import generative  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrepair.metrics import inception  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrepair.models import inception as inception_model  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrepair.weights import inception_convert  # pylint: disable=g-import-not-at-top,wrong-import-position

RTOL_FEATURES = 1e-4
RTOL_FORMULAS = 1e-6


def _fid_skeleton():
  """pytorch-fid's FID network without weights: ``fid_inception_v3()`` minus the download."""
  net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # pylint: disable=protected-access
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  return net


def _smooth_images(seed, n, h, w):
  """uint8 [n, h, w, 3]: 12x12 noise upsampled bicubically, a stand-in for photos."""
  rng = np.random.default_rng(seed)
  low = rng.integers(0, 256, (n, 12, 12, 3), np.uint8)
  return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BICUBIC)) for im in low])


def _random_state_dict(seed=0):
  torch.manual_seed(seed)
  net = _fid_skeleton()
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the running stats of this one batch
      elif isinstance(m, torch.nn.Linear):
        m.weight.normal_(0.0, 2048 ** -0.5)
        m.bias.normal_(0.0, 0.5)
    net.train()
    calib = torch.from_numpy(_smooth_images(100, 4, 299, 299)).permute(0, 3, 1, 2)
    net(calib.float() / 127.5 - 1)  # calibrates every BatchNorm's statistics
  net.eval()
  return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """(pytorch-fid's InceptionV3 with the random weights, their state dict, our weights)."""
  state = _random_state_dict()

  def offline_load(url, *args, **kwargs):  # replaces the download; nothing else is fetched
    del args, kwargs
    assert url == pfi.FID_WEIGHTS_URL, url
    return state

  saved = pfi.load_state_dict_from_url
  pfi.load_state_dict_from_url = offline_load
  try:
    ref = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  finally:
    pfi.load_state_dict_from_url = saved
  arrays = inception_convert.convert_state_dict({k: v.numpy() for k, v in state.items()})
  arrays[inception.META_FORMAT] = np.array(inception.FORMAT)
  arrays[inception.META_SOURCE] = np.array("random-" + "0" * 57)
  path = str(tmp_path_factory.mktemp("inception") / "random.npz")
  digest = inception_convert.write_npz(path, arrays)
  ours = inception.load_weights(path, sha256=digest, require_official=False)
  return ref, state, ours


def _reference(ref, state, images_uint8, dtype=None):
  """pytorch-fid on uint8 NHWC images: ToTensor's u / 255 in NCHW, then its forward."""
  dtype = dtype or torch.float32
  x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).to(dtype) / 255.0
  w, b = state["fc.weight"].to(dtype), state["fc.bias"].to(dtype)
  with torch.no_grad():
    pool3 = ref(x)[0][:, :, 0, 0]                                       # [B, 2048]
    logits = torch.nn.functional.linear(pool3, w, b)
    unbiased = pool3 @ w.T
  return pool3.double().numpy(), logits.double().numpy(), unbiased.double().numpy()


def _rel(ours, ref):
  """max |ours - ref| / max |ref|, and the largest elementwise relative error among the
  entries above 1% of the largest."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  scale = np.abs(ref).max()
  big = np.abs(ref) > 0.01 * scale
  return (float(np.abs(ours - ref).max() / scale),
          float((np.abs(ours - ref)[big] / np.abs(ref[big])).max()))


def test_network_matches_pytorch_fid_at_299(models):
  ref, state, ours = models
  images = _smooth_images(0, 3, 299, 299)
  want = dict(zip(("pool3", "logits", "logits_unbiased"), _reference(ref, state, images)))
  assert np.mean(want["pool3"] > 0) > 0.5 and want["pool3"].std() > 0.05  # a live network
  x = jax.jit(inception.preprocess, static_argnums=1)(images, "bilinear")  # no-op resize
  out = jax.jit(inception_model.Model().apply)(ours.variables, x)
  report = {name: _rel(out[name], want[name]) for name in want}
  print("\n299x299 float32 max relative error (normwise, elementwise >1%):", report)
  for name, (normwise, _) in report.items():
    assert normwise < RTOL_FEATURES, (name, report)

  # The same in float64 on both sides: what is left is the architecture, not rounding.
  want64 = dict(zip(want, _reference(copy.deepcopy(ref).double(), state, images,
                                     torch.float64)))
  with jax.enable_x64(True):
    variables = jax.tree.map(lambda a: np.asarray(a, np.float64), ours.variables)
    out64 = inception_model.Model().apply(variables, images.astype(np.float64) / 127.5 - 1)
    report64 = {name: _rel(out64[name], want64[name]) for name in want}
  print("299x299 float64:", report64)
  print("pytorch-fid's own float32 vs float64:",
        {name: _rel(want[name], want64[name]) for name in want})
  for name, (normwise, _) in report64.items():
    assert normwise < 1e-9, (name, report64)


def test_pipeline_matches_pytorch_fid_with_resize(models):
  # Non-square, smaller than 299: exercises pytorch-fid's F.interpolate against our
  # 'bilinear' resampling matrices, and the [0, 1] -> [-1, 1] scaling.
  ref, state, ours = models
  images = np.random.default_rng(1).integers(0, 256, (3, 37, 53, 3), np.uint8)
  pool3_ref, _, unbiased_ref = _reference(ref, state, images)
  ex = inception.InceptionExtractor(ours, resize="bilinear", batch_size=2)
  got = ex(images)
  report = {"pool3": _rel(got["pool3"], pool3_ref),
            "logits_unbiased": _rel(got["logits_unbiased"], unbiased_ref)}
  print("\n37x53 -> 299 max relative error (normwise, elementwise >1%):", report)
  for name, (normwise, _) in report.items():
    assert normwise < RTOL_FEATURES, (name, report)


def _pool3_like(seed, n, d=2048, shift=0.0):
  """Non-negative, correlated, pool3-like features (N > D: full-rank covariances)."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(64, d)) / 8.0
  return np.maximum(rng.normal(size=(n, 64)) @ mix + rng.normal(size=(n, d)) * 0.3 + shift,
                    0.0).astype(np.float32)


def test_fid_matches_pytorch_fid_formula():
  a, b = _pool3_like(0, 2300), _pool3_like(1, 2200, shift=0.05)
  # Ours: streaming FeatureStats over chunks, as InceptionExtractor's output arrives.
  sa, sb = generative.FeatureStats(), generative.FeatureStats()
  for chunk in np.array_split(a, 5):
    sa.update(chunk)
  for chunk in np.array_split(b, 4):
    sb.update(chunk)
  ours = generative.fid_from_stats(sa, sb)
  a64, b64 = a.astype(np.float64), b.astype(np.float64)
  want = fid_score.calculate_frechet_distance(a64.mean(0), np.cov(a64, rowvar=False),
                                              b64.mean(0), np.cov(b64, rowvar=False))
  print(f"\nFID ours {ours!r} pytorch-fid {float(want)!r} rel {abs(ours - want) / want:.2e}")
  assert want > 1.0
  np.testing.assert_allclose(ours, want, rtol=RTOL_FORMULAS)


def _binkowski_mmd2(x, y):
  """Unbiased MMD^2, cubic kernel, as ``_mmd2_and_variance(..., 'unbiased')`` in Binkowski
  et al.'s code (equal set sizes), in torch float64."""
  x, y = torch.from_numpy(x).double(), torch.from_numpy(y).double()
  d, m = x.shape[1], x.shape[0]
  k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
  kt_xx = k_xx.sum() - torch.diagonal(k_xx).sum()
  kt_yy = k_yy.sum() - torch.diagonal(k_yy).sum()
  return float((kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def test_kid_matches_binkowski_formula():
  a, b = _pool3_like(2, 700), _pool3_like(3, 600, shift=0.02)
  subsets, size, seed = 4, 250, 0
  ours_mean, ours_std = generative.kid(a, b, num_subsets=subsets, subset_size=size, seed=seed)
  rng = np.random.default_rng(seed)  # the same subsets, drawn as generative.kid documents
  values = [_binkowski_mmd2(a[rng.choice(len(a), size, replace=False)],
                            b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
  print(f"\nKID ours {ours_mean!r} reference {np.mean(values)!r}")
  np.testing.assert_allclose(ours_mean, np.mean(values), rtol=RTOL_FORMULAS)
  np.testing.assert_allclose(ours_std, np.std(values), rtol=1e-5)
  np.testing.assert_allclose(generative.mmd2_unbiased(a[:300], b[:300]),
                             _binkowski_mmd2(a[:300], b[:300]), rtol=RTOL_FORMULAS)


def test_converter_reads_a_torch_file(models, tmp_path):
  # The offline step end to end on a real .pth (torch.save of the random state dict):
  # torch.load(weights_only=True), the mapping, the deterministic writer, the loader.
  _, state, ours = models
  src = str(tmp_path / "random.pth")
  torch.save(state, src)
  with pytest.raises(ValueError, match="does not start with 6726825d"):
    inception_convert.main([src, str(tmp_path / "refused.npz")])
  out = str(tmp_path / "converted.npz")
  assert inception_convert.main([src, out, "--no-check-hash"]) == 0
  converted = inception.load_weights(out, require_official=False)
  assert converted.source_sha256 == inception.sha256_of(src)
  got, want = inception.flatten(converted.variables), inception.flatten(ours.variables)
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert inception_convert.main([src, out, "--no-check-hash"]) == 0
  assert inception.sha256_of(out) == converted.sha256  # same .pth, same bytes
