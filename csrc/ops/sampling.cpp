// The sampler of sampling.h. Thresholds are found by a three-level radix select over the logits'
// order-preserving integer keys (histograms of count or probability mass), so top-k and top-p cost a
// few linear passes instead of a sort of the vocabulary; exp is a polynomial the compiler vectorises.
// Built without mul+add contraction (CMakeLists.txt) so the penalties round like the numpy reference.
#include "sampling.h"

#include "../kernels/dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace exaone {
namespace ops {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Order-preserving map of a float to uint32 (NaN excluded by the caller).
inline uint32_t float_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float key_float(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Largest key K such that the weight of the candidates with key >= K reaches `target`: the threshold
// that keeps the top of the candidates (in descending key order) until their weight reaches target.
// Candidates: idx[0..n) (idx null: 0..n) with keys[i] >= floor. weight(i) >= 0.
template <class Weight>
uint32_t select_threshold(const uint32_t* keys, const int32_t* idx, int64_t n, uint32_t floor, double target,
                          Weight weight, std::vector<int32_t>& buf_a, std::vector<int32_t>& buf_b) {
  static const int kShift[3] = {21, 10, 0};
  static const uint32_t kBins[3] = {2048, 2048, 1024};
  std::vector<double> hist(2048);
  uint32_t prefix = 0;           // the bits chosen so far, in place
  uint32_t prefix_mask = 0;
  double above = 0.0;            // weight of candidates with a key above the chosen prefix range
  const int32_t* cur = idx;
  int64_t cur_n = n;
  for (int level = 0; level < 3; ++level) {
    const int shift = kShift[level];
    const uint32_t bins = kBins[level];
    std::fill(hist.begin(), hist.begin() + bins, 0.0);
    for (int64_t j = 0; j < cur_n; ++j) {
      const int64_t i = cur ? cur[j] : j;
      const uint32_t k = keys[i];
      if (k < floor || (k & prefix_mask) != prefix) continue;
      hist[(k >> shift) & (bins - 1)] += weight(i);
    }
    int64_t chosen = -1, lowest = -1;
    for (int64_t b = bins - 1; b >= 0; --b) {
      if (hist[b] <= 0.0) continue;
      lowest = b;
      if (above + hist[b] >= target) {
        chosen = b;
        break;
      }
      above += hist[b];
    }
    if (chosen < 0) {  // rounding left the target just out of reach: keep every candidate
      if (lowest < 0) return floor;
      chosen = lowest;
      above -= hist[lowest];
    }
    prefix |= uint32_t(chosen) << shift;
    prefix_mask |= (bins - 1) << shift;
    if (level < 2) {  // the candidates of the chosen bin, for the next level
      std::vector<int32_t>& out = (level == 0) ? buf_a : buf_b;
      out.clear();
      for (int64_t j = 0; j < cur_n; ++j) {
        const int64_t i = cur ? cur[j] : j;
        const uint32_t k = keys[i];
        if (k >= floor && (k & prefix_mask) == prefix) out.push_back(int32_t(i));
      }
      cur = out.data();
      cur_n = int64_t(out.size());
    }
  }
  return prefix;
}

}  // namespace

Sampler::Sampler(int64_t vocab, const SamplerConfig& config, uint64_t seed) : vocab_(vocab), config_(config) {
  if (vocab < 1 || vocab > (int64_t(1) << 30)) throw std::invalid_argument("sampler: vocab out of range");
  uint64_t s = seed;
  for (auto& r : rng_) r = splitmix64(s);
  in_prompt_.assign(size_t(vocab), 0);
  count_.assign(size_t(vocab), 0);
  w_.resize(size_t(vocab));
}

double Sampler::next_uniform() {
  // xoshiro256**
  const uint64_t result = rotl(rng_[1] * 5, 7) * 9;
  const uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = rotl(rng_[3], 45);
  return double(result >> 11) * 0x1.0p-53;
}

void Sampler::set_logit_bias(const int64_t* ids, const float* values, int64_t n) {
  bias_.assign(size_t(vocab_), 0.0f);
  bias_ids_.clear();
  for (int64_t j = 0; j < n; ++j) {
    if (ids[j] < 0 || ids[j] >= vocab_) throw std::out_of_range("logit_bias: token id out of range");
    if (bias_[size_t(ids[j])] == 0.0f && values[j] != 0.0f) bias_ids_.push_back(ids[j]);
    bias_[size_t(ids[j])] = values[j];
  }
}

void Sampler::add_prompt(const int64_t* ids, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = ids[j];
    if (t < 0 || t >= vocab_) throw std::out_of_range("sampler: token id out of range");
    if (!in_prompt_[size_t(t)]) {
      in_prompt_[size_t(t)] = 1;
      prompt_ids_.push_back(t);
    }
  }
}

