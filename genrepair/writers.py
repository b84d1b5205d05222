"""Run outputs: progress lines, ``metrics.jsonl`` and TensorBoard event files.

Only process 0 writes (other processes get a writer that does nothing), so a multi-host
run produces one set of files.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from typing import Mapping

import numpy as np


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricWriter:
  """Writes scalars to ``<workdir>/metrics.jsonl`` and ``<workdir>/tb/``.

  Args:
    workdir: run directory.
    enabled: False for processes other than 0 (everything becomes a no-op).
    resume_step: when resuming, lines of ``metrics.jsonl`` logged after this step (by a
      run that was stopped before its next checkpoint) are dropped, so the file matches
      the resumed run exactly; their number is reported.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      self._truncate_after(resume_step)
    self._file = open(self.path, "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def _truncate_after(self, step: int) -> None:
    with open(self.path, encoding="utf-8") as f:
      lines = f.readlines()
    keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    if len(keep) != len(lines):
      log(f"metrics.jsonl: dropping {len(lines) - len(keep)} line(s) logged after step"
          f" {step} (not covered by the checkpoint being resumed).")
      tmp = self.path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Appends one JSON line ``{"step": step, **values}`` and TensorBoard scalars."""
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    self._file.write(json.dumps({"step": step, **values}) + "\n")
    self._file.flush()
    for k, v in values.items():
      # TensorBoard tags allow [\w./-]: 'D(G(z))' -> 'D_G_z'.
      self._tb.add_scalar(re.sub(r"[^\w./-]+", "_", k).strip("_"), v, step)

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """Adds a uint8 ``[H, W, C]`` image to TensorBoard."""
    if self.enabled:
      self._tb.add_image(tag, np.asarray(image), step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tb.close()


class Progress:
  """Formats the progress line: step/total, steps/s, ETA and chosen metrics."""

  def __init__(self, total_steps: int, first_step: int):
    self.total = total_steps
    self._t0, self._s0 = time.perf_counter(), first_step

  def reset_clock(self, step: int) -> None:
    """Restarts the rate measurement (e.g. after compilation or a pause)."""
    self._t0, self._s0 = time.perf_counter(), step

  def line(self, step: int, metrics: Mapping[str, float]) -> str:
    elapsed = time.perf_counter() - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 and step > self._s0 else float("nan")
    eta = (self.total - step) / rate if rate and math.isfinite(rate) else float("nan")
    parts = [f"step {step}/{self.total}", f"{rate:.2f} steps/s", f"ETA {_fmt_duration(eta)}"]
    # Losses and D's outputs first: what a GAN researcher watches.
    first = [k for k in ("d_loss", "g_loss", "D(x)", "D(G(z))", "loss") if k in metrics]
    keys = first + sorted(k for k in metrics if k not in first)
    parts += [f"{k} {metrics[k]:.4g}" for k in keys]
    return " | ".join(parts)


def log(msg: str) -> None:
  """Prints a timestamped line to stdout (process 0 only; flushed)."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:
    print(time.strftime("%H:%M:%S ") + msg, file=sys.stdout, flush=True)
