"""Model registry: ``get(name)`` returns a family's ``Model(*, variant=None, **kw)``.

One file per model family; each exposes ``Model`` over a documented variant table.
"""

from __future__ import annotations

import difflib
from typing import Callable

from genrepair.models import cyclegan
from genrepair.models import dcgan
from genrepair.models import digit_classifier
from genrepair.models import dncnn
from genrepair.models import drrn
from genrepair.models import edsr
from genrepair.models import encdec
from genrepair.models import espcn
from genrepair.models import srcnn
from genrepair.models import stylegan2
from genrepair.models import unet
from genrepair.models import vae

REGISTRY: dict[str, Callable] = {
    "cyclegan": cyclegan.Model,
    "dcgan": dcgan.Model,
    "digit_classifier": digit_classifier.Model,
    "dncnn": dncnn.Model,
    "drrn": drrn.Model,
    "edsr": edsr.Model,
    "encdec": encdec.Model,
    "espcn": espcn.Model,
    "srcnn": srcnn.Model,
    "stylegan2": stylegan2.Model,
    "unet": unet.Model,
    "vae": vae.Model,
}


def get(name: str) -> Callable:
  """Returns the ``Model`` factory of family ``name``.

  Raises:
    ValueError: unknown family; lists close and registered names.
  """
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown model {name!r}.{hint} Registered: {sorted(REGISTRY)}.")
  return REGISTRY[name]
