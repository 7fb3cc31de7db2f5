// Fuzz target of the session API: the bytes drive a sequence of mt_session_* / mt_batch_* /
// mt_animate calls on a small model (window or stream framing): creating sessions with good and bad
// parameters, pushes of random sizes (including negative sizes, NULL buffers and non-finite
// samples), pops of frames or of their blendshape weights (mt_session_pop_weights) into buffers of
// exactly the size given, finish, reset, free, batches that sessions
// join and leave. Nothing may crash, leak or touch memory outside the buffers (ASan + UBSan); every
// call returns a documented status (never MT_ERR_INTERNAL) with an error text exactly when it fails,
// and a standalone session that finished has produced mt_model_num_frames(samples pushed) frames.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "meshtalk/meshtalk.h"
#include "model_writer.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_session: %s (last error: \"%s\")\n", what, mt_last_error());
  __builtin_trap();
}

constexpr int64_t kV = 5;  // ModelSpec's n_vertices
constexpr int kSessions = 3;
constexpr int kMaxOps = 64;  // calls per input (the rest of a long input is ignored)

mt_model* load(const meshtalk_test::ModelSpec& spec) {
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  mt_model* model = nullptr;
  if (mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model) != MT_OK) fail("the model did not load");
  return model;
}

mt_model* model_for(uint8_t which) {
  static mt_model* window = load(meshtalk_test::ModelSpec());
  static mt_model* stream = [] {
    meshtalk_test::ModelSpec spec;
    spec.framing = "stream";
    spec.clock = "exact";
    spec.lookahead = 1000;
    spec.fps = 25;
    return load(spec);
  }();
  return which & 1 ? stream : window;
}

// A blendshape solver for both models' frames (V = 5): 3 shapes, weights in [-1, 1], smoothed. Its
// warm-start state runs across sessions, which the solver allows (any frame may follow any frame).
constexpr int64_t kShapes = 3;
mt_blendshape_solver* rig() {
  static mt_blendshape_solver* solver = [] {
    std::vector<float> neutral(kV * 3, 0.25f), deltas(kShapes * kV * 3);
    for (size_t i = 0; i < deltas.size(); ++i) deltas[i] = std::sin(0.7f * static_cast<float>(i * i + 1));
    mt_blendshape_params p = mt_blendshape_default_params();
    p.lo = -1.0f;
    p.smoothing = 0.1f;
    mt_blendshape_solver* s = nullptr;
    if (mt_blendshape_solver_create(kV, kShapes, neutral.data(), deltas.data(), nullptr, &p, &s) != MT_OK)
      fail("the blendshape solver was not created");
    return s;
  }();
  return solver;
}

struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint32_t u16() { return byte() | (uint32_t(byte()) << 8); }
};

void check(mt_status st) {
  if (st == MT_ERR_INTERNAL) fail("MT_ERR_INTERNAL");
  if (static_cast<int>(st) < 0 || static_cast<int>(st) > MT_ERR_INTERNAL) fail("a status outside mt_status");
  if ((st == MT_OK) != (mt_last_error()[0] == '\0')) fail("error text set on success or missing on failure");
}

