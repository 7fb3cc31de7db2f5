// The session, batch and offline parts of the C API (meshtalk.h) on models written by
// model_writer.hpp: frames independent of how the audio is split into pushes, a batch of sessions
// equal to the same sessions run alone, mt_animate equal to a session fed everything then finished,
// and the state and argument errors. (Equality with Python: tests/test_capi.py.)
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "meshtalk/meshtalk.h"
#include "model_writer.hpp"

namespace {

using meshtalk_test::ModelSpec;

constexpr int64_t kV = 5;  // ModelSpec's n_vertices

struct Fixture {
  mt_model* model = nullptr;
  std::vector<float> templ, forehead, neck, audio;
  int64_t frames = 0;  // of the whole audio

  explicit Fixture(const ModelSpec& spec, int64_t n_samples = 16000 + 4321, int32_t weights = MT_WEIGHTS_F32) {
    const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
    mt_model_params mp = mt_model_default_params();
    mp.weights = weights;
    CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &model), MT_OK);
    uint64_t x = 12345;
    auto next = [&x] {  // xorshift in [-1, 1)
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.0f;
    };
    for (int64_t i = 0; i < kV * 3; ++i) templ.push_back(next());
    for (int64_t i = 0; i < kV; ++i) forehead.push_back(0.5f + 0.5f * next());
    for (int64_t i = 0; i < kV; ++i) neck.push_back(0.5f + 0.5f * next());
    for (int64_t i = 0; i < n_samples; ++i) audio.push_back(0.3f * next());
    CHECK_EQ(mt_model_num_frames(model, n_samples, &frames), MT_OK);
  }
  ~Fixture() { mt_model_free(model); }

  mt_session_params params(uint64_t seed, bool smoothing = false, int32_t delay = 4) const {
    mt_session_params p = mt_session_default_params();
    p.seed = seed;
    p.template_vertices = templ.data();
    p.template_size = static_cast<int64_t>(templ.size());
    if (smoothing) {
      p.smoothing = 1;
      p.smoothing_delay = delay;
      p.forehead_mask = forehead.data();
      p.neck_mask = neck.data();
      p.mask_size = kV;
    }
    return p;
  }
};

std::vector<float> pop_all(mt_session* s) {
  int64_t available = -1, got = -1;
  CHECK_EQ(mt_session_frames_available(s, &available), MT_OK);
  std::vector<float> out(static_cast<size_t>(available * kV * 3));
  CHECK_EQ(mt_session_pop_frames(s, out.data(), available, &got), MT_OK);
  CHECK_EQ(got, available);
  return out;
}

// A session fed `audio` in pieces of `chunk` samples, then finished; all its frames.
std::vector<float> run_session(const Fixture& f, const mt_session_params& p, int64_t chunk) {
  mt_session* s = nullptr;
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_OK);
  std::vector<float> frames;
  const int64_t n = static_cast<int64_t>(f.audio.size());
  for (int64_t k = 0; k < n; k += chunk) {
    CHECK_EQ(mt_session_push_audio(s, f.audio.data() + k, std::min(chunk, n - k)), MT_OK);
    const std::vector<float> part = pop_all(s);
    frames.insert(frames.end(), part.begin(), part.end());
  }
  CHECK_EQ(mt_session_finish(s), MT_OK);
  const std::vector<float> rest = pop_all(s);
  frames.insert(frames.end(), rest.begin(), rest.end());
  mt_session_free(s);
  return frames;
}

ModelSpec stream_spec() {
  ModelSpec spec;
  spec.framing = "stream";
  spec.clock = "exact";
  spec.lookahead = 2000;
  spec.fps = 25;
  return spec;
}

