"""genrepair: JAX research code for image generation and image restoration.

Subpackages: ``data`` (tfds builders + grain pipeline), ``models``, ``losses``, ``tasks``;
modules: ``train`` (the generic loop), ``checkpoint`` (Orbax), ``sharding`` (mesh, global
batches), ``io`` (images, grids), ``sampling``, ``writers`` (progress, metrics files).
See ``../shared/DESIGN.md`` for the architecture and ``launch.py`` for the entry point.
"""

__version__ = "0.1.0"
