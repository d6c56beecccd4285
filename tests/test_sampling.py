"""The C++ sampler (exaone_cpu.sampling.Sampler over _core.Sampler): checked against hand computations and
against the plain numpy reference of tests/sampling_reference.py on every kernel variant."""

import json
import math

import numpy as np
import pytest

import sampling_reference as ref
from exaone_cpu import _core
from exaone_cpu.sampling import (
    GenerationDefaults,
    Sampler,
    SamplingParams,
    load_generation_config,
    logprobs,
)


def random_logits(seed=0, size=1000, scale=3.0):
    return np.random.default_rng(seed).normal(0, scale, size).astype(np.float32)


def kept_by(params, logits, **kw):
    return set(np.flatnonzero(Sampler(params).probabilities(logits, **kw)).tolist())


def test_default_params_are_greedy():
    logits = random_logits()
    sampler = Sampler()
    assert SamplingParams().greedy
    assert sampler.sample(logits) == int(np.argmax(logits))
    tied = np.array([0.0, 3.0, 1.0, 3.0], np.float32)
    assert Sampler().sample(tied) == 1  # the lowest id among equal maxima


def test_top_k_1_equals_greedy():
    for seed in range(5):
        logits = random_logits(seed)
        sampler = Sampler(SamplingParams(temperature=1.0, top_k=1, seed=seed))
        assert all(sampler.sample(logits) == int(np.argmax(logits)) for _ in range(20))


def test_fixed_seed_repeats_and_other_seed_differs():
    flat = np.zeros(1000, dtype=np.float32)
    a = Sampler(SamplingParams(temperature=1.0, seed=1234))
    b = Sampler(SamplingParams(temperature=1.0, seed=1234))
    c = Sampler(SamplingParams(temperature=1.0, seed=4321))
    seq_a = [a.sample(flat) for _ in range(50)]
    seq_b = [b.sample(flat) for _ in range(50)]
    seq_c = [c.sample(flat) for _ in range(50)]
    assert seq_a == seq_b
    assert seq_a != seq_c
    assert len(set(seq_a)) > 25  # a flat distribution really is sampled
    # negative seeds are taken modulo 2**64
    d = Sampler(SamplingParams(temperature=1.0, seed=-1))
    e = Sampler(SamplingParams(temperature=1.0, seed=2**64 - 1))
    assert [d.sample(flat) for _ in range(20)] == [e.sample(flat) for _ in range(20)]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([0.05, 0.40, 0.10, 0.25, 0.20])
    logits = np.log(probs).astype(np.float32)
    # Independent computation: sort descending, take tokens until the mass reaches p.
    # (p values sit away from the cumulative masses .40/.65/.85/.95, where float rounding decides.)
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    for p in (0.1, 0.39, 0.41, 0.6, 0.66, 0.84, 0.86, 0.94, 0.96):
        n = int(np.argmax(mass >= p)) + 1
        assert kept_by(SamplingParams(temperature=1.0, top_p=p), logits) == set(order[:n].tolist()), p
    assert kept_by(SamplingParams(temperature=1.0, top_p=0.6), logits) == {1, 3}
    assert kept_by(SamplingParams(temperature=1.0, top_p=1.0), logits) == set(range(5))


def test_top_p_on_random_logits():
    logits = random_logits(3)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    for p in (0.3, 0.8, 0.95):
        n = int(np.argmax(mass >= p)) + 1
        assert kept_by(SamplingParams(temperature=1.0, top_p=p), logits) == set(order[:n].tolist())


def test_top_k_keeps_ties():
    logits = np.array([1.0, 5.0, 3.0, 4.0, 2.0], dtype=np.float32)
    assert kept_by(SamplingParams(temperature=1.0, top_k=2), logits) == {1, 3}
    assert kept_by(SamplingParams(temperature=1.0, top_k=0), logits) == set(range(5))
    tied = np.array([1.0, 2.0, 2.0, 0.0], dtype=np.float32)
    assert kept_by(SamplingParams(temperature=1.0, top_k=1), tied) == {1, 2}


def test_min_p():
    probs = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = np.log(probs).astype(np.float32)
    # threshold = min_p * max prob: 0.15 * 0.5 = 0.075 keeps 0.1, drops 0.06
    assert kept_by(SamplingParams(temperature=1.0, min_p=0.15), logits) == {0, 1, 2}
    assert kept_by(SamplingParams(temperature=1.0, min_p=0.5), logits) == {0, 1}
    assert kept_by(SamplingParams(temperature=1.0, min_p=0.7), logits) == {0}
    assert kept_by(SamplingParams(temperature=1.0, min_p=0.0), logits) == set(range(5))
    sampler = Sampler(SamplingParams(temperature=1.0, min_p=0.7, seed=0))
    assert all(sampler.sample(logits) == 0 for _ in range(20))


