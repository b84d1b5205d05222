"""Official-weight importers: layout checks and the published numbers they reproduce.

- DnCNN-S sigma=25 (Zhang et al., TIP 2017; MatConvNet ``.mat``): BSD68 29.23 dB, Set12
  30.44 dB with the authors' ``Demo_test_DnCNN.m`` protocol.
- SRCNN 9-5-5 x4 (Dong et al., TPAMI 2016; text weights): Set5 30.48 dB, Set14 27.50 dB with
  the authors' ``demo_SR.m`` protocol on the Y channel.

The published-number tests need ``$GENREPAIR_DATA`` (see shared/data/README.md) and skip
without it; the synthetic-file tests always run.
"""

import glob
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genrepair.models import dncnn
from genrepair.models import srcnn
from genrepair.weights import dncnn_config
from genrepair.weights import load_dncnn_matconvnet
from genrepair.weights import load_srcnn_text
from genrepair.weights import read_matlab_text
from genrepair.weights import srcnn_config

DATA = os.environ.get("GENREPAIR_DATA", "")


def _data(*parts: str) -> str:
  path = os.path.join(DATA, *parts)
  if not DATA or not os.path.exists(path):
    pytest.skip(f"needs $GENREPAIR_DATA/{'/'.join(parts)} (GENREPAIR_DATA={DATA!r})")
  return path


def _psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR of two uint8 images, peak 255 (``Cal_PSNRSSIM`` / ``compute_psnr``)."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10.0 * np.log10(255.0**2 / mse))


def _to_uint8(x: np.ndarray) -> np.ndarray:
  """MATLAB ``im2uint8`` / ``uint8(x * 255)``: scale, round, saturate."""
  return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------- synthetic MATLAB v7.3 MatConvNet files


def _write_matconvnet(path, layers):
  """Writes a MatConvNet SimpleNN ``net`` the way MATLAB ``save -v7.3`` lays it out.

  Args:
    path: output file.
    layers: dicts with ``type``, ``name`` and optionally ``weights`` (arrays in MATLAB
      index order), ``pad``, ``stride``, ``leak``.
  """
  with h5py.File(path, "w", userblock_size=512) as f:
    refs = f.create_group("#refs#")

    def char(group, key, text):
      ds = group.create_dataset(key, data=np.array([[ord(c)] for c in text], np.uint16))
      ds.attrs["MATLAB_class"] = np.bytes_("char")

    def matlab(name, a):
      a = np.asarray(a, np.float32)
      while a.ndim > 2 and a.shape[-1] == 1:  # MATLAB drops trailing singleton dims
        a = a[..., 0]
      ds = refs.create_dataset(name, data=np.transpose(a))  # column-major on disk
      ds.attrs["MATLAB_class"] = np.bytes_("single")
      return ds.ref

    layer_refs = []
    for i, layer in enumerate(layers):
      g = refs.create_group(f"layer{i}")
      char(g, "type", layer["type"])
      char(g, "name", layer["name"])
      for key in ("pad", "stride", "leak"):
        if key in layer:
          g.create_dataset(key, data=np.array([[layer[key]]], np.float64))
      if "weights" in layer:
        w = [matlab(f"w{i}_{j}", a) for j, a in enumerate(layer["weights"])]
        ds = g.create_dataset("weights", data=np.array(w, h5py.ref_dtype)[:, None])
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
      layer_refs.append(g.ref)
    net = f.create_group("net")
    net.attrs["MATLAB_class"] = np.bytes_("struct")
    ds = net.create_dataset("layers", data=np.array(layer_refs, h5py.ref_dtype)[:, None])
    ds.attrs["MATLAB_class"] = np.bytes_("cell")
  with open(path, "r+b") as fh:  # MATLAB's text header in the user block
    fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def _conv_layer(i, cin, cout, rng, *, bias=True):
  w = [rng.normal(0, 0.3, (3, 3, cin, cout))]
  if bias:
    w.append(rng.normal(0, 0.1, (cout, 1)))
  return dict(type="conv", name=f"conv{i}", weights=w, pad=1.0, stride=1.0)


