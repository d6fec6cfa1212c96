"""Which model reads an event: the English one, or the multilingual one.

An event's `locale` decides when it has one (`en`, `en-US`, `en_GB` read English; any
other language reads multilingual). Without one the text's letters decide: the English
model only reads text whose letters are (almost) all Latin. A Chinese review naming an
"iPhone" is mixed, and mixed text goes to the multilingual model, which reads both.
"""

from __future__ import annotations

import unicodedata

ENGLISH = "english"
MULTILINGUAL = "multilingual"
# Letters outside Latin above this share send a locale-less text to the multilingual model:
# one stray Greek letter (µ, Ω in "5 Ω") keeps an English review English.
NON_LATIN_SHARE = 0.05
_SCANNED_CHARS = 512  # the script of a text shows in its opening; bounded work per event


def route_of(locale: str | None, text: str) -> str:
    if locale:
        language = locale.replace("_", "-").split("-", 1)[0].strip().lower()
        if language:
            return ENGLISH if language == "en" else MULTILINGUAL
    return ENGLISH if non_latin_share(text) <= NON_LATIN_SHARE else MULTILINGUAL


def non_latin_share(text: str) -> float:
    """Share of letters (CJK ideographs, kana, Hangul, Cyrillic, ...) that are not Latin; 0 without letters."""
    letters = non_latin = 0
    for char in text[:_SCANNED_CHARS]:
        if char.isascii():
            letters += char.isalpha()
            continue
        if not char.isalpha():
            continue
        letters += 1
        if not unicodedata.name(char, "").startswith("LATIN"):
            non_latin += 1
    return non_latin / letters if letters else 0.0
