"""Learning-rate schedules from config (genrepair/tasks/common.py) against hand values."""

import glob
import importlib.util
import math
import os
import re

import ml_collections
import pytest

from genrepair.tasks import common
from tests.conftest import REPO


def _cfg(**kw):
  return ml_collections.ConfigDict(dict(name="adam", lr=1e-3, **kw))


def test_cosine_schedule_values():
  sched = common.make_schedule(_cfg(schedule="cosine", decay_steps=100, alpha=0.1), "optim")
  # lr * ((1 - alpha) * 0.5 * (1 + cos(pi t / T)) + alpha), then lr * alpha.
  for t, want in [(0, 1e-3), (50, 1e-3 * (0.9 * 0.5 + 0.1)), (100, 1e-4), (250, 1e-4),
                  (25, 1e-3 * (0.9 * 0.5 * (1 + math.cos(math.pi / 4)) + 0.1))]:
    assert float(sched(t)) == pytest.approx(want, rel=1e-6), t


def test_piecewise_schedule_values():
  sched = common.make_schedule(_cfg(schedule="piecewise", boundaries=[10, 20], decay=0.1),
                               "optim")
  # optax: the decay applies from the boundary step on.
  assert [float(sched(t)) for t in (0, 9, 10, 20)] == pytest.approx(
      [1e-3, 1e-3, 1e-4, 1e-5], rel=1e-6)


@pytest.mark.parametrize("kw, field", [
    (dict(schedule="cosine"), "decay_steps"),
    (dict(schedule="cosine", decay_steps=10, alpha=1.5), "alpha"),
    (dict(schedule="piecewise", boundaries=[20, 10], decay=0.1), "boundaries"),
    (dict(schedule="linear"), "schedule"),
])
def test_bad_schedules_name_the_field(kw, field):
  with pytest.raises(ValueError, match=f"optim.{field}"):
    common.make_schedule(_cfg(**kw), "optim")


def _experiment_configs():
  """Every experiment file's configs: '' and each ``arg == "..."`` variant it defines."""
  for path in sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))):
    spec = importlib.util.spec_from_file_location("exp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(path, encoding="utf-8") as f:
      args = sorted(set(re.findall(r'arg == "(\w+)"', f.read())))
    for arg in [None] + args:
      yield f"{os.path.basename(path)}:{arg or ''}", module.get_config(arg)


def test_no_experiment_field_is_a_list():
  # absl/ml_collections cannot override a list field from the command line
  # (--config.optim.boundaries='(500, 900)' is refused for a list, accepted for a tuple),
  # so sequence-valued fields are tuples.
  names = []
  for name, config in _experiment_configs():
    names.append(name)
    stack = [("", config)]
    while stack:
      prefix, d = stack.pop()
      for k, v in d.items():
        if isinstance(v, ml_collections.ConfigDict):
          stack.append((f"{prefix}{k}.", v))
        assert not isinstance(v, list), f"{name} {prefix}{k} is a list: {v}"
  assert len(names) >= 20 and "dncnn_sigma25.py:runlocal" in names
  # And a tuple field takes a piecewise schedule's boundaries, as --config.<key> would set.
  c = dict(_experiment_configs())["mnist_classifier.py:"]
  c.optim.boundaries = (500, 900)
  sched = common.make_schedule(c.optim, "config.optim")
  assert float(sched(899)) == pytest.approx(c.optim.lr * c.optim.decay, rel=1e-6)
