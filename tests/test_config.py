"""Config parsing: every spelling real checkpoints use, and clear errors for the rest."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from exaone_cpu import ConfigError, Exaone4Config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"
FIXTURES = Path(__file__).parent / "fixtures"

BASE = {
    "model_type": "exaone4",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1e6,
    "sliding_window": None,
}


def cfg(**changes):
    raw = dict(BASE)
    raw.update(changes)
    return Exaone4Config.from_dict(raw)


def test_real_exaone_1_2b_config():
    if not SHARED.is_dir():
        pytest.skip("../shared/exaone-4.0-1.2b not present")
    c = Exaone4Config.from_pretrained(SHARED)
    assert (c.num_hidden_layers, c.hidden_size, c.head_dim, c.num_key_value_heads) == (30, 2048, 64, 8)
    assert c.sliding_window is None and set(c.layer_types) == {"full_attention"}
    assert c.rope.rope_type == "llama3" and c.rope.theta == 1e6 and c.rope.factor == 16
    assert c.tie_word_embeddings and c.eos_token_ids == (361,)


def test_rope_parameters_spelling_equals_rope_scaling_spelling():
    scaling = {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    old = cfg(rope_scaling=scaling)
    new = cfg(rope_theta=None, rope_parameters=dict(scaling, rope_theta=1e6))
    assert old.rope == new.rope
    with pytest.raises(ConfigError, match="contradicts"):
        cfg(rope_theta=1e4, rope_parameters=dict(scaling, rope_theta=1e6))


def test_llama3_inv_freq_matches_the_formula():
    c = cfg(rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    got = c.rope.inv_freq(32)
    base = 1.0 / 1e6 ** (np.arange(0, 32, 2) / 32)
    for f, b in zip(got, base):
        wavelen = 2 * math.pi / b
        if wavelen < 64 / 4:
            want = b
        elif wavelen > 64 / 1:
            want = b / 16
        else:
            smooth = (64 / wavelen - 1) / (4 - 1)
            want = (1 - smooth) * b / 16 + smooth * b
        assert f == pytest.approx(want, rel=1e-5)
    assert got.dtype == np.float32 and len(got) == 16


def test_layer_types_from_every_spelling():
    full, slide = "full_attention", "sliding_attention"
    assert cfg().layer_types == (full,) * 8
    assert cfg(sliding_window=4, sliding_window_pattern=4).layer_types == (slide, slide, slide, full) * 2
    assert cfg(sliding_window=4, sliding_window_pattern="LLLG").layer_types == (slide, slide, slide, full) * 2
    # string pattern: the last layer is always global
    assert cfg(sliding_window=4, sliding_window_pattern="LLL").layer_types == (slide,) * 7 + (full,)
    # sliding_window null: no sliding layers whatever the pattern says (transformers writes 0 there)
    assert cfg(sliding_window=None, sliding_window_pattern=0).layer_types == (full,) * 8
    explicit = [slide, full] * 4
    assert cfg(sliding_window=2, sliding_window_pattern=4, layer_types=explicit).layer_types == tuple(explicit)


def test_rope_on_which_layers():
    hybrid = cfg(sliding_window=4, sliding_window_pattern="LLLG")
    assert [hybrid.uses_rope(i) for i in range(4)] == [True, True, True, False]
    assert [hybrid.window(i) for i in range(4)] == [4, 4, 4, None]
    assert all(cfg().uses_rope(i) for i in range(8))


def test_head_dim_defaults_to_hidden_over_heads():
    raw = dict(BASE)
    del raw["head_dim"]
    assert Exaone4Config.from_dict(raw).head_dim == 16


def test_eos_as_list_and_labels():
    c = cfg(eos_token_id=[2, 361], id2label={"0": "neg", "1": "pos"}, label2id={"neg": 0, "pos": 1})
    assert c.eos_token_ids == (2, 361) and c.id2label == {0: "neg", 1: "pos"} and c.num_labels == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"model_type": None}, "model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_key_value_heads": 3}, "multiple"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"vocab_size": "big"}, "vocab_size"),
        ({"head_dim": 33}, "even"),
        ({"sliding_window": -1}, "sliding_window"),
        ({"layer_types": ["full_attention"] * 3}, "one entry per layer"),
        ({"layer_types": ["global"] * 8}, "unknown layer type"),
        ({"layer_types": ["sliding_attention"] * 8}, "sliding_window is null"),
        ({"sliding_window": 4, "sliding_window_pattern": "LXG"}, "'L' and 'G'"),
        ({"sliding_window": 4, "sliding_window_pattern": 0}, "positive"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope_type"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "missing"),
        ({"rope_theta": -5}, "rope_theta"),
        ({"architectures": ["LlamaForCausalLM"]}, "unknown architecture"),
        ({"id2label": {"0": "a", "1": "b"}, "num_labels": 3}, "num_labels"),
        ({"id2label": {"0": "a", "2": "b"}}, "id2label keys"),
        ({"id2label": {"0": "a", "1": "b"}, "label2id": {"a": 1, "b": 0}}, "label2id"),
    ],
)
def test_bad_values_raise_clear_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        cfg(**changes)


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Exaone4Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Exaone4Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="JSON object"):
        Exaone4Config.from_pretrained(tmp_path)


def test_fixture_configs_written_by_transformers_parse():
    for name in ("tiny-1.2b", "tiny-32b", "tiny-1.2b-bf16", "tiny-seqcls", "tiny-tokcls", "tiny-qa"):
        Exaone4Config.from_pretrained(FIXTURES / name)
