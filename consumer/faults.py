"""Fault injection for the stream and chaos tests, off unless an environment variable sets it.

SENTIMENT_FAULT_MODEL_FAIL_FILE=/path   while that file exists, every forward pass raises, as a sticky
                                        CUDA error or an out-of-memory would.
SENTIMENT_FAULT_MODEL_HANG_FILE=/path   while that file exists, a forward pass does not return (a hung device).
SENTIMENT_FAULT_POISON_TEXT=<text>      a forward pass over a text containing <text> raises: a poison event.
SENTIMENT_FAULT_KILL_BEFORE_COMMIT_FILE=/path
                                        while that file exists, the process kills itself (SIGKILL) after a
                                        batch's outputs are acked and its counters written, before its commit:
                                        the one window where a crash duplicates outputs.
Checking a path costs microseconds against milliseconds per forward pass or batch.
"""

from __future__ import annotations

import os
import signal
import time

MODEL_FAIL_FILE = os.environ.get("SENTIMENT_FAULT_MODEL_FAIL_FILE", "")
MODEL_HANG_FILE = os.environ.get("SENTIMENT_FAULT_MODEL_HANG_FILE", "")
POISON_TEXT = os.environ.get("SENTIMENT_FAULT_POISON_TEXT", "")
KILL_BEFORE_COMMIT_FILE = os.environ.get("SENTIMENT_FAULT_KILL_BEFORE_COMMIT_FILE", "")


class InjectedModelFailure(RuntimeError):
    pass


def check_model_fault(texts: list[str]) -> None:
    if MODEL_FAIL_FILE and os.path.exists(MODEL_FAIL_FILE):
        raise InjectedModelFailure(f"injected model failure (fault file {MODEL_FAIL_FILE} exists)")
    while MODEL_HANG_FILE and os.path.exists(MODEL_HANG_FILE):
        time.sleep(0.1)
    if POISON_TEXT and any(POISON_TEXT in text for text in texts):
        raise InjectedModelFailure("injected poison text")


def check_kill_before_commit() -> None:
    if KILL_BEFORE_COMMIT_FILE and os.path.exists(KILL_BEFORE_COMMIT_FILE):
        os.kill(os.getpid(), signal.SIGKILL)
