"""Each model version's rates in Redis, for the write path's alerts and the read side alike.

Two kinds, both keyed by the model version ("<route>:<version>"), never one global key:
  - the checkpoint's rates (its stream test split's and its validation split's), published
    by every process that serves the version; the same bytes whoever writes them, so
    processes never overwrite or delete each other's, and each version keeps its own;
  - the stream's rates: rated reviews summed per star-derived label by the counters'
    fenced script (counters.py), exact under replay.
`read` chooses per version (model_runtime.stats.rates.choose_rates) and keeps the answer a
few seconds: rates move slowly, and a dashboard poll should not re-read them per subject.
"""

from __future__ import annotations

import time
from typing import Iterable

import orjson

from model_runtime.stats.rates import CHECKPOINT_RATES, Rates, choose_rates, rates_from_sums

from .counters import COARSE_SECONDS, MICRO, CounterStore

class RateStore:
    def __init__(self, counters: CounterStore, min_per_label: int = 50, cache_s: float = 10.0) -> None:
        self.client = counters.client
        self.layout = counters.layout
        self.min_per_label = min_per_label
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Rates | None]] = {}

    def publish_checkpoint(self, model: str, labels: list[str], rates: dict[str, Rates]) -> None:
        """The checkpoint's labels and rates by source, for as long as the counters it labelled live."""
        payload = orjson.dumps({"labels": labels, **{source: r.as_dict() for source, r in rates.items()}})
        self.client.set(self.layout.checkpoint_rates_key(model), payload, ex=self.layout.longest + COARSE_SECONDS)

    def read(self, models: Iterable[str]) -> dict[str, Rates | None]:
        """The rates each version's shares are corrected with (None: none usable, pcc)."""
        now = time.monotonic()
        wanted = [m for m in dict.fromkeys(models) if m]
        stale = [m for m in wanted if now - self._cache.get(m, (float("-inf"), None))[0] >= self.cache_s]
        if stale:
            pipe = self.client.pipeline(transaction=False)
            for model in stale:  # one read each: the keys live in different cluster slots
                pipe.get(self.layout.checkpoint_rates_key(model))
                pipe.hgetall(self.layout.rate_keys(model)[1])
            replies = pipe.execute()
            for i, model in enumerate(stale):
                self._cache[model] = (now, self._choose(replies[2 * i], replies[2 * i + 1]))
            if len(self._cache) > 10_000:  # versions come and go; keep the map bounded
                self._cache = {m: v for m, v in self._cache.items() if now - v[0] < self.cache_s}
        return {m: self._cache[m][1] for m in wanted}

    def _choose(self, checkpoint_raw: bytes | None, sums_raw: dict[bytes, bytes]) -> Rates | None:
        checkpoint = orjson.loads(checkpoint_raw) if checkpoint_raw else {}
        known = [Rates.from_dict(checkpoint[source], source) for source in CHECKPOINT_RATES if source in checkpoint]
        labels = checkpoint.get("labels", ())
        stream = None
        if sums_raw and labels:
            sums: dict[str, dict[str, float]] = {}
            for name, value in sums_raw.items():
                true, _, what = name.decode().partition("|")
                sums.setdefault(true, {})[what] = int(value) / (1 if what == "n" else MICRO)
            stream = rates_from_sums(labels, sums)
        return choose_rates(stream, known, self.min_per_label)

    def stream_support(self, model: str) -> dict[str, int]:
        """Rated reviews summed so far per star-derived label (for tests and the read API)."""
        raw = self.client.hgetall(self.layout.rate_keys(model)[1])
        return {name.decode().split("|")[0]: int(v) for name, v in raw.items() if name.decode().endswith("|n")}
