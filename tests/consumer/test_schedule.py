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


class CountedSubject(tuple):
    """A subject that counts how often it is hashed: each dict operation on it hashes it once."""

    hashes = 0

    def __hash__(self) -> int:
        CountedSubject.hashes += 1
        return tuple.__hash__(self)


def test_a_flood_of_new_subjects_evicts_the_least_recently_touched():
    schedule = EvaluationSchedule(interval_s=10, window_s=300, max_subjects=4)
    firing = ("query", "firing at start-up")
    a, b, c, d, e = (("query", name) for name in "abcde")
    schedule.watch([firing], now=0)
    schedule.touched([a, b, c], now=1)
    schedule.touched([a], now=2)  # touched again: now the most recent of the three
    schedule.touched([d, e], now=3)  # two over the bound: b and c go
    assert len(schedule) == 4
    assert sorted(schedule.due(3, 100)) == sorted([firing, a, d, e])


def test_touching_a_full_schedule_costs_the_touched_and_evicted_subjects_not_all_of_them():
    schedule = EvaluationSchedule(interval_s=10, window_s=300, max_subjects=10_000)
    old = [CountedSubject(("query", f"old {i}")) for i in range(10_000)]
    schedule.touched(old, now=0)
    CountedSubject.hashes = 0
    schedule.touched([CountedSubject(("query", f"new {i}")) for i in range(10)], now=1)
    assert len(schedule) == 10_000
    # 10 touched and 10 evicted, a few dict operations each; ordering all 10,000 by their last touch hashes each of them.
    assert CountedSubject.hashes <= 100
    assert sorted(schedule.due(1, 20_000)) == sorted(old[10:] + [("query", f"new {i}") for i in range(10)])
