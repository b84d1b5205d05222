"""benchmarks.step: the JAX side runs and its FLOP accounting matches a hand count.

Checks the accounting, not the speed (no timing is asserted). PyTorch is not needed.
"""

import pytest

from benchmarks import flops, step


def _espcn_x3_hand_count(batch: int) -> int:
  """ESPCN x3 train-step FLOPs on 17x17 LR patches (51 / 3), counted by hand.

  Taps on real pixels along one axis of a 'SAME' conv on 17 pixels: 5x5 kernel
  3 + 4 + 13*5 + 4 + 3 = 79; 3x3 kernel 2 + 15*3 + 2 = 49. Multiply-adds of the forward
  pass: conv1 1 -> 64, conv2 64 -> 32, conv3 32 -> 9. The step does forward + weight
  gradient for every conv and the input gradient for conv2 and conv3 (the LR input needs
  none); 2 FLOPs per multiply-add.
  """
  conv1 = batch * 79 * 79 * 1 * 64
  conv2 = batch * 49 * 49 * 64 * 32
  conv3 = batch * 49 * 49 * 32 * 9
  return 2 * (2 * conv1 + 3 * conv2 + 3 * conv3)


def test_espcn_flop_count_matches_analytic_conv_count():
  out = step.main(["--model", "espcn", "--steps", "2", "--warmup", "0", "--no-torch",
                   "--peak-size", "256"])
  (r,) = out["results"]
  assert r["model"] == "espcn" and r["batch"] == 64 and r["input_shape"] == [64, 51, 51, 3]
  assert r["params"] == {"model": 22729}
  hand = _espcn_x3_hand_count(64)
  assert r["flops_analytic"] == hand == flops.step_flops("espcn", step.load_config("espcn"))
  # XLA's count also has the bicubic down-sampling, tanh, the loss and Adam: a few %.
  assert r["flops_source"] == "xla_cost_analysis"
  assert r["flops"] == pytest.approx(hand, rel=0.10)
  assert r["jax_ms"] > 0 and r["jax_gflops"] > 0 and len(r["jax_times_ms"]) == 2
  assert "torch_ms" not in r  # --no-torch


def _vae_mnist_hand_count(batch: int) -> int:
  """VAE 'mnist' train-step FLOPs (28x28 binarised digits, z = 32), counted by hand.

  Taps on real pixels along one axis of a 4x4 stride-2 'SAME' (pad 1, 1) conv: on 28
  pixels (14 outputs) 3 + 12*4 + 3 = 54; on 14 (7 outputs) 3 + 5*4 + 3 = 26. Multiply-adds:
  down0 1 -> 32, down1 32 -> 64, to_latent 7*7*64 -> 64, hidden0 32 -> 512, to_image
  512 -> 784. Forward + weight gradient everywhere, input gradient everywhere but down0
  (the reparameterised z carries the decoder's gradient into the encoder).
  """
  down0 = batch * 54 * 54 * 1 * 32
  rest = batch * (26 * 26 * 32 * 64 + 3136 * 64 + 32 * 512 + 512 * 784)
  return 2 * (2 * down0 + 3 * rest)


def test_vae_flop_count_and_params():
  out = step.main(["--model", "vae", "--steps", "2", "--warmup", "0", "--no-torch",
                   "--peak-size", "256"])
  (r,) = out["results"]
  assert r["batch"] == 128 and r["input_shape"] == [128, 28, 28, 1]
  assert r["params"] == {"encoder": 234144, "decoder": 419088}  # models/vae.py's table
  hand = _vae_mnist_hand_count(128)
  assert r["flops_analytic"] == hand == flops.step_flops("vae", step.load_config("vae"))
  # XLA's count also has the binarisation, the losses and Adam (~4% here).
  assert r["flops"] == pytest.approx(hand, rel=0.10)


def test_vae_flops_reject_a_convolutional_decoder():
  config = step.load_config("vae")
  config.model.variant = "mnist-conv"
  with pytest.raises(ValueError, match="dense-decoder"):
    flops.step_flops("vae", config)


def test_torch_references_have_genrepair_parameter_counts():
  """Every PyTorch reference model has exactly the parameters of genrepair's (the check
  benchmarks.step makes at start-up). Needs torch (the bench or fid-ref extra)."""
  pytest.importorskip("torch")
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel
  from genrepair import sharding, train  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  for model in step.BENCHES:
    config = step.load_config(model)
    task, _, init_rng, *_ = train.build(config, mesh)
    state = jax.eval_shape(task.init, init_rng)
    expected = step._param_counts(model, state)  # pylint: disable=protected-access
    assert torch_models.make_step(model, config).num_params() == expected, model


