"""Speculative decoding: the same tokens as plain decoding (greedy, and sampled with a seed), the same
distribution over seeds (chi-square), the KV cache rolled back in global layers and sliding rings,
the drafters against plain references, the adaptive choice of k, the draft model's tokenizer check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu import _core
from exaone_cpu.decoding import PromptCache, TokenStream
from exaone_cpu.generation import ChatSession, Generator
from exaone_cpu.sampling import SamplingParams
from exaone_cpu.speculative import (
    DraftModel,
    PromptLookup,
    Speculative,
    Speculator,
    check_draft,
    speculative_config,
)

from model_factory import real_tokenizer_available, write_tiny_exaone

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def models():
    # prefill_chunk 8: a sliding layer's ring is window + 7 slots, so rounds of up to 7 guesses
    # are rolled back right at its limit
    return {name: exaone_cpu.load(FIXTURES / name, threads=1, prefill_chunk=8)
            for name in ("tiny-1.2b", "tiny-32b", "tiny-trained", "tiny-1.2b-bf16")}


class Oracle:
    """Guesses the known continuation `truth` (prompt + output), each guess wrong with probability
    `wrong` (then the next token id): every round keeps some guesses and drops the rest."""

    def __init__(self, truth, vocab, wrong=0.3, seed=0, strict=True):
        self.truth, self.vocab, self.wrong, self.strict = list(truth), vocab, wrong, strict
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def propose(self, token_ids, k):
        self.calls += 1
        n = len(token_ids)
        assert not self.strict or list(token_ids) == self.truth[:n]  # the drafter only ever sees kept tokens
        guess = np.array((self.truth + [0] * k)[n : n + k], np.int64)
        flip = self.rng.random(k) < self.wrong
        guess[flip] = (guess[flip] + 1) % self.vocab
        return guess


def oracle_spec(truth, vocab, num_tokens=7, **kw):
    return Speculative(drafter=lambda: Oracle(truth, vocab, **kw), num_tokens=num_tokens, adaptive=False)


def repetitive_prompt(vocab, seed=0):
    rng = np.random.default_rng(seed)
    part = rng.integers(3, vocab, 9)
    return np.concatenate([part, rng.integers(3, vocab, 4), part[:5]])  # a quote that prompt lookup finds


# ---- exactness ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-1.2b", "tiny-32b", "tiny-trained"])
def test_greedy_output_is_identical(models, name):
    model = models[name]
    vocab = model.config.vocab_size
    prompt = repetitive_prompt(vocab)
    plain = model.generate(prompt, 60, stop_at_eos=False)
    truth = prompt.tolist() + plain
    for spec in ["prompt-lookup", Speculative(num_tokens=7, adaptive=False, ngram_min=1), model,
                 oracle_spec(truth, vocab, wrong=0.2), oracle_spec(truth, vocab, wrong=0.6, num_tokens=3)]:
        stream = TokenStream(model, prompt, max_new_tokens=60, speculative=speculative_config(spec))
        assert list(stream) == plain, spec
        assert stream.draft_tokens >= stream.accepted_draft_tokens
    # the oracle rounds really kept and dropped guesses
    stream = TokenStream(model, prompt, max_new_tokens=60, speculative=oracle_spec(truth, vocab, wrong=0.2))
    assert list(stream) == plain
    assert stream.speculator.rounds < 40 and 0 < stream.accepted_draft_tokens < stream.draft_tokens


@pytest.mark.parametrize("name,options", [
    ("tiny-1.2b", {}), ("tiny-32b", {}), ("tiny-1.2b-bf16", {}), ("tiny-32b", {"quant": "int8"}),
    ("tiny-32b", {"quant": "int4", "kv_dtype": "int8"}), ("tiny-1.2b", {"quant": "int4", "asym": True, "kv_dtype": "f16"}),
])
def test_a_verification_step_is_bit_identical_to_decoding(isa, name, options):
    """Up to ATTENTION_TOKEN_BY_TOKEN tokens of a sequence in one step give, row for row, exactly the
    logits of one-token steps: float weights, int8 / int4 (whose activations are rounded to int8: a
    last-bit difference could flip one) and every KV type, on every ISA; also beside other
    sequences in a batched step (the server), whatever the step's size."""
    model = exaone_cpu.load(FIXTURES / name, threads=2, prefill_chunk=32, **options)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 512, 40)
    for n in range(2, _core.ATTENTION_TOKEN_BY_TOKEN + 1):
        ids = rng.integers(0, 512, n)
        cache = model.new_cache()
        model.forward(prompt, cache)
        steps = np.stack([model.forward([t], cache) for t in ids])
        cache = model.new_cache()
        model.forward(prompt, cache)
        np.testing.assert_array_equal(model.forward(ids, cache, all_logits=True), steps)
    # in a batch of 5 + 1 + 24 rows (> the token-by-token limit): the 5 rows are still exact
    other, chunk = model.new_cache(), model.new_cache()
    model.forward(prompt[:7], other)
    cache = model.new_cache()
    model.forward(prompt, cache)
    h = model.hidden_states_batch([ids[:5], np.array([3]), rng.integers(0, 512, 24)], [cache, other, chunk])
    np.testing.assert_array_equal(model.lm_head(np.ascontiguousarray(h[:5])), steps[:5])


