// Thin bindings of csrc/ops: check at the boundary, release the GIL, call the op.
#include "../ops/ops.h"
#include "checks.h"

namespace exaone {
namespace bind {

using ops::WeightType;

namespace {

py::array out_or_new(py::object out, std::vector<py::ssize_t> shape, const char* name) {
  if (out.is_none()) return py::array_t<float>(shape);
  py::array o = py::reinterpret_borrow<py::array>(out);
  std::vector<int64_t> want(shape.begin(), shape.end());
  return checked<float>(o, name, int(shape.size()), want, true);
}

py::array matmul(py::array x, py::array w, WeightType wtype, py::object out) {
  checked<float>(x, "x", 2);
  if (wtype == WeightType::F32)
    checked<float>(w, "w", 2);
  else if (wtype == WeightType::BF16)
    checked<uint16_t>(w, "w (bf16 stored as uint16)", 2);
  else
    checked<uint16_t>(w, "w (f16 stored as uint16)", 2);
  const int64_t T = x.shape(0), K = x.shape(1), N = w.shape(0);
  if (w.shape(1) != K)
    throw py::value_error("matmul: x has " + std::to_string(K) + " columns but w has shape " +
                          shape_str(w) + " (expected [N, " + std::to_string(K) + "])");
  py::array y = out_or_new(out, {T, N}, "out");
  const float* xp = cptr<float>(x);
  const void* wp = w.data();
  float* yp = mptr<float>(y);
  {
    py::gil_scoped_release nogil;
    ops::matmul(xp, T, K, wp, wtype, N, yp);
  }
  return y;
}

py::array rmsnorm(py::array x, py::array w, float eps, py::object out) {
  checked<float>(w, "weight", 1);
  const int64_t n = w.shape(0);
  checked<float>(x, "x", -1);
  if (x.shape(x.ndim() - 1) != n)
    throw py::value_error("rmsnorm: last dimension of x " + shape_str(x) +
                          " does not match weight size " + std::to_string(n));
  py::array y = out_or_new(out, shape_of(x), "out");
  const float *xp = cptr<float>(x), *wp = cptr<float>(w);
  float* yp = mptr<float>(y);
  const int64_t rows = x.size() / n;
  {
    py::gil_scoped_release nogil;
    ops::rmsnorm(xp, rows, n, wp, eps, yp, false);
  }
  return y;
}

void rmsnorm_add(py::array residual, py::array x, py::array w, float eps) {
  checked<float>(w, "weight", 1);
  checked<float>(x, "x", -1);
  std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
  checked<float>(residual, "residual", int(x.ndim()), shape, true);
  const int64_t n = w.shape(0);
  if (x.shape(x.ndim() - 1) != n)
    throw py::value_error("rmsnorm_add: last dimension of x " + shape_str(x) +
                          " does not match weight size " + std::to_string(n));
  const float *xp = cptr<float>(x), *wp = cptr<float>(w);
  float* rp = mptr<float>(residual);
  const int64_t rows = x.size() / n;
  py::gil_scoped_release nogil;
  ops::rmsnorm(xp, rows, n, wp, eps, rp, true);
}

py::array silu_mul(py::array gate, py::array up, py::object out) {
  checked<float>(gate, "gate", -1);
  std::vector<int64_t> shape(gate.shape(), gate.shape() + gate.ndim());
  checked<float>(up, "up", int(gate.ndim()), shape);
  py::array y = out_or_new(out, shape_of(gate), "out");
  const float *gp = cptr<float>(gate), *upp = cptr<float>(up);
  float* yp = mptr<float>(y);
  const int64_t n = gate.size();
  {
    py::gil_scoped_release nogil;
    ops::silu_mul(gp, upp, n, yp);
  }
  return y;
}

void rope(py::array x, py::array positions, py::array inv_freq, float attention_scaling) {
  checked<float>(x, "x", 3, {}, true);
  const int64_t T = x.shape(0), heads = x.shape(1), D = x.shape(2);
  if (D % 2) throw py::value_error("rope: head_dim must be even, got " + std::to_string(D));
  checked<int64_t>(positions, "positions", 1, {T});
  checked<float>(inv_freq, "inv_freq", 1, {D / 2});
  float* xp = mptr<float>(x);
  const int64_t* pp = cptr<int64_t>(positions);
  const float* fp = cptr<float>(inv_freq);
  py::gil_scoped_release nogil;
  ops::rope(xp, T, heads, D, pp, fp, attention_scaling);
}

// The element type of a KV cache from its k array: float32, float16 (numpy float16 or its uint16
// bits) or int8 (with scales).
ops::KVType kv_type_of(const py::array& k) {
  if (py::isinstance<py::array_t<float>>(k)) return ops::KVType::F32;
  if (k.dtype().kind() == 'i' && k.itemsize() == 1) return ops::KVType::I8;
  return ops::KVType::F16;
}

// A KV cache's k / v [kv_heads, slots, D] (f32, f16, or int8 with k_scale / v_scale [kv_heads,
// slots] f32) and key_pos [slots], checked against the queries' D and the first cache's type (and,
// for a cache an op writes, that every array is writable; one that is not is only read, through
// view()).
ops::KVBuffers checked_kv(py::array& k, py::array& v, py::array& key_pos, const py::object& k_scale,
                          const py::object& v_scale, int64_t D, int64_t KV, ops::KVType type,
                          const std::string& which, const char* op, bool writable = false) {
  const bool scaled = !k_scale.is_none() || !v_scale.is_none();
  const std::string where = std::string(op) + ": " + which;
  if (scaled != (type == ops::KVType::I8))
    throw py::value_error(where + (scaled ? "k_scale / v_scale are only for an int8 cache"
                                          : "an int8 cache needs k_scale and v_scale"));
  auto data = [&](py::array& a) { return writable ? a.mutable_data() : const_cast<void*>(a.data()); };
  ops::KVBuffers view{};
  if (type == ops::KVType::F16) {
    if ((k.dtype().kind() != 'f' && k.dtype().kind() != 'u') || k.itemsize() != 2)
      throw py::value_error(where + "k_cache must be float32, float16 or int8, got " + std::string(py::str(k.dtype())));
    if (v.itemsize() != 2 || k.dtype().kind() != v.dtype().kind())
      throw py::value_error(where + "k_cache and v_cache must have the same dtype");
    k = k.dtype().kind() == 'f' ? k.view("uint16") : k;
    v = v.dtype().kind() == 'f' ? v.view("uint16") : v;
    checked<uint16_t>(k, (which + "k_cache (f16)").c_str(), 3, {KV, -1, D}, writable);
    checked<uint16_t>(v, (which + "v_cache (f16)").c_str(), 3, {KV, k.shape(1), D}, writable);
  } else if (type == ops::KVType::I8) {
    checked<int8_t>(k, (which + "k_cache (int8)").c_str(), 3, {KV, -1, D}, writable);
    checked<int8_t>(v, (which + "v_cache (int8)").c_str(), 3, {KV, k.shape(1), D}, writable);
    if (!py::isinstance<py::array>(k_scale) || !py::isinstance<py::array>(v_scale))
      throw py::value_error(where + "an int8 cache needs k_scale and v_scale as float32 arrays");
    py::array ks = k_scale.cast<py::array>(), vs = v_scale.cast<py::array>();
    checked<float>(ks, (which + "k_scale").c_str(), 2, {KV, k.shape(1)}, writable);
    checked<float>(vs, (which + "v_scale").c_str(), 2, {KV, k.shape(1)}, writable);
    view.k_scale = static_cast<float*>(data(ks));
    view.v_scale = static_cast<float*>(data(vs));
  } else {
    checked<float>(k, (which + "k_cache").c_str(), 3, {KV, -1, D}, writable);
    checked<float>(v, (which + "v_cache").c_str(), 3, {KV, k.shape(1), D}, writable);
  }
  checked<int64_t>(key_pos, (which + "key_pos").c_str(), 1, {k.shape(1)}, writable);
  view.k = data(k);
  view.v = data(v);
  view.key_pos = static_cast<int64_t*>(data(key_pos));
  view.S = k.shape(1);
  return view;
}

void check_heads(int64_t H, const py::array& k) {
  if (k.ndim() != 3 || k.shape(0) < 1) return;  // checked_kv names the shape
  if (H % k.shape(0))
    throw py::value_error("attention: " + std::to_string(H) + " query heads are not a multiple of " +
                          std::to_string(k.shape(0)) + " KV heads");
}

py::array attention(py::array q, py::array k, py::array v, py::array key_pos, py::array q_pos,
                    int64_t window, float scale, py::object out, py::object k_scale, py::object v_scale) {
  checked<float>(q, "q", 3);
  const int64_t T = q.shape(0), H = q.shape(1), D = q.shape(2);
  check_heads(H, k);
  const ops::KVType type = kv_type_of(k);
  const int64_t KV = k.ndim() == 3 ? k.shape(0) : -1;
  const ops::KVView view = checked_kv(k, v, key_pos, k_scale, v_scale, D, KV, type, "", "attention").view();
  checked<int64_t>(q_pos, "q_pos", 1, {T});
  if (window < 0) throw py::value_error("attention: window must be >= 0");
  py::array o = out_or_new(out, {T, H, D}, "out");
  const float* qp = cptr<float>(q);
  const int64_t* qpos = cptr<int64_t>(q_pos);
  float* op = mptr<float>(o);
  {
    py::gil_scoped_release nogil;
    ops::attention(qp, T, H, D, view, type, KV, qpos, window, scale, op);
  }
  return o;
}

// The sequence of each of T rows from row_starts [B + 1] (rows row_starts[b] .. row_starts[b + 1]
// are sequence b's; each sequence has at least one).
std::vector<int64_t> rows_of_sequences(const py::array& row_starts, int64_t B, int64_t T, const char* op) {
  checked<int64_t>(row_starts, "row_starts", 1, {B + 1});
  const int64_t* starts = cptr<int64_t>(row_starts);
  if (starts[0] != 0 || starts[B] != T)
    throw py::value_error(std::string(op) + ": row_starts must run from 0 to the " + std::to_string(T) + " rows of q");
  std::vector<int64_t> view_of_row(static_cast<size_t>(T), 0);
  for (int64_t b = 0; b < B; ++b) {
    if (starts[b + 1] <= starts[b])
      throw py::value_error(std::string(op) + ": row_starts must increase (sequence " + std::to_string(b) +
                            " has no rows)");
    for (int64_t t = starts[b]; t < starts[b + 1]; ++t) view_of_row[size_t(t)] = b;
  }
  return view_of_row;
}

// caches[b] = (k_cache, v_cache, key_pos) or, int8, (k_cache, v_cache, key_pos, k_scale, v_scale),
// all of one type, checked; the arrays (some re-viewed) are kept alive in keep while the op runs.
std::vector<ops::KVBuffers> checked_caches(const py::list& caches, int64_t H, int64_t D, ops::KVType& type,
                                           int64_t& KV, std::vector<py::object>& keep, const char* op,
                                           bool writable) {
  std::vector<ops::KVBuffers> views;
  for (size_t b = 0; b < caches.size(); ++b) {
    py::tuple c = caches[b].cast<py::tuple>();
    if (c.size() != 3 && c.size() != 5)
      throw py::value_error(std::string(op) + ": each cache must be (k_cache, v_cache, key_pos) or, int8, "
                            "(k_cache, v_cache, key_pos, k_scale, v_scale)");
    py::array k = c[0].cast<py::array>(), v = c[1].cast<py::array>(), kp = c[2].cast<py::array>();
    py::object ks = c.size() == 5 ? py::object(c[3]) : py::object(py::none());
    py::object vs = c.size() == 5 ? py::object(c[4]) : py::object(py::none());
    const std::string which = "cache " + std::to_string(b) + ": ";
    if (b == 0) {
      check_heads(H, k);
      type = kv_type_of(k);
      KV = k.ndim() == 3 ? k.shape(0) : -1;
    } else if (kv_type_of(k) != type) {
      throw py::value_error(std::string(op) + ": " + which + "every cache must have the same dtype");
    }
    views.push_back(checked_kv(k, v, kp, ks, vs, D, KV, type, which, op, writable));
    for (const py::object& a : {py::object(k), py::object(v), py::object(kp), ks, vs}) keep.push_back(a);
  }
  return views;
}

// What attention_batch and attention_block check alike: q [T, H, D] (written when writable), the
// sequences' caches and which of them each row of q belongs to.
struct Batch {
  int64_t T, H, D;
  std::vector<int64_t> view_of_row;
  std::vector<py::object> keep;  // the (possibly re-viewed) arrays stay alive while the op runs
  ops::KVType type = ops::KVType::F32;
  int64_t KV = -1;
  std::vector<ops::KVBuffers> caches;
};

Batch checked_batch(const py::array& q, const py::list& caches, const py::array& row_starts, const char* op,
                    bool writable) {
  checked<float>(q, "q", 3, {}, writable);
  Batch b;
  b.T = q.shape(0), b.H = q.shape(1), b.D = q.shape(2);
  if (caches.size() == 0) throw py::value_error(std::string(op) + ": no caches");
  b.view_of_row = rows_of_sequences(row_starts, int64_t(caches.size()), b.T, op);
  b.caches = checked_caches(caches, b.H, b.D, b.type, b.KV, b.keep, op, writable);
  if (writable)  // the rows of two sequences must not write one cache (they would race for its slots)
    for (size_t i = 0; i < b.caches.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (b.caches[i].k == b.caches[j].k || b.caches[i].v == b.caches[j].v ||
            b.caches[i].key_pos == b.caches[j].key_pos)
          throw py::value_error(std::string(op) + ": caches " + std::to_string(j) + " and " + std::to_string(i) +
                                " are the same cache");
  return b;
}

py::array attention_batch(py::array q, py::list caches, py::array row_starts, py::array q_pos, int64_t window,
                          float scale, py::object out) {
  const Batch b = checked_batch(q, caches, row_starts, "attention_batch", false);
  const int64_t T = b.T, H = b.H, D = b.D;
  std::vector<ops::KVView> views;
  for (const ops::KVBuffers& c : b.caches) views.push_back(c.view());
  checked<int64_t>(q_pos, "q_pos", 1, {T});
  if (window < 0) throw py::value_error("attention_batch: window must be >= 0");
  py::array o = out_or_new(out, {T, H, D}, "out");
  const float* qp = cptr<float>(q);
  const int64_t* qpos = cptr<int64_t>(q_pos);
  float* op = mptr<float>(o);
  {
    py::gil_scoped_release nogil;
    ops::attention_batch(qp, T, H, D, views.data(), b.view_of_row.data(), b.type, b.KV, qpos, window, scale, op);
  }
  return o;
}

py::array attention_block(py::array q, py::array k, py::array v, py::array q_norm, py::array k_norm, float eps,
                          py::array q_pos, py::object inv_freq, py::list caches, py::array row_starts,
                          py::array slots, int64_t window, float scale, py::object out) {
  const Batch batch = checked_batch(q, caches, row_starts, "attention_block", true);
  const int64_t T = batch.T, H = batch.H, D = batch.D, B = int64_t(caches.size()), KV = batch.KV;
  const std::vector<ops::KVBuffers>& views = batch.caches;
  checked<float>(k, "k", 3, {T, KV, D}, true);
  checked<float>(v, "v", 3, {T, KV, D});
  checked<float>(q_norm, "q_norm", 1, {D});
  checked<float>(k_norm, "k_norm", 1, {D});
  checked<int64_t>(q_pos, "q_pos", 1, {T});
  py::array freq;
  if (!inv_freq.is_none()) {
    if (D % 2) throw py::value_error("attention_block: head_dim must be even for RoPE, got " + std::to_string(D));
    freq = inv_freq.cast<py::array>();
    checked<float>(freq, "inv_freq", 1, {D / 2});
  }
  checked<int64_t>(slots, "slots", 1, {T});
  const int64_t* sp = cptr<int64_t>(slots);
  const int64_t* starts = cptr<int64_t>(row_starts);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t S = views[size_t(b)].S;
    std::vector<bool> taken(starts[b + 1] - starts[b] > 1 ? size_t(S) : 0);
    for (int64_t t = starts[b]; t < starts[b + 1]; ++t) {
      if (sp[t] < 0 || sp[t] >= S)
        throw py::value_error("attention_block: slots[" + std::to_string(t) + "] = " + std::to_string(sp[t]) +
                              " is outside cache " + std::to_string(b) + "'s " + std::to_string(S) + " slots");
      if (!taken.empty()) {
        if (taken[size_t(sp[t])])
          throw py::value_error("attention_block: slot " + std::to_string(sp[t]) + " of cache " +
                                std::to_string(b) + " is written by two rows");
        taken[size_t(sp[t])] = true;
      }
    }
  }
  if (window < 0) throw py::value_error("attention_block: window must be >= 0");
  py::array o = out_or_new(out, {T, H, D}, "out");
  float* qp = mptr<float>(q);
  float* kp = mptr<float>(k);
  const float* vp = cptr<float>(v);
  const float *qn = cptr<float>(q_norm), *kn = cptr<float>(k_norm);
  const float* fp = inv_freq.is_none() ? nullptr : cptr<float>(freq);
  const int64_t* qpos = cptr<int64_t>(q_pos);
  float* op = mptr<float>(o);
  {
    py::gil_scoped_release nogil;
    ops::attention_block(qp, kp, vp, T, H, KV, D, qn, kn, eps, qpos, fp, views.data(), B,
                         B > 1 ? batch.view_of_row.data() : nullptr, sp, batch.type, window, scale, op);
  }
  return o;
}

// src [T, kv_heads, D] f32 into the int8 cache q [kv_heads, S, D] and scales [kv_heads, S] at
// slots [T] (each within [0, S)).
void kv_store_int8(py::array src, py::array slots, py::array q, py::array scales) {
  checked<float>(src, "src", 3);
  const int64_t T = src.shape(0), KV = src.shape(1), D = src.shape(2);
  checked<int64_t>(slots, "slots", 1, {T});
  checked<int8_t>(q, "q", 3, {KV, -1, D}, true);
  const int64_t S = q.shape(1);
  checked<float>(scales, "scales", 2, {KV, S}, true);
  const int64_t* sp = cptr<int64_t>(slots);
  for (int64_t t = 0; t < T; ++t)
    if (sp[t] < 0 || sp[t] >= S)
      throw py::value_error("kv_store_int8: slots[" + std::to_string(t) + "] = " + std::to_string(sp[t]) +
                            " is outside the cache's " + std::to_string(S) + " slots");
  const float* xp = cptr<float>(src);
  int8_t* qp = mptr<int8_t>(q);
  float* scp = mptr<float>(scales);
  py::gil_scoped_release nogil;
  ops::kv_store_int8(xp, T, KV, D, sp, S, qp, scp);
}

py::array to_f32(py::array src, WeightType type) {
  if (type == WeightType::F32) throw py::value_error("to_f32: source is already f32");
  checked<uint16_t>(src, "src (bf16/f16 stored as uint16)", -1);
  py::array_t<float> dst(shape_of(src));
  const uint16_t* sp = cptr<uint16_t>(src);
  float* dp = dst.mutable_data();
  const int64_t n = src.size();
  {
    py::gil_scoped_release nogil;
    ops::convert_to_f32(sp, type, n, dp);
  }
  return dst;
}

}  // namespace

void register_ops(py::module_& m) {
  py::enum_<WeightType>(m, "WeightType", "Element format of a weight matrix")
      .value("F32", WeightType::F32)
      .value("BF16", WeightType::BF16)
      .value("F16", WeightType::F16);
  // the longest step attention computes token by token, each row as a one-token step would
  m.attr("ATTENTION_TOKEN_BY_TOKEN") = ops::kTokenByToken;

  m.def("matmul", &matmul, py::arg("x"), py::arg("w"), py::arg("wtype"), py::arg("out") = py::none(),
        "y[T, N] = x[T, K] @ w[N, K]^T; w is float32 (F32) or uint16 bit patterns (BF16, F16).");
  m.def("rmsnorm", &rmsnorm, py::arg("x"), py::arg("weight"), py::arg("eps"),
        py::arg("out") = py::none(), "weight * x / rms(x) over the last dimension.");
  m.def("rmsnorm_add", &rmsnorm_add, py::arg("residual"), py::arg("x"), py::arg("weight"),
        py::arg("eps"), "residual += weight * x / rms(x), in place.");
  m.def("silu_mul", &silu_mul, py::arg("gate"), py::arg("up"), py::arg("out") = py::none(),
        "silu(gate) * up.");
  m.def("rope", &rope, py::arg("x"), py::arg("positions"), py::arg("inv_freq"),
        py::arg("attention_scaling") = 1.0f, "In-place rotate-half RoPE of x[T, heads, head_dim].");
  m.def("attention", &attention, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"),
        py::arg("key_pos"), py::arg("q_pos"), py::arg("window"), py::arg("scale"),
        py::arg("out") = py::none(), py::arg("k_scale") = py::none(), py::arg("v_scale") = py::none(),
        "Causal (and, with window > 0, sliding-window) GQA attention over a KV cache: float32, float16, or "
        "int8 with k_scale / v_scale [kv_heads, slots] (row r of a head is its int8 values times its scale).");
  m.def("attention_batch", &attention_batch, py::arg("q"), py::arg("caches"), py::arg("row_starts"),
        py::arg("q_pos"), py::arg("window"), py::arg("scale"), py::arg("out") = py::none(),
        "attention() for several sequences in one call: rows row_starts[b]..row_starts[b+1] of q attend "
        "within caches[b] = (k_cache, v_cache, key_pos), or (k_cache, v_cache, key_pos, k_scale, v_scale) for int8.");
  m.def("attention_block", &attention_block, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("q_norm"),
        py::arg("k_norm"), py::arg("eps"), py::arg("q_pos"), py::arg("inv_freq"), py::arg("caches"),
        py::arg("row_starts"), py::arg("slots"), py::arg("window"), py::arg("scale"), py::arg("out") = py::none(),
        "A decoder layer's attention after its projections, in one call: q [T, heads, head_dim] and k "
        "[T, kv_heads, head_dim] RMS-normalized per head (q_norm, k_norm) and, unless inv_freq is None, "
        "rotated (RoPE at q_pos), in place; row t's k and v written to slot slots[t] of its sequence's "
        "cache (caches and row_starts as attention_batch takes them; key_pos[slots[t]] = q_pos[t]); "
        "then attention_batch. Returns out [T, heads, head_dim].");
  m.def("kv_store_int8", &kv_store_int8, py::arg("src"), py::arg("slots"), py::arg("q"), py::arg("scales"),
        "The int8 KV cache's store: src[t, h] -> q[h, slots[t]] (round half to even of x / s) and "
        "scales[h, slots[t]] = s = max|x| / 127.");
  m.def("to_f32", &to_f32, py::arg("src"), py::arg("wtype"), "Widen bf16/f16 bit patterns to float32.");
}

}  // namespace bind
}  // namespace exaone
