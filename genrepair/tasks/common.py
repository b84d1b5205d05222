"""Pieces shared by tasks: optimizers and learning-rate schedules from config."""

from __future__ import annotations

import ml_collections
import optax

_OPTIMIZERS = {
    # name -> (optax constructor, config fields passed through)
    "adam": (optax.adam, ("b1", "b2", "eps")),
    "sgd": (optax.sgd, ("momentum",)),
}


def make_schedule(cfg: ml_collections.ConfigDict, where: str) -> optax.Schedule | float:
  """Learning rate (float) or schedule from ``cfg``.

  Fields: ``lr`` (> 0); optional ``schedule``:

  - ``'constant'`` (default);
  - ``'piecewise'`` with ``boundaries`` (steps, increasing) and ``decay`` (factor applied
    at each boundary), e.g. DnCNN's 1e-3 -> 1e-4 at a given step;
  - ``'cosine'`` with ``decay_steps`` (> 0) and optional ``alpha`` (final lr as a fraction
    of ``lr``, in [0, 1], default 0): ``lr * ((1 - alpha) * 0.5 * (1 + cos(pi * t /
    decay_steps)) + alpha)`` for ``t <= decay_steps``, then ``lr * alpha`` (Loshchilov &
    Hutter 2017, SGDR without restarts; ``optax.cosine_decay_schedule``).

  Raises:
    ValueError: non-positive lr, unknown schedule, bad boundaries, decay, decay_steps or
      alpha (the message names the field).
  """
  if not cfg.lr > 0:
    raise ValueError(f"{where}.lr must be > 0, got {cfg.lr}.")
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    return cfg.lr
  if kind == "piecewise":
    bounds = [int(b) for b in cfg.boundaries]
    if not bounds or any(b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
      raise ValueError(f"{where}.boundaries must be increasing positive steps, got {bounds}.")
    if not 0 < cfg.decay <= 1:
      raise ValueError(f"{where}.decay must be in (0, 1], got {cfg.decay}.")
    return optax.piecewise_constant_schedule(cfg.lr, {b: cfg.decay for b in bounds})
  if kind == "cosine":
    steps = cfg.get("decay_steps", 0)
    if not (isinstance(steps, int) and steps > 0):
      raise ValueError(f"{where}.decay_steps must be a positive int for the cosine schedule,"
                       f" got {steps!r}.")
    alpha = cfg.get("alpha", 0.0)
    if not 0 <= alpha <= 1:
      raise ValueError(f"{where}.alpha must be in [0, 1], got {alpha}.")
    return optax.cosine_decay_schedule(cfg.lr, decay_steps=steps, alpha=alpha)
  raise ValueError(f"{where}.schedule={kind!r}; known: 'constant', 'piecewise', 'cosine'.")


def make_optimizer(cfg: ml_collections.ConfigDict, where: str) -> optax.GradientTransformation:
  """Builds an optax optimizer from ``{name, lr, [schedule...], ...}``.

  Args:
    cfg: ``name`` ('adam' | 'sgd'), ``lr`` (float > 0), an optional schedule (see
      :func:`make_schedule`) and the optimizer's own fields (adam: ``b1``, ``b2``, ``eps``;
      sgd: ``momentum``).
    where: config path for error messages.

  Raises:
    ValueError: unknown optimizer name, non-positive learning rate, bad schedule.
  """
  if cfg.name not in _OPTIMIZERS:
    raise ValueError(f"{where}.name={cfg.name!r} is not a known optimizer; known:"
                     f" {sorted(_OPTIMIZERS)}.")
  fn, fields = _OPTIMIZERS[cfg.name]
  return fn(make_schedule(cfg, where), **{k: cfg[k] for k in fields if k in cfg})