def test_rounds_keep_the_logits_and_the_cache_of_plain_decoding(models):
    """Every step's logits match plain decoding's, and after the generation the cache holds exactly
    the K/V plain decoding computed (global layers and the 32B's sliding rings)."""
    model = models["tiny-32b"]
    vocab = model.config.vocab_size
    prompt = repetitive_prompt(vocab, seed=3)
    plain_stream = TokenStream(model, prompt, max_new_tokens=40, stop_token_ids=())
    plain, plain_logits = [], []
    for t in plain_stream:
        plain.append(t)
        plain_logits.append(plain_stream.logits)
    spec_stream = TokenStream(model, prompt, max_new_tokens=40, stop_token_ids=(),
                              speculative=oracle_spec(prompt.tolist() + plain, vocab, wrong=0.4))
    tokens, logits = [], []
    for t in spec_stream:
        tokens.append(t)
        logits.append(spec_stream.logits)
    assert tokens == plain
    np.testing.assert_array_equal(np.stack(logits), np.stack(plain_logits))
    a, b = plain_stream._cache, spec_stream._cache
    assert a.length == b.length == len(prompt) + len(plain) - 1
    for la, lb in zip(a.layers, b.layers):
        if la.ring:
            assert la.pos.tolist() == lb.pos.tolist()
        live = la.pos >= 0
        np.testing.assert_array_equal(la.k[:, live], lb.k[:, live])
        np.testing.assert_array_equal(la.v[:, live], lb.v[:, live])


@pytest.mark.parametrize("params", [
    dict(temperature=0.8, top_p=0.9),
    dict(temperature=1.0, top_k=5, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2),
    dict(temperature=0.7, min_p=0.1, logit_bias={7: 3.0, 9: -100.0}),
])
def test_sampling_with_a_seed_is_identical(models, params):
    model = models["tiny-1.2b"]
    vocab = model.config.vocab_size
    prompt = repetitive_prompt(vocab, seed=1)
    for seed in range(3):
        sampling = SamplingParams(seed=seed, **params)
        plain = model.generate(prompt, 40, sampling=sampling, stop_at_eos=False)
        truth = prompt.tolist() + plain
        for spec in ["prompt-lookup", model, oracle_spec(truth, vocab, wrong=0.3, seed=seed)]:
            assert model.generate(prompt, 40, sampling=sampling, stop_at_eos=False, speculative=spec) == plain


