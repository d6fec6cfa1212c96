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
        ("wireless\u200bheadphones", "wirelessheadphones"),  # zero-width space
        ("\ufeffusb c cable", "usb c cable"),  # byte-order mark
        ("蓝牙\u200d耳机\u0007", "蓝牙耳机"),  # zero-width joiner, BEL
        ("usb\u0000c\tcable\x1b", "usbc cable"),  # NUL and ESC removed, tab separates
        ("\u202eevil\u202c", "evil"),  # bidi override marks
    ],
)
def test_normalize_query(raw, expected):
    assert normalize_query(raw) == expected


def test_normalize_is_idempotent():
    for raw in ("ＡＢＣ　ｄｅｆ", "Mixed   Case 手机壳", "ÉCOLE"):
        once = normalize_query(raw)
        assert normalize_query(once) == once


def test_invisible_characters_do_not_split_a_query():
    variants = ["phone case", "phone\u200b case", "\u2060phone case\ufeff", "phone\u00adcase"[:0] + "phone case\u200c"]
    assert {normalize_query(v) for v in variants} == {"phone case"}