def _matconvnet_forward(x, layers):
  """NumPy reference of MatConvNet test-mode ``vl_simplenn`` for conv/bnorm/relu layers.

  ``vl_nnconv``: ``y(i, j, o) = b(o) + sum W(di, dj, c, o) x(i + di - 1, j + dj - 1, c)``
  with zero padding (a correlation); ``vl_nnbnorm``: ``g (x - mu) / sigma + beta``.
  """
  for layer in layers:
    if layer["type"] == "conv":
      w = layer["weights"][0]
      b = layer["weights"][1].ravel() if len(layer["weights"]) > 1 else 0.0
      h, wd, _ = x.shape
      xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
      y = np.zeros((h, wd, w.shape[3])) + b
      for di in range(3):
        for dj in range(3):
          y += xp[di:di + h, dj:dj + wd] @ w[di, dj]
      x = y
    elif layer["type"] == "bnorm":
      g, beta, m = layer["weights"]
      x = g.ravel() * (x - m[:, 0]) / m[:, 1] + beta.ravel()
    elif layer["type"] == "relu":
      x = np.maximum(x, 0)
  return x


def _color_net_with_bnorm(rng):
  """A depth-4, 5-feature colour DnCNN with un-merged BN and a trailing loss layer."""
  layers = [_conv_layer(0, 3, 5, rng), dict(type="relu", name="relu0", leak=0.0)]
  for i in (1, 2):
    layers += [
        _conv_layer(i, 5, 5, rng, bias=False),
        dict(type="bnorm", name=f"bn{i}",
             weights=[rng.uniform(0.5, 1.5, (5, 1)), rng.normal(0, 0.1, (5, 1)),
                      np.stack([rng.normal(0, 0.1, 5), rng.uniform(0.5, 2, 5)], 1)]),
        dict(type="relu", name=f"relu{i}", leak=0.0)]
  layers += [_conv_layer(3, 5, 3, rng), dict(type="loss", name="objective")]
  return layers


def test_matconvnet_importer_matches_a_numpy_matconvnet_forward(tmp_path):
  rng = np.random.default_rng(0)
  layers = _color_net_with_bnorm(rng)
  path = str(tmp_path / "net.mat")
  _write_matconvnet(path, layers)
  assert h5py.is_hdf5(path)
  params = load_dncnn_matconvnet(path)
  cfg = dncnn_config(params)
  assert cfg == dict(depth=4, features=5, channels=3, batch_norm=False)
  assert params["conv0"]["kernel"].shape == (3, 3, 3, 5)
  assert params["conv3"]["kernel"].shape == (3, 3, 5, 3)
  # An asymmetric input so that a transposed or flipped kernel would show.
  x = rng.uniform(0, 1, (7, 9, 3))
  ref = _matconvnet_forward(x, layers)
  model = dncnn.DnCNN(**cfg)
  ours = model.apply({"params": params}, jnp.asarray(x[None], jnp.float32), train=False)
  np.testing.assert_allclose(np.asarray(ours[0]), ref, rtol=1e-4, atol=1e-4)


