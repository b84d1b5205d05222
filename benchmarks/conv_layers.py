r"""Convolution timings on this machine: XLA's rules vs. ``genrepair.models.conv``.

Two parts (median of ``--reps`` runs after compilation, one process, one CPU device):

- ``layers``: per layer type of the models, the forward convolution, XLA's input gradient,
  XLA's weight gradient, the per-tap matmul weight gradient of
  :func:`genrepair.models.conv.weight_grad` and XLA's weight gradient summed over batch
  chunks of 1, 2, 4 and 8 images (:func:`genrepair.models.conv.split_weight_grad`).
- ``steps``: the full train step (``task.train_step`` under ``jit``) of DnCNN-S
  (``experiments/dncnn_sigma25.py``, batch 32 of 40x40) and of the DCGAN
  (``experiments/dcgan_mnist.py``, batch 64) with the models' convolutions as plain
  ``flax.linen.Conv`` / ``ConvTranspose`` ("plain") and as ``conv.Conv`` /
  ``conv.ConvTranspose`` ("fast", the default policy), optionally with the matmul weight
  gradient forced on every convolution ("matmul"), alternating the variants so that load
  from other processes hits them alike.

Usage::

  python benchmarks/conv_layers.py layers [NAME ...]
  python benchmarks/conv_layers.py steps [dncnn] [dcgan] [--reps 7] \
      [--variants plain,fast,matmul]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import sys
import time
from typing import Callable, Iterator

import flax.linen as nn
import jax
import numpy as np
from jax import lax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from genrepair import sharding, train  # pylint: disable=wrong-import-position
from genrepair.models import conv  # pylint: disable=wrong-import-position

_DN = ("NHWC", "HWIO", "NHWC")
_S1 = ((1, 1), (1, 1))

# name: (input [B, H, W, Cin], kernel [KH, KW, Cin, Cout], window strides, explicit
# padding of the (dilated) input, input dilation). Transposed convs are written as the
# input-dilated convolution lax.conv_transpose performs (padding from
# conv.transpose_padding).
LAYERS = {
    "dncnn_mid 3x3 64->64": ((32, 40, 40, 64), (3, 3, 64, 64), (1, 1), _S1, (1, 1)),
    "dncnn_first 3x3 1->64": ((32, 40, 40, 1), (3, 3, 1, 64), (1, 1), _S1, (1, 1)),
    "dncnn_last 3x3 64->1": ((32, 40, 40, 64), (3, 3, 64, 1), (1, 1), _S1, (1, 1)),
    "dcgan_D0 4x4/2 1->64": ((64, 28, 28, 1), (4, 4, 1, 64), (2, 2), ((1, 2), (1, 2)),
                             (1, 1)),
    "dcgan_D1 4x4/2 64->128": ((64, 14, 14, 64), (4, 4, 64, 128), (2, 2),
                               ((1, 2), (1, 2)), (1, 1)),
    "dcgan_G_up0 T4x4/2 128->64": ((64, 7, 7, 128), (4, 4, 128, 64), (1, 1),
                                   ((2, 2), (2, 2)), (2, 2)),
    "dcgan_G_to_image T4x4/2 64->1": ((64, 14, 14, 64), (4, 4, 64, 1), (1, 1),
                                      ((2, 2), (2, 2)), (2, 2)),
    "unet_upconv3 T2x2/2 512->256": ((8, 16, 16, 512), (2, 2, 512, 256), (1, 1), _S1,
                                     (2, 2)),
    "unet_upconv0 T2x2/2 64->32": ((8, 64, 64, 64), (2, 2, 64, 32), (1, 1), _S1, (2, 2)),
    "unet_down0 3x3 32->32": ((8, 128, 128, 32), (3, 3, 32, 32), (1, 1), _S1, (1, 1)),
    "unet_out 1x1 32->3": ((8, 128, 128, 32), (1, 1, 32, 3), (1, 1), ((0, 0), (0, 0)),
                           (1, 1)),
    "srcnn_conv1 9x9 1->64 valid": ((16, 41, 41, 1), (9, 9, 1, 64), (1, 1),
                                    ((0, 0), (0, 0)), (1, 1)),
    "espcn_conv1 5x5 1->64": ((64, 17, 17, 1), (5, 5, 1, 64), (1, 1), ((2, 2), (2, 2)),
                              (1, 1)),
    "edsr 3x3 64->64": ((16, 48, 48, 64), (3, 3, 64, 64), (1, 1), _S1, (1, 1)),
    "drrn 3x3 128->128": ((16, 31, 31, 128), (3, 3, 128, 128), (1, 1), _S1, (1, 1)),
}


def median_ms(fn: Callable[[], object], reps: int) -> float:
  """Median wall time of ``fn()`` in ms over ``reps`` runs after one warm-up run."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times))


