"""Print the chaos table at the end of the run (pytest's own summary, no -s needed)."""

from __future__ import annotations

import orjson

from tests.consumer.harness import ROOT

RESULTS = ROOT / "bench" / "results" / "chaos-latest.json"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from . import test_chaos

    if not test_chaos.ROWS or not RESULTS.exists():  # no chaos scenario ran in this session
        return
    header = ("fault", "events in", "labelled (unique)", "duplicates", "dead-lettered", "counters exact",
              "alerts expected/sent", "recover s")
    terminalreporter.section("chaos results (bench/results/chaos-latest.json)")
    terminalreporter.write_line("| " + " | ".join(header) + " |")
    terminalreporter.write_line("|" + "---|" * len(header))
    for r in orjson.loads(RESULTS.read_bytes()):
        cells = (r["fault"], r["events_in"], r["labelled_unique"], r["duplicates"], r["dead_lettered"],
                 "yes" if r["counters_exact"] else "NO", f"{r['alerts_expected']}/{r['alerts_sent']}", r["recover_s"])
        terminalreporter.write_line("| " + " | ".join(map(str, cells)) + " |")
