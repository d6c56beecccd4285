"""Every op on every ISA this machine runs, against the scalar reference and against numpy.

Sizes sweep 1..2x the vector width plus odd and larger sizes so every tail is exercised; outputs
are pre-filled with NaN so an element a kernel forgets to write fails the comparison.
"""

import os

import numpy as np
import pytest

from conftest import run_on
from exaone_cpu import _core

ISAS = _core.available_isas()
HERE = os.path.dirname(os.path.abspath(__file__))  # a cwd where the installed package is imported
VECTOR_SIZES = list(range(1, 17)) + [17, 23, 31, 33, 63, 64, 65, 127, 130]
rng = np.random.default_rng(1234)



@pytest.fixture(params=[1, 2, 3])
def threads(request):
    before = _core.get_num_threads()
    _core.set_num_threads(request.param)
    yield request.param
    _core.set_num_threads(before)



def assert_close(actual, expected, rtol=2e-6, what=""):
    """Tolerance from the magnitude of the data times a few float32 epsilons; names the worst element."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite output at {np.argwhere(~np.isfinite(actual))[:3]}"
    scale = max(np.abs(expected).max(), 1e-30)
    err = np.abs(actual - expected)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err[worst] <= rtol * scale, (
        f"{what}: worst element {worst}: {actual[worst]} vs {expected[worst]} "
        f"(|err| {err[worst]:.3g} > {rtol:.1g} x {scale:.3g})"
    )


def to_bf16(a):
    """Round-to-nearest-even float32 -> bf16 bit patterns (uint16), and their float32 values."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded, (rounded.astype(np.uint32) << 16).view(np.float32)


def test_isa_names_and_override():
    assert ISAS[0] == "scalar"
    assert _core.isa() in ISAS
    with pytest.raises(ValueError, match="not available"):
        _core.set_isa("avx9000")


def test_cpu_with_avx2_uses_it_by_default():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import exaone_cpu; print(exaone_cpu.isa())"],
                         capture_output=True, text=True, check=True, cwd=HERE).stdout.strip()
    assert out == ISAS[-1]


def test_isa_environment_override():
    import subprocess
    import sys

    code = "import exaone_cpu; print(exaone_cpu.isa())"
    env = dict(os.environ, EXAONE_CPU_ISA="scalar")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=HERE).stdout.strip() == "scalar"
    env["EXAONE_CPU_ISA"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE)
    assert bad.returncode != 0 and "bogus" in bad.stderr
    if "avx2" in ISAS:  # an AVX2-only laptop's kernels, integer ones included, on any AVX2 machine
        env["EXAONE_CPU_ISA"] = "avx2"
        both = "import exaone_cpu; from exaone_cpu import _core; print(exaone_cpu.isa(), _core.quant_isa())"
        assert subprocess.run([sys.executable, "-c", both], env=env, capture_output=True, text=True, check=True,
                              cwd=HERE).stdout.split() == ["avx2", "avx2"]


def test_malloc_environment():
    """EXAONE_CPU_MALLOC: 'keep' (the default: freed activations stay in glibc's heap for the next
    step), 'system', or an import error naming the variable; the user's own malloc tuning wins."""
    import platform
    import subprocess
    import sys

    code = "from exaone_cpu import _core; print(_core.malloc_mode())"

    def mode(**extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
        env.update(extra)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE)

    glibc = platform.libc_ver()[0] == "glibc"
    assert mode().stdout.strip() == ("keep" if glibc else "n/a")
    assert mode(EXAONE_CPU_MALLOC="system").stdout.strip() == ("system" if glibc else "n/a")
    if glibc:
        assert mode(MALLOC_MMAP_THRESHOLD_="131072").stdout.strip() == "user"
    bad = mode(EXAONE_CPU_MALLOC="bogus")
    assert bad.returncode != 0 and "EXAONE_CPU_MALLOC" in bad.stderr and "bogus" in bad.stderr


