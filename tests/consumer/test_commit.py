"""The commit step: a failed asynchronous commit is sent again only while it is still owned and the newest."""

from __future__ import annotations

from consumer.kafka.span import Span
from consumer.observability import Metrics
from consumer.pipeline.commit import CommitStep
from consumer.pipeline.records import LabelledBatch


class FakeSource:
    def __init__(self) -> None:
        self.commits: list[dict] = []

    def commit(self, offsets: dict, asynchronous: bool) -> None:
        self.commits.append(dict(offsets))


def _delivered(step: CommitStep, tp: tuple[str, int], first: int, last: int) -> None:
    span = Span()
    for offset in range(first, last + 1):
        span.add(tp, offset, 1)
    step.run(LabelledBatch([], span, last - first + 1))


def test_a_failed_commit_is_retried_while_it_is_the_newest_of_a_partition_still_owned():
    source = FakeSource()
    step = CommitStep(source, Metrics())
    a, b, c = ("in", 0), ("in", 1), ("in", 2)
    for tp in (a, b, c):
        _delivered(step, tp, 0, 9)
    source.on_commit_failed({a: 10, b: 10, c: 10})  # refused during a rebalance
    _delivered(step, b, 10, 19)  # b moved on: its newer commit supersedes the failed one
    source.on_revoked({c})  # c left this process: its next owner starts from its last commit
    source.commits.clear()
    step.retry_failed()
    assert source.commits == [{a: 10}]
    step.retry_failed()
    assert source.commits == [{a: 10}]  # sent once; a new failure report would queue it again
