"""The dashboard (`consumer serve` at /): its JSON routes on a known day in real Redis, the page in
headless Chromium against a real consumer's metrics, and the Grafana dashboard's metric names
against a live /metrics scrape."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.alerts.state import AlertStore
from consumer.api import ReadAPI
from consumer.dashboard import assets
from consumer.state.rates import RateStore
from consumer.dashboard.status import ConsumerStatus
from consumer.observability import Health, Metrics, serve_metrics
from consumer.state.counters import CounterLayout, CounterStore
from tests.conftest import REDIS_URL

from .dashboard_data import ALERT_TTL_S, FIRING, QUERIES, RESOLVED, write_known_day
from .harness import ROOT, free_port, make_events, produce, wait_for

GRAFANA_DASHBOARD = ROOT / "services/monitoring/grafana/dashboards/shop-sentiment.json"
BROWSER_PACKAGES = "chromium chromium-driver fonts-wqy-microhei"


@pytest.fixture
def known_day(redis_prefix):
    client, prefix = redis_prefix
    store = CounterStore(client, CounterLayout(prefix + "dash"))
    return store, write_known_day(store, int(time.time() * 1000))


# ---- the JSON routes the page reads --------------------------------------------------------

def test_series_has_the_day_per_hour_the_baseline_and_the_firing_periods(known_day):
    store, day = known_day
    api = ReadAPI(store, RateStore(store), AlertStore(store.client, store.layout, ALERT_TTL_S), 300, 86400)
    reply = api.route("GET", "/series?kind=query&name=" + urllib.request.quote(" 空气炸锅 ") + "&window=24h")
    assert reply.status == 200
    series = orjson.loads(reply.body)
    assert series["query"] == RESOLVED and series["bucket_seconds"] == 3600 and len(series["points"]) == 24
    assert sum(p["total"] for p in series["points"]) == sum(day.counts[("query", RESOLVED)].values())
    assert sum(p["negative"] for p in series["points"]) == day.counts[("query", RESOLVED)]["negative"]
    for point in series["points"]:  # the exact estimator recovers each bucket's counted share
        assert point["negative_share"] is None if point["total"] == 0 else point["negative_share"] == round(point["negative"] / point["total"], 4)
    # One resolved spike: fired 36 minutes before the data's "now", resolved at it.
    (period,) = series["firing_periods"]
    assert period["to"] - period["from"] == 36 * 60 and abs(period["to"] - day.now_ms // 1000) <= 1
    # The baseline: the day before the 5-minute alert window, the recovery events excluded.
    baseline = series["baseline"]
    assert baseline["total"] == sum(day.counts[("query", RESOLVED)].values()) - 12 and baseline["seconds"] == 86400
    firing = orjson.loads(api.route("GET", "/series?name=" + urllib.request.quote(FIRING)).body)
    assert [p["to"] for p in firing["firing_periods"]] == [None]
    minute = orjson.loads(api.route("GET", "/series?kind=product&name=B-CABLE-1&window=1h").body)
    assert minute["bucket_seconds"] == 60 and len(minute["points"]) == 60 and minute["product_id"] == "B-CABLE-1"


@pytest.mark.parametrize("target, message", [
    ("/series?kind=shop&name=x", "kind 'shop' is not query or product"),
    ("/series?name=%20%20", "query is empty"),
    ("/series?kind=product&name=", "product_id is empty"),
    ("/series?name=x&window=2d", "longer than the longest kept window"),
    ("/series?name=x&window=soon", "window"),
    ("/top?kind=brand", "kind 'brand' is not query or product"),
])
def test_bad_parameters_are_400_with_the_reason(known_day, target, message):
    store, _ = known_day
    reply = ReadAPI(store, RateStore(store), AlertStore(store.client, store.layout, ALERT_TTL_S)).route("GET", target)
    assert reply.status == 400 and message in orjson.loads(reply.body)["error"]


def test_page_and_assets_are_served_with_a_strict_policy_and_nothing_else(known_day):
    store, _ = known_day
    api = ReadAPI(store, RateStore(store), AlertStore(store.client, store.layout, ALERT_TTL_S))
    page = api.route("GET", "/")
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    # Every script and stylesheet the page names is served from here (no CDN: it works offline).
    for src in re.findall(rb'(?:src|href)="(/static/[^"]+)"', page.body):
        assert api.route("GET", src.decode()).status == 200, src
    assert re.findall(rb'(?:src|href)="(https?:)', page.body) == []
    for target in ("/static/../api.py", "/static/vendor/uplot-1.6.32/LICENSE", "/static/", "/index.html"):
        assert api.route("GET", target).status == 404, target
    assert orjson.loads(api.route("GET", "/status").body) == {"configured": False}
    paths = orjson.loads(api.route("GET", "/openapi.json").body)["paths"]
    assert {"/series", "/status", "/"} <= set(paths)


def test_status_without_a_reachable_consumer_says_so_without_the_address():
    url = f"http://user:secret@127.0.0.1:{free_port()}/metrics"
    status = ConsumerStatus(url, timeout_s=1).read()
    assert status["available"] is False and "unreachable" in status["error"] and "secret" not in status["error"]


def test_status_reads_models_rates_lag_and_troubles_from_the_consumers_metrics_endpoint():
    metrics = Metrics()
    health = Health(metrics, stall_s=30)
    port = free_port()
    server = serve_metrics(metrics, health, "127.0.0.1", port)
    try:
        metrics.model.labels("english", "shop-sentiment", "v-42", "cpu").set(1)
        metrics.lag.labels("reviews", "0").set(7)
        metrics.lag.labels("reviews", "1").set(5)
        metrics.troubles.labels("redis").set(1)
        metrics.events_in.labels("reviews").inc(100)
        status = ConsumerStatus(f"http://127.0.0.1:{port}/metrics")
        first = status.read()
        assert first["available"] and first["events_in_per_s"] is None  # no rate from a single scrape
        assert first["models"] == [{"route": "english", "name": "shop-sentiment", "version": "v-42", "device": "cpu"}]
        assert first["lag_total"] == 12 and [p["lag"] for p in first["lag"]] == [7, 5] and first["troubles"] == ["redis"]
        metrics.events_in.labels("reviews").inc(300)
        metrics.events_out.labels("negative").inc(120)
        assert status.read() is first  # within a second every caller shares the last scrape
        time.sleep(1.2)
        second = status.read()
        # 300 in and 120 out over the same interval (at least the 1.2 s slept): at most 250/s, in 2.5x out.
        assert 0 < second["events_in_per_s"] <= 250 and abs(second["events_in_per_s"] / second["events_out_per_s"] - 2.5) < 0.01
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_metrics_url_that_is_not_http():
    result = subprocess.run([sys.executable, "-m", "consumer", "serve", "--metrics-url", "file:///etc/passwd", "--redis-url", REDIS_URL],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: --metrics-url must be an http:// or https:// URL"


def test_products_top_list_uses_the_product_field(known_day):
    store, day = known_day
    reply = ReadAPI(store, RateStore(store), AlertStore(store.client, store.layout, ALERT_TTL_S)).route("GET", "/top?kind=product&window=24h&limit=3")
    rows = orjson.loads(reply.body)["results"]
    expected = sorted(((day.negative_share("product", p), p) for _, p, _, _ in QUERIES), reverse=True)[:3]
    assert [r["product_id"] for r in rows] == [p for _, p in expected]


# ---- the page in a real browser ------------------------------------------------------------

@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(f"no Chromium here: install {BROWSER_PACKAGES} (Debian apt; `make test` does it when run as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000",
                "--lang=en-US", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


def _serve(prefix: str, metrics_url: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "consumer", "serve", "--port", str(port), "--redis-url", REDIS_URL, "--redis-prefix", prefix]
    proc = subprocess.Popen(args + (["--metrics-url", metrics_url] if metrics_url else []), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(base + "/openapi.json", timeout=1).status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(up, 30, "consumer serve to listen")
    return proc, base


def _live_consumer(stream) -> object:
    """A real consumer on the stream's topics that has labelled 20 events and dead-lettered one."""
    proc = stream["start"]()
    produce(stream["bootstrap"], stream["topics"]["input"], [orjson.dumps(e) for e in make_events(20, seed=5)] + [b"{not json"])
    wait_for(lambda: "sentiment_events_dead_lettered_total{" in proc.scrape()[1]
          and _sample(proc.scrape()[1], "sentiment_events_out_total") >= 20, 120, "the consumer to label 20 events")
    return proc


