"""Learning-rate schedules from config (genrepair/tasks/common.py) against hand values."""

import math

import ml_collections
import pytest

from genrepair.tasks import common


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
