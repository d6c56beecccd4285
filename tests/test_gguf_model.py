"""GGUF files as models: the config, tokenizer, chat template and weights a GGUF file holds, written
here the way llama.cpp's converter writes EXAONE 4 (tests/model_factory.write_gguf), must give what
the Hugging Face checkpoint gives: the same logits for float weights, the file's own values bit for
bit for transcoded blocks, the same token ids."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import exaone_cpu  # noqa: E402
from exaone_cpu import _core, cli  # noqa: E402
from exaone_cpu.checkpoint import CheckpointError, load_checkpoint_tensors  # noqa: E402
from exaone_cpu.formats import GGML_TYPE_BY_NAME  # noqa: E402
from exaone_cpu.gguf_file import GGUFError  # noqa: E402
from exaone_cpu.quant import QuantLinear  # noqa: E402
from exaone_cpu.sampling import load_generation_config  # noqa: E402
from exaone_cpu.tokenizer import Tokenizer  # noqa: E402
from exaone_cpu.weights import Linear  # noqa: E402
from model_factory import SHARED_MODEL_DIR, gguf_name, real_tokenizer_available, write_gguf, write_tiny_exaone  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((Path(__file__).parent / "data" / "tokenizer_expected.json").read_text(encoding="utf-8"))
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def projections(model):
    for layer in model.layers:
        for name in PROJECTIONS:
            yield getattr(layer, name)


@pytest.mark.parametrize("fixture,dtype", [("tiny-1.2b", "F32"), ("tiny-32b", "F32"), ("tiny-1.2b-bf16", "BF16")])
def test_float_gguf_matches_transformers(tmp_path, fixture, dtype):
    path = write_gguf(FIXTURES / fixture, tmp_path / "m.gguf", dtype)
    model = exaone_cpu.load(path)
    direct = exaone_cpu.load(FIXTURES / fixture)
    assert model.config.sliding_window == direct.config.sliding_window
    assert model.config.layer_types == direct.config.layer_types
    assert model.config.tie_word_embeddings == direct.config.tie_word_embeddings
    # rope_freqs (llama.cpp's llama3 factors) give the same frequencies within float rounding
    np.testing.assert_allclose(model.inv_freq, direct.inv_freq, rtol=1e-6)
    ref = np.load(FIXTURES / fixture / "reference.npz")
    for prompt, logits in (("prompt", "logits"), ("prompt2", "logits2")):
        got = model.logits(ref[prompt])
        err = np.abs(got - ref[logits]).max() / np.abs(ref[logits]).max()
        assert err < 1e-5, f"{fixture} {dtype} {prompt}: {err:.2e}"
    assert all(isinstance(p, Linear) and p.wtype == getattr(_core.WeightType, dtype) for p in projections(model))


def test_f16_weights_are_the_files_values(tmp_path):
    path = write_gguf(FIXTURES / "tiny-1.2b", tmp_path / "m.gguf", "F16")
    model = exaone_cpu.load(path)
    direct = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    for got, want in zip(projections(model), projections(direct)):
        assert got.wtype == _core.WeightType.F16
        np.testing.assert_array_equal(got.weight.view(np.float16), np.asarray(want.weight, np.float32).astype(np.float16))


def dequantized_copy(tmp_path, fixture, kind):
    """(GGUF with the projections and embedding in `kind`, F32 GGUF of exactly those values)."""
    quantized = write_gguf(FIXTURES / fixture, tmp_path / f"{kind}.gguf", kind)
    f = exaone_cpu.gguf_file.GGUFFile(quantized)
    blocks = {}
    for name, t in f.tensors.items():
        if t.type.name == kind:
            values = gguf.quants.dequantize(np.array(t.data), gguf.GGMLQuantizationType[kind])
            blocks[name] = ("F32", np.ascontiguousarray(values, np.float32).view(np.uint8))
    hf_of = {gguf_name(name): name for name in load_checkpoint_tensors(FIXTURES / fixture)}
    reference = write_gguf(FIXTURES / fixture, tmp_path / f"{kind}-f32.gguf", "F32",
                           blocks={hf_of[n]: b for n, b in blocks.items()})
    return quantized, reference


def mean_kl_top1(a, b):
    la = a - a.max(-1, keepdims=True)
    la -= np.log(np.exp(la).sum(-1, keepdims=True))
    lb = b - b.max(-1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
    kl = (np.exp(la) * (la - lb)).sum(-1).mean()
    return float(kl), float((a.argmax(-1) == b.argmax(-1)).mean())


# (mean KL, top-1) allowed between the transcoded model and the float model of the same weight
# values: what quantizing the activations to int8 per 32 values costs, nothing more. Measured (Q8_0 /
# Q4_0, both prompts): tiny-1.2b 0.75-0.86e-3 / 1.1e-3, tiny-32b 2.4-2.5e-3 / 3.9-4.1e-3 (its loud
# random weights through 4 layers), tiny-trained 1.3-1.8e-4; top-1 0.95 to 1.
ACTIVATION_TOLERANCE = {"tiny-1.2b": (3e-3, 0.9), "tiny-32b": (8e-3, 0.9), "tiny-trained": (5e-4, 0.97)}


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("fixture", ["tiny-1.2b", "tiny-32b", "tiny-trained"])
def test_transcoded_blocks_keep_the_files_values(tmp_path, fixture, kind):
    quantized, reference = dequantized_copy(tmp_path, fixture, kind)
    model, ref_model = exaone_cpu.load(quantized), exaone_cpu.load(reference)
    fmt = _core.QuantFormat.Q8G if kind == "Q8_0" else _core.QuantFormat.Q4G
    for got, want in zip(projections(model), projections(ref_model)):
        assert isinstance(got, QuantLinear) and got.format == fmt and got.group_size == 32
        np.testing.assert_array_equal(got.dequantize(), np.asarray(want.weight))  # bit for bit
    assert isinstance(model.embed_tokens, QuantLinear)
    np.testing.assert_array_equal(model.embed_tokens.dequantize(), np.asarray(ref_model.embed_tokens.data))
    ref = np.load(FIXTURES / fixture / "reference.npz")
    max_kl, min_top1 = ACTIVATION_TOLERANCE[fixture]
    for prompt in ("prompt", "prompt2"):
        kl, top1 = mean_kl_top1(ref_model.logits(ref[prompt]), model.logits(ref[prompt]))
        assert kl < max_kl and top1 >= min_top1, f"{fixture} {kind} {prompt}: KL {kl:.2e}, top-1 {top1:.3f}"


def test_float_gguf_quantized_at_load(tmp_path):
    path = write_gguf(FIXTURES / "tiny-1.2b", tmp_path / "m.gguf", "BF16")
    model = exaone_cpu.load(path, quant="int4")
    direct = exaone_cpu.load(FIXTURES / "tiny-1.2b", quant="int4")
    assert all(isinstance(p, QuantLinear) and p.format == _core.QuantFormat.Q4G for p in projections(model))
    ids = np.arange(1, 40)
    kl, top1 = mean_kl_top1(direct.logits(ids), model.logits(ids))
    assert kl < 0.05 and top1 > 0.8  # the same quantizer on bf16-rounded weights
    q8 = write_gguf(FIXTURES / "tiny-1.2b", tmp_path / "q8.gguf", "Q8_0")
    with pytest.raises(ValueError, match=r"already quantized \(Q8_0\); load it without quant="):
        exaone_cpu.load(q8, quant="int4")


# Byte offsets of the f16 super-block scales in each K block: random bytes elsewhere are valid
# codes and sub-scales, but a random f16 there can be huge or NaN, so those get sane values.
K_SCALE_OFFSETS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,)}


def random_k_blocks(rng, kind, rows, cols):
    t = GGML_TYPE_BY_NAME[kind]
    raw = rng.integers(0, 256, size=(rows, cols // 256, t.type_size), dtype=np.uint8)
    for off in K_SCALE_OFFSETS[kind]:
        d = rng.uniform(2e-4, 2e-3, size=(rows, cols // 256)).astype(np.float16)
        raw[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, cols // 256, 2)
    return raw.reshape(rows, -1)


def k_quant_files(tmp_path, kind, seed=0):
    """(GGUF of a tiny 256-wide model with every weight whose rows are whole 256-value blocks in
    random `kind` blocks, the rest Q8_0, F32 GGUF of exactly the same values)."""
    src = write_tiny_exaone(tmp_path / "src", dtype="F32", link_tokenizer=False, hidden=256, vocab_size=512, seed=seed)
    rng = np.random.default_rng(seed)
    blocks, values = {}, {}
    for name, t in load_checkpoint_tensors(src).items():
        if t.data.ndim == 2 and t.shape[1] % 256 == 0:
            raw = random_k_blocks(rng, kind, *t.shape)
            blocks[name] = (kind, raw)
            deq = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind])
            values[name] = ("F32", np.ascontiguousarray(deq, np.float32).view(np.uint8))
    return (write_gguf(src, tmp_path / f"{kind}.gguf", "Q8_0", blocks=blocks),
            write_gguf(src, tmp_path / f"{kind}-f32.gguf", "Q8_0", blocks=values), sorted(blocks))


@pytest.mark.parametrize("kind,fmt,group", [("Q4_K", "Q4KA", 32), ("Q5_K", "Q8KA", 32), ("Q6_K", "Q6K", 16),
                                            ("IQ4_XS", "Q8K", 32)])
def test_k_quant_blocks_keep_the_files_values(tmp_path, kind, fmt, group):
    path, reference, names = k_quant_files(tmp_path, kind)
    assert {"model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"} <= set(names)
    model, ref_model = exaone_cpu.load(path), exaone_cpu.load(reference)
    checked = 0
    for layer, ref_layer in zip(model.layers, ref_model.layers):
        for name in PROJECTIONS:
            got, want = getattr(layer, name), getattr(ref_layer, name)
            if got.format.k_scales:
                assert got.format == getattr(_core.QuantFormat, fmt) and got.group_size == group
                # the reference model's weight is the F32 of gguf's dequantization: bit for bit
                np.testing.assert_array_equal(got.dequantize().view(np.uint32), np.asarray(want.weight).view(np.uint32))
                checked += 1
    assert checked >= 2 * len(model.layers)
    ids = np.arange(model.config.vocab_size)
    np.testing.assert_array_equal(model.embed(ids).view(np.uint32), ref_model.embed(ids).view(np.uint32))
    x = np.random.default_rng(1).integers(0, 512, 48)
    kl, top1 = mean_kl_top1(ref_model.logits(x), model.logits(x))
    # what int8 activations cost on these random blocks; measured over seeds 0-2: Q4_K 0.4-3.6e-4,
    # Q5_K 2.9-7.7e-4, Q6_K 2.3-3.0e-3 (random int8 sub-scales make uneven rows), IQ4_XS 0.6-4.3e-3
    assert kl < 8e-3 and top1 >= 0.95, f"{kind}: KL {kl:.2e}, top-1 {top1:.3f}"


def _vm_flags(addr: int) -> list[str]:
    """The VmFlags of the mapping of this process holding address addr (Linux /proc/self/smaps)."""
    region = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            region = lo <= addr < hi
        elif region and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only: huge pages come from madvise")
def test_weights_made_at_load_are_advised_huge_pages(tmp_path):
    # repack_gguf and quantize allocate their outputs in mappings advised MADV_HUGEPAGE ("hg"),
    # chunks shared by consecutive weights and kept while any of their arrays lives
    rng = np.random.default_rng(0)
    raw = random_k_blocks(rng, "Q6_K", 64, 512)
    made = [_core.repack_gguf(raw, 14, 512) for _ in range(3)]
    w = rng.standard_normal((64, 256)).astype(np.float32)
    qw, scales, _ = _core.quantize(w, _core.WeightType.F32, _core.QuantFormat.Q8G, 32)
    for a in [qw, scales] + [x for m in made for x in m[:2]]:
        assert "hg" in _vm_flags(a.ctypes.data), "weight array not in huge-page memory"
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable
    want = [m[0].copy() for m in made]
    del made[0], made[1]  # the chunk stays mapped for the array left
    np.testing.assert_array_equal(made[0][0], want[2])
    x = rng.standard_normal((2, 256)).astype(np.float32)
    ref = _core.quant_matmul(x, np.array(qw), np.array(scales), None, _core.QuantFormat.Q8G, 32)
    np.testing.assert_array_equal(_core.quant_matmul(x, qw, scales, None, _core.QuantFormat.Q8G, 32), ref)
    model = exaone_cpu.load(k_quant_files(tmp_path, "Q4_K")[0])
    assert all("hg" in _vm_flags(lin.qweight.ctypes.data) for lin in
               [model.layers[0].q_proj, model.layers[-1].down_proj])
    # weights packed in numpy (AWQ / GPTQ / compressed-tensors codes) are placed there too
    codes = rng.integers(0, 16, (64, 256)).astype(np.uint8)
    lin = QuantLinear.from_codes(codes, np.full((64, 2), 0x3C00, np.uint16), None, _core.QuantFormat.Q4G, 128)
    assert "hg" in _vm_flags(lin.qweight.ctypes.data) and "hg" in _vm_flags(lin.scales.ctypes.data)
    np.testing.assert_array_equal(lin.dequantize(), codes.astype(np.float32) - 8)
    with pytest.raises(ValueError, match="negative"):
        _core.weight_empty((-1, 4), np.uint8)


def test_k_format_arrays_are_checked():
    rng = np.random.default_rng(0)
    raw = random_k_blocks(rng, "Q4_K", 16, 512)
    kb = GGML_TYPE_BY_NAME["Q4_K"].unpack(raw.reshape(-1, 144))
    q = QuantLinear.from_kcodes(kb.codes.reshape(16, 512), kb.d.reshape(16, 2), kb.c.reshape(16, 16),
                                _core.QuantFormat.Q4KA, 32, kb.dmin.reshape(16, 2), kb.mc.reshape(16, 16))
    x = rng.standard_normal((3, 512)).astype(np.float32)
    want = x @ GGML_TYPE_BY_NAME["Q4_K"].dequantize(raw, 512).T
    np.testing.assert_allclose(q(x), want, rtol=0.05, atol=0.05 * np.abs(want).max())
    with pytest.raises(ValueError, match=r"scales \(K formats"):
        _core.quant_matmul(x, q.qweight, q.scales[:, :-1], None, q.format, 32)
    with pytest.raises(ValueError, match="mins are only used by Q4GA"):
        _core.quant_matmul(x, q.qweight, q.scales, q.scales, q.format, 32)
    with pytest.raises(ValueError, match="group_size 16 for Q4KA"):
        _core.quant_matmul(x, q.qweight, q.scales, None, q.format, 16)
    with pytest.raises(ValueError, match="not a multiple of 256"):
        _core.quant_matmul(np.ascontiguousarray(x[:, :480]), np.ascontiguousarray(q.qweight[:, :240]), q.scales, None,
                           q.format, 32)
    with pytest.raises(ValueError, match="quantize writes Q8G, Q4G and Q4GA"):
        _core.quantize(x, _core.WeightType.F32, _core.QuantFormat.Q8K, 32)


@pytest.fixture(scope="module")
def gguf_tokenizer(tmp_path_factory):
    if not real_tokenizer_available():
        pytest.skip(f"EXAONE tokenizer files not found in {SHARED_MODEL_DIR}")
    path = tmp_path_factory.mktemp("tok") / "tokenizer-only.gguf"
    w = gguf.GGUFWriter(str(path), "exaone4")
    from model_factory import gguf_tokenizer_metadata
    gguf_tokenizer_metadata(w, SHARED_MODEL_DIR)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("case", EXPECTED["texts"], ids=[f"text{i}" for i in range(len(EXPECTED["texts"]))])
def test_gguf_tokenizer_gives_the_hugging_face_ids(gguf_tokenizer, case):
    tok = Tokenizer.from_pretrained(gguf_tokenizer)
    ids = tok.encode(case["text"])
    assert ids == case["ids"]
    assert tok.convert_ids_to_tokens(ids) == case["tokens"]
    assert tok.decode(ids) == case["decoded"]
    assert tok.decode(ids, skip_special_tokens=True) == case["decoded_skip_special"]


def test_gguf_tokenizer_specials_and_chat_template(gguf_tokenizer):
    tok = Tokenizer.from_pretrained(gguf_tokenizer)
    hf = Tokenizer.from_pretrained(SHARED_MODEL_DIR)
    assert tok.special_tokens_map == hf.special_tokens_map
    assert len(tok) == len(hf) == EXPECTED["len"]
    # GGUF keeps no additional_special_tokens list: every special added token counts (a superset of
    # transformers' list, all of them special in the Hugging Face added_tokens_decoder too)
    extra = set(tok.all_special_ids) - set(hf.all_special_ids)
    assert set(hf.all_special_ids) <= set(tok.all_special_ids)
    assert all(hf.added_tokens_decoder[i].special for i in extra)
    assert {i: t.content for i, t in tok.added_tokens_decoder.items()} == \
        {i: t.content for i, t in hf.added_tokens_decoder.items()}
    assert tok.chat_template == hf.chat_template
    messages = [{"role": "user", "content": "안녕? <think> is text here"}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True) == \
        hf.apply_chat_template(messages, add_generation_prompt=True)
    defaults = load_generation_config(gguf_tokenizer)
    assert defaults.eos_token_ids == [361] and defaults.bos_token_id == 1 and defaults.pad_token_id == 0
    assert not defaults.do_sample


def test_generation_defaults_from_general_sampling(tmp_path):
    path = tmp_path / "s.gguf"
    w = gguf.GGUFWriter(str(path), "exaone4")
    w.add_eos_token_id(2)
    w.add_float32("general.sampling.temp", 0.6)
    w.add_float32("general.sampling.top_p", 0.95)
    w.add_int32("general.sampling.top_k", 20)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    d = load_generation_config(path)
    assert d.do_sample and d.temperature == pytest.approx(0.6) and d.top_p == pytest.approx(0.95) and d.top_k == 20
    assert d.eos_token_ids == [2]


@pytest.mark.skipif(not real_tokenizer_available(), reason="needs the real EXAONE tokenizer files")
def test_generator_and_cli_run_a_gguf_file_like_its_checkpoint(tmp_path, capsys):
    src = write_tiny_exaone(tmp_path / "hf", dtype="F32", seed=3)
    path = write_gguf(src, tmp_path / "tiny.gguf", "F32", tokenizer_dir=SHARED_MODEL_DIR)
    messages = [{"role": "user", "content": "Hello"}]
    results = []
    for source in (src, path):
        g = exaone_cpu.Generator.from_pretrained(source)
        results.append(g.generate(g.encode_chat(messages), max_new_tokens=8))
    a, b = results
    assert a.token_ids == b.token_ids and a.text == b.text
    if importlib.util.find_spec("llguidance") is not None:  # structured output from the GGUF vocabulary
        schema = {"type": "object", "properties": {"k": {"enum": ["x", "y"]}}, "required": ["k"]}
        a, b = (exaone_cpu.Generator.from_pretrained(source).generate(g.encode_chat(messages), json_schema=schema,
                                                                      temperature=1.0, seed=4) for source in (src, path))
        assert a.token_ids == b.token_ids and json.loads(b.text)["k"] in ("x", "y")
    for source in (src, path):
        assert cli.main(["generate", str(source), "Hi", "--max-new-tokens", "5", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    half = len(out) // 2
    assert out[:half] == out[half:]


def test_bad_files_give_clear_errors(tmp_path):
    src = FIXTURES / "tiny-1.2b"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(FileNotFoundError, match="neither a model directory nor a GGUF file"):
        exaone_cpu.load(notes)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exaone_cpu.load(tmp_path / "missing.gguf")
    llama = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(llama), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="general.architecture is 'llama'"):
        exaone_cpu.load(llama)
    # a block type exaone_cpu does not read is refused by name (here Q3_K, written as raw blocks)
    wide = write_tiny_exaone(tmp_path / "wide", dtype="F32", link_tokenizer=False, hidden=256, vocab_size=512)
    rng = np.random.default_rng(0)
    k_blocks = {"model.layers.0.mlp.down_proj.weight": ("Q3_K", rng.integers(0, 256, (256, 2 * 110), dtype=np.uint8))}
    path = write_gguf(wide, tmp_path / "k.gguf", "F32", blocks=k_blocks)
    with pytest.raises(GGUFError, match="'blk.0.ffn_down.weight' has block type Q3_K, which exaone_cpu does not read"):
        exaone_cpu.load(path)
    # a weight of the wrong shape
    bad = write_gguf(src, tmp_path / "bad.gguf", "F32")
    data = bytearray(bad.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name) + 4
    dims = np.frombuffer(bytes(data[at:at + 16]), "<u8").copy()
    data[at:at + 16] = np.array([dims[0] // 2, dims[1] * 2], "<u8").tobytes()
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="attn_q|q_proj"):
        exaone_cpu.load(bad)


@pytest.mark.skipif(not real_tokenizer_available(), reason="needs the real EXAONE tokenizer files")
def test_server_and_facade_run_a_gguf_file(tmp_path):
    import argparse

    from starlette.testclient import TestClient

    from exaone_cpu.auto import AutoModelForCausalLM, AutoTokenizer
    from exaone_cpu.commands import serve

    src = write_tiny_exaone(tmp_path / "hf", dtype="F32", seed=3)
    path = write_gguf(src, tmp_path / "tiny-Q8_0.gguf", "Q8_0", tokenizer_dir=SHARED_MODEL_DIR)
    g = exaone_cpu.Generator.from_pretrained(path)
    messages = [{"role": "user", "content": "Hello"}]
    want = g.generate(g.encode_chat(messages), max_new_tokens=6, temperature=0)
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    app, settings = serve.build(parser.parse_args([str(path), "--parallel", "1"]))
    assert settings.model_name == "tiny-Q8_0.gguf"
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"model": settings.model_name, "messages": messages,
                                                      "max_tokens": 6, "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want.output.content
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_tensors="np")
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert list(out[0][ids.shape[1]:]) == want.token_ids


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"])
@pytest.mark.parametrize("rows", [1, 7, 8, 21])
def test_cpp_repack_equals_the_numpy_reference(kind, rows):
    from exaone_cpu.gguf_file import GGUFTensor
    from exaone_cpu.gguf_model import _transcode, transcode_reference

    t = GGML_TYPE_BY_NAME[kind]
    rng = np.random.default_rng(rows)
    k = 512
    raw = rng.integers(0, 256, size=(rows, k // t.block_size, t.type_size), dtype=np.uint8)
    for off in K_SCALE_OFFSETS.get(kind, (0,)):  # any bytes but finite f16 scales
        raw[:, :, off + 1] &= 0x7B  # an exponent below all-ones (the sign bit kept where it was)
    raw = raw.reshape(rows, -1)
    tensor = GGUFTensor("w", t, (rows, k), raw)
    got, want = _transcode(tensor, rows, k), transcode_reference(tensor, rows, k)
    assert (got.format, got.group_size) == (want.format, want.group_size)
    np.testing.assert_array_equal(got.qweight, want.qweight)
    np.testing.assert_array_equal(got.scales, want.scales)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = t.dequantize(raw, k)
    np.testing.assert_array_equal(got.dequantize().view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_K", "Q6_K"])
def test_a_nan_or_inf_block_scale_is_refused(tmp_path, kind):
    from exaone_cpu.gguf_file import GGUFTensor
    from exaone_cpu.gguf_model import _transcode

    t = GGML_TYPE_BY_NAME[kind]
    raw = np.zeros((8, 256 // t.block_size, t.type_size), np.uint8)
    off = K_SCALE_OFFSETS.get(kind, (0,))[-1]
    raw[3, 0, off:off + 2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    with pytest.raises(GGUFError, match=rf"tensor 'w' \({kind}\): repack_gguf: 1 block scales are inf or NaN"):
        _transcode(GGUFTensor("w", t, (8, 256), raw.reshape(8, -1)), 8, 256)


def test_repack_rejects_bad_input():
    raw = np.zeros((2, 144), np.uint8)
    with pytest.raises(ValueError, match="no repack for this ggml type"):
        _core.repack_gguf(raw, 11, 256)
    with pytest.raises(ValueError, match="not whole blocks of 256"):
        _core.repack_gguf(raw, 12, 288)
    with pytest.raises(ValueError, match="expected 144"):
        _core.repack_gguf(np.zeros((2, 100), np.uint8), 12, 256)