@pytest.mark.parametrize("wtype", ["F32", "BF16", "F16"])
@pytest.mark.parametrize("K", [1, 7, 8, 9, 15, 16, 17, 33, 64, 100])
def test_matmul_against_numpy_and_scalar(isa, wtype, K):
    for T in (1, 2, 3, 4, 5, 9, 33):
        for N in (1, 2, 3, 4, 5, 7, 50, 97):
            x = rng.standard_normal((T, K)).astype(np.float32)
            w32 = rng.standard_normal((N, K)).astype(np.float32)
            if wtype == "F32":
                w, wv = w32, w32
            elif wtype == "BF16":
                w, wv = to_bf16(w32)
            else:
                wv = w32.astype(np.float16)
                w, wv = wv.view(np.uint16), wv.astype(np.float32)
            wt = getattr(_core.WeightType, wtype)
            out = np.full((T, N), np.nan, np.float32)
            _core.matmul(x, w, wt, out=out)
            expected = x.astype(np.float64) @ wv.astype(np.float64).T
            # a dot product of K terms: error grows with K times the size of the terms
            tol = 4e-7 * (K + 4) * np.abs(x).max() * np.abs(wv).max() / max(np.abs(expected).max(), 1e-30)
            assert_close(out, expected, rtol=max(tol, 2e-6), what=f"{isa} {wtype} T={T} K={K} N={N}")
            ref = run_on("scalar", _core.matmul, x, w, wt)
            assert_close(out, ref, rtol=max(tol, 2e-6), what=f"{isa} vs scalar {wtype} T={T} K={K} N={N}")


def test_matmul_threads_split_rows_exactly(threads):
    x = rng.standard_normal((37, 200)).astype(np.float32)
    w = rng.standard_normal((1001, 200)).astype(np.float32)
    single = None
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        single = _core.matmul(x, w, _core.WeightType.F32)
    finally:
        _core.set_num_threads(before)
    # Each output element is computed by one thread the same way: results are bit-identical.
    np.testing.assert_array_equal(_core.matmul(x, w, _core.WeightType.F32), single)


def test_bf16_and_f16_conversions_are_exact(isa):
    bits = rng.integers(0, 2**16, size=1000, dtype=np.uint16)
    f16 = bits.view(np.float16)
    nan = np.isnan(f16)
    got = _core.to_f32(bits, _core.WeightType.F16)
    np.testing.assert_array_equal(got[~nan], f16[~nan].astype(np.float32))  # incl. subnormals, inf
    assert np.isnan(got[nan]).all()
    np.testing.assert_array_equal(
        _core.to_f32(bits, _core.WeightType.BF16), (bits.astype(np.uint32) << 16).view(np.float32)
    )


@pytest.mark.parametrize("n", VECTOR_SIZES)
def test_rmsnorm(isa, n):
    rows = 5
    x = rng.standard_normal((rows, n)).astype(np.float32) * 3
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    eps = 1e-5
    out = np.full_like(x, np.nan)
    _core.rmsnorm(x, w, eps, out=out)
    x64 = x.astype(np.float64)
    expected = w * (x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + eps))
    assert_close(out, expected, rtol=4e-6, what=f"rmsnorm {isa} n={n}")
    assert_close(out, run_on("scalar", _core.rmsnorm, x, w, eps), rtol=4e-6, what="vs scalar")

    residual = rng.standard_normal((rows, n)).astype(np.float32)
    expected_sum = residual + expected
    _core.rmsnorm_add(residual, x, w, eps)
    assert_close(residual, expected_sum, rtol=4e-6, what=f"rmsnorm_add {isa} n={n}")


