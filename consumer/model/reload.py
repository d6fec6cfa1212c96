"""Hot reload under the consumer group's rollout decision (model_runtime/rollout.py).

Every process of a group serves the version the group's state has in service, and the
group decides what that is once:

- start-up (`serve_at_start`): the version in service, never whatever `latest` names; when
  it can't be loaded or fails its checks here, the last good version, said loudly. Only a
  group with no state at all starts from `latest`, checked.
- the reload thread, every `interval_s`: tells the group what `latest` names (`follow`). A
  new version is loaded here from its own directory, checked, and offered: it becomes the
  group's canary, or without one the version in service. A check that fails refuses it for
  the group. `latest` back at the version in service cancels a canary; `latest` at a version
  served before is a rollback, in service at once. The thread also loads what the group's
  state names and this process lacks (the version in service, the candidate).
- the inference thread, between batches (`adopt`): one HGET of the state's epoch; on a
  change, the state. It swaps in the version in service once loaded, and starts or drops
  the canary's shadow. After each batch (`observe`) the shadowed events go to the group's
  tally; the process whose events complete it decides for all.

A Redis error here never stops labelling: the process keeps its model and tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model_runtime.rollout import CanaryRule, RolloutState, RolloutStore
from schemas.checkpoint import MANIFEST_FILE, CheckpointError, read_manifest
from schemas.redis_connection import REDIS_ERRORS

from ..errors import ConfigError
from .canary import Canary
from .language import MULTILINGUAL

log = logging.getLogger("consumer.reload")
_ENGLISH_SMOKE = [("good product, works great", "positive"), ("terrible, it broke after a day", "negative"),
                  ("I love it, highly recommend", "positive"), ("waste of money, very disappointed", "negative")]
# Texts of known polarity: a checkpoint that reads them the wrong way round (labels swapped)
# is refused. The English model is unreliable on Chinese, so each route is asked in its languages.
SMOKE_TEXTS = {MULTILINGUAL: _ENGLISH_SMOKE + [("质量很好，非常满意", "positive"), ("太差了，退货", "negative"),
                                               ("物美价廉，推荐购买", "positive"), ("很失望，用了一天就坏了", "negative")]}
_REDIS_RETRY_LOG_S = 30.0
_LOAD_RETRY_S = 60.0  # a version the group names that failed to load here is tried again after this


class CheckpointRefused(Exception):
    """A new checkpoint that must not serve, with the reason."""


def smoke_texts(route: str) -> list[tuple[str, str]]:
    return SMOKE_TEXTS.get(route, _ENGLISH_SMOKE)


def check_alone(model, route: str) -> None:
    """Refuse a loaded checkpoint whose smoke batch is no distribution, or that reads half or more
    of the smoke texts the wrong way round (positive against negative probability, the decision
    rule aside)."""
    smoke = smoke_texts(route)
    probs, _ = model.forward([text for text, _ in smoke])
    if probs.shape != (len(smoke), len(model.labels)) or not np.isfinite(probs).all() \
            or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise CheckpointRefused("smoke batch gave no probability distribution (non-finite or not summing to 1)")
    negative, positive = model.labels.index("negative"), model.labels.index("positive")
    wrong = [text for (text, want), row in zip(smoke, probs) if (row[positive] > row[negative]) != (want == "positive")]
    if 2 * len(wrong) >= len(smoke):
        raise CheckpointRefused(f"smoke texts of known polarity read the other way round ({len(wrong)} of {len(smoke)}, "
                                f"e.g. {wrong[0]!r}): labels swapped?")


def check_candidate(candidate, active, route: str) -> None:
    """Refuse a loaded checkpoint that could not take the running model's place."""
    if set(candidate.labels) != set(active.labels):
        raise CheckpointRefused(f"labels {candidate.labels} differ from the running model's {active.labels}")
    check_alone(candidate, route)


