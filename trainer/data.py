"""Training data: read labelled rows (files or built-in corpora), clean, split.

Rows carry `text` and either `label` (negative / neutral / positive, or 0 / 1) or
`rating` (1-5 stars mapped by `RatingCutoffs`). Texts are deduplicated by their
normalized form, so a text never lands in two splits. The split is a keyed hash of the
row's split key: the normalized text for files and corpora, the `event_id` for events
read from Kafka, so an event keeps its split however the stream grows.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import orjson

from schemas import normalize_query

from model_runtime.stats.rates import RatingCutoffs

from .corpora import read_builtin
from .errors import TrainerError

LABEL_NAMES = ("negative", "neutral", "positive")
SPLITS = ("train", "validation", "test", "all")  # what builtin:NAME:SPLIT may name
MAX_TEXT_CHARS = 20_000  # longer rows are dropped (and counted): nobody writes a 20k-char review
_LABEL_ALIASES = {"negative": "negative", "neg": "negative", "0": "negative",
                  "neutral": "neutral", "neu": "neutral",
                  "positive": "positive", "pos": "positive", "1": "positive"}


def rating_cutoffs(negative_max: int, positive_min: int) -> RatingCutoffs:
    try:
        return RatingCutoffs(negative_max, positive_min)
    except ValueError as exc:
        raise TrainerError(str(exc)) from None


class SourceRow(NamedTuple):
    text: str
    label: str
    source: str
    split_key: str | None = None  # None: the normalized text decides the split


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    source: str
    key: str  # normalized text: the dedupe key
    split_key: str  # hashed to pick the split


@dataclass
class CleaningReport:
    rows: int = 0
    empty: int = 0
    too_long: int = 0
    duplicates: int = 0
    conflicting_texts: int = 0
    kept: int = 0
    per_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_label(row: dict[str, Any], cutoffs: RatingCutoffs, where: str) -> str:
    """Label from a row's `label` or `rating` column; TrainerError names the row otherwise."""
    label = row.get("label")
    if label is not None and str(label).strip() != "":
        name = _LABEL_ALIASES.get(str(label).strip().lower())
        if name is None:
            raise TrainerError(f"{where}: unknown label {str(label)[:40]!r} (use negative/neutral/positive or 0/1)")
        return name
    rating = row.get("rating")
    if rating is not None and str(rating).strip() != "":
        try:
            stars = float(rating)
        except (TypeError, ValueError):
            raise TrainerError(f"{where}: rating {str(rating)[:40]!r} is not a number") from None
        if not stars.is_integer() or not 1 <= stars <= 5:
            raise TrainerError(f"{where}: rating {rating!r} is outside 1-5")
        return cutoffs.label(int(stars))
    raise TrainerError(f"{where}: row has neither a label nor a rating")


def _file_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    if not path.is_file():
        raise TrainerError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if suffix in (".jsonl", ".ndjson"):
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            row = orjson.loads(line)
                        except orjson.JSONDecodeError as exc:
                            raise TrainerError(f"{path}:{number}: not JSON: {exc}") from None
                        if not isinstance(row, dict):
                            raise TrainerError(f"{path}:{number}: each line must be a JSON object")
                        yield row, f"{path}:{number}"
            elif suffix in (".csv", ".tsv"):
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                if reader.fieldnames is None:
                    raise TrainerError(f"{path}: empty CSV file")
                columns = set(reader.fieldnames)
                if "text" not in columns:
                    raise TrainerError(f"{path}: missing column 'text' (columns: {', '.join(reader.fieldnames)})")
                if not columns & {"label", "rating"}:
                    raise TrainerError(f"{path}: missing column 'label' or 'rating'")
                for number, row in enumerate(reader, 2):
                    yield row, f"{path}:{number}"
            else:
                raise TrainerError(f"{path}: unsupported file type {suffix or '(none)'}; use .jsonl, .csv or .tsv")
    except UnicodeDecodeError as exc:
        raise TrainerError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise TrainerError(f"{path}: unreadable CSV: {exc}") from None