def bench_layers(names: list[str], reps: int) -> None:
  """Prints forward / input-grad / weight-grad (XLA and matmul) times per layer."""
  chunks = (1, 2, 4, 8)
  print(f"{'layer':32s} {'fwd':>8s} {'dx xla':>8s} {'dW xla':>8s} {'dW mm':>8s} "
        + " ".join(f"{'split ' + str(c):>8s}" for c in chunks) + "  (ms)")
  for name in names or LAYERS:
    x_shape, k_shape, strides, pads, lhs_dil = LAYERS[name]
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), k_shape)

    def fwd(x, w, strides=strides, pads=pads, lhs_dil=lhs_dil):
      return lax.conv_general_dilated(x, w, strides, pads, lhs_dil, None, _DN)

    g = jax.random.normal(jax.random.key(2), fwd(x, w).shape)
    cfg = conv._Config(strides, pads, lhs_dil, (1, 1), None)  # pylint: disable=protected-access
    f_fwd = jax.jit(fwd)
    f_dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: fwd(x, w), x)[1](g)[0])
    f_dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: fwd(x, w), w)[1](g)[0])
    f_mm = jax.jit(lambda x, g, k=k_shape[:2]: conv.weight_grad(cfg, x, g, k))
    row = [median_ms(lambda: f_fwd(x, w), reps), median_ms(lambda: f_dx(x, w, g), reps),
           median_ms(lambda: f_dw(x, w, g), reps), median_ms(lambda: f_mm(x, g), reps)]
    for c in chunks:
      if lhs_dil != (1, 1) or x_shape[0] % c or x_shape[0] == c:
        row.append(float("nan"))
        continue
      f_split = jax.jit(lambda x, w, g, c=c: conv.split_weight_grad(cfg, x, g, w, c))
      row.append(median_ms(lambda: f_split(x, w, g), reps))
    print(f"{name:32s} " + " ".join(f"{t:8.1f}" for t in row), flush=True)


@contextlib.contextmanager
def layers_as(variant: str) -> Iterator[None]:
  """While tracing inside, the models' ``conv.Conv`` / ``conv.ConvTranspose`` are:

  ``'plain'``: ``nn.Conv`` / ``nn.ConvTranspose``; ``'fast'``: unchanged (policy
  ``'auto'``); ``'matmul'``: conv layers with the matmul weight gradient everywhere.
  """
  saved = conv.Conv, conv.ConvTranspose
  if variant == "plain":
    conv.Conv, conv.ConvTranspose = nn.Conv, nn.ConvTranspose
  elif variant == "matmul":
    fn = functools.partial(conv.conv_general_dilated, wgrad="matmul")
    conv.Conv = functools.partial(saved[0], conv_general_dilated=fn)
    conv.ConvTranspose = functools.partial(saved[1], conv_general_dilated=fn)
  try:
    yield
  finally:
    conv.Conv, conv.ConvTranspose = saved


def _config(name: str, batch: int):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(None)
  c.train.batch_size = batch
  return c


def bench_step(experiment: str, batch: int, size: int, reps: int,
               variants: tuple[str, ...]) -> None:
  """Prints the median train-step time per variant (see :func:`layers_as`), alternating."""
  config = _config(experiment, batch)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  task, mesh, init_rng, train_rng, _, state_sharding = train.build(config, mesh)
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 1), np.uint8)
  batch_arrays = sharding.to_global({"image": images}, mesh)
  steps = {}
  for label in variants:
    with layers_as(label):
      # A fresh function object per variant: no trace is shared between the two.
      lowered = jax.jit(lambda s, b, r: task.train_step(s, b, r)).lower(
          state, batch_arrays, train_rng)
    steps[label] = lowered.compile()
    hlo = steps[label].as_text()
    print(f"{experiment} {label}: {hlo.count(' convolution(')} convolutions,"
          f" {hlo.count(' dot(')} dots in the compiled step", flush=True)
  times = {label: [] for label in steps}
  for _ in range(reps + 1):
    for label, step in steps.items():
      t = time.perf_counter()
      jax.block_until_ready(step(state, batch_arrays, train_rng))
      times[label].append(time.perf_counter() - t)
  for label, ts in times.items():
    ts = ts[1:]  # the first call after compilation is a warm-up
    print(f"{experiment} batch {batch}: {label:6s} step median {1e3 * np.median(ts):7.1f} ms,"
          f" min {1e3 * np.min(ts):7.1f} ms  (runs: {', '.join(f'{1e3 * t:.0f}' for t in ts)})",
          flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("part", choices=("layers", "steps"))
  parser.add_argument("names", nargs="*", help="layer names or 'dncnn' / 'dcgan'")
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--variants", default="plain,fast",
                      help="steps: comma-separated subset of plain, fast, matmul")
  args = parser.parse_args()
  if args.part == "layers":
    bench_layers(args.names, args.reps)
    return
  names = args.names or ["dcgan", "dncnn"]
  variants = tuple(args.variants.split(","))
  if "dcgan" in names:
    bench_step("dcgan_mnist", 64, 28, args.reps, variants)
  if "dncnn" in names:
    bench_step("dncnn_sigma25", 32, 40, args.reps, variants)


if __name__ == "__main__":
  main()