def version_dir(path: str, version: str) -> str:
    """Where `version` of a route's checkpoint lives: beside `latest` (the trainer publishes
    ROOT/<version>), or `path` itself when it is that version."""
    sibling = Path(path).parent / version
    if (sibling / MANIFEST_FILE).is_file():
        return str(sibling)
    if read_manifest(path)["version"] == version:
        return str(Path(path).resolve())
    raise CheckpointError(f"version {version} is not in {Path(path).parent} (beside {path})")


def load_version(load: Callable[[str], object], path: str, version: str):
    model = load(version_dir(path, version))
    if model.version != version:
        raise CheckpointError(f"{version_dir(path, version)} holds version {model.version}, not {version}")
    return model


def _check_at_start(model, route: str, timeout_s: float) -> None:
    """check_alone, where a smoke batch that raises or does not return within `timeout_s` is no
    verdict on the checkpoint: a device or a model pass failing now is the pipeline's to handle
    (it waits with partitions paused, probes, dead-letters, stops with exit 3), not a reason to
    refuse to start or to hang before polling."""
    outcome: list[BaseException | None] = []

    def smoke() -> None:
        try:
            check_alone(model, route)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            outcome.append(exc)

    thread = threading.Thread(target=smoke, name="smoke-check", daemon=True)  # a hung pass is left behind
    thread.start()
    thread.join(timeout_s)
    error = outcome[0] if outcome else TimeoutError(f"no result within {timeout_s:.0f} s")
    if isinstance(error, CheckpointRefused):
        raise error
    if error is not None:
        log.warning("smoke batch could not run at start-up; serving, the model-failure handling takes over",
                    extra={"route": route, "model_version": model.version, "error": f"{type(error).__name__}: {error}"[:300]})


