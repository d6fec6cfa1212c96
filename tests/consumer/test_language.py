"""Routing rule: locale first, else the share of non-Latin letters."""

from __future__ import annotations

import pytest

from consumer.model.language import ENGLISH, MULTILINGUAL, non_latin_share, route_of


@pytest.mark.parametrize("locale, text, route", [
    ("en-US", "蓝牙耳机音质很好", ENGLISH),  # the producer's locale wins over the text
    ("en_GB", "great", ENGLISH),
    ("EN", "great", ENGLISH),
    ("zh-CN", "great sound", MULTILINGUAL),
    ("de-DE", "sehr gut", MULTILINGUAL),
    (None, "Battery died after two days, refund please", ENGLISH),
    ("", "Battery died after two days", ENGLISH),
    ("  ", "质量太差了，退货", MULTILINGUAL),  # a blank locale says nothing
    (None, "质量太差了，退货", MULTILINGUAL),
    (None, "iPhone 壳很好看，但是容易发黄", MULTILINGUAL),  # mixed goes to the model that reads both
    (None, "Café crème, très bon, naïve façade", ENGLISH),  # accented Latin is Latin
    (None, "Great 5 Ω speaker cable, works", ENGLISH),  # one stray Greek letter in a long English text
    (None, "Отличный товар", MULTILINGUAL),
    (None, "10/10 !!! 👍👍", ENGLISH),  # no letters: nothing says it is not English
])
def test_route(locale, text, route):
    assert route_of(locale, text) == route


def test_non_latin_share_counts_letters_only():
    assert non_latin_share("好!!! 123") == 1.0
    assert non_latin_share("ab好") == pytest.approx(1 / 3)
    assert non_latin_share("") == 0.0


def test_only_the_opening_of_a_long_text_is_scanned():
    assert route_of(None, "good " * 200 + "好" * 5000) == ENGLISH
