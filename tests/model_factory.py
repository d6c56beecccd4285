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


# ---- GGUF files, written as llama.cpp's convert_hf_to_gguf.py (Exaone4Model) writes them --------

GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
GGUF_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "post_attention_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(hf: str) -> str:
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")  # model.layers.{i}.<module>.weight
    return f"blk.{parts[2]}.{GGUF_LAYER_NAMES['.'.join(parts[3:-1])]}.weight"


def llama3_rope_factors(config: dict) -> np.ndarray:
    """The converter's rope_freqs tensor for llama3 scaling (python floats, stored as f32)."""
    import math

    params = config.get("rope_parameters") or dict(config.get("rope_scaling") or {}, rope_theta=config["rope_theta"])
    base, dim = params["rope_theta"], config["head_dim"]
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_ctx = params["original_max_position_embeddings"]
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / (base ** (i / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def gguf_tokenizer_metadata(writer, tokenizer_dir: Path) -> None:
    """tokenizer.ggml.* and tokenizer.chat_template from vocab.json / merges.txt /
    tokenizer_config.json, as the converter writes them for EXAONE 4."""
    import gguf

    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    added = {int(k): v for k, v in config.get("added_tokens_decoder", {}).items()}
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
    merges = [line for line in (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
              if line and not line.startswith("#version")]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("exaone4")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = {name: vocab[config[name]] for name in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(name)}
    writer.add_bos_token_id(ids["bos_token"])
    writer.add_eos_token_id(ids["eos_token"])
    if "unk_token" in ids:
        writer.add_unk_token_id(ids["unk_token"])
    writer.add_pad_token_id(ids["pad_token"])
    writer.add_add_bos_token(bool(config.get("add_bos_token", False)))
    template = tokenizer_dir / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def write_gguf(src: str | Path, dst: str | Path, weight_type: str = "F32", *, tokenizer_dir: Path | None = None,
               blocks: dict | None = None) -> Path:
    """The checkpoint directory src as a GGUF file dst: metadata as llama.cpp's converter writes
    it, 1-D tensors in F32, 2-D weights in weight_type ("F32", "F16", "BF16", or a block type the
    `gguf` package quantizes: "Q8_0", "Q4_0"). blocks: HF name -> (type name, raw uint8 rows) for
    weights given already in blocks (e.g. random K-quant blocks)."""
    import gguf

    from exaone_cpu.checkpoint import load_checkpoint_tensors

    src, dst = Path(src), Path(dst)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tensors = {name: t.to_f32() for name, t in load_checkpoint_tensors(src).items()}
    w = gguf.GGUFWriter(str(dst), "exaone4")
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    params = config.get("rope_parameters") or {}
    w.add_rope_freq_base(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_key_length(config["head_dim"])
    w.add_value_length(config["head_dim"])
    w.add_vocab_size(config["vocab_size"])
    if config.get("sliding_window") is not None:
        w.add_sliding_window(config["sliding_window"])
        w.add_sliding_window_pattern([t == "sliding_attention" for t in config["layer_types"]])
    for key in ("bos_token_id", "eos_token_id"):
        if tokenizer_dir is None and config.get(key) is not None:
            getattr(w, f"add_{key}")(config[key])
    if tokenizer_dir is not None:
        gguf_tokenizer_metadata(w, Path(tokenizer_dir))
    if (params.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type")) == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(config))
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)
    for name, a in tensors.items():
        if blocks and name in blocks:
            kind, raw = blocks[name]
            w.add_tensor(gguf_name(name), raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType[kind])
        elif a.ndim == 1 or weight_type == "F32":
            w.add_tensor(gguf_name(name), np.ascontiguousarray(a, dtype=np.float32))
        else:
            qtype = gguf.GGMLQuantizationType[weight_type]
            raw = gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), qtype)
            w.add_tensor(gguf_name(name), raw, raw_shape=raw.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst
