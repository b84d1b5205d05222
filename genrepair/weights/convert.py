"""``launch.py import``: published weights -> a run directory's step-0 Orbax checkpoint.

After an import, the run directory works with every other command (``eval``, ``train`` to
fine-tune from the published weights). The checkpoint metadata records the source file and
its sha256.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genrepair.weights.matconvnet import load_dncnn_matconvnet
from genrepair.weights.srcnn_text import load_srcnn_text

# config.model.name -> importer(path) -> params tree of that family's model.
IMPORTERS: dict[str, Callable[[str], dict]] = {
    "dncnn": load_dncnn_matconvnet,
    "srcnn": load_srcnn_text,
}


def _sha256(path: str) -> str:
  if os.path.isdir(path):
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
      with open(os.path.join(path, name), "rb") as f:
        h.update(name.encode() + b"\0" + f.read())
    return "dir:" + h.hexdigest()
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}


def import_weights(config: ml_collections.ConfigDict, weights: str, workdir: str) -> str:
  """Converts published weights into ``<workdir>/checkpoints/0``.

  Args:
    config: the experiment config whose model the weights belong to (e.g.
      ``experiments/dncnn_sigma25.py:official``).
    weights: the published file or directory.
    workdir: a new run directory (must not hold checkpoints).

  Returns:
    A one-line summary.

  Raises:
    FileNotFoundError: ``weights`` does not exist.
    ValueError: no importer for ``config.model.name``; the file's parameter shapes differ
      from the config's model (names the first differing parameters); ``workdir`` already
      holds checkpoints (nothing is overwritten).
  """
  from genrepair import checkpoint, sharding, train  # pylint: disable=import-outside-toplevel
  if not os.path.exists(weights):
    raise FileNotFoundError(f"--weights {weights!r} does not exist.")
  name = config.model.name
  if name not in IMPORTERS:
    raise ValueError(f"No importer for config.model.name={name!r}; importers exist for"
                     f" {sorted(IMPORTERS)}.")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise ValueError(f"{ckpt_dir} already holds checkpoints; import into a new --workdir.")
  params = IMPORTERS[name](weights)
  task, mesh, init_rng, _, abstract, state_sharding = train.build(config)
  want, got = _shapes(abstract.params), _shapes(params)
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:6]
    raise ValueError(
        f"{weights}: parameter shapes do not match config.model {config.model.to_dict()};"
        f" first differences (path, shape): {diff}. Pick the config variant made for the"
        " published weights (e.g. ':official').")
  repl = sharding.replicated(mesh)
  state = jax.jit(task.init, out_shardings=state_sharding)(init_rng)
  params = jax.device_put(jax.tree.map(lambda a, s: np.asarray(a, s.dtype), params,
                                       abstract.params), repl)
  state = state.replace(params=params, opt_state=jax.jit(task.tx.init, out_shardings=repl)(params))
  meta = train.make_meta(config, task, 0, mesh)
  meta["imported_from"] = {"path": os.path.abspath(weights), "sha256": _sha256(weights)}
  ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
  # An empty data state: a later `train` starts the input stream from its beginning.
  ckpt.save(0, state, {}, meta)
  ckpt.close()
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))
  n = sum(int(np.prod(s)) for s in got.values())
  return f"imported {n:,} parameters from {weights} into {ckpt_dir}/0"
