"""Access to the JSON Schema files shipped in this package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson

SCHEMA_NAMES = ("common", "search_result", "review", "labelled", "alert", "dead_letter", "manifest")


def schema_path(name: str) -> Path:
    """Path of `schemas/json/<name>.schema.json`."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return Path(str(resources.files(__package__) / "json" / f"{name}.schema.json"))


def load_schema(name: str) -> dict[str, Any]:
    return orjson.loads(schema_path(name).read_bytes())
