"""Speculative decoding: draft a few tokens cheaply, check them with one forward pass of the model.

Decoding one token reads every weight once and is bound by memory bandwidth; a forward of k + 1
positions reads them once too and costs little more (BENCHMARKS.md, tools/bench_verify.py). A
drafter guesses the next k tokens; one forward computes the logits of the last token and of the k
guesses; the token pipeline (decoding.Decoding) then picks each next token from those logits exactly
as it always does, and while the token it picks is the guessed one, the logits of the position after
it are already computed. The first pick that differs from the guess ends the round: the KV cache is
cut back to the tokens kept (KVCache.truncate; a sliding-window ring keeps prefill_chunk positions
of slack for this) and the next round starts from there.

Exactness: every token is still chosen by Decoding.accept from the model's logits at its position,
with the same penalties, masks, stop tokens and random draws (one uniform draw per token, in order),
and a round's logits are bit for bit those of one-token steps (a sequence with at most
_core.ATTENTION_TOKEN_BY_TOKEN tokens in a step attends token by token, and every matmul computes
each row alone), so the output is the output without speculation, token for token, greedy or
sampled with a seed. For a sampled token this is the speculative-sampling rule (Leviathan et al.
2023, Chen et al. 2023) with a draft distribution q that is a point mass on the guess d: accept d
with probability min(1, p(d) / q(d)) = p(d), otherwise draw from max(0, p - q) renormalised, that
is from p without d. Drawing x from p and keeping the round going when x == d does exactly that.
The drafters here guess deterministically (prompt lookup, a draft model's argmax), so this is the rule.

Drafters (one per sequence, `propose(token_ids, k)`):
    PromptLookup  the tokens that followed the latest earlier occurrence of the last n tokens
                  (n from ngram_max down to ngram_min) in the prompt and the output so far: free,
                  and right whenever the output quotes its context (RAG answers, code edits, JSON).
    DraftModel    a smaller exaone_cpu model with the same tokenizer (the int4 1.2B for the 32B)
                  decoding greedily on its own KV cache.

Adaptive: each sequence's Speculator measures the share of guesses kept and what a forward of n
positions costs, and each round drafts the k that gives the most tokens per unit of time, or
nothing when no k pays (then it tries one guess now and then, backing off while they keep failing).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from . import _core

if TYPE_CHECKING:
    from .model import Model

PROMPT_LOOKUP = "prompt-lookup"
DRAFT_MODEL = "draft-model"
METHOD_ALIASES = {"prompt-lookup": PROMPT_LOOKUP, "prompt_lookup": PROMPT_LOOKUP, "ngram": PROMPT_LOOKUP,
                  "draft": DRAFT_MODEL, "draft-model": DRAFT_MODEL, "draft_model": DRAFT_MODEL}
OFF = ("off", "none", "")

DEFAULT_NUM_TOKENS = 8  # guesses per round at most (vLLM's num_speculative_tokens, llama.cpp's --draft-max)
# a round of the last token and its guesses is one step that attention computes token by token, so
# every row's logits are bit for bit those of a one-token step (csrc/ops/ops.h kTokenByToken)
MAX_NUM_TOKENS = _core.ATTENTION_TOKEN_BY_TOKEN - 1
EMPTY = np.zeros(0, np.int64)


class Drafter(Protocol):
    """Guesses the tokens after token_ids (the prompt and every token kept so far): at most k of them,
    int64, possibly none. token_ids only grows between calls of one sequence."""

    def propose(self, token_ids: np.ndarray, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Speculative:
    """How to speculate. method: "prompt-lookup" or "draft-model" (draft: the draft Model);
    num_tokens: guesses per round at most; ngram_max / ngram_min: the n-gram sizes prompt lookup
    matches, longest first; adaptive: choose k per round from the measured acceptance and step
    costs, and stop guessing when it does not pay (False: always num_tokens when there is a guess).
    drafter: a factory of per-sequence Drafters instead of the built-in ones (method "custom")."""

    method: str = PROMPT_LOOKUP
    draft: Model | None = None
    num_tokens: int = DEFAULT_NUM_TOKENS
    ngram_max: int = 4
    ngram_min: int = 2
    adaptive: bool = True
    drafter: Callable[[], Drafter] | None = None

    def __post_init__(self) -> None:
        method = METHOD_ALIASES.get(self.method, self.method)
        if self.drafter is not None:
            method = "custom"
        elif method not in (PROMPT_LOOKUP, DRAFT_MODEL):
            raise ValueError(f"speculative: unknown method {self.method!r} (prompt-lookup or draft-model)")
        object.__setattr__(self, "method", method)
        for name, lo, hi in (("num_tokens", 1, MAX_NUM_TOKENS), ("ngram_max", 1, 64), ("ngram_min", 1, 64)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"speculative: {name} must be an integer in [{lo}, {hi}], got {value!r}")
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"speculative: ngram_min ({self.ngram_min}) is above ngram_max ({self.ngram_max})")
        if method == DRAFT_MODEL and self.draft is None:
            raise ValueError("speculative: method draft-model needs draft= (a Model, or its path to speculative=)")
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"speculative: adaptive must be True or False, got {self.adaptive!r}")

    def new_drafter(self) -> Drafter:
        if self.drafter is not None:
            return self.drafter()
        if self.method == DRAFT_MODEL:
            return DraftModel(self.draft)
        return PromptLookup(self.ngram_max, self.ngram_min)


def speculative_config(value: Any, model: Model | None = None, *, num_tokens: int | None = None,
                       loader: Callable[[Any], Model] | None = None) -> Speculative | None:
    """`speculative=` as the API takes it: None / False / "off" (no speculation), "prompt-lookup"
    (or "ngram"), a draft Model, a path or Hub id of a draft model (given to `loader`, e.g.
    exaone_cpu.load with the model's options), or a Speculative. num_tokens: guesses per round at
    most. With `model`, a draft model is checked against it (check_draft)."""
    if value is None or value is False or (isinstance(value, str) and value.lower() in OFF):
        return None
    if isinstance(value, Speculative):
        spec = value
    elif isinstance(value, str) and METHOD_ALIASES.get(value.lower()) == PROMPT_LOOKUP:
        spec = Speculative(PROMPT_LOOKUP)
    elif isinstance(value, (str, Path)):
        if loader is None:
            raise ValueError(f"speculative: {value!r} is neither a method (prompt-lookup) nor a loaded draft model; "
                             f"pass a Model, or the path to exaone_cpu.load / Generator")
        spec = Speculative(DRAFT_MODEL, draft=loader(value))
    elif hasattr(value, "forward") and hasattr(value, "new_cache") and hasattr(value, "config"):
        spec = Speculative(DRAFT_MODEL, draft=value)
    else:
        raise ValueError(f"speculative must be 'prompt-lookup', a draft model (Model or path) or a Speculative, "
                         f"got {value!r}")
    if num_tokens is not None:
        spec = dataclasses.replace(spec, num_tokens=num_tokens)
    if model is not None and spec.draft is not None:
        check_draft(model, spec.draft)
    return spec


# ---- the draft model's tokenizer ---------------------------------------------------------------------------


def check_draft(model: Model, draft: Model) -> None:
    """Refuses (ValueError saying why) a draft model whose tokens do not mean what the model's mean:
    another vocabulary size, other bos / eos / pad ids, or (when both were loaded from files with a
    tokenizer) another vocabulary or other special tokens."""
    if draft is model:
        return
    mc, dc = model.config, draft.config
    if getattr(draft, "lm_head", None) is None or dc.architectures[0] != "Exaone4ForCausalLM":
        raise ValueError(f"the draft model must be a causal LM, got {dc.architectures[0]}")
    if mc.vocab_size != dc.vocab_size:
        raise ValueError(f"the draft model's vocabulary has {dc.vocab_size} tokens and the model's {mc.vocab_size}: "
                         f"a draft model must use the model's tokenizer")
    for name in ("bos_token_id", "eos_token_ids", "pad_token_id"):
        if getattr(mc, name) != getattr(dc, name):
            raise ValueError(f"the draft model's {name} is {getattr(dc, name)} and the model's {getattr(mc, name)}: "
                             f"a draft model must use the model's tokenizer")
    mine, theirs = _tokenizer_of(model), _tokenizer_of(draft)
    if mine is None or theirs is None:
        return
    if mine.get_vocab() != theirs.get_vocab():
        a, b = mine.get_vocab(), theirs.get_vocab()
        token = next(t for t in sorted(set(a) | set(b)) if a.get(t) != b.get(t))
        raise ValueError(f"the draft model's tokenizer differs from the model's (token {token!r}: id "
                         f"{b.get(token)} in the draft, {a.get(token)} in the model)")
    if mine.special_tokens_map != theirs.special_tokens_map:
        raise ValueError(f"the draft model's special tokens {theirs.special_tokens_map} differ from the model's "
                         f"{mine.special_tokens_map}")


def _tokenizer_of(model: Model) -> Any:
    source = getattr(model, "source", None)
    if source is None:
        return None
    from .tokenizer import Tokenizer

    try:
        return Tokenizer.from_pretrained(source)
    except (OSError, ValueError):  # a checkpoint without tokenizer files: the config checks are all there is
        return None


# ---- drafters ----------------------------------------------------------------------------------------------


class PromptLookup:
    """Prompt lookup (n-gram) drafting: the tokens that followed the latest earlier occurrence of the
    sequence's last n tokens, for the longest n in [ngram_min, ngram_max] that occurred before; a
    match near the end continues into its own guesses (a repeating pattern repeats).

    An index from each n-gram to where its latest occurrence ended is extended with the new tokens
    only, so a guess costs the same at any length of the history."""

    def __init__(self, ngram_max: int = 4, ngram_min: int = 2):
        self.sizes = range(ngram_max, ngram_min - 1, -1)
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position right after its latest occurrence
        self._indexed = 0  # n-grams ending before this position are in the index

    def _extend(self, token_ids: np.ndarray) -> None:
        if len(token_ids) > len(self._tokens):
            self._tokens.extend(token_ids[len(self._tokens):].tolist())
        tokens, index = self._tokens, self._index
        # an n-gram goes in once the token after it is known: those ending at positions < len - 1
        for end in range(self._indexed, len(tokens) - 1):
            for n in self.sizes:
                if end + 1 >= n:
                    index[tuple(tokens[end + 1 - n : end + 1])] = end + 1
        self._indexed = max(self._indexed, len(tokens) - 1)

    def propose(self, token_ids: np.ndarray, k: int) -> np.ndarray:
        self._extend(token_ids)
        tokens = self._tokens
        n_tokens = len(token_ids)
        for n in self.sizes:
            if n > n_tokens:
                continue
            start = self._index.get(tuple(tokens[n_tokens - n : n_tokens]))
            if start is not None:
                guess: list[int] = []
                for i in range(k):  # the continuation, running into the guess itself past the end
                    j = start + i
                    guess.append(tokens[j] if j < n_tokens else guess[j - n_tokens])
                return np.array(guess, np.int64)
        return EMPTY


class DraftModel:
    """A draft model's greedy continuation, on its own KV cache that follows the sequence: each
    round it is cut back to the tokens kept and fed the ones it has not seen. prefill() feeds a
    prompt ahead of the first round; otherwise a backlog longer than the draft's prefill_chunk is fed
    one chunk per call, with no guess until it is caught up (a server step stays bounded)."""

    def __init__(self, model: Model):
        self.model = model
        self.cache = None
        self._fed: list[int] = []  # the tokens in self.cache (the kept ones, then the last round's guesses)
        self._seen = 0  # len(token_ids) at the last call: token_ids[:_seen] is known to match _fed

    def _sync(self, token_ids: np.ndarray, limit: int | None) -> np.ndarray | None:
        """Cuts the cache back to what is still right and feeds up to `limit` of the tokens after it
        (all but the last, whose logits are returned once everything before it is in)."""
        model, n = self.model, len(token_ids)
        if self.cache is None:
            self.cache = model.new_cache(n + 256)
        # what the cache holds that is still right: the tokens known then, and the guesses kept since
        keep = min(self._seen, self.cache.length)
        while keep < min(self.cache.length, n) and self._fed[keep] == int(token_ids[keep]):
            keep += 1
        keep = min(keep, n - 1)  # the last token's logits are needed
        if keep < self.cache.length and not self.cache.truncate(keep):
            self.cache, keep = model.new_cache(n + 256), 0
        del self._fed[keep:]
        self._seen = keep
        feed = token_ids[keep:] if limit is None else token_ids[keep : keep + limit]
        self._fed.extend(feed.tolist())
        logits = model.forward(feed, self.cache)
        self._seen = keep + len(feed)
        return logits if self._seen == n else None

    def prefill(self, token_ids: np.ndarray) -> None:
        if len(token_ids) > 1 and len(token_ids) <= self.model.config.max_position_embeddings:
            self._sync(token_ids[:-1], None)

    def propose(self, token_ids: np.ndarray, k: int) -> np.ndarray:
        model = self.model
        n = len(token_ids)
        if n + k > model.config.max_position_embeddings:
            return EMPTY
        logits = self._sync(token_ids, model.prefill_chunk)
        if logits is None:  # still catching up
            return EMPTY
        guess = []
        for i in range(k):
            guess.append(int(np.argmax(logits)))
            if i + 1 < k:
                logits = model.forward(guess[-1:], self.cache)
                self._fed.append(guess[-1])
        return np.array(guess, np.int64)


# ---- one sequence's speculation ----------------------------------------------------------------------------

PRIOR_TRIALS, PRIOR_ACCEPT = 1.0, 0.6  # a new sequence guesses as if 60 % of guesses were kept (one guess's weight)
ACCEPT_DECAY = 0.9  # per guess looked at: the acceptance follows the text as it changes
PRIOR_EXTRA = 0.1  # cost of one more position in a forward, relative to a one-token step, until measured
MIN_GAIN = 1.02  # guess only when the expected tokens per unit of time beat plain decoding by this
MAX_BACKOFF = 64  # steps between trial guesses while guessing does not pay
PROBE_ACCEPT = 0.8  # trial guesses only where guessing would pay at this acceptance


class Speculator:
    """One sequence's speculation: its drafter, the k of each round, and the counts.

        draft = spec.draft(token_ids, room)        # 0..k guesses (room: tokens it may add after the next)
        ... forward of [last] + draft, timed(len(draft) + 1, seconds)
        spec.verified(len(draft), kept)            # how many guesses the pipeline kept
    """

    def __init__(self, config: Speculative, prefill_chunk: int):
        self.config = config
        self.drafter = config.new_drafter()
        self.max_tokens = min(config.num_tokens, prefill_chunk - 1)  # a round is one forward chunk
        self.drafted = 0  # guesses checked
        self.accepted = 0  # guesses kept
        self.rounds = 0
        self._trials, self._hits = PRIOR_TRIALS, PRIOR_TRIALS * PRIOR_ACCEPT
        self._step: float | None = None  # seconds of a one-token forward
        self._extra: float | None = None  # seconds of each further position of a forward
        self._draft_token: float = 0.0  # seconds the drafter takes per guess
        self._idle = 0  # steps without guessing
        self._backoff = 1

    @property
    def acceptance(self) -> float:
        """The measured share of guesses kept (recent rounds weigh more)."""
        return self._hits / self._trials

    def _relative_costs(self, step: float | None, extra: float | None) -> tuple[float, float]:
        """(one more position in the forward, one guess of the drafter), relative to a one-token step."""
        step = self._step if step is None else step
        extra = self._extra if extra is None else extra
        if step is None or step <= 0:
            return PRIOR_EXTRA, 0.0 if self._draft_token == 0.0 else PRIOR_EXTRA
        return PRIOR_EXTRA if extra is None else extra / step, self._draft_token / step

    def choose_k(self, step_seconds: float | None = None, extra_seconds: float | None = None) -> int:
        """Guesses for this round: the k in 1..max_tokens with the most expected tokens per unit of
        time (acceptance a per guess: 1 + a + ... + a^k tokens for 1 + k * (extra + draft) steps),
        or 0 when none beats plain decoding by MIN_GAIN. step_seconds / extra_seconds: what a token's
        step and one more row cost, when the caller measures them (the server's batched step: a
        token's share of it), instead of this sequence's own timings."""
        if not self.config.adaptive:
            return self.max_tokens
        return self._best_k(self.acceptance, *self._relative_costs(step_seconds, extra_seconds))

    def _best_k(self, acceptance: float, extra: float, draft: float) -> int:
        a = min(acceptance, 0.999)
        best_k, best = 0, MIN_GAIN
        tokens = 1.0
        for k in range(1, self.max_tokens + 1):
            tokens += a**k
            gain = tokens / (1.0 + k * (extra + draft))
            if gain > best:
                best_k, best = k, gain
        return best_k

    def draft(self, token_ids: np.ndarray, room: int, *, step_seconds: float | None = None,
              extra_seconds: float | None = None) -> np.ndarray:
        """0..k guesses after token_ids (room: how many tokens the sequence may add after the next one)."""
        k = min(self.choose_k(step_seconds, extra_seconds), room)
        if k <= 0 and room > 0 and self.config.adaptive:
            # guessing does not pay at the measured acceptance; would it at a good one (the costs allow
            # it)? Then a one-token trial now and then, in case the text turned quotable
            if self._best_k(PROBE_ACCEPT, *self._relative_costs(step_seconds, extra_seconds)) == 0:
                return EMPTY
            self._idle += 1
            if self._idle < self._backoff:
                return EMPTY
            k = 1
        if k <= 0:
            return EMPTY
        started = time.perf_counter()
        guess = np.asarray(self.drafter.propose(token_ids, k), np.int64).reshape(-1)[:k]
        if isinstance(self.drafter, DraftModel):
            seconds = (time.perf_counter() - started) / k
            self._draft_token = seconds if self._draft_token == 0.0 else 0.8 * self._draft_token + 0.2 * seconds
        return guess

    def prefill(self, prompt: np.ndarray) -> None:
        """Lets a drafter that keeps state (a draft model) take in the prompt before the first round."""
        prefill = getattr(self.drafter, "prefill", None)
        if prefill is not None:
            prefill(prompt)

    def timed(self, positions: int, seconds: float) -> None:
        """A forward of `positions` tokens after the prompt took `seconds`."""
        if positions == 1:
            self._step = seconds if self._step is None else 0.8 * self._step + 0.2 * seconds
        else:
            if self._step is None:  # every step so far verified guesses: a first estimate, refined by plain steps
                self._step = seconds / (1 + PRIOR_EXTRA * (positions - 1))
            extra = max(seconds - self._step, 0.0) / (positions - 1)
            self._extra = extra if self._extra is None else 0.8 * self._extra + 0.2 * extra

    def end_round(self, drafted: int, kept: int, cache: Any, length: int) -> None:
        """A round checked `drafted` guesses and kept the first `kept`: counted, and the sequence's KV
        cache cut back to its first `length` tokens (every token but the last picked)."""
        self.verified(drafted, kept)
        if not cache.truncate(length):  # a round fits in one prefill chunk, a ring's slack: cannot happen
            raise RuntimeError("speculative decoding could not roll the KV cache back")

    def verified(self, drafted: int, kept: int) -> None:
        """A round checked `drafted` guesses and kept the first `kept`."""
        self.rounds += 1
        self.drafted += drafted
        self.accepted += kept
        trials = kept + (1 if kept < drafted else 0)  # the guesses the pipeline looked at
        decay = ACCEPT_DECAY**trials
        self._trials = decay * self._trials + trials
        self._hits = decay * self._hits + kept
        self._idle = 0
        if kept == 0:
            self._backoff = min(2 * self._backoff, MAX_BACKOFF)
        else:
            self._backoff = 1