void Sampler::accept(int64_t t) {
  if (t < 0 || t >= vocab_) throw std::out_of_range("sampler: token id out of range");
  if (count_[size_t(t)]++ == 0) counted_ids_.push_back(t);
  output_.push_back(t);
}

void Sampler::rollback_output(int64_t keep) {
  if (keep < 0 || keep > int64_t(output_.size())) throw std::out_of_range("sampler: rollback past the output");
  while (int64_t(output_.size()) > keep) {
    const int64_t t = output_.back();
    output_.pop_back();
    if (--count_[size_t(t)] == 0) counted_ids_.erase(std::find(counted_ids_.begin(), counted_ids_.end(), t));
  }
}

float Sampler::prepare(const float* logits, const int64_t* banned, int64_t n_banned, const uint32_t* allowed) {
  const int64_t V = vocab_;
  float* w = w_.data();
  // copy, check and take the max in one pass (eight accumulators: no loop-carried dependency)
  float m[8];
  bool bad = false;
  for (int j = 0; j < 8; ++j) m[j] = kNegInf;
  int64_t t = 0;
  for (; t + 8 <= V; t += 8) {
    for (int j = 0; j < 8; ++j) {
      const float v = logits[t + j];
      w[t + j] = v;
      bad |= !(v - v == 0.0f);  // NaN or +-inf
      m[j] = v > m[j] ? v : m[j];
    }
  }
  for (; t < V; ++t) {
    const float v = logits[t];
    w[t] = v;
    bad |= !(v - v == 0.0f);
    m[0] = v > m[0] ? v : m[0];
  }
  if (bad) throw SamplingError("logits contain NaN or infinite values");
  const SamplerConfig& c = config_;
  bool edited = false;
  if (c.repetition_penalty != 1.0f) {
    const float rp = c.repetition_penalty;
    for (int64_t i : prompt_ids_) w[i] = w[i] > 0.0f ? w[i] / rp : w[i] * rp;
    for (int64_t i : counted_ids_)
      if (!in_prompt_[size_t(i)]) w[i] = w[i] > 0.0f ? w[i] / rp : w[i] * rp;
    edited |= !prompt_ids_.empty() || !counted_ids_.empty();
  }
  if (c.presence_penalty != 0.0f || c.frequency_penalty != 0.0f) {
    for (int64_t i : counted_ids_) w[i] -= c.presence_penalty + c.frequency_penalty * float(count_[size_t(i)]);
    edited |= !counted_ids_.empty();
  }
  for (int64_t i : bias_ids_) w[i] += bias_[size_t(i)];
  edited |= !bias_ids_.empty();
  for (int64_t j = 0; j < n_banned; ++j) {
    if (banned[j] >= 0 && banned[j] < V) w[banned[j]] = kNegInf;
  }
  edited |= n_banned > 0;
  if (allowed) {
    for (int64_t i = 0; i < V; ++i) {
      if (!((allowed[i >> 5] >> (i & 31)) & 1u)) w[i] = kNegInf;
    }
    edited = true;
  }
  if (edited) {
    for (int j = 0; j < 8; ++j) m[j] = kNegInf;
    for (t = 0; t + 8 <= V; t += 8)
      for (int j = 0; j < 8; ++j) m[j] = w[t + j] > m[j] ? w[t + j] : m[j];
    for (; t < V; ++t) m[0] = w[t] > m[0] ? w[t] : m[0];
  }
  float wmax = m[0];
  for (int j = 1; j < 8; ++j) wmax = m[j] > wmax ? m[j] : wmax;
  if (wmax == kNegInf) throw SamplingError("every token is masked: nothing can be sampled");
  return wmax;
}