def test_wgan_gp_bench_runs_with_xla_flop_count_only():
  out = step.main(["--model", "wgan_gp", "--steps", "1", "--warmup", "0", "--no-torch",
                   "--peak-size", "256"])
  (r,) = out["results"]
  assert r["batch"] == 320 and r["input_shape"] == [320, 28, 28, 1]  # 5 critic minibatches
  assert r["params"] == {"generator": 759681, "discriminator": 138689}
  assert r["flops_analytic"] is None and r["flops_source"] == "xla_cost_analysis"
  # At least the first-order work: per critic update G forward, D forward on the real,
  # fake and interpolated batches; plus the G update's G and D forward passes.
  g, d = flops.dcgan_layers(step.load_config("dcgan"))
  fwd = lambda layers: sum(2 * l.macs(64) for l in layers)
  assert r["flops"] > 5 * (fwd(g) + 3 * fwd(d)) + fwd(g) + fwd(d)


def test_stylegan2_bench_times_whole_lazy_cycles():
  """StyleGAN2's lazy terms make steps unequal: the benchmark's unit is one cycle of
  lcm(r1_every, pl_every) steps, each with the variant training would run, and the FLOPs
  per step are the cycle's mean (``tiny`` variant, R1 and path length every 2nd step)."""
  config = step.load_config("stylegan2")
  assert step.lazy_cycle(config) == 16  # R1 every 16, path length every 4
  config.model.variant, config.model.z_dim, config.train.batch_size = "tiny", 8, 4
  config.train.r1_every = config.train.pl_every = 2
  assert step.lazy_cycle(config) == 2
  jax_step = step.JaxStep("stylegan2", config)
  batch = step.sharding.to_global(step.synthetic_batch("stylegan2", config, jax_step.task),
                                  jax_step.mesh)
  _, flops_per_step = jax_step.first_call(batch, cycle=2)
  assert jax_step.step == 2 and set(jax_step._fns) == {(True, True), (False, False)}  # pylint: disable=protected-access
  per_variant = [step.program_flops(jax_step.fn(v).lower(jax_step.state, batch, jax_step.rng)  # pylint: disable=protected-access
                                    .compile()) for v in ((True, True), (False, False))]
  assert per_variant[0] > 1.5 * per_variant[1] > 0  # the lazy terms differentiate twice
  assert flops_per_step == pytest.approx(sum(per_variant) / 2)
  config.losses.d.r1_penalty = 0.0
  config.losses.g.path_length = 0.0
  assert step.lazy_cycle(config) == 1  # intervals without a weight do not count


def test_wgan_gp_bench_rejects_other_gan_configs():
  with pytest.raises(ValueError, match="d_norm"):
    flops.check_wgan_gp_config(step.load_config("dcgan"))
  config = step.load_config("wgan_gp")
  config.losses.d.r1_penalty = 1.0
  with pytest.raises(ValueError, match="losses.d"):
    flops.step_flops("wgan_gp", config)


def _cyclegan_digits_small_hand_count(batch: int) -> int:
  """CycleGAN 'digits-small' train-step FLOPs (28x28, G k = 16 with 4 blocks at 7x7x64,
  PatchGAN 32-64-128), counted by hand from the multiply-adds per image that land on real
  pixels (not padding, not a transposed convolution's holes):

  G: c7s1 in 28*28*49*1*16 = 614,656 (on the reflection-padded map every tap is real);
  down0 3x3/2 pad 1, 28 -> 14: per axis 2 + 13*3 = 41 taps, 41*41*16*32 = 860,672; down1
  14 -> 7: 2 + 6*3 = 20, 20*20*32*64 = 819,200; 8 block convs 7*7*9*64*64 = 1,806,336
  each; up0 7 -> 14 (transposed): 20*20*64*32 = 819,200; up1 14 -> 28: 41*41*32*16 =
  860,672; c7s1 out 614,656 (16 -> 1). D: conv0 4x4/2 pad 1, 28 -> 14: 3 + 12*4 + 3 = 54,
  54*54*1*32 = 93,312; conv1 14 -> 7: 26*26*32*64 = 1,384,448; conv2 4x4/1, 7 -> 6: 22 taps,
  22*22*64*128 = 3,964,928; score 6 -> 5: 18 taps, 18*18*128 = 41,472.
  """
  g1, d1 = 614_656, 93_312
  g = g1 + 860_672 + 819_200 + 8 * 1_806_336 + 819_200 + 860_672 + 614_656
  d = d1 + 1_384_448 + 3_964_928 + 41_472
  b = batch
  # Per generator: forward on [a; b] (2B) and on the other's output (B), weight gradients
  # over 3B, input gradients on 2B (not the first layer) and through all layers on B.
  gen = 2 * g * 3 * b + 2 * g * 3 * b + 2 * (g - g1) * 2 * b + 2 * g * b
  d_in_g_update = 2 * d * b + 2 * d * b  # D forward + input gradients on B fakes
  d_update = 2 * (2 * d * 2 * b) + 2 * (d - d1) * 2 * b  # B real + B buffered
  return 2 * (gen + d_in_g_update + d_update)


