// Thin bindings of the quantized-weight ops: validate the arrays of one quantized matrix
// (qweight, scales, mins) against its format and group size, release the GIL, call the op.
#include <cstring>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "../ops/quant_ops.h"
#include "../runtime/huge_pages.h"
#include "checks.h"

namespace exaone {
namespace bind {

using kernels::QuantFormat;
using kernels::QuantWeight;
using kernels::WeightType;

namespace {

// An uninitialised C-order array for a weight made at load (GGUF blocks repacked, weights quantized
// as they load, codes packed in numpy: AWQ / GPTQ / compressed-tensors, GGUF blocks without a C++
// repack), on huge pages where the OS has them (runtime/huge_pages.h), else from numpy's allocator.
py::array weight_empty(const std::vector<int64_t>& shape, const py::object& dtype_like) {
  const py::dtype dtype = py::dtype::from_args(dtype_like);
  size_t bytes = size_t(dtype.itemsize());
  for (int64_t n : shape) {
    if (n < 0) throw py::value_error("weight_empty: negative dimension");
    if (n && bytes > (size_t(1) << 40) / size_t(n)) throw py::value_error("weight_empty: more than 1 TiB");
    bytes *= size_t(n);
  }
  HugePageBlock b = huge_page_alloc(bytes);
  if (!b.data) return py::array(dtype, shape);
  auto* owner = new std::shared_ptr<void>(std::move(b.owner));
  py::capsule keep(owner, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
  return py::array(dtype, shape, b.data, keep);
}

// weight_empty [rows, cols] of T, for the ops that write every byte.
template <class T>
py::array_t<T> weight_array(int64_t rows, int64_t cols) {
  return py::array_t<T>(weight_empty({rows, cols}, py::dtype::of<T>()));
}

const char* format_name(QuantFormat f) { return kernels::traits(f).name; }

QuantFormat checked_format(QuantFormat f) {
  if (int(f) < 0 || int(f) >= kernels::kNumQuantFormats) throw py::value_error("unknown QuantFormat");
  return f;
}

// group_size as the user gives it (32, 64, 128; 0 = one scale per row, Q8G only; the K formats:
// 32, or 16 for Q8K; Q6K: 16) -> values per scale.
int64_t resolve_group(QuantFormat f, int64_t group_size, int64_t K) {
  if (kernels::traits(f).k_scales) {
    if (f == QuantFormat::Q6K ? group_size == 16 : group_size == 32 || (group_size == 16 && f == QuantFormat::Q8K))
      return group_size;
    throw py::value_error("unsupported group_size " + std::to_string(group_size) + " for " + format_name(f) +
                          (f == QuantFormat::Q8K ? " (supported: 16, 32)" : f == QuantFormat::Q6K ? " (supported: 16)"
                                                                                                   : " (supported: 32)"));
  }
  if (group_size == 0) {
    if (f != QuantFormat::Q8G)
      throw py::value_error(std::string("per-row scales (group_size 0) are supported for Q8G only, not ") +
                            format_name(f));
    return K;
  }
  if (group_size != 32 && group_size != 64 && group_size != 128)
    throw py::value_error("unsupported group_size " + std::to_string(group_size) +
                          " (supported: 32, 64, 128, or 0 for per-row int8)");
  return group_size;
}

void check_k(int64_t K, const char* what) {
  if (K % kernels::kQBlock != 0)
    throw py::value_error(std::string(what) + ": in_features " + std::to_string(K) +
                          " is not a multiple of 32 (quantization blocks are 32 values)");
}

// Validates the arrays of one quantized weight and returns a view of them.
QuantWeight weight_view(const py::array& qweight, const py::array& scales, const py::object& mins,
                        QuantFormat f, int64_t group_size) {
  const kernels::QuantFormatTraits& t = kernels::traits(checked_format(f));
  QuantWeight w{};
  w.format = f;
  const std::string codes = std::string("qweight (") + t.name + ": " + (t.code_bits == 4 ? "uint8 [N, K/2])" :
                            t.code_bits == 6 ? "uint8 [N, 3K/4])" : t.code_signed ? "int8 [N, K])" : "uint8 [N, K])");
  if (t.code_bits == 8 && t.code_signed)
    checked<int8_t>(qweight, codes.c_str(), 2);
  else
    checked<uint8_t>(qweight, codes.c_str(), 2);
  if (qweight.shape(1) * 8 % t.code_bits != 0)
    throw py::value_error(codes + ": " + std::to_string(qweight.shape(1)) + " bytes per row are not whole codes");
  w.K = qweight.shape(1) * 8 / t.code_bits;
  w.N = qweight.shape(0);
  check_k(w.K, "qweight");
  w.group = resolve_group(f, group_size, w.K);
  w.qweight = qweight.data();
  if (t.k_scales) {
    if (w.K % kernels::kSuperBlock != 0)
      throw py::value_error(std::string(t.name) + ": in_features " + std::to_string(w.K) +
                            " is not a multiple of 256 (K-format super-blocks)");
    checked<uint8_t>(scales, "scales (K formats: uint8 [N, kscale_row_bytes])", 2, {w.N, w.kscale_row_bytes()});
    w.kscales = cptr<uint8_t>(scales);
  } else {
    checked<uint16_t>(scales, "scales (f16 bits as uint16)", 2, {w.N, w.groups()});
    w.scales = cptr<uint16_t>(scales);
  }
  if (t.has_min && !t.k_scales) {
    if (mins.is_none()) throw py::value_error(std::string(t.name) + " needs mins (f16 bits as uint16 [N, groups])");
    py::array m = py::reinterpret_borrow<py::array>(mins);
    checked<uint16_t>(m, "mins (f16 bits as uint16)", 2, {w.N, w.groups()});
    w.mins = cptr<uint16_t>(m);
  } else if (!mins.is_none()) {
    throw py::value_error(std::string("mins are only used by Q4GA, got mins for ") + t.name);
  }
  return w;
}

py::array quant_matmul(py::array x, py::array qweight, py::array scales, py::object mins,
                       QuantFormat f, int64_t group_size, py::object out) {
  const QuantWeight w = weight_view(qweight, scales, mins, f, group_size);
  checked<float>(x, "x", 2);
  const int64_t T = x.shape(0);
  if (x.shape(1) != w.K)
    throw py::value_error("quant_matmul: x has " + std::to_string(x.shape(1)) +
                          " columns but the weight has in_features " + std::to_string(w.K));
  py::array y;
  if (out.is_none()) {
    y = py::array_t<float>({T, w.N});
  } else {
    y = py::reinterpret_borrow<py::array>(out);
    checked<float>(y, "out", 2, {T, w.N}, true);
  }
  const float* xp = cptr<float>(x);
  float* yp = mptr<float>(y);
  {
    py::gil_scoped_release nogil;
    ops::quant_matmul(xp, T, w, yp);
  }
  return y;
}

// weights: a sequence of (qweight, scales, mins, format, group_size), all with in_features K.
py::list quant_matmul_multi(py::array x, py::sequence weights) {
  checked<float>(x, "x", 2);
  const int64_t T = x.shape(0), n_w = int64_t(py::len(weights));
  if (n_w == 0) throw py::value_error("quant_matmul_multi: no weights");
  std::vector<QuantWeight> ws;
  std::vector<py::array> keep;  // the arrays stay referenced while the kernels run
  py::list outs;
  std::vector<float*> ys;
  for (int64_t i = 0; i < n_w; ++i) {
    py::tuple t = py::reinterpret_borrow<py::object>(weights[size_t(i)]).cast<py::tuple>();
    if (t.size() != 5)
      throw py::value_error("quant_matmul_multi: weight " + std::to_string(i) +
                            " must be (qweight, scales, mins, format, group_size)");
    py::array qw = t[0].cast<py::array>(), sc = t[1].cast<py::array>();
    const QuantWeight w = weight_view(qw, sc, t[2], t[3].cast<QuantFormat>(), t[4].cast<int64_t>());
    if (x.shape(1) != w.K)
      throw py::value_error("quant_matmul_multi: x has " + std::to_string(x.shape(1)) +
                            " columns but weight " + std::to_string(i) + " has in_features " +
                            std::to_string(w.K));
    keep.push_back(qw);
    keep.push_back(sc);
    ws.push_back(w);
    py::array_t<float> y({T, w.N});
    ys.push_back(y.mutable_data());
    outs.append(y);
  }
  const float* xp = cptr<float>(x);
  {
    py::gil_scoped_release nogil;
    ops::quant_matmul_multi(xp, T, ws.data(), n_w, ys.data());
  }
  return outs;
}

py::array dequant_rows(py::array qweight, py::array scales, py::object mins, QuantFormat f,
                       int64_t group_size, py::array ids) {
  const QuantWeight w = weight_view(qweight, scales, mins, f, group_size);
  checked<int64_t>(ids, "ids", 1);
  const int64_t n = ids.shape(0);
  const int64_t* ip = cptr<int64_t>(ids);
  for (int64_t i = 0; i < n; ++i)
    if (ip[i] < 0 || ip[i] >= w.N)
      throw py::value_error("dequant_rows: row id " + std::to_string(ip[i]) + " at position " +
                            std::to_string(i) + " is out of range [0, " + std::to_string(w.N) + ")");
  py::array_t<float> out({n, w.K});
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    ops::dequant_rows(w, ip, n, op);
  }
  return out;
}

py::tuple quantize(py::array src, WeightType wtype, QuantFormat f, int64_t group_size) {
  if (kernels::traits(checked_format(f)).k_scales)
    throw py::value_error(std::string("quantize writes Q8G, Q4G and Q4GA; ") + format_name(f) +
                          " holds GGUF K-quant blocks as they are (exaone_cpu.gguf_model)");
  if (wtype == WeightType::F32)
    checked<float>(src, "w", 2);
  else
    checked<uint16_t>(src, "w (bf16/f16 bits as uint16)", 2);
  const int64_t N = src.shape(0), K = src.shape(1);
  check_k(K, "quantize");
  const int64_t group = resolve_group(f, group_size, K);
  const int64_t G = (K + group - 1) / group;
  py::array qweight = f == QuantFormat::Q8G ? py::array(weight_array<int8_t>(N, K))
                                            : py::array(weight_array<uint8_t>(N, K / 2));
  py::array_t<uint16_t> scales = weight_array<uint16_t>(N, G);
  py::object mins = py::none();
  kernels::QuantOut out{N, qweight.mutable_data(), scales.mutable_data(), nullptr};
  if (f == QuantFormat::Q4GA) {
    py::array_t<uint16_t> m = weight_array<uint16_t>(N, G);
    out.mins = m.mutable_data();
    mins = m;
  }
  const void* sp = src.data();
  {
    py::gil_scoped_release nogil;
    ops::quantize_weight(sp, wtype, N, K, group, f, out);
  }
  return py::make_tuple(qweight, scales, mins);
}

// (qweight, scales, format, group_size) of GGUF rows raw (uint8 [N, row bytes]) of ggml type `type`
// with K values per row, repacked exactly into the format that holds that type (every byte written).
py::tuple repack_gguf(py::array raw, int type, int64_t K) {
  QuantFormat f;
  int64_t group, block_values, block_bytes;
  if (const char* err = ops::gguf_repack_target(type, &f, &group, &block_values, &block_bytes))
    throw py::value_error(std::string("repack_gguf: ") + err + " (" + std::to_string(type) + ")");
  if (K <= 0 || K % block_values != 0 || K % kernels::kQBlock != 0)
    throw py::value_error("repack_gguf: " + std::to_string(K) + " values per row are not whole blocks of " +
                          std::to_string(block_values));
  checked<uint8_t>(raw, "raw (uint8 [N, row bytes])", 2);
  const int64_t N = raw.shape(0);
  if (raw.shape(1) != K / block_values * block_bytes)
    throw py::value_error("repack_gguf: raw rows have " + std::to_string(raw.shape(1)) + " bytes, expected " +
                          std::to_string(K / block_values * block_bytes));
  const kernels::QuantFormatTraits& t = kernels::traits(f);
  QuantWeight w{};
  w.format = f;
  w.N = N;
  w.K = K;
  w.group = group;
  py::array qweight = t.code_bits == 8 && t.code_signed ? py::array(weight_array<int8_t>(N, K))
                      : py::array(weight_array<uint8_t>(N, K * t.code_bits / 8));
  py::array scales;
  uint16_t* sp = nullptr;
  uint8_t* kp = nullptr;
  if (t.k_scales) {
    py::array_t<uint8_t> a = weight_array<uint8_t>(N, w.kscale_row_bytes());
    kp = a.mutable_data();
    w.kscales = kp;
    scales = a;
  } else {
    py::array_t<uint16_t> a = weight_array<uint16_t>(N, w.groups());
    sp = a.mutable_data();
    w.scales = sp;
    scales = a;
  }
  void* qp = qweight.mutable_data();
  w.qweight = qp;
  const uint8_t* src = cptr<uint8_t>(raw);
  int64_t bad;
  {
    py::gil_scoped_release nogil;
    bad = ops::gguf_repack(type, src, N, K, w, qp, sp, kp);
  }
  if (bad) throw py::value_error("repack_gguf: " + std::to_string(bad) + " block scales are inf or NaN");
  return py::make_tuple(qweight, scales, f, group);
}

py::tuple quantize_activations(py::array x) {
  checked<float>(x, "x", 2);
  const int64_t T = x.shape(0), K = x.shape(1);
  check_k(K, "quantize_activations");
  const int64_t nb = K / kernels::kQBlock;
  std::vector<kernels::BlockA8> blocks(size_t(T * nb));
  const float* xp = cptr<float>(x);
  {
    py::gil_scoped_release nogil;
    ops::quantize_activations(xp, T, K, blocks.data());
  }
  py::array_t<int8_t> qs({T, K});
  py::array_t<float> d({T, nb});
  py::array_t<int32_t> sums({T, nb});
  int8_t* qp = qs.mutable_data();
  float* dp = d.mutable_data();
  int32_t* sp = sums.mutable_data();
  for (int64_t i = 0; i < T * nb; ++i) {
    std::memcpy(qp + i * kernels::kQBlock, blocks[size_t(i)].qs, kernels::kQBlock);
    dp[i] = blocks[size_t(i)].d;
    sp[i] = blocks[size_t(i)].sum;
  }
  return py::make_tuple(qs, d, sums);
}

}  // namespace

void register_quant(py::module_& m) {
  py::enum_<QuantFormat>(m, "QuantFormat", "Quantized weight format (docs/quantization.md)")
      .value("Q8G", QuantFormat::Q8G, "int8, f16 scale per group")
      .value("Q4G", QuantFormat::Q4G, "int4 symmetric, f16 scale per group")
      .value("Q4GA", QuantFormat::Q4GA, "int4 asymmetric, f16 scale and min per group")
      .value("Q8K", QuantFormat::Q8K, "int8 codes, int8 sub-scale per 16 or 32 and f16 d per 256 (IQ4_XS)")
      .value("Q4KA", QuantFormat::Q4KA, "int4 codes, 6-bit scale and min per 32, f16 d and dmin per 256 (Q4_K)")
      .value("Q8KA", QuantFormat::Q8KA, "uint8 codes, 6-bit scale and min per 32, f16 d and dmin per 256 (Q5_K)")
      .value("Q6K", QuantFormat::Q6K, "6-bit codes (nibbles + 2 high bits), int8 sub-scale per 16, f16 d per 256 (Q6_K)")
      .def_property_readonly("code_bits", [](QuantFormat f) { return kernels::traits(checked_format(f)).code_bits; },
                             "8: one code per byte; 4: nibbles; 6: nibbles and 2 high bits")
      .def_property_readonly("code_signed", [](QuantFormat f) { return kernels::traits(checked_format(f)).code_signed; },
                             "codes are int8 (else uint8 / nibbles)")
      .def_property_readonly("has_min", [](QuantFormat f) { return kernels::traits(checked_format(f)).has_min; },
                             "a min per group")
      .def_property_readonly("k_scales", [](QuantFormat f) { return kernels::traits(checked_format(f)).k_scales; },
                             "two-level scales of GGUF K-quants (uint8 scales array)");

  m.def("quantize", &quantize, py::arg("w"), py::arg("wtype"), py::arg("format"), py::arg("group_size"),
        "Quantize w [N, K] (f32, or bf16/f16 bits as uint16) -> (qweight, scales, mins or None); "
        "group_size 32/64/128, or 0 for per-row Q8G.");
  m.def("quant_matmul", &quant_matmul, py::arg("x"), py::arg("qweight"), py::arg("scales"),
        py::arg("mins"), py::arg("format"), py::arg("group_size"), py::arg("out") = py::none(),
        "y[T, N] = x[T, K] @ dequant(w)^T with x quantized to int8 per 32 values.");
  m.def("quant_matmul_multi", &quant_matmul_multi, py::arg("x"), py::arg("weights"),
        "[x @ dequant(w_i)^T for each w_i = (qweight, scales, mins, format, group_size)], all "
        "with the same in_features: x is quantized once and the rows run as one parallel job.");
  m.def("dequant_rows", &dequant_rows, py::arg("qweight"), py::arg("scales"), py::arg("mins"),
        py::arg("format"), py::arg("group_size"), py::arg("ids"),
        "Rows ids of the dequantized weight as float32 [len(ids), K] (embedding lookup).");
  m.def("repack_gguf", &repack_gguf, py::arg("raw"), py::arg("type"), py::arg("values_per_row"),
        "GGUF rows of one block type -> (qweight, scales, format, group_size), the file's values exactly");
  m.def("weight_empty", &weight_empty, py::arg("shape"), py::arg("dtype"),
        "An uninitialised C-order array for a weight made at load, on huge pages where the OS has them.");
  m.def("quant_isa", [] { return std::string(kernels::quant_active().name); },
        "Name of the quantized kernels in use (follows set_isa / EXAONE_CPU_ISA).");
  m.def("quantize_activations", &quantize_activations, py::arg("x"),
        "The int8 activation blocks quant_matmul uses: (qs int8 [T, K], d f32 [T, K/32], "
        "sums int32 [T, K/32]).");
}

}  // namespace bind
}  // namespace exaone
