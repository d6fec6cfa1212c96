"""Hot reload: a new version behind a checkpoint path replaces the running model between batches.

A background thread polls each route's checkpoint path (the `latest` symlink the trainer
swaps atomically; `read_manifest` resolves it) every `interval_s`. A new version is
loaded and checked there, off the hot path: the manifest, the same labels as the running
model (counters and shares are per label), and a smoke batch of finite probabilities that
sum to one. The inference thread adopts it at the start of its next batch, so each batch
is labelled by one version per route, nothing is re-sent and no rebalance happens. A
checkpoint that fails a check is refused once per version, with a log line and a metric,
and the running model keeps serving. With a canary policy (model/canary.py) a checked
version first labels a sample of each batch in shadow, and is swapped in only when it
agrees enough with the running model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from schemas.checkpoint import CheckpointError, read_manifest

from .canary import Canary, CanaryPolicy, Decision

log = logging.getLogger("consumer.reload")
SMOKE_TEXTS = ["good product", "terrible, it broke after a day", "质量很好", "太差了，退货"]


class CheckpointRefused(Exception):
    """A new checkpoint that must not replace the running model, with the reason."""


def check_candidate(candidate, active) -> None:
    """Refuse a loaded checkpoint that could not take the running model's place."""
    if set(candidate.labels) != set(active.labels):
        raise CheckpointRefused(f"labels {candidate.labels} differ from the running model's {active.labels}")
    probs, _ = candidate.forward(SMOKE_TEXTS)
    if probs.shape != (len(SMOKE_TEXTS), len(candidate.labels)) or not np.isfinite(probs).all() \
            or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise CheckpointRefused("smoke batch gave no probability distribution (non-finite or not summing to 1)")


class ModelReloader:
    """`models` is the Labeller's own route -> model dict: `adopt` swaps entries in it."""

    def __init__(self, models: dict, paths: dict[str, str], load: Callable[[str], object], interval_s: float,
                 on_swap: Callable[[str, object, object], None], on_refused: Callable[[str, str, str], None],
                 canary: CanaryPolicy | None = None,
                 on_canary: Callable[[str, Canary, Decision], None] = lambda route, canary, decision: None) -> None:
        self.models = models
        self.canary_policy = canary
        self.on_canary = on_canary
        self._canaries: dict[str, Canary] = {}
        self.paths = paths
        self.load = load
        self.interval_s = interval_s
        self.on_swap = on_swap
        self.on_refused = on_refused
        self._pending: dict[str, object] = {}
        self._refused: dict[str, tuple[str, str]] = {}  # route -> (version, reason) last refused
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for route in self.paths:
                self.check(route)

    def check(self, route: str) -> None:
        """Load and check a new version of `route`'s checkpoint when there is one (the reload thread)."""
        path = self.paths[route]
        try:
            version = read_manifest(path)["version"]
        except CheckpointError as exc:
            self._refuse(route, "(unreadable)", str(exc))
            return
        with self._lock:
            known = {self.models[route].version, getattr(self._pending.get(route), "version", None),
                     getattr(getattr(self._canaries.get(route), "candidate", None), "version", None)}
        if version in known or self._refused.get(route, ("",))[0] == version:
            return
        try:
            candidate = self.load(path)
            check_candidate(candidate, self.models[route])
        except (CheckpointError, CheckpointRefused) as exc:
            self._refuse(route, version, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - whatever a broken checkpoint raises, the running model keeps serving
            self._refuse(route, version, f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            if self.canary_policy is None:
                self._pending[route] = candidate
            else:
                self._canaries[route] = Canary(candidate, self.canary_policy)
        if self.canary_policy is None:
            log.info("model version loaded; swapping in at the next batch", extra={"route": route, "model_version": candidate.version})
        else:
            log.info("model version loaded; shadowing a sample of live traffic before promoting it",
                     extra={"route": route, "model_version": candidate.version, "canary_share": self.canary_policy.share,
                            "canary_min_events": self.canary_policy.min_events})

    def observe(self, route: str, texts: list[str], labels: list[str | None]) -> None:
        """The running model labelled `texts` (the inference thread): feed the route's canary, if any."""
        with self._lock:
            canary = self._canaries.get(route)
        if canary is None:
            return
        try:
            decision = canary.observe(texts, labels)
        except Exception as exc:  # noqa: BLE001 - a candidate failing in shadow is refused, never the batch
            decision, reason = "refuse", f"failed in shadow: {type(exc).__name__}: {exc}"
        else:
            reason = (f"canary agreed with the running model on {canary.agreement:.1%} of {canary.compared} events, "
                      f"below --canary-min-agreement {canary.policy.min_agreement:.0%}")
        self.on_canary(route, canary, decision)
        if decision is None:
            return
        with self._lock:
            if self._canaries.get(route) is canary:
                del self._canaries[route]
                if decision == "promote":
                    self._pending[route] = canary.candidate  # swapped in at the start of the next batch
        if decision == "refuse":
            self._refuse(route, canary.candidate.version, reason)

    def _refuse(self, route: str, version: str, reason: str) -> None:
        if self._refused.get(route) == (version, reason):
            return  # said once per version (once per reason while the manifest is unreadable)
        self._refused[route] = (version, reason)
        self.on_refused(route, version, reason[:300])

    def adopt(self) -> None:
        """Swap in the versions that are ready (the inference thread, between batches)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            for route, candidate in pending.items():
                previous, self.models[route] = self.models[route], candidate
                self.on_swap(route, previous, candidate)
