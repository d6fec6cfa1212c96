"""The bounded HTTP server: a burst beyond the thread cap gets 503 at once; idle sockets time out."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

from consumer.httpserver import BoundedHTTPServer


def test_requests_beyond_the_thread_cap_get_503_and_slow_clients_time_out():
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = BoundedHTTPServer(("127.0.0.1", 0), Slow, max_threads=2, request_timeout_s=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    busy = [threading.Thread(target=urllib.request.urlopen, args=(url,), kwargs={"timeout": 10}) for _ in range(2)]
    for t in busy:
        t.start()
    time.sleep(0.5)
    try:
        urllib.request.urlopen(url, timeout=5)
        raise AssertionError("a third request should be refused while two are in flight")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
    release.set()
    for t in busy:
        t.join(10)
    # A client that connects and sends nothing is dropped after the request timeout.
    with socket.create_connection(("127.0.0.1", server.server_port)) as idle:
        idle.settimeout(5)
        started = time.monotonic()
        assert idle.recv(1024) == b""
        assert time.monotonic() - started < 3
    assert urllib.request.urlopen(url, timeout=5).status == 200
    server.shutdown()
