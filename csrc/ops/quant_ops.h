// Quantized-weight ops (formats in csrc/kernels/quant.h): the matmul that quantizes activations
// on the fly, row dequantization for embedding lookups, and the threaded weight quantizer.
#pragma once
#include <cstdint>

#include "../kernels/kernels.h"
#include "../kernels/quant.h"

namespace exaone {
namespace ops {

using kernels::BlockA8;
using kernels::QuantFormat;
using kernels::QuantWeight;

// y[T, N] = x[T, K] @ dequant(w)^T. x is quantized per 32 values into thread-local scratch that is
// reused across calls (no allocation once it has grown), then the rows of w are split over the
// thread pool.
void quant_matmul(const float* x, int64_t T, const QuantWeight& w, float* y);

// ys[i][T, N_i] = x[T, K] @ dequant(ws[i])^T for n_w weights with the same K (q/k/v, gate/up):
// x is quantized once and all their rows are one job for the thread pool.
void quant_matmul_multi(const float* x, int64_t T, const QuantWeight* ws, int64_t n_w, float* const* ys);

// out[i, :] = dequant(w)[ids[i], :] for i in [0, n); ids already range-checked.
void dequant_rows(const QuantWeight& w, const int64_t* ids, int64_t n, float* out);

// x[T, K] -> T * K / 32 activation blocks (what quant_matmul feeds its kernels).
void quantize_activations(const float* x, int64_t T, int64_t K, BlockA8* out);

// Quantizes src [N, K] (f32, bf16 or f16) into out with the given format and group (values per
// scale; K for per-row), rows split over the thread pool. Throws std::invalid_argument (from any
// worker) on a non-finite weight or an out-of-range scale.
void quantize_weight(const void* src, kernels::WeightType stype, int64_t N, int64_t K, int64_t group,
                     QuantFormat format, const kernels::QuantOut& out);

// GGUF blocks (ggml type id `type`) into our layouts with their own values: the format and group
// that hold that type exactly, with the block shape (returns an error message for a type without a
// repack, else null); then rows src [N, K / block_values * block_bytes] into w's arrays (every
// byte written; scales for Q8G / Q4G, kscales for the K formats), row tiles threaded.
const char* gguf_repack_target(int type, QuantFormat* format, int64_t* group, int64_t* block_values,
                               int64_t* block_bytes);
// Returns how many f16 scales (d, dmin) are inf or NaN: a file the caller should refuse.
int64_t gguf_repack(int type, const uint8_t* src, int64_t N, int64_t K, const QuantWeight& w, void* qweight,
                    uint16_t* scales, uint8_t* kscales);

}  // namespace ops
}  // namespace exaone
