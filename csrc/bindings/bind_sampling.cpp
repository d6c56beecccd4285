// The sampler (csrc/ops/sampling.h) as exaone_cpu._core.Sampler: arrays checked once here, the GIL
// released while a row is processed. Parameter ranges are validated in exaone_cpu.sampling.
#include "../ops/sampling.h"
#include "checks.h"

namespace exaone {
namespace bind {

namespace {

using ops::Sampler;

struct Masks {
  const int64_t* banned = nullptr;
  int64_t n_banned = 0;
  const uint32_t* allowed = nullptr;
};

// Keeps the checked arrays alive while their pointers are used.
struct MaskArrays {
  py::array banned, allowed;
  Masks masks;
};

MaskArrays masks_of(const Sampler& s, const py::object& banned, const py::object& allowed) {
  MaskArrays m;
  if (!banned.is_none()) {
    m.banned = py::array::ensure(banned);
    if (m.banned.size() > 0) {
      checked<int64_t>(m.banned, "banned", 1);
      m.masks.banned = cptr<int64_t>(m.banned);
      m.masks.n_banned = m.banned.shape(0);
    }
  }
  if (!allowed.is_none()) {
    m.allowed = py::array::ensure(allowed);
    checked<uint32_t>(m.allowed, "allowed (a uint32 bitmask)", 1, {(s.vocab() + 31) / 32});
    m.masks.allowed = cptr<uint32_t>(m.allowed);
  }
  return m;
}

const float* row_of(const Sampler& s, const py::array& logits) {
  checked<float>(logits, "logits", 1, {s.vocab()});
  return cptr<float>(logits);
}

template <class F>
auto sampling_call(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ops::SamplingError& e) {
    throw py::value_error(e.what());
  } catch (const std::out_of_range& e) {
    throw py::value_error(e.what());
  }
}

}  // namespace

void register_sampling(py::module_& m) {
  py::class_<Sampler>(m, "Sampler", "Per-sequence sampler: penalties, bias, masks, temperature, top-k/p, min-p, RNG")
      .def(py::init([](int64_t vocab, double temperature, int64_t top_k, double top_p, double min_p,
                       float repetition_penalty, float presence_penalty, float frequency_penalty, uint64_t seed) {
             if (!(temperature >= 0.0) || !(top_p > 0.0 && top_p <= 1.0) || !(min_p >= 0.0 && min_p <= 1.0) ||
                 top_k < 0 || !(repetition_penalty > 0.0f))
               throw py::value_error("Sampler: parameter out of range");
             ops::SamplerConfig c;
             c.temperature = temperature;
             c.top_k = top_k;
             c.top_p = top_p;
             c.min_p = min_p;
             c.repetition_penalty = repetition_penalty;
             c.presence_penalty = presence_penalty;
             c.frequency_penalty = frequency_penalty;
             return new Sampler(vocab, c, seed);
           }),
           py::arg("vocab"), py::arg("temperature") = 0.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("min_p") = 0.0, py::arg("repetition_penalty") = 1.0f, py::arg("presence_penalty") = 0.0f,
           py::arg("frequency_penalty") = 0.0f, py::arg("seed") = 0)
      .def_property_readonly("vocab", &Sampler::vocab)
      .def_property_readonly("output_length", &Sampler::output_length)
      .def("set_logit_bias",
           [](Sampler& s, py::array ids, py::array values) {
             if (py::array::ensure(ids).size() == 0) return s.set_logit_bias(nullptr, nullptr, 0);
             checked<int64_t>(ids, "logit_bias ids", 1);
             checked<float>(values, "logit_bias values", 1, {ids.shape(0)});
             sampling_call([&] { s.set_logit_bias(cptr<int64_t>(ids), cptr<float>(values), ids.shape(0)); });
           })
      .def("add_prompt",
           [](Sampler& s, py::array ids) {
             if (ids.size() == 0) return;
             checked<int64_t>(ids, "prompt ids", 1);
             const int64_t* p = cptr<int64_t>(ids);
             const int64_t n = ids.shape(0);
             sampling_call([&] {
               py::gil_scoped_release nogil;
               s.add_prompt(p, n);
             });
           })
      .def("accept", [](Sampler& s, int64_t token) { sampling_call([&] { s.accept(token); }); })
      .def("rollback_output", [](Sampler& s, int64_t keep) { sampling_call([&] { s.rollback_output(keep); }); })
      .def("next_uniform", &Sampler::next_uniform)
      .def(
          "sample",
          [](Sampler& s, py::array logits, py::object uniform, py::object banned, py::object allowed) {
            const float* row = row_of(s, logits);
            MaskArrays m = masks_of(s, banned, allowed);
            double u = -1.0;
            if (!uniform.is_none()) {
              u = uniform.cast<double>();
              if (!(u >= 0.0 && u < 1.0)) throw py::value_error("uniform must be in [0, 1)");
            }
            return sampling_call([&] {
              py::gil_scoped_release nogil;
              return s.sample(row, u, m.masks.banned, m.masks.n_banned, m.masks.allowed);
            });
          },
          py::arg("logits"), py::arg("uniform") = py::none(), py::arg("banned") = py::none(),
          py::arg("allowed") = py::none())
      .def(
          "probabilities",
          [](Sampler& s, py::array logits, py::object banned, py::object allowed) {
            const float* row = row_of(s, logits);
            MaskArrays m = masks_of(s, banned, allowed);
            py::array_t<double> out(s.vocab());
            double* o = out.mutable_data();
            sampling_call([&] {
              py::gil_scoped_release nogil;
              s.probabilities(row, m.masks.banned, m.masks.n_banned, m.masks.allowed, o);
            });
            return out;
          },
          py::arg("logits"), py::arg("banned") = py::none(), py::arg("allowed") = py::none());

  m.def(
      "logprobs",
      [](py::array logits, int64_t token, int64_t top_n) {
        checked<float>(logits, "logits", 1);
        const int64_t V = logits.shape(0);
        if (token < 0 || token >= V) throw py::value_error("logprobs: token id out of range");
        if (top_n < 0 || top_n > V) throw py::value_error("logprobs: top_n out of range");
        py::array_t<int64_t> ids(top_n);
        py::array_t<float> values(top_n);
        const float* row = cptr<float>(logits);
        int64_t* ip = ids.mutable_data();
        float* vp = values.mutable_data();
        double chosen = sampling_call([&] {
          py::gil_scoped_release nogil;
          return ops::logprob_of(row, V, token, top_n, ip, vp);
        });
        return py::make_tuple(chosen, ids, values);
      },
      py::arg("logits"), py::arg("token"), py::arg("top_n") = 0,
      "log_softmax of the raw logits: (the token's logprob, top_n ids, their logprobs), largest first");
}

}  // namespace bind
}  // namespace exaone