def test_cyclegan_flop_count_and_params():
  out = step.main(["--model", "cyclegan", "--steps", "1", "--warmup", "0", "--no-torch",
                   "--peak-size", "256"])
  (r,) = out["results"]
  assert r["batch"] == 8 and r["input_shape"] == [8, 28, 28, 1]
  assert r["params"] == {"G": 343233, "F": 343233, "D_A": 166625, "D_B": 166625}
  hand = _cyclegan_digits_small_hand_count(8)
  assert r["flops_analytic"] == hand
  # XLA counts more: genrepair computes the 'VALID' convolutions of 8+ input channels (the
  # residual blocks, the output layer) as padded ones and crops (models/conv.py), i.e.
  # 9x9 instead of 7x7 outputs in the blocks: 8.27 GFLOP against 6.84 here.
  assert hand < r["flops"] < 1.3 * hand


def test_gan_family_objectives_and_rejections():
  kinds = {m: flops.check_dcgan_config(step.load_config(m)) for m in ("dcgan", "lsgan", "sngan")}
  assert kinds == {"dcgan": "logistic", "lsgan": "least_squares", "sngan": "hinge"}
  # The same players, so the same analytic count (spectral norm's power iteration and the
  # EMA are not convolution or dense work).
  assert len({flops.step_flops(m, step.load_config(m)) for m in kinds}) == 1
  config = step.load_config("lsgan")
  config.losses.g.g_least_squares = 2.0
  with pytest.raises(ValueError, match="losses"):
    flops.check_dcgan_config(config)
  with pytest.raises(ValueError, match="d_norm"):
    flops.check_dcgan_config(step.load_config("wgan_gp"))


def test_torch_gan_losses_equal_genrepair_losses():
  """The PyTorch reference's objectives against genrepair.losses on the same logits."""
  torch = pytest.importorskip("torch")
  import numpy as np  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel
  from genrepair.losses import adversarial as adv  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
  pairs = {"logistic": (adv.d_minimax, adv.g_nonsaturating),
           "least_squares": (adv.d_least_squares, adv.g_least_squares),
           "hinge": (adv.d_hinge, adv.g_hinge)}
  for kind, (d_jax, g_jax) in pairs.items():
    d_torch, g_torch = torch_models.GAN_LOSSES[kind]
    tr, tf = torch.from_numpy(real), torch.from_numpy(fake)
    assert float(d_torch(tr, tf)) == pytest.approx(
        float(np.mean(d_jax(real_logits=real, fake_logits=fake))), rel=1e-6), kind
    assert float(g_torch(tf)) == pytest.approx(
        float(np.mean(g_jax(fake_logits=fake))), rel=1e-6), kind


def test_torch_stylegan2_equals_genrepair_stylegan2():
  """The PyTorch StyleGAN2 reference (fused grouped modulated conv, depthwise-conv FIR,
  NCHW) with genrepair's weights: generator and discriminator outputs, parameter
  gradients, R1's input-gradient norms and path lengths against genrepair's (``tiny``
  variant, inference-mode noise maps), in float64 on both sides (in float32 a few
  leaky-ReLU inputs within rounding of 0 take the other slope: ~1e-3 relative on some
  gradients). Needs torch (the bench or fid-ref extra)."""
  torch = pytest.importorskip("torch")
  import jax  # pylint: disable=import-outside-toplevel
  with jax.enable_x64(True):
    _stylegan2_parity(torch)


