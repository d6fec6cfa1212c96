"""The dashboard's static files, served from this package: a fixed list, so no request names a path on disk."""

from __future__ import annotations

from functools import cache
from pathlib import Path

STATIC = Path(__file__).parent / "static"
UPLOT = "vendor/uplot-1.6.32"  # npm uplot@1.6.32, MIT (static/vendor/README.md)
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
FILES = ("index.html", "dashboard.js", "dashboard.css", f"{UPLOT}/uPlot.iife.min.js", f"{UPLOT}/uPlot.min.css")
# Everything the page loads comes from this server; no inline script can run, nothing is framed.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def asset(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a dashboard file by its path under static/, or None."""
    # Checked before the cache: names come from request paths, so an unknown one must not take an entry.
    return _read(name) if name in FILES else None


@cache
def _read(name: str) -> tuple[str, bytes]:
    return TYPES[Path(name).suffix], (STATIC / name).read_bytes()
