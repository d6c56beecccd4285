// The sampler of sampling.h, with no sort of the vocabulary. Top-k gathers the tokens at or above its
// threshold (a pivot from a strided sample, then a selection among the few above it); the kept set is
// then {t : e[t] >= threshold} over those (e: the softmax numerators), where top-p brackets its
// threshold with one vectorised pass of the mass above 8 cut-offs and a radix select over the tokens
// in the bracket; the draw skips whole blocks by their kept mass.
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
  double hist[2048];  // 16 KiB on the stack: no allocation per token (each level zeroes what it uses)
  uint32_t prefix = 0;           // the bits chosen so far, in place
  uint32_t prefix_mask = 0;
  double above = 0.0;            // weight of candidates with a key above the chosen prefix range
  const int32_t* cur = idx;
  int64_t cur_n = n;
  for (int level = 0; level < 3; ++level) {
    const int shift = kShift[level];
    const uint32_t bins = kBins[level];
    std::fill(hist, hist + bins, 0.0);
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
  const auto& k = kernels::active();
  bool finite;
  float wmax = k.max_f32(logits, V, w, &finite);  // copy, check and take the max in one pass
  if (!finite) throw SamplingError("logits contain NaN or infinite values");
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
  if (edited) wmax = k.max_f32(w, V, nullptr, &finite);
  if (wmax == kNegInf) throw SamplingError("every token is masked: nothing can be sampled");
  return wmax;
}

int64_t Sampler::first_equal(float value) const {
  const float* w = w_.data();
  for (int64_t t = 0; t < vocab_; ++t)
    if (w[t] == value) return t;
  return 0;
}

void Sampler::gather_top_k() {
  // The tokens at or above the k-th largest w, in id order. A strided sample of w gives a pivot with
  // about 1.5 k + 64 tokens expected at or above it: one branch-free pass gathers those, and the k-th
  // largest is selected among them. Should the sample mislead (fewer than k at or above the pivot),
  // a radix select over the whole row decides.
  const int64_t V = vocab_, K = config_.top_k;
  const float* w = w_.data();
  const int64_t S = std::min<int64_t>(V, 4096), stride = V / S;
  std::vector<float>& sample = pivot_scratch_;
  sample.resize(size_t(S));
  for (int64_t i = 0; i < S; ++i) sample[size_t(i)] = w[i * stride];
  const int64_t r = std::min<int64_t>(S, int64_t(std::ceil((1.5 * double(K) + 64.0) * double(S) / double(V))));
  std::nth_element(sample.begin(), sample.begin() + (r - 1), sample.end(), std::greater<float>());
  const float pivot = sample[size_t(r - 1)];
  if (int64_t(dom_ids_.size()) < V) dom_ids_.resize(size_t(V)), dom_w_.resize(size_t(V));  // grown once
  int32_t* ids = dom_ids_.data();
  float* vals = dom_w_.data();
  const auto& k = kernels::active();
  int64_t n = k.find_in_range_f32(w, V, pivot, std::numeric_limits<float>::infinity(), ids);
  for (int64_t i = 0; i < n; ++i) vals[i] = w[ids[i]];
  float tau;
  if (n >= K) {
    sample.assign(vals, vals + n);
    std::nth_element(sample.begin(), sample.begin() + (K - 1), sample.end(), std::greater<float>());
    tau = sample[size_t(K - 1)];
  } else {
    if (int64_t(keys_.size()) < V) keys_.resize(size_t(V));
    for (int64_t t = 0; t < V; ++t) keys_[size_t(t)] = float_key(w[t]);
    tau = key_float(select_threshold(keys_.data(), nullptr, V, 0, double(K), [](int64_t) { return 1.0; },
                                     scratch_, scratch2_));
    n = k.find_in_range_f32(w, V, tau, std::numeric_limits<float>::infinity(), ids);
    for (int64_t i = 0; i < n; ++i) vals[i] = w[ids[i]];
  }
  int64_t m = 0;  // keep w >= tau (ties kept), in id order
  for (int64_t i = 0; i < n; ++i) ids[m] = ids[i], vals[m] = vals[i], m += vals[i] >= tau;
  dom_n_ = m;
  dom_mapped_ = true;
}