def test_temperature_towards_zero_is_greedy_and_temperature_scales():
    logits = random_logits(5, 50)
    cold = Sampler(SamplingParams(temperature=1e-4, seed=0))
    assert all(cold.sample(logits) == int(np.argmax(logits)) for _ in range(50))
    colder = Sampler(SamplingParams(temperature=1e-300, seed=0))  # 1/T overflows: still the argmax
    assert colder.sample(logits) == int(np.argmax(logits))
    probs = Sampler(SamplingParams(temperature=2.0)).probabilities(logits)
    scaled = np.exp((logits / 2.0) - (logits / 2.0).max())
    np.testing.assert_allclose(probs, scaled / scaled.sum(), rtol=1e-5)


def test_repetition_penalty_as_transformers_defines_it():
    logits = np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    # seen: 0 (positive -> /2), 1 (negative -> *2, once despite repeating), 4 (positive -> /2)
    sampler = Sampler(SamplingParams(temperature=1.0, repetition_penalty=2.0), 5, prompt_ids=[0, 1, 1])
    sampler.accept(4)
    sampler.accept(1)
    expected = np.exp(np.array([1.0, -4.0, 1.0, -1.0, 0.25]))
    np.testing.assert_allclose(sampler.probabilities(logits), expected / expected.sum(), rtol=1e-6)


def test_presence_and_frequency_penalties_as_openai_defines_them():
    logits = np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    # counted over the output only: the prompt's 2 is not penalised
    sampler = Sampler(SamplingParams(temperature=1.0, presence_penalty=1.5, frequency_penalty=0.25), 5, prompt_ids=[2])
    for t in [0, 1, 1, 1, 4]:
        sampler.accept(t)
    expected = np.exp(np.array([2.0 - 1.5 - 0.25, -2.0 - 1.5 - 0.75, 1.0, -1.0, 0.5 - 1.5 - 0.25]))
    np.testing.assert_allclose(sampler.probabilities(logits), expected / expected.sum(), rtol=1e-6)
    sampler.rollback(1)  # only the first 0 remains
    expected = np.exp(np.array([2.0 - 1.75, -2.0, 1.0, -1.0, 0.5]))
    np.testing.assert_allclose(sampler.probabilities(logits), expected / expected.sum(), rtol=1e-6)


def test_penalties_apply_before_greedy_choice_in_order():
    logits = np.array([3.0, 2.9, -5.0], dtype=np.float32)
    assert Sampler(SamplingParams(repetition_penalty=1.2), 3, prompt_ids=[0]).sample(logits) == 1  # 2.5 < 2.9
    s = Sampler(SamplingParams(presence_penalty=0.5), 3, prompt_ids=[0])
    assert s.sample(logits) == 0  # the prompt is not counted by presence
    s.accept(0)
    assert s.sample(logits) == 1


def test_logit_bias_and_masks():
    logits = np.array([3.0, 2.0, 1.0, 0.0], np.float32)
    assert Sampler(SamplingParams(logit_bias={3: 100})).sample(logits) == 3
    assert Sampler(SamplingParams(logit_bias={0: -100})).sample(logits) == 1
    assert Sampler().sample(logits, banned=np.array([0, 1])) == 2
    allowed = np.array([0b1100], np.uint32)
    assert Sampler().sample(logits, allowed=allowed) == 2
    with pytest.raises(ValueError, match="every token is masked"):
        Sampler().sample(logits, banned=np.arange(4))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Sampler(SamplingParams(logit_bias={4: 1.0})).sample(logits)


