"""Query normalization: the key every counter, topic key and API lookup uses."""

from __future__ import annotations

import unicodedata


def normalize_query(query: str) -> str:
    """NFKC, case fold, collapse runs of any Unicode whitespace to one space, trim.

    NFKC folds full-width Latin and digits (common in Chinese input methods) to ASCII
    and the ideographic space to a plain space; casefold is a stronger lower() (ß -> ss).
    """
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())
