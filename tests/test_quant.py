"""Quantized formats and kernels (docs/quantization.md), on every ISA this machine runs.

Oracles are written here in numpy from the documented layout, independently of the C++: the row
tiles and nibbles, the activation quantizer (bit-exact), and the matmul's math from exact integer block
sums. Every ISA is also checked against the scalar reference: bit-exact where the data make every
float operation exact, within magnitude x epsilon otherwise. Quantization error is tested apart
from kernel error. Outputs are pre-filled with NaN so an unwritten element fails.
"""

import numpy as np
import pytest

from conftest import run_on
from exaone_cpu import _core

ISAS = _core.available_isas()
FMT = _core.QuantFormat
FORMATS = [FMT.Q8G, FMT.Q4G, FMT.Q4GA]
# (format, group_size) pairs the format supports; 0 = one scale per row (int8 only)
FORMAT_GROUPS = [(f, g) for f in FORMATS for g in (32, 64, 128)] + [(FMT.Q8G, 0)]
KS = [32, 64, 96, 160, 288, 2080]  # 1, 2, 3, 5, 9, 65 blocks: odd tails, short last groups
NS = [1, 3, 8, 13, 17, 40]  # whole row tiles of 8 and a partial last tile
TS = [1, 2, 3, 5, 9, 67]  # tails of the 4-token tile and of the 64-token block




def fid(p):
    return f"{p[0].name}-g{p[1]}" if isinstance(p, tuple) else str(p)


# ---- numpy oracles of the documented formats ---------------------------------------------------


def f16(bits):
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float64)


def tiles(N):
    """Row tiles of the documented layout: (first row, width), 8 rows each, the last N % 8."""
    return [(n0, min(8, N - n0)) for n0 in range(0, N, 8)]


