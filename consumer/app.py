"""The consumer: wires the steps of the chain and runs the loop.

    poll -> validate -> label (model thread) -> produce (acked) -> count (Redis) -> commit
                                                                       \\-> alerts: evaluate on events and time, outbox

Batch k+1 is polled, validated and labelled on the model thread (pipeline/inference.py)
while batch k goes through produce, count and commit here. Offsets are committed only at the end of the
chain. A step that cannot finish waits with the partitions paused (flow.Waiter); a
stale batch or the shutdown deadline abandons it (source.rewind keeps the partition
contiguous); a FatalStop exits non-zero without committing past the failed batch.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from model_runtime.rollout import CanaryRule, RolloutState, RolloutStore
from model_runtime.stats.spikes import SpikeRule
from schemas import Limits
from schemas.kafka_connection import redact
from schemas.redis_connection import connect, redacted_url
from schemas.timestamps import parse_duration

from .alerts.detector import SpikeDetector
from .alerts.outbox import AlertOutbox
from .alerts.schedule import EvaluationSchedule
from .alerts.state import AlertStore
from .alerts.webhook import WebhookNotifier
from .config import AlertSettings, AlertWindowSettings, CounterSettings, KafkaSettings, ModelSettings, RedisSettings, RedisWriteSettings, RuntimeSettings
from .errors import ConfigError, FatalStop
from .faults import check_kill_before_commit
from .kafka.clients import ALERT_DELIVERY_TIMEOUT_MS, OUTPUT_DELIVERY_TIMEOUT_MS, consumer_config, ensure_topics, producer_config
from .kafka.output import OutputProducer
from .kafka.source import KafkaSource
from .model.canary import Canary
from .model.classifier import SentimentClassifier
from .model.language import ENGLISH, MULTILINGUAL
from .model.reload import ModelReloader, serve_at_start
from .observability import Health, Metrics, serve_metrics
from .pipeline.alerting import AlertStep
from .pipeline.commit import CommitStep
from .pipeline.count import CountStep
from .pipeline.flow import Abandoned, Waiter
from .pipeline.inference import InferenceStage
from .pipeline.label import Labeller
from .pipeline.produce import ProduceStep
from .kafka.span import Span
from .pipeline.records import LabelledBatch
from .pipeline.validate import Validator
from .redis_client import refuse_evicting
from .state.counters import CounterLayout, CounterStore, model_key
from .state.rates import RateStore
from .state.routing import Replication

log = logging.getLogger("consumer")
GIL_SWITCH_INTERVAL_S = 0.0005
EXIT_FATAL = 3
SMOKE_TIMEOUT_S = 10.0  # longest start-up smoke batch (milliseconds when healthy); a hung device is then the model-failure handling's


@dataclass
class Settings:
    kafka: KafkaSettings
    redis: RedisSettings
    counters: CounterSettings
    model: ModelSettings
    runtime: RuntimeSettings
    alerts: AlertSettings = field(default_factory=AlertSettings)
    redis_writes: RedisWriteSettings = field(default_factory=RedisWriteSettings)

    def layout(self) -> CounterLayout:
        try:
            windows = tuple(sorted({parse_duration(w) for w in self.counters.windows}))
        except ValueError as exc:
            raise ConfigError(f"--windows: {exc}") from None
        if not windows:
            raise ConfigError("--windows needs at least one window")
        if self.counters.bucket_seconds <= 0 or 3600 % self.counters.bucket_seconds:
            raise ConfigError(f"--bucket-seconds {self.counters.bucket_seconds} must divide 3600")
        if self.counters.rank_size < 10:
            raise ConfigError(f"--rank-size {self.counters.rank_size} must be at least 10")
        return CounterLayout(self.redis.redis_prefix, self.counters.bucket_seconds, windows, self.counters.rank_size)


@dataclass(frozen=True)
class AlertTimes:
    window_s: int
    baseline_s: int
    cooldown_s: int

    @property
    def state_ttl_s(self) -> int:
        """How long alert state outlives its last transition: past every window it is read in."""
        return self.baseline_s + self.window_s + self.cooldown_s + 3600


def alert_times(a: AlertWindowSettings, layout: CounterLayout) -> AlertTimes:
    try:
        times = AlertTimes(parse_duration(a.alert_window), parse_duration(a.alert_baseline_window), parse_duration(a.alert_cooldown))
    except ValueError as exc:
        raise ConfigError(f"--alert-window, --alert-baseline-window, --alert-cooldown: {exc}") from None
    if times.window_s > layout.fine_horizon:
        raise ConfigError(f"--alert-window {a.alert_window} must fit the fine buckets (at most {layout.fine_horizon} s)")
    if times.baseline_s + times.window_s > layout.longest + 3600:
        raise ConfigError(f"--alert-baseline-window {a.alert_baseline_window} is longer than the counters keep (--windows)")
    return times


def alert_store(client, layout: CounterLayout, a: AlertWindowSettings) -> AlertStore:
    return AlertStore(client, layout, alert_times(a, layout).state_ttl_s)


def build_detector(settings: Settings, store: CounterStore, alerts: AlertStore, rates: RateStore) -> SpikeDetector:
    a = settings.alerts
    times = alert_times(a, store.layout)
    try:
        rule = SpikeRule(a.alert_min_count, a.alert_min_increase, a.alert_false_alarm_days, times.window_s,
                         store.layout.bucket_seconds, a.alert_min_baseline, a.alert_prior_share)
    except ValueError as exc:
        raise ConfigError(f"--alert-false-alarm-days, --alert-min-baseline: {exc}") from None
    return SpikeDetector(store, alerts, rates, rule, a.alert_window, times.baseline_s, times.cooldown_s)


def check_batching(m: ModelSettings) -> None:
    """Batch sizes, waits and counts the loop can't use, refused before any connection or model load."""
    if m.batch_size < 1:
        raise ConfigError(f"--batch-size {m.batch_size} must be at least 1")
    for flag, value in (("--max-wait-ms", m.max_wait_ms), ("--inference-batch-size", m.inference_batch_size),
                        ("--threads", m.threads), ("--cache-size", m.cache_size)):
        if value < 0:
            raise ConfigError(f"{flag} {value} must be >= 0")


