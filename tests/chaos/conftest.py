"""Print the chaos table at the end of the run (pytest's own summary, no -s needed)."""

from __future__ import annotations

import orjson

from tests.consumer.harness import ROOT

RESULTS = ROOT / "bench" / "results"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from . import test_chaos, test_cluster

    for module, name in ((test_chaos, "chaos-latest.json"), (test_cluster, "cluster-latest.json")):
        if module.ROWS and (RESULTS / name).exists():  # only what ran in this session
            _table(terminalreporter, RESULTS / name)


def _table(terminalreporter, path) -> None:
    header = ("fault", "events in", "labelled (unique)", "duplicates", "dead-lettered", "counters exact",
              "alerts recorded/sent", "ids match", "fired", "recover s")
    terminalreporter.section(f"chaos results ({path.relative_to(ROOT)})")
    terminalreporter.write_line("| " + " | ".join(header) + " |")
    terminalreporter.write_line("|" + "---|" * len(header))
    for r in orjson.loads(path.read_bytes()):
        cells = (r["fault"], r["events_in"], r["labelled_unique"], r["duplicates"], r["dead_lettered"],
                 "yes" if r["counters_exact"] else "NO", f"{r['alerts_expected']}/{r['alerts_sent']}",
                 "yes" if r["alert_ids_match"] else "NO", ", ".join(r["fired"]) or "none", r["recover_s"])
        terminalreporter.write_line("| " + " | ".join(map(str, cells)) + " |")
