"""Writes tiny random EXAONE 4 checkpoints at test time, with numpy and a minimal safetensors writer.

`write_tiny_exaone(directory)` makes a 2-layer model whose vocabulary is the real EXAONE 4.0 one
(102400 ids, eos 361 "[|endofturn|]"), and links the real tokenizer files and chat template from
../shared/exaone-4.0-1.2b into the same directory, so transformers-style code (AutoTokenizer +
AutoModelForCausalLM on one path) runs on it. Nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

SHARED_MODEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"
TOKENIZER_FILES = (
    "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja",
)

_NP_DTYPES = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16}


def real_tokenizer_available() -> bool:
    return all((SHARED_MODEL_DIR / name).is_file() for name in TOKENIZER_FILES)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """tensors: name -> (safetensors dtype "F32" / "BF16" / "F16", array stored with _NP_DTYPES' type)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, (dtype, array) in tensors.items():
        data = np.ascontiguousarray(array, dtype=_NP_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


def tiny_config(*, vocab_size: int = 102400, hidden: int = 64, layers: int = 2, sliding: bool = False,
                max_position_embeddings: int = 65536) -> dict:
    """A config.json shaped like EXAONE-4.0-1.2B's (or the hybrid 32B's with sliding=True), but tiny."""
    config = {
        "architectures": ["Exaone4ForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 361,
        "pad_token_id": 0,
        "head_dim": 32,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "max_position_embeddings": max_position_embeddings,
        "model_type": "exaone4",
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_scaling": {
            "factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3",
        },
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "vocab_size": vocab_size,
    }
    if sliding:
        config["sliding_window"] = 4
        config["layer_types"] = ["sliding_attention"] * (layers - 1) + ["full_attention"]
    else:
        config["sliding_window"] = None
        config["layer_types"] = ["full_attention"] * layers
    return config


def write_tiny_exaone(directory: str | Path, *, seed: int = 0, dtype: str = "BF16", link_tokenizer: bool = True,
                      **config_options) -> Path:
    """Writes config.json, generation_config.json and model.safetensors of a random model into directory
    (and links the real tokenizer files next to them). Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = tiny_config(**config_options)
    rng = np.random.default_rng(seed)
    hidden, inter, d = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]

    def linear(out_features: int, in_features: int) -> np.ndarray:
        return rng.normal(0.0, in_features ** -0.5, (out_features, in_features)).astype(np.float32)

    def norm(size: int) -> np.ndarray:
        return rng.uniform(0.5, 1.5, size).astype(np.float32)

    weights = {"model.embed_tokens.weight": rng.normal(0.0, 0.3, (config["vocab_size"], hidden)).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "self_attn.q_proj.weight": linear(heads * d, hidden),
            p + "self_attn.k_proj.weight": linear(kv * d, hidden),
            p + "self_attn.v_proj.weight": linear(kv * d, hidden),
            p + "self_attn.o_proj.weight": linear(hidden, heads * d),
            p + "self_attn.q_norm.weight": norm(d),
            p + "self_attn.k_norm.weight": norm(d),
            p + "mlp.gate_proj.weight": linear(inter, hidden),
            p + "mlp.up_proj.weight": linear(inter, hidden),
            p + "mlp.down_proj.weight": linear(hidden, inter),
            p + "post_attention_layernorm.weight": norm(hidden),
            p + "post_feedforward_layernorm.weight": norm(hidden),
        })
    weights["model.norm.weight"] = norm(hidden)
    stored = {
        name: (dtype, to_bf16_bits(w) if dtype == "BF16" else w.astype(_NP_DTYPES[dtype]))
        for name, w in weights.items()
    }
    write_safetensors(directory / "model.safetensors", stored)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    generation_config = {"bos_token_id": 1, "eos_token_id": 361, "pad_token_id": 0}
    (directory / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
    if link_tokenizer:
        link_real_tokenizer(directory)
    return directory


def link_real_tokenizer(directory: Path) -> None:
    """Symlinks (or copies, where links are not allowed) the real tokenizer files into directory."""
    for name in TOKENIZER_FILES:
        source, target = SHARED_MODEL_DIR / name, directory / name
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.symlink(source, target)
        except OSError:
            shutil.copyfile(source, target)