def test_matconvnet_gray_last_layer_drops_trailing_singleton(tmp_path):
  # MATLAB stores the last gray conv [3, 3, F, 1] as [3, 3, F]; it must load as 4-D.
  rng = np.random.default_rng(1)
  layers = [_conv_layer(0, 1, 4, rng), dict(type="relu", name="r", leak=0.0),
            _conv_layer(1, 4, 1, rng)]
  path = str(tmp_path / "gray.mat")
  _write_matconvnet(path, layers)
  with h5py.File(path, "r") as f:
    assert f["#refs#/w2_0"].shape == (4, 3, 3)  # what h5py sees
  params = load_dncnn_matconvnet(path)
  assert params["conv1"]["kernel"].shape == (3, 3, 4, 1)
  x = rng.uniform(0, 1, (6, 5, 1))
  ours = dncnn.DnCNN(**dncnn_config(params)).apply(
      {"params": params}, jnp.asarray(x[None], jnp.float32), train=False)
  np.testing.assert_allclose(np.asarray(ours[0]), _matconvnet_forward(x, layers),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mutate,message", [
    (lambda ls: ls.__setitem__(1, dict(type="relu", name="lrelu", leak=0.2)), "leaky ReLU"),
    (lambda ls: ls.__setitem__(1, dict(type="pool", name="pool1")),
     r"layer 2 \('pool1', type 'pool'\).*unsupported"),
    (lambda ls: ls[0].__setitem__("pad", 0.0), r"layer 1 \('conv0'.*pad"),
    (lambda ls: ls[0].__setitem__("stride", 2.0), "stride"),
    (lambda ls: ls.append(dict(type="relu", name="extra", leak=0.0)), "ReLU after the last"),
    (lambda ls: ls.pop(1), "no ReLU after this conv"),
])
def test_matconvnet_unexpected_structure_names_file_and_layer(tmp_path, mutate, message):
  rng = np.random.default_rng(2)
  layers = [_conv_layer(0, 1, 4, rng), dict(type="relu", name="relu0", leak=0.0),
            _conv_layer(1, 4, 1, rng)]
  mutate(layers)
  path = str(tmp_path / "bad.mat")
  _write_matconvnet(path, layers)
  with pytest.raises(ValueError, match=message) as e:
    load_dncnn_matconvnet(path)
  assert path in str(e.value)


def test_matconvnet_missing_and_non_hdf5_files(tmp_path):
  missing = str(tmp_path / "nope.mat")
  with pytest.raises(FileNotFoundError, match="nope.mat"):
    load_dncnn_matconvnet(missing)
  v5 = tmp_path / "v5.mat"
  v5.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
  with pytest.raises(ValueError, match="v7.3"):
    load_dncnn_matconvnet(str(v5))
  empty = str(tmp_path / "empty.mat")
  with h5py.File(empty, "w") as f:
    f.create_group("model")
  with pytest.raises(ValueError, match="net.layers"):
    load_dncnn_matconvnet(empty)


# ----------------------------------------------------------------------- DnCNN, real data


def test_dncnn_sigma25_file_structure():
  params = load_dncnn_matconvnet(_data("weights", "dncnn", "sigma25.mat"))
  assert dncnn_config(params) == dict(depth=17, features=64, channels=1, batch_norm=False)
  shapes = {k: (v["kernel"].shape, v["bias"].shape) for k, v in params.items()}
  assert shapes["conv0"] == ((3, 3, 1, 64), (64,))
  assert shapes["conv8"] == ((3, 3, 64, 64), (64,))
  assert shapes["conv16"] == ((3, 3, 64, 1), (1,))
  assert all(v["kernel"].dtype == np.float32 for v in params.values())
  # The merged-BN variant's tree has exactly this structure.
  model = dncnn.Model(variant="S-merged")
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))
  assert jax.tree.map(np.shape, abstract["params"]) == jax.tree.map(np.shape, params)


def _dncnn_mean_psnr(dataset: str, seed: int, batch: int = 4) -> tuple[float, list[float]]:
  """``Demo_test_DnCNN.m`` with sigma 25; noise from ``default_rng(seed)`` in file order.

  Images are grouped by shape and run in fixed-size batches (the last batch padded by
  repetition), so each image shape compiles once. No spatial padding: it would change the
  zero-padded border outputs.
  """
  params = load_dncnn_matconvnet(_data("weights", "dncnn", "sigma25.mat"))
  model = dncnn.DnCNN(**dncnn_config(params))
  denoise = jax.jit(lambda p, y: model.apply({"params": p}, y, method="denoise"))
  files = sorted(glob.glob(os.path.join(_data("denoise", dataset), "*.png")))
  rng = np.random.default_rng(seed)
  clean, noisy = [], []
  for f in files:
    c = np.asarray(Image.open(f))
    assert c.ndim == 2 and c.dtype == np.uint8, f
    clean.append(c)
    # noisy = single(clean/255 + 25/255 * randn): unclipped, float32.
    noisy.append((c / 255.0 + 25.0 / 255.0 * rng.standard_normal(c.shape)).astype(np.float32))
  psnrs = [0.0] * len(files)
  for shape in sorted({c.shape for c in clean}):
    idx = [i for i, c in enumerate(clean) if c.shape == shape]
    for k in range(0, len(idx), batch):
      chunk = idx[k:k + batch]
      chunk_in = chunk + [chunk[-1]] * (batch - len(chunk))
      y = np.stack([noisy[i] for i in chunk_in])[..., None]  # [batch, H, W, 1]
      out = np.asarray(denoise(params, y))[..., 0]
      for j, i in enumerate(chunk):
        psnrs[i] = _psnr_uint8(_to_uint8(out[j]), clean[i])
  return float(np.mean(psnrs)), psnrs