def _stylegan2_parity(torch):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_stylegan2 as T  # pylint: disable=import-outside-toplevel
  from genrepair.models import stylegan2  # pylint: disable=import-outside-toplevel
  from genrepair.tasks import gan  # pylint: disable=import-outside-toplevel

  f64 = jnp.float64
  g, d = stylegan2.Model(variant="tiny", channels=1)
  spec = {**stylegan2._DEFAULTS, **stylegan2.VARIANTS["tiny"]}  # pylint: disable=protected-access
  common = dict(image_size=28, resolution=32, channels=1, channel_base=spec["channel_base"],
                channel_max=spec["channel_max"])
  tg = T.Generator(z_dim=8, w_dim=8, mapping_layers=2, mapping_lr_mul=0.01,
                   style_mixing_prob=0.9, **common).double()
  td = T.Discriminator(mbstd_group=2, mbstd_features=1, **common).double()
  gp = g.init(jax.random.key(1), jnp.zeros((1, 8), f64), train=False)["params"]
  dp = d.init(jax.random.key(2), jnp.zeros((1, 28, 28, 1), f64), train=False)["params"]
  assert jax.tree.leaves(gp)[0].dtype == f64
  # Trained-looking parameters: non-zero noise strengths and biases everywhere.
  gp = jax.tree.map(lambda p, k: p + 0.3 * jax.random.normal(k, p.shape, f64),
                    gp, _keys_like(jax.random.key(7), gp))
  T.load_flax_params(tg, gp)
  T.load_flax_params(td, dp)
  nchw = lambda a: torch.from_numpy(np.array(a).transpose(0, 3, 1, 2).copy())
  sizes = [4, 8, 8, 16, 16, 32, 32]  # the noise inputs' resolutions, by noise index
  const = {i: nchw(jax.random.normal(jax.random.fold_in(jax.random.key(0), i), (1, s, s, 1),
                                     f64)) for i, s in enumerate(sizes)}

  z = jax.random.normal(jax.random.key(3), (6, 8), f64)
  y = jax.random.normal(jax.random.key(4), (6, 28, 28, 1), f64) / 28.0
  x = jax.random.uniform(jax.random.key(5), (6, 28, 28, 1), f64, minval=-1.0, maxval=1.0)
  img = g.apply({"params": gp}, z, train=False)
  g_grads = jax.grad(lambda p: jnp.sum(g.apply({"params": p}, z, train=False) * y))(gp)
  timg = tg(torch.from_numpy(np.array(z)), train=False, const_noise=const)
  (timg * nchw(y)).sum().backward()
  np.testing.assert_allclose(timg.detach().numpy().transpose(0, 2, 3, 1), img, rtol=1e-9,
                             atol=1e-12)
  _assert_grads_close(tg, g_grads)

  logits = d.apply({"params": dp}, x, train=False)
  d_grads = jax.grad(lambda p: jnp.sum(d.apply({"params": p}, x, train=False)))(dp)
  tlogits = td(nchw(x))
  tlogits.sum().backward()
  np.testing.assert_allclose(tlogits.detach().numpy(), logits, rtol=1e-9, atol=1e-12)
  _assert_grads_close(td, d_grads)

  score = lambda v: d.apply({"params": dp}, v, train=False)
  _, t_sq = T.real_grad_sq(td, nchw(x))
  np.testing.assert_allclose(t_sq.detach().numpy(), gan.input_gradient_sq_norms(score, x),
                             rtol=1e-9)

  ws = g.apply({"params": gp}, z, train=False, method="map")
  synth = lambda v: g.apply({"params": gp}, v, train=False, method="synthesize")
  t_ws = torch.from_numpy(np.array(ws)).requires_grad_(True)
  t_len = T.path_lengths(tg, t_ws, nchw(y), const)
  np.testing.assert_allclose(t_len.detach().numpy(), gan.path_lengths(synth, ws, y),
                             rtol=1e-9)


def _keys_like(key, tree):
  import jax  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))


def _assert_grads_close(module, grads):
  """Each torch parameter's gradient against the flax gradient of the same path."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  for name, p in module.named_parameters():
    want = grads
    for part in name.split("."):
      want = want[part]
    np.testing.assert_allclose(p.grad.numpy(), np.asarray(want), rtol=1e-8, atol=1e-12,
                               err_msg=name)
