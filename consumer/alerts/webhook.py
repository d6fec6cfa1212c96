"""Best-effort webhook delivery of alerts, off the consumer loop.

A bounded queue and one worker thread: a slow or dead webhook never blocks the
loop, and the Kafka alert (the durable copy) is produced regardless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import orjson

log = logging.getLogger("consumer.webhook")


class WebhookNotifier:
    def __init__(self, url: str, timeout_s: float = 3.0, retries: int = 3, max_queue: int = 1000, on_result=None) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"alert webhook {url!r} must be an http(s) URL")
        self.url, self.timeout_s, self.retries = url, timeout_s, retries
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self.on_result = on_result or (lambda outcome: None)
        threading.Thread(target=self._work, name="alert-webhook", daemon=True).start()

    def submit(self, alert: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            self.on_result("dropped")
            log.warning("webhook queue full; alert not posted (it is on the alerts topic)", extra={"alert_id": alert["alert_id"]})

    def _work(self) -> None:
        while True:
            alert = self.queue.get()
            self.on_result(self._post(alert))

    def _post(self, alert: dict[str, Any]) -> str:
        body = orjson.dumps(alert)
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return "delivered"
            except (urllib.error.URLError, OSError) as exc:
                log.warning("webhook post failed", extra={"alert_id": alert["alert_id"], "attempt": attempt + 1, "error": str(exc)[:200]})
            time.sleep(min(5.0, 0.5 * 2**attempt))
        return "failed"
