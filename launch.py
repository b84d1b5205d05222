r"""genrepair's one entry point.

  python launch.py train  --config experiments/dcgan_mnist.py --workdir runs/dcgan_mnist
  python launch.py sample --workdir runs/dcgan_mnist --num 64 --seed 0 -o grid.png
  python launch.py eval   (--workdir runs/dncnn_s25 | --weights model.npz | --model NAME)
      [--dataset bsd68|set12|set5|set14|DIR] [--sigma 15 | --density 0.2 | --scale 3] [-o r.json]
  python launch.py import --config experiments/dncnn_sigma25.py:official \
      --weights $GENREPAIR_DATA/weights/dncnn/sigma25.mat --workdir runs/dncnn_s25_official
  python launch.py export --workdir runs/dncnn_s25 [--step N] [-o model.npz]
  python launch.py restore noisy.png -o clean.png (--workdir W [--step N] | --weights model.npz
      | --model dncnn_s25_gray) [--task denoise|sr|deblur|inpaint] [--mask holes.png] [--kernel k.npy] [--tile 128] [--overlap 34] [--overwrite]

`train` resumes from the newest checkpoint in --workdir when there is one. Config values are
overridden with --config.<key>=<value> (e.g. --config.train.batch_size=64); configs are
locked, so a misspelt key or a wrong type is an error before anything compiles.

`eval` scores a restoration model (a run, an exported .npz or a shipped model) on a test set
under the task's recorded protocol, at the model's own degradation or at another noise
level (--sigma, --density; --scale only checks an SR model's factor). Results (per image
and mean) are printed as a table and written as JSON: to -o when given, else beside the
checkpoint (<workdir>/eval/) or the .npz; a shipped model's are only printed without -o.

`export` writes a restoration run's weights and config to one .npz (arrays only; default
<workdir>/export/step_<N>.npz) and prints its sha256. `restore` restores one image file
with a run, an exported file or a shipped model (genrepair/pretrained), in overlapping tiles
(see genrepair/restore.py for the tiling, channel, 16-bit and mask rules); an existing
output is only replaced with --overwrite.

Host memory: GENREPAIR_MALLOC=auto (default) | mimalloc | reuse | system
(genrepair/hostmem.py). With mimalloc installed (the `mimalloc` extra) the process restarts
itself once at start-up with it preloaded, so that the steps' large host buffers are kept
for the next step instead of being mapped and zero-filled anew; stderr says which.

Convolutions: GENREPAIR_CONV=auto (default) | onednn | xla (genrepair/models/conv.py).
With the `onednn` extra installed and g++ present, 2-D float32 convolutions on CPU run
through oneDNN (genrepair/kernels/onednn.py), else through XLA; stderr says which.
"""

from __future__ import annotations

import os
import sys

from genrepair import hostmem

try:  # keep and reuse the steps' large host buffers (genrepair/hostmem.py; GENREPAIR_MALLOC):
  # with mimalloc installed this process restarts once, with it preloaded.
  _MALLOC = hostmem.configure(restart_argv=sys.orig_argv[1:])
except (ValueError, OSError, RuntimeError) as _e:
  sys.exit(f"launch.py: {_e}")
if _MALLOC and _MALLOC.get("allocator") == "mimalloc":
  print(f"launch.py: host malloc: mimalloc ({_MALLOC['library']}, MIMALLOC_PURGE_DELAY="
        f"{_MALLOC['MIMALLOC_PURGE_DELAY']})", file=sys.stderr, flush=True)

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