def serve_at_start(store: RolloutStore, path: str, load: Callable[[str], object], route: str,
                   on_fallback: Callable[[str, str, str], None], smoke_timeout_s: float = 30.0) -> tuple[object, RolloutState]:
    """The model this process starts with, and the group's state (see the module doc)."""
    state = store.read()
    first = None
    if state is None:
        try:
            first = load(str(Path(path).resolve()))
            _check_at_start(first, route, smoke_timeout_s)
        except CheckpointRefused as exc:
            raise ConfigError(f"{path}: {exc}") from None
        action, state = store.init(first.version)
        if action == "init":
            log.info("first start of the group: serving latest", extra={"route": route, "model_version": first.version})
            return first, state
    failures = []
    for version in (state.serving, state.last_good):
        if not version or version in state.refused:
            continue
        try:
            model = first if first is not None and first.version == version else load_version(load, path, version)
            _check_at_start(model, route, smoke_timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever a broken checkpoint raises, the next one is tried
            failures.append(f"{version}: {type(exc).__name__}: {exc}"[:300])
            continue
        if version != state.serving:
            on_fallback(route, state.serving, failures[0])
            log.error("the group's version in service can't be served here; serving its last good version",
                      extra={"route": route, "in_service": state.serving, "model_version": version, "reason": failures[0]})
        return model, state
    raise ConfigError(f"the group's version in service ({state.serving}) and its last good version "
                      f"({state.last_good or 'none'}) can't be served from {Path(path).parent}: {'; '.join(failures) or 'refused'} "
                      "(publish a good version there and roll back to it, or forget the group's state: python -m trainer rollout --reset)")


class ModelReloader:
    """`models` is the Labeller's own route -> model dict: `adopt` swaps entries in it."""

    def __init__(self, models: dict, paths: dict[str, str], stores: dict[str, RolloutStore], states: dict[str, RolloutState],
                 load: Callable[[str], object], interval_s: float, canary: CanaryRule | None,
                 on_swap: Callable[[str, object, object], None], on_refused: Callable[[str, str, str], None],
                 on_canary: Callable[[str, Canary, RolloutState, str, int], None]) -> None:
        self.models = models
        self.paths = paths
        self.stores = stores
        self.load = load
        self.interval_s = interval_s
        self.canary_rule = canary
        self.on_swap = on_swap
        self.on_refused = on_refused
        self.on_canary = on_canary
        self._states = dict(states)  # route -> the group's state as last read (inference thread)
        self._epochs = {route: state.epoch for route, state in states.items()}
        self._loaded: dict[str, dict[str, object]] = {route: {} for route in paths}  # versions the state names, ready here
        self._canaries: dict[str, Canary] = {}
        self._said: set[tuple[str, str, str]] = set()
        self._failed_at: dict[tuple[str, str], float] = {}  # (route, version) that could not be loaded here -> when
        self._followed = {route: self._latest(route) for route in paths}  # `latest` as this process last acted on it
        self._redis_logged = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- the reload thread ----------------------------------------------------------------
    def _run(self) -> None:
        next_follow = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            follow = self.interval_s > 0 and time.monotonic() >= next_follow
            if follow:
                next_follow = time.monotonic() + self.interval_s
            for route in self.paths:
                try:
                    if follow:
                        self.follow(route)
                    else:
                        self.sync(route)
                except REDIS_ERRORS as exc:
                    self._redis_failed("rollout state unreachable; the running model keeps serving", exc)
                except Exception:  # noqa: BLE001 - the thread outlives any one failure; the running model keeps serving
                    log.exception("model reload failed; the running model keeps serving", extra={"route": route})
            self._wake.wait(max(0.05, next_follow - time.monotonic()) if self.interval_s > 0 else None)
            self._wake.clear()

    def follow(self, route: str) -> None:
        """When `latest` names another version than this process saw last, tell the group; check a
        version new to the group, and offer it. Acting on moves only, a host whose view of `latest`
        lags behind never drags the group back."""
        path, store = self.paths[route], self.stores[route]
        version = self._latest(route)
        if version is None or version == self._followed.get(route):
            self.sync(route)
            return
        action, state = store.follow(version)
        if action == "no_state":  # the state is gone (a flushed Redis): the version in service here starts it again
            store.init(self.models[route].version)
            action, state = store.follow(version)
        if action == "check":
            try:
                candidate = load_version(self.load, path, version)
                check_candidate(candidate, self.models[route], route)
            except (CheckpointError, CheckpointRefused) as exc:  # the files themselves: the same for every process
                store.refuse(version, str(exc)[:300])
                self._refused(route, version, str(exc))
                self._followed[route] = version
                self.sync(route)
                return
            # Anything else (memory, a device error) may be this host's alone: it propagates, is logged by the
            # thread, and the move is acted on again at the next interval.
            with self._lock:
                self._loaded[route][version] = candidate
            action, state = store.offer(version, self.canary_rule)
            log.info("model version checked; offered to the group",
                     extra={"route": route, "model_version": version, "outcome": action, "decision": state.decision})
        elif action in ("cancelled", "rollback"):
            log.warning("latest moved back; the group follows", extra={"route": route, "model_version": version,
                                                                        "outcome": action, "decision": state.decision})
        self._followed[route] = version
        if state is not None:
            self._need(route, state)

    def _latest(self, route: str) -> str | None:
        try:
            return read_manifest(self.paths[route])["version"]
        except CheckpointError as exc:
            self._say(route, "(latest)", str(exc), lambda reason: log.warning(
                "latest is unreadable; the group's decision stands", extra={"route": route, "reason": reason[:300]}))
            return None

    def sync(self, route: str) -> None:
        """Load what the group's state names and this process lacks."""
        state = self.stores[route].read()
        if state is not None:
            self._need(route, state)

    def _need(self, route: str, state: RolloutState) -> None:
        needed = {state.serving, state.candidate} - {"", self.models[route].version}
        with self._lock:
            loaded = self._loaded[route]
            for version in set(loaded) - needed:
                del loaded[version]
            missing = needed - set(loaded)
        for version in sorted(missing):
            if time.monotonic() - self._failed_at.get((route, version), -_LOAD_RETRY_S) < _LOAD_RETRY_S:
                continue  # a full model load is not retried at every batch's wake-up
            try:
                model = load_version(self.load, self.paths[route], version)
                check_candidate(model, self.models[route], route)
            except Exception as exc:  # noqa: BLE001 - this process can't serve it; the group's decision stands
                self._failed_at[(route, version)] = time.monotonic()
                role = "in service" if version == state.serving else "under canary"
                self._say(route, version, f"{type(exc).__name__}: {exc}",
                          lambda reason: log.error(f"the group's version {role} can't be loaded here; the running model keeps serving",
                                                   extra={"route": route, "model_version": version, "reason": reason[:300]}))
                continue
            with self._lock:
                self._loaded[route][version] = model
            log.info("model version loaded for the group's decision; adopted at the next batch",
                     extra={"route": route, "model_version": version, "role": "in service" if version == state.serving else "canary"})

    # -- the inference thread -------------------------------------------------------------
    def adopt(self) -> None:
        """Between batches: the group's decision, adopted as soon as its version is loaded here."""
        for route, store in self.stores.items():
            try:
                epoch = store.epoch()
                if epoch != self._epochs.get(route):
                    state = store.read()
                    self._epochs[route] = epoch
                    if state is not None:
                        self._states[route] = state
                    self._wake.set()  # the reload thread loads what the new state names
            except REDIS_ERRORS as exc:
                self._redis_failed("rollout state unreachable; the running model keeps serving", exc)
            self._apply(route)

    def _apply(self, route: str) -> None:
        state = self._states.get(route)
        if state is None:
            return
        active = self.models[route]
        with self._lock:
            ready = self._loaded[route].get(state.serving)
            shadow = self._loaded[route].get(state.candidate)
        if state.serving != active.version and ready is not None:
            self.models[route] = ready
            self.on_swap(route, active, ready)
            active = ready
        canary = self._canaries.get(route)
        if canary is not None and canary.candidate.version != state.candidate:
            self._end_canary(route)
        # A process serving another version than the group's (its fallback) would compare against the wrong model.
        if state.candidate and route not in self._canaries and shadow is not None and state.canary is not None \
                and active.version == state.serving:
            self._canaries[route] = Canary(shadow, state.canary)
        if (state.serving != active.version and ready is None) or (state.candidate and shadow is None):
            self._wake.set()  # the reload thread loads what the state names

    def observe(self, route: str, texts: list[str], labels: list[str | None]) -> None:
        """The running model labelled `texts`: shadow the group's canary and add to its tally."""
        canary = self._canaries.get(route)
        if canary is None:
            return
        version, store = canary.candidate.version, self.stores[route]
        try:
            try:
                compared, agreed = canary.shadow(texts, labels)
            except Exception as exc:  # noqa: BLE001 - a candidate failing in shadow is refused, never the batch
                reason = f"failed in shadow: {type(exc).__name__}: {exc}"[:300]
                self._end_canary(route)
                _, state = store.refuse(version, reason)
                self._refused(route, version, reason)
            else:
                if not compared:
                    return
                action, state = store.tally(version, compared, agreed)
                if action != "stale":
                    canary.counted += compared
                if state is not None:
                    self.on_canary(route, canary, state, action, compared)
                if action == "refused":
                    self._refused(route, version, state.refused.get(version, "refused by the canary"))
        except REDIS_ERRORS as exc:
            self._redis_failed("canary tally not written; these shadowed events are not counted", exc)
            return
        if state is None:  # the state was reset: no canary runs for the group
            self._end_canary(route)
            return
        self._states[route], self._epochs[route] = state, state.epoch
        self._apply(route)  # the canary stops at once; a promoted version serves from the next batch

    def _end_canary(self, route: str) -> None:
        canary = self._canaries.pop(route)
        log.info("canary ended in this process", extra={"route": route, "model_version": canary.candidate.version,
                                                        "shadowed": canary.counted})

    # -- saying things once ---------------------------------------------------------------
    def _say(self, route: str, version: str, reason: str, say: Callable[[str], None]) -> None:
        if (route, version, reason) not in self._said:
            self._said.add((route, version, reason))
            say(reason)

    def _refused(self, route: str, version: str, reason: str) -> None:
        self._say(route, version, reason, lambda why: self.on_refused(route, version, why[:300]))

    def _redis_failed(self, message: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._redis_logged >= _REDIS_RETRY_LOG_S:
            self._redis_logged = now
            log.warning(message, extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