float Sampler::top_p_threshold(const float* e, int64_t n, double mass, double target) {
  const auto& k = kernels::active();
  // Bracket the threshold, mass(e >= hi) = above < target <= mass(e >= lo), with the mass above 8
  // cut-offs in one vectorised pass, placed around an estimate from a strided sample (widened to
  // fixed cut-offs when the estimate misses); then gather the bracket's weights and narrow it again
  // over those alone (8 cut-offs spread evenly in log); then select exactly among what is left.
  if (int64_t(cand_.size()) < n) cand_.resize(size_t(n)), bracket_.resize(size_t(n));  // grown once
  const int64_t S = std::max<int64_t>(1, std::min<int64_t>(1024, n / 16)), stride = n / S;
  std::vector<float>& sample = pivot_scratch_;
  sample.resize(size_t(S));
  double sample_mass = 0.0;
  for (int64_t i = 0; i < S; ++i) sample[size_t(i)] = e[i * stride], sample_mass += double(sample[size_t(i)]);
  std::sort(sample.begin(), sample.end(), std::greater<float>());
  const double share = target / mass;  // top_p
  double running = 0.0;
  float estimate = sample[0];
  for (float v : sample) {
    running += double(v);
    estimate = v;
    if (running >= share * sample_mass) break;
  }
  estimate = std::max(estimate, std::numeric_limits<float>::min() * 16);
  float cuts[8];
  for (int q = 0; q < 8; ++q) cuts[q] = std::min(1.5f, estimate * std::exp2(float(3.5 - q) * 0.5f));
  double sums[8];
  float lo = std::numeric_limits<float>::min(), hi = 2.0f;  // e <= 1: the top token's is exp(0)
  double above = 0.0;
  for (int pass = 0; pass < 2; ++pass) {
    k.sums_at_least_f32(e, n, cuts, 8, sums);
    int j = 0;
    while (j < 8 && sums[j] < target) ++j;
    if (j > 0) hi = cuts[j - 1], above = sums[j - 1];
    if (j < 8) {
      lo = cuts[j];
      break;
    }
    // below every cut-off (the sample missed): fixed cut-offs further down, 8 times 2^-3 apart
    hi = cuts[7], above = sums[7];
    for (int q = 0; q < 8; ++q) cuts[q] = std::max(std::numeric_limits<float>::min(), hi * std::exp2(-3.0f * float(q + 1)));
  }
  int32_t* ids = cand_.data();
  float* g = bracket_.data();
  const int64_t m = k.find_in_range_f32(e, n, lo, hi, ids);
  for (int64_t i = 0; i < m; ++i) g[i] = e[ids[i]];
  const double l = std::log(double(lo)), h = std::log(double(hi));
  for (int q = 0; q < 8; ++q) cuts[q] = float(std::exp(h + (l - h) * double(q + 1) / 9.0));
  k.sums_at_least_f32(g, m, cuts, 8, sums);
  int j = 0;
  while (j < 8 && above + sums[j] < target) ++j;
  if (j > 0) hi = cuts[j - 1], above += sums[j - 1];
  if (j < 8) lo = std::max(lo, cuts[j]);
  // The exact threshold among the bracket's tokens in [lo, hi): a radix select on e's bits
  // (order-preserving for e >= 0), weighted by e, for the mass still missing.
  const int64_t found = k.find_in_range_f32(g, m, lo, hi, ids);  // positions in g, ascending
  const double missing = target - above;
  if (found == 0 || missing <= 0.0) return found == 0 ? lo : hi;
  if (int64_t(keys_.size()) < m) keys_.resize(size_t(m));  // grown only: no clearing per call
  for (int64_t i = 0; i < found; ++i) std::memcpy(&keys_[size_t(ids[i])], &g[ids[i]], 4);
  const uint32_t bits = select_threshold(keys_.data(), ids, found, 0, missing,
                                         [g](int64_t i) { return double(g[i]); }, scratch_, scratch2_);
  float thr;
  std::memcpy(&thr, &bits, 4);
  return thr;
}

void Sampler::filter(float wmax) {
  const SamplerConfig& c = config_;
  const int64_t V = vocab_;
  const auto& k = kernels::active();
  // (w - max) / T with 1/T capped: a tiny temperature makes every other token's e exactly 0.
  const float inv_t = float(std::min(1.0 / c.temperature, 1e30));
  // The domain: every token, or with top-k only those at or above the k-th largest logit (ties kept),
  // gathered in id order. The kept set is {domain token : e >= thr_}: top-p and min-p raise thr_.
  if (c.top_k > 0 && c.top_k < V) {
    gather_top_k();
  } else {
    dom_n_ = V;
    dom_mapped_ = false;
  }
  e_.resize(size_t(dom_n_));
  float* e = e_.data();
  const double mass = k.exp_shifted_f32(dom_mapped_ ? dom_w_.data() : w_.data(), dom_n_, wmax, inv_t, e);
  float thr = std::numeric_limits<float>::denorm_min();  // every token with any weight
  if (c.top_p < 1.0) thr = std::max(thr, top_p_threshold(e, dom_n_, mass, c.top_p * mass));
  thr = std::max(thr, float(c.min_p));  // e of the top token is 1: min_p is a bound on e
  float e_top;  // the top token's own e (1, up to the rounding of exp): always kept
  k.exp_shifted_f32(&wmax, 1, wmax, inv_t, &e_top);
  thr_ = std::min(thr, e_top);
  // the kept mass, by blocks: the draw skips whole blocks by these sums
  const int64_t nblocks = (dom_n_ + kBlock - 1) / kBlock;
  block_mass_.resize(size_t(nblocks));
  mass_kept_ = 0.0;
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t start = b * kBlock;
    k.sums_at_least_f32(e + start, std::min(kBlock, dom_n_ - start), &thr_, 1, &block_mass_[size_t(b)]);
    mass_kept_ += block_mass_[size_t(b)];
  }
}

int64_t Sampler::sample(const float* logits, double uniform, const int64_t* banned, int64_t n_banned,
                        const uint32_t* allowed) {
  const float wmax = prepare(logits, banned, n_banned, allowed);
  if (config_.temperature == 0.0) return first_equal(wmax);
  filter(wmax);
  const float* e = e_.data();
  const float thr = thr_;
  const double u = uniform >= 0.0 ? uniform : next_uniform();
  const double target = u * mass_kept_;
  double running = 0.0;
  int64_t last = -1;
  for (int64_t b = 0; b < int64_t(block_mass_.size()); ++b) {
    const double block = block_mass_[size_t(b)];
    if (block <= 0.0) continue;
    if (running + block <= target) {  // the draw is past this block
      running += block;
      continue;
    }
    const int64_t end = std::min(dom_n_, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) {
      if (!(e[i] >= thr)) continue;
      running += double(e[i]);
      last = i;
      if (running > target) return token_at(i);
    }
  }
  if (last < 0) {  // u * mass rounded up to the total: the last kept token
    for (int64_t i = dom_n_ - 1; i >= 0; --i)
      if (e[i] >= thr) return token_at(i);
    throw SamplingError("no token left after filtering");
  }
  return token_at(last);
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
  for (int64_t i = 0; i < dom_n_; ++i)
    if (e[i] >= thr_) out[token_at(i)] = double(e[i]) / mass_kept_;
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
