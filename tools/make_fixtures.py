#!/usr/bin/env python3
"""Generate the tiny random EXAONE 4.0 test fixtures under ``tests/fixtures/``.

What it does
------------
Builds small, randomly initialised EXAONE 4.0 checkpoints with Hugging Face
``transformers`` (its ``Exaone4*`` classes), saves them with
``save_pretrained`` (safetensors) and stores transformers' own float32,
eager-attention reference outputs next to them in ``reference.npz``:

==================  =========================================================
``tiny-1.2b``       Exaone4ForCausalLM shaped like EXAONE-4.0-1.2B: all layers
                    full attention, RoPE everywhere (llama3 scaling), tied
                    embeddings, float32, single ``model.safetensors``.
``tiny-32b``        Exaone4ForCausalLM shaped like the hybrid EXAONE-4.0-32B:
                    sliding window 4, layer pattern LLLG (global layers use no
                    RoPE), GQA 4:1, untied ``lm_head``, float32, sharded
                    (``model-0000N-of-0000M.safetensors`` + index).
``tiny-1.2b-bf16``  tiny-1.2b config, other seed, bfloat16 weights; references
                    are computed in float32 from the bf16-valued weights.
``tiny-seqcls``     Exaone4ForSequenceClassification (3 labels), batch of two
                    rows, row 1 right-padded with pad_token_id 0.
``tiny-tokcls``     Exaone4ForTokenClassification (5 BIO labels), hybrid
                    (sliding + global) config.
``tiny-qa``         Exaone4ForQuestionAnswering (start/end logits).
==================  =========================================================

The three task-head fixtures use 2 layers and intermediate_size 96 (otherwise
the same widths) to keep tests/fixtures/ at about 4 MB.

The weights are NOT transformers' default init (std 0.02 gives near-uniform
logits): projections are N(0, 1/fan_in), embeddings N(0, 0.3^2) (so the layers,
not the tied input embedding, dominate the residual stream; std 1 made greedy
decoding just copy the last token), every RMSNorm weight is U(0.5, 1.5).  For
the causal-LM fixtures the seed is searched (deterministically, from a fixed
base seed) until the greedy continuation has a top-1/top-2 logit gap
>= 2e-3 * max|logit| at every step, has >= 6 distinct ids with no id repeated
more than 3 times in a row, and never picks a special id (pad/bos/eos) -- so
eos never wants to stop generation and ``min_new_tokens`` changes nothing.
Each causal fixture is also checked for: cached generate == uncached forward,
llama3 scaling (and, for hybrid, the sliding window) measurably changing
``logits2``.

All reference outputs are produced by re-loading the *saved* checkpoint with
``from_pretrained(dtype=torch.float32, attn_implementation="eager")`` so they
describe exactly the bytes that are on disk.

How to run
----------
torch and transformers are needed only for this script (never by the tests)::

    /work/refvenv/bin/python tools/make_fixtures.py

It deletes the fixture directories listed above and regenerates them (plus
nothing else) under ``tests/fixtures/``.  The output is deterministic.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import sys
import warnings
import zipfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import (
    Exaone4Config,
    Exaone4ForCausalLM,
    Exaone4ForQuestionAnswering,
    Exaone4ForSequenceClassification,
    Exaone4ForTokenClassification,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

PROMPT_LEN = 20  # > 2 * sliding_window
PROMPT2_LEN = 40  # goes well past the window
NEW_TOKENS = 16
MARGIN_REL = 2e-3  # required top1-top2 gap, relative to max|logit| (brief: >= 1e-3)
MIN_DISTINCT = 6  # greedy continuation must contain at least this many ids ...
MAX_RUN = 3  # ... and never repeat one id more than this many times in a row
EMBED_STD = 0.3  # < 1 so the layers, not the (tied) input embedding, dominate
FIRST_REGULAR_ID = 3  # ids 0/1/2 are pad/bos/eos; prompts avoid them

ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 16.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=160,
    num_attention_heads=4,
    head_dim=32,  # deliberately != hidden_size / num_attention_heads
    hidden_act="silu",
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=1e6,
    rope_scaling=dict(ROPE_SCALING),
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    attention_dropout=0.0,
)


def config_1p2b(**over) -> Exaone4Config:
    """EXAONE-4.0-1.2B shape: every layer global, no sliding window."""
    kw = dict(COMMON)
    kw.update(
        num_hidden_layers=3,
        num_key_value_heads=2,
        sliding_window=None,
        sliding_window_pattern=None,
        layer_types=["full_attention"] * 3,
        tie_word_embeddings=True,
    )
    kw.update(over)
    return Exaone4Config(**kw)


def config_32b(**over) -> Exaone4Config:
    """EXAONE-4.0-32B shape: LLLG hybrid, sliding window 4, GQA 4:1, untied."""
    kw = dict(COMMON)
    kw.update(
        num_hidden_layers=4,
        num_key_value_heads=1,
        sliding_window=4,
        sliding_window_pattern="LLLG",
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        tie_word_embeddings=False,
    )
    kw.update(over)
    return Exaone4Config(**kw)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def check_rope(cfg: Exaone4Config) -> dict:
    """Assert that the llama3 scaling leaves some frequencies alone, divides
    some by `factor` and interpolates at least one (the smooth band)."""
    dim = cfg.head_dim
    theta = cfg.rope_parameters["rope_theta"]
    base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    factor = cfg.rope_parameters["factor"]
    unchanged = torch.isclose(scaled, base, rtol=1e-6, atol=0)
    divided = torch.isclose(scaled, base / factor, rtol=1e-6, atol=0)
    smooth = ~(unchanged | divided)
    counts = {
        "unchanged": int(unchanged.sum()),
        "divided": int(divided.sum()),
        "smooth": int(smooth.sum()),
    }
    assert all(v > 0 for v in counts.values()), counts
    return counts


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Deterministic, deliberately 'loud' random init (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):  # every RMSNorm incl. q_norm/k_norm/final norm
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        elif name.endswith("embed_tokens.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * EMBED_STD)
        elif name == "lm_head.weight":
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif name.endswith(".bias"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif name.endswith(".weight") and p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"unexpected parameter {name}")


def random_ids(seed: int, n: int, vocab: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(FIRST_REGULAR_ID, vocab, size=n, dtype=np.int64)


def margins(logits: np.ndarray) -> np.ndarray:
    """Per-row (top1 - top2) / max|logit|."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) / np.abs(logits).max(axis=-1)


