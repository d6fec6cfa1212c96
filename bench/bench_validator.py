"""Micro-benchmark: validation throughput of schemas.decode_event on one core.

Usage: python bench/bench_validator.py [--events N] [--rounds R]
Writes bench/results/validator.json. The floor set by the project is 20,000 events/s.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import EventError, decode_event  # noqa: E402

WORDS = ("battery", "great", "broke", "fast", "shipping", "price", "love", "refund", "screen", "soft", "蓝牙", "耳机", "很好", "质量")


def make_events(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        base = {"event_id": f"e-{i}", "schema_version": 1, "ts": "2026-12-01T13:30:00.123Z" if i % 2 else 1_796_131_800_000 + i,
                "product_id": f"p-{rng.randint(1, 5000)}", "text": text, "locale": "en-US"}
        if i % 3:
            event = {**base, "event_type": "search_result", "query": rng.choice(["Wireless Headphones", "usb c cable", "蓝牙耳机"]),
                     "rank": rng.randint(0, 40), "title": "Some product title", "session_id": f"s-{i % 97}"}
        else:
            event = {**base, "event_type": "review", "rating": rng.randint(1, 5)}
        if i % 50 == 0:
            event.pop("ts")  # 2% invalid: the error path is measured too
        events.append(orjson.dumps(event))
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is reported")
    args = parser.parse_args()
    events = make_events(args.events)
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        invalid = 0
        for raw in events:
            try:
                decode_event(raw)
            except EventError:
                invalid += 1
        rates.append(len(events) / (time.perf_counter() - start))
    rates.sort()
    result = {"events_per_s_median": round(rates[len(rates) // 2]), "events_per_s_min": round(rates[0]),
              "events": len(events), "invalid_share": invalid / len(events), "rounds": args.rounds,
              "mean_bytes": round(sum(map(len, events)) / len(events)), "python": platform.python_version(),
              "cpu": platform.processor() or platform.machine(), "floor_events_per_s": 20_000}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "validator.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"validator: {result['events_per_s_median']:,} events/s median (min {result['events_per_s_min']:,}) on one core, "
          f"{result['mean_bytes']} B/event, floor 20,000")
    return 0 if result["events_per_s_min"] >= 20_000 else 1


if __name__ == "__main__":
    sys.exit(main())
