"""Step 3: publish a batch's labelled events and dead letters; wait for every ack.

A labelled event the broker refuses for good (too large for the topic, not authorized,
invalid) is dead-lettered with code `output_rejected` and not counted. A dead letter
the broker refuses is a fatal stop: there is nowhere left to put the event, so the
batch must not be committed.
"""

from __future__ import annotations

import logging
import time

from schemas import ErrorCode

from ..errors import FatalStop
from ..kafka.output import OutputProducer
from ..observability import Metrics
from .flow import Waiter
from .records import LabelledBatch
from .validate import dead_letter

log = logging.getLogger("consumer.produce")


class ProduceStep:
    def __init__(self, producer: OutputProducer, dlq_topic: str, metrics: Metrics) -> None:
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.metrics = metrics

    def run(self, batch: LabelledBatch, waiter: Waiter) -> None:
        refused = self.producer.send([record.outgoing for record in batch.records], waiter)
        if not refused:
            return
        by_message = {id(record.outgoing): record for record in batch.records}
        now_ms = int(time.time() * 1000)
        rerouted = []
        for message, reason in refused:
            if message.topic == self.dlq_topic:
                raise FatalStop(f"dead-letter topic {self.dlq_topic} refused a message: {reason}")
            record = by_message[id(message)]
            record.outgoing = dead_letter(record.source, ErrorCode.OUTPUT_REJECTED,
                                          f"topic {message.topic} refused the labelled event: {reason}", now_ms, self.dlq_topic)
            record.increments = []  # not published, so not counted
            rerouted.append(record.outgoing)
            self.metrics.dead_lettered.labels(ErrorCode.OUTPUT_REJECTED.value).inc()
            log.warning("output refused; dead-lettered", extra={"topic": message.topic, "reason": reason,
                                                                "source": f"{record.source.topic}[{record.source.partition}]@{record.source.offset}"})
        refused = self.producer.send(rerouted, waiter)
        if refused:
            raise FatalStop(f"dead-letter topic {self.dlq_topic} refused a message: {refused[0][1]}")