@pytest.mark.parametrize("n", VECTOR_SIZES + [10000, 20001])
def test_silu_mul(isa, threads, n):
    gate = (rng.standard_normal(n) * 6).astype(np.float32)
    gate[: min(n, 4)] = [-100.0, 100.0, 0.0, -0.0][: min(n, 4)]  # saturated and zero inputs
    up = rng.standard_normal(n).astype(np.float32)
    out = np.full_like(gate, np.nan)
    _core.silu_mul(gate, up, out=out)
    g = gate.astype(np.float64)
    expected = g / (1 + np.exp(-g)) * up
    # elementwise: relative to each element (a few ulp), not to the largest one
    np.testing.assert_allclose(out, expected, rtol=3e-6, atol=1e-30, err_msg=f"{isa} n={n}")
    np.testing.assert_allclose(out, run_on("scalar", _core.silu_mul, gate, up), rtol=3e-6, atol=1e-30)


@pytest.mark.parametrize("head_dim", [2, 4, 8, 14, 16, 18, 32, 34, 64, 128])
def test_rope(isa, head_dim):
    T, heads = 6, 3
    x = rng.standard_normal((T, heads, head_dim)).astype(np.float32)
    positions = np.array([0, 1, 5, 100, 4095, 65535], np.int64)
    inv_freq = (1.0 / 1e6 ** (np.arange(0, head_dim, 2) / head_dim)).astype(np.float32)
    out = x.copy()
    _core.rope(out, positions, inv_freq, 1.0)
    half = head_dim // 2
    angle = (positions[:, None].astype(np.float32) * inv_freq[None, :]).astype(np.float64)  # f32 product
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    x1, x2 = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    expected = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    assert_close(out, expected, rtol=2e-6, what=f"rope {isa} d={head_dim}")
    ref = x.copy()
    run_on("scalar", _core.rope, ref, positions, inv_freq, 1.0)
    assert_close(out, ref, rtol=2e-6, what="vs scalar")


def numpy_attention(q, k, v, key_pos, q_pos, window, scale):
    """k, v: [kv_heads, slots, head_dim]."""
    T, H, D = q.shape
    KV = k.shape[0]
    out = np.zeros((T, H, D))
    for t in range(T):
        for h in range(H):
            kvh = h // (H // KV)
            ok = (key_pos >= 0) & (key_pos <= q_pos[t])
            if window:
                ok &= q_pos[t] - key_pos < window
            if not ok.any():
                continue
            s = (k[kvh, ok].astype(np.float64) @ q[t, h]) * scale
            p = np.exp(s - s.max())
            p /= p.sum()
            out[t, h] = p @ v[kvh, ok]
    return out


@pytest.mark.parametrize("D", [1, 3, 8, 9, 16, 17, 24, 32, 64])
@pytest.mark.parametrize("H,KV", [(1, 1), (4, 2), (4, 1), (6, 3), (6, 1), (10, 2)])
@pytest.mark.parametrize("window", [0, 1, 3])
def test_attention(isa, D, H, KV, window):
    S, T = 11, 4
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((KV, S, D)).astype(np.float32)
    v = rng.standard_normal((KV, S, D)).astype(np.float32)
    # a ring buffer: positions out of slot order, one empty slot
    key_pos = np.array([8, 9, 10, 0, 1, 2, 3, 4, 5, 6, -1], np.int64)
    q_pos = np.array([7, 8, 9, 10], np.int64)
    scale = D**-0.5
    out = np.full((T, H, D), np.nan, np.float32)
    _core.attention(q, k, v, key_pos, q_pos, window, scale, out=out)
    expected = numpy_attention(q, k, v, key_pos, q_pos, window, scale)
    assert_close(out, expected, rtol=4e-6, what=f"attention {isa} D={D} H={H} KV={KV} w={window}")
    ref = run_on("scalar", _core.attention, q, k, v, key_pos, q_pos, window, scale)
    assert_close(out, ref, rtol=4e-6, what="vs scalar")


