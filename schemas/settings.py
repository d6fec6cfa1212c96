"""Typed CLI configuration shared by every command.

Each dataclass field becomes a flag `--field-name` whose default comes from the
environment variable `FIELD_NAME` (or the field's metadata `env`) when set, so flags and env vars have the same
names in every command. `help` and `choices` come from field metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def env_name(field: dataclasses.Field) -> str:
    """FIELD_NAME, unless the field names its own variable (e.g. KAFKA_BOOTSTRAP_SERVERS)."""
    return field.metadata.get("env", field.name.upper())


def _base_type(annotation: Any) -> Any:
    # `int | None` -> int; `list[str]` stays list[str].
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = _base_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        env = env_name(field)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        help_text = f"{field.metadata.get('help', '')} [env {env}; default: %(default)s]"
        kwargs: dict[str, Any] = {"dest": field.name, "help": help_text, "default": default}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if typing.get_origin(kind) is list:
            kwargs.update(action="append", default=None, metavar=field.metadata.get("metavar", "VALUE"))
            if os.environ.get(env):
                kwargs["default"] = [item for item in os.environ[env].split(",") if item]
        elif kind is bool:
            kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
            if os.environ.get(env):
                kwargs["default"] = _parse_bool(os.environ[env])
        else:
            kwargs["type"] = kind
            if os.environ.get(env):
                kwargs["default"] = os.environ[env]
        group.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name)
        if value is None and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = field.default_factory()  # type: ignore[misc]
        elif isinstance(value, list):
            # `--data a.csv,b.jsonl` and `--data a.csv --data b.jsonl` mean the same.
            value = [item.strip() for entry in value for item in entry.split(",") if item.strip()]
        values[field.name] = value
    return cls(**values)