def checkpoint_paths(m: ModelSettings) -> dict[str, str]:
    """Each route's checkpoint path: English alone, or English and multilingual."""
    paths = {ENGLISH: m.checkpoint}
    if m.multilingual_checkpoint:
        paths[MULTILINGUAL] = m.multilingual_checkpoint
    return paths


def canary_rule(m: ModelSettings) -> CanaryRule | None:
    if not m.canary_share:
        return None
    try:
        return CanaryRule(m.canary_share, m.canary_min_events, m.canary_min_agreement)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def model_loader(m: ModelSettings):
    def load(path: str) -> SentimentClassifier:
        return SentimentClassifier(path, m.device, m.threads, m.cache_size, m.inference_batch_size, m.quantize, m.backend,
                                   m.onnx_cache_dir)

    return load


def serving_rates(models: dict[str, SentimentClassifier]) -> dict[str, tuple[list[str], dict]]:
    """Each serving version's labels and checkpoint rates, by the model key its counters carry."""
    return {model_key(route, c.version): (list(c.labels), c.rates) for route, c in models.items()}


class StreamProcessor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health(self.metrics, settings.runtime.health_stall_s)
        self.stopping = False
        self.deadline = float("inf")
        self.first_batch_logged = False
        self.batches_done = 0

    # -- start-up -------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        check_batching(s.model)
        layout = s.layout()
        kafka_conf = consumer_config(s.kafka, on_stats=self.metrics.on_stats)
        log.info("starting", extra={"kafka": redact({k: v for k, v in kafka_conf.items() if k != "stats_cb"}),
                                    "redis_url": redacted_url(s.redis.redis_url), "redis_cluster": s.redis.redis_cluster,
                                    "redis_prefix": s.redis.redis_prefix, "redis_wait_replicas": s.redis_writes.redis_wait_replicas,
                                    "input_topics": s.kafka.input_topics, "output_topic": s.kafka.output_topic,
                                    "dlq_topic": s.kafka.dlq_topic, "batch_size": s.model.batch_size,
                                    "max_wait_ms": s.model.max_wait_ms, "windows": s.counters.windows})
        client = connect(s.redis.redis_url, s.redis.redis_cluster)
        refuse_evicting(client, s.redis.allow_evicting_redis)
        w = s.redis_writes
        if w.redis_wait_replicas < 0 or w.redis_wait_timeout_ms <= 0:
            raise ConfigError("--redis-wait-replicas must be >= 0 and --redis-wait-timeout-ms > 0")
        store = CounterStore(client, layout, Replication(w.redis_wait_replicas, w.redis_wait_timeout_ms))
        alerts = alert_store(client, layout, s.alerts)
        canary = canary_rule(s.model)  # a bad canary setting fails before minutes of model loading
        paths, load = checkpoint_paths(s.model), model_loader(s.model)
        stores = {route: RolloutStore(client, s.redis.redis_prefix, s.kafka.group_id, route) for route in paths}
        self.models, states = {}, {}
        for route, path in paths.items():  # the group's version in service, not whatever `latest` names
            self.models[route], states[route] = serve_at_start(stores[route], path, load, route, self._fell_back,
                                                               min(SMOKE_TIMEOUT_S, s.runtime.model_failure_timeout_s))
        for route, classifier in self.models.items():
            self.metrics.model.labels(route, classifier.name, classifier.version, str(classifier.device)).set(1)
            log.info("model loaded", extra={"route": route, "model_version": classifier.version, "device": str(classifier.device),
                                            "runs": classifier.runner.detail,
                                            "labels": classifier.labels, "max_length": classifier.max_length})
        rates = RateStore(store, s.counters.rates_min_per_label)
        self.detector = detector = build_detector(s, store, alerts, rates)
        ensure_topics(s.kafka, [s.kafka.output_topic, s.kafka.dlq_topic, s.kafka.alerts_topic])
        producer = OutputProducer(producer_config(s.kafka, OUTPUT_DELIVERY_TIMEOUT_MS))
        webhook = None
        if s.alerts.alert_webhook:
            try:
                webhook = WebhookNotifier(s.alerts.alert_webhook, s.alerts.alert_webhook_timeout_s,
                                          on_result=lambda outcome: self.metrics.webhook.labels(outcome).inc())
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if s.runtime.metrics_port:
            try:
                self.http = serve_metrics(self.metrics, self.health, s.runtime.metrics_host, s.runtime.metrics_port)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {s.runtime.metrics_host}:{s.runtime.metrics_port}: {exc.strerror}") from None
        self.validator = Validator(Limits(s.runtime.max_message_bytes, s.runtime.max_text_bytes), s.kafka.dlq_topic, self.metrics)
        self.reloader = ModelReloader(self.models, paths, stores, states, load, s.model.reload_interval_s, canary,
                                      self._swapped, self._refused, self._canary)
        labeller = Labeller(self.models, layout, s.kafka.output_topic, s.kafka.dlq_topic, self.metrics,
                            self.reloader.adopt, self.reloader.observe)
        self.inference = InferenceStage(labeller, self.metrics, self.health, s.runtime.model_failure_timeout_s)
        self.produce = ProduceStep(producer, s.kafka.dlq_topic, self.metrics)
        self.count = CountStep(store, rates, self.metrics)
        self.count.serve(serving_rates(self.models))
        self.alerting = None
        if s.alerts.alerts:
            # Alerts have a producer of their own: an alerts topic without a leader holds up no batch.
            alert_producer = OutputProducer(producer_config(s.kafka, ALERT_DELIVERY_TIMEOUT_MS))
            outbox = AlertOutbox(alerts, alert_producer, s.kafka.alerts_topic, self.metrics, self.health, webhook)
            schedule = EvaluationSchedule(s.alerts.alert_eval_interval_s, detector.window_s)
            self.alerting = AlertStep(detector, schedule, outbox)
        self.producer = producer
        self.source = KafkaSource(kafka_conf, s.kafka.input_topics)
        self.commit = CommitStep(self.source, self.metrics)
        self.reloader.start()

    def _swapped(self, route: str, previous: SentimentClassifier, current: SentimentClassifier) -> None:
        """A new version took over between batches (the inference thread): metrics, log, share rates."""
        self.metrics.model.remove(route, previous.name, previous.version, str(previous.device))
        self.metrics.model.labels(route, current.name, current.version, str(current.device)).set(1)
        self.metrics.model_reloads.labels(route, "swapped").inc()
        self.count.serve(serving_rates(self.models))
        log.info("model swapped", extra={"route": route, "from_version": previous.version, "model_version": current.version})

    def _refused(self, route: str, version: str, reason: str) -> None:
        self.metrics.model_reloads.labels(route, "refused").inc()
        log.error("new checkpoint refused; the running model keeps serving",
                  extra={"route": route, "model_version": version, "reason": reason})

    def _fell_back(self, route: str, in_service: str, reason: str) -> None:
        self.metrics.model_reloads.labels(route, "fell_back").inc()

    def _canary(self, route: str, canary: Canary, state: RolloutState, action: str, shadowed: int) -> None:
        """This process added shadowed events to the group's tally (the inference thread)."""
        version = canary.candidate.version
        compared, agreed = state.compared, state.agreed  # the group's tally (kept after its decision)
        if action != "stale":
            self.metrics.canary_shadowed.labels(route, version).inc(shadowed)
        self.metrics.canary_compared.labels(route, version).set(compared)
        self.metrics.canary_agreement.labels(route, version).set(agreed / compared if compared else 0.0)
        for label, difference in canary.share_difference().items():
            self.metrics.canary_share_difference.labels(route, version, label).set(difference)
        if action in ("promoted", "refused"):  # this process's events completed the tally: it decided for the group
            log.info("canary decided", extra={"route": route, "model_version": version, "decision": {"promoted": "promote", "refused": "refuse"}[action],
                                              "group_decision": state.decision, "agreement": round(agreed / compared, 4) if compared else 0.0,
                                              "compared": compared,
                                              "share_difference": {k: round(v, 4) for k, v in canary.share_difference().items()}})

    # -- loop -----------------------------------------------------------------------------
    def request_stop(self, signum=None, _frame=None) -> None:
        if not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + self.settings.runtime.shutdown_timeout_s
            log.info("stop requested; draining", extra={"signal": signum})

    def waiter(self, span: Span | None = None) -> Waiter:
        return Waiter(self.source.keepalive, self.source.resume, self.source.is_stale, lambda: self.deadline, self.health, span)

    def run(self) -> int:
        # The inference thread takes the GIL back between forward passes: 64 times a batch on the int8
        # graph (one text per pass). At Python's default 5 ms it queued behind the loop thread's Python
        # work at each one; 0.5 ms: 173 instead of 150 events/s end to end, under load (bench_pipeline).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        m = self.settings.model
        code = 0
        try:
            while not self.stopping:
                # Fill the next batch while the model runs this one; stop filling once it is labelled.
                messages, epochs = self.source.poll_batch(m.batch_size, m.max_wait_ms / 1000, self.inference.labelled)
                decoded = self.validator.decode(messages, epochs) if messages else None
                if decoded and not self.first_batch_logged:
                    self.first_batch_logged = True
                    log.info("first batch polled", extra={"size": decoded.size, "epoch_ms": decoded.received_ms})
                ready = self.inference.result(self.waiter, self._abandon)
                self.inference.submit(decoded)
                if ready is not None:
                    self.deliver(ready)
                elif not messages and self.metrics.total_lag == 0:
                    self.metrics.progressed()
                self.commit.retry_failed()
                if self.alerting is not None:
                    self.alerting.tick()
            ready = self.inference.result(self.waiter, self._abandon)  # drain: the last labelled batch too
            if ready is not None:
                self.deliver(ready)
        except FatalStop as exc:
            log.critical(f"fatal: {exc}; stopping without committing past this batch")
            code = EXIT_FATAL
        finally:
            self.shutdown()
        if self.inference.hung:
            # Interpreter exit joins the inference thread, which a hung pass never leaves.
            logging.shutdown()
            os._exit(code)
        return code

    def deliver(self, batch: LabelledBatch) -> None:
        """Outputs acked, counters written, then commit; an abandoned batch commits nothing."""
        self.metrics.batch_size.observe(batch.size)
        try:
            with self.waiter(batch.span) as waiter:
                waiter.check()
                self.produce.run(batch, waiter)
                increments = batch.increments
                self.count.run(increments, batch.rated, waiter)
                waiter.check()
                check_kill_before_commit()
                self.commit.run(batch)
        except Abandoned as exc:
            self._abandon(batch.span, exc.reason)
            return
        self.batches_done += 1
        if self.alerting is not None:
            self.alerting.touched(increments)

    def _abandon(self, span: Span, reason: str) -> None:
        self.source.rewind(span)
        self.metrics.abandoned.labels(reason).inc()
        log.warning("batch abandoned uncommitted", extra={"reason": reason})

    def shutdown(self) -> None:
        self.reloader.close()
        self.inference.close()
        self.commit.close()
        self.source.close()
        left = max(1.0, self.deadline - time.monotonic()) if self.deadline != float("inf") else 10.0
        if self.alerting is not None:
            self.alerting.outbox.flush(left)
        remaining = self.producer.flush(left)
        log.info("stopped", extra={"unflushed": remaining, "batches": self.batches_done})
