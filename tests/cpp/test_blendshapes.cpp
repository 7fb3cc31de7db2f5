// The blendshape part of the C API (meshtalk.h, csrc/core/capi_blendshapes.cpp, blendshapes.cpp):
// known weights recovered, every solution checked against the QP's optimality (KKT) conditions
// computed here in double from the problem's definition, warm start equal to cold start, bounds,
// smoothing, mt_session_pop_weights equal to popping frames and solving them, and every bad argument
// refused with a status and a message naming it. (Agreement with an independent solver, scipy's
// lsq_linear: tests/test_blendshapes.py.)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "check.hpp"
#include "meshtalk/meshtalk.h"
#include "model_writer.hpp"

namespace {

std::string last_error() { return mt_last_error(); }

struct Rng {
  uint64_t x = 88172645463325252ull;
  double uniform() {  // [0, 1)
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return static_cast<double>(x >> 11) / 9007199254740992.0;
  }
  float normal() {
    const double u = uniform() + 1e-12, v = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

struct Basis {
  int64_t V, K;
  std::vector<float> neutral, deltas, mask;
  Basis(int64_t V_, int64_t K_, Rng& rng) : V(V_), K(K_) {
    for (int64_t i = 0; i < V * 3; ++i) neutral.push_back(rng.normal());
    for (int64_t i = 0; i < K * V * 3; ++i) deltas.push_back(rng.normal());
    for (int64_t i = 0; i < V; ++i) mask.push_back(static_cast<float>(rng.uniform()));
  }
  // frames [T, V, 3] = neutral + w [T, K] . deltas (+ noise)
  std::vector<float> frames(const std::vector<double>& w, int64_t T, Rng& rng, double noise) const {
    std::vector<float> out(static_cast<size_t>(T * V * 3));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < V * 3; ++j) {
        double x = neutral[j] + noise * rng.normal();
        for (int64_t k = 0; k < K; ++k) x += w[t * K + k] * deltas[k * V * 3 + j];
        out[t * V * 3 + j] = static_cast<float>(x);
      }
    return out;
  }
};

mt_blendshape_solver* make(const Basis& b, const float* mask, float lo, float hi, float smoothing) {
  mt_blendshape_params p = mt_blendshape_default_params();
  p.lo = lo;
  p.hi = hi;
  p.smoothing = smoothing;
  mt_blendshape_solver* s = nullptr;
  CHECK_EQ(mt_blendshape_solver_create(b.V, b.K, b.neutral.data(), b.deltas.data(), mask, &p, &s), MT_OK);
  CHECK(s != nullptr);
  return s;
}

std::vector<float> solve(mt_blendshape_solver* s, const std::vector<float>& frames, int64_t T, int64_t K) {
  std::vector<float> out(static_cast<size_t>(T * K), -7.0f);
  CHECK_EQ(mt_blendshape_solver_solve(s, frames.data(), T, out.data()), MT_OK);
  return out;
}

// The largest violation of the KKT conditions of frame t's QP, relative to the problem's scale:
// gradient g = 2 (G + s I) w - 2 (b + s w_prev) must be 0 where lo < w < hi, >= 0 at lo, <= 0 at hi.
double kkt_violation(const Basis& b, const float* mask, const float* frame, const float* w, const float* w_prev,
                     float lo, float hi, float smoothing) {
  const int64_t V3 = b.V * 3, K = b.K;
  double S = 0.0;
  for (int64_t v = 0; v < b.V; ++v) S += mask ? mask[v] : 1.0;
  std::vector<double> fit(static_cast<size_t>(V3), 0.0);  // D w - r
  for (int64_t j = 0; j < V3; ++j) {
    double x = -(static_cast<double>(frame[j]) - b.neutral[j]);
    for (int64_t k = 0; k < K; ++k) x += static_cast<double>(w[k]) * b.deltas[k * V3 + j];
    fit[j] = x * (mask ? mask[j / 3] : 1.0) / S;
  }
  double worst = 0.0, scale = 1e-30;
  for (int64_t k = 0; k < K; ++k) {
    double g = 0.0, gk = 0.0;
    for (int64_t j = 0; j < V3; ++j) {
      g += 2.0 * b.deltas[k * V3 + j] * fit[j];
      gk += 2.0 * std::fabs(b.deltas[k * V3 + j]) * std::fabs(b.deltas[k * V3 + j]) * (mask ? mask[j / 3] : 1.0) / S;
    }
    if (w_prev) g += 2.0 * smoothing * (static_cast<double>(w[k]) - w_prev[k]);
    scale = std::max(scale, gk);
    const double eps = 1e-6 * std::max(1.0, std::fabs(static_cast<double>(w[k])));
    const bool at_lo = w[k] <= lo + eps, at_hi = w[k] >= hi - eps;
    const double v = at_lo && at_hi ? 0.0 : at_lo ? std::max(0.0, -g) : at_hi ? std::max(0.0, g) : std::fabs(g);
    worst = std::max(worst, v);
    if (w[k] < lo || w[k] > hi) return std::numeric_limits<double>::infinity();
  }
  return worst / scale;
}

}  // namespace

TEST(default_params_and_info) {
  const mt_blendshape_params p = mt_blendshape_default_params();
  CHECK_EQ(p.struct_size, sizeof(mt_blendshape_params));
  CHECK(p.lo == 0.0f && p.hi == 1.0f && p.smoothing == 0.0f);
  Rng rng;
  const Basis b(13, 4, rng);
  mt_blendshape_solver* s = make(b, nullptr, 0.0f, 1.0f, 0.0f);
  mt_blendshape_solver_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_EQ(mt_blendshape_solver_get_info(s, &info), MT_OK);
  CHECK_EQ(info.n_vertices, 13);
  CHECK_EQ(info.n_shapes, 4);
  CHECK(info.condition >= 1.0 && info.condition < 100.0);  // random shapes are far from dependent
  CHECK_EQ(info.frames_solved, 0);
  info.struct_size = 3;
  CHECK_EQ(mt_blendshape_solver_get_info(s, &info), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_blendshape_solver_get_info: info->struct_size: expected");
  mt_blendshape_solver_free(s);
  mt_blendshape_solver_free(nullptr);
}

TEST(known_weights_are_recovered) {
  Rng rng;
  for (const int64_t K : {1, 7, 52}) {
    const Basis b(61, K, rng);  // V not a multiple of 8
    const int64_t T = 5;
    std::vector<double> w(static_cast<size_t>(T * K));
    for (double& x : w) x = 0.05 + 0.9 * rng.uniform();
    const std::vector<float> frames = b.frames(w, T, rng, 0.0);
    mt_blendshape_solver* s = make(b, b.mask.data(), 0.0f, 1.0f, 0.0f);
    const std::vector<float> out = solve(s, frames, T, K);
    double err = 0.0;
    for (size_t i = 0; i < w.size(); ++i) err = std::max(err, std::fabs(out[i] - w[i]));
    CHECK(err < 1e-4);
    mt_blendshape_solver_free(s);
  }
}

TEST(solutions_satisfy_the_optimality_conditions) {
  Rng rng;
  for (const int64_t K : {1, 7, 52, 256}) {
    const Basis b(K == 256 ? 131 : 97, K, rng);
    const int64_t T = K == 256 ? 3 : 8;
    std::vector<double> w(static_cast<size_t>(T * K));
    for (double& x : w) x = -0.4 + 1.8 * rng.uniform();  // many weights land on a bound
    const std::vector<float> frames = b.frames(w, T, rng, 0.1);
    for (const float smoothing : {0.0f, 0.3f}) {
      for (const bool masked : {false, true}) {
        if (K == 256 && !(masked && smoothing > 0)) continue;  // one case at K = 256 (slow under the sanitizers)
        const float* mask = masked ? b.mask.data() : nullptr;
        mt_blendshape_solver* s = make(b, mask, -0.25f, 1.0f, smoothing);
        const std::vector<float> out = solve(s, frames, T, K);
        for (int64_t t = 0; t < T; ++t) {
          const float* prev = t > 0 && smoothing > 0 ? &out[(t - 1) * K] : nullptr;
          const double v = kkt_violation(b, mask, &frames[t * b.V * 3], &out[t * K], prev, -0.25f, 1.0f, smoothing);
          if (!(v < 1e-4)) std::fprintf(stderr, "K=%lld t=%lld smoothing=%g masked=%d: KKT violation %g\n",
                                        static_cast<long long>(K), static_cast<long long>(t), smoothing, masked, v);
          CHECK(v < 1e-4);
        }
        // The check can fail: the first frame's weights moved by 0.01 violate the conditions.
        std::vector<float> moved(out.begin(), out.begin() + K);
        moved[0] = moved[0] > 0.5f ? moved[0] - 0.01f : moved[0] + 0.01f;
        CHECK(kkt_violation(b, mask, frames.data(), moved.data(), nullptr, -0.25f, 1.0f, smoothing) > 1e-3);
        mt_blendshape_solver_info info;
        info.struct_size = sizeof info;
        CHECK_EQ(mt_blendshape_solver_get_info(s, &info), MT_OK);
        CHECK_EQ(info.frames_solved, T);
        CHECK_EQ(info.unconverged_frames, 0);
        mt_blendshape_solver_free(s);
      }
    }
  }
}

TEST(warm_start_equals_cold_start_and_calls_chain) {
  Rng rng;
  const Basis b(77, 52, rng);
  const int64_t T = 12, K = 52;
  std::vector<double> w(static_cast<size_t>(T * K));
  for (double& x : w) x = -0.3 + 1.6 * rng.uniform();
  const std::vector<float> frames = b.frames(w, T, rng, 0.05);
  mt_blendshape_solver* warm = make(b, b.mask.data(), 0.0f, 1.0f, 0.0f);
  mt_blendshape_solver* cold = make(b, b.mask.data(), 0.0f, 1.0f, 0.0f);
  const std::vector<float> a = solve(warm, frames, T, K);
  for (int64_t t = 0; t < T; ++t) {
    CHECK_EQ(mt_blendshape_solver_reset(cold), MT_OK);
    std::vector<float> one(static_cast<size_t>(K));
    CHECK_EQ(mt_blendshape_solver_solve(cold, &frames[t * b.V * 3], 1, one.data()), MT_OK);
    for (int64_t k = 0; k < K; ++k) CHECK(std::fabs(one[k] - a[t * K + k]) < 1e-5);
  }
  // With smoothing, frames solved in pieces equal frames solved in one call (the state carries over).
  mt_blendshape_solver* whole = make(b, nullptr, 0.0f, 1.0f, 0.5f);
  mt_blendshape_solver* pieces = make(b, nullptr, 0.0f, 1.0f, 0.5f);
  const std::vector<float> x = solve(whole, frames, T, K);
  std::vector<float> y(static_cast<size_t>(T * K));
  CHECK_EQ(mt_blendshape_solver_solve(pieces, frames.data(), 5, y.data()), MT_OK);
  CHECK_EQ(mt_blendshape_solver_solve(pieces, &frames[5 * b.V * 3], T - 5, &y[5 * K]), MT_OK);
  CHECK(x == y);
  // reset: the next frame is solved as a first frame (no smoothing term).
  CHECK_EQ(mt_blendshape_solver_reset(pieces), MT_OK);
  std::vector<float> first(static_cast<size_t>(K));
  CHECK_EQ(mt_blendshape_solver_solve(pieces, frames.data(), 1, first.data()), MT_OK);
  for (int64_t k = 0; k < K; ++k) CHECK(std::fabs(first[k] - x[k]) < 1e-6);
  for (auto* s : {warm, cold, whole, pieces}) mt_blendshape_solver_free(s);
}

TEST(smoothing_pulls_towards_the_previous_frame) {
  Rng rng;
  const Basis b(40, 3, rng);
  const std::vector<double> w = {0.2, 0.2, 0.2, 0.8, 0.8, 0.8};
  const std::vector<float> frames = b.frames(w, 2, rng, 0.0);
  std::vector<float> jump;
  for (const float s : {0.0f, 1.0f, 100.0f}) {
    mt_blendshape_solver* solver = make(b, nullptr, 0.0f, 1.0f, s);
    const std::vector<float> out = solve(solver, frames, 2, 3);
    CHECK(std::fabs(out[0] - 0.2f) < 1e-5);  // the first frame has no smoothing term
    jump.push_back(out[3] - out[0]);
    mt_blendshape_solver_free(solver);
  }
  CHECK(std::fabs(jump[0] - 0.6f) < 1e-5);
  CHECK(jump[1] < jump[0] - 0.01f && jump[2] < jump[1] - 0.01f && jump[2] > 0.0f);
}

TEST(bounds_hold_including_fixed_and_unbounded) {
  Rng rng;
  const Basis b(31, 6, rng);
  std::vector<double> w(12);
  for (double& x : w) x = -3.0 + 6.0 * rng.uniform();
  const std::vector<float> frames = b.frames(w, 2, rng, 0.0);
  mt_blendshape_solver* fixed = make(b, nullptr, 0.25f, 0.25f, 0.0f);
  for (const float x : solve(fixed, frames, 2, 6)) CHECK_EQ(x, 0.25f);
  const float inf = std::numeric_limits<float>::infinity();
  mt_blendshape_solver* free_ = make(b, nullptr, -inf, inf, 0.0f);  // plain least squares
  const std::vector<float> out = solve(free_, frames, 2, 6);
  for (size_t i = 0; i < w.size(); ++i) CHECK(std::fabs(out[i] - w[i]) < 1e-4);
  mt_blendshape_solver* box = make(b, nullptr, -0.5f, 0.5f, 0.0f);
  for (const float x : solve(box, frames, 2, 6)) CHECK(x >= -0.5f && x <= 0.5f);
  for (auto* s : {fixed, free_, box}) mt_blendshape_solver_free(s);
}

TEST(dependent_shapes_still_solve_with_an_infinite_condition) {
  Rng rng;
  Basis b(23, 3, rng);
  std::copy(b.deltas.begin(), b.deltas.begin() + 69, b.deltas.begin() + 69);  // shape 1 = shape 0
  const std::vector<double> w = {0.6, 0.0, 0.3};
  const std::vector<float> frames = b.frames(w, 1, rng, 0.0);
  mt_blendshape_solver* s = make(b, nullptr, 0.0f, 1.0f, 0.0f);
  mt_blendshape_solver_info info;
  info.struct_size = sizeof info;
  CHECK_EQ(mt_blendshape_solver_get_info(s, &info), MT_OK);
  CHECK(info.condition > 1e12);
  const std::vector<float> out = solve(s, frames, 1, 3);
  CHECK(std::fabs(out[0] + out[1] - 0.6f) < 1e-4);  // the fit is exact; the ridge splits the pair evenly
  CHECK(std::fabs(out[0] - out[1]) < 1e-4);
  CHECK(std::fabs(out[2] - 0.3f) < 1e-4);
  mt_blendshape_solver_free(s);
}

TEST(bad_arguments_are_refused_with_their_names) {
  Rng rng;
  Basis b(9, 2, rng);
  mt_blendshape_params p = mt_blendshape_default_params();
  mt_blendshape_solver* s = reinterpret_cast<mt_blendshape_solver*>(&p);  // must be reset to NULL
  auto refused = [&](mt_status st, const std::string& part) {
    CHECK_EQ(st, MT_ERR_INVALID_ARGUMENT);
    CHECK(s == nullptr);
    CHECK_CONTAINS(last_error(), part);
  };
  refused(mt_blendshape_solver_create(0, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, &s),
          "mt_blendshape_solver_create: n_vertices: expected 1 .. ");
  refused(mt_blendshape_solver_create(9, 257, b.neutral.data(), b.deltas.data(), nullptr, &p, &s), "n_shapes");
  refused(mt_blendshape_solver_create(9, 2, nullptr, b.deltas.data(), nullptr, &p, &s), "neutral: expected");
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), nullptr, nullptr, &p, &s), "deltas: expected");
  CHECK_EQ(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, nullptr),
           MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "out_solver");
  p.lo = 2.0f;
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, &s),
          "params->bounds (lo, hi): expected lo <= hi");
  p = mt_blendshape_default_params();
  p.hi = std::nanf("");
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, &s), "params->bounds");
  p = mt_blendshape_default_params();
  p.smoothing = -1.0f;
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, &s),
          "params->smoothing: expected a finite value >= 0, found -1");
  p = mt_blendshape_default_params();
  p.struct_size = 4;
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, &p, &s),
          "params->struct_size");
  p = mt_blendshape_default_params();
  b.mask[4] = -1.0f;
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), b.mask.data(), &p, &s),
          "vertex_weights[4]: expected a finite weight >= 0, found -1");
  std::fill(b.mask.begin(), b.mask.end(), 0.0f);
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), b.mask.data(), &p, &s),
          "vertex_weights: expected at least one weight > 0");
  b.deltas[20] = std::numeric_limits<float>::infinity();
  refused(mt_blendshape_solver_create(9, 2, b.neutral.data(), b.deltas.data(), nullptr, nullptr, &s),
          "deltas: expected finite values [n_shapes, n_vertices, 3], found inf at flat index 20");
  b.deltas[20] = 0.5f;

  mt_blendshape_solver* ok = make(b, nullptr, 0.0f, 1.0f, 0.0f);
  std::vector<float> frames = b.frames({0.5, 0.5, 0.5, 0.5}, 2, rng, 0.0), out(4);
  frames[9 * 3 + 7] = std::nanf("");  // frame 1, vertex 2
  CHECK_EQ(mt_blendshape_solver_solve(ok, frames.data(), 2, out.data()), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_blendshape_solver_solve: frames[1] vertex 2: expected finite coordinates, found nan");
  CHECK_EQ(mt_blendshape_solver_solve(ok, frames.data(), -1, out.data()), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "n_frames: expected a count >= 0, found -1");
  CHECK_EQ(mt_blendshape_solver_solve(ok, nullptr, 1, out.data()), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "frames: expected");
  CHECK_EQ(mt_blendshape_solver_solve(ok, frames.data(), 1, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "out_weights: expected");
  CHECK_EQ(mt_blendshape_solver_solve(ok, nullptr, 0, nullptr), MT_OK);
  CHECK_EQ(mt_blendshape_solver_solve(nullptr, frames.data(), 1, out.data()), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "solver: expected an mt_blendshape_solver handle");
  CHECK_EQ(mt_blendshape_solver_reset(reinterpret_cast<mt_blendshape_solver*>(&p)), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "expected a live mt_blendshape_solver handle");
  mt_blendshape_solver_free(ok);
}

// ------------------------------------------------------------------------------------------- sessions

TEST(session_pop_weights_equals_pop_frames_then_solve) {
  meshtalk_test::ModelSpec spec;  // V = 5
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  Rng rng;
  const Basis b(5, 4, rng);
  std::vector<float> audio;
  for (int i = 0; i < 12000; ++i) audio.push_back(0.3f * rng.normal());
  mt_session_params sp = mt_session_default_params();
  sp.template_vertices = b.neutral.data();
  sp.template_size = 15;
  mt_session* a = nullptr;
  mt_session* c = nullptr;
  CHECK_EQ(mt_session_create(model, &sp, &a), MT_OK);
  CHECK_EQ(mt_session_create(model, &sp, &c), MT_OK);
  mt_blendshape_params p = mt_blendshape_default_params();
  p.lo = -10.0f;
  p.hi = 10.0f;
  p.smoothing = 0.1f;
  mt_blendshape_solver* sa = nullptr;
  mt_blendshape_solver* sc = nullptr;
  CHECK_EQ(mt_blendshape_solver_create_for_model(model, 4, b.neutral.data(), b.deltas.data(), nullptr, &p, &sa), MT_OK);
  CHECK_EQ(mt_blendshape_solver_create(5, 4, b.neutral.data(), b.deltas.data(), nullptr, &p, &sc), MT_OK);
  for (mt_session* s : {a, c}) {
    CHECK_EQ(mt_session_push_audio(s, audio.data(), static_cast<int64_t>(audio.size())), MT_OK);
    CHECK_EQ(mt_session_finish(s), MT_OK);
  }
  int64_t available = 0, got = -1;
  CHECK_EQ(mt_session_frames_available(a, &available), MT_OK);
  CHECK(available > 10);
  std::vector<float> frames(static_cast<size_t>(available * 15)), expected(static_cast<size_t>(available * 4));
  CHECK_EQ(mt_session_pop_frames(a, frames.data(), available, &got), MT_OK);
  CHECK_EQ(mt_blendshape_solver_solve(sa, frames.data(), available, expected.data()), MT_OK);
  std::vector<float> weights(static_cast<size_t>(available * 4));
  CHECK_EQ(mt_session_pop_weights(c, sc, weights.data(), 3, &got), MT_OK);  // in two pieces
  CHECK_EQ(got, 3);
  CHECK_EQ(mt_session_pop_weights(c, sc, &weights[12], available, &got), MT_OK);
  CHECK_EQ(got, available - 3);
  CHECK(weights == expected);
  CHECK_EQ(mt_session_pop_weights(c, sc, weights.data(), 5, &got), MT_OK);
  CHECK_EQ(got, 0);

  // A solver for another vertex count is refused before anything is popped.
  mt_blendshape_solver* wrong = nullptr;
  CHECK_EQ(mt_blendshape_solver_create(3, 4, b.neutral.data(), b.deltas.data(), nullptr, &p, &wrong), MT_OK);
  CHECK_EQ(mt_session_reset(c), MT_OK);
  CHECK_EQ(mt_session_push_audio(c, audio.data(), 10000), MT_OK);
  CHECK_EQ(mt_session_frames_available(c, &available), MT_OK);
  CHECK(available > 0);
  got = -1;
  CHECK_EQ(mt_session_pop_weights(c, wrong, weights.data(), 2, &got), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_session_pop_weights: solver: expected a solver for the session's model's 5 vertices, "
                               "found one for 3");
  CHECK_CONTAINS(std::string(mt_session_error(c)), "solver: expected a solver");
  CHECK_EQ(got, -1);
  int64_t still = 0;
  CHECK_EQ(mt_session_frames_available(c, &still), MT_OK);
  CHECK_EQ(still, available);
  CHECK_EQ(mt_session_pop_weights(c, sc, nullptr, 2, &got), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "out_weights");
  CHECK_EQ(mt_session_pop_weights(c, nullptr, weights.data(), 2, &got), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "solver: expected an mt_blendshape_solver handle");

  mt_model_free(model);  // the solver does not need the model
  std::vector<float> one(4);
  CHECK_EQ(mt_blendshape_solver_solve(sa, frames.data(), 1, one.data()), MT_OK);
  for (mt_session* s : {a, c}) mt_session_free(s);
  for (mt_blendshape_solver* s : {sa, sc, wrong}) mt_blendshape_solver_free(s);
  CHECK_EQ(mt_blendshape_solver_create_for_model(nullptr, 4, b.neutral.data(), b.deltas.data(), nullptr, &p, &sa),
           MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_blendshape_solver_create_for_model: model: expected");
}

int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