def test_attention_long_softmax_rows(isa):
    # score rows longer than the vector width, with large logits
    S, H, D = 300, 2, 16
    q = (rng.standard_normal((3, H, D)) * 4).astype(np.float32)
    k = (rng.standard_normal((1, S, D)) * 4).astype(np.float32)
    v = rng.standard_normal((1, S, D)).astype(np.float32)
    key_pos = np.arange(S, dtype=np.int64)
    q_pos = np.array([0, 150, 299], np.int64)
    out = _core.attention(q, k, v, key_pos, q_pos, 0, 0.25)
    assert_close(out, numpy_attention(q, k, v, key_pos, q_pos, 0, 0.25), rtol=1e-5, what=isa)


@pytest.mark.parametrize("T", [1, 3, 20])  # decode (KV heads split over threads) and prefill (a token per task)
@pytest.mark.parametrize("D", [8, 17, 64])
def test_attention_f16_cache(isa, T, D):
    S, H, KV = 90, 4, 2
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((KV, S, D)).astype(np.float16)
    v = rng.standard_normal((KV, S, D)).astype(np.float16)
    key_pos = np.full(S, -1, np.int64)
    key_pos[: S - 5] = (np.arange(S - 5) + 40) % (S - 5)  # ring order, a few empty slots
    q_pos = np.arange(S - 5 - T, S - 5, dtype=np.int64)
    out = np.full((T, H, D), np.nan, np.float32)
    _core.attention(q, k, v, key_pos, q_pos, 0, D**-0.5, out=out)
    expected = numpy_attention(q, k.astype(np.float32), v.astype(np.float32), key_pos, q_pos, 0, D**-0.5)
    assert_close(out, expected, rtol=4e-6, what=f"f16 cache {isa} T={T} D={D}")


def quantize_rows(x):
    """The int8 KV cache's rows in plain numpy (the reference of _core.kv_store_int8): x [..., D] as
    int8 codes with one f32 scale per row, x ≈ scale * q, scale = max|x| / 127, q rounded half to
    even (a zero row gets scale 0)."""
    amax = np.abs(x).max(axis=-1)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale > 0)
    return np.rint(x * inv[..., None]).astype(np.int8), scale


def int8_rows(x):
    """x [KV, S, D] as int8 rows with one scale each (quantize_rows), and their values."""
    q, scale = quantize_rows(x)
    return q, scale, q.astype(np.float32) * scale[..., None]


