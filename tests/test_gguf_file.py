"""The GGUF reader and the block-type traits table: every dequantizer equals the `gguf` package's
reference bit for bit on random blocks (any byte pattern is a valid block, NaN and inf scales
included), files written by gguf.GGUFWriter read back exactly, and corrupt or truncated files raise
GGUFError naming the file."""

import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from exaone_cpu.formats import GGML_TYPE_BY_NAME, GGML_TYPES, ggml_type_name  # noqa: E402
from exaone_cpu.gguf_file import GGUFError, GGUFFile, is_gguf  # noqa: E402


@pytest.mark.parametrize("name", sorted(GGML_TYPE_BY_NAME))
def test_dequantize_matches_gguf_reference_bit_for_bit(name):
    t = GGML_TYPE_BY_NAME[name]
    ref_bs, ref_ts = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.id)]
    assert (t.block_size, t.type_size) == (ref_bs, ref_ts)
    rng = np.random.default_rng(t.id)
    for values in (t.block_size, 4 * max(t.block_size, 64)):
        raw = rng.integers(0, 256, size=(5, t.row_bytes(values)), dtype=np.uint8)
        with np.errstate(invalid="ignore", over="ignore"):
            want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(t.id)).astype(np.float32)
            got = t.dequantize(raw, values)
        assert got.shape == (5, values) and got.dtype == np.float32
        diff = np.flatnonzero(want.view(np.uint32) != got.view(np.uint32))
        assert diff.size == 0, f"{name}: {diff.size} values differ, first at {diff[0]}: {got.ravel()[diff[0]]} vs {want.ravel()[diff[0]]}"


def test_quantized_blocks_round_trip_through_gguf_quantizer():
    # Blocks made by the reference quantizer (realistic scales, no NaN) dequantize identically.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    for name in ("Q8_0", "Q4_0", "BF16", "F16"):
        qtype = getattr(gguf.GGMLQuantizationType, name)
        raw = gguf.quants.quantize(x, qtype)
        raw = raw.view(np.uint8).reshape(4, -1)
        t = GGML_TYPE_BY_NAME[name]
        np.testing.assert_array_equal(t.dequantize(raw, 512), gguf.quants.dequantize(raw, qtype))


def test_type_names():
    assert ggml_type_name(12) == "Q4_K"
    assert ggml_type_name(11) == "Q3_K"  # known, not read
    assert ggml_type_name(999) == "unknown type 999"
    for t in GGML_TYPES.values():
        assert gguf.GGMLQuantizationType(t.id).name == t.name


def _write(path, tensors, metadata=None, alignment=None):
    w = gguf.GGUFWriter(str(path), "exaone4")
    if alignment:
        w.data_alignment = alignment
        w.add_uint32("general.alignment", alignment)
    for key, (kind, value) in (metadata or {}).items():
        getattr(w, f"add_{kind}")(key, value)
    for name, (arr, qtype, shape) in tensors.items():
        w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=qtype)  # raw_shape: bytes per row
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _random_tensors(rng):
    out = {}
    for i, name in enumerate(("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")):
        t = GGML_TYPE_BY_NAME[name]
        rows, cols = 3 + i, 256 * (1 + i % 2)
        raw = rng.integers(0, 256, size=(rows, t.row_bytes(cols)), dtype=np.uint8)
        if name == "F32":
            raw = rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint8)
        out[f"blk.{i}.w"] = (raw, gguf.GGMLQuantizationType(t.id), (rows, cols))
    return out


def test_reader_matches_writer(tmp_path):
    rng = np.random.default_rng(2)
    tensors = _random_tensors(rng)
    meta = {
        "exaone4.block_count": ("uint32", 3),
        "exaone4.rope.freq_base": ("float32", 1e6),
        "tokenizer.ggml.tokens": ("array", ["a", "b", "é", "<|endofturn|>"]),
        "tokenizer.ggml.token_type": ("array", [1, 1, 1, 3]),
        "tokenizer.chat_template": ("string", "{{ messages }}"),
        "exaone4.attention.sliding_window_pattern": ("array", [True, False, True]),
        "some.int64": ("int64", -5),
        "some.bool": ("bool", True),
        "some.float64": ("float64", 0.25),
    }
    path = tmp_path / "m.gguf"
    _write(path, tensors, meta)
    f = GGUFFile(path)
    assert is_gguf(path) and not is_gguf(tmp_path)
    assert f.architecture == "exaone4" and f.version == 3
    assert f.metadata["exaone4.block_count"] == 3
    assert f.metadata["exaone4.rope.freq_base"] == pytest.approx(1e6)
    assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b", "é", "<|endofturn|>"]
    assert f.metadata["tokenizer.ggml.token_type"] == [1, 1, 1, 3]
    assert f.metadata["exaone4.attention.sliding_window_pattern"] == [True, False, True]
    assert f.metadata["some.int64"] == -5 and f.metadata["some.bool"] is True
    assert f.get("exaone4.block_count", int) == 3
    with pytest.raises(GGUFError, match="'some.bool' must be int"):
        f.get("some.bool", int)
    with pytest.raises(GGUFError, match="'missing.key' is missing"):
        f.get("missing.key", int, required=True)
    ref = gguf.GGUFReader(str(path))
    assert list(f.tensors) == [t.name for t in ref.tensors]
    for rt in ref.tensors:
        t = f.tensors[rt.name]
        raw, qtype, shape = tensors[rt.name]
        assert t.shape == shape and t.type.id == int(qtype)
        np.testing.assert_array_equal(t.data.reshape(-1), raw.reshape(-1))
        assert not t.data.flags.writeable
        with np.errstate(invalid="ignore", over="ignore"):
            want = gguf.quants.dequantize(raw, qtype).reshape(shape).astype(np.float32)
            got = t.dequantize()
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    f2 = GGUFFile(path, mmap=False)
    np.testing.assert_array_equal(f2.tensors["blk.3.w"].data, f.tensors["blk.3.w"].data)


