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
