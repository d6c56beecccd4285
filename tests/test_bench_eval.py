"""The eval math (exaone_cpu.evaluate) against hand-computed values and an independent numpy
computation; `exaone-cpu bench` and `exaone-cpu eval` end to end on the tiny fixtures; the random
checkpoint writer (tools/make_random_model.py) on the tiny shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu import evaluate as ev
from exaone_cpu.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "tiny-1.2b"
TINY_BF16 = FIXTURES / "tiny-1.2b-bf16"
TINY_32B = FIXTURES / "tiny-32b"


def ref_log_softmax(x):
    """Independent of the library: the definition, row by row, with math.fsum."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for i, row in enumerate(x):
        m = row.max()
        out[i] = row - (m + math.log(math.fsum(math.exp(v - m) for v in row)))
    return out


# ---- the math ------------------------------------------------------------------------------------


def test_nll_and_perplexity_of_a_uniform_distribution():
    logits = np.zeros((3, 4), np.float32)
    nll = ev.token_nll(logits, [0, 3, 2])
    np.testing.assert_allclose(nll, [math.log(4)] * 3, rtol=1e-15)
    assert ev.perplexity(nll) == pytest.approx(4.0, rel=1e-14)


def test_nll_known_values():
    # p = softmax([ln 1, ln 3]) = [1/4, 3/4]
    logits = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    np.testing.assert_allclose(ev.token_nll(logits, [0, 1]), [math.log(4), math.log(4 / 3)], rtol=1e-14)
    assert ev.perplexity(ev.token_nll(logits, [0, 1])) == pytest.approx(math.sqrt(4 * 4 / 3), rel=1e-14)


def test_kl_of_identical_logits_is_zero_and_top1_agrees():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (7, 50)).astype(np.float32)
    np.testing.assert_array_equal(ev.kl_divergence(logits, logits), np.zeros(7))
    assert ev.top1_agreement(logits, logits).all()
    # a shift of a row changes nothing: softmax is shift invariant
    assert ev.kl_divergence(logits, logits + np.float32(3.0)).max() < 1e-6


def test_kl_known_pair():
    # KL([1/2, 1/2] || [3/4, 1/4]) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    ref = np.array([[0.0, 0.0]])
    model = np.array([[math.log(3), 0.0]])
    np.testing.assert_allclose(ev.kl_divergence(ref, model), [0.5 * math.log(4 / 3)], rtol=1e-14)
    # and the other direction: KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln(3/2) + 1/4 ln(1/2)
    np.testing.assert_allclose(ev.kl_divergence(model, ref), [0.75 * math.log(1.5) + 0.25 * math.log(0.5)], rtol=1e-14)
    np.testing.assert_array_equal(ev.top1_agreement(ref, model), [True])  # tie -> first index on both sides


