"""EXAONE 4 configuration: parses every spelling real checkpoints use and rejects what we cannot run.

Accepted spellings:
- RoPE: ``rope_theta`` + ``rope_scaling`` (released checkpoints) or ``rope_parameters`` (newer
  transformers); rope types ``default``, ``linear`` and ``llama3``.
- Layer pattern: ``layer_types``, or when absent ``sliding_window_pattern`` as an int (every N-th
  layer global) or a string such as ``"LLLG"`` (repeating; the last layer is always global);
  ``sliding_window: null`` means every layer is global.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FULL = "full_attention"
SLIDING = "sliding_attention"

ARCHITECTURES = (
    "Exaone4ForCausalLM",
    "Exaone4ForSequenceClassification",
    "Exaone4ForTokenClassification",
    "Exaone4ForQuestionAnswering",
)


class ConfigError(ValueError):
    """config.json holds a value exaone_cpu cannot run, or values that contradict each other."""


# Upper bounds on sizes, checked before anything is allocated: far above any EXAONE 4 model
# (the 32B: hidden 5120, 64 layers, vocab 102400, 131072 positions), far below absurd.
LIMITS = {"hidden_size": 1 << 16, "intermediate_size": 1 << 18, "num_hidden_layers": 1024,
          "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 4096, "vocab_size": 1 << 22,
          "max_position_embeddings": 1 << 24, "sliding_window": 1 << 24, "num_labels": 1 << 16}


def _finite_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def _token_id(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 31):
        raise ConfigError(f"{name} must be a token id (a non-negative integer) or null, got {value!r}")
    return value


@dataclass(frozen=True)
class RopeConfig:
    rope_type: str  # "default" | "linear" | "llama3" | "factors"
    theta: float
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    # "factors": one divisor per frequency, as a GGUF file's rope_freqs tensor stores llama3 scaling
    freq_factors: tuple[float, ...] = ()

    def inv_freq(self, head_dim: int) -> np.ndarray:
        """Per-pair inverse frequencies [head_dim // 2], float32 as transformers computes them."""
        exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
        inv_freq = (np.float32(1.0) / (np.float32(self.theta) ** exponent)).astype(np.float32)
        if self.rope_type == "linear":
            return (inv_freq / np.float32(self.factor)).astype(np.float32)
        if self.rope_type == "factors":
            factors = np.asarray(self.freq_factors, dtype=np.float32)
            if factors.shape != inv_freq.shape:
                raise ConfigError(f"{factors.size} rope frequency factors for head_dim {head_dim}")
            return (inv_freq / factors).astype(np.float32)
        if self.rope_type != "llama3":
            return inv_freq
        # llama3: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
        old_ctx = self.original_max_position_embeddings
        low_freq_wavelen = old_ctx / self.low_freq_factor
        high_freq_wavelen = old_ctx / self.high_freq_factor
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(self.factor), inv_freq)
        smooth = (np.float32(old_ctx) / wavelen - np.float32(self.low_freq_factor)) / np.float32(
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / np.float32(self.factor) + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)


