#!/usr/bin/env python3
"""Write a random-weight EXAONE 4 checkpoint with the exact shape of a real one (for benchmarks).

    python tools/make_random_model.py [OUT_DIR] [--config CONFIG_JSON | --shape 32b] [--layers N]
                                      [--seed N] [--std F]

Speed does not depend on the weight values, so a random checkpoint of the EXAONE-4.0-1.2B shape
stands in for the real model, which this machine cannot download. The layout is the Hugging Face
one: model.safetensors (bf16; shards + model.safetensors.index.json past --shard-size), config.json,
generation_config.json, and the tokenizer files (vocab.json, merges.txt, tokenizer_config.json,
...) copied from the directory of the config, when present there.

--shape 32b takes EXAONE-4.0-32B's shape instead (its config.json as published: 64 layers, hidden
5120, intermediate 27392, 40 query / 8 KV heads of 128, three sliding-window layers of 4096 to one
global, untied lm_head), with the tokenizer files of the --config directory. --layers N keeps the
first N decoder layers (a partial model that fits a small machine's disk and memory: the 32B's
layers are ~0.97 GB each in bf16); per-layer costs measured on it extrapolate to the whole model.

Defaults: config ../shared/exaone-4.0-1.2b/config.json relative to the repository root, output
/work/bench/models/exaone4-1.2b-random. Weights ~ normal(0, 0.02) as transformers initialises
them (initializer_range), norm weights 1, tied embeddings stored once (no lm_head.weight), as
save_pretrained writes them. numpy only; the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO.parent / "shared" / "exaone-4.0-1.2b" / "config.json"
DEFAULT_OUT = Path("/work/bench/models/exaone4-1.2b-random")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")
CHUNK = 1 << 24  # values drawn per step (64 MiB of f32)


def exaone_32b_config(base: dict) -> dict:
    """EXAONE-4.0-32B's config.json (shape, attention pattern, RoPE), special token ids from base
    (the two models share their tokenizer)."""
    layers = 64
    cfg = {k: base[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in base}
    cfg.update({
        "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "attention_dropout": 0.0,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
        "intermediate_size": 27392, "max_position_embeddings": 131072, "num_attention_heads": 40,
        "num_hidden_layers": layers, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 1000000.0, "sliding_window": 4096, "sliding_window_pattern": "LLLG",
        "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(layers)],
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 102400,
    })
    return cfg


def keep_layers(cfg: dict, n: int) -> dict:
    """cfg with only its first n decoder layers (layer_types cut to match)."""
    if not 1 <= n <= cfg["num_hidden_layers"]:
        raise ValueError(f"--layers must be between 1 and {cfg['num_hidden_layers']}, got {n}")
    cfg = dict(cfg, num_hidden_layers=n)
    if cfg.get("layer_types"):
        cfg["layer_types"] = cfg["layer_types"][:n]
    return cfg


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of an Exaone4ForCausalLM checkpoint, by Hugging Face name."""
    h, d = cfg["hidden_size"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    heads, kv, inter = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * d, h),
            p + "self_attn.k_proj.weight": (kv * d, h),
            p + "self_attn.v_proj.weight": (kv * d, h),
            p + "self_attn.o_proj.weight": (h, heads * d),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.k_norm.weight": (d,),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "post_attention_layernorm.weight": (h,),
            p + "post_feedforward_layernorm.weight": (h,),
        })
    if not cfg.get("tie_word_embeddings", True):
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    return dict(sorted(shapes.items()))


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16); x holds no NaN."""
    bits = x.view(np.uint32)
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (bits >> np.uint32(16)).astype(np.uint16)


def write_tensor(f, rng: np.random.Generator, name: str, shape: tuple[int, ...], std: float) -> None:
    n = int(np.prod(shape))
    if len(shape) == 1 and name.endswith("norm.weight"):
        f.write(np.full(n, 0x3F80, np.uint16).tobytes())  # bf16 1.0
        return
    buf = np.empty(min(n, CHUNK), np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        rng.standard_normal(out=buf[:m], dtype=np.float32)
        buf[:m] *= np.float32(std)
        f.write(f32_to_bf16_bits(buf[:m]).tobytes())


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], rng, std: float) -> int:
    """A safetensors file of bf16 tensors, written chunk by chunk (never whole in memory)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)  # the data section starts 8-byte aligned
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(len(hbytes).to_bytes(8, "little"))
        f.write(hbytes)
        for name, shape in shapes.items():
            write_tensor(f, rng, name, shape, std)
    tmp.replace(path)
    return offset


def shard(shapes: dict[str, tuple[int, ...]], max_bytes: int) -> list[dict[str, tuple[int, ...]]]:
    shards, cur, size = [], {}, 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        if cur and size + nbytes > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shape
        size += nbytes
    return shards + [cur]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                    help="config.json to copy the shape from; tokenizer files next to it are copied too "
                         "(default: ../shared/exaone-4.0-1.2b/config.json from the repository root)")
    ap.add_argument("--shape", choices=("config", "32b"), default="config",
                    help="config: the --config file's shape (default); 32b: EXAONE-4.0-32B's")
    ap.add_argument("--layers", type=int, default=None, metavar="N", help="keep only the first N decoder layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=None, help="weight std (default: the config's initializer_range or 0.02)")
    ap.add_argument("--shard-size", type=float, default=5.0, help="GB (1e9 B) per safetensors file before sharding (default 5)")
    ap.add_argument("--no-tokenizer", action="store_true", help="do not copy tokenizer files")
    args = ap.parse_args(argv)

    if not args.config.is_file():
        ap.error(f"config {args.config} not found (pass --config PATH)")
    if args.shard_size <= 0:
        ap.error("--shard-size must be positive")
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    if cfg.get("model_type") != "exaone4":
        ap.error(f"{args.config}: model_type is {cfg.get('model_type')!r}, expected 'exaone4'")
    if args.shape == "32b":
        cfg = exaone_32b_config(cfg)
    if args.layers is not None:
        try:
            cfg = keep_layers(cfg, args.layers)
        except ValueError as e:
            ap.error(str(e))
    std = args.std if args.std is not None else float(cfg.get("initializer_range", 0.02))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()

    shapes = tensor_shapes(cfg)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{n_params / 1e9:.4f} B parameters in {len(shapes)} tensors, bf16, std {std}, seed {args.seed}", flush=True)
    t0 = time.perf_counter()
    rng = np.random.Generator(np.random.SFC64(args.seed))
    shards = shard(shapes, int(args.shard_size * 1e9))
    if len(shards) == 1:
        write_safetensors(out / "model.safetensors", shapes, rng, std)
    else:
        weight_map, total = {}, 0
        for k, part in enumerate(shards, 1):
            fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors(out / fname, part, rng, std)
            weight_map.update({name: fname for name in part})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"weights written in {time.perf_counter() - t0:.1f} s", flush=True)

    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    src = args.config.parent
    if (src / "generation_config.json").is_file():
        shutil.copyfile(src / "generation_config.json", out / "generation_config.json")
    else:
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    copied = []
    if not args.no_tokenizer:
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
                copied.append(name)
    print("tokenizer files: " + (", ".join(copied) if copied else f"none (none in {src})"))
    for f in sorted(out.iterdir()):
        print(f"  {f.name:36s} {f.stat().st_size / 1e6:10.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
