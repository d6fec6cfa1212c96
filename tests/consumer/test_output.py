"""The output producer: a batch waits for its own delivery reports only; a fatal error replaces the producer."""

from __future__ import annotations

from confluent_kafka import KafkaError

from consumer.kafka.output import Outgoing, OutputProducer
from tests.conftest import unique

from .harness import read_topic


class CountingWaiter:
    """What send() needs from the consumer loop; gives up after `limit` waits, as a stuck loop would never return."""

    def __init__(self, limit: int = 10_000) -> None:
        self.idles = 0
        self.limit = limit
        self.troubles: list[str] = []

    def idle(self, seconds: float = 0.0) -> None:
        self.idles += 1
        assert self.idles <= self.limit, "send() kept waiting for delivery reports that never come"

    def trouble(self, name: str, detail: str) -> None:
        self.troubles.append(detail)

    def recovered(self, name: str) -> None:
        pass


def test_a_batch_is_not_held_up_by_another_message_the_broker_cannot_take(kafka_bootstrap, make_topic):
    """Item 2: a message with nowhere to go (here: a topic that does not exist and may not be created,
    as an alerts partition without a leader) stays queued for its whole delivery timeout. send() of a
    batch on the same producer returns once the batch is acked, while that message is still unreported."""
    topic = make_topic("out")
    producer = OutputProducer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                               "linger.ms": 5, "allow.auto.create.topics": False, "message.timeout.ms": 60_000})
    stuck_reports: list = []
    assert producer.submit(Outgoing(unique("no-such-alerts"), b"q", b"{}"), stuck_reports.append)
    batch = [Outgoing(topic, b"k", b"labelled-%d" % i) for i in range(20)]
    assert producer.send(batch, CountingWaiter()) == []
    assert stuck_reports == [], "send() waited for a message that is not part of its batch"
    assert sorted(m.value() for m in read_topic(kafka_bootstrap, topic, expect=20, timeout=30)) == sorted(m.value for m in batch)
    producer.producer.purge()
    producer.flush(5)


class FakeProducer:
    """librdkafka's producer after an idempotence failure: the fatal error comes in a delivery report with
    code _FATAL and fatal() unset, and the messages queued behind it are never reported."""

    created: list["FakeProducer"] = []

    def __init__(self, config: dict) -> None:
        self.broken = not FakeProducer.created  # the first one fails fatally on its second message
        self.dead = False
        self.queued: list = []
        self.delivered: list[bytes] = []
        FakeProducer.created.append(self)

    def produce(self, topic, value=None, key=None, on_delivery=None) -> None:
        self.queued.append((value, on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        if self.dead:
            return 0
        queued, self.queued = self.queued, []
        for i, (value, report) in enumerate(queued):
            if self.broken and i == 1:
                report(KafkaError(KafkaError._FATAL, "Fatal error: OUT_OF_ORDER_SEQUENCE_NUMBER"), None)
                self.dead = True
                self.queued = queued[2:]  # stuck behind the fatal error, never reported
                return i + 1
            self.delivered.append(value)
            report(None, None)
        return len(queued)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return len(self.queued)


def test_a_fatal_delivery_report_replaces_the_producer_and_resends_everything_not_acked():
    """Item 3: detected by its code, not fatal(); only positive acks count; the rest goes to the new producer."""
    FakeProducer.created.clear()
    producer = OutputProducer({}, create=FakeProducer)
    batch = [Outgoing("out", None, b"m%d" % i) for i in range(4)]
    assert producer.send(batch, CountingWaiter(limit=200)) == []
    first, second = FakeProducer.created
    assert first.delivered == [b"m0"]
    assert second.delivered == [b"m1", b"m2", b"m3"]  # the fatal one and the unreported ones, not the acked one
    assert producer.generation == 1


def test_a_fatal_report_to_a_submitted_message_replaces_the_producer_at_the_next_poll():
    FakeProducer.created.clear()
    producer = OutputProducer({}, create=FakeProducer)
    reports: list = []
    for i in range(2):
        producer.submit(Outgoing("alerts", None, b"a%d" % i), reports.append)
    producer.poll()
    assert reports[0] is None and reports[1].code() == KafkaError._FATAL
    assert len(FakeProducer.created) == 2 and producer.generation == 1
