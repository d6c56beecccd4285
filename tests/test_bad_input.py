"""Bad input gets a clear Python exception, never a crash or silent garbage."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu import CheckpointError, ConfigError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def copy(tmp_path):
    def make(name="tiny-1.2b"):
        dst = tmp_path / name
        shutil.copytree(FIXTURES / name, dst)
        return dst

    return make


def read_header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors(path, header, data):
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def edit_header(path, edit):
    """Rewrites a safetensors file with edit(header) applied, the data left as it is."""
    header, data = read_header(path)
    edit(header)
    write_safetensors(path, header, data)


@pytest.fixture(scope="module")
def model():
    return exaone_cpu.load(FIXTURES / "tiny-1.2b")


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exaone_cpu.load(tmp_path / "nope")


def test_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="neither a model directory nor a GGUF file"):
        exaone_cpu.load(f)


def test_missing_config(copy):
    d = copy()
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        exaone_cpu.load(d)


def test_missing_weights(copy):
    d = copy()
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        exaone_cpu.load(d)


def test_missing_shard(copy):
    d = copy("tiny-32b")
    (d / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00003"):
        exaone_cpu.load(d)


def test_truncated_file(copy):
    d = copy()
    f = d / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        exaone_cpu.load(d)


@pytest.mark.parametrize("blob", [b"", b"\x01\x02", struct.pack("<Q", 10**12) + b"{}"])
def test_truncated_or_bogus_header_length(copy, blob):
    d = copy()
    (d / "model.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError):
        exaone_cpu.load(d)


def test_corrupt_header(copy):
    d = copy()
    f = d / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8:20] = b"#garbage!!!#"
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        exaone_cpu.load(d)


def test_offsets_that_disagree_with_the_shape(copy):
    d = copy()

    def edit(header):
        header["model.norm.weight"]["shape"] = [65]

    edit_header(d / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        exaone_cpu.load(d)


def test_missing_tensor(copy):
    d = copy()

    def edit(header):
        del header["model.layers.1.mlp.up_proj.weight"]

    edit_header(d / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        exaone_cpu.load(d)


def test_missing_untied_lm_head(copy):
    d = copy("tiny-32b")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = d / index["weight_map"].pop("lm_head.weight")
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    header, data = read_header(shard)
    del header["lm_head.weight"]
    write_safetensors(shard, header, data)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        exaone_cpu.load(d)


def test_wrong_shape(copy):
    d = copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 128  # the stored MLP weights are 160 wide
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"gate_proj.weight' has shape \[160, 64\], expected \[128, 64\]"):
        exaone_cpu.load(d)


def test_wrong_dtype(copy):
    d = copy()

    def edit(header):
        info = header["model.layers.0.self_attn.q_proj.weight"]
        info["dtype"] = "I32"  # same byte size as F32

    edit_header(d / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match="q_proj.weight' has dtype I32"):
        exaone_cpu.load(d)


def test_unknown_dtype(copy):
    d = copy()

    def edit(header):
        header["model.norm.weight"]["dtype"] = "F8_E4M3"

    edit_header(d / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        exaone_cpu.load(d)


def test_unknown_model_type(copy):
    d = copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type 'llama'"):
        exaone_cpu.load(d)


def test_token_ids_out_of_range(model):
    with pytest.raises(ValueError, match="token id 512 at position 1 is out of range"):
        model.logits([1, 512, 3])
    with pytest.raises(ValueError, match="token id -1"):
        model.generate([-1], max_new_tokens=2)


def test_empty_and_malformed_input(model):
    with pytest.raises(ValueError, match="empty"):
        model.logits([])
    with pytest.raises(ValueError, match="1-D"):
        model.logits([[1, 2]])
    with pytest.raises(ValueError, match="integers"):
        model.logits([1.5, 2.0])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([1, 2], max_new_tokens=-1)


def test_prompt_beyond_max_position_embeddings(model):
    limit = model.config.max_position_embeddings
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.logits(np.ones(limit + 1, np.int64))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(np.ones(limit - 2, np.int64), max_new_tokens=5)
    cache = model.new_cache()
    model.forward(np.ones(limit, np.int64), cache)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.forward([1], cache)


def test_bad_load_options():
    with pytest.raises(ValueError, match="threads"):
        exaone_cpu.load(FIXTURES / "tiny-1.2b", threads=0)
    with pytest.raises(ValueError, match="prefill_chunk"):
        exaone_cpu.load(FIXTURES / "tiny-1.2b", prefill_chunk=0)
    with pytest.raises(TypeError):
        exaone_cpu.load(FIXTURES / "tiny-1.2b", no_such_option=1)


def test_overlapping_tensors(copy):
    d = copy()

    def edit(header):
        a, b = header["model.layers.0.post_attention_layernorm.weight"], header["model.norm.weight"]
        assert a["shape"] == b["shape"] and a["dtype"] == b["dtype"]
        b["data_offsets"] = list(a["data_offsets"])  # two tensors on the same bytes

    edit_header(d / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match="overlap"):
        exaone_cpu.load(d)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_paths_stay_inside_the_model_directory(copy, shard):
    d = copy()
    (d / "model.safetensors").rename(d / "model-00001-of-00001.safetensors")
    header, _ = read_header(d / "model-00001-of-00001.safetensors")
    weight_map = {name: "model-00001-of-00001.safetensors" for name in header if name != "__metadata__"}
    weight_map["model.norm.weight"] = shard
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="not a file of the model directory"):
        exaone_cpu.load(d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 5}}))
    with pytest.raises(CheckpointError, match="weight_map"):
        exaone_cpu.load(d)


def test_no_mmap_reads_the_weights_into_memory(copy):
    d = copy()
    mapped = exaone_cpu.load(d)
    loaded = exaone_cpu.load(d, mmap=False)
    prompt = [5, 17, 300, 42]
    want = mapped.logits(prompt)
    np.testing.assert_array_equal(loaded.logits(prompt), want)
    # rewriting the file in place (here: zeros, same size) changes nothing for the in-memory copy
    f = d / "model.safetensors"
    size = f.stat().st_size
    with open(f, "r+b") as out:
        out.seek(size // 2)
        out.write(b"\0" * (size - size // 2))
    np.testing.assert_array_equal(loaded.logits(prompt), want)
    with pytest.raises(ValueError, match="mmap"):
        exaone_cpu.load(d, mmap="no")


# ---- regressions from the loader fuzzer (tools/fuzz_loader.py) -------------------------------------------


@pytest.mark.parametrize("field,value,error,match", [
    ("architectures", 3, ConfigError, "architectures"),
    ("tie_word_embeddings", "false", ConfigError, "tie_word_embeddings"),
    ("rms_norm_eps", float("inf"), ConfigError, "rms_norm_eps"),
    ("rope_theta", float("nan"), ConfigError, "rope_theta"),
    ("num_hidden_layers", 10**9, ConfigError, "num_hidden_layers"),
    ("max_position_embeddings", 10**13, ConfigError, "max_position_embeddings"),
    ("eos_token_id", {"a": 1}, ConfigError, "eos_token_id"),
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 1e6, "factor": 8.0, "low_freq_factor": 0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, ConfigError,
     "low_freq_factor"),
])
def test_config_fields_are_checked(copy, field, value, error, match):
    d = copy()
    config = json.loads((d / "config.json").read_text())
    config[field] = value
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(error, match=match) as info:
        exaone_cpu.load(d)
    assert "config.json" in str(info.value)


def test_metadata_must_be_strings(copy):
    d = copy()
    edit_header(d / "model.safetensors", lambda h: h.__setitem__("__metadata__", "x"))
    with pytest.raises(CheckpointError, match="__metadata__"):
        exaone_cpu.load(d)
