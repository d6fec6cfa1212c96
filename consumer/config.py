"""Typed consumer configuration. Every field is a flag and an environment variable."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.kafka_connection import KafkaConnection
from schemas.redis_connection import RedisConnection


@dataclass
class KafkaSettings(KafkaConnection):
    group_id: str = field(default="sentiment-consumer", metadata={"env": "GROUP_ID", "help": "consumer group; run more processes with the same id to scale out"})
    input_topics: list[str] = field(default_factory=lambda: ["search-results", "reviews"], metadata={"help": "topics to read (comma-separated or repeated)", "metavar": "TOPIC"})
    output_topic: str = field(default="sentiment-labelled", metadata={"help": "topic for labelled events (keyed by normalized query)"})
    dlq_topic: str = field(default="sentiment-dlq", metadata={"help": "dead-letter topic for invalid events"})
    alerts_topic: str = field(default="sentiment-alerts", metadata={"help": "topic for negative-spike alerts"})
    topic_partitions: int = field(default=4, metadata={"help": "partitions for output/DLQ/alerts topics created at start-up"})
    topic_replication: int = field(default=0, metadata={"help": "replication factor for topics created at start-up (0 = 3, or the number of brokers if fewer)"})
    topic_min_insync_replicas: int = field(default=0, metadata={"help": "min.insync.replicas of topics created at start-up: with acks=all, a write needs this many replicas (0 = replication factor - 1, at least 1)"})


@dataclass
class RedisSettings(RedisConnection):
    allow_evicting_redis: bool = field(default=False, metadata={"help": "run even when Redis's maxmemory-policy may evict keys (evicted offset fences can double-count)"})


@dataclass
class RedisWriteSettings:
    redis_wait_replicas: int = field(default=0, metadata={"help": "before committing a batch's offsets, WAIT until this many replicas of each master written hold its counter writes (0 = don't wait: a failover can lose writes acknowledged but not yet replicated)"})
    redis_wait_timeout_ms: int = field(default=1000, metadata={"help": "longest WAIT; fewer replicas by then means the batch is retried, partitions paused"})


@dataclass
class CounterSettings:
    bucket_seconds: int = field(default=60, metadata={"help": "fine counter bucket (event time) for windows up to an hour"})
    windows: list[str] = field(default_factory=lambda: ["5m", "1h", "24h"], metadata={"help": "rolling windows kept in Redis; the longest bounds what is counted", "metavar": "WINDOW"})
    rank_size: int = field(default=1000, metadata={"help": "subjects kept per hour and label in the top-list ranking; bounds the cost of top reads"})
    rates_min_per_label: int = field(default=50, metadata={"help": "rated reviews per star-derived label a model version needs before its shares are corrected with the stream's own rates instead of the checkpoint's"})


@dataclass
class AlertWindowSettings:
    """The alert windows, which the read side (serve) needs too: the baseline it charts and how long alert state lives."""

    alert_window: str = field(default="5m", metadata={"help": "short window whose negative share is tested"})
    alert_baseline_window: str = field(default="24h", metadata={"help": "baseline: this long before now, excluding the short window"})
    alert_cooldown: str = field(default="15m", metadata={"help": "after a spike resolves, no new alert for the same subject for this long"})


@dataclass
class AlertSettings(AlertWindowSettings):
    alerts: bool = field(default=True, metadata={"help": "run the negative-spike detector on each batch's subjects"})
    alert_min_count: int = field(default=20, metadata={"help": "events needed in the short window before an alert can fire"})
    alert_min_increase: float = field(default=0.15, metadata={"help": "smallest rise of the negative share (absolute) that fires"})
    alert_false_alarm_days: float = field(default=300.0, metadata={"help": "target mean time between false alarms per subject, in days; sets the test's threshold (300, with the window moving a 60 s bucket at a time: z >= 4.59)"})
    alert_min_baseline: int = field(default=200, metadata={"help": "baseline events of a model version needed to compare with it; a subject with fewer in every version is compared with --alert-prior-share"})
    alert_prior_share: float = field(default=0.25, metadata={"help": "negative share assumed for queries without a baseline"})
    alert_eval_interval_s: float = field(default=10.0, metadata={"help": "re-evaluate every recently touched or firing subject this often, with or without new events"})
    alert_webhook: str = field(default="", metadata={"help": "also POST each alert as JSON to this URL (best effort, off the loop)"})
    alert_webhook_timeout_s: float = field(default=3.0, metadata={"help": "webhook request timeout; 3 retries with backoff"})


@dataclass
class ModelSettings:
    checkpoint: str = field(default="checkpoints/latest", metadata={"help": "checkpoint directory or its latest symlink; with --multilingual-checkpoint, the model for English events"})
    multilingual_checkpoint: str = field(default="", metadata={"help": "checkpoint that reads Chinese (and mixed text); when set, each event goes to it unless its locale is en or, without a locale, its letters are Latin"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    batch_size: int = field(default=64, metadata={"help": "most events per micro-batch"})
    max_wait_ms: int = field(default=100, metadata={"help": "longest wait to fill a micro-batch; filling stops sooner once the model has labelled the batch before it"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = one per core)"})
    inference_batch_size: int = field(default=0, metadata={"help": "texts per forward pass after length sorting (0 = 16 on CPU, where small sorted sub-batches pad least; one on the int8 ONNX graph, whose activation scales would otherwise make a text's label depend on its batch-mates; 512 on CUDA)"})
    backend: str = field(default="auto", metadata={"help": "torch, or onnxruntime (CPU only, the checkpoint's ONNX graph; the process never imports torch); auto = onnxruntime on a CPU-only machine, torch where there is a GPU", "choices": ["auto", "torch", "onnxruntime"]})
    quantize: str = field(default="auto", metadata={"help": "auto = int8 on the onnxruntime backend, none on torch; none = fp32. onnxruntime serves each graph with the temperature, decision rule and rates fitted on its own outputs; torch int8 quantizes the Linear layers dynamically (CPU only) and keeps the torch model's. trainer evaluate --backend B --quantize Q scores a choice", "choices": ["auto", "none", "int8"]})
    onnx_cache_dir: str = field(default=".cache/onnx", metadata={"help": "onnxruntime backend: where checkpoints published without ONNX graphs are exported once"})
    reload_interval_s: float = field(default=30.0, metadata={"help": "read what each checkpoint path (latest) names this often and tell the consumer group; a version the group puts in service is swapped in between batches, without a restart (0 = never follow latest; the group's decisions are still adopted)"})
    canary_share: float = field(default=0.0, metadata={"help": "before the group swaps a new version in, every process runs it in shadow on this share of each batch (0 = swap once it passes the checks); the first process to offer a version sets the group's canary rule"})
    canary_min_events: int = field(default=500, metadata={"help": "shadowed events, summed over the consumer group, before the canary decides"})
    canary_min_agreement: float = field(default=0.8, metadata={"help": "promote the canary when it agrees with the version in service on at least this share of the shadowed events; refuse it for the group otherwise"})
    cache_size: int = field(default=50_000, metadata={"help": "inference cache entries (same normalized text + model version); 0 disables"})


@dataclass
class RuntimeSettings:
    metrics_port: int = field(default=9108, metadata={"help": "port for /metrics and /healthz (0 = off)"})
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "address /metrics and /healthz bind to"})
    max_message_bytes: int = field(default=64 * 1024, metadata={"help": "largest accepted message value"})
    max_text_bytes: int = field(default=16 * 1024, metadata={"help": "largest accepted text (UTF-8 bytes)"})
    shutdown_timeout_s: float = field(default=30.0, metadata={"help": "on SIGTERM/SIGINT, longest time to drain, flush and commit"})
    health_stall_s: float = field(default=60.0, metadata={"help": "/healthz fails when lag exists and nothing was committed for this long, or a sink (Redis, Kafka) has failed for this long"})
    model_failure_timeout_s: float = field(default=300.0, metadata={"help": "when the model fails on every batch (systemic, e.g. CUDA or out of memory), pause and retry for this long, then exit non-zero"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR", "choices": ["DEBUG", "INFO", "WARNING", "ERROR"]})