def test_dncnn_s_sigma25_set12_published_30_44():
  # DnCNN paper, Table III: Set12 sigma 25, DnCNN-S 30.44 dB. Measured here (CPU, float32):
  # seeds 0/1/2/3 -> 30.416 / 30.407 / 30.421 / 30.420, i.e. 0.02-0.03 dB below the paper
  # with a seed spread of +-0.007 (the paper's MATLAB randn('seed', 0) draw is not
  # reproducible); BSD68 (the 0.02 dB acceptance bar, slow test below) matches to 0.001.
  mean, psnrs = _dncnn_mean_psnr("set12", seed=0)
  assert len(psnrs) == 12
  assert abs(mean - 30.44) <= 0.035, mean
  # Regression pin of this exact pipeline (seed 0). Kernels transposed spatially would give
  # 30.4193: DnCNN was trained with flip/rotation augmentation, so the published numbers
  # cannot tell the two layouts apart; MATLAB's [kh, kw, cin, cout] = Flax's is used.
  assert abs(mean - 30.4164) <= 0.001, mean


@pytest.mark.slow
def test_dncnn_s_sigma25_bsd68_published_29_23():
  # DnCNN paper, Table II: BSD68 sigma 25, DnCNN-S 29.23 dB; the bar is 0.02 dB.
  # Measured (CPU, float32): seeds 0 / 1 / 2 -> 29.2313 / 29.2261 / 29.2228, all within
  # 0.008 dB of the paper. 1.5-3 min on 2 CPU cores, hence slow.
  mean, psnrs = _dncnn_mean_psnr("bsd68", seed=0)
  assert len(psnrs) == 68
  assert abs(mean - 29.23) <= 0.02, mean


# ------------------------------------------------------------------------------------ SRCNN


def _write_text(path, a):
  """Writes a ``rows cols [...]`` header and column-major values, as the SRCNN-cpp files."""
  a = np.asarray(a, np.float64)
  header = " ".join(str(d) for d in a.shape)
  values = " ".join(f"{v:.20f}" for v in a.ravel(order="F"))
  path.write_text(header + " \n" + values + " ")


def test_srcnn_text_layout_is_column_major_per_filter(tmp_path):
  # Tap p of a filter is (row r, column c) = (p % f, p // f), as SRCNN.m's reshape.
  n1, n2, f1, f2, f3 = 3, 2, 3, 5, 3
  w1 = np.arange(f1 * f1 * n1, dtype=np.float64).reshape((f1 * f1, n1), order="F")
  w2 = np.arange(n1 * f2 * f2 * n2, dtype=np.float64).reshape((n1, f2 * f2, n2), order="F")
  w3 = np.arange(n2 * f3 * f3, dtype=np.float64).reshape((n2, f3 * f3), order="F")
  for name, a in dict(weights_conv1=w1, weights_conv2=w2, weights_conv3=w3,
                      biases_conv1=np.ones((n1, 1)), biases_conv2=2 * np.ones((n2, 1)),
                      biases_conv3=np.full((1, 1), 3.0)).items():
    _write_text(tmp_path / f"{name}.txt", a)
  np.testing.assert_array_equal(read_matlab_text(tmp_path / "weights_conv2.txt"), w2)
  p = load_srcnn_text(tmp_path)
  assert srcnn_config(p) == dict(kernel_sizes=(3, 5, 3), features=(3, 2), channels=1,
                                 padding="EDGE")
  k1, k2, k3 = (p[f"conv{i}"]["kernel"] for i in (1, 2, 3))
  assert k1.shape == (3, 3, 1, 3) and k2.shape == (5, 5, 3, 2) and k3.shape == (3, 3, 2, 1)
  # Row r = 1, column c = 2 of filter i=1 is tap r + f * c = 7 (MATLAB reshape).
  assert k1[1, 2, 0, 1] == w1[1 + 3 * 2, 1]
  assert k2[4, 1, 2, 1] == w2[2, 4 + 5 * 1, 1]
  assert k3[0, 2, 1, 0] == w3[1, 0 + 3 * 2]
  np.testing.assert_array_equal(p["conv3"]["bias"], [3.0])


