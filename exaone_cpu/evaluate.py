"""Quality measures of a model on a token sequence: perplexity, and against a reference model the
KL divergence and top-1 agreement of the next-token distributions.

The math takes logits arrays ([T, vocab], any float dtype) and works in float64, so it can be
checked against hand-computed values; `evaluate` drives one or two models over a long sequence in
windows of `ctx` tokens:

    tokens   t0 t1 t2 ... t(ctx-1) | t(ctx) ...          windows do not overlap
    scored      ^  ^  ...  ^       |        ^ ...        position i predicts t(i+1) from t0..ti

Every token of a window but its first is scored, from the tokens before it in the same window
(the first token of each window has no context, so it is only conditioned on).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

_ROWS = 64  # logits rows scored at once in evaluate()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, in float64, stable for large or shifted logits."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    if not np.all(np.isfinite(m)):
        raise ValueError("logits contain NaN or infinite values")
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def token_nll(logits: np.ndarray, targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Negative log-likelihood (nats) [T] of targets[t] under the distribution logits[t] [T, vocab]."""
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [T, vocab] and targets [T], got {logits.shape} and {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]})")
    logp = log_softmax(logits)
    return -logp[np.arange(len(targets)), targets]


def perplexity(nll: np.ndarray) -> float:
    """exp(mean NLL); nan for no tokens."""
    nll = np.asarray(nll, dtype=np.float64)
    return float(math.exp(nll.mean())) if nll.size else float("nan")


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(P_ref || P) (nats) per row [T]: sum_v p_ref(v) (log p_ref(v) - log p(v))."""
    ref_logits, logits = np.asarray(ref_logits), np.asarray(logits)
    if ref_logits.shape != logits.shape:
        raise ValueError(f"reference logits {ref_logits.shape} and logits {logits.shape} differ in shape")
    logp_ref = log_softmax(ref_logits)
    logp = log_softmax(logits)
    kl = np.sum(np.exp(logp_ref) * (logp_ref - logp), axis=-1)
    return np.maximum(kl, 0.0)  # rounding can leave -1e-17 for identical distributions


def top1_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per row [T] (bool): whether both pick the same most likely token."""
    ref_logits, logits = np.asarray(ref_logits), np.asarray(logits)
    if ref_logits.shape != logits.shape:
        raise ValueError(f"reference logits {ref_logits.shape} and logits {logits.shape} differ in shape")
    return np.argmax(ref_logits, axis=-1) == np.argmax(logits, axis=-1)


def windows(n_tokens: int, ctx: int) -> list[tuple[int, int]]:
    """[start, end) of the non-overlapping windows of at most ctx tokens; a last window of a single
    token (nothing to score) is dropped."""
    if ctx < 2:
        raise ValueError(f"ctx must be at least 2 (one token of context, one to predict), got {ctx}")
    return [(s, min(s + ctx, n_tokens)) for s in range(0, n_tokens, ctx) if min(s + ctx, n_tokens) - s >= 2]


@dataclass
class EvalResult:
    tokens: int  # tokens fed to the model
    scored: int  # predictions scored
    ctx: int
    windows: int
    nll: float  # mean negative log-likelihood (nats/token)
    perplexity: float
    seconds: float  # time spent in the model(s)
    ref_nll: float | None = None
    ref_perplexity: float | None = None
    kl_mean: float | None = None  # mean KL(ref || model) per scored token (nats)
    kl_max: float | None = None
    kl_p99: float | None = None
    top1_agreement: float | None = None  # fraction of scored tokens
    per_window: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model, token_ids: Sequence[int] | np.ndarray, *, ctx: int = 512, ref_model=None) -> EvalResult:
    """Perplexity of model on token_ids, scored in windows of ctx tokens (see the module doc); with
    ref_model, also KL(ref || model) and top-1 agreement on the same positions."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size < 2:
        raise ValueError(f"need at least 2 tokens to evaluate, got {ids.size}")
    if ref_model is not None and ref_model.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"the reference model's vocab ({ref_model.config.vocab_size}) differs from the "
                         f"model's ({model.config.vocab_size})")
    nll, ref_nll, kl, agree, per_window = [], [], [], [], []
    seconds = 0.0
    spans = windows(ids.size, ctx)
    for start, end in spans:
        chunk = ids[start:end]
        targets = chunk[1:]
        t0 = time.perf_counter()
        logits = model.logits(chunk)[:-1]  # [len - 1, vocab]: position i predicts chunk[i + 1]
        ref_logits = ref_model.logits(chunk)[:-1] if ref_model is not None else None
        seconds += time.perf_counter() - t0
        w_nll, w_ref, w_kl, w_agree = [], [], [], []
        for r in range(0, len(targets), _ROWS):  # float64 temporaries of _ROWS rows at a time
            rows = slice(r, r + _ROWS)
            w_nll.append(token_nll(logits[rows], targets[rows]))
            if ref_logits is not None:
                w_ref.append(token_nll(ref_logits[rows], targets[rows]))
                w_kl.append(kl_divergence(ref_logits[rows], logits[rows]))
                w_agree.append(top1_agreement(ref_logits[rows], logits[rows]))
        nll.append(np.concatenate(w_nll))
        entry = {"start": start, "end": end, "nll": float(nll[-1].mean())}
        if ref_logits is not None:
            ref_nll.append(np.concatenate(w_ref))
            kl.append(np.concatenate(w_kl))
            agree.append(np.concatenate(w_agree))
            entry.update(kl_mean=float(kl[-1].mean()), top1_agreement=float(agree[-1].mean()))
        per_window.append(entry)
    all_nll = np.concatenate(nll)
    result = EvalResult(tokens=int(ids.size), scored=int(all_nll.size), ctx=ctx, windows=len(spans),
                        nll=float(all_nll.mean()), perplexity=perplexity(all_nll), seconds=seconds,
                        per_window=per_window)
    if ref_model is not None:
        r, k, a = np.concatenate(ref_nll), np.concatenate(kl), np.concatenate(agree)
        result.ref_nll = float(r.mean())
        result.ref_perplexity = perplexity(r)
        result.kl_mean = float(k.mean())
        result.kl_max = float(k.max())
        result.kl_p99 = float(np.percentile(k, 99))
        result.top1_agreement = float(a.mean())
    return result