@pytest.mark.parametrize(
    "bad",
    [{"temperature": -1}, {"temperature": math.nan}, {"temperature": math.inf}, {"top_p": 0.0}, {"top_p": 1.5},
     {"top_p": math.nan}, {"top_k": -1}, {"top_k": 1.5}, {"min_p": 2.0}, {"repetition_penalty": 0},
     {"presence_penalty": math.inf}, {"frequency_penalty": "1"}, {"seed": 1.5}, {"logit_bias": {1: math.nan}},
     {"logit_bias": {-1: 1.0}}, {"logit_bias": [1, 2]}],
)
def test_invalid_params(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        SamplingParams(**bad)


def test_bad_logits_are_a_value_error():
    for bad in (np.nan, np.inf):
        logits = random_logits(size=20)
        logits[3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            Sampler(SamplingParams(temperature=1.0, seed=0)).sample(logits)
    sampler = Sampler(vocab_size=20)
    with pytest.raises(ValueError, match="vocabulary of 20"):
        sampler.sample(random_logits(size=21))


# ---- against the numpy reference, on every kernel variant ---------------------------------------------------

SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=0.0, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2),
    dict(temperature=1.0),
    dict(temperature=0.6, top_p=0.95, presence_penalty=1.5),
    dict(temperature=0.7, top_k=50),
    dict(temperature=1.3, top_k=5000),
    dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05),
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.5, top_p=0.5, repetition_penalty=1.2, frequency_penalty=0.3),
    dict(temperature=2.0, top_p=0.99, logit_bias={7: 5.0, 11: -3.0}),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=[",".join(f"{k}={v}" for k, v in s.items()) for s in SETTINGS])
def test_matches_numpy_reference(isa, setting):
    vocab = 102400 if setting.get("top_k") == 5000 else 5003
    rng = np.random.default_rng(len(str(setting)))
    prompt = rng.integers(0, vocab, 30)
    output = rng.integers(0, vocab, 40)
    output[:10] = output[0]  # repeats for the frequency penalty
    banned = np.array([1, 2, 3])
    filters = {k: setting[k] for k in ("top_k", "top_p", "min_p") if k in setting}
    penalties = {k: setting[k] for k in ("repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias")
                 if k in setting}
    for trial in range(4):
        logits = (rng.standard_normal(vocab) * (1.0 + 2 * trial)).astype(np.float32)
        logits[rng.integers(0, vocab, 5)] = logits.max()  # ties at the top
        sampler = Sampler(SamplingParams(seed=trial, **setting), vocab, prompt_ids=prompt)
        for t in output:
            sampler.accept(int(t))
        w = ref.penalised(logits, prompt=prompt, output=output, banned=banned, **penalties)
        expected = ref.probabilities(w, temperature=setting["temperature"], **filters)
        got = sampler.probabilities(logits, banned=banned)
        assert set(np.flatnonzero(got)) == set(np.flatnonzero(expected))  # the same filtered set
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        for u in rng.random(25):
            want = ref.draw(w, u, temperature=setting["temperature"], **filters)
            assert sampler.sample(logits, banned=banned, uniform=float(u)) == want


def test_draws_follow_the_distribution():
    logits = random_logits(7, 50, scale=1.0)
    sampler = Sampler(SamplingParams(temperature=0.8, top_p=0.9, seed=3))
    expected = sampler.probabilities(logits)
    draws = np.bincount([sampler.sample(logits) for _ in range(20000)], minlength=50) / 20000
    assert set(np.flatnonzero(draws)) <= set(np.flatnonzero(expected))
    assert np.abs(draws - expected).max() < 0.015


def test_logprobs_match_log_softmax(isa):
    logits = random_logits(11, 4099)
    logits[[5, 9]] = logits.max()
    value, top = logprobs(logits, 123, top_n=5)
    expected = ref.log_softmax(logits)
    assert value == pytest.approx(expected[123], abs=1e-5)
    order = np.argsort(-logits, kind="stable")[:5]
    assert [t for t, _ in top] == order.tolist()
    np.testing.assert_allclose([v for _, v in top], expected[order], atol=1e-5)


def test_core_sampler_checks_its_arguments():
    s = _core.Sampler(10, temperature=1.0, seed=1)
    with pytest.raises(ValueError, match="logits"):
        s.sample(np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="logits"):
        s.sample(np.zeros(10, np.float64))
    with pytest.raises(ValueError, match="out of range"):
        s.accept(10)
    with pytest.raises(ValueError, match="allowed"):
        s.sample(np.zeros(10, np.float32), allowed=np.zeros(2, np.uint32))


def test_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.95, "eos_token_id": [361, 2], "pad_token_id": 0})
    )
    cfg = load_generation_config(tmp_path)
    assert cfg.eos_token_ids == [361, 2] and cfg.pad_token_id == 0
    assert cfg.top_k == 50  # transformers' default when the file does not set it
    params = cfg.sampling_params()
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.95, 50)
    assert cfg.sampling_params(top_k=0, presence_penalty=1.5).presence_penalty == 1.5

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 361, "bos_token_id": 1}))
    cfg = load_generation_config(tmp_path)
    assert cfg.eos_token_ids == [361] and not cfg.do_sample
    assert cfg.sampling_params().greedy
    assert load_generation_config(tmp_path / "missing") == GenerationDefaults()
