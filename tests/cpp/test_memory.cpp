// Memory stays flat over a long stream: in the second half of a stream, pushing audio, stepping a
// batch and popping frames allocate nothing (before that a session's frame queue may grow once, to
// the most frames one push yields), for a standalone session and for sessions in an mt_batch, with
// either framing and with smoothing (533-sample pushes, popped as they come): 5 minutes of audio with
// the stream framing (90 s for two sessions in a batch), 40 s with the window framing (whose encoder
// keeps nothing beyond a 1 s window, and costs ~60 MFLOP per frame: kept short for the sanitizer build).
// Every allocation of this program goes through the counting operator new below.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "check.hpp"
#include "meshtalk/meshtalk.h"
#include "model_writer.hpp"

namespace {
std::atomic<int64_t> g_allocations{0};
std::atomic<int64_t> g_bytes{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using meshtalk_test::ModelSpec;

struct Stream {
  mt_model* model = nullptr;
  std::vector<float> templ, masks, audio, out;
  int64_t V = 0;

  explicit Stream(const ModelSpec& spec, int64_t seconds) : V(spec.n_vertices) {
    const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
    CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
    uint64_t x = 5;
    auto next = [&x] {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.0f;
    };
    for (int64_t i = 0; i < V * 3; ++i) templ.push_back(next());
    for (int64_t i = 0; i < 2 * V; ++i) masks.push_back(0.5f + 0.5f * next());
    for (int64_t i = 0; i < seconds * 16000; ++i) audio.push_back(0.3f * next());
    out.resize(static_cast<size_t>(64 * V * 3));
  }
  ~Stream() { mt_model_free(model); }

  mt_session_params params(uint64_t seed, int32_t threads = 1) const {
    mt_session_params p = mt_session_default_params();
    p.seed = seed;
    p.threads = threads;
    p.template_vertices = templ.data();
    p.template_size = V * 3;
    p.smoothing = 1;
    p.forehead_mask = masks.data();
    p.neck_mask = masks.data() + V;
    p.mask_size = V;
    return p;
  }
};

ModelSpec spec_of(const char* framing, int64_t n_vertices = 40) {
  ModelSpec spec;
  spec.n_vertices = n_vertices;
  spec.framing = framing;
  if (std::string(framing) == "stream") spec.clock = "exact";
  return spec;
}

// n sessions (standalone when batch is false) fed the same audio in 533-sample pushes; returns the
// allocations made in the second half of the audio (*early: those between 10 s and the half).
int64_t allocations_late(const Stream& s, int n, bool batch, int64_t* frames, int64_t* early, int32_t threads = 1) {
  std::vector<mt_session*> sessions(static_cast<size_t>(n), nullptr);
  for (int i = 0; i < n; ++i) {
    const mt_session_params p = s.params(static_cast<uint64_t>(i), threads);
    CHECK_EQ(mt_session_create(s.model, &p, &sessions[i]), MT_OK);
  }
  mt_batch* b = nullptr;
  if (batch) {
    mt_batch_params bp = mt_batch_default_params();
    bp.threads = 2;
    bp.max_sessions = n;
    CHECK_EQ(mt_batch_create(s.model, &bp, &b), MT_OK);
    for (mt_session* x : sessions) CHECK_EQ(mt_batch_add(b, x), MT_OK);
  }
  const int64_t total = static_cast<int64_t>(s.audio.size());
  int64_t start = -1, half = -1;
  *frames = 0;
  for (int64_t k = 0; k < total; k += 533) {
    if (start < 0 && k >= 10 * 16000) start = g_allocations.load();
    if (half < 0 && k >= total / 2) half = g_allocations.load();
    const int64_t m = std::min<int64_t>(533, total - k);
    for (mt_session* x : sessions) CHECK_EQ(mt_session_push_audio(x, s.audio.data() + k, m), MT_OK);
    if (b) CHECK_EQ(mt_batch_step(b, nullptr), MT_OK);
    for (mt_session* x : sessions) {
      int64_t got = 0;
      CHECK_EQ(mt_session_pop_frames(x, const_cast<float*>(s.out.data()), 64, &got), MT_OK);
      *frames += got;
    }
  }
  const int64_t after = g_allocations.load() - half;
  *early = half - start;
  mt_batch_free(b);
  for (mt_session* x : sessions) mt_session_free(x);
  return after;
}

TEST(a_long_stream_allocates_nothing_after_warmup) {
  for (const char* framing : {"window", "stream"}) {
    for (const bool batch : {false, true}) {
      // 5 minutes for one streaming-framing session; shorter for the rest (sanitizer build, -O0).
      const int64_t seconds = std::string(framing) == "stream" ? (batch ? 90 : 300) : 40;
      const Stream s(spec_of(framing), seconds);
      const int n = batch ? 2 : 1;
      int64_t frames = 0, early = 0;
      const int64_t allocations = allocations_late(s, n, batch, &frames, &early);
      std::printf("  %s, %s, %lld s: %lld frames; allocations from 10 s to the half %lld, after it %lld\n", framing,
                  batch ? "2 sessions in a batch" : "one session", static_cast<long long>(seconds),
                  static_cast<long long>(frames), static_cast<long long>(early), static_cast<long long>(allocations));
      CHECK(early <= 2 * n);  // at most a queue growth or two per session
      CHECK(frames > n * (seconds * 30 - 30));  // 30 fps, less the look-ahead and smoothing delay
      CHECK_EQ(allocations, 0);
    }
  }
}

// A session on 2 threads with a face large enough (3000 vertices) that each push's smoothing is split
// over them, and (window framing) each frame's audio encoder: the split allocates nothing either.
TEST(a_threaded_session_allocates_nothing_after_warmup) {
  for (const char* framing : {"window", "stream"}) {
    const int64_t seconds = 24;
    const Stream s(spec_of(framing, 3000), seconds);
    int64_t frames = 0, early = 0;
    const int64_t allocations = allocations_late(s, 1, false, &frames, &early, 2);
    std::printf("  %s, one session on 2 threads, V = 3000, %lld s: %lld frames; allocations from 10 s to the half "
                "%lld, after it %lld\n", framing, static_cast<long long>(seconds), static_cast<long long>(frames),
                static_cast<long long>(early), static_cast<long long>(allocations));
    CHECK(early <= 2);
    CHECK(frames > seconds * 30 - 30);
    CHECK_EQ(allocations, 0);
  }
}

}  // namespace

int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
