"""Next-token selection over a float32 logits vector, in numpy.

Processors run in transformers' order: repetition penalty, then the OpenAI
presence/frequency penalties (transformers has none; like vLLM they sit with
the other penalties, before any warper), then temperature, top-k, top-p and
min-p. Greedy decoding (temperature 0, the default) still applies the
penalties, as transformers does with do_sample=False.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass
class SamplingParams:
    """temperature == 0 means greedy (argmax); any other setting samples.

    top_k=0, top_p=1.0 and min_p=0.0 disable those filters; penalties of 1.0 (repetition) and 0.0
    (presence, frequency) disable them. `seed` makes sampling reproducible.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def apply_repetition_penalty(logits: np.ndarray, previous_token_ids: Iterable[int], penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits are divided by `penalty` when
    positive and multiplied by it when negative, once per distinct token."""
    out = np.array(logits, dtype=np.float32, copy=True)
    seen = np.unique(np.asarray(list(previous_token_ids), dtype=np.int64))
    if penalty == 1.0 or seen.size == 0:
        return out
    scores = out[seen]
    out[seen] = np.where(scores < 0, scores * penalty, scores / penalty)
    return out


def apply_presence_frequency_penalty(
    logits: np.ndarray, previous_token_ids: Iterable[int], presence: float, frequency: float
) -> np.ndarray:
    """OpenAI's definition: logit -= presence * [count > 0] + frequency * count."""
    out = np.array(logits, dtype=np.float32, copy=True)
    ids = np.asarray(list(previous_token_ids), dtype=np.int64)
    if (presence == 0.0 and frequency == 0.0) or ids.size == 0:
        return out
    seen, counts = np.unique(ids, return_counts=True)
    out[seen] -= np.float32(presence) + np.float32(frequency) * counts.astype(np.float32)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    finite = np.isfinite(logits)
    shifted = np.where(finite, logits - logits[finite].max(), -np.inf)
    exp = np.exp(shifted, dtype=np.float64)
    return exp / exp.sum()


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep tokens whose logit is >= the k-th largest (ties at the boundary are kept, as in transformers)."""
    if top_k <= 0 or top_k >= logits.size:
        return logits
    kth = np.partition(logits, -top_k)[-top_k]
    return np.where(logits < kth, -np.inf, logits).astype(np.float32)


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability mass reaches `top_p` (at least one).

    Same rule as transformers' TopPLogitsWarper: in ascending order, drop tokens while the cumulative mass
    is <= 1 - top_p.
    """
    if top_p >= 1.0:
        return logits
    order = np.argsort(logits, kind="stable")  # ascending
    cumulative = np.cumsum(_softmax(logits[order]))
    drop_sorted = cumulative <= (1.0 - top_p)
    drop_sorted[-1] = False
    drop = np.empty_like(drop_sorted)
    drop[order] = drop_sorted
    return np.where(drop, -np.inf, logits).astype(np.float32)


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    if min_p <= 0.0:
        return logits
    probs = _softmax(logits)
    drop = probs < min_p * probs.max()
    drop[np.argmax(probs)] = False
    return np.where(drop, -np.inf, logits).astype(np.float32)


class Sampler:
    """Picks the next token from one step's logits under fixed SamplingParams."""

    def __init__(self, params: SamplingParams | None = None):
        self.params = params or SamplingParams()
        self.rng = np.random.default_rng(self.params.seed)

    def process(self, logits: np.ndarray, previous_token_ids: Sequence[int] = ()) -> np.ndarray:
        """The logits after every configured processor; filtered-out tokens are -inf."""
        p = self.params
        scores = np.asarray(logits, dtype=np.float32).reshape(-1)
        previous = np.asarray(previous_token_ids, dtype=np.int64).reshape(-1)
        scores = apply_repetition_penalty(scores, previous, p.repetition_penalty)
        scores = apply_presence_frequency_penalty(scores, previous, p.presence_penalty, p.frequency_penalty)
        if p.greedy:
            return scores
        if p.temperature != 1.0:
            scores = (scores / np.float32(p.temperature)).astype(np.float32)
        scores = top_k_filter(scores, p.top_k)
        scores = top_p_filter(scores, p.top_p)
        return min_p_filter(scores, p.min_p)

    def probabilities(self, logits: np.ndarray, previous_token_ids: Sequence[int] = ()) -> np.ndarray:
        """The distribution `sample` draws from (one-hot at the argmax when greedy)."""
        scores = self.process(logits, previous_token_ids)
        if self.params.greedy:
            probs = np.zeros(scores.size)
            probs[int(np.argmax(scores))] = 1.0
            return probs
        return _softmax(scores)

    def sample(self, logits: np.ndarray, previous_token_ids: Sequence[int] = ()) -> int:
        scores = self.process(logits, previous_token_ids)
        if self.params.greedy:
            return int(np.argmax(scores))
        return int(self.rng.choice(scores.size, p=_softmax(scores)))


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
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**values)


def load_generation_config(model_dir: str | Path) -> GenerationDefaults:
    """Read `generation_config.json` (missing file: transformers' defaults). eos_token_id may be an int or a list."""
    path = Path(model_dir) / GENERATION_CONFIG_FILE
    if not path.is_file():
        return GenerationDefaults()
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    known = {f.name for f in dataclasses.fields(GenerationDefaults)}
    values = {k: v for k, v in raw.items() if k in known and v is not None}
    eos = raw.get("eos_token_id")
    values["eos_token_ids"] = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    stops = raw.get("stop_strings")
    values["stop_strings"] = [] if stops is None else [stops] if isinstance(stops, str) else list(stops)
    return GenerationDefaults(**values)


# ---- stop strings -----------------------------------------------------------------------------------------------


def find_stop(text: str, stop_strings: Sequence[str]) -> tuple[int, str] | None:
    """Earliest occurrence of any stop string in `text`: (index where to cut, the stop string), or None.

    Cut with `text[:index]` to drop the stop string and what follows it. When two stop strings start at
    the same place the longer one is reported.
    """
    best: tuple[int, str] | None = None
    for stop in stop_strings:
        if not stop:
            continue
        index = text.find(stop)
        if index >= 0 and (best is None or index < best[0] or (index == best[0] and len(stop) > len(best[1]))):
            best = (index, stop)
    return best


def stop_prefix_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string.

    A streamer holds back that many characters so it never emits the start of a stop string.
    """
    longest = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