def _chi_square_critical(dof: int, z: float = 3.09) -> float:
    """The chi-square quantile at 1 - 0.001 (z: the normal quantile), Wilson-Hilferty."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _chi_square_two_samples(a: list, b: list) -> tuple[float, int]:
    """Two-sample chi-square statistic of equal-size samples over their categories (rare ones pooled)."""
    cats = sorted(set(a) | set(b))
    ca = np.array([a.count(c) for c in cats], float)
    cb = np.array([b.count(c) for c in cats], float)
    rare = (ca + cb) < 10
    if rare.any():
        ca = np.append(ca[~rare], ca[rare].sum())
        cb = np.append(cb[~rare], cb[rare].sum())
    expected = (ca + cb) / 2
    keep = expected > 0
    return float((((ca - expected) ** 2 + (cb - expected) ** 2)[keep] / expected[keep]).sum()), int(keep.sum()) - 1


def test_sampled_distribution_is_unchanged(models):
    """Over many seeds, the 2nd and 3rd tokens (picked from verification rounds) follow the same
    distribution with and without speculation (the model drafting for itself: its argmax is kept
    with probability p(argmax), as the speculative-sampling rule says)."""
    model = models["tiny-1.2b"]
    prompt = repetitive_prompt(model.config.vocab_size, seed=2)
    runs = 400
    spec = Speculative("draft-model", draft=model, num_tokens=3, adaptive=False)

    def sample(seed, speculative):
        return model.generate(prompt, 3, sampling=SamplingParams(temperature=1.0, top_k=4, seed=seed),
                              stop_at_eos=False, speculative=speculative)

    with_spec = [sample(s, spec) for s in range(runs)]
    without = [sample(10_000 + s, "off") for s in range(runs)]
    kept = sum(a[1] == np.argmax(model.logits(np.append(prompt, a[0]))[-1]) for a in with_spec[:40])
    assert 0 < kept < 40  # the argmax guess is sometimes right, sometimes not
    for position in (1, 2):
        stat, dof = _chi_square_two_samples([t[position] for t in with_spec], [t[position] for t in without])
        assert dof >= 2 and stat < _chi_square_critical(dof), (position, stat, dof)
    # the test can fail: keeping every guess would make the 2nd token the argmax every time
    greedy_second = [int(np.argmax(model.logits(np.append(prompt, t[0]))[-1])) for t in without[:100]]
    stat, dof = _chi_square_two_samples(greedy_second, [t[1] for t in without[:100]])
    assert stat > _chi_square_critical(dof)


def test_stop_tokens_limits_and_logprobs_inside_a_round(models):
    model = models["tiny-1.2b"]
    vocab = model.config.vocab_size
    prompt = repetitive_prompt(vocab, seed=4)
    plain = model.generate(prompt, 30, stop_at_eos=False)
    truth = prompt.tolist() + plain
    first = {t: plain.index(t) for t in plain}
    stop = max(first, key=first.get)  # a stop token in the middle of a round
    assert first[stop] >= 2
    for max_new in (1, 2, 5, 13, 30):
        for stops in ((), (stop,)):
            a = TokenStream(model, prompt, max_new_tokens=max_new, stop_token_ids=stops, logprobs=2)
            b = TokenStream(model, prompt, max_new_tokens=max_new, stop_token_ids=stops, logprobs=2,
                            speculative=oracle_spec(truth, vocab, wrong=0.1))
            assert list(a) == list(b)
            assert a.finish_reason == b.finish_reason and a.stop_token == b.stop_token
            assert [x.token for x in a.logprobs] == [x.token for x in b.logprobs]
            assert a.logprobs == b.logprobs
            assert b._cache.length == len(b.token_ids) - 1
    # min_new_tokens bans the stop token inside rounds too (the guesses hold it)
    b = TokenStream(model, prompt, max_new_tokens=20, stop_token_ids=(stop,), min_new_tokens=15,
                    speculative=oracle_spec(truth, vocab, wrong=0.0, strict=False))
    plain_min = TokenStream(model, prompt, max_new_tokens=20, stop_token_ids=(stop,), min_new_tokens=15)
    tokens = list(b)
    assert tokens == list(plain_min) and stop not in tokens[:15] and b.draft_tokens > b.accepted_draft_tokens


def test_stopping_in_the_middle_of_a_round_rolls_the_cache_back(models):
    model = models["tiny-32b"]
    vocab = model.config.vocab_size
    prompt = repetitive_prompt(vocab, seed=5)
    plain = model.generate(prompt, 30, stop_at_eos=False)
    cache = PromptCache(model)
    stream = TokenStream(model, prompt, max_new_tokens=30, stop_token_ids=(), prompt_cache=cache,
                         speculative=oracle_spec(prompt.tolist() + plain, vocab, wrong=0.0))
    taken = [next(stream) for _ in range(4)]
    assert stream._round is not None  # rows of the round are still pending
    stream.stop()  # a stop string, say
    assert stream._round is None and stream._cache.length == len(prompt) + 3
    # the next generation on the cache continues from the kept tokens and agrees with plain decoding
    follow = np.concatenate([prompt, taken])
    again = TokenStream(model, follow, max_new_tokens=10, stop_token_ids=(), prompt_cache=cache)
    assert list(again) == plain[4:14] and again.cached_tokens == len(follow) - 1


# ---- drafters -------------------------------------------------------------------------------------------------


def reference_lookup(tokens, k, ngram_max, ngram_min):
    """Prompt lookup from its definition: the latest earlier occurrence of the last n tokens (longest
    n first) that has a next token; its continuation, running into the guess itself."""
    n_tok = len(tokens)
    for n in range(ngram_max, ngram_min - 1, -1):
        if n > n_tok:
            continue
        suffix = tokens[n_tok - n :]
        for j in range(n_tok - n - 1, -1, -1):  # start j, occurrence tokens[j:j+n], next token at j+n < n_tok
            if tokens[j : j + n] == suffix:
                seq = list(tokens)
                out = []
                for i in range(k):
                    out.append(seq[j + n + i])
                    seq.append(out[-1])
                return out
    return []


@pytest.mark.parametrize("sizes", [(4, 2), (3, 1), (1, 1), (6, 3)])
def test_prompt_lookup_matches_its_reference(sizes):
    rng = np.random.default_rng(sum(sizes))
    for trial in range(20):
        tokens = rng.integers(0, 4 + trial % 5, 120)  # small alphabets: many matches
        drafter = PromptLookup(*sizes)
        n = int(rng.integers(1, 10))
        while n <= len(tokens):
            k = int(rng.integers(1, 9))
            got = drafter.propose(tokens[:n], k).tolist()
            assert got == reference_lookup(tokens[:n].tolist(), k, *sizes), (trial, n)
            n += int(rng.integers(1, 6))


def test_draft_model_follows_the_kept_tokens(models):
    """The draft model's guesses are its greedy continuation, whatever was kept before."""
    draft_model = models["tiny-1.2b-bf16"]
    drafter = DraftModel(draft_model)
    rng = np.random.default_rng(0)
    history = rng.integers(3, 512, 12)
    # a backlog of more than the draft's prefill_chunk (8) is fed a chunk per call, no guess meanwhile
    assert len(drafter.propose(history, 3)) == 0 and drafter.cache.length == 8
    primed = DraftModel(draft_model)
    primed.prefill(history)  # as a TokenStream does with the prompt
    assert primed.propose(history, 3).tolist() == draft_model.generate(history, 3, stop_at_eos=False)
    for step in range(12):
        k = int(rng.integers(1, 6))
        guess = drafter.propose(history, k)
        assert guess.tolist() == draft_model.generate(history, k, stop_at_eos=False)
        kept = int(rng.integers(0, k + 1))
        history = np.concatenate([history, guess[:kept], rng.integers(3, 512, 1)])