TEST(push_sizes_do_not_change_the_frames) {
  for (const ModelSpec& spec : {ModelSpec(), stream_spec()}) {
    const Fixture f(spec);
    for (const bool smoothing : {false, true}) {
      const mt_session_params p = f.params(3, smoothing, 8);
      const std::vector<float> whole = run_session(f, p, static_cast<int64_t>(f.audio.size()));
      CHECK_EQ(static_cast<int64_t>(whole.size()), f.frames * kV * 3);
      CHECK(run_session(f, p, 1) == whole);
      CHECK(run_session(f, p, 533) == whole);
      // mt_animate: the same frames.
      std::vector<float> offline(whole.size());
      int64_t got = -1;
      CHECK_EQ(mt_animate(f.model, f.audio.data(), static_cast<int64_t>(f.audio.size()), &p, offline.data(), f.frames,
                          &got),
               MT_OK);
      CHECK_EQ(got, f.frames);
      CHECK(offline == whole);
      // Another seed, other frames.
      CHECK(run_session(f, f.params(4, smoothing, 8), 533) != whole);
    }
  }
}

TEST(batch_of_three_equals_three_sessions) {
  for (const ModelSpec& spec : {ModelSpec(), stream_spec()}) {
    const Fixture f(spec);
    std::vector<std::vector<float>> alone;
    for (int i = 0; i < 3; ++i) alone.push_back(run_session(f, f.params(10 + i, i == 1, 4), 700));
    mt_batch_params bp = mt_batch_default_params();
    bp.threads = 2;
    bp.max_sessions = 3;
    mt_batch* batch = nullptr;
    CHECK_EQ(mt_batch_create(f.model, &bp, &batch), MT_OK);
    mt_session* s[3] = {nullptr, nullptr, nullptr};
    std::vector<float> got[3];
    for (int i = 0; i < 3; ++i) {
      const mt_session_params p = f.params(10 + i, i == 1, 4);
      CHECK_EQ(mt_session_create(f.model, &p, &s[i]), MT_OK);
      CHECK_EQ(mt_batch_add(batch, s[i]), MT_OK);
    }
    int64_t size = 0;
    CHECK_EQ(mt_batch_size(batch, &size), MT_OK);
    CHECK_EQ(size, 3);
    // A session cannot be added twice; a fourth does not fit (max_sessions 3).
    CHECK_EQ(mt_batch_add(batch, s[0]), MT_ERR_INVALID_STATE);
    CHECK_CONTAINS(std::string(mt_last_error()), "already in this batch");
    {
      const mt_session_params p = f.params(1);
      mt_session* extra = nullptr;
      CHECK_EQ(mt_session_create(f.model, &p, &extra), MT_OK);
      CHECK_EQ(mt_batch_add(batch, extra), MT_ERR_INVALID_STATE);
      CHECK_CONTAINS(std::string(mt_last_error()), "full (max_sessions 3");
      mt_session_free(extra);
    }
    // Different push sizes per session; the batch steps them together.
    const int64_t n = static_cast<int64_t>(f.audio.size()), chunks[3] = {533, 1600, 2999};
    int64_t at[3] = {0, 0, 0}, total = 0;
    for (bool more = true; more;) {
      more = false;
      for (int i = 0; i < 3; ++i) {
        const int64_t m = std::min(chunks[i], n - at[i]);
        if (m > 0) CHECK_EQ(mt_session_push_audio(s[i], f.audio.data() + at[i], m), MT_OK);
        at[i] += m;
        if (at[i] < n) more = true;
        else if (m > 0) CHECK_EQ(mt_session_finish(s[i]), MT_OK);
      }
      int64_t stepped = -1;
      CHECK_EQ(mt_batch_step(batch, &stepped), MT_OK);
      total += stepped;
      for (int i = 0; i < 3; ++i) {
        const std::vector<float> part = pop_all(s[i]);
        got[i].insert(got[i].end(), part.begin(), part.end());
      }
    }
    CHECK_EQ(total, 3 * f.frames);
    for (int i = 0; i < 3; ++i) CHECK(got[i] == alone[i]);
    // Removing a session that computed frames: it cannot continue until reset, then runs standalone.
    CHECK_EQ(mt_batch_remove(batch, s[0]), MT_OK);
    CHECK_EQ(mt_batch_remove(batch, s[0]), MT_ERR_INVALID_STATE);
    CHECK_EQ(mt_session_reset(s[0]), MT_OK);
    CHECK_EQ(mt_session_push_audio(s[0], f.audio.data(), n), MT_OK);
    CHECK_EQ(mt_session_finish(s[0]), MT_OK);
    CHECK(pop_all(s[0]) == alone[0]);
    // A session that has computed frames cannot join; after a reset it can, and a session freed
    // while in the batch leaves it.
    CHECK_EQ(mt_batch_add(batch, s[0]), MT_ERR_INVALID_STATE);
    CHECK_CONTAINS(std::string(mt_last_error()), "reset it first");
    CHECK_EQ(mt_session_reset(s[0]), MT_OK);
    CHECK_EQ(mt_batch_add(batch, s[0]), MT_OK);
    mt_session_free(s[0]);
    CHECK_EQ(mt_batch_size(batch, &size), MT_OK);
    CHECK_EQ(size, 2);
    mt_batch_free(batch);  // detaches s[1], s[2]
    CHECK_EQ(mt_session_reset(s[1]), MT_OK);
    mt_session_free(s[1]);
    mt_session_free(s[2]);
  }
}

