"""Metrics fed by librdkafka's statistics callback: lag only for the partitions this process reads."""

from __future__ import annotations

import orjson

from consumer.observability import Metrics


def stats(partitions: dict[str, dict[str, dict]]) -> str:
    """A librdkafka statistics report, reduced to the fields on_stats reads (topics -> partitions)."""
    return orjson.dumps({"type": "consumer", "topics": {
        topic: {"topic": topic, "partitions": {
            "-1": {"partition": -1, "fetch_state": "none", "consumer_lag": -1},  # librdkafka's internal UA partition
            **{p: {"partition": int(p), **fields} for p, fields in parts.items()},
        }} for topic, parts in partitions.items()}}).decode()


def lags(metrics: Metrics) -> dict[tuple[str, str], float]:
    family = next(f for f in metrics.registry.collect() if f.name == "sentiment_consumer_lag")
    return {(s.labels["topic"], s.labels["partition"]): s.value for s in family.samples}


def active(lag: int) -> dict:
    return {"fetch_state": "active", "consumer_lag": lag}


def test_lag_of_partitions_no_longer_read_here_is_removed():
    metrics = Metrics()
    metrics.on_stats(stats({"reviews": {"0": active(7), "1": active(5), "2": active(4), "3": active(1)},
                            "search-results": {"0": active(2)}}))
    assert lags(metrics) == {("reviews", "0"): 7, ("reviews", "1"): 5, ("reviews", "2"): 4, ("reviews", "3"): 1,
                             ("search-results", "0"): 2}
    assert metrics.total_lag == 19

    # After a rebalance: reviews 1 is gone from the report; reviews 2 was revoked and stopped, yet
    # librdkafka still derives its lag from the last committed offset; reviews 3's lag is unknown;
    # search-results is no longer assigned at all.
    metrics.on_stats(stats({"reviews": {"0": active(3), "2": {"fetch_state": "stopped", "consumer_lag": 4},
                                        "3": active(-1)}}))
    assert lags(metrics) == {("reviews", "0"): 3}
    assert metrics.total_lag == 3

    # Assigned again (fetching resumes after the offset lookup): exported again.
    metrics.on_stats(stats({"reviews": {"0": active(3), "1": {"fetch_state": "offset-query", "consumer_lag": 6}}}))
    assert lags(metrics) == {("reviews", "0"): 3, ("reviews", "1"): 6}
