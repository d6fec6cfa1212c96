"""Atomic publishing: a failure mid-write leaves `latest` on the previous checkpoint."""

from __future__ import annotations

import os

import pytest

from trainer.publish import publish


def _write_ok(directory):
    (directory / "model.safetensors").write_bytes(b"weights")


def test_publish_swaps_latest_and_failure_keeps_previous(tmp_path):
    first = publish(tmp_path, "v1", _write_ok, {"version": "v1"})
    assert os.readlink(tmp_path / "latest") == "v1"
    assert (tmp_path / "latest" / "manifest.json").is_file() and first == tmp_path / "v1"

    def write_then_fail(directory):
        (directory / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish(tmp_path, "v2", write_then_fail, {"version": "v2"})
    assert os.readlink(tmp_path / "latest") == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "v1"]

    publish(tmp_path, "v3", _write_ok, {"version": "v3"})
    assert os.readlink(tmp_path / "latest") == "v3"
    assert (tmp_path / "v1").is_dir()