TEST(a_session_leaving_the_batch_before_its_first_frame_goes_on) {
  const Fixture f{ModelSpec()};
  const mt_session_params p = f.params(5);
  const std::vector<float> alone = run_session(f, p, 4000);
  mt_batch* batch = nullptr;
  CHECK_EQ(mt_batch_create(f.model, nullptr, &batch), MT_OK);
  mt_session* s = nullptr;
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_OK);
  CHECK_EQ(mt_session_push_audio(s, f.audio.data(), 100), MT_OK);  // no frame yet: may join
  CHECK_EQ(mt_batch_add(batch, s), MT_OK);
  CHECK_EQ(mt_session_push_audio(s, f.audio.data() + 100, 900), MT_OK);
  CHECK_EQ(mt_batch_remove(batch, s), MT_OK);
  const int64_t n = static_cast<int64_t>(f.audio.size());
  CHECK_EQ(mt_session_push_audio(s, f.audio.data() + 1000, n - 1000), MT_OK);
  CHECK_EQ(mt_session_finish(s), MT_OK);
  CHECK(pop_all(s) == alone);
  mt_session_free(s);
  mt_batch_free(batch);
}

TEST(states_and_arguments_are_checked) {
  const Fixture f{ModelSpec()};
  mt_session_params p = f.params(1);
  mt_session* s = reinterpret_cast<mt_session*>(&p);  // must be set to NULL on failure
  p.template_size = 14;
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_ERR_INVALID_ARGUMENT);
  CHECK(s == nullptr);
  CHECK_CONTAINS(std::string(mt_last_error()), "params->template_size: expected 15 floats");
  p = f.params(1, true, 6);
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(std::string(mt_last_error()), "smoothing_delay: expected 4 or 8");
  std::vector<float> bad_templ = f.templ;
  bad_templ[4] = NAN;
  p = f.params(1);
  p.template_vertices = bad_templ.data();
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(std::string(mt_last_error()), "template[4]: expected a finite coordinate");
  std::vector<float> bad_mask = f.forehead;
  bad_mask[2] = 1.5f;
  p = f.params(1, true);
  p.forehead_mask = bad_mask.data();
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(std::string(mt_last_error()), "forehead_mask[2]: expected a weight in [0, 1]");

  p = f.params(1);
  CHECK_EQ(mt_session_create(f.model, &p, &s), MT_OK);
  CHECK_EQ(std::string(mt_session_error(s)), std::string());
  CHECK_EQ(mt_session_push_audio(s, nullptr, 5), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(std::string(mt_session_error(s)), "mt_session_push_audio: pcm: expected");
  CHECK_EQ(mt_session_push_audio(s, nullptr, 0), MT_OK);
  CHECK_EQ(mt_session_push_audio(s, f.audio.data(), -1), MT_ERR_INVALID_ARGUMENT);
  std::vector<float> nan_audio(100, 0.0f);
  nan_audio[77] = INFINITY;
  CHECK_EQ(mt_session_push_audio(s, nan_audio.data(), 100), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(std::string(mt_last_error()), "pcm[77]: expected a finite sample");
  int64_t got = -1;
  CHECK_EQ(mt_session_pop_frames(s, nullptr, 1, &got), MT_ERR_INVALID_ARGUMENT);
  CHECK_EQ(mt_session_pop_frames(s, nullptr, 0, &got), MT_OK);
  CHECK_EQ(got, 0);
  CHECK_EQ(mt_session_finish(s), MT_OK);
  CHECK_EQ(mt_session_finish(s), MT_ERR_INVALID_STATE);
  CHECK_EQ(mt_session_push_audio(s, f.audio.data(), 10), MT_ERR_INVALID_STATE);
  CHECK_CONTAINS(std::string(mt_last_error()), "the stream is finished");
  CHECK_EQ(mt_session_reset(s), MT_OK);
  CHECK_EQ(std::string(mt_session_error(s)), std::string());
  CHECK_EQ(mt_session_push_audio(s, f.audio.data(), 10), MT_OK);
  // NULL handles and a freed-looking handle are refused, not followed.
  CHECK_EQ(mt_session_push_audio(nullptr, f.audio.data(), 1), MT_ERR_INVALID_ARGUMENT);
  CHECK_EQ(mt_session_finish(reinterpret_cast<mt_session*>(&p)), MT_ERR_INVALID_ARGUMENT);
  CHECK_EQ(std::string(mt_session_error(nullptr)), std::string());
  mt_session_free(s);
  mt_session_free(nullptr);
  mt_batch_free(nullptr);

  // mt_animate: the frame count first, then a buffer too small before any work.
  int64_t frames = -1;
  p = f.params(1);
  const int64_t n = static_cast<int64_t>(f.audio.size());
  CHECK_EQ(mt_animate(f.model, f.audio.data(), n, &p, nullptr, 0, &frames), MT_ERR_BUFFER_TOO_SMALL);
  CHECK_EQ(frames, f.frames);
  CHECK_EQ(mt_animate(f.model, f.audio.data(), n, nullptr, nullptr, 0, &frames), MT_ERR_INVALID_ARGUMENT);
  mt_batch_params bp = mt_batch_default_params();
  bp.max_sessions = 0;
  mt_batch* batch = nullptr;
  CHECK_EQ(mt_batch_create(f.model, &bp, &batch), MT_ERR_INVALID_ARGUMENT);
  CHECK(batch == nullptr);
  CHECK_EQ(mt_batch_step(nullptr, nullptr), MT_ERR_INVALID_ARGUMENT);
}

}  // namespace

