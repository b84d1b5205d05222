"""Native kernels called from jitted JAX code through XLA's FFI (CPU only, optional).

- :mod:`genrepair.kernels.onednn`: 2-D float32 convolutions (forward, input and weight
  gradients) through oneDNN, used by ``genrepair.models.conv`` under ``GENREPAIR_CONV``.
"""
