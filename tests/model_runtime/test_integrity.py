"""Weight files are checked on the bytes that are loaded, and a checkpoint is read from one resolved directory."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from safetensors.torch import load_file, save_file

from model_runtime.loading import load_checkpoint
from model_runtime.runners import open_runner
from schemas.checkpoint import MANIFEST_FILE, ONNX_FILES, WEIGHT_DIGESTS, WEIGHTS_FILE, CheckpointError, file_digest, read_manifest
from trainer.publish import point_latest, publish

TEXTS = ["Great phone!", "awful, broke on day one", "质量很好，物流也快", "ok 👍"]
# The backend that loads each weight file.
LOADS = {WEIGHTS_FILE: {"backend": "torch", "device": "cpu"}, ONNX_FILES["none"]: {"backend": "onnxruntime", "quantize": "none"},
         ONNX_FILES["int8"]: {"backend": "onnxruntime", "quantize": "int8"}}


def flip_byte(data: bytes) -> bytes:
    """`data` with one bit of its middle byte flipped: inside the tensors, so the file still parses."""
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


def _copy(checkpoint: Path, target: Path) -> Path:
    shutil.copytree(checkpoint.resolve(), target)
    return target


def test_publishing_records_a_digest_of_every_weight_file(tiny_checkpoint):
    manifest = read_manifest(tiny_checkpoint)
    assert manifest[WEIGHT_DIGESTS] == {WEIGHTS_FILE: file_digest(tiny_checkpoint / WEIGHTS_FILE)}
    graphs = manifest["onnx"]["files"]
    assert {entry["file"] for entry in graphs.values()} == set(ONNX_FILES.values())
    for entry in graphs.values():
        assert {key: entry[key] for key in ("sha256", "bytes")} == file_digest(tiny_checkpoint / entry["file"])


@pytest.mark.parametrize("name", LOADS)
def test_a_flipped_byte_in_a_weight_file_is_refused_on_load(tiny_checkpoint, tmp_path, name):
    copy = _copy(tiny_checkpoint, tmp_path / "copy")
    (copy / name).write_bytes(flip_byte((copy / name).read_bytes()))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(copy / name))} \(\d+ bytes\) does not match its sha256 in the manifest"):
        open_runner(copy, **LOADS[name])


def _serve(pipe: Path, first: bytes, later: bytes, done: threading.Event, served: list[str]) -> None:
    """Write `first` to the named pipe's first reader and `later` to any other, until `done`."""
    payload = first
    while not done.is_set():
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader has the pipe open yet
            time.sleep(0.001)
            continue
        os.set_blocking(fd, True)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            served.append("first" if payload is first else "later")
        except BrokenPipeError:  # the reader closed it before reading it all
            pass
        finally:
            os.close(fd)
        payload = later
        time.sleep(1.0)  # the reader reads end-of-file and closes before the pipe is offered again


@pytest.mark.parametrize("name", [WEIGHTS_FILE, ONNX_FILES["none"]])
def test_the_bytes_checked_are_the_bytes_run(tiny_checkpoint, tmp_path, name):
    """The weight file is a named pipe: its first reader gets the published bytes, a second one a
    tampered copy. A loader that hashes the file and then opens it again runs or chokes on the copy."""
    copy = _copy(tiny_checkpoint, tmp_path / "copy")
    expected, _ = open_runner(copy, **LOADS[name]).forward(TEXTS)
    genuine = (copy / name).read_bytes()
    (copy / name).unlink()
    os.mkfifo(copy / name)
    done, served = threading.Event(), []
    server = threading.Thread(target=_serve, args=(copy / name, genuine, flip_byte(genuine), done, served), daemon=True)
    server.start()
    try:
        probs, _ = open_runner(copy, **LOADS[name]).forward(TEXTS)
    finally:
        done.set()
        server.join(timeout=10)
    assert served == ["first"], "the weight file was read more than once"
    np.testing.assert_array_equal(probs, expected)


def test_the_model_built_from_the_checked_bytes_is_the_one_loading_by_path_gives(tiny_checkpoint):
    from transformers import AutoModelForSequenceClassification

    loaded = load_checkpoint(tiny_checkpoint, "cpu")
    by_path = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint.resolve(), local_files_only=True,
                                                                 use_safetensors=True).eval()
    ours, theirs = loaded.model.state_dict(), by_path.state_dict()
    assert type(loaded.model) is type(by_path) and not loaded.model.training
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(loaded.model(**batch).logits, by_path(**batch).logits)


def _publish_shifted(root: Path, version: str, source: Path) -> None:
    """`source` with its classifier's bias shifted (other predictions), published without ONNX graphs."""
    manifest = {key: value for key, value in read_manifest(source).items() if key != "onnx"}

    def write(directory: Path) -> None:
        for path in source.iterdir():
            if path.name not in (MANIFEST_FILE, WEIGHTS_FILE, *ONNX_FILES.values()):
                shutil.copy(path, directory)
        state = load_file(source / WEIGHTS_FILE)
        state["classifier.bias"] += torch.linspace(4.0, -4.0, len(state["classifier.bias"]))
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})

    publish(root, version, write, {**manifest, "version": version}, make_latest=False)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_publish_between_reading_the_manifest_and_the_weights_pairs_no_two_versions(tiny_checkpoint, tmp_path,
                                                                                        monkeypatch, backend):
    root = tmp_path / "checkpoints"
    first = read_manifest(tiny_checkpoint)["version"]
    _copy(tiny_checkpoint, root / first)
    _publish_shifted(root, f"{first}-next", root / first)
    point_latest(root, first)
    expected, _ = open_runner(root / first, backend=backend, device="cpu").forward(TEXTS)
    read_bytes = Path.read_bytes

    def read_then_publish(path: Path) -> bytes:
        data = read_bytes(path)
        if path.name == MANIFEST_FILE and os.readlink(root / "latest") == first:
            point_latest(root, f"{first}-next")  # the trainer publishes right after the manifest was read
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_publish)
    runner = open_runner(root / "latest", backend=backend, device="cpu", onnx_cache_dir=str(tmp_path / "cache"))
    monkeypatch.undo()
    assert os.readlink(root / "latest") == f"{first}-next", "the manifest was never read: nothing was swapped in between"
    assert runner.manifest["version"] == first
    np.testing.assert_array_equal(runner.forward(TEXTS)[0], expected)


def test_a_checkpoint_published_without_digests_is_refused(tiny_checkpoint, tmp_path):
    copy = _copy(tiny_checkpoint, tmp_path / "copy")
    manifest = read_manifest(copy)
    del manifest[WEIGHT_DIGESTS], manifest["onnx"]["files"]["none"]["sha256"]
    (copy / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(copy))} was published without a sha256 of "
                                              r"model.safetensors in its manifest.*re-train it"):
        open_runner(copy, backend="torch", device="cpu")
    with pytest.raises(CheckpointError, match="the manifest records no sha256 of model.onnx"):
        open_runner(copy, backend="onnxruntime", quantize="none")