def test_alignment_is_honoured(tmp_path):
    rng = np.random.default_rng(3)
    tensors = dict(list(_random_tensors(rng).items())[:4])
    path = tmp_path / "a.gguf"
    _write(path, tensors, alignment=64)
    f = GGUFFile(path)
    assert f.alignment == 64
    for name, (raw, _, _) in tensors.items():
        np.testing.assert_array_equal(f.tensors[name].data.reshape(-1), raw.reshape(-1))


def _tiny_file(tmp_path):
    rng = np.random.default_rng(4)
    tensors = dict(list(_random_tensors(rng).items())[2:6])
    path = tmp_path / "t.gguf"
    _write(path, tensors, {"tokenizer.ggml.tokens": ("array", ["x"] * 50)})
    return path.read_bytes()


def test_truncated_files_raise_gguf_error(tmp_path):
    data = _tiny_file(tmp_path)
    bad = tmp_path / "bad.gguf"
    for cut in sorted(set(list(range(0, 200, 7)) + list(range(len(data) - 300, len(data), 13)))):
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match="bad.gguf"):
            GGUFFile(bad)


def test_header_errors_name_the_problem(tmp_path):
    data = bytearray(_tiny_file(tmp_path))
    bad = tmp_path / "bad.gguf"

    def check(blob, pattern):
        bad.write_bytes(bytes(blob))
        with pytest.raises(GGUFError, match=pattern):
            GGUFFile(bad)

    check(b"GGML" + data[4:], "not a GGUF file")
    check(data[:4] + struct.pack("<I", 1) + data[8:], "version 1 is not supported")
    check(data[:4] + struct.pack(">I", 3) + data[8:], "big-endian")
    check(data[:8] + struct.pack("<Q", 1 << 60) + data[16:], "more than the file can hold")
    check(data[:16] + struct.pack("<Q", 1 << 60) + data[24:], "more than the file can hold")
    # an unsupported block type, by rewriting the first tensor's type field
    f = GGUFFile(tmp_path / "t.gguf")
    name = next(iter(f.tensors)).encode()
    at = data.index(name) + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    check(data[:type_at] + struct.pack("<I", 11) + data[type_at + 4:], "block type Q3_K, which exaone_cpu does not read")
    check(data[:type_at] + struct.pack("<I", 77) + data[type_at + 4:], "unknown type 77")
    # an offset that is not aligned, and one past the end
    check(data[:type_at + 4] + struct.pack("<Q", 3) + data[type_at + 12:], "not aligned")
    check(data[:type_at + 4] + struct.pack("<Q", 1 << 40) + data[type_at + 12:], "truncated: tensor")
    # a dimension of 0, and a row that is not whole blocks (in the second tensor, Q8_0)
    check(data[:at] + struct.pack("<I", 2) + struct.pack("<QQ", 0, 3) + data[at + 20:], "dimensions")
    second = list(f.tensors)[1]
    assert f.tensors[second].type.name == "Q8_0"
    at2 = data.index(second.encode()) + len(second)
    check(data[:at2 + 4] + struct.pack("<Q", 100) + data[at2 + 12:], "not a multiple of the block size")
    # two tensors at the same offset
    nd2 = struct.unpack_from("<I", data, at2)[0]
    off2 = at2 + 4 + 8 * nd2 + 4
    check(data[:off2] + struct.pack("<Q", 0) + data[off2 + 8:], "overlap")


def test_mutated_headers_never_escape_as_other_errors(tmp_path):
    data = _tiny_file(tmp_path)
    f = GGUFFile(tmp_path / "t.gguf")
    header_end = int(min(t.data.ctypes.data for t in f.tensors.values()) - np.frombuffer(f._buf, np.uint8).ctypes.data)
    del f
    rng = np.random.default_rng(5)
    bad = tmp_path / "m.gguf"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        blob = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, header_end))
            blob[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(blob))
        try:
            g = GGUFFile(bad)
            for t in g.tensors.values():
                assert t.data.nbytes == np.prod(t.shape) // t.type.block_size * t.type.type_size
            outcomes["ok"] += 1
        except GGUFError:
            outcomes["error"] += 1
    assert outcomes["error"] > 50 and outcomes["ok"] > 0
