"""The batch engine without HTTP: chunked prefill beside running decodes and the prefix cache across
requests give every sequence exactly what it gets alone (greedy), on the 1.2B-shaped and the hybrid
32B-shaped (sliding window 4) fixtures."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu.decoding import Decoding
from exaone_cpu.server.engine import BatchEngine, Sequence
from exaone_cpu.server.prefix_cache import PrefixCache

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["tiny-1.2b", "tiny-32b"])
def model(request):
    return exaone_cpu.load(FIXTURES / request.param, prefill_chunk=8)


class Run:
    """One request: its tokens, with the engine step each arrived at, and its end."""

    def __init__(self, engine: BatchEngine, model, prompt, max_new_tokens: int, sampling=None):
        self.tokens: list[int] = []
        self.steps: list[int] = []
        self.reason = None
        self.done = threading.Event()
        decoding = Decoding(np.asarray(prompt), model.config.vocab_size, max_new_tokens=max_new_tokens,
                            sampling=sampling)
        self.seq = Sequence(decoding=decoding, on_token=self._token, on_finish=self._finish)
        self.engine = engine
        engine.submit(self.seq)

    def _token(self, token):
        self.tokens.append(token)
        self.steps.append(self.engine.steps)

    def _finish(self, reason):
        self.reason = reason
        self.done.set()

    def wait(self):
        assert self.done.wait(60), "the request did not finish"
        return self.tokens


def greedy(model, prompt, n):
    return model.generate(prompt, max_new_tokens=n, stop_at_eos=False)


def prompt_of(length, seed):
    return np.random.default_rng(seed).integers(3, 500, length).tolist()


@pytest.fixture
def engine_of():
    engines = []

    def make(model, start=True, **options):
        engine = BatchEngine(model, **options)
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def test_prompts_are_fed_in_chunks_beside_running_decodes(model, engine_of):
    engine = engine_of(model, parallel=4, batch_tokens=3, start=False)
    running = Run(engine, model, prompt_of(5, 1), 100)
    long_prompt = prompt_of(50, 2)
    late = Run(engine, model, long_prompt, 6)
    engine.start()  # both join at the first step: what follows does not depend on thread timing
    assert late.wait() == greedy(model, long_prompt, 6)
    assert running.wait() == greedy(model, prompt_of(5, 1), 100)
    # 3 prompt tokens a step: the 50-token prompt takes about 17 steps after the short one's first token,
    # and the running stream gets a token at every one of them
    first = running.steps[0]
    assert late.steps[0] - first >= 50 // 3 - 1
    assert [s for s in running.steps if s <= late.steps[0]] == list(range(first, late.steps[0] + 1))
    assert engine.prompt_tokens_computed == 55


def test_automatic_budget_and_many_sequences_agree_with_greedy(model, engine_of):
    engine = engine_of(model, parallel=3, max_queue=8)
    prompts = [prompt_of(n, seed) for seed, n in enumerate([1, 30, 7, 19, 2, 44])]
    runs = [Run(engine, model, p, 9) for p in prompts]
    for run, p in zip(runs, prompts):
        assert run.wait() == greedy(model, p, 9) and run.reason == "length"
    assert engine.max_batch_seen >= 2
    assert engine.decode_step_seconds is not None and engine.prompt_token_seconds is not None


def test_prefix_cache_reuses_a_repeated_prompt_and_a_conversation(model, engine_of):
    engine = engine_of(model, parallel=2, cache_bytes=64 << 20)
    prompt = prompt_of(40, 3)
    first = Run(engine, model, prompt, 3)
    assert first.wait() == greedy(model, prompt, 3) and first.seq.cached_tokens == 0
    again = Run(engine, model, prompt, 3)
    assert again.wait() == first.tokens
    assert again.seq.cached_tokens == len(prompt) - 1  # the last prompt token is computed
    # a conversation: each turn is the previous one + its answer + new text
    history, previous_length = prompt_of(12, 4), 0
    for turn in range(5):
        run = Run(engine, model, history, 4)
        assert run.wait() == greedy(model, history, 4)
        if turn:
            assert run.seq.cached_tokens == previous_length  # everything the previous turn computed
        previous_length = len(history) + 4 - 1
        history = history + run.tokens + prompt_of(6, 10 + turn)
    stats = engine.prefix_cache
    assert stats.hits == 5 and stats.lookups == 7 and stats.nbytes <= stats.budget_bytes


def test_prefix_cache_goes_back_only_as_far_as_the_sliding_rings_allow(engine_of):
    model = exaone_cpu.load(FIXTURES / "tiny-32b", prefill_chunk=4)  # rings of 4 + 4 - 1 = 7 slots
    engine = engine_of(model, parallel=1, cache_bytes=64 << 20)
    prompt = prompt_of(20, 5)
    Run(engine, model, prompt, 12).wait()  # the rings moved 11 positions past the prompt
    again = Run(engine, model, prompt, 5)
    assert again.wait() == greedy(model, prompt, 5)
    assert again.seq.cached_tokens == 0  # position 19's window is gone from the rings: computed again
    short = Run(engine, model, prompt, 1)  # finished at its prompt: its own cache can go back 0 tokens
    assert short.wait() == greedy(model, prompt, 1)
    assert short.seq.cached_tokens == 0  # the entry stored before ran too far, and this one's came after
    third = Run(engine, model, prompt, 2)
    assert third.wait() == greedy(model, prompt, 2) and third.seq.cached_tokens == len(prompt) - 1


def test_prefix_cache_budget_evicts_least_recently_used(model):
    one = model.new_cache()
    model.forward(prompt_of(10, 0), one)
    size = one.nbytes  # every entry below is allocated alike
    cache = PrefixCache(2 * size + size // 2)  # room for two entries of 10 tokens
    for seed in range(3):
        c = model.new_cache()
        model.forward(prompt_of(10, seed), c)
        cache.store(np.array(prompt_of(10, seed)), c)
        if seed == 1:
            assert cache.lookup(np.array(prompt_of(10, 0) + [7]), 20)[1] == 10  # seed 0 is now the most recent
    assert len(cache) == 2 and cache.nbytes <= cache.budget_bytes
    assert cache.lookup(np.array(prompt_of(10, 1) + [7]), 20) == (None, 0)  # evicted
    hit, n = cache.lookup(np.array(prompt_of(10, 0)[:6] + [1, 2]), 20)
    assert n == 6 and hit.length == 6
    # an entry that already holds the new one's tokens (and can give them back) makes it redundant
    shorter = model.new_cache()
    model.forward(prompt_of(10, 0)[:7], shorter)
    keys = list(cache._entries)
    cache.store(np.array(prompt_of(10, 0)[:7]), shorter)
    if all(w is None for w in shorter.windows):
        assert list(cache._entries) == keys  # nothing stored
    else:  # kept: a longer entry's rings may have moved past what this one can give back
        assert list(cache._entries)[-1] not in keys
    # an entry the new one extends is replaced by it
    longer = model.new_cache()
    model.forward(prompt_of(10, 2) + [5, 6], longer)
    cache.store(np.array(prompt_of(10, 2) + [5, 6]), longer)
    assert len(cache) == 2
    with pytest.raises(ValueError, match="budget"):
        PrefixCache(-1)
    few = PrefixCache(1 << 30, max_entries=2)  # the entry count is bounded too (lookups compare each)
    for seed in range(4):
        c = model.new_cache()
        model.forward(prompt_of(10, seed), c)
        few.store(np.array(prompt_of(10, seed)), c)
    assert len(few) == 2 and few.lookup(np.array(prompt_of(10, 0) + [1]), 20) == (None, 0)
    assert few.lookup(np.array(prompt_of(10, 3) + [1]), 20)[1] == 10


def test_cancelled_and_failed_sequences_free_their_slots(model, engine_of):
    engine = engine_of(model, parallel=1, max_queue=2, cache_bytes=1 << 20)
    run = Run(engine, model, prompt_of(30, 6), 50)
    run.seq.cancel()
    run.wait()
    assert run.reason == "cancelled"
    after = Run(engine, model, prompt_of(8, 7), 3)
    assert after.wait() == greedy(model, prompt_of(8, 7), 3)
    assert engine.load == (0, 0) or after.done.is_set()


# ---- speculative decoding in the batched step -------------------------------------------------------------------


class Echo:
    """Guesses from a fixed continuation per prompt (its first token), each guess wrong with
    probability 0.3: rounds keep some guesses and drop the rest."""

    truths: dict[int, list[int]] = {}

    def __init__(self):
        self.rng = np.random.default_rng(len(self.truths))

    def propose(self, token_ids, k):
        truth = self.truths.get(int(token_ids[0]), [])
        guess = np.array((truth + [5] * k)[len(token_ids) : len(token_ids) + k], np.int64)
        wrong = self.rng.random(k) < 0.3
        guess[wrong] = (guess[wrong] + 1) % 512
        return guess


def test_speculative_rounds_in_the_batch_give_every_sequence_its_own_tokens(model, engine_of):
    from exaone_cpu.speculative import Speculative

    prompts = [[10 + i] + prompt_of(n, 20 + i) for i, n in enumerate([3, 30, 9, 17, 2, 25])]
    Echo.truths = {p[0]: p + greedy(model, p, 14) for p in prompts}
    engine = engine_of(model, parallel=4, max_queue=8, cache_bytes=64 << 20,
                       speculative=Speculative(drafter=Echo, num_tokens=5, adaptive=False))
    runs = [Run(engine, model, p, 14) for p in prompts]
    for run, p in zip(runs, prompts):
        assert run.wait() == greedy(model, p, 14) and run.reason == "length"
        spec = run.seq.speculator
        assert spec.drafted > spec.accepted > 0
    assert engine.draft_tokens == sum(r.seq.speculator.drafted for r in runs)
    assert engine.accepted_draft_tokens == sum(r.seq.speculator.accepted for r in runs)
    # the caches kept for later requests hold exactly the tokens (the dropped guesses are gone); the
    # 32B-shaped one's rings have moved past the prompt (window 4 + prefill_chunk 8 - 1 slots)
    again = Run(engine, model, prompts[1], 14)
    assert again.wait() == greedy(model, prompts[1], 14)
    rings = any(model.config.window(i) for i in range(model.config.num_hidden_layers))
    assert again.seq.cached_tokens == (0 if rings else len(prompts[1]) - 1)
    # prompt lookup, sampled with seeds: the library's tokens
    from exaone_cpu.decoding import TokenStream
    from exaone_cpu.sampling import SamplingParams

    engine = engine_of(model, parallel=3, speculative=Speculative(ngram_min=1))
    repeat = prompt_of(6, 30) * 4
    runs = [Run(engine, model, repeat, 20, SamplingParams(temperature=0.8, top_k=3, seed=seed)) for seed in range(3)]
    for seed, run in enumerate(runs):
        sampling = SamplingParams(temperature=0.8, top_k=3, seed=seed)
        assert run.wait() == list(TokenStream(model, repeat, max_new_tokens=20, sampling=sampling))
    assert engine.draft_tokens > 0


def test_speculation_pays_only_while_a_row_is_cheap(model):
    """The engine gives each sequence's speculator what a guess costs the batched step: a token's share
    of the step, and one more row's cost. Measured cheap rows: guesses; rows as dear as a token: none."""
    from exaone_cpu.speculative import Speculative, Speculator

    engine = BatchEngine(model, speculative=Speculative())
    seq = Sequence(decoding=Decoding(np.arange(3, 40), 512, max_new_tokens=50), on_token=None, on_finish=None)
    seq.speculator = Speculator(engine.speculative, model.prefill_chunk)
    for _ in range(5):
        seq.speculator.verified(4, 3)  # 3 of 4 kept
    engine.decode_step_seconds, engine.prompt_token_seconds = 0.030, 0.0005  # bandwidth-bound step
    seq.decoding._ids[:37] = np.tile(np.arange(3, 15), 4)[:37]  # a repeating text: prompt lookup has guesses
    assert len(engine._draft(seq, decoding=1)) > 0
    assert len(engine._draft(seq, decoding=64)) == 0  # 64 streams: a row costs about what a token is worth