def unpack_codes(fmt, qweight, K):
    """Integer codes [N, K] (q for Q8G, nibbles u for Q4G / Q4GA) from the row tiles: a tile's
    bytes are [K/4][W][4] int8 q, or [K/8][W][4] bytes holding k 0-3 of an 8-k run in the low
    nibbles and k 4-7 in the high ones."""
    N = qweight.shape[0]
    out = np.empty((N, K), np.int64)
    for n0, W in tiles(N):
        t = qweight[n0 : n0 + W].reshape(-1).astype(np.int64)
        if fmt == FMT.Q8G:
            rows = t.reshape(K // 4, W, 4)
        else:
            t = t.reshape(K // 8, W, 4)
            rows = np.concatenate([t & 15, t >> 4], axis=2)
        out[n0 : n0 + W] = rows.transpose(1, 0, 2).reshape(W, K)
    return out


def pack_codes(fmt, codes):
    """Inverse of unpack_codes, for building weights by hand."""
    N, K = codes.shape
    out = np.zeros((N, K if fmt == FMT.Q8G else K // 2), np.int8 if fmt == FMT.Q8G else np.uint8)
    for n0, W in tiles(N):
        c = codes[n0 : n0 + W]
        if fmt == FMT.Q8G:
            t = c.reshape(W, K // 4, 4)
        else:
            c = c.reshape(W, K // 8, 8)
            t = c[..., :4] | (c[..., 4:] << 4)
        out[n0 : n0 + W] = t.transpose(1, 0, 2).reshape(W, -1).astype(out.dtype)
    return out


def untile_groups(a):
    """Scales / mins [N, G] in row order from the row tiles (a tile is [G][W])."""
    N, G = a.shape
    out = np.empty_like(a)
    for n0, W in tiles(N):
        out[n0 : n0 + W] = a[n0 : n0 + W].reshape(G, W).T
    return out


def weight_ints(fmt, qweight, K):
    """Integer weights as the kernels multiply them: signed q (Q8G), u - 8 (Q4G), u (Q4GA)."""
    c = unpack_codes(fmt, qweight, K)
    return c - 8 if fmt == FMT.Q4G else c


def per_column(groups, group_size, K):
    g = K if group_size == 0 else group_size
    return np.repeat(f16(untile_groups(groups)), g, axis=1)[:, :K]


def dequant_np(fmt, qweight, scales, mins, group_size, K):
    w = weight_ints(fmt, qweight, K) * per_column(scales, group_size, K)
    if fmt == FMT.Q4GA:
        w = w + per_column(mins, group_size, K)
    return w


def quantize_act_np(x):
    """The documented activation quantizer, in float32 exactly as specified: per 32 values
    d = amax / 127, q = round_half_even(x * (1 / d)); blocks with amax < 1e-30 are zero."""
    T, K = x.shape
    xb = x.reshape(T, K // 32, 32).astype(np.float32)
    amax = np.abs(xb).max(-1)
    zero = ~(amax >= np.float32(1e-30))
    d = np.where(zero, np.float32(0), amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(zero, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.rint(xb * inv[..., None]).astype(np.int64)
    return q, d, q.sum(-1)


def matmul_np(x, fmt, qweight, scales, mins, group_size):
    """The kernels' math from exact integer block sums, in float64: y and the magnitude
    Σ|w q| s d (+ |min term|) that float32 rounding errors scale with."""
    T, K = x.shape
    nb = K // 32
    q, d, sums = quantize_act_np(x)
    wi = weight_ints(fmt, qweight, K).reshape(-1, nb, 32)
    isum = np.einsum("tbi,nbi->tnb", q, wi)  # exact integer dot of every (token, row, block)
    # SIMD lanes hold partial sums of a block, so rounding scales with Σ|w q|, not |Σ w q|
    asum = np.einsum("tbi,nbi->tnb", np.abs(q), np.abs(wi))
    g = K if group_size == 0 else group_size
    block_group = (np.arange(nb) * 32) // g
    s = f16(untile_groups(scales))[:, block_group]  # [N, nb]
    sd = s[None] * d[:, None, :].astype(np.float64)
    terms, mag = isum * sd, asum * np.abs(sd)
    if fmt == FMT.Q4GA:
        m = f16(untile_groups(mins))[:, block_group]
        mterm = m[None] * (d * sums)[:, None, :]
        terms = np.concatenate([terms, mterm], axis=-1)
        mag = np.concatenate([mag, np.abs(mterm)], axis=-1)
    return terms.sum(-1), mag.sum(-1)


def assert_matmul_close(y, ref, mag, K, what):
    """|err| <= (blocks + 8) * 2^-23 * magnitude per element: every float32 op of the kernel adds
    at most one rounding of a partial sum bounded by the magnitude."""
    assert y.shape == ref.shape, what
    assert np.all(np.isfinite(y)), f"{what}: non-finite output at {np.argwhere(~np.isfinite(y))[:3].tolist()}"
    tol = (K // 32 + 8) * 2.0**-23 * mag + 1e-30
    err = np.abs(y.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert err[worst] <= tol[worst], (
        f"{what}: worst element (t, n) = {worst}: {y[worst]!r} vs {ref[worst]!r} "
        f"(|err| {err[worst]:.3g} > tol {tol[worst]:.3g})"
    )


def quantized(fmt, group_size, N, K, seed=0, scale=0.05):
    w = np.random.default_rng(seed).normal(0, scale, (N, K)).astype(np.float32)
    return w, _core.quantize(w, _core.WeightType.F32, fmt, group_size)


def qmm(x, qw, sc, mn, fmt, g):
    out = np.full((x.shape[0], qw.shape[0]), np.nan, np.float32)
    return _core.quant_matmul(x, qw, sc, mn, fmt, g, out=out)


# ---- dispatch --------------------------------------------------------------------------------


def test_quant_kernels_follow_set_isa():
    before = _core.isa()
    try:
        for name in ISAS:
            _core.set_isa(name)
            # on x86 the quantized matmuls are AVX2's, with vpdpbusd where the CPU has AVX-VNNI or
            # AVX-512 VNNI, under either float table
            x86 = ("avx2", "avx2-vnni", "avx2-avx512vnni")
            assert _core.quant_isa() in (x86 if name in ("avx2", "avx512") else (name,))
        _core.set_isa("scalar")
        assert _core.quant_isa() == "scalar"
    finally:
        _core.set_isa(before)


# ---- activations -----------------------------------------------------------------------------


@pytest.mark.parametrize("K", [32, 64, 96, 2080])
def test_activation_quantizer_is_the_documented_one_bit_for_bit(isa, K):
    rng = np.random.default_rng(K)
    x = rng.normal(0, 3, (7, K)).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block: d = 0, no 1/0
    x[2, 32:] *= 1e-32  # blocks below the 1e-30 cut: zeros
    x[3, 5] = 1e4  # an outlier
    x[4, :32] = np.float32(2.5) * np.float32(1 / 127) * np.arange(32)  # exact .5 ties round to even
    # misaligned rows: a view one float into a bigger buffer
    buf = np.empty(x.size + 1, np.float32)
    xm = buf[1:].reshape(x.shape)
    xm[:] = x
    qs, d, sums = _core.quantize_activations(xm)
    q_ref, d_ref, s_ref = quantize_act_np(x)
    assert np.array_equal(d, d_ref), np.argwhere(d != d_ref)[:3]
    assert np.array_equal(qs.reshape(q_ref.shape), q_ref), np.argwhere(qs.reshape(q_ref.shape) != q_ref)[:3]
    assert np.array_equal(sums, s_ref)
    assert np.abs(qs).max() <= 127
    assert np.all(np.isfinite(d)) and d[1, 0] == 0 and np.all(qs[1, :32] == 0)


# ---- weight quantizer: layout, error, scale search -------------------------------------------


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
@pytest.mark.parametrize("K", [32, 96, 160])
def test_quantize_layout_and_dequant_rows(fmt_group, K):
    fmt, g = fmt_group
    w, (qw, sc, mn) = quantized(fmt, g, 13, K, seed=K)
    groups = 1 if g == 0 else -(-K // g)
    assert qw.dtype == (np.int8 if fmt == FMT.Q8G else np.uint8)
    assert qw.shape == (13, K if fmt == FMT.Q8G else K // 2)
    assert sc.dtype == np.uint16 and sc.shape == (13, groups)
    assert (mn is not None) == (fmt == FMT.Q4GA)
    if mn is not None:
        assert mn.dtype == np.uint16 and mn.shape == (13, groups)
    if fmt == FMT.Q8G:
        assert qw.min() >= -127  # -128 is never produced (the sign trick stays symmetric)
    ref = dequant_np(fmt, qw, sc, mn, g, K)
    ids = np.array([12, 0, 5, 5], np.int64)
    for name in ISAS:
        rows = run_on(name, _core.dequant_rows, qw, sc, mn, fmt, g, ids)
        assert np.array_equal(rows, ref[ids].astype(np.float32)), name


def group_errors(w, deq, group_size):
    N, K = w.shape
    g = K if group_size == 0 else group_size
    e = ((w.astype(np.float64) - deq) ** 2)
    n_groups = -(-K // g)
    pad = np.zeros((N, n_groups * g))
    pad[:, :K] = e
    return pad.reshape(N, n_groups, g).sum(-1)


def absmax_reference(fmt, w, group_size):
    """Plain absmax rounding in numpy: s = f16(absmax / qmax), q = round(w / s) (int4 asym:
    s = f16((max - min) / 15), m = f16(min), u = round((w - m) / s))."""
    N, K = w.shape
    g = K if group_size == 0 else group_size
    out = np.empty((N, K))
    for k0 in range(0, K, g):
        blk = w[:, k0 : k0 + g].astype(np.float32)
        if fmt == FMT.Q4GA:
            lo, hi = blk.min(1, keepdims=True), blk.max(1, keepdims=True)
            s = ((hi - lo) / np.float32(15)).astype(np.float16).astype(np.float64)
            m = lo.astype(np.float16).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.where(s > 0, np.clip(np.rint((blk - m) / s), 0, 15), 0)
            out[:, k0 : k0 + g] = s * u + m
        else:
            qmax = 127 if fmt == FMT.Q8G else 7
            qmin = -127 if fmt == FMT.Q8G else -8
            s = (np.abs(blk).max(1, keepdims=True) / np.float32(qmax)).astype(np.float16).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(s > 0, np.clip(np.rint(blk / s), qmin, qmax), 0)
            out[:, k0 : k0 + g] = s * q
    return out


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
@pytest.mark.parametrize("dist", ["normal", "student_t3"])
def test_scale_search_beats_absmax_rounding(fmt_group, dist):
    fmt, g = fmt_group
    rng = np.random.default_rng(7)
    w = (rng.normal(0, 0.02, (64, 1024)) if dist == "normal" else 0.02 * rng.standard_t(3, (64, 1024)))
    w = w.astype(np.float32)
    qw, sc, mn = _core.quantize(w, _core.WeightType.F32, fmt, g)
    ours = group_errors(w, dequant_np(fmt, qw, sc, mn, g, 1024), g)
    plain = group_errors(w, absmax_reference(fmt, w, g), g)
    # never worse in any group (the absmax scale is one of the candidates), clearly better overall
    worse = ours > plain * (1 + 1e-9) + 1e-18
    assert not worse.any(), f"groups worse than absmax: {np.argwhere(worse)[:3].tolist()}"
    # measured: int8 g32..g128 0.81-0.96, per-row 0.99; int4 0.68-0.73; int4 asym 0.80-0.87
    limit = 0.995 if g == 0 else 0.97 if fmt == FMT.Q8G else 0.9
    assert ours.sum() < limit * plain.sum(), f"squared error {ours.sum():.4g} vs absmax {plain.sum():.4g}"


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
def test_round_trip_error_within_documented_bound(fmt_group):
    """docs/quantization.md: each group's RMS error is at most half a step of absmax rounding,
    step = absmax / qmax (int8: 127, int4: 7) or (max - min) / 15 (asym), plus the f16 rounding
    of the min (asym), which is at most |min| * 2^-11."""
    fmt, g = fmt_group
    rng = np.random.default_rng(3)
    w = (0.02 * rng.standard_t(4, (48, 160))).astype(np.float32)
    w[5] += 0.3  # a row with an offset: exercises the asym min
    qw, sc, mn = _core.quantize(w, _core.WeightType.F32, fmt, g)
    K = w.shape[1]
    gs = K if g == 0 else g
    deq = dequant_np(fmt, qw, sc, mn, g, K)
    for k0 in range(0, K, gs):
        blk = w[:, k0 : k0 + gs].astype(np.float64)
        rms = np.sqrt(((blk - deq[:, k0 : k0 + gs]) ** 2).mean(1))
        if fmt == FMT.Q4GA:
            step = (blk.max(1) - blk.min(1)) / 15
            bound = 0.5 * step * (1 + 2.0**-10) + np.abs(blk.min(1)) * 2.0**-11
        else:
            step = np.abs(blk).max(1) / (127 if fmt == FMT.Q8G else 7)
            bound = 0.5 * step * (1 + 2.0**-10)
        assert np.all(rms <= bound), f"group at {k0}: rms {rms.max():.4g} > bound {bound[np.argmax(rms / bound)]:.4g}"
    # and the whole matrix, relative to its RMS: int8 ~0.4 %, int4 ~8 % (documented typical values)
    rel = np.sqrt(((w - deq) ** 2).mean() / (w.astype(np.float64) ** 2).mean())
    assert rel < (0.01 if fmt == FMT.Q8G else 0.12), rel


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
def test_all_zero_groups_give_zeros_not_nan(isa, fmt_group):
    fmt, g = fmt_group
    K = 160
    w = np.random.default_rng(1).normal(0, 1, (6, K)).astype(np.float32)
    w[1] = 0.0  # a zero row
    w[2, :32] = 0.0  # a zero block / group
    w[3, :] = 1e-12  # below f16's smallest scale: rounds to zero, not 1/0
    w[4, :] = -0.0
    qw, sc, mn = _core.quantize(w, _core.WeightType.F32, fmt, g)
    deq = _core.dequant_rows(qw, sc, mn, fmt, g, np.arange(6, dtype=np.int64))
    assert np.all(np.isfinite(deq))
    assert np.all(deq[1] == 0) and np.all(deq[4] == 0) and np.all(deq[3] == 0)
    x = np.random.default_rng(2).normal(0, 1, (3, K)).astype(np.float32)
    x[0] = 0.0  # zero activations too
    y = qmm(x, qw, sc, mn, fmt, g)
    assert np.all(np.isfinite(y))
    assert np.all(y[0] == 0) and np.all(y[:, 1] == 0) and np.all(y[:, 3] == 0) and np.all(y[:, 4] == 0)
    sc = untile_groups(sc)
    if g == 32:
        assert np.all(sc[1] == 0) and sc[2, 0] == 0 and np.all(sc[3] == 0)


def test_quantizer_rejects_bad_weights():
    w = np.ones((4, 64), np.float32)
    w[2, 17] = np.nan
    with pytest.raises(ValueError, match="non-finite weight .* row 2, column 17"):
        _core.quantize(w, _core.WeightType.F32, FMT.Q4G, 32)
    w[2, 17] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        _core.quantize(w, _core.WeightType.F32, FMT.Q8G, 64)
    big = np.full((2, 64), 1e9, np.float32)
    with pytest.raises(ValueError, match="f16"):
        _core.quantize(big, _core.WeightType.F32, FMT.Q8G, 32)
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quantize(np.ones((2, 48), np.float32), _core.WeightType.F32, FMT.Q8G, 32)
    for bad in (16, 96, 256, -1):
        with pytest.raises(ValueError, match="group_size"):
            _core.quantize(np.ones((2, 64), np.float32), _core.WeightType.F32, FMT.Q8G, bad)
    with pytest.raises(ValueError, match="Q8G only"):
        _core.quantize(np.ones((2, 64), np.float32), _core.WeightType.F32, FMT.Q4G, 0)


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
def test_quantizer_gives_the_same_bits_on_every_isa(fmt_group):
    """A quantized checkpoint must not depend on the machine that made it."""
    fmt, g = fmt_group
    w = (0.02 * np.random.default_rng(9).standard_t(4, (37, 288))).astype(np.float32)
    w[3] += 0.5
    w[4, :64] = 0.0
    outs = [run_on(name, _core.quantize, w, _core.WeightType.F32, fmt, g) for name in ISAS]
    for name, out in zip(ISAS[1:], outs[1:]):
        for a, b in zip(out, outs[0]):
            assert (a is None and b is None) or np.array_equal(a, b), (name, fmt.name, g)


def test_quantize_bf16_and_f16_sources_equal_their_f32_values():
    w = np.random.default_rng(5).normal(0, 0.1, (9, 96)).astype(np.float32)
    bits = w.view(np.uint32)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    w_bf16 = (bf16.astype(np.uint32) << 16).view(np.float32)
    h = w.astype(np.float16)
    for fmt, g in FORMAT_GROUPS:
        a = _core.quantize(bf16, _core.WeightType.BF16, fmt, g)
        b = _core.quantize(w_bf16, _core.WeightType.F32, fmt, g)
        c = _core.quantize(h.view(np.uint16), _core.WeightType.F16, fmt, g)
        d = _core.quantize(h.astype(np.float32), _core.WeightType.F32, fmt, g)
        for x, y in ((a, b), (c, d)):
            assert all((p is None and q is None) or np.array_equal(p, q) for p, q in zip(x, y)), (fmt, g)


# ---- matmul kernels --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
def test_quant_matmul_against_numpy_math_and_scalar(isa, fmt_group):
    fmt, g = fmt_group
    rng = np.random.default_rng(11)
    for K in KS:
        for N in NS:
            w, (qw, sc, mn) = quantized(fmt, g, N, K, seed=K * 100 + N)
            x = rng.normal(0, 1, (max(TS), K)).astype(np.float32)
            x[:, : min(K, 64)] *= 10  # uneven block scales
            for T in TS:
                if T > 9 and K > 288:
                    continue  # keeps the numpy oracle quick
                xt = x[:T]
                y = qmm(xt, qw, sc, mn, fmt, g)
                ref, mag = matmul_np(xt, fmt, qw, sc, mn, g)
                what = f"{isa} {fmt.name} g{g} T={T} N={N} K={K}"
                assert_matmul_close(y, ref, mag, K, what)
                if isa != "scalar":
                    ys = run_on("scalar", qmm, xt, qw, sc, mn, fmt, g)
                    assert_matmul_close(y, ys.astype(np.float64), 2 * mag, K, what + " vs scalar")


@pytest.mark.parametrize("fmt_group", FORMAT_GROUPS, ids=fid)
def test_integer_sums_match_scalar_exactly(fmt_group):
    """Weights and activations chosen so every float op is exact (scales powers of two, activation
    blocks with absmax 127 so d = 1, sums below 2^24): any ISA must equal the scalar reference and
    the integer math bit for bit, including the extreme int8 weight -128 and saturating pairs."""
    fmt, g = fmt_group
    rng = np.random.default_rng(21)
    for K in (32, 96, 160, 288):
        for N in (1, 7, 8, 19):
            if fmt == FMT.Q8G:
                qw = rng.integers(-128, 128, (N, K)).astype(np.int8)
                qw[0, :2] = -128  # |w| = 128 with x = ±127: pair sum 32512, the largest maddubs sees
            else:
                qw = pack_codes(fmt, rng.integers(0, 16, (N, K)))
            groups = 1 if g == 0 else -(-K // g)
            sc = np.array([0.5, 1.0, 0.25], np.float16)[rng.integers(0, 3, (N, groups))].view(np.uint16)
            mn = (np.array([-3, 0, 2], np.float16)[rng.integers(0, 3, (N, groups))].view(np.uint16)
                  if fmt == FMT.Q4GA else None)
            for T in (1, 2, 5):
                x = rng.integers(-127, 128, (T, K)).astype(np.float32)
                blocks = x.reshape(T, K // 32, 32)
                blocks[:, :, 3] = 127.0  # absmax 127 in every block: d = 1, q = x exactly
                blocks[0, :, :2] = -127.0 if fmt == FMT.Q8G else 127.0
                ref, _ = matmul_np(x, fmt, qw, sc, mn, g)
                assert np.abs(ref).max() < 2**23
                for name in ISAS:
                    y = run_on(name, qmm, x, qw, sc, mn, fmt, g)
                    assert np.array_equal(y, ref.astype(np.float32)), (
                        f"{name} {fmt.name} g{g} K={K} N={N} T={T}: max |diff| {np.abs(y - ref).max()}")


def test_quant_matmul_threads_give_identical_results():
    w, (qw, sc, mn) = quantized(FMT.Q4G, 64, 70, 256)
    x = np.random.default_rng(0).normal(0, 1, (5, 256)).astype(np.float32)
    before = _core.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            _core.set_num_threads(n)
            outs.append((qmm(x[:1], qw, sc, mn, FMT.Q4G, 64), qmm(x, qw, sc, mn, FMT.Q4G, 64)))
    finally:
        _core.set_num_threads(before)
    for o in outs[1:]:
        assert np.array_equal(o[0], outs[0][0]) and np.array_equal(o[1], outs[0][1])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_quant_matmul_close_to_float_matmul(fmt):
    """End to end against the unquantized weights: the error the formats are for."""
    w, (qw, sc, mn) = quantized(fmt, 64, 64, 512)
    x = np.random.default_rng(1).normal(0, 1, (4, 512)).astype(np.float32)
    y = qmm(x, qw, sc, mn, fmt, 64)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    rel = np.sqrt(((y - ref) ** 2).mean() / (ref**2).mean())
    assert rel < (0.015 if fmt == FMT.Q8G else 0.12), rel


def test_quant_boundary_rejects_bad_arrays():
    w, (qw, sc, mn) = quantized(FMT.Q4GA, 32, 8, 64)
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="columns"):
        _core.quant_matmul(np.ones((2, 32), np.float32), qw, sc, mn, FMT.Q4GA, 32)
    with pytest.raises(ValueError, match="scales"):
        _core.quant_matmul(x, qw, sc[:, :1], mn, FMT.Q4GA, 32)
    with pytest.raises(ValueError, match="scales"):
        _core.quant_matmul(x, qw, sc, mn, FMT.Q4GA, 64)  # 1 group expected, 2 given
    with pytest.raises(ValueError, match="needs mins"):
        _core.quant_matmul(x, qw, sc, None, FMT.Q4GA, 32)
    with pytest.raises(ValueError, match="mins"):
        _core.quant_matmul(x, qw, sc, mn[:, :1], FMT.Q4GA, 32)
    with pytest.raises(ValueError, match="only used by Q4GA"):
        _core.quant_matmul(x, qw, sc, mn, FMT.Q4G, 32)
    with pytest.raises(ValueError, match="dtype"):
        _core.quant_matmul(x, qw.view(np.int8), sc, None, FMT.Q4G, 32)
    with pytest.raises(ValueError, match="dtype"):
        _core.quant_matmul(x, qw, sc.astype(np.float32), mn, FMT.Q4GA, 32)
    with pytest.raises(ValueError, match="group_size"):
        _core.quant_matmul(x, qw, sc, mn, FMT.Q4GA, 48)
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quant_matmul(np.ones((1, 16), np.float32), np.zeros((2, 8), np.uint8), np.zeros((2, 1), np.uint16),
                           None, FMT.Q4G, 32)
    with pytest.raises(ValueError, match="out"):
        _core.quant_matmul(x, qw, sc, mn, FMT.Q4GA, 32, out=np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        _core.dequant_rows(qw, sc, mn, FMT.Q4GA, 32, np.array([0, 8], np.int64))
    with pytest.raises(ValueError, match="out of range"):
        _core.dequant_rows(qw, sc, mn, FMT.Q4GA, 32, np.array([-1], np.int64))


def test_quant_matmul_multi_equals_separate_calls(isa):
    """q/k/v and gate/up run as one job: x quantized once, every weight's rows split over the pool;
    the result is bit-identical to one call per weight, in any mix of formats and shapes."""
    rng = np.random.default_rng(5)
    K = 160
    specs = [(FMT.Q4G, 64, 40), (FMT.Q8G, 0, 13), (FMT.Q4GA, 32, 8), (FMT.Q8G, 128, 3)]
    weights = [quantized(f, g, n, K, seed=n)[1] + (f, g) for f, g, n in specs]
    for T in (1, 5):
        x = rng.normal(0, 1, (T, K)).astype(np.float32)
        outs = _core.quant_matmul_multi(x, weights)
        assert len(outs) == len(specs)
        for (qw, sc, mn, f, g), y in zip(weights, outs):
            assert y.shape == (T, qw.shape[0])
            assert np.array_equal(y, _core.quant_matmul(x, qw, sc, mn, f, g))


def test_quant_matmul_multi_rejects_bad_input():
    _, (qw, sc, mn) = quantized(FMT.Q4G, 32, 8, 64)
    _, (qw2, sc2, mn2) = quantized(FMT.Q4G, 32, 8, 96)
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="no weights"):
        _core.quant_matmul_multi(x, [])
    with pytest.raises(ValueError, match="weight 1 has in_features 96"):
        _core.quant_matmul_multi(x, [(qw, sc, mn, FMT.Q4G, 32), (qw2, sc2, mn2, FMT.Q4G, 32)])
    with pytest.raises(ValueError, match="must be"):
        _core.quant_matmul_multi(x, [(qw, sc, mn, FMT.Q4G)])
    with pytest.raises(ValueError, match="scales"):
        _core.quant_matmul_multi(x, [(qw, sc[:, :1], mn, FMT.Q4G, 32)])