// Sessions on different threads do not interfere (meshtalk.h: a session is used by one thread at a
// time; different sessions, and the shared model, on any threads). Each thread runs its own session
// (own seed, push size and smoothing) on the one model at the same time; every result equals the
// same session run alone. The threads record statuses; the checks run on the main thread.
TEST(sessions_on_different_threads_do_not_interfere) {
  for (const ModelSpec& spec : {ModelSpec(), stream_spec()}) {
    const Fixture f(spec);
    constexpr int kThreads = 4;
    std::vector<mt_session_params> params;
    std::vector<int64_t> chunks{1, 533, 160, 4000};
    for (int i = 0; i < kThreads; ++i) params.push_back(f.params(10 + i, i % 2 == 1, 8));
    std::vector<std::vector<float>> alone;
    for (int i = 0; i < kThreads; ++i) alone.push_back(run_session(f, params[i], chunks[i]));
    std::vector<std::vector<float>> together(kThreads);
    std::vector<int> bad(kThreads, 0);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        mt_session* s = nullptr;
        if (mt_session_create(f.model, &params[i], &s) != MT_OK) {
          bad[i] = 1;
          return;
        }
        const int64_t n = static_cast<int64_t>(f.audio.size());
        std::vector<float> buf(static_cast<size_t>((f.frames + 1) * kV * 3));
        auto drain = [&] {
          int64_t got = 0;
          if (mt_session_pop_frames(s, buf.data(), f.frames + 1, &got) != MT_OK) bad[i] = 1;
          together[i].insert(together[i].end(), buf.begin(), buf.begin() + got * kV * 3);
        };
        for (int64_t k = 0; k < n; k += chunks[i]) {
          if (mt_session_push_audio(s, f.audio.data() + k, std::min(chunks[i], n - k)) != MT_OK) bad[i] = 1;
          drain();
        }
        if (mt_session_finish(s) != MT_OK) bad[i] = 1;
        drain();
        mt_session_free(s);
      });
    }
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < kThreads; ++i) {
      CHECK_EQ(bad[i], 0);
      CHECK(together[i] == alone[i]);
    }
    CHECK(alone[0] != alone[2]);  // different seeds: the comparison can fail
  }
}

