"""Training from a real topic: the manifest names what was read, and the comparison with the
deployed checkpoint gates `latest` (refused -> kept aside, publish promotes, --force overrides)."""

from __future__ import annotations

import os

import jsonschema

from schemas import load_schema
from schemas.checkpoint import read_manifest
from tests.conftest import TINY_TRAIN_ARGS
from tests.consumer.harness import copy_checkpoint, produce
from tests.schemas.test_events import _registry
from tests.trainer.test_stream import corpus_reviews, dumps
from trainer.cli import main

DEPLOYED = "20261101T000000Z-deployed"
# The tiny recipe's model settings, on the stream's data.
MODEL_ARGS = [arg for arg in TINY_TRAIN_ARGS[2:] if arg not in ("--max-train-examples", "900", "--max-eval-examples", "300")]


def _train(topic: str, bootstrap: str, out, *extra: str) -> int:
    return main(["train", "--data", f"kafka:{topic}", "--bootstrap-servers", bootstrap, *MODEL_ARGS,
                 "--output-dir", str(out), *extra])


def test_train_from_topic_is_gated_by_the_deployed_checkpoint(tiny_checkpoint, kafka_bootstrap, make_topic, tmp_path, capsys):
    topic = make_topic("retrain", partitions=2)
    produce(kafka_bootstrap, topic, dumps(corpus_reviews(500)))
    out = tmp_path / "checkpoints"
    out.mkdir()
    copy_checkpoint(tiny_checkpoint, out / DEPLOYED, version=DEPLOYED)
    os.symlink(DEPLOYED, out / "latest")

    # A margin of -1 demands a macro-F1 gain of 1.0: no candidate can pass.
    assert _train(topic, kafka_bootstrap, out, "--max-regression", "-1", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert f"against the deployed {DEPLOYED}'s" in err and "latest not moved" in err and "Traceback" not in err
    assert os.readlink(out / "latest") == DEPLOYED
    refused = next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and p.name != DEPLOYED and not p.name.startswith("."))
    manifest = read_manifest(refused)
    jsonschema.Draft202012Validator(load_schema("manifest"), registry=_registry()).validate(manifest)
    comparison = manifest["comparison"]
    assert comparison["deployed"] == DEPLOYED and comparison["passed"] is False and comparison["forced"] is False
    # Both models were scored on the same held-out texts.
    test_size = manifest["data"]["splits"]["test"]["size"]
    assert comparison["n"] == test_size == comparison["deployed_scores"]["overall"]["n"] == manifest["metrics"]["test"]["n"]
    kafka = manifest["data"]["kafka"]
    assert kafka["events"] == 500 and kafka["used"] == 500
    assert sorted(kafka["topics"][topic]) == ["0", "1"]
    assert sum(end - start for start, end in kafka["topics"][topic].values()) == 500
    assert manifest["data"]["sources"] == [f"kafka:{topic}"]
    # The stream test split's rates: the shop's own domain, for the consumer to correct shares with.
    rates = manifest["stream_rates"]
    assert rates["labels"] == manifest["labels"] and sum(rates["support"]) == test_size
    assert rates["support"] == [manifest["data"]["splits"]["test"]["labels"].get(label, 0) for label in rates["labels"]]
    assert all(abs(sum(row) - 1) < 1e-3 for row, n in zip(rates["mean_probs"], rates["support"]) if n)

    assert main(["publish", "--output-dir", str(out), "--version", refused.name]) == 0
    assert os.readlink(out / "latest") == refused.name
    assert main(["rollback", "--output-dir", str(out)]) == 0
    assert os.readlink(out / "latest") == DEPLOYED

    # --force publishes over the refusal and says so in the manifest.
    assert _train(topic, kafka_bootstrap, out, "--max-regression", "-1", "--force", "--epochs", "1") == 0
    forced = read_manifest(out / "latest")
    assert forced["version"] not in (DEPLOYED, refused.name)
    assert forced["comparison"]["passed"] is False and forced["comparison"]["forced"] is True


def _skewed(negatives: int, positives: int) -> list[dict]:
    reviews = corpus_reviews(2000)
    return [r for r in reviews if r["rating"] <= 2][:negatives] + [r for r in reviews if r["rating"] >= 4][:positives]


def test_a_stream_short_of_a_class_is_refused_in_one_line(kafka_bootstrap, make_topic, tmp_path, capsys):
    topic = make_topic("skewed-short", partitions=2)
    produce(kafka_bootstrap, topic, dumps(_skewed(negatives=15, positives=400)))
    assert _train(topic, kafka_bootstrap, tmp_path / "out", "--epochs", "1") == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "negative example(s), fewer than --min-examples-per-class 20" in line and "Traceback" not in err
    assert not (tmp_path / "out" / "latest").exists()


def test_a_skewed_stream_is_class_balanced_by_default(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic("skewed", partitions=2)
    produce(kafka_bootstrap, topic, dumps(_skewed(negatives=100, positives=400)))  # 80% 4-5 stars
    assert _train(topic, kafka_bootstrap, tmp_path / "balanced", "--epochs", "1", "--onnx", "false") == 0
    manifest = read_manifest(tmp_path / "balanced" / "latest")
    assert manifest["hyperparameters"]["balance"] == "sampling" and manifest["data"]["kafka"]["used"] == 500
    train = manifest["data"]["splits"]["train"]["labels"]
    assert train["positive"] > 3 * train["negative"]
    # What the epoch drew: both classes about equally often, from a split that is 80% positive.
    drawn = manifest["training"]["drawn_labels_per_epoch"][0]
    assert sum(drawn.values()) == sum(train.values()) and abs(drawn["positive"] - drawn["negative"]) < 0.15 * sum(drawn.values())
    # Named explicitly, the loss weighting is used instead, and the recipe (so its hash) differs.
    assert _train(topic, kafka_bootstrap, tmp_path / "loss", "--epochs", "1", "--onnx", "false", "--balance", "loss") == 0
    other = read_manifest(tmp_path / "loss" / "latest")
    assert other["hyperparameters"]["balance"] == "loss" and other["recipe_hash"] != manifest["recipe_hash"]
    assert other["training"]["drawn_labels_per_epoch"][0] == train  # every training text once
