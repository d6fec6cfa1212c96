"""The consumer loop: poll a micro-batch, build its outputs, deliver them, update Redis, commit.

Offsets are committed only at the end of the chain: after every produced message of
the batch is acknowledged AND the batch's counter update succeeded. While a sink is
slow (acks pending, Redis down) the assigned partitions are paused and the consumer
keeps polling, so the group never times the process out.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas import Limits

from .config import AlertSettings, CounterSettings, KafkaSettings, ModelSettings, RedisSettings, RuntimeSettings, parse_duration
from .kafka.clients import consumer_config, ensure_topics, producer_config, redact
from .alerts.detector import SpikeDetector
from .alerts.rule import SpikeRule
from .alerts.webhook import WebhookNotifier
from .kafka.output import OutputProducer, Outgoing
from .model.classifier import SentimentClassifier
from .observability import Metrics, serve_metrics
from .pipeline.batch import BatchBuilder, PreparedBatch, Topics
from .redis_client import connect, redacted_url
from .state.counters import CounterLayout, CounterStore
from .errors import ConfigError

log = logging.getLogger("consumer")


@dataclass
class Settings:
    kafka: KafkaSettings
    redis: RedisSettings
    counters: CounterSettings
    model: ModelSettings
    runtime: RuntimeSettings
    alerts: AlertSettings = field(default_factory=AlertSettings)

    def layout(self) -> CounterLayout:
        try:
            windows = tuple(sorted({parse_duration(w) for w in self.counters.windows}))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not windows:
            raise ConfigError("--windows needs at least one window")
        if self.counters.bucket_seconds <= 0 or 3600 % self.counters.bucket_seconds:
            raise ConfigError(f"--bucket-seconds {self.counters.bucket_seconds} must divide 3600")
        return CounterLayout(self.redis.redis_prefix, self.counters.bucket_seconds, windows)


def build_detector(settings: Settings, store: CounterStore) -> SpikeDetector:
    a = settings.alerts
    try:
        window_s, baseline_s, cooldown_s = (parse_duration(a.alert_window), parse_duration(a.alert_baseline_window),
                                            parse_duration(a.alert_cooldown))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if window_s > store.layout.fine_horizon:
        raise ConfigError(f"--alert-window {a.alert_window} must fit the fine buckets (at most {store.layout.fine_horizon} s)")
    if baseline_s + window_s > store.layout.longest + 3600:
        raise ConfigError(f"--alert-baseline-window {a.alert_baseline_window} is longer than the counters keep (--windows)")
    rule = SpikeRule(a.alert_min_count, a.alert_min_increase, a.alert_z, a.alert_min_baseline, a.alert_prior_share)
    return SpikeDetector(store, rule, window_s, a.alert_window, baseline_s, cooldown_s, a.alert_eval_interval_s)


class StreamProcessor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.stopping = False
        self.deadline = float("inf")
        self.generation = 0
        self.delivering: PreparedBatch | None = None
        self.completed: dict[tuple[str, int], int] = {}
        self.paused = False
        self.first_batch_logged = False
        self.batches_done = 0

    # -- start-up -------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        layout = s.layout()
        kafka_conf = consumer_config(s.kafka, on_stats=self.metrics.on_stats)
        log.info("starting", extra={"kafka": redact({k: v for k, v in kafka_conf.items() if k != "stats_cb"}),
                                    "redis_url": redacted_url(s.redis.redis_url), "redis_prefix": s.redis.redis_prefix,
                                    "input_topics": s.kafka.input_topics, "output_topic": s.kafka.output_topic,
                                    "dlq_topic": s.kafka.dlq_topic, "batch_size": s.model.batch_size,
                                    "max_wait_ms": s.model.max_wait_ms, "windows": s.counters.windows})
        self.classifier = SentimentClassifier(s.model.checkpoint, s.model.device, s.model.threads, s.model.cache_size,
                                              s.model.inference_batch_size, s.model.quantize)
        self.metrics.model.labels(self.classifier.name, self.classifier.version, str(self.classifier.device)).set(1)
        log.info("model loaded", extra={"model_version": self.classifier.version, "device": str(self.classifier.device),
                                        "labels": self.classifier.labels, "max_length": self.classifier.max_length})
        ensure_topics(s.kafka, [s.kafka.output_topic, s.kafka.dlq_topic, s.kafka.alerts_topic])
        self.store = CounterStore(connect(s.redis.redis_url), layout)
        self.builder = BatchBuilder(self.classifier, layout,
                                    Limits(s.runtime.max_message_bytes, s.runtime.max_text_bytes),
                                    Topics(s.kafka.output_topic, s.kafka.dlq_topic), self.metrics)
        self.output = OutputProducer(producer_config(s.kafka))
        self.detector = build_detector(s, self.store)
        self.webhook = None
        if s.alerts.alert_webhook:
            try:
                self.webhook = WebhookNotifier(s.alerts.alert_webhook, s.alerts.alert_webhook_timeout_s,
                                               on_result=lambda outcome: self.metrics.webhook.labels(outcome).inc())
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if s.runtime.metrics_port:
            try:
                self.http = serve_metrics(self.metrics, s.runtime.metrics_host, s.runtime.metrics_port, s.runtime.health_stall_s)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {s.runtime.metrics_host}:{s.runtime.metrics_port}: {exc.strerror}") from None
        self.consumer = Consumer(kafka_conf)
        self.consumer.subscribe(s.kafka.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    # -- rebalance ------------------------------------------------------------------------
    # Any revoke or loss bumps the generation: batches polled before it are abandoned
    # uncommitted. Their outputs may be re-sent by the next owner (same event_id); the
    # Redis fences keep counters exact whether or not their update already ran.
    def _on_assign(self, consumer, partitions) -> None:
        self.paused = False
        log.info("partitions assigned", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})

    def _on_revoke(self, consumer, partitions) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        self.generation += 1
        self._commit({tp: o for tp, o in self.completed.items() if tp in revoked}, asynchronous=False)
        for tp in revoked:
            self.completed.pop(tp, None)
        log.info("partitions revoked", extra={"partitions": sorted(f"{t}[{p}]" for t, p in revoked)})

    def _on_lost(self, consumer, partitions) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self.generation += 1
        for tp in lost:
            self.completed.pop(tp, None)
        log.warning("partitions lost", extra={"partitions": sorted(f"{t}[{p}]" for t, p in lost)})

    # -- loop -----------------------------------------------------------------------------
    def request_stop(self, signum=None, _frame=None) -> None:
        if not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + self.settings.runtime.shutdown_timeout_s
            log.info("stop requested; draining", extra={"signal": signum})

    def run(self) -> int:
        """Two batches in flight: batch k+1 is polled, validated and then run through the model
        on the inference thread while batch k is delivered (produce, acks, Redis, alerts, commit)
        here. Torch releases the GIL in the forward pass, so the two overlap."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        m = self.settings.model
        labelling: Future | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference") as model_thread:
            try:
                while not self.stopping:
                    messages = [msg for msg in self.consumer.consume(num_messages=m.batch_size, timeout=m.max_wait_ms / 1000)
                                if self._usable(msg)]
                    decoded = self.builder.decode(messages, self.generation) if messages else None
                    if decoded and not self.first_batch_logged:
                        self.first_batch_logged = True
                        log.info("first batch polled", extra={"size": decoded.size, "epoch_ms": decoded.received_ms})
                    ready = labelling.result() if labelling else None
                    labelling = model_thread.submit(self.builder.label, decoded) if decoded else None
                    if ready is not None:
                        self.deliver(ready)
                    elif not messages and self.metrics.total_lag == 0:
                        self.metrics.progressed()
                if labelling is not None:  # drain: the last labelled batch is delivered too
                    self.deliver(labelling.result())
            finally:
                self.shutdown()
        return 0

    def _usable(self, msg) -> bool:
        error = msg.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": error.str()})
        return False

    def deliver(self, batch: PreparedBatch) -> bool:
        """Outputs acked, counters written, alerts out, then commit; False when abandoned."""
        self.delivering = batch
        self.metrics.batch_size.observe(batch.size)
        try:
            if self._stale(batch):
                return self._abandon("rebalance")
            for step in (lambda: self.output.send_all(batch.outgoing, self._keepalive, self._should_abandon),
                         lambda: self._update_counters(batch), lambda: self._send_alerts(batch)):
                if not step():
                    return self._abandon("rebalance" if self._stale(batch) else "shutdown")
            if self._stale(batch):
                return self._abandon("rebalance")
            self._commit(batch.next_offsets, asynchronous=True)
            self.completed.update(batch.next_offsets)
            self.metrics.batches.inc()
            self.batches_done += 1
            self.metrics.progressed()
            return True
        finally:
            self.delivering = None
            self._resume()

    def _stale(self, batch: PreparedBatch) -> bool:
        return batch.generation != self.generation

    def _update_counters(self, batch: PreparedBatch) -> bool:
        delay = 0.1
        while True:
            try:
                self.store.apply(batch.increments, int(time.time() * 1000))
                return True
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError) as exc:
                self.metrics.redis_retries.inc()
                log.warning("redis update failed; retrying", extra={"error": str(exc)[:200], "retry_in_s": delay})
                until = time.monotonic() + delay
                while time.monotonic() < until:
                    self._keepalive()
                    if self._should_abandon():
                        return False
                    time.sleep(0.05)
                delay = min(delay * 2, 5.0)

    def _send_alerts(self, batch: PreparedBatch) -> bool:
        """Spike check on the subjects this batch touched; alerts go out before the commit."""
        if not self.settings.alerts.alerts:
            return True
        try:
            alerts = self.detector.check((inc.kind, inc.name) for inc in batch.increments)
        except redis.RedisError as exc:
            # The next batch touching these subjects checks them again.
            log.warning("spike check skipped", extra={"error": str(exc)[:200]})
            return True
        if not alerts:
            return True
        topic = self.settings.kafka.alerts_topic
        outgoing = [Outgoing(topic, (a["query"] or a["product_id"]).encode(), orjson.dumps(a)) for a in alerts]
        for alert in alerts:
            self.metrics.alerts.labels(alert["state"]).inc()
            if self.webhook is not None:
                self.webhook.submit(alert)
        return self.output.send_all(outgoing, self._keepalive, self._should_abandon)

    def _abandon(self, reason: str) -> bool:
        self.metrics.abandoned.labels(reason).inc()
        log.warning("batch abandoned uncommitted", extra={"reason": reason})
        return False

    def _should_abandon(self) -> bool:
        return (self.delivering is not None and self._stale(self.delivering)) or time.monotonic() > self.deadline

    def _keepalive(self) -> None:
        """Poll with partitions paused: serves rebalance callbacks and keeps the member alive."""
        if not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
        msg = self.consumer.poll(0)
        if msg is not None and msg.error() is None:
            # Fetched before the pause took effect: put it back, it is not part of this batch.
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    def _resume(self) -> None:
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    def _commit(self, offsets: dict[tuple[str, int], int], asynchronous: bool) -> None:
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=partitions, asynchronous=asynchronous)
        except Exception as exc:  # noqa: BLE001 - a failed commit only means redelivery
            log.warning("commit failed; offsets will be redelivered", extra={"error": str(exc)[:200]})

    def shutdown(self) -> None:
        self._commit(self.completed, asynchronous=False)
        self.consumer.close()
        remaining = self.output.flush(max(1.0, self.deadline - time.monotonic()) if self.deadline != float("inf") else 10.0)
        log.info("stopped", extra={"unflushed": remaining, "batches": self.batches_done})
