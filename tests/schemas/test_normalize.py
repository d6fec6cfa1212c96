from __future__ import annotations

import pytest

from schemas import normalize_query


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Wireless Headphones", "wireless headphones"),
        ("  wireless\t\n  HEADPHONES  ", "wireless headphones"),
        ("ＩＰＨＯＮＥ　１５", "iphone 15"),  # full-width Latin, digits and the ideographic space
        ("蓝牙　耳机", "蓝牙 耳机"),
        ("  蓝牙耳机 ", "蓝牙耳机"),
        ("Straße", "strasse"),
        ("ﬁlter", "filter"),  # ligature folded by NFKC
        ("", ""),
        (" \u00a0 ", ""),  # non-breaking space counts as whitespace
    ],
)
def test_normalize_query(raw, expected):
    assert normalize_query(raw) == expected


def test_normalize_is_idempotent():
    for raw in ("ＡＢＣ　ｄｅｆ", "Mixed   Case 手机壳", "ÉCOLE"):
        once = normalize_query(raw)
        assert normalize_query(once) == once