@pytest.mark.parametrize("T", [1, 3, 20])
@pytest.mark.parametrize("D", [8, 17, 64])
@pytest.mark.parametrize("window", [0, 7])
def test_attention_int8_cache(isa, T, D, window):
    """An int8 cache is attended exactly as the f32 rows it stands for (codes times scales)."""
    S, H, KV = 90, 4, 2
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k, ks, kf = int8_rows(rng.standard_normal((KV, S, D)).astype(np.float32))
    v, vs, vf = int8_rows(rng.standard_normal((KV, S, D)).astype(np.float32))
    key_pos = np.full(S, -1, np.int64)
    key_pos[: S - 5] = (np.arange(S - 5) + 40) % (S - 5)
    q_pos = np.arange(S - 5 - T, S - 5, dtype=np.int64)
    out = np.full((T, H, D), np.nan, np.float32)
    _core.attention(q, k, v, key_pos, q_pos, window, D**-0.5, out=out, k_scale=ks, v_scale=vs)
    expected = numpy_attention(q, kf, vf, key_pos, q_pos, window, D**-0.5)
    assert_close(out, expected, rtol=4e-6, what=f"int8 cache {isa} T={T} D={D}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("D", [64, 80, 20])  # 20: a head_dim the blocked kernels decline
@pytest.mark.parametrize("window", [0, 45])
def test_attention_prefill_blocks(isa, dtype, D, window):
    """A prompt chunk over a long ring-ordered cache: blocks of tokens against blocks of keys (the
    online softmax), five query heads per KV head, keys crossing several key blocks."""
    S, H, KV, T = 150, 10, 2, 40
    q = (rng.standard_normal((T, H, D)) * 2).astype(np.float32)
    k32 = rng.standard_normal((KV, S, D)).astype(np.float32)
    v32 = rng.standard_normal((KV, S, D)).astype(np.float32)
    key_pos = np.full(S, -1, np.int64)
    key_pos[: S - 6] = (np.arange(S - 6) + 61) % (S - 6)
    q_pos = np.arange(S - 6 - T, S - 6, dtype=np.int64)
    scales = {}
    if dtype == np.int8:
        (k, ks, k32), (v, vs, v32) = int8_rows(k32), int8_rows(v32)
        scales = {"k_scale": ks, "v_scale": vs}
    else:
        k, v = k32.astype(dtype), v32.astype(dtype)
        k32, v32 = k.astype(np.float32), v.astype(np.float32)
    out = np.full((T, H, D), np.nan, np.float32)
    _core.attention(q, k, v, key_pos, q_pos, window, D**-0.5, out=out, **scales)
    expected = numpy_attention(q, k32, v32, key_pos, q_pos, window, D**-0.5)
    assert_close(out, expected, rtol=4e-6, what=f"prefill {isa} {np.dtype(dtype).name} D={D} w={window}")


def test_int8_rows_round_to_nearest_with_the_row_max_at_127():
    rng_ = np.random.default_rng(5)
    x = rng_.standard_normal((3, 11, 16)).astype(np.float32) * rng_.uniform(0.01, 10, (3, 11, 1)).astype(np.float32)
    x[1, 4] = 0.0  # a zero row: scale 0, codes 0
    q, scale, back = int8_rows(x)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (3, 11)
    assert scale[1, 4] == 0 and not q[1, 4].any()
    live = scale > 0
    assert (np.abs(q).max(-1)[live] == 127).all()
    assert (np.abs(back - x) <= scale[..., None] / 2 * (1 + 1e-6)).all()


def test_kv_store_int8_equals_the_numpy_reference():
    """The cache's C++ store against quantize_rows, bit for bit, at scattered slots (a ring),
    with a zero row and exact ties (x / s = k + 0.5 rounds to even)."""
    rng_ = np.random.default_rng(11)
    T, KV, D, S = 5, 3, 64, 9
    x = (rng_.standard_normal((T, KV, D)) * rng_.uniform(0.01, 20, (T, KV, 1))).astype(np.float32)
    x[2, 1] = 0.0
    x[3, 0, :3] = [127.0, 0.5, 1.5]  # s = 1: 0.5 -> 0, 1.5 -> 2
    x[3, 0, 3:] = 0.25
    slots = np.array([7, 0, 3, 8, 1], np.int64)
    q = np.full((KV, S, D), 99, np.int8)
    scales = np.full((KV, S), -1.0, np.float32)
    _core.kv_store_int8(x, slots, q, scales)
    ref_q, ref_s = quantize_rows(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(q[:, slots], ref_q)
    np.testing.assert_array_equal(scales[:, slots], ref_s)
    assert list(q[0, 8, :3]) == [127, 0, 2] and scales[1, 3] == 0 and not q[1, 3].any()
    untouched = np.setdiff1d(np.arange(S), slots)
    assert (q[:, untouched] == 99).all() and (scales[:, untouched] == -1).all()
    with pytest.raises(ValueError, match=r"slots\[1\] = 9 is outside"):
        _core.kv_store_int8(x, np.array([0, 9, 1, 2, 3], np.int64), q, scales)
    with pytest.raises(ValueError, match="q"):
        _core.kv_store_int8(x, slots, q[:, :, :32].copy(), scales)
    with pytest.raises(ValueError, match="writable"):
        q.flags.writeable = False
        _core.kv_store_int8(x, slots, q, scales)


def test_attention_int8_cache_checks_its_scales():
    q = np.ones((1, 4, 8), np.float32)
    k = np.ones((2, 5, 8), np.int8)
    s = np.ones((2, 5), np.float32)
    pos = np.arange(5, dtype=np.int64)
    qp = np.array([4], np.int64)
    with pytest.raises(ValueError, match="needs k_scale and v_scale"):
        _core.attention(q, k, k, pos, qp, 0, 1.0)
    with pytest.raises(ValueError, match="k_scale"):
        _core.attention(q, k, k, pos, qp, 0, 1.0, k_scale=s[:, :4], v_scale=s)
    with pytest.raises(ValueError, match="v_scale"):
        _core.attention(q, k, k, pos, qp, 0, 1.0, k_scale=s, v_scale=s.astype(np.float64))
    with pytest.raises(ValueError, match="only for an int8 cache"):
        _core.attention(q, k.astype(np.float32), k.astype(np.float32), pos, qp, 0, 1.0, k_scale=s, v_scale=s)
    with pytest.raises(ValueError, match="float32 arrays"):
        _core.attention(q, k, k, pos, qp, 0, 1.0, k_scale=[1.0] * 10, v_scale=s)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("window", [0, 3])
def test_attention_batch_equals_attention_per_sequence(isa, dtype, window):
    """Rows of several sequences (decode rows and prompt chunks) in one call, each in its own cache.
    Equal up to rounding: a run of a sequence's tokens may take the blocked prefill kernel in one
    call and the token-by-token one in the other (an online softmax sums in another order)."""
    H, KV, D = 4, 2, 16
    lengths, slots = [1, 3, 1, 5], [7, 12, 30, 9]
    q = rng.standard_normal((sum(lengths), H, D)).astype(np.float32)
    caches, positions, expected = [], [], []
    row = 0
    for n, S in zip(lengths, slots):
        k = rng.standard_normal((KV, S, D)).astype(np.float32)
        v = rng.standard_normal((KV, S, D)).astype(np.float32)
        scales = ()
        if dtype == np.int8:
            (k, ks, _), (v, vs, _) = int8_rows(k), int8_rows(v)
            scales = (ks, vs)
        else:
            k, v = k.astype(dtype), v.astype(dtype)
        key_pos = np.full(S, -1, np.int64)
        key_pos[: S - 2] = np.arange(S - 2)
        q_pos = np.arange(S - 2 - n, S - 2, dtype=np.int64)
        caches.append((k, v, key_pos) + scales)
        positions.append(q_pos)
        expected.append(_core.attention(q[row : row + n], k, v, key_pos, q_pos, window, D**-0.5, None, *scales))
        row += n
    starts = np.cumsum([0] + lengths).astype(np.int64)
    out = np.full_like(q, np.nan)
    _core.attention_batch(q, caches, starts, np.concatenate(positions), window, D**-0.5, out=out)
    np.testing.assert_allclose(out, np.concatenate(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="row_starts"):
        _core.attention_batch(q, caches, starts[::-1].copy(), np.concatenate(positions), window, 1.0)
    with pytest.raises(ValueError, match="row_starts"):
        _core.attention_batch(q, caches[:3], starts, np.concatenate(positions), window, 1.0)
    other = np.float16 if dtype == np.float32 else np.float32
    mixed = caches[:3] + [tuple(a.astype(other) if a.dtype != np.int64 else a for a in caches[3][:3])]
    with pytest.raises(ValueError, match="cache 3"):
        _core.attention_batch(q, mixed, starts, np.concatenate(positions), window, 1.0)
    short = caches[:1] + [(caches[1][0], caches[1][1], caches[1][2][:-1]) + caches[1][3:]] + caches[2:]
    with pytest.raises(ValueError, match="cache 1: key_pos"):
        _core.attention_batch(q, short, starts, np.concatenate(positions), window, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("rope", [True, False])
def test_attention_block_equals_norms_rope_store_and_attention(isa, dtype, rope):
    """attention_block is rmsnorm per head, RoPE, the cache store (numpy: a copy, astype(float16),
    or quantize_rows) and attention_batch, bit for bit, for several sequences: decode rows and a
    chunk, one of them wrapping around a ring (slots = positions % S)."""
    H, KV, D, eps, window = 4, 2, 16, 1e-5, 5
    lengths, sizes, filled = [1, 3, 4], [9, 14, 6], [5, 11, 9]  # the last: positions 9..12 in a ring of 6
    T = sum(lengths)
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((T, KV, D)).astype(np.float32) * 3
    v = rng.standard_normal((T, KV, D)).astype(np.float32)
    q_norm, k_norm = (rng.uniform(0.5, 1.5, D).astype(np.float32) for _ in range(2))
    inv_freq = (1.0 / 10000 ** (np.arange(0, D, 2) / D)).astype(np.float32) if rope else None

    def new_cache(S, n):
        x = rng.standard_normal((2, KV, S, D)).astype(np.float32)
        pos = np.full(S, -1, np.int64)
        pos[np.arange(max(0, n - S), n) % S] = np.arange(max(0, n - S), n)
        if dtype == np.int8:
            (kq, ks), (vq, vs) = quantize_rows(x[0]), quantize_rows(x[1])
            return [kq, vq, pos, ks, vs]
        return [x[0].astype(dtype), x[1].astype(dtype), pos]

    caches = [new_cache(S, n) for S, n in zip(sizes, filled)]
    expected_caches = [[a.copy() for a in c] for c in caches]
    positions = np.concatenate([np.arange(n, n + m, dtype=np.int64) for n, m in zip(filled, lengths)])
    starts = np.cumsum([0] + lengths).astype(np.int64)
    slots = np.concatenate([positions[a:b] % S for a, b, S in zip(starts, starts[1:], sizes)])

    eq, ek = _core.rmsnorm(q, q_norm, eps), _core.rmsnorm(k, k_norm, eps)
    if rope:
        _core.rope(eq, positions, inv_freq)
        _core.rope(ek, positions, inv_freq)
    for b, c in enumerate(expected_caches):
        rows, where = slice(starts[b], starts[b + 1]), slots[starts[b] : starts[b + 1]]
        for x, dst in ((ek, 0), (v, 1)):
            if dtype == np.int8:
                c[dst][:, where], c[dst + 3][:, where] = quantize_rows(x[rows].transpose(1, 0, 2))
            else:
                c[dst][:, where] = x[rows].transpose(1, 0, 2).astype(dtype)
        c[2][where] = positions[rows]
    expected = _core.attention_batch(eq, [tuple(c) for c in expected_caches], starts, positions, window, D**-0.5)

    out = _core.attention_block(q, k, v, q_norm, k_norm, eps, positions, inv_freq, [tuple(c) for c in caches],
                                starts, slots, window, D**-0.5)
    assert np.array_equal(q, eq) and np.array_equal(k, ek)  # normalized and rotated in place
    for c, e in zip(caches, expected_caches):
        for a, b in zip(c, e):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    assert np.array_equal(out, expected)

    one = [tuple(caches[0])]
    args = (q[:1], k[:1], v[:1], q_norm, k_norm, eps, positions[:1], inv_freq, one)
    with pytest.raises(ValueError, match="slots\\[0\\] = 9 is outside cache 0's 9 slots"):
        _core.attention_block(*args, np.array([0, 1], np.int64), np.array([9], np.int64), 0, 1.0)
    with pytest.raises(ValueError, match="slot 2 of cache 0 is written by two rows"):
        _core.attention_block(q[:2], k[:2], v[:2], q_norm, k_norm, eps, positions[:2], inv_freq, one,
                              np.array([0, 2], np.int64), np.array([2, 2], np.int64), 0, 1.0)
    frozen = [a.copy() for a in caches[0]]
    frozen[0].flags.writeable = False
    with pytest.raises(ValueError, match="must be writable"):
        _core.attention_block(*args[:-1], [tuple(frozen)], np.array([0, 1], np.int64), np.array([1], np.int64), 0, 1.0)
    with pytest.raises(ValueError, match="caches 0 and 1 are the same cache"):
        _core.attention_block(q[:2], k[:2], v[:2], q_norm, k_norm, eps, positions[:2], inv_freq, one + one,
                              np.array([0, 1, 2], np.int64), np.array([1, 2], np.int64), 0, 1.0)
    with pytest.raises(ValueError, match="k: dimension 1 must be 2"):
        _core.attention_block(q[:1], q[:1], v[:1], *args[3:], np.array([0, 1], np.int64), np.array([1], np.int64),
                              0, 1.0)


def test_f16_store_rounds_like_numpy(isa):
    """The f16 cache's store (the table's f32_to_f16, through attention_block) gives numpy's
    astype(float16) bit for bit: ties to even, subnormal halves, overflow to infinity, +-0."""
    D = 64
    special = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, -70000.0, 6.0e-8, 2.9e-8, 3.0e-8, -1e-9, 1e-40,
                        1 + 2**-11, 1 + 3 * 2**-11, 2**-14 * (1 + 2**-11), 2**-24 * 1.5], np.float32)
    x = (rng.standard_normal(8 * D) * 2.0 ** rng.integers(-26, 17, 8 * D)).astype(np.float32)
    x[: len(special)] = special
    x = x.reshape(8, 1, D)
    cache = (np.zeros((1, 8, D), np.float16), np.zeros((1, 8, D), np.float16), np.full(8, -1, np.int64))
    ones = np.ones(D, np.float32)
    _core.attention_block(np.ones((8, 1, D), np.float32), np.ones((8, 1, D), np.float32), x, ones, ones, 1e-5,
                          np.arange(8, dtype=np.int64), None, [cache], np.array([0, 8], np.int64),
                          np.arange(8, dtype=np.int64), 0, 1.0)
    with np.errstate(over="ignore"):  # numpy warns on the values that become infinity
        expected = x[:, 0].astype(np.float16)
    assert np.array_equal(cache[1][0].view(np.uint16), expected.view(np.uint16))


def test_boundary_rejects_bad_arrays():
    x = np.ones((2, 8), np.float32)
    w = np.ones((3, 8), np.float32)
    with pytest.raises(ValueError, match="dtype"):
        _core.matmul(x.astype(np.float64), w, _core.WeightType.F32)
    with pytest.raises(ValueError, match="columns"):
        _core.matmul(x, np.ones((3, 7), np.float32), _core.WeightType.F32)
    with pytest.raises(ValueError, match="uint16"):
        _core.matmul(x, w, _core.WeightType.BF16)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.matmul(np.ones((8, 2), np.float32).T, w, _core.WeightType.F32)
    with pytest.raises(ValueError, match="out"):
        _core.matmul(x, w, _core.WeightType.F32, out=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros((2, 3), np.float32)
        ro.flags.writeable = False
        _core.matmul(x, w, _core.WeightType.F32, out=ro)
    with pytest.raises(ValueError, match="empty"):
        _core.matmul(np.ones((0, 8), np.float32), w, _core.WeightType.F32)
    with pytest.raises(ValueError, match="weight size"):
        _core.rmsnorm(x, np.ones(7, np.float32), 1e-5)
    with pytest.raises(ValueError, match="even"):
        _core.rope(np.ones((1, 1, 3), np.float32), np.zeros(1, np.int64), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="multiple"):
        q = np.ones((1, 3, 4), np.float32)
        kv = np.ones((2, 2, 4), np.float32)
        _core.attention(q, kv, kv, np.zeros(2, np.int64), np.zeros(1, np.int64), 0, 1.0)
    with pytest.raises(ValueError, match="threads"):
        _core.set_num_threads(0)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_thread_pool_runs_every_task_exactly_once(threads):
    before = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        # many tiny jobs back to back: the hand-over between jobs is where a task could run twice
        assert _core._pool_selftest(20000, 7) == 0
    finally:
        _core.set_num_threads(before)