def read_source(spec: str, cutoffs: RatingCutoffs) -> Iterator[SourceRow]:
    """Rows from `builtin:NAME` or a .jsonl/.csv/.tsv path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        for text, label, *split_key in read_builtin(name):
            yield SourceRow(text, parse_label({"label": label}, cutoffs, spec), name, *split_key)
        return
    path = Path(spec)
    for row, where in _file_rows(path):
        text = row.get("text")
        if text is None:
            raise TrainerError(f"{where}: missing 'text'")
        if not isinstance(text, str):
            raise TrainerError(f"{where}: 'text' must be a string")
        yield SourceRow(text, parse_label(row, cutoffs, where), path.name)


def load_examples(specs: Iterable[str], cutoffs: RatingCutoffs = RatingCutoffs(),
                  stream_rows: Iterable[SourceRow] = ()) -> tuple[list[Example], CleaningReport]:
    """Read every source (plus rows already read from Kafka), then strip, drop empty/over-long
    rows, dedupe, drop conflicts."""
    report = CleaningReport()
    by_key: dict[str, list[SourceRow]] = defaultdict(list)
    for row in itertools.chain(*(read_source(spec, cutoffs) for spec in specs), stream_rows):
        report.rows += 1
        text = row.text.strip()
        if not text:
            report.empty += 1
            continue
        if len(text) > MAX_TEXT_CHARS:
            report.too_long += 1
            continue
        by_key[normalize_query(text)].append(row._replace(text=text))
    examples = []
    for key, rows in by_key.items():
        if len({row.label for row in rows}) > 1:
            report.conflicting_texts += 1
            continue
        report.duplicates += len(rows) - 1
        # The smallest split key represents the text: the same whatever order partitions were read in.
        row = min(rows, key=lambda r: r.split_key or key)
        examples.append(Example(row.text, row.label, row.source, key, row.split_key or key))
    if not examples:
        raise TrainerError("no usable examples after cleaning (all rows empty, too long, duplicated or conflicting)")
    report.kept = len(examples)
    report.per_source = dict(Counter(e.source for e in examples))
    return examples, report


def read_split_source(spec: str, cutoffs: RatingCutoffs, *, seed: int, validation_ratio: float,
                      test_ratio: float) -> list[Example]:
    """One source's examples: `builtin:NAME[:SPLIT]` keeps that hash split of the corpus (default
    test; `all` keeps every text), a .jsonl/.csv/.tsv path is read whole."""
    split = "all"
    if spec.startswith("builtin:"):
        name, _, split = spec.removeprefix("builtin:").partition(":")
        split = split or "test"
        if split not in SPLITS:
            raise TrainerError(f"{spec}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
        spec = f"builtin:{name}"
    examples, _ = load_examples([spec], cutoffs)
    if split == "all":
        return examples
    return [e for e in examples if split_of(e.split_key, seed, validation_ratio, test_ratio) == split]


def split_of(key: str, seed: int, validation_ratio: float, test_ratio: float) -> str:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    point = int.from_bytes(digest, "big") / 2**64
    if point < test_ratio:
        return "test"
    return "validation" if point < test_ratio + validation_ratio else "train"


def split_examples(examples: list[Example], *, seed: int = 13, validation_ratio: float = 0.1,
                   test_ratio: float = 0.1) -> dict[str, list[Example]]:
    if validation_ratio <= 0 or test_ratio <= 0 or validation_ratio + test_ratio >= 1:
        raise TrainerError(f"split ratios must be > 0 and sum below 1, got validation {validation_ratio}, test {test_ratio}")
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for example in examples:
        splits[split_of(example.split_key, seed, validation_ratio, test_ratio)].append(example)
    for name, rows in splits.items():
        if not rows:
            raise TrainerError(f"the {name} split is empty ({len(examples)} examples); add data or change the ratios")
    return splits


def fingerprint(examples: Iterable[Example]) -> str:
    """Order-independent sha256 of (normalized text, label) pairs."""
    digest = hashlib.sha256()
    for line in sorted(f"{e.key}\t{e.label}" for e in examples):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def cap_per_source(examples: list[Example], cap: int, seed: int) -> list[Example]:
    """At most `cap` examples, each source keeping its share (a stratified sample)."""
    if not cap or len(examples) <= cap:
        return examples
    by_source: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_source[example.source].append(example)
    rng = random.Random(seed)
    kept: list[Example] = []
    for rows in by_source.values():
        rows = sorted(rows, key=lambda e: e.key)
        rng.shuffle(rows)
        kept.extend(rows[: max(1, round(cap * len(rows) / len(examples)))])
    return kept
