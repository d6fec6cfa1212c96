"""bench/bench_scale.py at tiny sizes: it loads, measures through the HTTP API, cleans up and reports."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_scale  # noqa: E402


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary for its private server")
def test_a_tiny_run_reports_every_measure(tmp_path, capsys):
    out, plot = tmp_path / "scale.json", tmp_path / "scale.png"
    assert bench_scale.main(["--sizes", "20,60", "--active", "40,120", "--batches", "20", "--requests", "3", "--seconds", "1",
                             "--head-events", "40", "--out", str(out), "--plot", str(plot)]) == 0
    report = orjson.loads(out.read_bytes())
    assert [s["subjects"] for s in report["sizes"]] == [20, 60]
    for size in report["sizes"]:
        assert size["memory_per_subject_day"] > 0 and size["keys"] > size["subjects"]
        for mode in ("computed", "served"):
            assert set(size["reads"][mode]) == {"top_1h", "top_24h", "series_24h"}
            assert all(m["requests"] >= 3 and m["p99_ms"] >= m["p50_ms"] > 0 for m in size["reads"][mode].values())
        assert size["reads"]["computed"]["top_1h"]["redis_commands"] > 0
    assert [s["active"] for s in report["scheduling"]] == [40, 120]
    assert plot.stat().st_size > 0 and "scheduling:" in capsys.readouterr().out


def test_bad_sizes_are_one_line_errors(capsys):
    with pytest.raises(SystemExit):
        bench_scale.main(["--sizes", "100,10"])
    assert "sizes must be increasing" in capsys.readouterr().err
