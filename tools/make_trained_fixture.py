#!/usr/bin/env python3
"""Generate ``tests/fixtures/tiny-trained``: a tiny EXAONE 4.0 causal LM that has been *trained*.

Why
---
The other fixtures (tools/make_fixtures.py) are random models with deliberately loud weights.
They amplify every perturbation (rounding the weights to bf16 alone flips 1 top-1 token in 60),
so they cannot tell whether int8 quantization is good enough.  A trained model has peaked,
calibrated next-token distributions and weights of realistic scale, like a real checkpoint; the
quantization quality targets are judged on this fixture (tests/test_quant_model.py).

What it does
------------
* builds an Exaone4ForCausalLM shaped like EXAONE-4.0-1.2B in miniature (``config_1p2b`` of
  make_fixtures.py: every layer full attention, RoPE theta 1e6 with llama3 scaling, tied
  embeddings, 4 query / 2 KV heads of head_dim 32) with vocab 256, hidden 128, intermediate 256,
  2 layers, max_position_embeddings 128, in transformers' default init (N(0, 0.02^2));
* trains it on byte-level text (token id = byte value) for 1000 AdamW steps (batch 16 x 128
  bytes, lr 3e-3 with 50 warm-up steps and a cosine decay to 3e-4, weight decay 0.1 on the
  matrices, gradient clipping 1.0).  The text, read at run time and never copied into the
  repository, is the EXAONE-4.0-1.2B model card and licence in ``../shared/exaone-4.0-1.2b/``
  (README.md, LICENSE) plus nine standard licence texts from ``/usr/share/common-licenses``
  (Debian's base-files), 193 KB in all.  Every file's SHA-256 is checked.  Two passages are held
  out of training: section 5 ("No Warranty") of the EXAONE licence and the "Limitation" section
  of the model card.  With the model card and licence alone (48 KB) the model overfitted within
  a few hundred steps (held-out loss rising while the training loss fell) and its held-out
  predictions were overconfident, unlike a real LM;
* saves it with ``save_pretrained`` (float32 safetensors) and writes ``reference.npz`` with
  transformers' float32 eager-attention outputs of the re-loaded checkpoint, as the other causal
  fixtures do: ``prompt``/``logits`` (96 bytes of the held-out licence section),
  ``prompt2``/``logits2`` (96 bytes of the held-out model-card section) and ``greedy``/
  ``greedy_logits`` (cached greedy generation of 16 tokens after ``prompt``).

Training runs on one thread with fixed seeds and deterministic algorithms: on one machine the
output is byte-for-byte reproducible.  The script prints the training and held-out loss and, for
the two prompts, the mean top-1 probability, next-byte loss and accuracy.

How to run
----------
torch and transformers are needed only for this script (never by the tests)::

    /work/refvenv/bin/python tools/make_trained_fixture.py [--corpus DIR] [--licenses DIR]

It takes about 2 minutes on one core and replaces ``tests/fixtures/tiny-trained/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import transformers
from transformers import Exaone4ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# same config family, reference writer and helpers as the other fixtures
from make_fixtures import (
    FIXTURES,
    MARGIN_REL,
    ROOT,
    check_rope,
    config_1p2b,
    forward_logits,
    fresh_dir,
    load_f32,
    margins,
    save_npz,
    tensor_names,
)

NAME = "tiny-trained"
CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "exaone-4.0-1.2b")
LICENSES = "/usr/share/common-licenses"  # Debian/Ubuntu base-files: standard licence texts
# file -> sha256 of the bytes the fixture was made from (checked; a mismatch stops the script)
CORPUS_SHA256 = {
    "README.md": "78f32c0424a98b3b734d8f002da71e4cbc92d96838fca7303b2cf599fc3b4f17",
    "LICENSE": "8c1762fb4bd94c8f17e114c5caa567e0948e1da7d02b79b55e99be9616e0f9e3",
}
LICENSES_SHA256 = {
    "Apache-2.0": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "Artistic": "b7fd9b73ea99602016a326e0b62e6646060d18febdd065ceca8bb482208c3d88",
    "BSD": "5d588eb3b157d52112afea935c88a7ff9efddc1e2d95a42c25d3b96ad9055008",
    "CC0-1.0": "a2010f343487d3f7618affe54f789f5487602331c0a8d03f49e9a7c547cf0499",
    "GFDL-1.3": "110535522396708cea37c72a802c5e7e81391139f5f7985631c93ef242b206a4",
    "GPL-2": "8177f97513213526df2cf6184d8ff986c675afb514d4e68a404010521b880643",
    "GPL-3": "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986",
    "LGPL-2.1": "dc626520dcd53a22f727af3ee42c770e56c97a64fe3adb063799d8ab032fe551",
    "MPL-2.0": "fab3dd6bdab226f1c08630b1dd917e11fcb4ec5e1e020e2c16f83a0a13863e85",
}
# (first line of the held-out passage, first line after it, where the prompt starts in it)
HELD_OUT = {
    "LICENSE": (b"5. No Warranty\n", b"6. Limitation of Liability\n", b"    5.2 Performance"),
    "README.md": (b"## Limitation\n", b"## License\n", b"The EXAONE language model"),
}

VOCAB = 256  # bytes
LAYERS = 2
SEED = 7000
SEQ = 128  # training window = max_position_embeddings
BATCH = 16
STEPS = 1000
LR = 3e-3
WARMUP = 50
WEIGHT_DECAY = 0.1
PROMPT_LEN = 96
NEW_TOKENS = 16


def config():
    cfg = config_1p2b(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=LAYERS,
        layer_types=["full_attention"] * LAYERS,
        max_position_embeddings=SEQ,
    )
    cfg._attn_implementation = "eager"
    return cfg


def read_file(directory: str, name: str, sha256: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{directory}/{name}: sha256 {digest} is not the {sha256} the fixture was made from")
    return data


def read_corpus(corpus: str, licenses: str):
    """(training bytes, {file: held-out passage}): the EXAONE model card and licence, less the
    held-out passages, then the standard licence texts."""
    train, held = [], {}
    for name, sha in CORPUS_SHA256.items():
        data = read_file(corpus, name, sha)
        start, stop, _ = HELD_OUT[name]
        a, b = data.index(start), data.index(stop)
        assert a < b
        held[name] = data[a:b]
        train += [data[:a], data[b:]]
    for name, sha in LICENSES_SHA256.items():
        train.append(read_file(licenses, name, sha))
    text = b"\n".join(train)
    return np.frombuffer(text, np.uint8).astype(np.int64), held


def prompt_of(name: str, passage: bytes) -> np.ndarray:
    at = passage.index(HELD_OUT[name][2])
    ids = np.frombuffer(passage[at : at + PROMPT_LEN], np.uint8).astype(np.int64)
    assert len(ids) == PROMPT_LEN
    return ids


def lr_at(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def windows(passage: bytes) -> torch.Tensor:
    """The passage as non-overlapping windows of SEQ bytes (the tail shorter than SEQ dropped)."""
    ids = np.frombuffer(passage, np.uint8).astype(np.int64)
    n = len(ids) // SEQ
    return torch.from_numpy(ids[: n * SEQ].reshape(n, SEQ).copy())


@torch.no_grad()
def held_out_loss(model, held: dict[str, bytes]) -> dict[str, float]:
    """Mean next-byte loss (nats) over each held-out passage, in windows of SEQ bytes."""
    out = {}
    for name, passage in held.items():
        w = windows(passage)
        out[name] = round(float(model(input_ids=w, labels=w).loss), 3)
    return out


def train(cfg, data: np.ndarray, held: dict[str, bytes]) -> Exaone4ForCausalLM:
    torch.manual_seed(SEED)
    model = Exaone4ForCausalLM(cfg)  # transformers' init: N(0, 0.02^2), norms 1
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(SEED)
    tokens = torch.from_numpy(data)
    recent = []  # training losses since the last report
    t0 = time.time()
    model.train()
    for step in range(STEPS):
        starts = torch.randint(0, len(tokens) - SEQ, (BATCH,), generator=g)
        batch = torch.stack([tokens[s : s + SEQ] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        if step % 100 == 0 or step == STEPS - 1:
            model.eval()
            held_loss = held_out_loss(model, held)
            model.train()
            print(f"  step {step:5d}  lr {lr_at(step):.2e}  train loss {np.mean(recent):.3f} nats/byte "
                  f"(mean since last line)  held-out {held_loss}  ({time.time() - t0:.0f} s)", flush=True)
            recent = []
    model.eval()
    return model


@torch.no_grad()
def greedy(model, prompt: np.ndarray):
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


def describe(logits: np.ndarray, ids: np.ndarray) -> dict:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    top = p.max(-1)
    nll = -np.log(p[np.arange(len(ids) - 1), ids[1:]])
    return {
        "top1_prob_mean": round(float(top.mean()), 3),
        "top1_prob_median": round(float(np.median(top)), 3),
        "positions_top1_prob_over_0.9": round(float((top > 0.9).mean()), 3),
        "next_byte_nll_nats": round(float(nll.mean()), 3),
        "next_byte_top1_accuracy": round(float((logits[:-1].argmax(-1) == ids[1:]).mean()), 3),
        "min_top1_top2_margin_rel": float(margins(logits).min()),
        "max_abs_logit": round(float(np.abs(logits).max()), 2),
    }


def main() -> int:
    global STEPS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=CORPUS, help="directory with the EXAONE-4.0-1.2B README.md and LICENSE")
    ap.add_argument("--licenses", default=LICENSES, help="directory with the standard licence texts")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (the fixture uses the default)")
    args = ap.parse_args()
    STEPS = args.steps
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    cfg = config()
    check_rope(cfg)
    data, held = read_corpus(args.corpus, args.licenses)
    assert data.max() < VOCAB
    print(f"training bytes {len(data)}, held out {[len(v) for v in held.values()]}")
    model = train(cfg, data, held)

    os.makedirs(FIXTURES, exist_ok=True)
    path = fresh_dir(NAME)
    model.save_pretrained(path)
    del model
    model = load_f32(Exaone4ForCausalLM, path)

    prompt = prompt_of("LICENSE", held["LICENSE"])
    prompt2 = prompt_of("README.md", held["README.md"])
    logits = forward_logits(model, prompt)
    logits2 = forward_logits(model, prompt2)
    toks, glogits = greedy(model, prompt)
    full = np.concatenate([prompt, toks[:-1]])
    err = np.abs(forward_logits(model, full)[PROMPT_LEN - 1:] - glogits).max() / np.abs(glogits).max()
    assert err < 1e-4, f"cached vs uncached logits differ ({err:.2e})"
    assert np.array_equal(glogits.argmax(-1), toks)
    assert margins(glogits).min() >= MARGIN_REL, "a near tie in the greedy continuation"
    save_npz(
        os.path.join(path, "reference.npz"),
        prompt=prompt,
        logits=logits.astype(np.float32),
        greedy=toks,
        greedy_logits=glogits.astype(np.float32),
        prompt2=prompt2,
        logits2=logits2.astype(np.float32),
    )
    names = tensor_names(path)
    assert set(names.values()) == {"model.safetensors"} and "lm_head.weight" not in names
    size = os.path.getsize(os.path.join(path, "model.safetensors"))
    print(f"== {NAME}: model.safetensors {size} bytes, {len(names)} tensors")
    print(f"   prompt : {bytes(prompt.astype(np.uint8))!r}")
    print(f"   greedy : {bytes(toks.astype(np.uint8))!r}")
    print(f"   prompt2: {bytes(prompt2.astype(np.uint8))!r}")
    for key, lg, ids in (("prompt", logits, prompt), ("prompt2", logits2, prompt2)):
        print(f"   {key}: {json.dumps(describe(lg, ids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
