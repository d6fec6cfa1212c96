"""The evaluation schedule: due on events and on time; kept while recent or firing."""

from __future__ import annotations

from consumer.alerts.schedule import EvaluationSchedule

Q = ("query", "phone charger")
P = ("product", "p-1")


def test_due_at_once_then_every_interval_while_the_window_can_change():
    schedule = EvaluationSchedule(interval_s=10, window_s=300)
    schedule.touched([Q, P], now=0)
    assert sorted(schedule.due(0, 100)) == sorted([Q, P])
    schedule.evaluated([Q, P], firing=set(), now=0)
    assert schedule.due(5, 100) == []
    schedule.touched([Q], now=6)  # touched again before it is due: no extra evaluation
    assert schedule.due(9, 100) == []
    assert sorted(schedule.due(10, 100)) == sorted([Q, P])  # no new events needed


def test_quiet_subjects_drop_out_but_firing_ones_stay():
    schedule = EvaluationSchedule(interval_s=10, window_s=30)
    schedule.touched([Q, P], now=0)
    due = schedule.due(0, 100)
    schedule.evaluated(due, firing={Q}, now=0)
    t = 0
    while t < 100:  # the window slid past the last event long ago
        t += 10
        due = schedule.due(t, 100)
        schedule.evaluated(due, firing={Q}, now=t)
    assert due == [Q] and len(schedule) == 1
    schedule.evaluated([Q], firing=set(), now=t)  # resolved: nothing left to watch
    assert len(schedule) == 0 and schedule.due(t + 100, 100) == []


def test_watch_and_retry_and_limit():
    schedule = EvaluationSchedule(interval_s=10, window_s=30)
    schedule.watch([Q, P], now=0)
    first = schedule.due(0, 1)
    assert len(first) == 1
    schedule.retry(first, now=0)  # Redis failed: again after the interval
    assert schedule.due(5, 10) != first and schedule.due(10, 10) == first
