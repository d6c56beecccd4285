// Next-token selection for one sequence: penalties, logit bias, masks, temperature, top-k, top-p,
// min-p and a seeded draw, over a float32 logits row, with no full-vocabulary sort.
//
// The semantics (docs/sampling.md; the numpy reference in tests/sampling_reference.py follows them):
//   w      = logits
//   w[t]   = w[t] / rp if w[t] > 0 else w[t] * rp      every distinct t in prompt + output (transformers)
//   w[t]  -= presence + frequency * count[t]            every t in the output (OpenAI)
//   w[t]  += bias[t]; banned / not-allowed t -> -inf
//   temperature 0: argmax(w) (the first of equal maxima)
//   else   e = exp((w - max w) / T)
//          keep w >= the k-th largest w (top_k > 0; ties kept)
//          keep e >= e_n, the n-th largest e of the kept, for the smallest n whose top n hold
//            top_p * mass(kept) (ties kept)
//          keep e >= min_p (probability >= min_p * the top probability)
//          draw u in [0, 1): the first kept t in id order whose running mass exceeds u * mass(kept)
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace exaone {
namespace ops {

struct SamplerConfig {
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  double min_p = 0.0;        // 0: off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
};

// Thrown for logits the sampler cannot draw from (NaN, +inf, every token masked); bound as ValueError.
struct SamplingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Sampler {
 public:
  Sampler(int64_t vocab, const SamplerConfig& config, uint64_t seed);

  int64_t vocab() const { return vocab_; }
  const SamplerConfig& config() const { return config_; }

  void set_logit_bias(const int64_t* ids, const float* values, int64_t n);
  // Prompt tokens: seen by the repetition penalty, not counted by presence / frequency.
  void add_prompt(const int64_t* ids, int64_t n);
  // One generated token: seen, and counted.
  void accept(int64_t token);
  // Forgets the output tokens after the first `keep` (the KV cache rolled back; speculative decoding).
  void rollback_output(int64_t keep);
  int64_t output_length() const { return int64_t(output_.size()); }

  // The next token. uniform in [0, 1) replaces the RNG's draw when >= 0 (tests, speculative
  // verification). banned: ids set to -inf (min_new_tokens); allowed: a bitmask of vocab bits (bit t
  // of word t / 32), 0 = forbidden, or null.
  int64_t sample(const float* logits, double uniform, const int64_t* banned, int64_t n_banned,
                 const uint32_t* allowed);
  // The distribution sample() draws from (one-hot for greedy), float64 [vocab].
  void probabilities(const float* logits, const int64_t* banned, int64_t n_banned, const uint32_t* allowed,
                     double* out);
  double next_uniform();

 private:
  // Fills w_ (penalised, biased, masked logits); returns max w.
  float prepare(const float* logits, const int64_t* banned, int64_t n_banned, const uint32_t* allowed);
  // Fills the domain (every token, or top-k's), e_ over it, thr_ (kept: e >= thr_), block_mass_, mass_kept_.
  void filter(float wmax);
  void gather_top_k();
  // The top-p threshold on e[0..n) (summing to mass): the largest e whose tokens at or above it hold
  // `target` of the mass.
  float top_p_threshold(const float* e, int64_t n, double mass, double target);
  int64_t token_at(int64_t i) const { return dom_mapped_ ? dom_ids_[size_t(i)] : i; }
  int64_t first_equal(float value) const;

  int64_t vocab_;
  SamplerConfig config_;
  uint64_t rng_[4];
  std::vector<float> bias_;        // [vocab] or empty
  std::vector<int64_t> bias_ids_;  // nonzero entries of bias_
  std::vector<uint8_t> in_prompt_;  // [vocab]
  std::vector<int64_t> prompt_ids_;  // distinct prompt tokens
  std::vector<int32_t> count_;     // [vocab]: times in the output
  std::vector<int64_t> counted_ids_;
  std::vector<int64_t> output_;
  std::vector<float> w_, e_;       // work rows
  std::vector<uint32_t> keys_;
  std::vector<int32_t> cand_, scratch_, scratch2_;
  std::vector<float> bracket_;  // top-p: the weights of the tokens in its bracket, gathered
  std::vector<float> pivot_scratch_;
  std::vector<int32_t> dom_ids_;  // the domain's token ids when top-k gathered it
  std::vector<float> dom_w_;
  int64_t dom_n_ = 0;
  bool dom_mapped_ = false;
  static constexpr int64_t kBlock = 512;  // tokens per block of the draw
  std::vector<double> block_mass_;
  float thr_ = 0.0f;
  double mass_kept_ = 0.0;
};

// Log-probabilities of the model's own distribution (log_softmax of the raw logits): the chosen
// token's, and the top n (largest first, lower id first among equals) written to ids / values.
double logprob_of(const float* logits, int64_t vocab, int64_t token, int64_t top_n, int64_t* ids, float* values);

}  // namespace ops
}  // namespace exaone