namespace {

// ---- Reduced-precision weights (mt_model_params.weights) ----

bool reduced_weights_run_here() {
  const ModelSpec spec;
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  mt_model_params mp = mt_model_default_params();
  mp.weights = MT_WEIGHTS_BF16;
  mt_model* m = nullptr;
  const mt_status st = mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &m);
  mt_model_free(m);
  return st == MT_OK;
}

}  // namespace

TEST(weights_modes_are_chosen_at_load_and_reported) {
  const ModelSpec spec;
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  CHECK_EQ(mt_model_default_params().weights, static_cast<int32_t>(MT_WEIGHTS_F32));
  mt_model_params mp = mt_model_default_params();
  // Unknown values are refused with the values that exist.
  for (int32_t bad : {-1, 3, 1000}) {
    mp.weights = bad;
    mt_model* m = reinterpret_cast<mt_model*>(&mp);
    CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &m), MT_ERR_INVALID_ARGUMENT);
    CHECK(m == nullptr);
    CHECK_CONTAINS(std::string(mt_last_error()), "params->weights: expected MT_WEIGHTS_F32 (0), MT_WEIGHTS_BF16 (1) "
                                                 "or MT_WEIGHTS_INT8 (2), found " + std::to_string(bad));
  }
  // The struct of the header before `weights` (struct_size 8) still loads, as float32.
  mp = mt_model_default_params();
  mp.weights = 12345;  // not read
  mp.struct_size = 8;
  mt_model* old = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &old), MT_OK);
  mt_model_info info;
  std::memset(&info, 0x5a, sizeof info);
  info.struct_size = offsetof(mt_model_info, weights);  // an older caller's struct: `weights` untouched
  CHECK_EQ(mt_model_get_info(old, &info), MT_OK);
  int32_t untouched;
  std::memset(&untouched, 0x5a, sizeof untouched);
  CHECK_EQ(info.weights, untouched);
  CHECK_EQ(static_cast<size_t>(info.struct_size), offsetof(mt_model_info, weights));
  info.struct_size = sizeof info;
  CHECK_EQ(mt_model_get_info(old, &info), MT_OK);
  CHECK_EQ(info.weights, static_cast<int32_t>(MT_WEIGHTS_F32));
  const uint64_t f32_bytes = info.weight_bytes;
  mt_model_free(old);
  if (!reduced_weights_run_here()) {
    mp = mt_model_default_params();
    mp.weights = MT_WEIGHTS_INT8;
    mt_model* m = nullptr;
    CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &m), MT_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(std::string(mt_last_error()), "MT_WEIGHTS_INT8 cannot run here");
    CHECK_CONTAINS(std::string(mt_last_error()), "MT_WEIGHTS_F32");
    return;
  }
  for (int32_t w : {MT_WEIGHTS_BF16, MT_WEIGHTS_INT8}) {
    mp = mt_model_default_params();
    mp.weights = w;
    mt_model* m = nullptr;
    CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &mp, &m), MT_OK);
    info.struct_size = sizeof info;
    CHECK_EQ(mt_model_get_info(m, &info), MT_OK);
    CHECK_EQ(info.weights, w);
    CHECK(info.weight_bytes < f32_bytes);
    mt_model_free(m);
  }
}

