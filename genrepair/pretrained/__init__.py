r"""Shipped restoration models: ``launch.py restore IN -o OUT --model NAME``.

Each model is one ``.npz`` written by ``launch.py export`` (arrays only, no pickle: the
parameters, BatchNorm statistics and the run's config; see :mod:`genrepair.restore`),
installed with the package (``pyproject.toml`` package data). The numbers are the source
run's ``launch.py eval`` results (``experiments/README.md``); all are CPU-budget runs
(ESPCN: published Set5 32.55 dB; DnCNN-S: published BSD68 29.23 dB after 50 epochs).

| name | task | source run | measured |
|---|---|---|---|
| ``espcn_x3`` | x3 SR, 1 channel (Y) | ``espcn_x3.py:runlocal``, T91, 15,000 steps | Set5 32.25 dB, Set14 28.90 dB |
| ``dncnn_s25_gray`` | denoising, sigma 25, gray | ``dncnn_sigma25.py:runlocal``, Train400, 4,500 steps of 16 | BSD68 28.67 dB / SSIM 0.800 (input 20.48; BM3D published 28.57) |
| ``dncnn_sp10_gray`` | salt-and-pepper removal, density 0.1, gray (two-stage: refines the switching 3x3 median at the impulse candidates, every other pixel kept) | ``saltpepper_dncnn.py:runlocal``, Train400, 1,500 steps | Set12 40.40 dB / SSIM 0.990 (switching median 35.84 / 0.984, 3x3 median 29.00 / 0.879, input 15.26) |
| ``inpaint_unet_gray`` | inpainting, gray, mask = white holes | ``inpaint_irregular.py:runlocal``, Train400 + stroke masks, 3,000 steps | Set12 with NVIDIA masks (20-30% holes) 24.50 dB (biharmonic 23.71, input 12.47) |

Files: ``<name>.npz`` in this folder. SR numbers are Y-channel PSNR with a 3-pixel shave;
on RGB images ``espcn_x3`` super-resolves Y and upscales Cb/Cr bicubically. Denoising
numbers: all channels, no shave, output rounded to 8 bits.

Re-create a file (the source runs live under ``runs/``, not in the repository):

  python launch.py export --workdir runs/espcn_x3_cpu -o genrepair/pretrained/espcn_x3.npz
  python launch.py export --workdir runs/dncnn_s25_b16 -o genrepair/pretrained/dncnn_s25_gray.npz
  python launch.py export --workdir runs/inpaint_cpu -o genrepair/pretrained/inpaint_unet_gray.npz
  python launch.py export --workdir runs/sp_prefilter_cpu -o genrepair/pretrained/dncnn_sp10_gray.npz
"""

from __future__ import annotations

import difflib
import os

# name -> (file in this folder, description)
MODELS: dict[str, tuple[str, str]] = {
    "espcn_x3": (
        "espcn_x3.npz",
        "ESPCN x3 super-resolution, Y channel (RGB: Y by the model, Cb/Cr bicubic);"
        " CPU run, Set5 32.25 dB / Set14 28.90 dB."),
    "dncnn_s25_gray": (
        "dncnn_s25_gray.npz",
        "DnCNN-S Gaussian denoising at sigma 25, grayscale; CPU run, BSD68 28.67 dB"
        " (BM3D 28.57)."),
    "dncnn_sp10_gray": (
        "dncnn_sp10_gray.npz",
        "DnCNN-S salt-and-pepper (impulse) noise removal at density 0.1, grayscale, refining"
        " the switching 3x3 median at the impulses; CPU run, Set12 40.40 dB (switching median"
        " 35.84)."),
    "inpaint_unet_gray": (
        "inpaint_unet_gray.npz",
        "U-Net inpainting (16 wide, 3 levels), grayscale, --mask white = hole; CPU run,"
        " Set12 + NVIDIA masks 24.50 dB (biharmonic 23.71)."),
}


def path(name: str) -> str:
  """The installed file of shipped model ``name``.

  Raises:
    ValueError: unknown name (lists close and all names).
    FileNotFoundError: the name is listed but its file is not installed.
  """
  if name not in MODELS:
    close = difflib.get_close_matches(name, MODELS, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown --model {name!r}.{hint} Shipped models: {sorted(MODELS)}.")
  file = os.path.join(os.path.dirname(os.path.abspath(__file__)), MODELS[name][0])
  if not os.path.isfile(file):
    raise FileNotFoundError(f"Shipped model {name!r} is listed but {file} is missing (was the"
                            " package installed without its data files?).")
  return file


def describe() -> str:
  """One line per shipped model: ``name: description``."""
  return "\n".join(f"{n}: {d}" for n, (_, d) in sorted(MODELS.items()))
