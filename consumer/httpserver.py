"""The HTTP server both endpoints use (/metrics and the read API): bounded threads, timed-out sockets.

A thread per request, but at most `max_threads` at once: a burst of slow requests is
answered 503 instead of piling up threads (and Redis reads) without bound. Each
connection's socket reads time out, so a client that stops sending frees its thread.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_BUSY = b'{"error": "server busy; retry shortly"}'


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_threads: int = 16,
                 request_timeout_s: float = 10.0) -> None:
        if max_threads < 1 or request_timeout_s <= 0:
            raise ValueError("max_threads must be >= 1 and request_timeout_s > 0")
        handler.timeout = request_timeout_s
        self.slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
