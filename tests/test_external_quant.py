"""AWQ, GPTQ and compressed-tensors checkpoints: fixtures built here with numpy from each format's
documented packing (AutoAWQ's GEMM order, GPTQ's row packing with zeros minus one and act-order
g_idx, compressed-tensors' pack_to_int32), loaded by exaone_cpu and held to a plain numpy unpacking
of the same arrays: the weights exactly (symmetric) or within the f16 rounding of the min
(asymmetric), the logits within what int8 activations cost."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import exaone_cpu
from exaone_cpu import _core
from exaone_cpu.checkpoint import CheckpointError, load_checkpoint_tensors
from exaone_cpu.quant import QuantLinear

FIXTURES = Path(__file__).parent / "fixtures"
TRAINED = FIXTURES / "tiny-trained"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def quantize_np(w, group, sym, order=None):
    """Plain group quantization of w [out, in] in input order `order` (act-order) or as stored:
    unsigned codes u, f16 scales [out, G], zeros z [out, G], with w ~ s * (u - z)."""
    n, k = w.shape
    order = np.arange(k) if order is None else order
    G = k // group
    u = np.zeros((n, k), np.int64)
    s = np.zeros((n, G), np.float16)
    z = np.zeros((n, G), np.int64)
    for g in range(G):
        cols = order[g * group:(g + 1) * group]
        block = w[:, cols]
        if sym:
            scale = (np.abs(block).max(1) / 7).astype(np.float16)
            zero = np.full(n, 8)
        else:
            lo, hi = block.min(1), block.max(1)
            scale = ((hi - lo) / 15).astype(np.float16)
            # (zero 0 never: GPTQ v1 stores z - 1, and 0 would wrap, as in AutoGPTQ itself)
            zero = np.clip(np.round(-lo / scale.astype(np.float32)), 1, 15).astype(np.int64)
        sf = scale.astype(np.float32)[:, None]
        u[:, cols] = np.clip(np.round(block / sf) + zero[:, None], 0, 15)
        s[:, g], z[:, g] = scale, zero
    return u, s, z


def dequant_np(u, s, z, group, order=None):
    """w[o, i] = s[o, g(i)] * (u[o, i] - z[o, g(i)]) in f32, g(i) the group of input i."""
    n, k = u.shape
    order = np.arange(k) if order is None else order
    g_of = np.empty(k, np.int64)
    g_of[order] = np.arange(k) // group
    return s.astype(np.float32)[:, g_of] * (u - z[:, g_of]).astype(np.float32)


def pack_words(vals, axis):
    """8 four-bit values along `axis` (value n at bits 4n) -> int32 words."""
    v = np.moveaxis(np.asarray(vals, np.uint32), axis, -1)
    v = v.reshape(*v.shape[:-1], -1, 8)
    words = (v << (4 * np.arange(8, dtype=np.uint32))).sum(-1).astype(np.uint32).view(np.int32)
    return np.moveaxis(words, -1, axis)


def make_checkpoint(tmp_path, method, *, group=32, sym=False, act_order=False, zeros_v2=False, f32_scales=False):
    """tiny-trained with every projection quantized and packed as `method` stores it, and a float32
    copy of exactly the values the packing holds (numpy dequantization)."""
    tensors = {k: np.array(t.data) for k, t in load_checkpoint_tensors(TRAINED).items()}
    rng = np.random.default_rng(0)
    packed, reference = {}, {}
    for name, w in tensors.items():
        base = name[: -len(".weight")]
        if base.rsplit(".", 1)[-1] not in PROJECTIONS:
            packed[name] = reference[name] = w
            continue
        n, k = w.shape
        order = rng.permutation(k) if act_order else None
        u, s, z = quantize_np(w.astype(np.float32), group, sym, order)
        reference[name] = dequant_np(u, s, z, group, order)
        if method == "awq":
            cols = np.arange(n).reshape(-1, 8)[:, AWQ_ORDER].reshape(-1)  # nibble n of word c: output 8c + ORDER[n]
            packed[base + ".qweight"] = pack_words(u.T[:, cols], 1)
            packed[base + ".qzeros"] = pack_words(z.T[:, cols], 1)
            packed[base + ".scales"] = s.T.copy()
        elif method == "gptq":
            packed[base + ".qweight"] = pack_words(u.T, 0)  # inputs in their own order; g_idx says the group
            packed[base + ".qzeros"] = pack_words((z.T - (0 if zeros_v2 else 1)) & 15, 1)
            packed[base + ".scales"] = s.T.copy()
            g_idx = np.empty(k, np.int32)
            g_idx[order if act_order else np.arange(k)] = np.arange(k) // group
            packed[base + ".g_idx"] = g_idx
        else:  # compressed-tensors pack-quantized: q + 8 along inputs, zero points along outputs
            packed[base + ".weight_packed"] = pack_words(u, 1)
            packed[base + ".weight_scale"] = s.astype(np.float32) if f32_scales else s.copy()
            if not sym:
                packed[base + ".weight_zero_point"] = pack_words(z, 0)
            packed[base + ".weight_shape"] = np.array([n, k], np.int64)
    config = json.loads((TRAINED / "config.json").read_text())
    if method == "awq":
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group,
                                         "zero_point": not sym, "version": "gemm"}
    elif method == "gptq":
        config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order,
                                         "sym": sym, **({"checkpoint_format": "gptq_v2"} if zeros_v2 else {})}
    else:
        config["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
                "num_bits": 4, "type": "int", "symmetric": sym, "strategy": "group", "group_size": group}}}}
    dirs = []
    for label, arrays, cfg in (("packed", packed, config), ("float", reference, None)):
        d = tmp_path / f"{method}-{label}"
        d.mkdir()
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(d / "model.safetensors"))
        c = dict(config)
        if cfg is None:
            c.pop("quantization_config")
        (d / "config.json").write_text(json.dumps(c))
        shutil.copy(TRAINED / "generation_config.json", d)
        dirs.append(d)
    return dirs


def kl_top1(a, b):
    la = a - a.max(-1, keepdims=True)
    la -= np.log(np.exp(la).sum(-1, keepdims=True))
    lb = b - b.max(-1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
    return float((np.exp(la) * (la - lb)).sum(-1).mean()), float((a.argmax(-1) == b.argmax(-1)).mean())


CASES = {
    "awq": dict(method="awq"),
    "awq-g64": dict(method="awq", group=64),
    "awq-g128-sym": dict(method="awq", group=128, sym=True),
    "gptq-sym": dict(method="gptq", sym=True),
    "gptq-asym": dict(method="gptq"),
    "gptq-act-order": dict(method="gptq", act_order=True),
    "gptq-act-order-sym": dict(method="gptq", act_order=True, sym=True),
    "gptq-v2": dict(method="gptq", zeros_v2=True),
    "compressed-sym": dict(method="compressed-tensors", sym=True),
    "compressed-asym": dict(method="compressed-tensors"),
    "compressed-f32-scales": dict(method="compressed-tensors", sym=True, f32_scales=True),
}


@pytest.mark.parametrize("case", CASES)
def test_quantized_checkpoint_matches_its_numpy_dequantization(tmp_path, case):
    kw = CASES[case]
    packed, reference = make_checkpoint(tmp_path, **kw)
    model, ref = exaone_cpu.load(packed), exaone_cpu.load(reference)
    sym = kw.get("sym", False)
    for layer, ref_layer in zip(model.layers, ref.layers):
        for name in PROJECTIONS:
            got, want = getattr(layer, name), np.asarray(getattr(ref_layer, name).weight)
            assert isinstance(got, QuantLinear)
            assert got.format == (_core.QuantFormat.Q4G if sym else _core.QuantFormat.Q4GA), (case, name)
            assert (got.perm is not None) == kw.get("act_order", False)
            deq = got.dequantize()
            if sym:
                np.testing.assert_array_equal(deq, want)  # the same codes and f16 scales
            else:  # the min -s * z rounded to f16: within 2^-11 of s * z, 15 steps at most
                step = np.abs(want).max()
                assert np.abs(deq - want).max() <= 2.0 ** -11 * step, case
    ids = np.load(TRAINED / "reference.npz")["prompt"]
    kl, top1 = kl_top1(ref.logits(ids), model.logits(ids))
    # int8 activations only (the weights are checked above); measured KL 0.6-1.6e-4, top-1 0.969-1
    assert kl < 5e-4 and top1 >= 0.95, f"{case}: KL {kl:.2e}, top-1 {top1:.3f}"


def test_act_order_keeps_projections_apart_and_exact(tmp_path):
    packed, reference = make_checkpoint(tmp_path, "gptq", act_order=True, sym=True)
    model = exaone_cpu.load(packed)
    ref = exaone_cpu.load(reference)
    x = np.random.default_rng(2).standard_normal((3, 128)).astype(np.float32)
    q, k, v = (getattr(model.layers[0], n) for n in ("q_proj", "k_proj", "v_proj"))
    from exaone_cpu.quant import project
    outs = project(x, q, k, v)
    for got, lin, ref_lin in zip(outs, (q, k, v), (ref.layers[0].q_proj, ref.layers[0].k_proj, ref.layers[0].v_proj)):
        np.testing.assert_array_equal(got, lin(x))
        want = x @ np.asarray(ref_lin.weight).T
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


@pytest.mark.parametrize("change,match", [
    ({"bits": 3}, "3-bit weights are not supported"),
    ({"group_size": 256}, "group_size 256 is not supported"),
    ({"version": "gemv"}, "AWQ version 'gemv' is not supported"),
    ({"quant_method": "bitsandbytes"}, "quant_method 'bitsandbytes' is not supported"),
])
def test_unsupported_configs_are_named(tmp_path, change, match):
    packed, _ = make_checkpoint(tmp_path, "awq")
    cfg = json.loads((packed / "config.json").read_text())
    cfg["quantization_config"].update(change)
    (packed / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((CheckpointError, ValueError), match=match):
        exaone_cpu.load(packed)


def test_bad_arrays_are_named(tmp_path):
    packed, _ = make_checkpoint(tmp_path, "gptq")
    with pytest.raises(ValueError, match=r"already quantized \(gptq int4 g32 asym\)"):
        exaone_cpu.load(packed, quant="int8")
    from safetensors.numpy import load_file
    arrays = load_file(str(packed / "model.safetensors"))
    arrays["model.layers.0.mlp.up_proj.scales"] = arrays["model.layers.0.mlp.up_proj.scales"][:, :-8].copy()
    del arrays["model.layers.1.self_attn.k_proj.qzeros"]
    save_file(arrays, str(packed / "model.safetensors"))
    with pytest.raises(CheckpointError, match="up_proj.scales' has shape"):
        exaone_cpu.load(packed)
    arrays["model.layers.0.mlp.up_proj.scales"] = np.full((4, 256), np.inf, np.float16)  # right shape, not finite
    save_file(arrays, str(packed / "model.safetensors"))
    with pytest.raises(CheckpointError, match="up_proj.scales: scales that are inf or NaN"):
        exaone_cpu.load(packed)
    arrays["model.layers.0.mlp.up_proj.scales"] = np.zeros((2, 2), np.float16)
    arrays.pop("model.layers.0.mlp.up_proj.scales")
    save_file(arrays, str(packed / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensor 'model.layers.0.mlp.up_proj.scales'"):
        exaone_cpu.load(packed)
