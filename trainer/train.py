"""Fine-tune a BERT-family encoder for sentiment and publish a versioned checkpoint."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from model_runtime.calibration import apply_temperature
from model_runtime.fitted import has_own_fit
from model_runtime.inference import predict_probs
from model_runtime.loading import pick_device
from model_runtime.onnx_backend import OnnxListing
from model_runtime.onnx_export import export_onnx
from model_runtime.runners import graph_runner, half_dtype
from schemas.checkpoint import FORMAT_VERSION, MANIFEST_FILE, CheckpointError, resolve_checkpoint, weights_digest
from schemas.kafka_connection import KafkaConnection

from .compare import compare, deployed_baseline, refusal, scores_by_source
from .config import DataArguments, ModelArguments, TrainingArguments, recipe
from .data import LABEL_NAMES, cap_per_source, rating_cutoffs, fingerprint, load_examples, split_examples
from .errors import TrainerError
from .evaluate import Predictions, predictions
from .fitting import Fit, accuracy_line, fit_and_score
from .metrics import macro_f1
from .publish import LATEST, ensure_writable, publish
from .stream import read_reviews, split_kafka_sources

log = logging.getLogger("trainer")


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _length_grouped_batches(order: list[int], lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length from an epoch's shuffled draw: sort within mega-batches, then shuffle batches."""
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _native_cpu_bf16() -> bool:
    import torch

    # Private probes: absent on some builds, and then the CPU is taken to lack bf16.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def _autocast_dtype(precision: str, device) -> Any:
    """None for fp32; bf16 autocast on CPU only where the CPU computes bf16 natively (elsewhere it is slower)."""
    import torch

    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "fp16":
            raise TrainerError("--precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        return torch.bfloat16 if precision == "bf16" or _native_cpu_bf16() else None
    if precision == "auto":
        return half_dtype(device)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def weighted_label_mass(examples: list, source_weights: dict[str, float]) -> Counter:
    """Per label, the sum of its examples' source weights: how much of an epoch's draw it gets."""
    mass: Counter = Counter()
    for example in examples:
        mass[example.label] += source_weights.get(example.source, 1.0)
    return mass


def _epoch_draw(examples: list, balance: str, source_weights: dict[str, float], rng: random.Random) -> list[int]:
    """One epoch's training indices: every example once, shuffled; or, with source weights or balanced
    sampling, as many draws with replacement, each example drawn in proportion to its source's weight
    (and, balancing, inversely to its class's weighted mass, so every class is drawn equally often)."""
    if balance != "sampling" and not source_weights:
        order = list(range(len(examples)))
        rng.shuffle(order)
        return order
    weights = [source_weights.get(e.source, 1.0) for e in examples]
    if balance == "sampling":
        mass = weighted_label_mass(examples, source_weights)
        weights = [weight / mass[example.label] for example, weight in zip(examples, weights)]
    return rng.choices(range(len(examples)), weights=weights, k=len(examples))


def parse_source_weights(specs: list[str], sources: set[str] | None = None) -> dict[str, float]:
    """NAME=WEIGHT pairs; weights of 1 are left out (unnamed sources weigh 1), so they draw nothing differently.
    Given the training sources, a name not among them is refused, whatever its weight."""
    weights = {}
    for spec in (part for item in specs for part in item.split(",") if part):
        name, _, value = spec.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not name or not weight >= 0 or weight == float("inf"):
            raise TrainerError(f"--source-weights {spec!r}: use NAME=WEIGHT with a weight >= 0, e.g. entity-sentiment=2")
        weights[name.removeprefix("builtin:")] = weight
    if sources is not None and (unknown := set(weights) - sources):
        raise TrainerError(f"--source-weights names {', '.join(sorted(unknown))}, not among the training sources ({', '.join(sorted(sources))})")
    return {name: weight for name, weight in sorted(weights.items()) if weight != 1.0}


def _weight_text(weight: float) -> str:
    """A weight as the recipe hash records it: short as before (2, 0.5), exact where short would round."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(weight)


def resolved_balance(balance: str, sources: list[str]) -> str:
    if balance != "auto":
        return balance
    return "sampling" if any(source.startswith("kafka:") for source in sources) else "loss"


def check_class_counts(train_labels: Counter, labels: list[str], minimum: int) -> None:
    """One line naming every label with too few training examples."""
    short = [f"{train_labels.get(name, 0)} {name}" for name in labels if train_labels.get(name, 0) < minimum]
    if short:
        raise TrainerError(f"the training split has only {', '.join(short)} example(s), fewer than --min-examples-per-class "
                           f"{minimum} each: add labelled data (for a stream, more reviews of those ratings or a longer --since), "
                           "or lower --min-examples-per-class")


_AT_LEAST_ONE = ("epochs", "batch_size", "gradient_accumulation", "evals_per_epoch", "early_stopping_patience", "eval_batch_size")


def check_options(model_args: ModelArguments, args: TrainingArguments) -> None:
    """Option values training can't use, refused before any data is read."""
    for name in _AT_LEAST_ONE:
        if (value := getattr(args, name)) < 1:
            raise TrainerError(f"--{name.replace('_', '-')} {value}: use a value of at least 1")
    if model_args.max_length < 8:
        raise TrainerError(f"--max-length {model_args.max_length}: use at least 8 tokens (two go to the special tokens)")
    if not args.learning_rate > 0:
        raise TrainerError(f"--learning-rate {args.learning_rate}: use a value above 0")
    if not 0 <= args.warmup_ratio < 1:
        raise TrainerError(f"--warmup-ratio {args.warmup_ratio}: use a value in [0, 1)")
    if not 0.5 <= args.gate_confidence < 1:
        raise TrainerError(f"--gate-confidence {args.gate_confidence}: use a value in [0.5, 1)")
    if not 0 <= args.label_smoothing < 1:
        raise TrainerError(f"--label-smoothing {args.label_smoothing}: use a value in [0, 1)")


def _load_base(base_model: str, labels: list[str], dropout: float):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_model, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout,
        )
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainerError(f"base model {base_model!r} can't be loaded: {first_line}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TrainerError(f"base model {base_model!r} has no fast tokenizer")
    return tokenizer, model


def prepare_data(data: DataArguments, kafka: KafkaConnection):
    """Splits, the cleaning report, and what was read from Kafka (None without kafka: sources)."""
    if not data.data:
        raise TrainerError("no training data: pass --data PATH, --data builtin:NAME or --data kafka:TOPIC")
    cutoffs = rating_cutoffs(data.negative_max_rating, data.positive_min_rating)
    topics, specs = split_kafka_sources(data.data)
    stream_rows, stream = [], None
    if topics:
        stream_rows, stream = read_reviews(topics, kafka, cutoffs, since=data.since, max_events=data.max_stream_events)
        log.info("read %d events from %s: %d rated reviews used", stream.events, ", ".join(topics), stream.used)
    examples, report = load_examples(specs, cutoffs, stream_rows)
    splits = split_examples(examples, seed=data.split_seed, validation_ratio=data.validation_ratio, test_ratio=data.test_ratio)
    splits["train"] = cap_per_source(splits["train"], data.max_train_examples, data.split_seed)
    for name in ("validation", "test"):
        splits[name] = cap_per_source(splits[name], data.max_eval_examples, data.split_seed)
    return splits, report, stream


def _recipe_hash(hyperparameters: dict, fingerprints: dict[str, str]) -> str:
    blob = orjson.dumps({"hyperparameters": hyperparameters, "data": fingerprints}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _reusable(output_dir: str, recipe_hash: str) -> Path | None:
    latest = Path(output_dir) / LATEST
    try:
        path, manifest = resolve_checkpoint(latest)
        weights_digest(path, manifest)  # one published without digests can't be loaded: train anew
    except CheckpointError:
        return None
    if manifest.get("recipe_hash") != recipe_hash:
        return None
    if not all(has_own_fit(entry) for entry in manifest.get("onnx", {}).get("files", {}).values()):
        log.info("not reusing %s: its ONNX graphs carry no calibration of their own; training anew", path)
        return None
    return path


def _fit_graphs(directory: Path, listing: dict, manifest: dict, splits: dict, threads: int) -> dict[str, Fit]:
    """Each exported graph run on the validation and test splits through the consumer's runner (its tokenizer
    too), fitted on its own outputs; the fits go into the graphs' listing entries."""
    fits = {}
    for quantize, entry in listing["files"].items():
        runner = graph_runner(directory, manifest, OnnxListing(directory, listing, "the export"), quantize, threads)
        raw = {name: runner.forward([e.text for e in splits[name]])[0] for name in ("validation", "test")}
        fits[entry["file"]] = fit = fit_and_score(raw["validation"], raw["test"], splits["validation"], splits["test"],
                                                  manifest["labels"])
        entry.update(fit.fields, metrics=fit.metrics)
    return fits


def _predicted(probs: np.ndarray, rows: list, labels: list[str], decision: dict) -> Predictions:
    return predictions(probs, [e.label for e in rows], labels, decision)


def _deployed(output_dir: str, compare_with: str) -> Path | None:
    """The checkpoint the candidate must not fall behind: --compare-with, else OUTPUT_DIR/latest if any."""
    if compare_with:
        if not (Path(compare_with) / MANIFEST_FILE).is_file():
            raise TrainerError(f"--compare-with {compare_with}: no checkpoint there (no {MANIFEST_FILE})")
        return Path(compare_with).resolve()
    latest = Path(output_dir) / LATEST
    return latest.resolve() if (latest / MANIFEST_FILE).is_file() else None


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments,
          kafka: KafkaConnection | None = None) -> Path:
    """Train, tune the decision rule, evaluate, compare with the deployed checkpoint, publish.

    Returns the published directory. The deployed checkpoint scores the test split and the
    hold-out before training; one it can't score stops here with a TrainerError (unless
    `args.force`). A candidate the comparison refuses is written but `latest` stays, and
    TrainerError says so (unless `args.force`)."""
    import torch
    import torch.nn.functional as F
    from transformers import get_scheduler

    started = time.monotonic()
    check_options(model_args, args)
    ensure_writable(args.output_dir)
    deployed_dir = _deployed(args.output_dir, args.compare_with)
    splits, cleaning, stream = prepare_data(data_args, kafka or KafkaConnection())
    fingerprints = {name: fingerprint(rows) for name, rows in splits.items()}
    device = pick_device(args.device)
    autocast_dtype = _autocast_dtype(args.precision, device)
    source_weights = parse_source_weights(data_args.source_weights, {e.source for e in splits["train"]})
    balance = resolved_balance(args.balance, data_args.data)
    # What autocast resolved to, and the balance auto chose, change the weights: they are part of the recipe.
    hyperparameters = {**recipe(model_args, data_args, args), "balance": balance,
                       "source_weights": [f"{name}={_weight_text(weight)}" for name, weight in source_weights.items()],
                       "compute_precision": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "float32"}
    recipe_hash = _recipe_hash(hyperparameters, fingerprints)
    if args.reuse and (existing := _reusable(args.output_dir, recipe_hash)):
        log.info("reusing %s: same recipe and data", existing)
        return existing

    train_labels = Counter(e.label for e in splits["train"])
    labels = [name for name in LABEL_NAMES if name in {e.label for rows in splits.values() for e in rows}]
    if "negative" not in labels or "positive" not in labels:
        raise TrainerError(f"training data must contain negative and positive examples, has {sorted(train_labels)}")
    check_class_counts(train_labels, labels, data_args.min_examples_per_class)
    label_mass = weighted_label_mass(splits["train"], source_weights)
    if weightless := [name for name in labels if label_mass[name] <= 0]:
        raise TrainerError(f"--source-weights leaves no {', '.join(weightless)} example to draw: every source with one weighs 0"
                           if source_weights else f"no {', '.join(weightless)} example to train on (--min-examples-per-class 0)")
    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = deployed_baseline(deployed_dir, data_args, splits, labels, force=args.force, device=args.device,
                                 batch_size=args.eval_batch_size)
    _seed_everything(args.seed)
    base_model = model_args.resolved_base_model()
    tokenizer, model = _load_base(base_model, labels, model_args.dropout)
    if model_args.freeze_embeddings:
        for param in model.base_model.embeddings.parameters():
            param.requires_grad = False
    model.to(device)

    label_index = {name: i for i, name in enumerate(labels)}
    train_rows = splits["train"]
    encoded = tokenizer([e.text for e in train_rows], truncation=True, max_length=model_args.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    targets = torch.tensor([label_index[e.label] for e in train_rows])
    counts = torch.tensor([label_mass[name] for name in labels], dtype=torch.float)  # as the epoch draws them
    class_weight = (counts.sum() / (len(labels) * counts)).to(device) if balance == "loss" else None  # every mass > 0: checked above

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
    ], lr=args.learning_rate)
    steps_per_epoch = -(-len(train_rows) // (args.batch_size * args.gradient_accumulation))
    total_steps = steps_per_epoch * args.epochs
    scheduler = get_scheduler({"constant": "constant_with_warmup"}.get(args.lr_scheduler, args.lr_scheduler), optimizer,
                              num_warmup_steps=int(args.warmup_ratio * total_steps), num_training_steps=total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)

    validation = splits["validation"]
    val_true = np.array([label_index[e.label] for e in validation])

    def validation_probs() -> np.ndarray:
        model.eval()
        probs = predict_probs(model, tokenizer, [e.text for e in validation], max_length=model_args.max_length,
                              batch_size=args.eval_batch_size, device=device)
        model.train()
        return probs

    rng = random.Random(args.seed)
    best_f1, best_state, best_val_probs, stale, evals, history, drawn_labels = -1.0, None, None, 0, 0, [], []
    batches_per_epoch = -(-len(train_rows) // args.batch_size)
    eval_points = {round(batches_per_epoch * k / args.evals_per_epoch) for k in range(1, args.evals_per_epoch + 1)}
    model.train()
    stop = False
    for epoch in range(args.epochs):
        drawn = _epoch_draw(train_rows, balance, source_weights, rng)
        drawn_labels.append(dict(Counter(train_rows[i].label for i in drawn)))
        batches = _length_grouped_batches(drawn, lengths, args.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", dynamic_ncols=True)
        seen, tick = 0, time.monotonic()
        for step, idx in enumerate(bar, 1):
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(**batch).logits
            loss = F.cross_entropy(logits.float(), targets[idx].to(device), weight=class_weight, label_smoothing=args.label_smoothing)
            scaler.scale(loss / args.gradient_accumulation).backward()
            if step % args.gradient_accumulation == 0 or step == len(batches):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += len(idx)
            bar.set_postfix(loss=f"{loss.item():.4f}", ex_per_s=f"{seen / (time.monotonic() - tick):.1f}")
            if step in eval_points:
                evals += 1
                val_probs = validation_probs()
                val_f1 = macro_f1(val_true, val_probs.argmax(axis=1), len(labels))
                history.append({"epoch": epoch + 1, "step": step, "validation_macro_f1": round(val_f1, 4)})
                log.info("epoch %d step %d: validation macro-F1 %.4f", epoch + 1, step, val_f1)
                if val_f1 > best_f1:
                    best_f1, best_val_probs, stale = val_f1, val_probs, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                else:
                    stale += 1
                    if stale >= args.early_stopping_patience:
                        log.info("early stop: no better validation macro-F1 in %d evaluations", stale)
                        stop = True
                        break
        bar.close()
        if stop:
            break
    # Every epoch ends with an evaluation, so the best one exists; its outputs are the restored weights'
    # outputs, and a second pass over the validation split would only repeat them.
    model.load_state_dict(best_state)
    raw_val_probs = best_val_probs
    model.eval()

    def raw_probs(rows: list) -> np.ndarray:
        return predict_probs(model, tokenizer, [e.text for e in rows], max_length=model_args.max_length,
                             batch_size=args.eval_batch_size, device=device)

    test = splits["test"]
    raw_test_probs = raw_probs(test)
    fit = fit_and_score(raw_val_probs, raw_test_probs, validation, test, labels, args.report_dir)
    metrics = {**fit.metrics, "history": history}
    candidate = {"test": {"overall": fit.metrics["test"], "per_source": fit.metrics["test_per_source"]}}
    candidate_predicted = {"test": _predicted(apply_temperature(raw_test_probs, fit.temperature), test, labels, fit.decision)}
    if baseline and "holdout" in baseline.sets:
        holdout = baseline.sets["holdout"]
        holdout_probs = apply_temperature(raw_probs(holdout), fit.temperature)
        candidate["holdout"] = scores_by_source(holdout_probs, holdout, labels, fit.decision)
        candidate_predicted["holdout"] = _predicted(holdout_probs, holdout, labels, fit.decision)
    comparison = compare(candidate, candidate_predicted, baseline, args.max_regression, args.gate_confidence)
    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{recipe_hash[:8]}"
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "name": model_args.model_name,
        "base_model": model_args.base_model if model_args.base_model.startswith("embedded:") else base_model,
        "labels": labels,
        "max_length": model_args.max_length,
        **fit.fields,
        "metrics": metrics,
        "data": {
            "sources": list(data_args.data),
            **({"kafka": stream.as_dict()} if stream else {}),
            "cleaning": cleaning.as_dict(),
            "splits": {name: {"size": len(rows), "fingerprint": fingerprints[name],
                              "labels": dict(Counter(e.label for e in rows))} for name, rows in splits.items()},
        },
        "hyperparameters": hyperparameters,
        "recipe_hash": recipe_hash,
        **({"comparison": {**comparison, "forced": args.force}} if comparison else {}),
        "training": {"seconds": round(time.monotonic() - started, 1), "device": str(device),
                     "torch_threads": torch.get_num_threads(), "evaluations": evals, "drawn_labels_per_epoch": drawn_labels},
    }

    graph_fits: dict[str, Fit] = {}

    def write(directory: Path) -> None:
        model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        if args.onnx:
            # Publishing writes the manifest after this, so the graphs' listing lands in it.
            listing = export_onnx(model, tokenizer, directory)
            graph_fits.update(_fit_graphs(directory, listing, manifest, splits, args.threads))
            manifest["onnx"] = listing

    refused = comparison is not None and not comparison["passed"] and not args.force
    published = publish(args.output_dir, version, write, manifest, make_latest=not refused)
    log.info("test accuracy / macro-F1: torch fp32 (T=%.3f): %s", fit.temperature, accuracy_line(fit.metrics))
    for name, graph_fit in graph_fits.items():
        log.info("test accuracy / macro-F1: onnxruntime %s (T=%.3f): %s", name, graph_fit.temperature, accuracy_line(graph_fit.metrics))
    if refused:
        raise TrainerError(
            f"candidate {version} {refusal(comparison, candidate)}. Written to {published}, latest not moved; promote it anyway with "
            f"`python -m trainer publish --output-dir {args.output_dir} --version {version}` or train with --force")
    if comparison is not None and comparison["comparable"] and not comparison["passed"]:
        log.warning("published over the gate (--force): candidate %s %s", version, refusal(comparison, candidate))
    log.info("published %s (test %s: accuracy %.4f, macro-F1 %.4f)", published, metrics["test"]["mode"],
             metrics["test"]["accuracy"], metrics["test"]["macro_f1"])
    return published