def test_math_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 3, (9, 33))
    model = ref + rng.normal(0, 0.5, ref.shape)
    targets = rng.integers(0, 33, 9)
    lr, lm = ref_log_softmax(ref), ref_log_softmax(model)
    np.testing.assert_allclose(ev.token_nll(model, targets), -lm[np.arange(9), targets], rtol=1e-12)
    np.testing.assert_allclose(ev.kl_divergence(ref, model), (np.exp(lr) * (lr - lm)).sum(-1), rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(ev.top1_agreement(ref, model), ref.argmax(-1) == model.argmax(-1))


def test_log_softmax_is_stable_for_large_logits():
    x = np.array([[1000.0, 1000.0, -1000.0], [-1e4, -1e4, -1e4]], np.float32)
    np.testing.assert_allclose(np.exp(ev.log_softmax(x)), [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ev.log_softmax(np.array([[0.0, np.nan]]))


def test_math_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        ev.kl_divergence(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="targets"):
        ev.token_nll(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="expected logits"):
        ev.token_nll(np.zeros((2, 3)), [0])


def test_windows():
    assert ev.windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert ev.windows(9, 4) == [(0, 4), (4, 8)]  # a 1-token tail has nothing to predict
    assert ev.windows(5, 8) == [(0, 5)]
    with pytest.raises(ValueError, match="at least 2"):
        ev.windows(10, 1)


def test_evaluate_matches_transformers_reference_logits():
    ref = np.load(TINY / "reference.npz")
    ids, logits = ref["prompt2"], ref["logits2"]  # [40], [40, vocab]: transformers' logits
    model = exaone_cpu.load(TINY, threads=1)
    r = ev.evaluate(model, ids, ctx=64)
    lm = ref_log_softmax(logits[:-1])
    expected_nll = -lm[np.arange(39), ids[1:]]
    assert (r.tokens, r.scored, r.windows) == (40, 39, 1)
    assert r.nll == pytest.approx(expected_nll.mean(), rel=1e-4)
    assert r.perplexity == pytest.approx(math.exp(expected_nll.mean()), rel=1e-3)
    assert r.kl_mean is None and r.top1_agreement is None

    # windows of 16: every window restarts from an empty cache
    r16 = ev.evaluate(model, ids, ctx=16)
    parts = [-ref_log_softmax(model.logits(ids[s:e])[:-1])[np.arange(e - s - 1), ids[s + 1:e]] for s, e in ((0, 16), (16, 32), (32, 40))]
    assert (r16.scored, r16.windows) == (37, 3)
    assert r16.nll == pytest.approx(np.concatenate(parts).mean(), rel=1e-9)


def test_evaluate_against_a_reference_model():
    ids = np.load(TINY / "reference.npz")["prompt2"]
    model = exaone_cpu.load(TINY, threads=1)
    other = exaone_cpu.load(TINY_BF16, threads=1)
    same = ev.evaluate(model, ids, ctx=64, ref_model=model)
    assert same.kl_mean == 0.0 and same.kl_max == 0.0 and same.top1_agreement == 1.0
    assert same.ref_perplexity == same.perplexity

    r = ev.evaluate(model, ids, ctx=64, ref_model=other)
    lm, lr = ref_log_softmax(model.logits(ids)[:-1]), ref_log_softmax(other.logits(ids)[:-1])
    kl = (np.exp(lr) * (lr - lm)).sum(-1)
    assert r.kl_mean == pytest.approx(kl.mean(), rel=1e-9)
    assert r.kl_max == pytest.approx(kl.max(), rel=1e-9)
    assert r.kl_mean > 0.1  # different weights: clearly different distributions
    assert r.top1_agreement == pytest.approx(np.mean(lr.argmax(-1) == lm.argmax(-1)))
    assert r.ref_nll == pytest.approx(-lr[np.arange(39), ids[1:]].mean(), rel=1e-9)


def test_evaluate_rejects_bad_input():
    model = exaone_cpu.load(TINY, threads=1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        ev.evaluate(model, [5], ctx=8)
    with pytest.raises(ValueError, match="ctx must be at least 2"):
        ev.evaluate(model, [5, 6, 7], ctx=1)


# ---- exaone-cpu bench ----------------------------------------------------------------------------


def run_cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("fixture", [TINY, TINY_32B], ids=["tiny-1.2b", "tiny-32b"])
def test_bench_json(capsys, fixture):
    rc, out, err = run_cli(capsys, "bench", fixture, "--prompt", 12, "--gen", 5, "--repeat", 2, "--threads", 1, "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert (d["prompt_tokens"], d["gen_tokens"], d["repeat"], d["threads"]) == (12, 5, 2, 1)
    assert d["isa"] == exaone_cpu.isa()
    assert d["quant_isa"] == exaone_cpu._core.quant_isa()
    assert d["weight_format"] == "F32"
    assert d["weight_file_bytes"] == sum(p.stat().st_size for p in fixture.glob("*.safetensors"))
    for key in ("prefill_tok_s", "decode_tok_s"):
        s = d[key]
        assert len(s["runs"]) == 2 and all(v > 0 and math.isfinite(v) for v in s["runs"])
        assert s["min"] <= s["median"] <= s["max"]
    assert d["decode_tok_s"]["runs"] == pytest.approx([5 / t for t in d["decode_s"]])
    assert d["load_s"] >= 0 and d["peak_rss_mib"] > 1
    # bytes a decode step reads: every projection and the head, and the visible K/V of each layer
    model = exaone_cpu.load(fixture)
    c = model.config
    from exaone_cpu.checkpoint import load_checkpoint_tensors

    tensors = load_checkpoint_tensors(fixture)
    weights = sum(t.data.nbytes for n, t in tensors.items() if n.endswith("proj.weight"))
    weights += tensors["lm_head.weight" if "lm_head.weight" in tensors and not c.tie_word_embeddings
                       else "model.embed_tokens.weight"].data.nbytes
    ctx = 12 + (5 - 1) / 2
    kv = sum(2 * c.num_key_value_heads * c.head_dim * 4 * min(ctx, c.window(i) or ctx) for i in range(c.num_hidden_layers))
    assert d["decode_weight_bytes"] == weights and d["decode_kv_bytes"] == int(kv)
    assert d["decode_gb_s"] == pytest.approx((weights + int(kv)) * d["decode_tok_s"]["median"] / 1e9)
    if sys.platform.startswith("linux"):
        assert 1 < d["rss_mib"] <= d["peak_rss_mib"] + 1
    assert d["mmap"] is True


def test_bench_no_mmap_reads_the_weights_into_memory(capsys, monkeypatch):
    seen = []
    real = exaone_cpu.load
    monkeypatch.setattr(exaone_cpu, "load", lambda *a, **kw: seen.append(kw["mmap"]) or real(*a, **kw))
    rc, out, err = run_cli(capsys, "bench", TINY, "--prompt", 4, "--gen", 2, "--repeat", 1, "--threads", 1, "--json",
                           "--no-mmap")
    assert rc == 0, err
    assert seen == [False] and json.loads(out)["mmap"] is False


def test_bench_table(capsys):
    rc, out, err = run_cli(capsys, "bench", TINY_BF16, "--prompt", 8, "--gen", 3, "--repeat", 1, "--threads", 2)
    assert rc == 0, err
    assert "BF16" in out and f"{exaone_cpu.isa()} (int8/int4: {exaone_cpu._core.quant_isa()}), 2 threads" in out
    lines = {line.split()[0] + line.split()[1]: line.split() for line in out.splitlines() if line.startswith(("prefill", "decode"))}
    assert set(lines) == {"prefill8", "decode3"}
    for cols in lines.values():
        med, lo, hi = map(float, cols[2:5])
        assert 0 < lo <= med <= hi
    assert "run 1/1" in err  # progress goes to stderr
    assert "a decode step reads" in out and "GB/s at the median" in out


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "0"], "--prompt: must be a positive integer"),
    (["--gen", "-3"], "--gen: must be a positive integer"),
    (["--repeat", "x"], "--repeat: must be a positive integer"),
    (["--threads", "0"], "--threads: must be a positive integer"),
])
def test_bench_rejects_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["bench", str(TINY), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_rejects_too_long_and_missing_model(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "bench", TINY, "--prompt", 100, "--gen", 29)  # max_position_embeddings 128
    assert rc == 2 and "exceeds the model's max_position_embeddings (128)" in err
    rc, _, err = run_cli(capsys, "bench", tmp_path / "nope")
    assert rc == 2 and "does not exist" in err


# ---- exaone-cpu eval -----------------------------------------------------------------------------


@pytest.fixture()
def ids_file(tmp_path):
    ids = np.load(TINY / "reference.npz")["prompt2"]
    f = tmp_path / "ids.txt"
    f.write_text(" ".join(map(str, ids[:20])) + "\n" + "\t".join(map(str, ids[20:])) + "\n")
    return f, ids


def test_eval_ids_json(capsys, ids_file):
    f, ids = ids_file
    rc, out, err = run_cli(capsys, "eval", TINY, "--ids", f, "--threads", 1, "--json")
    assert rc == 0, err
    d = json.loads(out)
    logits = np.load(TINY / "reference.npz")["logits2"]
    expected = -ref_log_softmax(logits[:-1])[np.arange(39), ids[1:]].mean()
    assert (d["tokens"], d["scored"], d["ctx"]) == (40, 39, 128)  # default ctx: min(512, max positions)
    assert d["nll"] == pytest.approx(expected, rel=1e-4)
    assert d["perplexity"] == pytest.approx(math.exp(expected), rel=1e-3)
    assert d["kl_mean"] is None


def test_eval_with_ref_and_max_tokens(capsys, ids_file):
    f, ids = ids_file
    rc, out, err = run_cli(capsys, "eval", TINY, "--ids", f, "--ref", TINY_BF16, "--ctx", 8, "--max-tokens", 30)
    assert rc == 0, err
    assert "30 tokens, 4 window(s) of <= 8, 26 predictions scored" in out
    r = ev.evaluate(exaone_cpu.load(TINY), ids[:30], ctx=8, ref_model=exaone_cpu.load(TINY_BF16))
    assert f"perplexity   {r.perplexity:.4f}" in out
    assert f"mean {r.kl_mean:.6f}" in out
    assert f"top-1 agree  {100 * r.top1_agreement:.2f} %" in out


def test_eval_text_with_the_model_tokenizer(capsys, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
    vocab = {w: 100 + i for i, w in enumerate(words)}
    vocab["[UNK]"] = 3
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for p in TINY.iterdir():
        (model_dir / p.name).symlink_to(p)
    tok.save(str(model_dir / "tokenizer.json"))
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\na dog ran on the mat\n", encoding="utf-8")

    rc, out, err = run_cli(capsys, "eval", model_dir, "--text", text, "--json")
    assert rc == 0, err
    ids = [vocab[w] for w in text.read_text().split()]
    d = json.loads(out)
    assert d["tokens"] == len(ids)
    r = ev.evaluate(exaone_cpu.load(TINY), ids, ctx=128)
    assert d["nll"] == pytest.approx(r.nll, rel=1e-12)


@pytest.mark.parametrize("argv, message", [
    ([], "one of the arguments --text --ids is required"),
    (["--ids", "A", "--text", "B"], "not allowed with argument"),
    (["--ids", "A", "--ctx", "1"], "--ctx: must be at least 2"),
    (["--ids", "A", "--max-tokens", "0"], "--max-tokens: must be a positive integer"),
])
def test_eval_rejects_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(TINY), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_rejects_bad_input(capsys, tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("1 2 x 4")
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", f)
    assert rc == 2 and "item 3 ('x') is not an integer token id" in err
    f.write_text("1 2 512 4")
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", f)
    assert rc == 2 and "token id 512 at position 2 is out of the model's vocabulary [0, 512)" in err
    f.write_text("7")
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", f)
    assert rc == 2 and "at least 2 are needed" in err
    f.write_text("1 2 3")
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", f, "--ctx", 129)
    assert rc == 2 and "exceeds the model's max_position_embeddings (128)" in err
    rc, _, err = run_cli(capsys, "eval", TINY, "--text", f)
    assert rc == 2 and "no tokenizer in" in err and "--ids" in err
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", tmp_path / "missing.txt")
    assert rc == 2 and "cannot read --ids file" in err
    rc, _, err = run_cli(capsys, "eval", TINY, "--ids", f, "--ref", tmp_path / "nope")
    assert rc == 2 and "does not exist" in err


# ---- tools/make_random_model.py ------------------------------------------------------------------


@pytest.mark.parametrize("shard_gb", [5.0, 0.0002], ids=["single", "sharded"])
def test_make_random_model_writes_a_loadable_checkpoint(tmp_path, shard_gb):
    script = REPO / "tools" / "make_random_model.py"
    if not script.is_file():
        pytest.skip("tools/ is not next to the tests (installed package only)")
    out = tmp_path / "m"
    for _ in range(2):  # twice: the same seed gives the same bytes, old shards are replaced
        subprocess.run([sys.executable, str(script), str(out), "--config", str(TINY / "config.json"),
                        "--shard-size", str(shard_gb), "--seed", "3"], check=True, capture_output=True)
        files = sorted(out.glob("*.safetensors"))
        if _ == 0:
            first = {p.name: p.read_bytes() for p in files}
    assert {p.name: p.read_bytes() for p in files} == first
    assert (len(files) == 1) == (shard_gb == 5.0)
    assert (out / "generation_config.json").is_file()
    assert json.loads((out / "config.json").read_text()) == json.loads((TINY / "config.json").read_text())

    from exaone_cpu.checkpoint import load_checkpoint_tensors

    tensors = load_checkpoint_tensors(out)
    ref_names = set(load_checkpoint_tensors(TINY))
    assert set(tensors) == ref_names
    assert all(t.dtype == "BF16" for t in tensors.values())
    w = tensors["model.layers.0.mlp.up_proj.weight"].to_f32()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    np.testing.assert_array_equal(tensors["model.norm.weight"].to_f32(), np.ones(64, np.float32))
    model = exaone_cpu.load(out, threads=1)
    assert len(model.generate([1, 2, 3], 4, stop_at_eos=False)) == 4


def test_make_random_model_32b_shape_and_partial_layers(tmp_path):
    """--shape 32b is EXAONE-4.0-32B's config (LLLG pattern, window 4096, untied head); --layers N
    keeps the first N layers; the tool's tensor list matches what exaone_cpu loads for that config."""
    script = REPO / "tools" / "make_random_model.py"
    if not script.is_file():
        pytest.skip("tools/ is not next to the tests (installed package only)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_random_model", script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = tool.exaone_32b_config({"bos_token_id": 1, "eos_token_id": 361, "pad_token_id": 0})
    assert cfg["num_hidden_layers"] == 64 and cfg["hidden_size"] == 5120 and cfg["intermediate_size"] == 27392
    assert cfg["layer_types"][:4] == ["sliding_attention"] * 3 + ["full_attention"]
    assert cfg["layer_types"].count("full_attention") == 16 and cfg["eos_token_id"] == 361
    params = sum(int(np.prod(s)) for s in tool.tensor_shapes(cfg).values())
    assert 31.0e9 < params < 32.5e9, params  # "32B"
    part = tool.keep_layers(cfg, 5)
    assert part["num_hidden_layers"] == 5 and part["layer_types"] == cfg["layer_types"][:5]
    with pytest.raises(ValueError, match="--layers"):
        tool.keep_layers(cfg, 65)
    c = exaone_cpu.Exaone4Config.from_dict(part)
    assert [c.window(i) for i in range(5)] == [4096, 4096, 4096, None, 4096]
    assert [c.uses_rope(i) for i in range(5)] == [True, True, True, False, True]  # global layers: no RoPE
    # the CLI on a tiny config: --layers keeps the first layers' tensors only
    out = tmp_path / "m"
    subprocess.run([sys.executable, str(script), str(out), "--config", str(TINY_32B / "config.json"), "--layers", "2",
                    "--no-tokenizer"], check=True, capture_output=True)
    written = json.loads((out / "config.json").read_text())
    assert written["num_hidden_layers"] == 2 and written["layer_types"] == ["sliding_attention"] * 2
    model = exaone_cpu.load(out)
    assert len(model.layers) == 2


@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "int8"])
def test_decode_attention_benchmark_runs(kv_dtype):
    """tools/bench_decode_attention.py (BENCHMARKS.md's decode attention figures) on a tiny shape."""
    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_decode_attention.py"
    run = subprocess.run([sys.executable, str(tool), "--context", "37", "--layers", "3", "--repeat", "2",
                          "--kv-dtype", kv_dtype, "--heads", "4", "--kv-heads", "2", "--head-dim", "16"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr
    assert f"{kv_dtype} cache, 4 / 2 heads of 16, 37 positions, 3 caches:" in run.stdout
    bad = subprocess.run([sys.executable, str(tool), "--heads", "5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a multiple of --kv-heads 8" in bad.stderr
