"""A plain numpy sampler written from the semantics in docs/sampling.md, for the C++ sampler to match.

Deliberately simple: full sorts, float32 arithmetic where the spec says float32, float64 masses.
"""

from __future__ import annotations

import numpy as np


def penalised(logits, *, prompt=(), output=(), repetition_penalty=1.0, presence_penalty=0.0,
              frequency_penalty=0.0, logit_bias=None, banned=(), allowed=None):
    """Steps 1-3: the logits after penalties, bias and masks (float32)."""
    w = np.array(logits, dtype=np.float32, copy=True)
    output = np.asarray(output, np.int64)
    seen = np.unique(np.concatenate([np.asarray(prompt, np.int64), output]))
    if repetition_penalty != 1.0 and seen.size:
        rp = np.float32(repetition_penalty)
        w[seen] = np.where(w[seen] > 0, w[seen] / rp, w[seen] * rp)
    if (presence_penalty or frequency_penalty) and output.size:
        ids, counts = np.unique(output, return_counts=True)
        w[ids] = w[ids] - (np.float32(presence_penalty) + np.float32(frequency_penalty) * counts.astype(np.float32))
    for t, b in (logit_bias or {}).items():
        w[t] = w[t] + np.float32(b)
    w[np.asarray(banned, np.int64)] = -np.inf
    if allowed is not None:
        bits = np.unpackbits(np.asarray(allowed, np.uint32).view(np.uint8), bitorder="little")[: w.size]
        w[bits == 0] = -np.inf
    return w


def kept_and_weights(w, *, temperature, top_k=0, top_p=1.0, min_p=0.0):
    """Step 4 for temperature > 0: (kept mask, unnormalised weights e) over the vocabulary."""
    w = np.asarray(w, np.float32)
    wmax = w.max()
    inv_t = np.float32(min(1.0 / temperature, 1e30))
    with np.errstate(invalid="ignore", over="ignore"):
        z = (w - wmax) * inv_t
    z = np.where(np.isnan(z), -np.inf, z).astype(np.float32)  # -inf - max
    e = np.where(z >= np.float32(-87.0), np.exp(np.maximum(z, np.float32(-87.0))), np.float32(0)).astype(np.float32)
    keep = np.ones(w.size, bool)
    if 0 < top_k < w.size:
        kth = np.sort(w)[-top_k]
        keep &= w >= kth
    if top_p < 1.0:
        ids = np.flatnonzero(keep)
        mass = e[ids].astype(np.float64).sum()
        order = ids[np.argsort(-e[ids], kind="stable")]
        running = np.cumsum(e[order].astype(np.float64))
        n = int(np.argmax(running >= top_p * mass)) if (running >= top_p * mass).any() else len(order) - 1
        keep &= e >= e[order[n]]
    if min_p > 0.0:
        keep &= e >= np.float32(min_p)
    return keep, e


def probabilities(w, *, temperature, **filters):
    """The distribution drawn from (one-hot at the first maximum when temperature is 0)."""
    probs = np.zeros(len(w))
    if temperature == 0:
        probs[int(np.argmax(w))] = 1.0
        return probs
    keep, e = kept_and_weights(w, temperature=temperature, **filters)
    probs[keep] = e[keep].astype(np.float64)
    return probs / probs.sum()


def draw(w, u, *, temperature, **filters):
    """Step 5: the first kept token, in id order, whose running mass exceeds u * the kept mass."""
    if temperature == 0:
        return int(np.argmax(w))
    keep, e = kept_and_weights(w, temperature=temperature, **filters)
    ids = np.flatnonzero(keep & (e > 0))
    running = np.cumsum(e[ids].astype(np.float64))
    hit = np.flatnonzero(running > u * running[-1])
    return int(ids[hit[0]] if hit.size else ids[-1])


def log_softmax(logits):
    x = np.asarray(logits, np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))