def test_a_draft_model_drafts_for_the_hybrid_model(models):
    target, draft = models["tiny-32b"], models["tiny-1.2b"]  # same vocabulary and special ids
    prompt = repetitive_prompt(512, seed=6)
    plain = target.generate(prompt, 50, stop_at_eos=False)
    stream = TokenStream(target, prompt, max_new_tokens=50, stop_token_ids=(),
                         speculative=speculative_config(draft, target))
    assert list(stream) == plain and stream.draft_tokens > 0


def test_the_draft_model_must_share_the_tokenizer(models, tmp_path):
    with pytest.raises(ValueError, match="vocabulary has 256 tokens and the model's 512"):
        speculative_config(models["tiny-trained"], models["tiny-1.2b"])
    with pytest.raises(ValueError, match="speculative must be"):
        speculative_config(3.5)
    with pytest.raises(ValueError, match="unknown method 'medusa'"):
        Speculative("medusa")
    with pytest.raises(ValueError, match="num_tokens must be"):
        Speculative(num_tokens=0)
    with pytest.raises(ValueError, match="needs draft="):
        Speculative("draft-model")
    with pytest.raises(ValueError, match="not a model that generates text"):
        exaone_cpu.load(FIXTURES / "tiny-seqcls", speculative="prompt-lookup")
    if real_tokenizer_available():  # two real-vocabulary models, then one with two tokens swapped
        import json

        a = write_tiny_exaone(tmp_path / "a")
        b = write_tiny_exaone(tmp_path / "b", seed=1)
        model_a = exaone_cpu.load(a, speculative=b)  # the same tokenizer: accepted
        assert model_a.speculative.draft.source == b
        vocab = json.loads((b / "vocab.json").read_text(encoding="utf-8"))
        (b / "vocab.json").unlink()  # a link to the shared file
        x, y = (t for t, i in vocab.items() if i in (1000, 1001))
        vocab[x], vocab[y] = vocab[y], vocab[x]
        (b / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        with pytest.raises(ValueError, match="tokenizer differs"):
            check_draft(model_a, exaone_cpu.load(b))


# ---- adaptive -------------------------------------------------------------------------------------------------


class Wrong:
    def propose(self, token_ids, k):
        return np.full(k, (int(token_ids[-1]) + 1) % 512, np.int64)


def test_speculation_switches_itself_off_when_guesses_fail(models, monkeypatch):
    model = models["tiny-1.2b"]
    prompt = repetitive_prompt(512, seed=7)
    timed = Speculator.timed  # the costs of a bandwidth-bound model, not this machine's timings of a tiny one
    monkeypatch.setattr(Speculator, "timed", lambda self, n, seconds: timed(self, n, 0.010 + 0.001 * (n - 1)))
    stream = TokenStream(model, prompt, max_new_tokens=100, stop_token_ids=(),
                         speculative=Speculative(drafter=Wrong))
    assert list(stream) == model.generate(prompt, 100, stop_at_eos=False)
    # a few rounds at first, then trial guesses of one token ever more rarely (after 1, 2, 4 ... 32 steps)
    assert stream.accepted_draft_tokens == 0 and stream.speculator.rounds <= 12 and stream.draft_tokens <= 16


def test_k_follows_the_acceptance_and_the_costs():
    spec = Speculator(Speculative(num_tokens=8), prefill_chunk=256)
    spec.timed(1, 0.010)
    spec.timed(5, 0.0104)  # bandwidth-bound: a position costs 1 % of a step
    for _ in range(20):
        spec.verified(8, 8)
    assert spec.acceptance > 0.9 and spec.choose_k() == 8
    for _ in range(10):
        spec.verified(4, 0)
    assert 0.2 < spec.acceptance < 0.5 and spec.choose_k() >= 1  # one guess of 3 kept still pays here
    for _ in range(30):
        spec.verified(4, 0)
    assert spec.acceptance < 0.03 and spec.choose_k() == 0
    # half the guesses kept, but each position costs as much as a step (compute-bound): no gain
    spec = Speculator(Speculative(num_tokens=8), prefill_chunk=256)
    spec.timed(1, 0.010)
    for _ in range(10):
        spec.timed(5, 0.050)
        spec.verified(2, 1)
    assert spec.choose_k() == 0
    assert Speculator(Speculative(num_tokens=15), prefill_chunk=8).max_tokens == 7
    assert Speculator(Speculative(num_tokens=5, adaptive=False), prefill_chunk=256).choose_k() == 5


# ---- the API --------------------------------------------------------------------------------------------------


def test_load_sets_the_default_and_results_report_the_drafts(tmp_path):
    model = exaone_cpu.load(FIXTURES / "tiny-trained", threads=1, speculative="prompt-lookup")
    assert model.speculative.method == "prompt-lookup"
    text = b"The Licensor does not warrant or guarantee that the Model "
    prompt = np.frombuffer(text * 2, np.uint8).astype(np.int64)
    assert model.generate(prompt, 12, speculative="off") == model.generate(prompt, 12)
    draft = exaone_cpu.load(FIXTURES / "tiny-trained", threads=1, prefill_chunk=8, speculative=FIXTURES / "tiny-trained")
    assert draft.speculative.method == "draft-model" and draft.speculative.draft.prefill_chunk == 256


@pytest.mark.skipif(not real_tokenizer_available(), reason="EXAONE tokenizer files not found")
def test_generator_and_chat_session_with_speculation(tmp_path):
    path = write_tiny_exaone(tmp_path / "m", sliding=True, layers=3)
    plain = Generator.from_pretrained(path, threads=1)
    spec = Generator.from_pretrained(path, threads=1, speculative="prompt-lookup")
    assert spec.speculative.method == "prompt-lookup" and plain.speculative is None
    prompt = plain.encode_chat([{"role": "user", "content": "abc abc abc abc abc abc"}])
    a = plain.generate(prompt, max_new_tokens=30, stop_strings=["abc d"])
    b = spec.generate(prompt, max_new_tokens=30, stop_strings=["abc d"])
    assert (a.text, a.token_ids, a.finish_reason) == (b.text, b.token_ids, b.finish_reason)
    assert a.draft_tokens is None and "completion_tokens_details" not in a.usage
    details = b.usage["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] == b.accepted_draft_tokens
    assert details["rejected_prediction_tokens"] == b.draft_tokens - b.accepted_draft_tokens
    assert "drafted=" in b.summary()
    # per call, per session
    c = plain.generate(prompt, max_new_tokens=30, stop_strings=["abc d"], speculative="prompt-lookup")
    assert c.token_ids == a.token_ids and c.draft_tokens is not None
    turns = []
    for generator, options in ((plain, {}), (plain, {"speculative": "prompt-lookup"}), (spec, {})):
        chat = ChatSession(generator, max_new_tokens=12, temperature=0.9, seed=3, **options)
        turns.append([chat.send(m).until_done().token_ids for m in ("hi hi hi", "again hi hi hi")])
    assert turns[0] == turns[1] == turns[2]
    off = ChatSession(spec, speculative="off", max_new_tokens=4)
    assert off.send("x").until_done().draft_tokens is None
    # a structured-output mask applies to every row of a round (guesses it forbids are never kept)
    pytest.importorskip("llguidance")
    schema = {"type": "object", "properties": {"abc": {"type": "string", "maxLength": 12}}, "required": ["abc"],
              "additionalProperties": False}
    for seed in range(3):
        a = plain.generate(prompt, json_schema=schema, temperature=1.0, seed=seed)
        b = spec.generate(prompt, json_schema=schema, temperature=1.0, seed=seed,
                          speculative=Speculative(ngram_min=1, adaptive=False))
        assert (a.token_ids, a.text) == (b.token_ids, b.text) and b.draft_tokens > 0
