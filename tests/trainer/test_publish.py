"""Atomic publishing: a failure mid-write leaves `latest` on the previous checkpoint; weight digests recorded."""

from __future__ import annotations

import hashlib
import os

import orjson
import pytest

from schemas.checkpoint import MANIFEST_FILE
from trainer.errors import TrainerError
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


def _manifest(version: str) -> dict:
    return {"format_version": 1, "version": version, "created_at": "2026-12-01T00:00:00Z", "base_model": "b",
            "labels": ["negative", "positive"], "max_length": 8, "decision": {"kind": "argmax"}, "metrics": {},
            "data": {}, "hyperparameters": {}, "training": {}}


def test_rollback_points_latest_at_the_previous_or_a_named_version(tmp_path, capsys):
    from trainer.cli import main

    for version in ("20261201T100000Z-a", "20261201T110000Z-b", "20261201T120000Z-c"):
        publish(tmp_path, version, _write_ok, _manifest(version))
    assert main(["rollback", "--output-dir", str(tmp_path)]) == 0
    assert os.readlink(tmp_path / "latest") == "20261201T110000Z-b"
    assert "20261201T120000Z-c -> 20261201T110000Z-b" in capsys.readouterr().out
    assert main(["rollback", "--output-dir", str(tmp_path), "--version", "20261201T120000Z-c"]) == 0  # roll forward again
    assert os.readlink(tmp_path / "latest") == "20261201T120000Z-c"

    assert main(["rollback", "--output-dir", str(tmp_path), "--version", "nope"]) == 2
    assert "version 'nope' is not a checkpoint" in capsys.readouterr().err
    assert os.readlink(tmp_path / "latest") == "20261201T120000Z-c"


def test_rollback_with_nothing_older_says_so_and_keeps_latest(tmp_path, capsys):
    from trainer.cli import main

    publish(tmp_path, "20261201T100000Z-a", _write_ok, _manifest("20261201T100000Z-a"))
    assert main(["rollback", "--output-dir", str(tmp_path)]) == 2
    assert "no version older than 20261201T100000Z-a" in capsys.readouterr().err
    assert os.readlink(tmp_path / "latest") == "20261201T100000Z-a"


def test_refused_candidate_is_kept_aside_and_rollback_skips_it(tmp_path, capsys):
    from trainer.cli import main

    publish(tmp_path, "20261201T100000Z-a", _write_ok, _manifest("20261201T100000Z-a"))
    refused = {**_manifest("20261201T110000Z-b"), "comparison": {"deployed": "20261201T100000Z-a", "passed": False}}
    publish(tmp_path, "20261201T110000Z-b", _write_ok, refused, make_latest=False)
    assert os.readlink(tmp_path / "latest") == "20261201T100000Z-a"
    publish(tmp_path, "20261201T120000Z-c", _write_ok, _manifest("20261201T120000Z-c"))
    assert main(["rollback", "--output-dir", str(tmp_path)]) == 0
    assert os.readlink(tmp_path / "latest") == "20261201T100000Z-a"
    assert main(["publish", "--output-dir", str(tmp_path), "--version", "20261201T110000Z-b"]) == 0
    assert os.readlink(tmp_path / "latest") == "20261201T110000Z-b"
    assert main(["publish", "--output-dir", str(tmp_path)]) == 2
    assert "publish needs --version" in capsys.readouterr().err


def test_publish_records_the_weights_digest_and_refuses_weight_files_without_one(tmp_path):
    published = publish(tmp_path, "v1", _write_ok, {"version": "v1"})
    manifest = orjson.loads((published / MANIFEST_FILE).read_bytes())
    assert manifest["weights"] == {"model.safetensors": {"sha256": hashlib.sha256(b"weights").hexdigest(), "bytes": 7}}

    def write_unlisted_graph(directory):
        _write_ok(directory)
        (directory / "model.int8.onnx").write_bytes(b"graph")

    with pytest.raises(TrainerError, match="checkpoint v2 can't be published: model.int8.onnx not in the manifest's onnx listing"):
        publish(tmp_path, "v2", write_unlisted_graph, {"version": "v2"})
    with pytest.raises(TrainerError, match="checkpoint v3 can't be published: it has no model.safetensors"):
        publish(tmp_path, "v3", lambda directory: None, {"version": "v3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "v1"]


def test_reuse_takes_only_a_checkpoint_published_with_digests(tmp_path):
    from trainer.train import _reusable

    published = publish(tmp_path, "v1", _write_ok, {**_manifest("v1"), "recipe_hash": "r"})
    assert _reusable(str(tmp_path), "r") == published.resolve()
    assert _reusable(str(tmp_path), "another recipe") is None
    manifest = orjson.loads((published / MANIFEST_FILE).read_bytes())
    del manifest["weights"]
    (published / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    assert _reusable(str(tmp_path), "r") is None


def test_reuse_takes_only_a_checkpoint_whose_graphs_carry_their_own_calibration(tmp_path):
    from trainer.train import _reusable

    fitted = {"calibration": {"kind": "temperature", "temperature": 1.2}, "decision": {"kind": "argmax"}}
    graph = {"file": "model.int8.onnx", "sha256": "0" * 64}
    publish(tmp_path, "v1", _write_ok, {**_manifest("v1"), "recipe_hash": "r", "onnx": {"files": {"int8": graph}}})
    assert _reusable(str(tmp_path), "r") is None  # published before per-graph calibration: trained anew
    published = publish(tmp_path, "v2", _write_ok, {**_manifest("v2"), "recipe_hash": "r", "onnx": {"files": {"int8": {**graph, **fitted}}}})
    assert _reusable(str(tmp_path), "r") == published.resolve()
