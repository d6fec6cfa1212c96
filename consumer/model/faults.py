"""Fault injection for chaos tests, off unless an environment variable names a file.

SENTIMENT_FAULT_MODEL_FAIL_FILE=/path: while that file exists, every forward pass raises,
as a sticky CUDA error or an out-of-memory would. Checking a path costs microseconds
against milliseconds per forward pass.
"""

from __future__ import annotations

import os

MODEL_FAIL_FILE = os.environ.get("SENTIMENT_FAULT_MODEL_FAIL_FILE", "")


class InjectedModelFailure(RuntimeError):
    pass


def check_model_fault() -> None:
    if MODEL_FAIL_FILE and os.path.exists(MODEL_FAIL_FILE):
        raise InjectedModelFailure(f"injected model failure (fault file {MODEL_FAIL_FILE} exists)")