@torch.no_grad()
def forward_logits(model, ids: np.ndarray) -> np.ndarray:
    out = model(input_ids=torch.from_numpy(ids)[None])
    return out.logits[0].float().numpy()


@torch.no_grad()
def greedy(model, prompt: np.ndarray):
    """transformers' own cached greedy generation; raw (pre-processor) logits."""
    out = model.generate(
        torch.from_numpy(prompt)[None],
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        return_dict_in_generate=True,
        output_logits=True,
        use_cache=True,
    )
    toks = out.sequences[0, len(prompt):].numpy().astype(np.int64)
    logits = torch.stack(out.logits, 0)[:, 0].float().numpy()
    return toks, logits


def greedy_problems(toks: np.ndarray, logits: np.ndarray) -> tuple[list[str], float]:
    """Reasons to reject a greedy continuation (empty list: acceptable), min margin."""
    m = float(margins(logits).min())
    problems = []
    if len(toks) != NEW_TOKENS:
        problems.append(f"only {len(toks)} tokens")
    if m < MARGIN_REL:
        problems.append(f"margin {m:.2e}")
    runs = [len(list(grp)) for _, grp in itertools.groupby(toks.tolist())]
    if len(set(toks.tolist())) < MIN_DISTINCT or max(runs) > MAX_RUN:
        problems.append(f"degenerate continuation {toks.tolist()}")
    if (toks < FIRST_REGULAR_ID).any():
        problems.append(f"special id generated {toks.tolist()}")
    if not np.array_equal(toks, logits.argmax(-1)):
        problems.append("greedy != argmax(raw logits) (eos suppressed by min_new_tokens?)")
    return problems, m


def load_f32(cls, path):
    model, info = cls.from_pretrained(
        path,
        dtype=torch.float32,
        attn_implementation="eager",
        output_loading_info=True,
    )
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading {path}: {bad}"
    model.eval()
    assert model.config._attn_implementation == "eager"
    return model


@torch.no_grad()
def rel_change(path, ids, ref, **cfg_over) -> float:
    """max|logits - ref| / max|ref| for the saved checkpoint under a modified config."""
    cfg = Exaone4Config.from_pretrained(path)
    for k, v in cfg_over.items():
        setattr(cfg, k, v)
    model = Exaone4ForCausalLM.from_pretrained(
        path, config=cfg, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    out = forward_logits(model, ids)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def tensor_names(path: str) -> dict[str, str]:
    names = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(path, f), "pt") as sf:
                for k in sf.keys():
                    names[k] = f
    return names


