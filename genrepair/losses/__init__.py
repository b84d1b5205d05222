"""Loss registry and ``combine``: configs select loss terms by name and weight.

A config holds e.g. ``losses.d = {'d_minimax': 1.0}`` and ``losses.g = {'g_nonsaturating':
1.0}``. A task computes the inputs it has (logits, images, ...) and calls
:func:`evaluate`, which calls each registered loss with a non-zero weight (a weight of 0
removes the term at trace time), averages it over the batch and returns the weighted total
plus every term by name, so that all terms reach the logs.

Adding a loss = one pure function (keyword-only args, per-example ``[B]`` output) + one
entry in :data:`REGISTRY`; no task edits.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from genrepair.losses.adversarial import (d_hinge, d_least_squares, d_minimax, d_wasserstein,
                                         g_hinge, g_least_squares, g_minimax,
                                         g_nonsaturating, g_wasserstein, gradient_penalty,
                                         path_length, r1_penalty)
from genrepair.losses.likelihood import bernoulli_nll, gaussian_nll, kl_normal, logistic_nll
from genrepair.losses.pixel import charbonnier, l1, l2, ssim

LossFn = Callable[..., jax.Array]

REGISTRY: dict[str, LossFn] = {
    "d_minimax": d_minimax,
    "g_minimax": g_minimax,
    "g_nonsaturating": g_nonsaturating,
    "d_wasserstein": d_wasserstein,
    "g_wasserstein": g_wasserstein,
    "gradient_penalty": gradient_penalty,
    "r1_penalty": r1_penalty,
    "path_length": path_length,
    "d_hinge": d_hinge,
    "g_hinge": g_hinge,
    "d_least_squares": d_least_squares,
    "g_least_squares": g_least_squares,
    "l1": l1,
    "l2": l2,
    "charbonnier": charbonnier,
    "ssim": ssim,
    "bernoulli_nll": bernoulli_nll,
    "gaussian_nll": gaussian_nll,
    "logistic_nll": logistic_nll,
    "kl_normal": kl_normal,
}


def get(name: str) -> LossFn:
  """Returns the registered loss ``name``.

  Raises:
    ValueError: unknown name; the message lists the closest registered names.
  """
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown loss {name!r}.{hint} Registered: {sorted(REGISTRY)}.")
  return REGISTRY[name]


def check_weights(weights: Mapping[str, float], available: set[str], where: str) -> None:
  """Validates a ``{name: weight}`` mapping before anything compiles.

  Args:
    weights: loss name -> non-negative float weight.
    available: names of the inputs the task will provide (e.g. ``{'real_logits',
      'fake_logits'}``); each selected loss must need only these.
    where: config path for error messages, e.g. ``'config.losses.d'``.

  Raises:
    ValueError: unknown loss name, negative/non-numeric weight, a loss that needs an
      input this task does not provide, or no term with a non-zero weight.
  """
  if not any(float(w) != 0 for w in weights.values()):
    raise ValueError(f"{where} selects no loss term with a non-zero weight: {dict(weights)}.")
  for name, w in weights.items():
    fn = get(name)
    if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
      raise ValueError(f"{where}.{name}: weight must be a finite number >= 0, got {w!r}.")
    missing = _required_args(fn) - available
    if missing:
      raise ValueError(
          f"{where}.{name}: loss needs inputs {sorted(missing)} that this task does not"
          f" provide (it provides {sorted(available)}).")


def _required_args(fn: LossFn) -> set[str]:
  params = inspect.signature(fn).parameters.values()
  return {p.name for p in params if p.default is inspect.Parameter.empty}


def combine(weights: Mapping[str, float],
            terms: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of scalar loss terms.

  Args:
    weights: name -> weight; names with weight 0 are skipped (not even read).
    terms: name -> float scalar (already batch-averaged).

  Returns:
    ``(total, named_terms)``: float32 scalar and the dict of the terms that were used
    (unweighted, so logs compare across weightings).

  Raises:
    KeyError: a weighted name has no term.
  """
  total = jnp.zeros((), jnp.float32)
  named = {}
  for name, w in weights.items():
    if float(w) == 0.0:
      continue
    named[name] = terms[name]
    total = total + float(w) * terms[name]
  return total, named


def evaluate(weights: Mapping[str, float], **inputs: Any) -> tuple[jax.Array,
                                                                    dict[str, jax.Array]]:
  """Computes the selected losses from ``inputs`` and combines them.

  Each loss with a non-zero weight is called with the subset of ``inputs`` its signature
  names, its per-example ``[B]`` output is averaged over the batch, and the results go
  through :func:`combine`.

  Returns:
    ``(total, named_terms)`` as in :func:`combine`.
  """
  terms = {}
  for name, w in weights.items():
    if float(w) == 0.0:
      continue
    fn = get(name)
    accepted = inspect.signature(fn).parameters
    terms[name] = jnp.mean(fn(**{k: v for k, v in inputs.items() if k in accepted}))
  return combine(weights, terms)


__all__ = ["REGISTRY", "get", "check_weights", "combine", "evaluate",
           "d_minimax", "g_minimax", "g_nonsaturating", "d_wasserstein", "g_wasserstein",
           "gradient_penalty", "r1_penalty", "path_length", "d_hinge", "g_hinge", "d_least_squares",
           "g_least_squares", "l1", "l2", "charbonnier", "ssim", "bernoulli_nll",
           "gaussian_nll", "logistic_nll", "kl_normal"]