@dataclass(frozen=True)
class Exaone4Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope: RopeConfig
    sliding_window: int | None
    layer_types: tuple[str, ...]
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    architectures: tuple[str, ...] = ("Exaone4ForCausalLM",)
    # Label maps of the task heads (empty for the causal LM).
    id2label: dict[int, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_key_value_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def uses_rope(self, layer: int) -> bool:
        # Hybrid models use NoPE on their global layers; models without a window use RoPE everywhere.
        return self.sliding_window is None or self.layer_types[layer] == SLIDING

    def window(self, layer: int) -> int | None:
        return self.sliding_window if self.layer_types[layer] == SLIDING else None

    def with_rope_freq_factors(self, factors: tuple[float, ...]) -> "Exaone4Config":
        """This config with RoPE frequencies divided by per-frequency factors (a GGUF file's
        rope_freqs tensor, which is how llama.cpp stores llama3 scaling)."""
        if len(factors) != self.head_dim // 2:
            raise ConfigError(f"{len(factors)} rope frequency factors for head_dim {self.head_dim}")
        return dataclasses.replace(self, rope=RopeConfig("factors", self.rope.theta, freq_factors=tuple(factors)))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Exaone4Config":
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, nesting, a huge integer
            raise ConfigError(f"{file} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file} must hold a JSON object")
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Exaone4Config":
        model_type = raw.get("model_type")
        if model_type != "exaone4":
            raise ConfigError(f"unsupported model_type {model_type!r}: exaone_cpu runs 'exaone4' models")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"unsupported hidden_act {act!r} (EXAONE 4 uses 'silu')")

        def positive_int(name: str, default: Any = None) -> int:
            value = raw.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= LIMITS[name]:
                raise ConfigError(f"{name} must be a positive integer of at most {LIMITS[name]}, got {value!r}")
            return value

        hidden = positive_int("hidden_size")
        heads = positive_int("num_attention_heads")
        kv_heads = positive_int("num_key_value_heads", heads)
        layers = positive_int("num_hidden_layers")
        if heads % kv_heads:
            raise ConfigError(
                f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )
        if raw.get("head_dim") is None:
            if hidden % heads:
                raise ConfigError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
            head_dim = hidden // heads
        else:
            head_dim = positive_int("head_dim")
        if head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {head_dim}")

        eps = _finite_positive("rms_norm_eps", raw.get("rms_norm_eps", 1e-5))
        if eps >= 1:
            raise ConfigError(f"rms_norm_eps must be below 1, got {eps!r}")

        sliding_window = raw.get("sliding_window")
        if sliding_window is not None:
            sliding_window = positive_int("sliding_window")

        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        for i in eos_ids:
            _token_id("eos_token_id", i)

        for name in ("tie_word_embeddings",):
            if name in raw and not isinstance(raw[name], bool):
                raise ConfigError(f"{name} must be true or false, got {raw[name]!r}")

        architectures = raw.get("architectures") or ["Exaone4ForCausalLM"]
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            raise ConfigError(f"architectures must be a list of names, got {architectures!r}")
        architectures = tuple(architectures)
        for arch in architectures:
            if arch not in ARCHITECTURES:
                raise ConfigError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")

        return cls(
            vocab_size=positive_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=positive_int("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=positive_int("max_position_embeddings"),
            rms_norm_eps=eps,
            rope=_parse_rope(raw),
            sliding_window=sliding_window,
            layer_types=_parse_layer_types(raw, layers, sliding_window),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            bos_token_id=_token_id("bos_token_id", raw.get("bos_token_id")),
            eos_token_ids=eos_ids,
            pad_token_id=_token_id("pad_token_id", raw.get("pad_token_id")),
            architectures=architectures,
            id2label=_parse_labels(raw),
            raw=raw,
        )


def _parse_rope(raw: dict[str, Any]) -> RopeConfig:
    params = raw.get("rope_parameters")
    scaling = raw.get("rope_scaling")
    theta = raw.get("rope_theta")
    if params is not None:
        if not isinstance(params, dict):
            raise ConfigError(f"rope_parameters must be an object, got {params!r}")
        if "rope_theta" in params:
            _finite_positive("rope_parameters.rope_theta", params["rope_theta"])
            if theta is not None and _finite_positive("rope_theta", theta) != float(params["rope_theta"]):
                raise ConfigError(
                    f"rope_theta {theta} contradicts rope_parameters.rope_theta {params['rope_theta']}"
                )
            theta = params["rope_theta"]
        if scaling is not None and (not isinstance(scaling, dict)
                                    or scaling.get("rope_type", scaling.get("type")) != params.get("rope_type")):
            raise ConfigError("rope_scaling and rope_parameters name different rope types")
        scaling = params
    if theta is None:
        theta = 10000.0
    theta = _finite_positive("rope_theta", theta)
    if scaling is None:
        return RopeConfig("default", float(theta))
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be an object or null, got {scaling!r}")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return RopeConfig("default", float(theta))
    if rope_type not in ("linear", "llama3"):
        raise ConfigError(f"unsupported rope_type {rope_type!r} (supported: default, linear, llama3)")
    try:
        factor = _finite_positive("rope_scaling.factor", scaling["factor"])
        if rope_type == "linear":
            return RopeConfig("linear", float(theta), factor=factor)
        old_ctx = scaling["original_max_position_embeddings"]
        if isinstance(old_ctx, bool) or not isinstance(old_ctx, int) or not 0 < old_ctx <= LIMITS["max_position_embeddings"]:
            raise ConfigError(f"rope_scaling.original_max_position_embeddings must be a positive integer, got {old_ctx!r}")
        rope = RopeConfig(
            "llama3",
            float(theta),
            factor=factor,
            low_freq_factor=_finite_positive("rope_scaling.low_freq_factor", scaling["low_freq_factor"]),
            high_freq_factor=_finite_positive("rope_scaling.high_freq_factor", scaling["high_freq_factor"]),
            original_max_position_embeddings=old_ctx,
        )
    except KeyError as e:
        raise ConfigError(f"rope_scaling of type {rope_type!r} is missing {e.args[0]!r}") from None
    if rope.factor <= 0 or rope.high_freq_factor <= rope.low_freq_factor:
        raise ConfigError("llama3 rope_scaling needs factor > 0 and high_freq_factor > low_freq_factor")
    return rope


def _parse_layer_types(raw: dict[str, Any], layers: int, sliding_window: int | None) -> tuple[str, ...]:
    layer_types = raw.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or len(layer_types) != layers:
            raise ConfigError(
                f"layer_types must list one entry per layer ({layers}), got {layer_types!r}"
            )
        for t in layer_types:
            if t not in (FULL, SLIDING):
                raise ConfigError(f"unknown layer type {t!r} (expected {FULL!r} or {SLIDING!r})")
        if SLIDING in layer_types and sliding_window is None:
            raise ConfigError("layer_types has sliding_attention layers but sliding_window is null")
        return tuple(layer_types)

    pattern = raw.get("sliding_window_pattern")
    if sliding_window is None or pattern is None:
        return (FULL,) * layers
    if isinstance(pattern, bool):
        raise ConfigError(f"sliding_window_pattern must be an int or a string, got {pattern!r}")
    if isinstance(pattern, int):
        if not 0 < pattern <= LIMITS["num_hidden_layers"]:
            raise ConfigError(f"sliding_window_pattern must be positive, got {pattern}")
        return tuple(SLIDING if (i + 1) % pattern != 0 else FULL for i in range(layers))
    if isinstance(pattern, str):
        if not pattern or set(pattern) - {"L", "G"}:
            raise ConfigError(f"sliding_window_pattern string must use only 'L' and 'G', got {pattern!r}")
        return tuple(
            SLIDING if pattern[i % len(pattern)] == "L" and i != layers - 1 else FULL for i in range(layers)
        )
    raise ConfigError(f"sliding_window_pattern must be an int or a string, got {pattern!r}")


def _parse_labels(raw: dict[str, Any]) -> dict[int, str]:
    id2label = raw.get("id2label")
    num_labels = raw.get("num_labels")
    labels: dict[int, str] = {}
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise ConfigError(f"id2label must be an object, got {id2label!r}")
        if len(id2label) > LIMITS["num_labels"]:
            raise ConfigError(f"id2label has {len(id2label)} entries, more than {LIMITS['num_labels']}")
        try:
            labels = {int(k): str(v) for k, v in id2label.items()}
        except ValueError:
            raise ConfigError(f"id2label keys must be integers, got {list(id2label)[:10]!r}") from None
        if sorted(labels) != list(range(len(labels))):
            raise ConfigError(f"id2label keys must be 0..{len(labels) - 1}, got {sorted(labels)}")
    label2id = raw.get("label2id")
    if label2id is not None and labels:
        if (not isinstance(label2id, dict)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in label2id.values())
                or {v: k for k, v in label2id.items()} != labels):
            raise ConfigError("label2id is not the inverse of id2label")
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int)
                                   or not 0 < num_labels <= LIMITS["num_labels"]):
        raise ConfigError(f"num_labels must be a positive integer of at most {LIMITS['num_labels']}, got {num_labels!r}")
    if num_labels is not None and labels and num_labels != len(labels):
        raise ConfigError(f"num_labels is {num_labels} but id2label has {len(labels)} entries")
    if num_labels is not None and not labels:
        labels = {i: f"LABEL_{i}" for i in range(num_labels)}
    return labels