def save_npz(path: str, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-reproducible (fixed zip timestamps, sorted keys)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def fresh_dir(name: str) -> str:
    path = os.path.join(FIXTURES, name)
    if os.path.exists(path):
        shutil.rmtree(path)
    return path


SUMMARY: dict[str, dict] = {}


# --------------------------------------------------------------------------
# causal LM fixtures
# --------------------------------------------------------------------------


def make_causal(name: str, make_cfg, base_seed: int, dtype: torch.dtype, shard: str | None):
    cfg = make_cfg()
    cfg._attn_implementation = "eager"
    check = check_rope(cfg)
    vocab = cfg.vocab_size

    # --- deterministic seed search (in memory, on the weights as they will be stored)
    for seed in range(base_seed, base_seed + 200):
        torch.manual_seed(seed)
        model = Exaone4ForCausalLM(cfg)
        init_weights(model, seed)
        if dtype != torch.float32:
            model = model.to(dtype).to(torch.float32)
        model.eval()
        prompt = random_ids(seed, PROMPT_LEN, vocab)
        problems, m = greedy_problems(*greedy(model, prompt))
        if not problems:
            break
        print(f"  [{name}] seed {seed} rejected: {'; '.join(problems)}")
    else:
        raise RuntimeError(f"{name}: no acceptable seed found")

    # --- save in the target dtype
    path = fresh_dir(name)
    to_save = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    to_save.save_pretrained(path, **kwargs)
    del model, to_save

    # --- reference outputs from the re-loaded checkpoint
    model = load_f32(Exaone4ForCausalLM, path)
    prompt2 = random_ids(seed + 10_000, PROMPT2_LEN, vocab)
    logits = forward_logits(model, prompt)
    logits2 = forward_logits(model, prompt2)
    toks, glogits = greedy(model, prompt)
    problems, m = greedy_problems(toks, glogits)
    assert not problems, problems

    # cross-check: cached generation == uncached full forward on prompt+greedy
    full = np.concatenate([prompt, toks[:-1]])
    ref = forward_logits(model, full)[PROMPT_LEN - 1:]
    err = np.abs(ref - glogits).max() / np.abs(glogits).max()
    assert err < 1e-4, f"{name}: cached vs uncached logits differ ({err:.2e})"
    assert np.array_equal(ref.argmax(-1), toks)
    assert np.abs(logits[-1] - glogits[0]).max() <= 1e-4 * np.abs(glogits[0]).max()

    # sanity: the features under test really change the numbers
    sensitivity = {}
    rope_default = {"rope_type": "default", "rope_theta": cfg.rope_parameters["rope_theta"]}
    sensitivity["llama3_vs_default_rope"] = rel_change(path, prompt2, logits2, rope_parameters=rope_default)
    if cfg.sliding_window is not None:
        sensitivity["window_vs_no_window"] = rel_change(path, prompt2, logits2, sliding_window=10_000)
    for k, v in sensitivity.items():
        assert v > 1e-2, f"{name}: {k} only changes logits2 by {v:.2e}"

    save_npz(
        os.path.join(path, "reference.npz"),
        prompt=prompt.astype(np.int64),
        logits=logits.astype(np.float32),
        greedy=toks.astype(np.int64),
        greedy_logits=glogits.astype(np.float32),
        prompt2=prompt2.astype(np.int64),
        logits2=logits2.astype(np.float32),
    )

    names = tensor_names(path)
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in names, "tied checkpoint must not store lm_head.weight"
    else:
        assert "lm_head.weight" in names
    if shard:
        shards = sorted({f for f in names.values()})
        assert len(shards) >= 2, shards
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    else:
        assert set(names.values()) == {"model.safetensors"}
    assert os.path.exists(os.path.join(path, "generation_config.json"))

    SUMMARY[name] = {
        "seed": seed,
        "rope_bands": check,
        "min_greedy_margin": m,
        "min_prompt_margin": float(margins(logits).min()),
        "greedy": toks.tolist(),
        "max_abs_logit": float(np.abs(logits).max()),
        "files": sorted(set(names.values())),
        "n_tensors": len(names),
        "cached_vs_uncached_rel_err": float(err),
        "logits2_rel_change_if_feature_ignored": sensitivity,
    }


# --------------------------------------------------------------------------
# task-head fixtures
# --------------------------------------------------------------------------


def build_head(cls, cfg, seed):
    torch.manual_seed(seed)
    cfg._attn_implementation = "eager"
    model = cls(cfg)
    init_weights(model, seed)
    model.eval()
    return model


def head_names(path):
    names = tensor_names(path)
    heads = sorted(k for k in names if not k.startswith(("model.", "transformer.")))
    prefixes = sorted({k.split(".", 1)[0] for k in names if k not in heads})
    return names, heads, prefixes


@torch.no_grad()
def make_seqcls(seed=4000):
    name = "tiny-seqcls"
    id2label = {0: "negative", 1: "neutral", 2: "positive"}
    cfg = config_1p2b(
        num_hidden_layers=2,
        intermediate_size=96,
        layer_types=["full_attention"] * 2,
        num_labels=3,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = build_head(Exaone4ForSequenceClassification, cfg, seed)
    path = fresh_dir(name)
    model.save_pretrained(path)
    model = load_f32(Exaone4ForSequenceClassification, path)

    pad = cfg.pad_token_id
    n_pad = 5
    ids = np.stack([random_ids(seed, PROMPT_LEN, cfg.vocab_size),
                    random_ids(seed + 1, PROMPT_LEN, cfg.vocab_size)])
    ids[1, PROMPT_LEN - n_pad:] = pad
    assert (ids[0] != pad).all() and (ids[1, : PROMPT_LEN - n_pad] != pad).all()
    t = torch.from_numpy(ids)
    logits = model(input_ids=t, attention_mask=(t != pad).long()).logits.numpy()
    logits_nomask = model(input_ids=t).logits.numpy()
    row1 = model(input_ids=t[1:, : PROMPT_LEN - n_pad]).logits.numpy()[0]
    row0 = model(input_ids=t[:1]).logits.numpy()[0]
    assert np.allclose(logits[1], row1, atol=1e-5), (logits[1], row1)
    assert np.allclose(logits[0], row0, atol=1e-5)
    assert np.allclose(logits, logits_nomask, atol=1e-5)  # right padding + causal
    save_npz(
        os.path.join(path, "reference.npz"),
        input_ids=ids.astype(np.int64),
        logits=logits.astype(np.float32),
        logits_row1_unpadded=row1.astype(np.float32),
    )
    names, heads, prefixes = head_names(path)
    SUMMARY[name] = {"seed": seed, "head_tensors": heads, "base_prefix": prefixes,
                     "files": sorted(set(names.values())), "logits": logits.tolist()}


@torch.no_grad()
def make_tokcls(seed=5000):
    name = "tiny-tokcls"
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    id2label = dict(enumerate(labels))
    # hybrid config (sliding + global layer) to cover that path in a task head
    cfg = config_32b(
        num_hidden_layers=2,
        intermediate_size=96,
        sliding_window_pattern="LG",
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=False,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = build_head(Exaone4ForTokenClassification, cfg, seed)
    path = fresh_dir(name)
    model.save_pretrained(path)
    model = load_f32(Exaone4ForTokenClassification, path)
    ids = random_ids(seed, PROMPT_LEN, cfg.vocab_size)
    logits = model(input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()
    save_npz(
        os.path.join(path, "reference.npz"),
        input_ids=ids.astype(np.int64),
        logits=logits.astype(np.float32),
    )
    names, heads, prefixes = head_names(path)
    SUMMARY[name] = {"seed": seed, "head_tensors": heads, "base_prefix": prefixes,
                     "files": sorted(set(names.values())),
                     "argmax_labels": [labels[i] for i in logits.argmax(-1)]}


@torch.no_grad()
def make_qa(seed=6000):
    name = "tiny-qa"
    cfg = config_1p2b(num_hidden_layers=2, intermediate_size=96,
                      layer_types=["full_attention"] * 2)
    model = build_head(Exaone4ForQuestionAnswering, cfg, seed)
    path = fresh_dir(name)
    model.save_pretrained(path)
    model = load_f32(Exaone4ForQuestionAnswering, path)
    ids = random_ids(seed, PROMPT_LEN, cfg.vocab_size)
    out = model(input_ids=torch.from_numpy(ids)[None])
    save_npz(
        os.path.join(path, "reference.npz"),
        input_ids=ids.astype(np.int64),
        start_logits=out.start_logits[0].numpy().astype(np.float32),
        end_logits=out.end_logits[0].numpy().astype(np.float32),
    )
    names, heads, prefixes = head_names(path)
    SUMMARY[name] = {"seed": seed, "head_tensors": heads, "base_prefix": prefixes,
                     "files": sorted(set(names.values()))}


# --------------------------------------------------------------------------


def main() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_causal("tiny-1.2b", config_1p2b, 1000, torch.float32, None)
        make_causal("tiny-32b", config_32b, 2000, torch.float32, "400KB")
        make_causal("tiny-1.2b-bf16", config_1p2b, 3000, torch.bfloat16, None)
        make_seqcls()
        make_tokcls()
        make_qa()
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}")
    for name, info in SUMMARY.items():
        print(f"== {name}")
        for k, v in info.items():
            print(f"   {k}: {json.dumps(v, default=str)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
