"""Task registry: ``get(name)`` returns the task class built from a config.

A task binds models, losses and optimizers by closure and exposes pure functions:
``init(rng) -> state``, ``train_step(state, batch, rng) -> (state, metrics)``,
``sample(state, ...)``; plus ``image_range`` and ``protocol()`` for metadata.
"""

from __future__ import annotations

import difflib

from genrepair.tasks.classifier import ClassifierTask
from genrepair.tasks.cyclegan import CycleGANTask
from genrepair.tasks.gan import GANTask
from genrepair.tasks.restoration import RestorationTask
from genrepair.tasks.vae import VAETask

REGISTRY = {"classifier": ClassifierTask, "cyclegan": CycleGANTask, "gan": GANTask,
            "restoration": RestorationTask, "vae": VAETask}


def get(name: str):
  """Returns the task class ``name``.

  Raises:
    ValueError: unknown task (lists close and registered names).
  """
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown task {name!r}.{hint} Registered: {sorted(REGISTRY)}.")
  return REGISTRY[name]