int64_t Sampler::first_equal(float value) const {
  const float* w = w_.data();
  for (int64_t t = 0; t < vocab_; ++t)
    if (w[t] == value) return t;
  return 0;
}

namespace {

double masked_sum(const float* e, const int32_t* idx, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t j = 0;
  if (idx) {
    for (; j < n; ++j) acc[0] += double(e[idx[j]]);
  } else {
    for (; j + 4 <= n; j += 4)
      for (int k = 0; k < 4; ++k) acc[k] += double(e[j + k]);
    for (; j < n; ++j) acc[0] += double(e[j]);
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace

void Sampler::filter(float wmax) {
  const SamplerConfig& c = config_;
  const int64_t V = vocab_;
  const float* w = w_.data();
  e_.resize(size_t(V));
  float* e = e_.data();
  // (w - max) / T with 1/T capped: a tiny temperature makes every other token's e exactly 0.
  const float inv_t = float(std::min(1.0 / c.temperature, 1e30));
  mass_all_ = kernels::active().exp_shifted_f32(w, V, wmax, inv_t, e);
  kept_.clear();
  has_list_ = false;
  const bool use_k = c.top_k > 0 && c.top_k < V;
  const bool use_p = c.top_p < 1.0;
  const float min_e = float(c.min_p);
  if (use_k) {
    float tau;
    if (c.top_k <= 4096) {  // min-heap of the k largest: most rows are rejected by one comparison
      heap_.assign(w, w + c.top_k);
      std::make_heap(heap_.begin(), heap_.end(), std::greater<float>());
      for (int64_t t = c.top_k; t < V; ++t) {
        if (w[t] > heap_.front()) {
          std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
          heap_.back() = w[t];
          std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
        }
      }
      tau = heap_.front();
    } else {
      keys_.resize(size_t(V));
      for (int64_t t = 0; t < V; ++t) keys_[size_t(t)] = float_key(w[t]);
      tau = key_float(select_threshold(keys_.data(), nullptr, V, 0, double(c.top_k),
                                       [](int64_t) { return 1.0; }, scratch_, scratch2_));
    }
    for (int64_t t = 0; t < V; ++t)
      if (w[t] >= tau) kept_.push_back(int32_t(t));
    has_list_ = true;
  }
  if (use_p) {
    const int32_t* idx = has_list_ ? kept_.data() : nullptr;
    const int64_t n = has_list_ ? int64_t(kept_.size()) : V;
    const double mass = has_list_ ? masked_sum(e, idx, n) : mass_all_;
    // Tokens with e below (1 - top_p) * mass / (2 n) together hold less than the (1 - top_p) tail, so
    // the nucleus ends above them: only the others are candidates for the threshold.
    const float bound = float((1.0 - c.top_p) * mass / (2.0 * double(n)));
    cand_.clear();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = idx ? idx[j] : j;
      if (e[t] >= bound) cand_.push_back(int32_t(t));
    }
    keys_.resize(size_t(V));
    for (int32_t t : cand_) keys_[size_t(t)] = float_key(w[t]);
    const float tau = key_float(select_threshold(keys_.data(), cand_.data(), int64_t(cand_.size()), 0,
                                                 c.top_p * mass, [e](int64_t i) { return double(e[i]); },
                                                 scratch_, scratch2_));
    kept_.clear();
    for (int32_t t : cand_)
      if (w[t] >= tau) kept_.push_back(t);
    has_list_ = true;
  }
  if (min_e > 0.0f) {
    if (has_list_) {
      size_t k = 0;
      for (int32_t t : kept_)
        if (e[t] >= min_e) kept_[k++] = t;
      kept_.resize(k);
    } else {
      for (int64_t t = 0; t < V; ++t)
        if (e[t] >= min_e) kept_.push_back(int32_t(t));
      has_list_ = true;
    }
  }
  if (has_list_) std::sort(kept_.begin(), kept_.end());  // the draw walks in id order
}

int64_t Sampler::sample(const float* logits, double uniform, const int64_t* banned, int64_t n_banned,
                        const uint32_t* allowed) {
  const float wmax = prepare(logits, banned, n_banned, allowed);
  if (config_.temperature == 0.0) return first_equal(wmax);
  filter(wmax);
  const float* e = e_.data();
  const int32_t* idx = has_list_ ? kept_.data() : nullptr;
  const int64_t n = has_list_ ? int64_t(kept_.size()) : vocab_;
  const double mass = has_list_ ? masked_sum(e, idx, n) : mass_all_;
  const double u = uniform >= 0.0 ? uniform : next_uniform();
  const double target = u * mass;
  double running = 0.0;
  int64_t last = -1;
  int64_t j = 0;
  if (!idx) {  // skip whole blocks first: their sums decide which block holds the draw
    constexpr int64_t B = 64;
    for (; j + B <= n; j += B) {
      double block = masked_sum(e + j, nullptr, B);
      if (running + block > target) break;
      running += block;
      if (block > 0.0) last = j + B - 1;
    }
  }
  for (; j < n; ++j) {
    const int64_t t = idx ? idx[j] : j;
    if (e[t] == 0.0f) continue;
    running += double(e[t]);
    last = t;
    if (running > target) return t;
  }
  if (last < 0) throw SamplingError("no token left after filtering");
  while (last >= 0 && e[last] == 0.0f) --last;  // u * mass rounded up to the total: the last kept token
  return last;
}

void Sampler::probabilities(const float* logits, const int64_t* banned, int64_t n_banned, const uint32_t* allowed,
                            double* out) {
  const float wmax = prepare(logits, banned, n_banned, allowed);
  std::fill(out, out + vocab_, 0.0);
  if (config_.temperature == 0.0) {
    out[first_equal(wmax)] = 1.0;
    return;
  }
  filter(wmax);
  const float* e = e_.data();
  const int32_t* idx = has_list_ ? kept_.data() : nullptr;
  const int64_t n = has_list_ ? int64_t(kept_.size()) : vocab_;
  const double mass = has_list_ ? masked_sum(e, idx, n) : mass_all_;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = idx ? idx[j] : j;
    out[t] = double(e[t]) / mass;
  }
}

double logprob_of(const float* logits, int64_t vocab, int64_t token, int64_t top_n, int64_t* ids, float* values) {
  float lmax = kNegInf;
  for (int64_t t = 0; t < vocab; ++t) lmax = logits[t] > lmax ? logits[t] : lmax;
  if (!(lmax > kNegInf) || lmax == std::numeric_limits<float>::infinity())
    throw SamplingError("logits contain NaN or +inf, or are all -inf");
  thread_local std::vector<float> scratch;
  scratch.resize(size_t(vocab));
  const double sum = kernels::active().exp_shifted_f32(logits, vocab, lmax, 1.0f, scratch.data());
  const double lse = double(lmax) + std::log(sum);
  // top n: insertion into a short sorted list (most rows are rejected by one comparison)
  int64_t filled = 0;
  for (int64_t t = 0; t < vocab && top_n > 0; ++t) {
    const float v = logits[t];
    if (filled == top_n && !(v > values[filled - 1])) continue;
    int64_t j = filled < top_n ? filled++ : top_n - 1;
    while (j > 0 && v > values[j - 1]) {
      values[j] = values[j - 1];
      ids[j] = ids[j - 1];
      --j;
    }
    values[j] = v;
    ids[j] = t;
  }
  for (int64_t j = 0; j < filled; ++j) values[j] = float(double(values[j]) - lse);
  return double(logits[token]) - lse;
}

}  // namespace ops
}  // namespace exaone
