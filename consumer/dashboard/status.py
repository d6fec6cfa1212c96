"""The consumer's status for the dashboard, read from its Prometheus endpoint (`serve --metrics-url`).

Model versions, events per second in and out, lag per partition and troubles, from one
scrape. Rates are the change of the counters since the previous scrape (scrapes are one
at a time and at least a second apart: browsers share each answer for that long), so the
figure is the same whichever browser asks; a restarted consumer (counters lower than
before) gives no rate until the next scrape.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MAX_SCRAPE_BYTES = 8 << 20  # a consumer's exposition is tens of kB; anything past this is not one
MIN_RATE_INTERVAL_S = 1.0
RATES = {"events_in_per_s": "sentiment_events_in_total", "events_out_per_s": "sentiment_events_out_total",
         "dead_lettered_per_s": "sentiment_events_dead_lettered_total"}


def summarize(text: str) -> dict[str, Any]:
    """Totals, model info, lag and troubles out of one exposition text."""
    totals = dict.fromkeys(RATES.values(), 0.0)
    models, lag, troubles = [], [], []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
            elif sample.name == "sentiment_model_info" and sample.value == 1:
                models.append({k: sample.labels.get(k, "") for k in ("route", "name", "version", "device")})
            elif sample.name == "sentiment_consumer_lag":
                lag.append({"topic": sample.labels.get("topic", ""), "partition": int(sample.labels.get("partition", -1)),
                            "lag": int(sample.value)})
            elif sample.name == "sentiment_trouble" and sample.value >= 1:
                troubles.append(sample.labels.get("name", ""))
    lag.sort(key=lambda p: (p["topic"], p["partition"]))
    return {"totals": totals, "models": sorted(models, key=lambda m: m["route"]), "lag": lag,
            "lag_total": sum(p["lag"] for p in lag), "troubles": sorted(troubles)}


class ConsumerStatus:
    def __init__(self, metrics_url: str, timeout_s: float = 3.0) -> None:
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        # Held across the scrape: one at a time, so concurrent callers wait (at most timeout_s) and share it.
        self._lock = threading.Lock()
        self._previous: tuple[float, dict[str, float]] | None = None  # (when, totals) of the last good scrape
        self._last: tuple[float, dict[str, Any]] | None = None  # (when, answer) of the last scrape

    def read(self) -> dict[str, Any]:
        """{"available": true, models, rates, lag...}, or {"available": false, "error": ...} when the scrape fails.

        Scrapes at most once a second however many browsers poll; the others get that answer."""
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] >= MIN_RATE_INTERVAL_S:
                self._last = (time.monotonic(), self._scrape())
            return self._last[1]

    def _scrape(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=self.timeout_s) as response:
                body = response.read(MAX_SCRAPE_BYTES + 1)
            if len(body) > MAX_SCRAPE_BYTES:
                raise ValueError(f"metrics larger than {MAX_SCRAPE_BYTES} bytes")
            summary = summarize(body.decode("utf-8", "replace"))
        except (OSError, ValueError, urllib.error.URLError) as exc:
            # The URL is the operator's and may carry credentials: name the failure, not the address.
            return {"available": False, "error": f"consumer metrics unreachable: {type(exc).__name__}"}
        now, totals = time.monotonic(), summary.pop("totals")
        previous, self._previous = self._previous, (now, totals)
        rates = dict.fromkeys(RATES)
        if previous is not None:  # scrapes are at least MIN_RATE_INTERVAL_S apart
            elapsed = now - previous[0]
            rates = {name: round((totals[m] - previous[1][m]) / elapsed, 2) if totals[m] >= previous[1][m] else None
                     for name, m in RATES.items()}
        return {"available": True, **rates, **summary}
