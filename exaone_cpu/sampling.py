"""Next-token selection: the sampling parameters, their validation, and the per-sequence sampler.

The work is done by the C++ sampler (`_core.Sampler`, csrc/ops/sampling.h), GIL released, with no
sort of the vocabulary. Semantics (docs/sampling.md), in this order:

  1. repetition penalty (transformers): every distinct token of prompt + output has its logit divided
     by the penalty when positive, multiplied by it when negative;
  2. presence / frequency penalties (OpenAI, vLLM): logit -= presence * [count > 0] + frequency * count,
     counts over the output only;
  3. logit_bias added; tokens banned by the pipeline (min_new_tokens) or outside a mask set to -inf;
  4. temperature 0: the argmax (the lowest id among equal maxima). Otherwise p ~ exp(logit / T) and
     top_k (keep logits >= the k-th largest, ties kept), then top_p (keep the fewest most likely tokens
     whose mass reaches top_p of what top_k kept, ties kept), then min_p (keep p >= min_p * max p);
  5. a uniform draw u from the sequence's own xoshiro256** generator (seeded by `seed`) picks the first
     kept token, in id order, whose running mass exceeds u * the kept mass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .gguf_file import GGUFError, GGUFFile, is_gguf, open_gguf
from .hub import is_repo_id, resolve_model

GENERATION_CONFIG_FILE = "generation_config.json"
SEED_MODULUS = 1 << 64  # seeds are taken modulo 2**64 (negative ones too)


def _finite(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be a finite number in {bound}, got {value!r}")
    return v


@dataclass
class SamplingParams:
    """temperature == 0 means greedy (argmax); any other setting samples.

    top_k=0, top_p=1.0 and min_p=0.0 disable those filters; penalties of 1.0 (repetition) and 0.0
    (presence, frequency) disable them. logit_bias maps token ids to a value added to their logit
    (OpenAI's -100..100). `seed` makes sampling reproducible (None: a fresh random seed per sequence).
    Out-of-range, NaN or infinite values are a ValueError naming the parameter.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None

    def __post_init__(self) -> None:
        self.temperature = _finite("temperature", self.temperature, 0.0, 1e6)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or not 0 <= self.top_k < 2**62:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        self.top_k = int(self.top_k)
        self.top_p = _finite("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        self.min_p = _finite("min_p", self.min_p, 0.0, 1.0)
        self.repetition_penalty = _finite("repetition_penalty", self.repetition_penalty, 0.0, 1e6, lo_open=True)
        self.presence_penalty = _finite("presence_penalty", self.presence_penalty, -1e6, 1e6)
        self.frequency_penalty = _finite("frequency_penalty", self.frequency_penalty, -1e6, 1e6)
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
                raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
            self.seed = int(self.seed)
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                raise ValueError("logit_bias must be a mapping of token id to bias")
            bias = {}
            for k, v in self.logit_bias.items():
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                    raise ValueError(f"logit_bias: token ids must be non-negative integers, got {k!r}")
                bias[int(k)] = _finite(f"logit_bias[{k}]", v, -1e6, 1e6)
            self.logit_bias = bias or None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """One sequence's sampler: its penalty counts, bias and random generator live in C++.

        sampler = Sampler(params, vocab_size, prompt_ids)
        token = sampler.sample(logits)     # float32 [vocab]
        sampler.accept(token)              # counted by the penalties from the next step on

    The pipeline calls accept() for every generated token; sample() alone never changes the counts.
    """

    def __init__(self, params: SamplingParams | None = None, vocab_size: int | None = None,
                 prompt_ids: Sequence[int] | np.ndarray = ()):
        self.params = params or SamplingParams()
        self._prompt = np.asarray(prompt_ids, np.int64).reshape(-1)
        self._core: Any = None
        if vocab_size is not None:
            self._build(int(vocab_size))

    def _build(self, vocab: int) -> None:
        p = self.params
        seed = secrets.randbits(64) if p.seed is None else p.seed % SEED_MODULUS
        core = _core.Sampler(vocab, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
                             repetition_penalty=p.repetition_penalty, presence_penalty=p.presence_penalty,
                             frequency_penalty=p.frequency_penalty, seed=seed)
        if p.logit_bias:
            ids = np.fromiter(p.logit_bias.keys(), np.int64, len(p.logit_bias))
            if ids.max() >= vocab:
                raise ValueError(f"logit_bias: token id {int(ids.max())} is outside the vocabulary of {vocab}")
            core.set_logit_bias(ids, np.fromiter(p.logit_bias.values(), np.float32, len(p.logit_bias)))
        if p.repetition_penalty != 1.0 and self._prompt.size:
            core.add_prompt(self._prompt)
        self._core = core

    def _row(self, logits: np.ndarray) -> np.ndarray:
        row = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
        if self._core is None:
            self._build(row.size)
        elif row.size != self._core.vocab:
            raise ValueError(f"logits have {row.size} entries, the sampler was made for a vocabulary of "
                             f"{self._core.vocab}")
        return row

    @property
    def output_length(self) -> int:
        return 0 if self._core is None else self._core.output_length

    def sample(self, logits: np.ndarray, *, banned: np.ndarray | None = None, allowed: np.ndarray | None = None,
               uniform: float | None = None) -> int:
        """The next token (not yet counted: call accept). banned: ids excluded this step; allowed: a
        uint32 bitmask of the allowed ids; uniform: a draw in [0, 1) to use instead of the generator's."""
        row = self._row(logits)
        return self._core.sample(row, uniform, banned, allowed)

    def accept(self, token: int) -> None:
        if self._core is None:
            raise RuntimeError("accept() before the sampler saw any logits")
        self._core.accept(int(token))

    def rollback(self, keep: int) -> None:
        """Forgets the output tokens after the first `keep` (the cache was rolled back)."""
        if self._core is not None:
            self._core.rollback_output(int(keep))

    def probabilities(self, logits: np.ndarray, *, banned: np.ndarray | None = None,
                      allowed: np.ndarray | None = None) -> np.ndarray:
        """The distribution sample() draws from, float64 [vocab] (one-hot at the argmax when greedy)."""
        row = self._row(logits)
        return self._core.probabilities(row, banned, allowed)


def logprobs(logits: np.ndarray, token: int, top_n: int = 0) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` (log_softmax of the raw logits, before any sampling
    setting) and the top_n most likely tokens as (id, logprob), most likely first."""
    value, ids, values = _core.logprobs(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1), int(token),
                                        int(top_n))
    return value, list(zip(ids.tolist(), values.tolist()))


# ---- generation_config.json -------------------------------------------------------------------------------------


@dataclass
class GenerationDefaults:
    """A checkpoint's generation_config.json, with transformers' global defaults for absent keys."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0  # not a transformers key: set by a frontend's options (serve --presence-penalty)
    frequency_penalty: float = 0.0
    max_new_tokens: int | None = None
    max_length: int = 20
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    stop_strings: list[str] = field(default_factory=list)

    def sampling_params(self, **overrides: float | None) -> SamplingParams:
        """SamplingParams as `model.generate()` would use them; keyword overrides win.

        With do_sample false transformers decodes greedily whatever temperature/top_k/top_p say, so the result
        is greedy (temperature 0) unless an override sets a temperature.
        """
        values = {
            "temperature": self.temperature if self.do_sample else 0.0,
            "top_k": self.top_k or 0,
            "top_p": self.top_p,
            "min_p": self.min_p or 0.0,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**values)


    def with_options(self, **options: Any) -> GenerationDefaults:
        """These defaults with sampling options a frontend was started with (None: unset); a
        temperature turns sampling on (do_sample) when it is above 0, off at 0. Checked at once."""
        given = {k: v for k, v in options.items() if v is not None}
        SamplingParams(**given)  # a bad value is a ValueError naming it, now
        if "temperature" in given:
            given["do_sample"] = given["temperature"] > 0
        return dataclasses.replace(self, **given)


def load_generation_config(model_dir: str | Path) -> GenerationDefaults:
    """Read `generation_config.json` (missing file: transformers' defaults). eos_token_id may be an int or a list.
    For a GGUF file: its token ids and `general.sampling.*` recommendations."""
    if not Path(model_dir).exists() and is_repo_id(model_dir):
        model_dir = resolve_model(model_dir)
    if is_gguf(model_dir):
        return generation_defaults_from_gguf(open_gguf(model_dir))
    path = Path(model_dir) / GENERATION_CONFIG_FILE
    if not path.is_file():
        return GenerationDefaults()
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    known = {f.name for f in dataclasses.fields(GenerationDefaults)}
    values = {k: v for k, v in raw.items() if k in known and v is not None}
    for name, value in values.items():
        kind = _GENERATION_FIELD_TYPES.get(name)
        if kind is not None and (isinstance(value, bool) != (kind is bool) or not isinstance(value, kind)):
            raise ValueError(f"{path}: {name} has the wrong type ({type(value).__name__})")
    eos = raw.get("eos_token_id")
    eos = [] if eos is None else [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos
    if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in eos):
        raise ValueError(f"{path}: eos_token_id must be a token id or a list of them")
    values["eos_token_ids"] = eos
    stops = raw.get("stop_strings")
    stops = [] if stops is None else [stops] if isinstance(stops, str) else stops
    if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
        raise ValueError(f"{path}: stop_strings must be a string or a list of strings")
    values["stop_strings"] = stops
    defaults = GenerationDefaults(**values)
    try:  # every value the file gives must be valid, used now or not
        SamplingParams(temperature=defaults.temperature, top_k=defaults.top_k or 0, top_p=defaults.top_p,
                       min_p=defaults.min_p or 0.0, repetition_penalty=defaults.repetition_penalty)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if defaults.max_new_tokens is not None and not 0 <= defaults.max_new_tokens < 2**31:
        raise ValueError(f"{path}: max_new_tokens must be a non-negative integer")
    return defaults


_NUMBER = (int, float)
_GENERATION_FIELD_TYPES = {
    "do_sample": bool, "temperature": _NUMBER, "top_k": int, "top_p": _NUMBER, "min_p": _NUMBER,
    "repetition_penalty": _NUMBER, "presence_penalty": _NUMBER, "frequency_penalty": _NUMBER,
    "max_new_tokens": int, "max_length": int, "pad_token_id": int, "bos_token_id": int,
}


def generation_defaults_from_gguf(f: GGUFFile) -> GenerationDefaults:
    """GenerationDefaults of a GGUF file: its eos / bos / pad ids and, when present, the sampling
    it recommends (general.sampling.temp, top_k, top_p, min_p, penalty_repeat)."""
    values: dict[str, Any] = {}
    eos = f.get("tokenizer.ggml.eos_token_id", int)
    values["eos_token_ids"] = [] if eos is None else [eos]
    values["bos_token_id"] = f.get("tokenizer.ggml.bos_token_id", int)
    values["pad_token_id"] = f.get("tokenizer.ggml.padding_token_id", int)
    for key, name, kind in (("temp", "temperature", float), ("top_k", "top_k", int), ("top_p", "top_p", float),
                            ("min_p", "min_p", float), ("penalty_repeat", "repetition_penalty", float)):
        v = f.get(f"general.sampling.{key}", kind)
        if v is not None:
            values[name] = v
    if "temperature" in values:
        values["do_sample"] = values["temperature"] > 0
    defaults = GenerationDefaults(**values)
    try:
        SamplingParams(temperature=defaults.temperature, top_k=defaults.top_k or 0, top_p=defaults.top_p,
                       min_p=defaults.min_p or 0.0, repetition_penalty=defaults.repetition_penalty)
    except ValueError as e:
        raise GGUFError(f"{f.path}: general.sampling: {e}") from None
    return defaults