COMMANDS = ("train", "sample", "eval", "import", "export", "restore")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/<name>.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, samples, logs).")
_NUM = flags.DEFINE_integer("num", 64, "sample: number of images.")
_SEED = flags.DEFINE_integer("seed", 0, "sample: latent seed.")
_STEP = flags.DEFINE_integer("step", None, "sample/eval/export/restore: checkpoint step"
                             " (default: newest).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "Multi-process: host:port of process 0 (with --num_processes and"
    " --process_id); on TPU pods / SLURM leave unset (auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "1", "train on a CPU host: CPU devices per process, data-parallel ('auto'"
    " = one per core that divides the batch; with the oneDNN convolutions 1 device is about"
    " as fast on 2 cores, with XLA's own 'auto' made DnCNN-S's step 1.4x faster). eval:"
    " whole test images run one per device, default"
    " 'auto' (one per core). Ignored on GPU/TPU hosts; XLA_FLAGS'"
    " --xla_force_host_platform_device_count wins.")
_DATASET = flags.DEFINE_string("dataset", None, "eval: dataset (default: the config's"
                               " eval.dataset), e.g. bsd68, set12, set5, set14, or a folder.")
_SIGMA = flags.DEFINE_float("sigma", None, "eval: Gaussian noise std on the 0-255 scale"
                            " (denoising models, fixed level; deblurring: the added noise).")
_DENSITY = flags.DEFINE_float("density", None, "eval: salt-and-pepper density in (0, 1).")
_SCALE = flags.DEFINE_integer("scale", None, "eval: SR scale factor (must be the model's).")
_WEIGHTS = flags.DEFINE_string("weights", None, "import: published weights file/directory;"
                                " restore/eval: an exported .npz (launch.py export).")
_LIMIT = flags.DEFINE_integer("limit", None, "eval: only the first N images (smoke tests).")
_OUTPUT = flags.DEFINE_string("output", None, "sample: .png/.jpg grid or .npz raw samples;"
                              " restore: the restored image; export: the .npz; eval: the"
                              " results .json.",
                              short_name="o")
_MODEL = flags.DEFINE_string("model", None, "restore/eval: a shipped model name (genrepair/"
                             "pretrained), e.g. dncnn_s25_gray, espcn_x3.")
_TASK = flags.DEFINE_string("task", None, "restore: the task the model must do (denoise, sr,"
                           " deblur, inpaint); a model of another task is an error.")
_MASK = flags.DEFINE_string("mask", None, "restore: inpainting hole mask image (white = hole),"
                            " the input's size.")
_KERNEL = flags.DEFINE_string("kernel", None, "restore: the blur kernel of a non-blind"
                              " deblurring model (.npy, or a gray image; normalised to sum 1).")
_TILE = flags.DEFINE_integer("tile", None, "restore/eval: tile size in model-input pixels"
                             " (restore default 128, larger for models with a large receptive"
                             " field; eval: the config's eval.tile, 0 = automatic, N = tiles"
                             " of N px, -1 = whole images).")
_OVERLAP = flags.DEFINE_integer("overlap", None, "restore: tile overlap in model-input pixels"
                                " (default: twice the model's receptive-field radius).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "restore/export: replace an existing"
                                  " output file.")


def _setup_jax() -> None:
  import jax  # pylint: disable=import-outside-toplevel
  # Persistent compilation cache: a repeated run skips recompiling its steps.
  cache = os.environ.get("GENREPAIR_JAX_CACHE",
                         os.path.expanduser("~/.cache/genrepair/jax"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: list[str]) -> None:
  """Runs a command; user-facing errors print one line (no traceback) and exit 1."""
  try:
    _main(argv)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    sys.stderr.write(f"ERROR: {type(e).__name__}: {e}\n")
    sys.exit(1)


def _main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"Usage: launch.py {{{'|'.join(COMMANDS)}}} [flags]; got"
                         f" {argv[1:]}.")
  command = argv[1]
  if command == "restore":
    if len(argv) != 3:
      raise app.UsageError("Usage: launch.py restore INPUT -o OUTPUT (--workdir W [--step N] |"
                           f" --weights model.npz | --model NAME) [...]; got {argv[1:]}.")
    if not _OUTPUT.value:
      raise app.UsageError("restore needs -o/--output (the restored image, e.g. out.png).")
  elif len(argv) != 2:
    raise app.UsageError(f"launch.py {command} takes no positional arguments; got"
                         f" {argv[2:]}.")
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every save at INFO; keep the console for our progress lines unless the
    # user asks for more with --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  model_source = command == "eval" and (_WEIGHTS.value or _MODEL.value)
  if command != "restore" and not _WORKDIR.value and not model_source:
    raise app.UsageError("--workdir is required" + (" (or, for eval, --weights / --model)."
                                                   if command == "eval" else "."))
  _setup_jax()
  from genrepair import sharding  # pylint: disable=import-outside-toplevel
  count = None
  if command == "train" and _CONFIG.value is not None:
    count = sharding.cpu_device_count(_CPU_DEVICES.value, int(_CONFIG.value.train.batch_size),
                                      _CONFIG.value.mesh, num_processes=_NUM_PROCESSES.value or 1)
  elif command == "eval":
    # Whole test images go round-robin to the CPU devices (genrepair/evaluate.py): by
    # default one device per core (BSD68 with DnCNN-S on 2 cores: 1.01 -> 0.89 s per image).
    count = sharding.eval_cpu_device_count(
        _CPU_DEVICES.value if flags.FLAGS["cpu_devices"].present else "auto")
  elif _CPU_DEVICES.value != "1":
    raise app.UsageError("--cpu_devices applies to train and eval only.")
  if count:
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_num_cpu_devices", count)  # before the backend starts
  if command == "restore":
    from genrepair import restore  # pylint: disable=import-outside-toplevel
    restore.check_output(_OUTPUT.value, overwrite=_OVERWRITE.value)  # before loading
    task, state, source = restore.load_model(workdir=_WORKDIR.value, step=_STEP.value,
                                             weights=_WEIGHTS.value, model=_MODEL.value)
    if _TASK.value:
      restore.check_task(task, _TASK.value, source)
    print(restore.restore_file(task, state, argv[2], _OUTPUT.value, mask_path=_MASK.value,
                               kernel_path=_KERNEL.value, tile=_TILE.value, overlap=_OVERLAP.value,
                               overwrite=_OVERWRITE.value) + f"; model: {source}")
    return
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if command in ("train", "eval", "sample"):
    from genrepair.kernels import onednn  # pylint: disable=import-outside-toplevel
    from genrepair.models import conv  # pylint: disable=import-outside-toplevel
    try:
      print(f"launch.py: convolutions: {conv.backend_summary()}", file=sys.stderr, flush=True)
    except onednn.OneDNNUnavailable as e:
      raise ValueError(f"GENREPAIR_CONV=onednn: {e}") from None
  if command == "train":
    if _CONFIG.value is None:
      raise app.UsageError("train needs --config experiments/<name>.py")
    from genrepair import train  # pylint: disable=import-outside-toplevel
    train.run(_CONFIG.value, _WORKDIR.value)
    return
  if command == "sample":
    if not _OUTPUT.value:
      raise app.UsageError("sample needs -o/--output (.png grid or .npz raw samples).")
    from genrepair import sampling  # pylint: disable=import-outside-toplevel
    task, state, step, _ = sampling.load_run(_WORKDIR.value, _STEP.value)
    images = sampling.generate(task, state, num=_NUM.value, seed=_SEED.value)
    print(f"step {step}: " + sampling.write(images, _OUTPUT.value))
  if command == "export":
    from genrepair import restore, sampling  # pylint: disable=import-outside-toplevel
    task, state, step, config = sampling.load_run(_WORKDIR.value, _STEP.value)
    del task
    path = _OUTPUT.value or os.path.join(_WORKDIR.value, "export", f"step_{step:07d}.npz")
    digest = restore.export(config, state, path, step=step, source=_WORKDIR.value,
                            overwrite=_OVERWRITE.value)
    print(f"step {step}: wrote {path} ({os.path.getsize(path):,} bytes)\nsha256 {digest}")
  if command == "import":
    if _CONFIG.value is None or not _WEIGHTS.value:
      raise app.UsageError("import needs --config and --weights.")
    from genrepair import weights  # pylint: disable=import-outside-toplevel
    print(weights.import_weights(_CONFIG.value, _WEIGHTS.value, _WORKDIR.value))
  if command == "eval":
    _eval()


def _eval() -> None:
  """``launch.py eval``: a run's own metrics, or a restoration model on a test set."""
  from genrepair import evaluate, restore, sampling  # pylint: disable=import-outside-toplevel
  if _OUTPUT.value and not _OUTPUT.value.endswith(".json"):
    raise ValueError(f"eval -o {_OUTPUT.value!r}: the results file must end in .json.")
  if _WEIGHTS.value or _MODEL.value:  # an exported or shipped restoration model
    task, state, source = restore.load_model(workdir=_WORKDIR.value, step=_STEP.value,
                                             weights=_WEIGHTS.value, model=_MODEL.value)
    config, step = task.config, None
  else:
    task, state, step, config = sampling.load_run(_WORKDIR.value, _STEP.value)
    source = f"{_WORKDIR.value} step {step}"
  overrides = dict(sigma=_SIGMA.value, density=_DENSITY.value, scale=_SCALE.value)
  if not hasattr(task, "eval_protocol"):
    if not hasattr(task, "evaluate") or "eval" not in config:
      raise app.UsageError(f"{_WORKDIR.value} is a {config.task!r} run whose config has no"
                           " evaluation.")
    bad = [f"--{k}" for k, v in overrides.items() if v is not None]
    if bad or _DATASET.value:
      raise ValueError(f"{' '.join(bad + (['--dataset'] if _DATASET.value else []))} apply"
                       f" to restoration models; {_WORKDIR.value} is a {config.task!r} run.")
    # The task's own metrics (FID/KID/IS-digits, NLL, accuracy, cycle error).
    results = task.evaluate(state, config)
    path = _OUTPUT.value or os.path.join(_WORKDIR.value, "eval", f"step_{step:07d}.json")
    evaluate.write(results, path)
    for k, v in results.items():
      if isinstance(v, (int, float)):
        print(f"{k:<20} {v:.6g}")
    print(f"step {step}; written to {path}")
    return
  task, config, tag = evaluate.with_degradation(task, config, **overrides)
  with config.unlocked():
    if _DATASET.value:
      config.eval.dataset = _DATASET.value
    if _TILE.value is not None:  # runs saved before eval.tile existed lack the key
      config.eval.tile = _TILE.value
  results = evaluate.evaluate(task, state, config, limit=_LIMIT.value)
  results["model"] = source
  name = os.path.basename(os.path.normpath(str(config.eval.dataset))) + (f"_{tag}" if tag else "")
  if _OUTPUT.value:
    path = _OUTPUT.value
  elif _WORKDIR.value:
    path = os.path.join(_WORKDIR.value, "eval", f"{name}_step_{step:07d}.json")
  elif _WEIGHTS.value:
    path = f"{os.path.splitext(_WEIGHTS.value)[0]}_eval_{name}.json"
  else:
    path = None  # a shipped model: the package folder is not the user's
  if path:
    evaluate.write(results, path)
  print(evaluate.table(results))
  tiling = results["tiling"]
  where = ("whole images" if tiling["tile"] is None else
           f"{tiling['tile']} px tiles (overlap {tiling['overlap']})")
  print(f"protocol: {task.eval_protocol().describe()}; noise seed {results['seed']};"
        f" model {source}; on {where}, {tiling['model_programs']} compiled model program(s);"
        f" {results['seconds']:.1f} s; " + (f"written to {path}" if path else
                                             "not written (pass -o results.json to keep it)"))


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, turning a bad --config.<key> override into a one-line error."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # Wrong type, unknown flag: absl's message names the flag.
    sys.stderr.write(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to"
                     " see help on flags.\n")
    sys.exit(1)
  except (AttributeError, KeyError) as e:
    # ml_collections reports a missing key of a locked config as AttributeError/KeyError
    # whose text holds the suggestion ('Did you mean "batch_size"...').
    text = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    sys.stderr.write(
        f"FATAL Flags parsing error: unknown config key in {' '.join(bad)}: {text}. Keys"
        " must exist in the experiment's config (configs are locked).\n")
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
