// The C API (meshtalk.h): the blendshape solver handle over meshtalk::BlendshapeSolver
// (blendshapes.hpp). mt_session_pop_weights is in capi_session.cpp, next to the session it pops.
#include <cstring>
#include <memory>
#include <string>

#include "capi_internal.hpp"

namespace meshtalk {
namespace capi {
namespace {

constexpr uint32_t kSolverMagic = 0x53484c42u;  // "BLHS"; cleared when the handle is freed

BlendshapeParams params_of(const mt_blendshape_params* params) {
  const mt_blendshape_params p = params != nullptr ? *params : mt_blendshape_default_params();
  check_struct_size(p.struct_size, sizeof(mt_blendshape_params), "params");
  BlendshapeParams out;
  out.lo = p.lo;
  out.hi = p.hi;
  out.smoothing = p.smoothing;
  return out;
}

void create(int64_t V, int64_t K, const float* neutral, const float* deltas, const float* vertex_weights,
            const mt_blendshape_params* params, mt_blendshape_solver** out_solver) {
  require(out_solver, "out_solver", "a pointer to receive the solver");
  require(neutral, "neutral", "the rig's rest shape, n_vertices * 3 floats");
  require(deltas, "deltas", "the shapes' offsets, n_shapes * n_vertices * 3 floats");
  const BlendshapeParams p = params_of(params);
  auto handle = std::make_unique<mt_blendshape_solver>();
  try {
    handle->solver = std::make_unique<BlendshapeSolver>(V, K, neutral, deltas, vertex_weights, p);
  } catch (const Error& e) {  // the core names bounds and smoothing as the params fields they are
    std::string message = e.what();
    for (const char* field : {"bounds (lo, hi)", "smoothing"})
      if (message.rfind(field, 0) == 0) message = "params->" + message;
    if (message.rfind("weights_mask", 0) == 0) message = "vertex_weights" + message.substr(std::strlen("weights_mask"));
    throw ApiError(MT_ERR_INVALID_ARGUMENT, message);
  }
  handle->frame.assign(static_cast<size_t>(V * 3), 0.0f);
  handle->magic = kSolverMagic;
  *out_solver = handle.release();
}

}  // namespace

mt_blendshape_solver& blendshape_solver_of(const mt_blendshape_solver* solver, const char* name) {
  require(solver, name, "an mt_blendshape_solver handle from mt_blendshape_solver_create");
  if (solver->magic != kSolverMagic || !solver->solver)
    throw ApiError(MT_ERR_INVALID_ARGUMENT, std::string(name) + ": expected a live mt_blendshape_solver handle, found "
                                                                "a pointer that is not one (freed, or another type)");
  // The handle is the caller's object; the const of a getter's argument is the API's promise not to
  // change it, which the getters keep.
  return const_cast<mt_blendshape_solver&>(*solver);
}

}  // namespace capi
}  // namespace meshtalk

using meshtalk::capi::guard;
using meshtalk::capi::require;

extern "C" {

mt_blendshape_params mt_blendshape_default_params(void) {
  mt_blendshape_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof(mt_blendshape_params);
  p.lo = 0.0f;
  p.hi = 1.0f;
  p.smoothing = 0.0f;
  return p;
}

mt_status mt_blendshape_solver_create(int64_t n_vertices, int64_t n_shapes, const float* neutral, const float* deltas,
                                      const float* vertex_weights, const mt_blendshape_params* params,
                                      mt_blendshape_solver** out_solver) {
  if (out_solver != nullptr) *out_solver = nullptr;
  return guard("mt_blendshape_solver_create", [&] {
    meshtalk::capi::create(n_vertices, n_shapes, neutral, deltas, vertex_weights, params, out_solver);
  });
}

mt_status mt_blendshape_solver_create_for_model(const mt_model* model, int64_t n_shapes, const float* neutral,
                                                const float* deltas, const float* vertex_weights,
                                                const mt_blendshape_params* params, mt_blendshape_solver** out_solver) {
  if (out_solver != nullptr) *out_solver = nullptr;
  return guard("mt_blendshape_solver_create_for_model", [&] {
    const int64_t V = meshtalk::capi::model_of(model).config.n_vertices;
    meshtalk::capi::create(V, n_shapes, neutral, deltas, vertex_weights, params, out_solver);
  });
}

void mt_blendshape_solver_free(mt_blendshape_solver* solver) {
  if (solver == nullptr || solver->magic != meshtalk::capi::kSolverMagic) return;
  solver->magic = 0;
  delete solver;
}

mt_status mt_blendshape_solver_get_info(const mt_blendshape_solver* solver, mt_blendshape_solver_info* info) {
  return guard("mt_blendshape_solver_get_info", [&] {
    const meshtalk::BlendshapeSolver& s = *meshtalk::capi::blendshape_solver_of(solver).solver;
    require(info, "info", "an mt_blendshape_solver_info with struct_size set");
    meshtalk::capi::check_struct_size(info->struct_size, sizeof(mt_blendshape_solver_info), "info");
    mt_blendshape_solver_info out;
    std::memset(&out, 0, sizeof out);
    out.struct_size = sizeof(mt_blendshape_solver_info);
    out.n_vertices = s.n_vertices();
    out.n_shapes = s.n_shapes();
    out.condition = s.condition();
    out.frames_solved = s.frames_solved();
    out.unconverged_frames = s.unconverged_frames();
    *info = out;
  });
}

mt_status mt_blendshape_solver_solve(mt_blendshape_solver* solver, const float* frames, int64_t n_frames,
                                     float* out_weights) {
  return guard("mt_blendshape_solver_solve", [&] {
    meshtalk::BlendshapeSolver& s = *meshtalk::capi::blendshape_solver_of(solver).solver;
    if (n_frames < 0)
      throw meshtalk::capi::ApiError(MT_ERR_INVALID_ARGUMENT,
                                     "n_frames: expected a count >= 0, found " + std::to_string(n_frames));
    if (n_frames > 0) {
      require(frames, "frames", "a buffer of n_frames * n_vertices * 3 floats (NULL only when n_frames is 0)");
      require(out_weights, "out_weights", "a buffer of n_frames * n_shapes floats (NULL only when n_frames is 0)");
    }
    s.solve(frames, n_frames, out_weights);
  });
}

mt_status mt_blendshape_solver_reset(mt_blendshape_solver* solver) {
  return guard("mt_blendshape_solver_reset", [&] { meshtalk::capi::blendshape_solver_of(solver).solver->reset(); });
}

}  // extern "C"