// A file whose weights are bfloat16 values already: loading it as BF16 changes no weight, so every
// frame equals the float32 model's bit for bit (the kernels differ, the sums do not).
TEST(bf16_weights_equal_float32_on_a_bf16_file) {
  if (!reduced_weights_run_here()) return;
  for (ModelSpec spec : {ModelSpec(), stream_spec()}) {
    spec.dtype = "BF16";
    const Fixture exact(spec), fast(spec, 16000 + 4321, MT_WEIGHTS_BF16);
    for (const bool smoothing : {false, true}) {
      const std::vector<float> a = run_session(exact, exact.params(3, smoothing, 4), 533);
      const std::vector<float> b = run_session(fast, fast.params(3, smoothing, 4), 533);
      CHECK_EQ(a.size(), b.size());
      CHECK(a == b);
    }
  }
}

// Reduced weights on a float32 file: a batch equals its sessions run alone (the products do not
// depend on the batch), and the frames stay near the float32 model's. Argmax sessions are compared
// (no noise); the largest difference is held to a fraction of the float32 frames' range.
TEST(reduced_weights_batch_equals_alone_and_stay_near_float32) {
  if (!reduced_weights_run_here()) return;
  for (const ModelSpec& spec : {ModelSpec(), stream_spec()}) {
    const Fixture exact(spec);
    mt_session_params pe = exact.params(0);
    pe.argmax = 1;
    const std::vector<float> ref = run_session(exact, pe, 533);
    float lo = ref[0], hi = ref[0];
    for (float v : ref) lo = std::min(lo, v), hi = std::max(hi, v);
    for (int32_t w : {MT_WEIGHTS_BF16, MT_WEIGHTS_INT8}) {
      const Fixture f(spec, 16000 + 4321, w);
      mt_session_params p = f.params(0);
      p.argmax = 1;
      const std::vector<float> alone = run_session(f, p, 533);
      CHECK_EQ(alone.size(), ref.size());
      float worst = 0.0f;
      for (size_t i = 0; i < ref.size() && i < alone.size(); ++i) worst = std::max(worst, std::fabs(alone[i] - ref[i]));
      const float bound = (w == MT_WEIGHTS_BF16 ? 0.005f : 0.01f) * (hi - lo);  // measured: 0.1 %, 0.15 %
      std::printf("  %s, weights %d: max |frame - float32 frame| %.3g (bound %.3g, range %.3g)\n",
                  spec.framing.c_str(), w, worst, bound, hi - lo);
      CHECK(worst <= bound);
      // In a batch of two with another seed: the same frames.
      mt_batch_params bp = mt_batch_default_params();
      bp.threads = 2;
      bp.max_sessions = 2;
      mt_batch* batch = nullptr;
      CHECK_EQ(mt_batch_create(f.model, &bp, &batch), MT_OK);
      mt_session* s[2] = {nullptr, nullptr};
      const mt_session_params q = f.params(9);
      CHECK_EQ(mt_session_create(f.model, &p, &s[0]), MT_OK);
      CHECK_EQ(mt_session_create(f.model, &q, &s[1]), MT_OK);
      for (mt_session* x : s) CHECK_EQ(mt_batch_add(batch, x), MT_OK);
      const int64_t n = static_cast<int64_t>(f.audio.size());
      std::vector<float> got;
      for (int64_t k = 0; k < n; k += 1000) {
        for (mt_session* x : s)
          CHECK_EQ(mt_session_push_audio(x, f.audio.data() + k, std::min<int64_t>(1000, n - k)), MT_OK);
        CHECK_EQ(mt_batch_step(batch, nullptr), MT_OK);
        const std::vector<float> part = pop_all(s[0]);
        got.insert(got.end(), part.begin(), part.end());
        pop_all(s[1]);
      }
      for (mt_session* x : s) CHECK_EQ(mt_session_finish(x), MT_OK);
      CHECK_EQ(mt_batch_step(batch, nullptr), MT_OK);
      const std::vector<float> rest = pop_all(s[0]);
      got.insert(got.end(), rest.begin(), rest.end());
      CHECK(got == alone);
      mt_batch_free(batch);
      for (mt_session* x : s) mt_session_free(x);
    }
  }
}

int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
