// The C API (meshtalk.h): sessions, batches and mt_animate over meshtalk::Session / Batch
// (session.hpp).
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "capi_internal.hpp"
#include "meshtalk/session.hpp"

struct mt_session {
  uint32_t magic = 0;
  std::unique_ptr<meshtalk::Session> session;
};

struct mt_batch {
  uint32_t magic = 0;
  std::unique_ptr<meshtalk::Batch> batch;
};

namespace meshtalk {
namespace capi {
namespace {

constexpr uint32_t kSessionMagic = 0x53455353u;  // "SESS"; cleared when the handle is freed
constexpr uint32_t kBatchMagic = 0x42415443u;    // "BATC"

Session& session_of(const mt_session* s, const char* name = "session") {
  require(s, name, "an mt_session handle from mt_session_create");
  if (s->magic != kSessionMagic || !s->session)
    throw ApiError(MT_ERR_INVALID_ARGUMENT, std::string(name) + ": expected a live mt_session handle, found a pointer "
                                                                "that is not one (freed, or another type)");
  return *s->session;
}

Batch& batch_of(const mt_batch* b) {
  require(b, "batch", "an mt_batch handle from mt_batch_create");
  if (b->magic != kBatchMagic || !b->batch)
    throw ApiError(MT_ERR_INVALID_ARGUMENT,
                   "batch: expected a live mt_batch handle, found a pointer that is not one (freed, or another type)");
  return *b->batch;
}

std::shared_ptr<const Model> shared_model_of(const mt_model* model) {
  model_of(model);
  return model->model;
}

void invalid(const std::string& message) { throw ApiError(MT_ERR_INVALID_ARGUMENT, message); }

// The checked, copied parameters of mt_session_create / mt_animate.
SessionParams session_params(const Model& m, const mt_session_params* params) {
  require(params, "params", "an mt_session_params from mt_session_default_params() with template_vertices set");
  check_struct_size(params->struct_size, sizeof(mt_session_params), "params");
  const mt_session_params& p = *params;
  const int64_t V = m.config.n_vertices;
  SessionParams out;
  out.argmax = p.argmax != 0;
  out.seed = p.seed;
  require(p.template_vertices, "params->template_vertices", "the neutral face, n_vertices * 3 floats");
  if (p.template_size != V * 3)
    invalid("params->template_size: expected " + std::to_string(V * 3) + " floats (n_vertices * 3), found " +
            std::to_string(p.template_size));
  out.templ.assign(p.template_vertices, p.template_vertices + V * 3);
  out.smoothing = p.smoothing != 0;
  if (out.smoothing) {
    if (p.smoothing_delay != 4 && p.smoothing_delay != 8)
      invalid("params->smoothing_delay: expected 4 or 8 frames, found " + std::to_string(p.smoothing_delay));
    out.smoothing_delay = p.smoothing_delay;
    require(p.forehead_mask, "params->forehead_mask", "n_vertices weights (smoothing is set)");
    require(p.neck_mask, "params->neck_mask", "n_vertices weights (smoothing is set)");
    if (p.mask_size != V)
      invalid("params->mask_size: expected " + std::to_string(V) + " (n_vertices), found " + std::to_string(p.mask_size));
    out.forehead.assign(p.forehead_mask, p.forehead_mask + V);
    out.neck.assign(p.neck_mask, p.neck_mask + V);
  }
  if (p.threads < 0 || p.threads > 4096)
    invalid("params->threads: expected 0 (every core) or 1 .. 4096, found " + std::to_string(p.threads));
  out.threads = p.threads;
  return out;
}

// guard(), and the failure's text kept in the session too (mt_session_error).
template <class Body>
mt_status session_guard(const char* function, const mt_session* handle, Body&& body) noexcept {
  const mt_status status = guard(function, std::forward<Body>(body));
  if (status != MT_OK && handle != nullptr && handle->magic == kSessionMagic && handle->session) {
    try {
      handle->session->set_error(mt_last_error());
    } catch (...) {
    }
  }
  return status;
}

}  // namespace
}  // namespace capi
}  // namespace meshtalk

using meshtalk::capi::ApiError;
using meshtalk::capi::guard;
using meshtalk::capi::require;
using meshtalk::capi::session_guard;