def test_srcnn_text_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_srcnn_text(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="weights_conv1.txt"):
    load_srcnn_text(tmp_path)
  bad = tmp_path / "weights_conv1.txt"
  bad.write_text("81 64\n1.0 2.0\n")
  with pytest.raises(ValueError, match=r"weights_conv1.txt.*5184 values, file has 2"):
    read_matlab_text(bad)
  bad.write_text("rows cols\n1.0\n")
  with pytest.raises(ValueError, match="not a list of dimensions"):
    read_matlab_text(bad)


def test_srcnn_955_x4_file_structure():
  p = load_srcnn_text(_data("weights", "srcnn_955_x4"))
  assert srcnn_config(p) == dict(kernel_sizes=(9, 5, 5), features=(64, 32), channels=1,
                                 padding="EDGE")
  model = srcnn.Model(variant="9-5-5")
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 9, 9, 1))))
  assert jax.tree.map(np.shape, abstract["params"]) == jax.tree.map(np.shape, p)


def _srcnn_mean_psnr(dataset: str) -> float:
  """``demo_SR.m`` at x4: Y -> modcrop -> bicubic down/up -> SRCNN -> uint8 -> shaved PSNR."""
  try:
    from genrepair.degradations import imresize  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    pytest.skip(f"needs genrepair.degradations.imresize (MATLAB bicubic): {e}")
  scale = 4
  params = load_srcnn_text(_data("weights", "srcnn_955_x4"))
  model = srcnn.SRCNN(**srcnn_config(params))
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  psnrs = []
  for f in sorted(glob.glob(os.path.join(_data("sr", dataset), "*.png"))):
    im = np.asarray(Image.open(f))
    if im.ndim == 3:  # rgb2ycbcr on uint8 -> uint8 Y in [16, 235]; gray images stay as is
      rgb = im[..., :3].astype(np.float64)
      y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
      im = np.clip(np.round(y), 0, 255).astype(np.uint8)
    h, w = (d - d % scale for d in im.shape)
    gnd = im[:h, :w]  # modcrop
    x = jnp.asarray(gnd[None, :, :, None], jnp.float32) / 255.0
    low = imresize(x, scale=1.0 / scale)  # [1, h/4, w/4, 1], not quantised (single in MATLAB)
    bic = imresize(low, scale=scale)  # [1, h, w, 1]
    out = _to_uint8(np.asarray(apply(params, bic))[0, :, :, 0])
    s = slice(scale, -scale)
    psnrs.append(_psnr_uint8(out[s, s], gnd[s, s]))
  return float(np.mean(psnrs))


# Measured 30.484 (Set5) and 27.502 (Set14). The tolerance 0.01 also pins the kernel layout:
# filters transposed spatially (a row-major reading of the taps) give 30.507 and 27.486;
# zero instead of edge-replicate padding gives 23.30 and 22.85 (the 4-pixel shave is
# narrower than the network's 8-pixel receptive-field radius).


def test_srcnn_955_x4_set5_published_30_48():
  assert abs(_srcnn_mean_psnr("set5") - 30.48) <= 0.01


def test_srcnn_955_x4_set14_published_27_50():
  assert abs(_srcnn_mean_psnr("set14") - 27.50) <= 0.01
