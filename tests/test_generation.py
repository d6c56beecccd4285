"""Generation: sampling settings, stop conditions, streamed text, parsed results, prompt caching."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu.decoding import Decoding, PromptCache, TokenStream, common_prefix_length
from exaone_cpu.generation import ChatSession, GenerationParams, Generator
from exaone_cpu.sampling import GenerationDefaults, SamplingParams

import sampling_reference

from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_tiny_exaone

FIXTURES = Path(__file__).parent / "fixtures"
CAUSAL = ["tiny-1.2b", "tiny-32b"]


@pytest.fixture(scope="module", params=CAUSAL)
def fixture(request):
    model = exaone_cpu.load(FIXTURES / request.param, threads=1)
    ref = np.load(FIXTURES / request.param / "reference.npz")
    return SimpleNamespace(name=request.param, model=model, ref=ref)


@pytest.fixture(scope="module")
def tok():
    if not real_tokenizer_available():
        pytest.skip(f"EXAONE tokenizer files not found in {SHARED_MODEL_DIR}")
    from exaone_cpu.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(SHARED_MODEL_DIR)


def run(stream: TokenStream) -> tuple[list[int], np.ndarray]:
    tokens, logits = [], []
    for token in stream:
        tokens.append(token)
        logits.append(stream.logits)
    return tokens, np.stack(logits)


def assert_logits_close(actual: np.ndarray, expected: np.ndarray) -> None:
    tol = 1e-5 * max(1.0, float(np.abs(expected).max())) * 10
    err = np.abs(actual - expected)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= tol, f"logits differ by {err.max():.3g} at {worst} (tolerance {tol:.3g})"


# ---- tokens: sampling settings and stop conditions ------------------------------------------------------------


def test_greedy_by_default_matches_transformers(fixture):
    tokens, logits = run(TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=16))
    assert tokens == fixture.ref["greedy"].tolist()
    assert_logits_close(logits, fixture.ref["greedy_logits"])


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_top_k_1_is_greedy(fixture, seed):
    sampling = SamplingParams(temperature=1.5, top_k=1, seed=seed)
    tokens, _ = run(TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=16, sampling=sampling))
    assert tokens == fixture.ref["greedy"].tolist()


@pytest.mark.parametrize("top_k", [0, 20])  # full-vocabulary sampler and the top-k fast path
def test_fixed_seed_repeats(fixture, top_k):
    def sample(seed):
        sampling = SamplingParams(temperature=2.0, top_k=top_k, seed=seed)
        return run(TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=16, sampling=sampling))[0]

    assert sample(1234) == sample(1234)
    assert len({tuple(sample(seed)) for seed in range(4)}) > 1  # the seed matters, so it really samples


def test_top_k_draws_only_among_the_k_best(fixture):
    sampling = SamplingParams(temperature=5.0, top_k=3, seed=3)
    tokens, logits = run(TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=40, sampling=sampling))
    for token, step in zip(tokens, logits):
        assert step[token] >= np.sort(step)[-3]
    assert any(token != int(np.argmax(step)) for token, step in zip(tokens, logits))


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.5, top_k=5, top_p=0.8, seed=0),
    SamplingParams(temperature=0.7, top_k=50, min_p=0.05, seed=0),
    SamplingParams(temperature=1.0, top_k=4, seed=0),
])
def test_token_stream_draws_from_the_samplers_distribution(fixture, params):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(fixture.model.config.vocab_size) * 2).astype(np.float32)
    logits[[10, 11]] = logits.max()  # a tie at the top
    filters = {"top_k": params.top_k, "top_p": params.top_p, "min_p": params.min_p}
    expected = sampling_reference.probabilities(logits, temperature=params.temperature, **filters)
    decoding = Decoding([1, 2, 3], logits.size, max_new_tokens=3000, sampling=params)
    draws = np.bincount([decoding.accept(logits) for _ in range(3000)], minlength=logits.size) / 3000
    assert set(np.flatnonzero(draws)) <= set(np.flatnonzero(expected))
    assert np.abs(draws - expected).max() < 0.04


def test_penalties(fixture):
    """Repetition penalty over prompt + output (transformers), presence/frequency over the output (OpenAI)."""
    model, prompt = fixture.model, fixture.ref["prompt"]
    sampling = SamplingParams(repetition_penalty=1.5, presence_penalty=0.7, frequency_penalty=0.3)
    tokens, _ = run(TokenStream(model, prompt, max_new_tokens=12, sampling=sampling))

    cache, ids, expected = model.new_cache(), list(prompt), []
    logits = model.forward(prompt, cache)
    for _ in range(12):
        scores = sampling_reference.penalised(logits, prompt=prompt, output=expected, repetition_penalty=1.5,
                                              presence_penalty=0.7, frequency_penalty=0.3)
        token = int(np.argmax(scores))
        expected.append(token)
        ids.append(token)
        logits = model.forward([token], cache)
    assert tokens == expected
    assert tokens != fixture.ref["greedy"][:12].tolist()


def test_stop_token_ends_with_stop(fixture):
    greedy = fixture.ref["greedy"].tolist()
    k = next(i for i in range(2, len(greedy)) if greedy[i] not in greedy[:i])
    stream = TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=16, stop_token_ids=[greedy[k]])
    assert list(stream) == greedy[: k + 1]  # the stop token is the last one returned
    assert stream.finish_reason == "stop" and stream.stop_token == greedy[k]


def test_max_new_tokens_ends_with_length(fixture):
    stream = TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=5, stop_token_ids=[])
    assert list(stream) == fixture.ref["greedy"][:5].tolist()
    assert stream.finish_reason == "length" and stream.completion_tokens == 5


def test_without_max_new_tokens_generation_fills_the_context(fixture):
    model, prompt = fixture.model, fixture.ref["prompt"]
    stream = TokenStream(model, prompt, max_new_tokens=None, stop_token_ids=[])
    tokens = list(stream)
    assert len(tokens) == model.config.max_position_embeddings - len(prompt)
    assert stream.finish_reason == "length"


def test_min_new_tokens_forbids_the_stop_token(fixture):
    greedy = fixture.ref["greedy"].tolist()
    stream = TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=3, stop_token_ids=[greedy[0]],
                         min_new_tokens=1)
    first = next(stream)
    assert first == int(np.argsort(stream.logits)[-2])  # the runner-up
    assert first != greedy[0]


def test_model_generate_keeps_its_behaviour_and_takes_sampling(fixture):
    model, prompt, greedy = fixture.model, fixture.ref["prompt"], fixture.ref["greedy"].tolist()
    assert model.generate(prompt, 16, stop_at_eos=False) == greedy
    tokens, logits = model.generate(prompt, 16, stop_at_eos=False, return_logits=True)
    assert tokens == greedy and logits.shape == (16, model.config.vocab_size)
    assert_logits_close(logits, fixture.ref["greedy_logits"])
    assert model.generate(prompt, 0) == []
    assert model.generate(prompt, 0, return_logits=True)[1].shape == (0, model.config.vocab_size)
    assert model.generate(prompt, 16, temperature=0.9, top_k=1, stop_at_eos=False) == greedy
    assert model.generate(prompt, 8, sampling=SamplingParams(temperature=1.0, seed=5)) == \
        model.generate(prompt, 8, temperature=1.0, seed=5)
    with pytest.raises(TypeError):
        model.generate(prompt, 4, sampling=SamplingParams(), temperature=1.0)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(prompt, model.config.max_position_embeddings)


# ---- prompt caching ---------------------------------------------------------------------------------------------


def test_prompt_cache_reuses_the_shared_prefix(fixture):
    model, prompt, prompt2 = fixture.model, fixture.ref["prompt"], fixture.ref["prompt2"]
    cache = PromptCache(model)
    first = TokenStream(model, prompt, max_new_tokens=6, prompt_cache=cache)
    generated = list(first)
    assert first.cached_tokens == 0
    # the cache holds the prompt and all generated tokens but the last
    np.testing.assert_array_equal(cache.token_ids, np.concatenate([prompt, generated[:-1]]))

    follow_up = np.concatenate([prompt, generated[:3], prompt2[:12]])
    cached = TokenStream(model, follow_up, max_new_tokens=8, prompt_cache=cache)
    tokens, logits = run(cached)
    assert cached.cached_tokens == len(prompt) + 3
    fresh_tokens, fresh_logits = run(TokenStream(model, follow_up, max_new_tokens=8))
    assert tokens == fresh_tokens
    assert_logits_close(logits, fresh_logits)
    assert_logits_close(logits[0], model.logits(follow_up)[-1])

    # the same prompt again: everything but its last token comes from the cache
    again = TokenStream(model, follow_up, max_new_tokens=8, prompt_cache=cache)
    tokens_again, logits_again = run(again)
    assert again.cached_tokens == len(follow_up) - 1
    assert tokens_again == fresh_tokens
    assert_logits_close(logits_again, fresh_logits)

    # a prompt with nothing in common
    other = TokenStream(model, prompt2, max_new_tokens=4, prompt_cache=cache)
    other_tokens, other_logits = run(other)
    assert other.cached_tokens == 0
    assert_logits_close(other_logits, run(TokenStream(model, prompt2, max_new_tokens=4))[1])


def test_ring_buffer_truncation_limit():
    """tiny-32b's sliding layers (window 4) with prefill_chunk 4 keep a ring of 7 positions: going back
    from 30 tokens to n works while positions n-3 .. n-1 are still in the ring, i.e. for 30 - n <= 4."""
    model = exaone_cpu.load(FIXTURES / "tiny-32b", threads=1, prefill_chunk=4)
    ref = np.load(FIXTURES / "tiny-32b" / "reference.npz")
    ids = ref["prompt2"][:30]
    other = ref["prompt"][:9]
    for n in range(20, 31):
        cache = model.new_cache()
        model.forward(ids, cache)
        ok = cache.truncate(n)
        assert ok == (30 - n <= 4), n
        if not ok:
            assert cache.length == 30  # unchanged
            continue
        assert cache.length == n
        logits = model.forward(other, cache, all_logits=True)
        assert_logits_close(logits, model.logits(np.concatenate([ids[:n], other]))[n:])


def test_prompt_cache_recomputes_when_the_ring_cannot_go_back():
    model = exaone_cpu.load(FIXTURES / "tiny-32b", threads=1, prefill_chunk=4)
    ref = np.load(FIXTURES / "tiny-32b" / "reference.npz")
    prompt = ref["prompt2"][:20]
    cache = PromptCache(model)
    list(TokenStream(model, prompt, max_new_tokens=10, prompt_cache=cache, stop_token_ids=[]))  # cache: 29 tokens
    follow_up = np.concatenate([prompt[:18], ref["prompt"][:5]])  # shares 18 tokens, 11 back: beyond the ring
    stream = TokenStream(model, follow_up, max_new_tokens=4, prompt_cache=cache)
    tokens, logits = run(stream)
    assert stream.cached_tokens == 0
    fresh_tokens, fresh_logits = run(TokenStream(model, follow_up, max_new_tokens=4))
    assert tokens == fresh_tokens
    assert_logits_close(logits, fresh_logits)


def test_truncate_detects_keys_overwritten_by_an_interrupted_forward():
    model = exaone_cpu.load(FIXTURES / "tiny-32b", threads=1, prefill_chunk=4)
    ids = np.load(FIXTURES / "tiny-32b" / "reference.npz")["prompt2"]
    for extra, reusable in ((2, True), (6, False)):
        cache = model.new_cache()
        model.forward(ids[:20], cache)
        model.forward(ids[20 : 20 + extra], cache)
        cache.length = 20  # as if that forward had been interrupted before it finished
        assert cache.truncate(20) == reusable
        if reusable:
            assert_logits_close(model.forward(ids[20:26], cache, all_logits=True), model.logits(ids[:26])[20:])


def test_truncate_rejects_bad_lengths():
    model = exaone_cpu.load(FIXTURES / "tiny-1.2b", threads=1)
    cache = model.new_cache()
    model.forward([5, 6, 7], cache)
    for bad in (-1, 4, 1.5, True):
        with pytest.raises(ValueError):
            cache.truncate(bad)
    assert cache.truncate(3) and cache.length == 3


def test_a_newer_stream_takes_over_the_prompt_cache(fixture):
    cache = PromptCache(fixture.model)
    old = TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=8, prompt_cache=cache)
    next(old)
    new = TokenStream(fixture.model, fixture.ref["prompt"], max_new_tokens=8, prompt_cache=cache)
    next(new)
    with pytest.raises(RuntimeError, match="PromptCache"):
        next(old)


# ---- text: streaming, stop strings, parsing ---------------------------------------------------------------------


class ScriptedModel:
    """Stands in for Model: its logits make every pick (greedy or top_k=1) the next token of `script`.
    `calls` counts forward passes, to see that text is streamed before the script is used up."""

    def __init__(self, script, vocab_size=102400, eos=361):
        self.script = list(script)
        self.calls = 0
        self.config = SimpleNamespace(vocab_size=vocab_size, eos_token_ids=(eos,), max_position_embeddings=1 << 16)

    def check_token_ids(self, ids, start=0):
        return np.asarray(ids, dtype=np.int64)

    def new_cache(self, capacity=None):
        return SimpleNamespace(length=0)

    def forward(self, ids, cache, all_logits=False):
        cache.length += len(ids)
        logits = np.zeros(self.config.vocab_size, np.float32)
        logits[self.script[self.calls]] = 10.0
        self.calls += 1
        return logits


TEXTS = [
    "너가 얼마나 대단한지 설명해 봐. 뷁! 햏자 똠얌꿍",
    "😀👍🏽 🇰🇷 👨‍👩‍👧‍👦 ❤️ emoji 🎉 끝",
]


def scripted(tok, text, eos=True):
    return ScriptedModel(tok.encode(text) + ([361] if eos else []))


def collect(stream, model):
    pieces, calls = [], []
    for piece in stream:
        pieces.append(piece)
        calls.append(model.calls)
    return pieces, calls


@pytest.mark.parametrize("text", TEXTS)
def test_stream_pieces_join_to_the_final_text(tok, text):
    model = scripted(tok, text)
    assert any("\ufffd" in tok.decode([i]) for i in model.script)  # some token is half a character
    stream = Generator(model, tok).stream([360, 5, 359])
    pieces, calls = collect(stream, model)
    result = stream.result
    assert "".join(pieces) == result.text == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 3 and calls[0] < len(model.script)  # pieces come out while generating
    assert result.finish_reason == "stop" and result.stop == 361
    assert result.token_ids == model.script and result.completion_tokens == len(model.script)
    assert result.output.content == text.strip()


@pytest.mark.parametrize("stop", ["대단한지", "봐.", "🎉", "❤", " emoji", "꿍"])
def test_stop_strings_cut_the_text(tok, stop):
    text = next(t for t in TEXTS if stop in t)
    model = scripted(tok, text, eos=False)
    stream = Generator(model, tok).stream([360], stop_strings=[stop, "never there"])
    pieces, _ = collect(stream, model)
    result = stream.result
    assert result.text == text[: text.index(stop)] == "".join(pieces)
    assert result.finish_reason == "stop" and result.stop == stop
    assert result.completion_tokens == model.calls <= len(model.script)


def test_a_stop_string_prefix_is_held_back_then_released(tok):
    text = TEXTS[0]
    model = scripted(tok, text)
    stream = Generator(model, tok).stream([360], stop_strings=["설명해 줘", "똠얌꿍!"])
    pieces, _ = collect(stream, model)
    assert "".join(pieces) == stream.result.text == text
    assert stream.result.finish_reason == "stop" and stream.result.stop == 361


def test_length_inside_a_character(tok):
    text = "끝 🎉"
    ids = tok.encode(text)
    model = ScriptedModel(ids)
    stream = Generator(model, tok).stream([360], max_new_tokens=len(ids) - 1)
    pieces, _ = collect(stream, model)
    result = stream.result
    assert result.finish_reason == "length"
    assert "".join(pieces) == result.text == tok.decode(ids[:-1])
    assert result.text.endswith("\ufffd")


def test_reasoning_and_tool_calls_are_parsed(tok):
    gen_text = ('주사위를 두 번 굴린다.\n</think>\n\n'
                '<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}}</tool_call>\n'
                '<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}}</tool_call>')
    model = scripted(tok, gen_text)
    generator = Generator(model, tok)
    prompt = generator.encode_chat([{"role": "user", "content": "Roll D6 dice twice!"}], enable_thinking=True)
    result = generator.stream(prompt).until_done()  # reasoning mode found from the prompt's open <think>
    assert result.text == gen_text
    assert result.output.reasoning == "주사위를 두 번 굴린다."
    assert [c["function"]["name"] for c in result.output.tool_calls] == ["roll_dice", "roll_dice"]
    assert result.finish_reason == "tool_calls"

    model = scripted(tok, "그냥 답.")
    plain = generator.encode_chat([{"role": "user", "content": "hi"}])
    result = Generator(model, tok).stream(plain).until_done()
    assert result.output.reasoning is None and result.output.content == "그냥 답."
    assert result.finish_reason == "stop"


def test_close_keeps_the_partial_text(tok):
    model = scripted(tok, TEXTS[0])
    stream = Generator(model, tok).stream([360])
    first = next(stream)
    result = stream.close()
    assert result.finish_reason == "abort" and result.text.startswith(first)
    assert TEXTS[0].startswith(result.text)
    assert list(stream) == []


def test_generation_params_and_defaults():
    defaults = GenerationDefaults(do_sample=True, temperature=0.7, top_p=0.9, top_k=0, eos_token_ids=[5],
                                  max_new_tokens=33, stop_strings=["END"])
    params = GenerationParams.create(defaults)
    assert params.sampling == SamplingParams(temperature=0.7, top_p=0.9)
    assert params.max_new_tokens == 33 and params.stop_strings == ("END",)
    params = GenerationParams.create(defaults, temperature=0.2, seed=1, max_new_tokens=4, stop_strings=["x"])
    assert params.sampling.temperature == 0.2 and params.sampling.seed == 1
    assert params.max_new_tokens == 4 and params.stop_strings == ("x",)
    assert GenerationParams.create(GenerationDefaults(), top_p=0.5).sampling.greedy  # do_sample false: greedy
    assert GenerationParams.create(top_k=3, temperature=1.0).sampling == SamplingParams(temperature=1.0, top_k=3)
    with pytest.raises(TypeError, match="unknown"):
        GenerationParams.create(temprature=1.0)
    with pytest.raises(ValueError):
        GenerationParams(max_new_tokens=-1)

    model = ScriptedModel([7, 5], eos=2)
    assert Generator(model, None, defaults=defaults).eos_token_ids == (2, 5)


# ---- a random model with the real vocabulary --------------------------------------------------------------------


@pytest.fixture(scope="module")
def factory_generators(tmp_path_factory, tok):
    full = write_tiny_exaone(tmp_path_factory.mktemp("tiny-real-vocab"))
    hybrid = write_tiny_exaone(tmp_path_factory.mktemp("tiny-real-vocab-hybrid"), seed=1, sliding=True, layers=3)
    return {name: Generator.from_pretrained(path, threads=1) for name, path in (("full", full), ("hybrid", hybrid))}


@pytest.mark.parametrize("kind", ["full", "hybrid"])
def test_real_vocab_stream_matches_model_generate(factory_generators, tok, kind):
    generator = factory_generators[kind]
    prompt = generator.encode_chat([{"role": "user", "content": "너가 얼마나 대단한지 설명해 봐 😀"}])
    stream = generator.stream(prompt, max_new_tokens=24)
    pieces = list(stream)
    result = stream.result
    assert result.token_ids == generator.model.generate(prompt, 24)
    assert "".join(pieces) == result.text == tok.decode([t for t in result.token_ids if t != 361])
    assert result.prompt_tokens == len(prompt) and result.cached_tokens == 0
    assert result.completion_tokens == len(result.token_ids)
    assert result.prefill_seconds > 0 and result.decode_seconds > 0 and result.decode_tokens_per_second > 0
    assert result.usage["total_tokens"] == len(prompt) + len(result.token_ids)


@pytest.mark.parametrize("kind", ["full", "hybrid"])
@pytest.mark.parametrize("thinking", [False, True])
def test_chat_session_reuses_the_previous_turn(factory_generators, kind, thinking):
    generator = factory_generators[kind]
    chat = ChatSession(generator, system="Be brief.", thinking=thinking, max_new_tokens=6)
    first = chat.send("안녕?").until_done()
    assert first.cached_tokens == 0
    second_stream = chat.send("And then? 😀")
    second = second_stream.until_done()
    assert len(chat.conversation) == 5  # system, user, assistant, user, assistant
    # everything the cache held that the new prompt starts with was reused
    first_prompt = generator.encode_chat(chat.conversation.messages[:2], enable_thinking=thinking)
    prompt = generator.encode_chat(chat.conversation.messages[:4], enable_thinking=thinking)
    held = np.array(first_prompt + first.token_ids[:-1])
    assert second.cached_tokens == common_prefix_length(held, np.array(prompt)) >= len(first_prompt) - 2
    # the same turn computed from scratch picks the same tokens
    assert second.prompt_tokens == len(prompt)
    fresh = generator.stream(prompt, max_new_tokens=6).until_done()
    assert second.token_ids == fresh.token_ids and second.text == fresh.text

    chat.clear()
    third = chat.send("New topic.").until_done()
    assert len(chat.conversation) == 3 and third.prompt_tokens < second.prompt_tokens


def test_chat_session_sampling_with_seed_repeats(factory_generators):
    generator = factory_generators["full"]

    def answer():
        chat = ChatSession(generator, temperature=0.8, top_p=0.95, seed=11, max_new_tokens=10)
        return chat.send("hello").until_done().token_ids

    assert answer() == answer()


def test_prefill_reports_progress_chunk_by_chunk(capsys):
    from exaone_cpu.progress import PrefillProgress

    model = exaone_cpu.load(Path(__file__).parent / "fixtures" / "tiny-1.2b", prefill_chunk=8)
    calls = []
    model.forward(np.arange(1, 30), model.new_cache(), on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(8, 29), (16, 29), (24, 29), (29, 29)]
    calls.clear()
    stream = TokenStream(model, np.arange(1, 20), max_new_tokens=2, on_prefill=lambda d, t: calls.append((d, t)))
    assert len(list(stream)) == 2 and calls == [(8, 19), (16, 19), (19, 19)]  # the prompt only, not decode
    bar = PrefillProgress(threshold=10, enabled=True)
    TokenStream(model, np.arange(1, 20), max_new_tokens=1, on_prefill=bar).__next__()
    assert "prefill" in capsys.readouterr().err
    short = PrefillProgress(threshold=100, enabled=True)
    TokenStream(model, np.arange(1, 20), max_new_tokens=1, on_prefill=short).__next__()
    assert capsys.readouterr().err == ""  # a short prompt shows nothing