extern "C" {

mt_status mt_session_create(const mt_model* model, const mt_session_params* params, mt_session** out_session) {
  if (out_session != nullptr) *out_session = nullptr;
  return guard("mt_session_create", [&] {
    std::shared_ptr<const meshtalk::Model> m = meshtalk::capi::shared_model_of(model);
    require(out_session, "out_session", "a pointer to receive the session");
    meshtalk::SessionParams p = meshtalk::capi::session_params(*m, params);
    auto handle = std::make_unique<mt_session>();
    handle->session = std::make_unique<meshtalk::Session>(std::move(m), std::move(p));
    handle->magic = meshtalk::capi::kSessionMagic;
    *out_session = handle.release();
  });
}

void mt_session_free(mt_session* session) {
  if (session == nullptr || session->magic != meshtalk::capi::kSessionMagic) return;
  session->magic = 0;
  delete session;  // ~Session leaves its batch
}

mt_status mt_session_push_audio(mt_session* session, const float* pcm, int64_t n_samples) {
  return session_guard("mt_session_push_audio", session, [&] {
    meshtalk::Session& s = meshtalk::capi::session_of(session);
    if (n_samples < 0) meshtalk::capi::invalid("n_samples: expected a count >= 0, found " + std::to_string(n_samples));
    if (n_samples > 0) require(pcm, "pcm", "a buffer of n_samples floats (NULL only when n_samples is 0)");
    s.push_audio(pcm, n_samples);
  });
}

mt_status mt_session_frames_available(const mt_session* session, int64_t* out_frames) {
  return session_guard("mt_session_frames_available", session, [&] {
    const meshtalk::Session& s = meshtalk::capi::session_of(session);
    require(out_frames, "out_frames", "a pointer to receive the frame count");
    *out_frames = s.frames_available();
  });
}

mt_status mt_session_pop_frames(mt_session* session, float* out, int64_t max_frames, int64_t* out_frames) {
  return session_guard("mt_session_pop_frames", session, [&] {
    meshtalk::Session& s = meshtalk::capi::session_of(session);
    if (max_frames < 0) meshtalk::capi::invalid("max_frames: expected a count >= 0, found " + std::to_string(max_frames));
    if (max_frames > 0) require(out, "out", "a buffer of max_frames * n_vertices * 3 floats");
    require(out_frames, "out_frames", "a pointer to receive the number of frames written");
    *out_frames = s.pop_frames(out, max_frames);
  });
}

mt_status mt_session_pop_weights(mt_session* session, mt_blendshape_solver* solver, float* out_weights,
                                 int64_t max_frames, int64_t* out_frames) {
  int64_t written = 0;
  const mt_status status = session_guard("mt_session_pop_weights", session, [&] {
    meshtalk::Session& s = meshtalk::capi::session_of(session);
    mt_blendshape_solver& h = meshtalk::capi::blendshape_solver_of(solver);
    if (max_frames < 0) meshtalk::capi::invalid("max_frames: expected a count >= 0, found " + std::to_string(max_frames));
    if (max_frames > 0) require(out_weights, "out_weights", "a buffer of max_frames * n_shapes floats");
    require(out_frames, "out_frames", "a pointer to receive the number of frames solved");
    if (s.frame_floats() != 3 * h.solver->n_vertices())
      meshtalk::capi::invalid("solver: expected a solver for the session's model's " + std::to_string(s.frame_floats() / 3) +
                              " vertices, found one for " + std::to_string(h.solver->n_vertices()));
    const int64_t K = h.solver->n_shapes();
    while (written < max_frames && s.pop_frames(h.frame.data(), 1) == 1) {
      ++written;  // the frame is consumed even if its solve fails (see meshtalk.h)
      h.solver->solve(h.frame.data(), 1, out_weights + (written - 1) * K);
    }
    *out_frames = written;
  });
  if (status != MT_OK && out_frames != nullptr && written > 0) *out_frames = written - 1;
  return status;
}

mt_status mt_session_finish(mt_session* session) {
  return session_guard("mt_session_finish", session, [&] { meshtalk::capi::session_of(session).finish(); });
}

mt_status mt_session_reset(mt_session* session) {
  return session_guard("mt_session_reset", session, [&] { meshtalk::capi::session_of(session).reset(); });
}

const char* mt_session_error(const mt_session* session) {
  if (session == nullptr || session->magic != meshtalk::capi::kSessionMagic || !session->session) return "";
  return session->session->error().c_str();
}

mt_status mt_batch_create(const mt_model* model, const mt_batch_params* params, mt_batch** out_batch) {
  if (out_batch != nullptr) *out_batch = nullptr;
  return guard("mt_batch_create", [&] {
    std::shared_ptr<const meshtalk::Model> m = meshtalk::capi::shared_model_of(model);
    require(out_batch, "out_batch", "a pointer to receive the batch");
    const mt_batch_params p = params != nullptr ? *params : mt_batch_default_params();
    meshtalk::capi::check_struct_size(p.struct_size, sizeof(mt_batch_params), "params");
    if (p.threads < 0 || p.threads > 4096)
      meshtalk::capi::invalid("params->threads: expected 0 (every core) or 1 .. 4096, found " + std::to_string(p.threads));
    if (p.max_sessions < 1 || p.max_sessions > 4096)
      meshtalk::capi::invalid("params->max_sessions: expected 1 .. 4096, found " + std::to_string(p.max_sessions));
    auto handle = std::make_unique<mt_batch>();
    handle->batch = std::make_unique<meshtalk::Batch>(std::move(m), p.max_sessions, p.threads);
    handle->magic = meshtalk::capi::kBatchMagic;
    *out_batch = handle.release();
  });
}

void mt_batch_free(mt_batch* batch) {
  if (batch == nullptr || batch->magic != meshtalk::capi::kBatchMagic) return;
  batch->magic = 0;
  delete batch;  // ~Batch detaches its sessions
}

mt_status mt_batch_add(mt_batch* batch, mt_session* session) {
  return guard("mt_batch_add", [&] {
    meshtalk::Batch& b = meshtalk::capi::batch_of(batch);
    meshtalk::Session& s = meshtalk::capi::session_of(session);
    b.add(s);
  });
}

mt_status mt_batch_remove(mt_batch* batch, mt_session* session) {
  return guard("mt_batch_remove", [&] {
    meshtalk::Batch& b = meshtalk::capi::batch_of(batch);
    meshtalk::Session& s = meshtalk::capi::session_of(session);
    b.remove(s);
  });
}

mt_status mt_batch_size(const mt_batch* batch, int64_t* out_sessions) {
  return guard("mt_batch_size", [&] {
    const meshtalk::Batch& b = meshtalk::capi::batch_of(batch);
    require(out_sessions, "out_sessions", "a pointer to receive the session count");
    *out_sessions = b.size();
  });
}

mt_status mt_batch_step(mt_batch* batch, int64_t* out_frames) {
  return guard("mt_batch_step", [&] {
    meshtalk::Batch& b = meshtalk::capi::batch_of(batch);
    const meshtalk::Batch::StepResult r = b.step();
    if (out_frames != nullptr) *out_frames = r.frames;
    if (r.failed != nullptr) {
      const std::string& e = r.failed->error();
      const bool oom = e.find("bad_alloc") != std::string::npos || e.find("out of memory") != std::string::npos;
      char where[64];
      std::snprintf(where, sizeof where, "session #%lld (mt_session %p): ", static_cast<long long>(r.failed_index),
                    static_cast<const void*>(r.failed));
      throw ApiError(oom ? MT_ERR_OUT_OF_MEMORY : MT_ERR_INTERNAL, where + e);
    }
  });
}

mt_status mt_animate(const mt_model* model, const float* pcm, int64_t n_samples, const mt_session_params* params,
                     float* out, int64_t capacity_frames, int64_t* out_frames) {
  return guard("mt_animate", [&] {
    std::shared_ptr<const meshtalk::Model> m = meshtalk::capi::shared_model_of(model);
    require(out_frames, "out_frames", "a pointer to receive the frame count");
    if (n_samples < 0 || n_samples > meshtalk::kMaxSamples)
      meshtalk::capi::invalid("n_samples: expected a count in [0, 2^40], found " + std::to_string(n_samples));
    if (n_samples > 0) require(pcm, "pcm", "a buffer of n_samples floats (NULL only when n_samples is 0)");
    if (capacity_frames < 0)
      meshtalk::capi::invalid("capacity_frames: expected a count >= 0, found " + std::to_string(capacity_frames));
    if (capacity_frames > 0) require(out, "out", "a buffer of capacity_frames * n_vertices * 3 floats");
    meshtalk::SessionParams p = meshtalk::capi::session_params(*m, params);
    const int64_t frames = m->frames.num_frames(n_samples);
    *out_frames = frames;
    if (capacity_frames < frames)
      throw ApiError(MT_ERR_BUFFER_TOO_SMALL, "capacity_frames: expected at least " + std::to_string(frames) +
                                                  " frames (mt_model_num_frames), found " + std::to_string(capacity_frames));
    meshtalk::animate(std::move(m), p, pcm, n_samples, out, capacity_frames);
  });
}

}  // extern "C"
