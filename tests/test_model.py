"""The whole model against transformers: fixtures made by tools/make_fixtures.py (float32, eager)."""

from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu import _core

FIXTURES = Path(__file__).parent / "fixtures"
CAUSAL = ["tiny-1.2b", "tiny-32b", "tiny-1.2b-bf16"]
TOL = 2e-4  # of the largest |logit|, as the issue asks; we measure ~1e-6


def reference(name):
    return np.load(FIXTURES / name / "reference.npz")


@pytest.fixture(scope="module", params=CAUSAL)
def fixture(request):
    return request.param, exaone_cpu.load(FIXTURES / request.param), reference(request.param)



def rel_err(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_fixture_shapes_cover_the_released_models():
    small = exaone_cpu.Exaone4Config.from_pretrained(FIXTURES / "tiny-1.2b")
    hybrid = exaone_cpu.Exaone4Config.from_pretrained(FIXTURES / "tiny-32b")
    assert small.sliding_window is None and small.tie_word_embeddings
    assert all(small.uses_rope(i) for i in range(small.num_hidden_layers))
    assert small.head_dim != small.hidden_size // small.num_attention_heads
    assert hybrid.layer_types == ("sliding_attention",) * 3 + ("full_attention",)
    assert not hybrid.tie_word_embeddings and not hybrid.uses_rope(3) and hybrid.uses_rope(0)
    assert (FIXTURES / "tiny-32b" / "model.safetensors.index.json").is_file()  # sharded
    assert len(reference("tiny-32b")["prompt"]) > 2 * hybrid.sliding_window


def test_logits_match_transformers(fixture, isa):
    name, model, ref = fixture
    for prompt, expected in ((ref["prompt"], ref["logits"]), (ref["prompt2"], ref["logits2"])):
        logits = model.logits(prompt)
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        assert rel_err(logits, expected) < TOL, f"{name} on {isa}"


def test_greedy_continuation_matches_transformers(fixture, isa):
    name, model, ref = fixture
    tokens, step_logits = model.generate(ref["prompt"], max_new_tokens=len(ref["greedy"]),
                                         stop_at_eos=False, return_logits=True)
    assert tokens == ref["greedy"].tolist(), name
    assert rel_err(step_logits, ref["greedy_logits"]) < TOL


def test_decode_one_token_at_a_time_equals_full_forward(fixture):
    name, model, ref = fixture
    ids = ref["prompt2"]
    full = model.logits(ids)
    cache = model.new_cache()
    stepped = np.stack([model.forward([t], cache) for t in ids])
    assert rel_err(stepped, full) < 1e-5, name


@pytest.mark.parametrize("chunk", [1, 3, 5, 16])
def test_chunked_prefill_equals_one_pass(chunk):
    # tiny-32b: window 4, so chunks smaller and larger than the window wrap the sliding ring buffer
    ref = reference("tiny-32b")
    model = exaone_cpu.load(FIXTURES / "tiny-32b", prefill_chunk=chunk)
    assert rel_err(model.logits(ref["prompt2"]), ref["logits2"]) < TOL
    cache = model.new_cache()
    model.forward(ref["prompt2"][:23], cache)
    tail = model.forward(ref["prompt2"][23:], cache, all_logits=True)
    assert rel_err(tail, ref["logits2"][23:]) < TOL


def test_sliding_layers_keep_only_their_window():
    model = exaone_cpu.load(FIXTURES / "tiny-32b", prefill_chunk=8)
    cache = model.new_cache()
    ref = reference("tiny-32b")
    model.forward(ref["prompt2"], cache)  # 40 tokens
    for i, layer in enumerate(cache.layers):
        if model.config.layer_types[i] == "sliding_attention":
            assert layer.k.shape[1] == model.config.sliding_window + 8 - 1
        else:
            assert layer.k.shape[1] >= 40


def test_bf16_weights_stay_bf16_and_are_memory_mapped():
    model = exaone_cpu.load(FIXTURES / "tiny-1.2b-bf16")
    q = model.layers[0].q_proj
    assert q.wtype == _core.WeightType.BF16 and q.weight.dtype == np.uint16
    assert _is_mapped(q.weight)


def _is_mapped(a):
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base if isinstance(a, np.ndarray) else None
    return False


def test_f32_weights_are_not_copied():
    model = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    assert _is_mapped(model.layers[0].gate_proj.weight)
    assert model.lm_head.weight is model.embed_tokens.data  # tied


def test_generate_stops_at_eos():
    model = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    ref = reference("tiny-1.2b")
    greedy = ref["greedy"].tolist()
    third = greedy[2]
    assert model.generate(ref["prompt"], max_new_tokens=16, eos_token_id=third) == greedy[:3]
    assert model.generate(ref["prompt"], max_new_tokens=16, eos_token_id=[99999, third]) == greedy[:3]
    assert model.generate(ref["prompt"], max_new_tokens=5, stop_at_eos=False) == greedy[:5]
    assert model.generate(ref["prompt"], max_new_tokens=0) == []


def test_threads_do_not_change_results():
    ref = reference("tiny-32b")
    outs = []
    for threads in (1, 2, 3):
        model = exaone_cpu.load(FIXTURES / "tiny-32b", threads=threads)
        outs.append(model.logits(ref["prompt"]))
    exaone_cpu.loading.set_threads(None)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_compute_releases_the_gil():
    import threading
    import time

    model = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    x = np.ones((64, 4096), np.float32)
    w = np.ones((4096, 4096), np.float32)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.perf_counter()
        _core.matmul(x, w, _core.WeightType.F32)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        t.join()
    during = [s for s in ticks if start <= s <= start + elapsed]
    # a GIL-holding call of this length would starve the ticker completely
    assert elapsed < 0.02 or len(during) >= 3, (elapsed, len(during))
    del model


def test_batched_step_equals_separate_sequences():
    ref = reference("tiny-32b")
    model = exaone_cpu.load(FIXTURES / "tiny-32b")
    prompts = [ref["prompt"][:3], ref["prompt2"][:17], ref["prompt"][:11]]
    caches = [model.new_cache() for _ in prompts]
    for p, c in zip(prompts, caches):
        model.forward(p, c)
    separate_caches = [model.new_cache() for _ in prompts]
    for p, c in zip(prompts, separate_caches):
        model.forward(p, c)
    steps = [[7, 8, 9], [100, 200, 300, 400], [5, 6]]  # several decode steps, different lengths
    for step in range(2):
        batched = model.forward_batch([[s[step]] for s in steps], caches)
        for b, s in enumerate(steps):
            alone = model.forward([s[step]], separate_caches[b])
            assert rel_err(batched[b], alone) < 1e-5
    # a mixed step: one sequence feeds several tokens while the others decode one
    batched = model.forward_batch([[1, 2, 3], [4], [5]], caches)
    expected = model.forward([1, 2, 3], separate_caches[0])
    assert rel_err(batched[0], expected) < 1e-5
    with pytest.raises(ValueError, match="one cache per sequence"):
        model.forward_batch([[1]], caches)
    with pytest.raises(ValueError, match="twice"):
        model.forward_batch([[1], [2]], [caches[0], caches[0]])


def test_presized_cache_does_not_grow_and_gives_the_same_logits():
    ref = reference("tiny-1.2b")
    model = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    ids = ref["prompt2"]
    cache = model.new_cache(len(ids))
    buffers = [layer.k for layer in cache.layers]
    stepped = np.stack([model.forward([t], cache) for t in ids])
    assert all(layer.k is b for layer, b in zip(cache.layers, buffers))  # never reallocated
    assert rel_err(stepped, model.logits(ids)) < 1e-5


@pytest.mark.parametrize("name", ["tiny-1.2b", "tiny-32b"])
def test_f16_kv_cache(name):
    """kv_dtype="f16" stores K/V rounded to f16 (the cache is half the size) and attention widens
    them back: the logits move by about f16 rounding, far less than between quantization formats,
    and greedy decoding still matches transformers."""
    ref = reference(name)
    model = exaone_cpu.load(FIXTURES / name, kv_dtype="f16")
    exact = exaone_cpu.load(FIXTURES / name)
    cache = model.new_cache()
    assert all(layer.k.dtype == np.float16 and layer.v.dtype == np.float16 for layer in cache.layers)
    assert cache.nbytes < exact.new_cache().nbytes
    logits = model.logits(ref["prompt"])
    err = rel_err(logits, ref["logits"])
    assert 1e-6 < err < 5e-3, err  # not f32 (the cache really is f16), but close
    assert model.generate(ref["prompt"], len(ref["greedy"]), stop_at_eos=False) == list(ref["greedy"])
    with pytest.raises(ValueError, match="kv_dtype"):
        exaone_cpu.load(FIXTURES / name, kv_dtype="bf16")


@pytest.mark.parametrize("name", ["tiny-1.2b", "tiny-32b"])
def test_int8_kv_cache(name):
    """kv_dtype="int8": K/V rows as int8 with a scale each (a quarter of f32's bytes and scales);
    decoding step by step over the int8 cache gives the prompt's logits, and the cache grows, copies
    and truncates with its scales."""
    ref = reference(name)
    model = exaone_cpu.load(FIXTURES / name, kv_dtype="int8")
    exact = exaone_cpu.load(FIXTURES / name)
    cache = model.new_cache()
    assert all(layer.k.dtype == np.int8 and layer.k_scale.shape == layer.k.shape[:2] for layer in cache.layers)
    assert cache.nbytes < 0.4 * exact.new_cache().nbytes
    ids = ref["prompt"]
    logits = model.logits(ids)
    err = rel_err(logits, ref["logits"])
    assert 1e-5 < err < 5e-2, err  # not f32 (the cache really is int8), but close
    stepped = np.stack([model.forward([t], cache) for t in ids])  # a prompt's rows see int8 K/V too
    assert rel_err(stepped, logits) < 1e-4
    half = cache.copy_prefix(len(ids) // 2, 8)
    assert half is not None and half.layers[0].k_scale is not None
    assert rel_err(model.forward(ids[len(ids) // 2 :], half), stepped[-1]) < 1e-4
    assert cache.truncate(len(ids) - 3)
    assert rel_err(model.forward(ids[-3:], cache), stepped[-1]) < 1e-4


def test_int8_kv_cache_accuracy_on_the_trained_fixture():
    """The issue's bound: mean KL <= 1e-3 against the f32 cache on the trained fixture (f32
    weights, so the cache is the only difference). Measured int8 4.4e-4 / 99.5 %, f16 1.2e-6 / 100 %."""
    ref = reference("tiny-trained")
    exact = exaone_cpu.load(FIXTURES / "tiny-trained")
    results = {}
    for kv in ("int8", "f16"):
        model = exaone_cpu.load(FIXTURES / "tiny-trained", kv_dtype=kv)
        kls, agree = [], []
        for key in ("prompt", "prompt2"):
            p, q = exact.logits(ref[key]).astype(np.float64), model.logits(ref[key]).astype(np.float64)
            lp = p - p.max(-1, keepdims=True)
            lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
            lq = q - q.max(-1, keepdims=True)
            lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
            kls.append((np.exp(lp) * (lp - lq)).sum(-1))
            agree.append(p.argmax(-1) == q.argmax(-1))
        results[kv] = (float(np.concatenate(kls).mean()), float(np.concatenate(agree).mean()))
    print(results)
    kl8, top8 = results["int8"]
    assert kl8 <= 1e-3 and top8 >= 0.98, results
    assert results["f16"][0] < kl8  # f16 is the finer of the two


def test_attention_reads_f16_caches_exactly_as_their_f32_values(isa):
    rng = np.random.default_rng(3)
    q = rng.standard_normal((3, 4, 32)).astype(np.float32)
    k = rng.standard_normal((2, 10, 32)).astype(np.float16)
    v = rng.standard_normal((2, 10, 32)).astype(np.float16)
    key_pos = np.array([8, 9, 0, 1, 2, 3, 4, 5, 6, -1], np.int64)  # a ring, one empty slot
    q_pos = np.array([5, 7, 9], np.int64)
    for window in (0, 3):
        a = _core.attention(q, k, v, key_pos, q_pos, window, 0.2)
        b = _core.attention(q, k.astype(np.float32), v.astype(np.float32), key_pos, q_pos, window, 0.2)
        assert np.array_equal(a, b)
        assert np.array_equal(a, _core.attention(q, k.view(np.uint16), v.view(np.uint16), key_pos, q_pos, window, 0.2))
    with pytest.raises(ValueError, match="same dtype"):
        _core.attention(q, k, v.astype(np.float32), key_pos, q_pos, 0, 0.2)
    with pytest.raises(ValueError, match="float32, float16 or int8"):
        _core.attention(q, k.astype(np.float64), v.astype(np.float64), key_pos, q_pos, 0, 0.2)
