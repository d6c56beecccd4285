"""Throughput benchmark of a loaded model: prefill and greedy decode, timed separately.

One run = a fresh cache, prefill of `prompt_tokens` random token ids (one forward call, chunked
inside the model), then `gen_tokens` decode steps, each one forward call of the previous greedy
token. Decode therefore runs at context prompt_tokens .. prompt_tokens + gen_tokens - 1 (llama-bench's
tg test starts from an empty cache instead). The first run after loading pays for paging the
memory-mapped weights in and for the first use of every buffer (the scratch of a full prefill
chunk, KV-cache pages), so `run_benchmark` starts with an untimed warm-up of the same shape: a
prefill of prompt_tokens and a few decode steps (as llama-bench warms up with the test itself).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Stat:
    """tok/s over the repetitions."""

    median: float
    min: float
    max: float
    runs: list[float]

    @classmethod
    def of(cls, runs: list[float]) -> "Stat":
        return cls(statistics.median(runs), min(runs), max(runs), list(runs))


@dataclass
class BenchResult:
    prompt_tokens: int
    gen_tokens: int
    repeat: int
    prefill_tok_s: Stat
    decode_tok_s: Stat
    prefill_s: list[float]  # seconds per run
    decode_s: list[float]
    warmup_s: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


def run_benchmark(model, prompt_tokens: int = 512, gen_tokens: int = 128, repeat: int = 3, *,
                  seed: int = 0, warmup: bool = True, on_run=None) -> BenchResult:
    """Times `repeat` runs of prefill(prompt_tokens) + decode(gen_tokens) on model.

    on_run(i, prefill_s, decode_s) is called after each run (progress output)."""
    for name, v, low in (("prompt_tokens", prompt_tokens, 1), ("gen_tokens", gen_tokens, 1), ("repeat", repeat, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    limit = model.config.max_position_embeddings
    if prompt_tokens + gen_tokens > limit:
        raise ValueError(f"prompt ({prompt_tokens}) + gen ({gen_tokens}) tokens exceed the model's "
                         f"max_position_embeddings ({limit})")
    rng = np.random.default_rng(seed)
    vocab = model.config.vocab_size
    warmup_s = 0.0
    if warmup:  # pages the weights in and sizes every buffer once, untimed in the results
        t0 = time.perf_counter()
        cache = model.new_cache(prompt_tokens + gen_tokens)
        logits = model.forward(np.random.default_rng(seed + 1).integers(0, vocab, size=prompt_tokens), cache)
        for _ in range(min(gen_tokens, 4)):
            logits = model.forward([int(np.argmax(logits))], cache)
        del cache
        warmup_s = time.perf_counter() - t0
    prefill_s, decode_s = [], []
    for i in range(repeat):
        prompt = rng.integers(0, vocab, size=prompt_tokens)
        cache = model.new_cache(prompt_tokens + gen_tokens)
        t0 = time.perf_counter()
        logits = model.forward(prompt, cache)
        t1 = time.perf_counter()
        for _ in range(gen_tokens):
            logits = model.forward([int(np.argmax(logits))], cache)
        t2 = time.perf_counter()
        prefill_s.append(t1 - t0)
        decode_s.append(t2 - t1)
        if on_run is not None:
            on_run(i, t1 - t0, t2 - t1)
    return BenchResult(
        prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, repeat=repeat,
        prefill_tok_s=Stat.of([prompt_tokens / t for t in prefill_s]),
        decode_tok_s=Stat.of([gen_tokens / t for t in decode_s]),
        prefill_s=prefill_s, decode_s=decode_s, warmup_s=warmup_s,
    )


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB), from getrusage."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mib() -> float | None:
    """Current resident set size (MiB) from /proc/self/status, or None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a model directory (safetensors and other known weight formats), or
    [path] for a GGUF file."""
    if Path(path).is_file():
        return [Path(path)]
    return sorted(p for p in Path(path).iterdir() if p.is_file() and p.suffix in (".safetensors", ".gguf", ".bin"))


def _format_name(obj) -> str | None:
    for attr in ("format", "qformat", "wtype"):
        v = getattr(obj, attr, None)
        if v is not None:
            return str(getattr(v, "name", v))
    return None


def weight_format(model) -> str:
    """A short description of the stored format of the matmul weights, e.g. 'BF16' or
    'Q8_0 (lm_head BF16)'."""
    counts: dict[str, int] = {}
    for layer in getattr(model, "layers", []):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            f = _format_name(getattr(layer, name, None))
            if f is not None:
                counts[f] = counts.get(f, 0) + 1
    main = max(counts, key=counts.get) if counts else "unknown"
    if len(counts) > 1:
        main += " (mixed: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) + ")"
    head = _format_name(getattr(model, "lm_head", None))
    if head is not None and head != main:
        main += f" (lm_head {head})"
    return main


def _nbytes(lin) -> int:
    """Bytes a matmul reads of one weight (QuantLinear, weights.Linear or a Tensor)."""
    if hasattr(lin, "nbytes"):
        return int(lin.nbytes)
    w = getattr(lin, "weight", None)
    return int(w.nbytes) if w is not None else int(lin.data.nbytes)


def decode_bytes(model, context: float) -> tuple[int, int]:
    """(weight bytes, KV cache bytes) one decode step reads at a cache of `context` positions: every
    projection and the lm_head once (the embedding lookup reads one row, left out), and each layer's
    visible keys and values (a sliding layer at most its window) in the model's KV type."""
    weights = sum(_nbytes(getattr(layer, name)) for layer in model.layers
                  for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    weights += _nbytes(model.lm_head)
    from .kv_cache import KV_DTYPES

    c = model.config
    item = np.dtype(KV_DTYPES[model.kv_dtype]).itemsize
    row = c.num_key_value_heads * (c.head_dim * item + (4 if model.kv_dtype == "int8" else 0))  # + a scale per row
    kv = sum(2 * row * min(context, c.window(i) or context) for i in range(c.num_hidden_layers))
    return weights, int(kv)