def _sample(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


# The page redraws its tables on every poll, so reads happen in one script call (a consistent
# snapshot) and clicks are retried when the element was replaced in between.
def _rows(chrome, table: str) -> list[list[str]]:
    return chrome.execute_script("return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
                                 ".map(tr => [...tr.cells].map(td => td.innerText.trim()))", table)


def _text(chrome, selector: str) -> str:
    return chrome.execute_script("const e = document.querySelector(arguments[0]); return e && !e.hidden ? e.innerText : ''", selector)


def _click(chrome, selector: str) -> None:
    from selenium.common.exceptions import WebDriverException

    def clicked() -> bool:
        try:
            chrome.find_element("css selector", selector).click()
            return True
        except WebDriverException:
            return False

    wait_for(clicked, 10, f"a click on {selector}")


# Pixels of the share line (--neg, opaque) and of the firing shade (--firing, translucent), and
# whether the first query's Chinese glyphs differ from characters no font has (tofu boxes).
CANVAS_PROBE = """
const canvas = document.querySelector('#chart canvas');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let line = 0, shade = 0;
for (let i = 0; i < data.length; i += 4) {
  const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
  if (a > 240 && Math.abs(r - 198) < 12 && Math.abs(g - 40) < 12 && Math.abs(b - 40) < 12) line++;
  if (a > 30 && a < 90 && r > 240 && g > 135 && g < 170 && b < 30) shade++;
}
function glyphs(text) {
  const c = document.createElement('canvas'); c.width = 200; c.height = 40;
  const ctx = c.getContext('2d'); ctx.font = '28px ' + getComputedStyle(document.body).fontFamily;
  ctx.fillText(text, 2, 30); return c.toDataURL();
}
return {line, shade, width: canvas.width, cjk: glyphs(arguments[0]) !== glyphs('\\ue000\\ue001\\ue002\\ue003')};
"""


def test_dashboard_in_headless_chromium(stream, browser, tiny_checkpoint, tmp_path):
    consumer = _live_consumer(stream)
    store = CounterStore(stream["client"], CounterLayout(stream["store"].layout.prefix + ":dash"))
    day = write_known_day(store, int(time.time() * 1000))
    serve, base = _serve(store.layout.prefix, f"http://127.0.0.1:{consumer.metrics_port}/metrics")
    try:
        chrome = browser
        chrome.get(base + "/")
        _click(chrome, '#windows button[data-window="24h"]')
        wait_for(lambda: len(_rows(chrome, "#top-queries")) == len(QUERIES), 20, "the day's seven queries")
        # The rows a person sees: every query, most negative first, with the true share of the day.
        expected = sorted(((day.negative_share("query", q), q) for q, *_ in QUERIES), key=lambda r: (-r[0], r[1]))
        rows = _rows(chrome, "#top-queries")
        assert [row[0] for row in rows] == [q for _, q in expected]
        for row, (share, query) in zip(rows, expected):
            counts = day.counts[("query", query)]
            assert row[1:3] == [str(counts["negative"]), str(sum(counts.values()))]
            assert row[3].startswith(f"{100 * round(share, 4):.1f}% ("), (query, row[3])  # the API's 4 decimals, shown to 1
        assert chrome.execute_script("return [...document.querySelectorAll('#top-queries tr.firing')].map(tr => tr.dataset.name)") == [FIRING]
        # The consumer panel: the real consumer's model version, its rates and lag.
        manifest = json.loads((tiny_checkpoint / "manifest.json").read_text())
        panel = wait_for(lambda: "events/s" in (t := _text(chrome, "#consumer")) and t, 20, "the consumer panel")
        assert manifest["version"] in panel and "lag" in panel
        # Alerts: the firing spike with its statistic, and the resolved one.
        firing = _text(chrome, "#alerts li.firing")
        assert FIRING in firing and "z = " in firing and "vs baseline" in firing
        assert RESOLVED in _text(chrome, "#alerts li.resolved")
        # The chart for the first query by default; clicking the firing query charts it, with its firing period.
        _click(chrome, f'#top-queries tr[data-name="{FIRING}"]')
        wait_for(lambda: _text(chrome, "#series-name").startswith(FIRING), 10, "the chart to switch")
        probe = wait_for(lambda: (p := chrome.execute_script(CANVAS_PROBE, FIRING))["line"] > 200 and p["shade"] > 200 and p, 10,
                      "the share line and the firing shade on the canvas")
        assert probe["cjk"], f"Chinese text renders as empty boxes: install a CJK font ({BROWSER_PACKAGES})"
        # The filter narrows both tables as one types.
        box = chrome.find_element("css selector", "#filter")
        box.send_keys("耳机")
        assert [r[0] for r in _rows(chrome, "#top-queries")] == [FIRING]
        assert _rows(chrome, "#top-products") == []
        box.clear()
        box.send_keys("cable")
        assert [r[0] for r in _rows(chrome, "#top-queries")] == ["usb c cable"]
        assert [r[0] for r in _rows(chrome, "#top-products")] == ["B-CABLE-1"]
        box.clear()
        box.send_keys(" ")  # an input event with an empty filter restores every row
        wait_for(lambda: len(_rows(chrome, "#top-queries")) == len(QUERIES), 5, "the filter to clear")
        # Live: the page polls; the "updated" stamp moves without a reload.
        stamp = _text(chrome, "#updated")
        chrome.execute_script("window.__same_page = true")
        wait_for(lambda: _text(chrome, "#updated") != stamp, 15, "a poll")
        assert chrome.execute_script("return window.__same_page") is True
        assert _text(chrome, "#problem") == ""
        errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        assert chrome.save_screenshot(str(shot))
        header = shot.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24])[0] >= 1200
    finally:
        serve.terminate()
        serve.wait(timeout=10)