struct Tracked {
  mt_session* s = nullptr;
  int64_t pushed = 0, popped = 0;
  bool finished = false, batched = false;  // finished standalone; ever in a batch since reset
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader r{data, size};
  mt_model* model = model_for(r.byte());
  static std::vector<float> audio = [] {
    std::vector<float> a(8000);
    uint32_t x = 1;
    for (float& v : a) v = static_cast<float>((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    return a;
  }();
  std::vector<float> templ(kV * 3, 0.25f), forehead(kV, 0.5f), neck(kV, 1.0f), pcm, out;
  Tracked t[kSessions];
  mt_batch* batch = nullptr;
  for (int op = 0; op < kMaxOps && !r.empty(); ++op) {
    const uint8_t code = r.byte();
    Tracked& x = t[r.byte() % kSessions];
    switch (code % 12) {
      case 0: {  // create (replacing the slot's session)
        mt_session_free(x.s);
        x = Tracked();
        mt_session_params p = mt_session_default_params();
        const uint8_t flags = r.byte();
        p.seed = r.u16();
        p.argmax = flags & 1;
        p.template_vertices = flags & 2 ? nullptr : templ.data();
        p.template_size = kV * 3 - (flags & 4 ? 1 : 0);
        p.smoothing = (flags >> 3) & 1;
        p.smoothing_delay = flags & 16 ? 8 : (flags & 32 ? 5 : 4);
        p.forehead_mask = forehead.data();
        p.neck_mask = flags & 64 ? nullptr : neck.data();
        p.mask_size = kV;
        p.threads = flags & 128 ? 2 : 1;
        check(mt_session_create(model, &p, &x.s));
        break;
      }
      case 1:
      case 2: {  // push
        const uint8_t flags = r.byte();
        int64_t n = r.u16() % 2401;
        if (flags % 16 == 0) n = -static_cast<int64_t>(flags);
        pcm.assign(audio.begin(), audio.begin() + (n > 0 ? n : 0));
        if (flags % 16 == 1 && n > 0) pcm[flags % n] = flags & 32 ? NAN : INFINITY;
        const float* buf = flags % 16 == 2 ? nullptr : pcm.data();
        const mt_status st = mt_session_push_audio(x.s, buf, n);
        check(st);
        if (st == MT_OK) x.pushed += n;
        break;
      }
      case 3: {  // pop frames (or, top bit set, their blendshape weights) into a buffer of exactly max_frames
        const uint8_t b = r.byte();
        const bool weights = b & 128;
        int64_t max_frames = (b & 127) % 40;
        if (max_frames == 39) max_frames = -1;
        const int64_t width = weights ? kShapes : kV * 3;
        out.assign(static_cast<size_t>(max_frames > 0 ? max_frames * width : 0), 0.0f);
        int64_t got = -1;
        float* buf = max_frames > 0 ? out.data() : nullptr;
        const mt_status st = weights ? mt_session_pop_weights(x.s, rig(), buf, max_frames, &got)
                                     : mt_session_pop_frames(x.s, buf, max_frames, &got);
        check(st);
        if (st == MT_OK) {
          if (got < 0 || got > max_frames) fail("pop returned more frames than asked");
          for (int64_t i = 0; i < got * width; ++i)
            if (!std::isfinite(out[i]) || (weights && (out[i] < -1.0f || out[i] > 1.0f)))
              fail(weights ? "a weight outside its bounds" : "a non-finite coordinate");
          x.popped += got;
        }
        break;
      }
      case 4: {  // finish; a standalone session then holds every frame of its stream
        const mt_status st = mt_session_finish(x.s);
        check(st);
        if (st == MT_OK && !x.batched) {
          int64_t available = -1, expected = -1;
          check(mt_session_frames_available(x.s, &available));
          check(mt_model_num_frames(model, x.pushed, &expected));
          if (x.popped + available != expected) fail("a finished session lacks frames");
        }
        break;
      }
      case 5: {
        const mt_status st = mt_session_reset(x.s);
        check(st);
        if (st == MT_OK) {
          x.pushed = x.popped = 0;
          x.batched = false;
        }
        break;
      }
      case 6:
        mt_session_free(x.s);
        x = Tracked();
        break;
      case 7: {
        mt_batch_free(batch);
        batch = nullptr;
        mt_batch_params p = mt_batch_default_params();
        p.threads = 1 + r.byte() % 2;
        p.max_sessions = r.byte() % 4;
        check(mt_batch_create(model, &p, &batch));
        break;
      }
      case 8: {
        const mt_status st = mt_batch_add(batch, x.s);
        check(st);
        if (st == MT_OK) x.batched = true;
        break;
      }
      case 9:
        check(mt_batch_remove(batch, x.s));
        break;
      case 10: {
        int64_t frames = -1;
        check(mt_batch_step(batch, &frames));
        break;
      }
      default: {  // offline
        mt_session_params p = mt_session_default_params();
        p.template_vertices = templ.data();
        p.template_size = kV * 3;
        p.smoothing = r.byte() & 1;
        p.forehead_mask = forehead.data();
        p.neck_mask = neck.data();
        p.mask_size = kV;
        const int64_t n = r.u16() % 4001, capacity = r.byte() % 12;
        out.assign(static_cast<size_t>(capacity * kV * 3), 0.0f);
        int64_t frames = -1, expected = -1;
        const mt_status st = mt_animate(model, audio.data(), n, &p, capacity ? out.data() : nullptr, capacity, &frames);
        check(st);
        check(mt_model_num_frames(model, n, &expected));
        if ((st == MT_OK || st == MT_ERR_BUFFER_TOO_SMALL) && frames != expected) fail("mt_animate's frame count");
        break;
      }
    }
  }
  // Freed in both orders: sessions first or the batch first.
  if (size % 2) mt_batch_free(batch);
  for (Tracked& x : t) mt_session_free(x.s);
  if (size % 2 == 0) mt_batch_free(batch);
  return 0;
}
