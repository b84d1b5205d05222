"""Pieces shared by tasks: optimizers from config."""

from __future__ import annotations

import ml_collections
import optax

_OPTIMIZERS = {
    # name -> (optax constructor, config fields passed through)
    "adam": (optax.adam, ("b1", "b2", "eps")),
    "sgd": (optax.sgd, ("momentum",)),
}


def make_optimizer(cfg: ml_collections.ConfigDict, where: str) -> optax.GradientTransformation:
  """Builds an optax optimizer from ``{name, lr, ...}``.

  Args:
    cfg: ``name`` ('adam' | 'sgd'), ``lr`` (float > 0) and the optimizer's own fields
      (adam: ``b1``, ``b2``, ``eps``; sgd: ``momentum``).
    where: config path for error messages.

  Raises:
    ValueError: unknown optimizer name or non-positive learning rate.
  """
  if cfg.name not in _OPTIMIZERS:
    raise ValueError(f"{where}.name={cfg.name!r} is not a known optimizer; known:"
                     f" {sorted(_OPTIMIZERS)}.")
  if not cfg.lr > 0:
    raise ValueError(f"{where}.lr must be > 0, got {cfg.lr}.")
  fn, fields = _OPTIMIZERS[cfg.name]
  return fn(cfg.lr, **{k: cfg[k] for k in fields if k in cfg})