# ---- Grafana -------------------------------------------------------------------------------

ALLOWED_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def test_grafana_panels_query_metrics_the_consumer_exports(stream):
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(dashboard["panels"]) >= 8 and all(panel["datasource"]["uid"] == "prometheus" for panel in dashboard["panels"])
    text = _live_consumer(stream).scrape()[1]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    exported = {f.name + suffix: f for f in families.values() for suffix in ALLOWED_SUFFIXES.get(f.type, ())}
    for expr in exprs:
        names = re.findall(r"\bsentiment_[a-z0-9_]+\b", expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not in the consumer's /metrics"
            family = exported[name]
            # Labels grouped on must be the metric's, where the scrape shows its samples.
            grouped = {label.strip() for by in re.findall(r"by \(([^)]*)\)", expr) for label in by.split(",")} - {"le"}
            if family.samples:
                labels = set().union(*(s.labels for s in family.samples))
                assert grouped <= labels, f"{expr!r} groups by {grouped - labels}, not labels of {name}"
    # The list of panels is covered.
    wanted = ["sentiment_events_in_total", "sentiment_events_out_total", "sentiment_events_dead_lettered_total",
              "sentiment_batch_size_bucket", "sentiment_inference_seconds_bucket", "sentiment_end_to_end_latency_seconds_bucket",
              "sentiment_consumer_lag", "sentiment_redis_retries_total", "sentiment_alerts_total"]
    assert [name for name in wanted if not any(name in e for e in exprs)] == []


def test_unknown_asset_names_take_no_cache_entries():
    def cached_entries() -> int:
        return sum(f.cache_info().currsize for f in vars(assets).values() if hasattr(f, "cache_info"))

    for i in range(1000):  # request paths are the client's choice: junk must not grow the process
        assert assets.asset(f"junk-{i}.js") is None
    assert cached_entries() <= len(assets.FILES)
    content_type, body = assets.asset("index.html")
    assert content_type.startswith("text/html") and body == (assets.STATIC / "index.html").read_bytes()
    assert assets.asset("index.html")[1] is body  # allowed files are still read once
