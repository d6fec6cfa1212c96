"""A known day of counters and alerts for the dashboard tests (and the README's screenshot).

Seven queries (Chinese and English), one product each, a day of hourly traffic with a known
negative share, a firing spike on 蓝牙耳机 and a resolved one on 空气炸锅. Every event is
labelled negative or positive with fixed calibrated probabilities, and the published
validation rates make the adjusted estimate recover the true share exactly, so the
expected shares are the generated fractions.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from consumer.alerts.detector import SpikeDetector
from consumer.alerts.state import AlertStore
from consumer.state.counters import CounterStore, Increment
from model_runtime.stats.spikes import SpikeRule

from .harness import publish_validation_rates

MINUTE = 60_000
MODEL = "english:v-known-day"
ESTIMATION = {"labels": ["negative", "neutral", "positive"], "support": [100, 100, 100],
              "mean_probs": [[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]]}
PROBS = {"negative": (("negative", 800_000), ("neutral", 100_000), ("positive", 100_000)),
         "positive": (("negative", 100_000), ("neutral", 100_000), ("positive", 800_000))}
# query, product, events per hour, negative share of the day's traffic
QUERIES = [("蓝牙耳机", "B-EARBUDS-7", 12, 0.20), ("phone charger", "B-CHARGER-2", 10, 0.45), ("空气炸锅", "B-AIRFRYER-3", 10, 0.15),
           ("usb c cable", "B-CABLE-1", 14, 0.05), ("running shoes", "B-SHOES-9", 8, 0.25), ("保温杯", "B-THERMOS-4", 6, 0.10),
           ("wireless mouse", "B-MOUSE-5", 8, 0.30)]
FIRING, RESOLVED = "蓝牙耳机", "空气炸锅"
ALERT_TTL_S = 90_000


@dataclass
class KnownDay:
    now_ms: int
    counts: dict[tuple[str, str], Counter] = field(default_factory=dict)  # (kind, name) -> labels over the whole day

    def negative_share(self, kind: str, name: str) -> float:
        counts = self.counts[(kind, name)]
        return counts["negative"] / sum(counts.values())


def write_known_day(store: CounterStore, now_ms: int, seed: int = 7) -> KnownDay:
    """Apply the day's events, publish the validation rates, fire and resolve the two spikes."""
    rng = random.Random(seed)
    day = KnownDay(now_ms)
    incs: list[Increment] = []

    def add(query: str, product: str, ts_ms: int, label: str) -> None:
        for kind, name in (("query", query), ("product", product)):
            incs.append(Increment(kind, name, "known-day", 0, len(incs), ts_ms, label, PROBS[label], MODEL))  # offsets only need to rise
            day.counts.setdefault((kind, name), Counter())[label] += 1

    def burst(query: str, product: str, minutes_ago: tuple[int, int], events: int, negative: int) -> None:
        for i in range(events):
            add(query, product, now_ms - int(rng.uniform(*minutes_ago) * MINUTE), "negative" if i < negative else "positive")

    for query, product, per_hour, share in QUERIES:
        for hour in range(23):  # hourly traffic, kept out of the last 6 minutes (the alert window)
            events = per_hour + rng.randint(-2, 2)
            negative = min(events, max(0, round(events * share) + rng.randint(-1, 1)))
            for i in range(events):
                add(query, product, now_ms - int((hour * 60 + rng.uniform(6, 59)) * MINUTE), "negative" if i < negative else "positive")
    # A check's 5-minute window is five minute buckets: it reaches at least 4 minutes back, so each
    # burst a check must see lies within the 4 minutes before it, whatever the second of the minute.
    burst(FIRING, "B-EARBUDS-7", (15.2, 18.9), 30, 24)  # fired 15 minutes ago ...
    burst(FIRING, "B-EARBUDS-7", (0.2, 15), 40, 28)  # ... and still negative
    burst(RESOLVED, "B-AIRFRYER-3", (36.2, 39.9), 30, 24)  # fired 36 minutes ago ...
    burst(RESOLVED, "B-AIRFRYER-3", (0.2, 3.9), 12, 1)  # ... and recovered now
    store.apply(incs, now_ms)
    rates = publish_validation_rates(store, MODEL, ESTIMATION)
    detector = SpikeDetector(store, AlertStore(store.client, store.layout, ALERT_TTL_S), rates, SpikeRule(), "5m", 86400, 900)
    detector.check([("query", FIRING)], now_ms - 15 * MINUTE)
    detector.check([("query", RESOLVED)], now_ms - 36 * MINUTE)
    detector.baseline_refresh_s = 0  # re-read the baseline: the spike is part of it now
    detector.check([("query", RESOLVED)], now_ms)
    return day
