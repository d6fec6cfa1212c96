"""Query normalization: the key every counter, topic key and API lookup uses."""

from __future__ import annotations

import unicodedata

# Control (Cc) and format (Cf: zero-width space/joiners, BOM, bidi marks) characters are
# invisible: left in, one query typed twice would split into two counters.
_INVISIBLE = {"Cc", "Cf"}


def normalize_query(query: str) -> str:
    """NFKC, case fold, drop invisible characters, collapse runs of Unicode whitespace to one space, trim.

    NFKC folds full-width Latin and digits (common in Chinese input methods) to ASCII
    and the ideographic space to a plain space; casefold is a stronger lower() (ß -> ss).
    Whitespace controls (tab, newline) separate words; other controls are removed.
    """
    folded = unicodedata.normalize("NFKC", query).casefold()
    if not folded.isprintable():
        folded = "".join(c if c.isspace() or unicodedata.category(c) not in _INVISIBLE else "" for c in folded)
    return " ".join(folded.split())
