"""The numpy sampler: filters, penalties and seeding, checked against hand computations."""

import json

import numpy as np
import pytest

from exaone_cpu.sampling import (
    GenerationDefaults,
    Sampler,
    SamplingParams,
    apply_presence_frequency_penalty,
    apply_repetition_penalty,
    find_stop,
    load_generation_config,
    min_p_filter,
    stop_prefix_length,
    top_k_filter,
    top_p_filter,
)


def random_logits(seed=0, size=1000):
    return np.random.default_rng(seed).normal(0, 3, size).astype(np.float32)


def kept(logits):
    return set(np.flatnonzero(np.isfinite(logits)).tolist())


def test_default_params_are_greedy():
    logits = random_logits()
    sampler = Sampler()
    assert SamplingParams().greedy
    assert sampler.sample(logits) == int(np.argmax(logits))


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


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([0.05, 0.40, 0.10, 0.25, 0.20])
    logits = np.log(probs).astype(np.float32)
    # Independent computation: sort descending, take tokens until the mass reaches p.
    # (p values sit away from the cumulative masses .40/.65/.85/.95, where float rounding decides.)
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    for p in (0.1, 0.39, 0.41, 0.6, 0.66, 0.84, 0.86, 0.94, 0.96):
        n = int(np.argmax(mass >= p)) + 1
        assert kept(top_p_filter(logits, p)) == set(order[:n].tolist()), p
    assert kept(top_p_filter(logits, 0.6)) == {1, 3}
    assert kept(top_p_filter(logits, 1.0)) == set(range(5))


def test_top_p_on_random_logits():
    logits = random_logits(3)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    for p in (0.3, 0.8, 0.95):
        n = int(np.argmax(mass >= p)) + 1
        assert kept(top_p_filter(logits, p)) == set(order[:n].tolist())


def test_top_k_filter():
    logits = np.array([1.0, 5.0, 3.0, 4.0, 2.0], dtype=np.float32)
    assert kept(top_k_filter(logits, 2)) == {1, 3}
    assert kept(top_k_filter(logits, 0)) == set(range(5))
    tied = np.array([1.0, 2.0, 2.0, 0.0], dtype=np.float32)
    assert kept(top_k_filter(tied, 2)) == {1, 2}


def test_min_p():
    probs = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = np.log(probs).astype(np.float32)
    # threshold = min_p * max prob: 0.15 * 0.5 = 0.075 keeps 0.1, drops 0.06
    assert kept(min_p_filter(logits, 0.15)) == {0, 1, 2}
    assert kept(min_p_filter(logits, 0.5)) == {0, 1}
    assert kept(min_p_filter(logits, 0.7)) == {0}
    assert kept(min_p_filter(logits, 0.0)) == set(range(5))
    sampler = Sampler(SamplingParams(temperature=1.0, min_p=0.7, seed=0))
    assert all(sampler.sample(logits) == 0 for _ in range(20))


def test_temperature_towards_zero_is_greedy_and_temperature_scales():
    logits = random_logits(5, 50)
    cold = Sampler(SamplingParams(temperature=1e-4, seed=0))
    assert all(cold.sample(logits) == int(np.argmax(logits)) for _ in range(50))
    probs = Sampler(SamplingParams(temperature=2.0)).probabilities(logits)
    scaled = np.exp((logits / 2.0) - (logits / 2.0).max())
    np.testing.assert_allclose(probs, scaled / scaled.sum(), rtol=1e-5)


def test_repetition_penalty_as_transformers_defines_it():
    logits = np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    out = apply_repetition_penalty(logits, [0, 1, 1, 4], 2.0)
    # seen: 0 (positive -> /2), 1 (negative -> *2, once despite repeating), 4 (positive -> /2)
    np.testing.assert_array_equal(out, np.array([1.0, -4.0, 1.0, -1.0, 0.25], dtype=np.float32))
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [], 2.0), logits)


def test_presence_and_frequency_penalties_as_openai_defines_them():
    logits = np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    out = apply_presence_frequency_penalty(logits, [0, 1, 1, 1, 4], presence=1.5, frequency=0.25)
    expected = np.array([2.0 - 1.5 - 0.25, -2.0 - 1.5 - 0.75, 1.0, -1.0, 0.5 - 1.5 - 0.25], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_penalties_apply_before_greedy_choice_in_order():
    logits = np.array([3.0, 2.9, -5.0], dtype=np.float32)
    assert Sampler(SamplingParams(repetition_penalty=1.2)).sample(logits, [0]) == 1  # 3.0/1.2 = 2.5 < 2.9
    assert Sampler(SamplingParams(presence_penalty=0.5)).sample(logits, [0]) == 1
    params = SamplingParams(repetition_penalty=2.0, presence_penalty=1.0, frequency_penalty=0.5)
    processed = Sampler(params).process(logits, [0, 0, 2])
    # repetition first (3/2, -5*2), then presence + frequency*count
    np.testing.assert_allclose(processed, [1.5 - 1.0 - 1.0, 2.9, -10.0 - 1.0 - 0.5], atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [{"temperature": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"min_p": 2.0}, {"repetition_penalty": 0}],
)
def test_invalid_params(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


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


def test_stop_strings():
    assert find_stop("Hello world. Observation: x", ["Observation:", "world"]) == (6, "world")
    assert find_stop("abc", ["x"]) is None
    assert find_stop("the END END", ["END", "END END"]) == (4, "END END")
    text = "answer\nObs"
    assert stop_prefix_length(text, ["Observation:"]) == 3
    assert stop_prefix_length("answer", ["Observation:"]) == 0
