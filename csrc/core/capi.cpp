// The C API (meshtalk.h): status and error plumbing, versions, and the model.
#include <cstddef>
#include <cstring>
#include <string>

#include "capi_internal.hpp"
#include "meshtalk/safetensors.hpp"

#ifndef MESHTALK_VERSION
#error "MESHTALK_VERSION must be defined (CMakeLists.txt sets it from pyproject.toml)"
#endif

namespace meshtalk {
namespace capi {
namespace {

// The calling thread's error text. A fixed buffer: recording an error never allocates (it may run
// after std::bad_alloc), and the pointer mt_last_error returns stays put.
constexpr size_t kErrorCapacity = 2048;
thread_local char t_error[kErrorCapacity] = {0};

// Appends text to the buffer at *used; cuts at a UTF-8 character boundary and marks the cut "...".
void append(const char* text, size_t* used) noexcept {
  const size_t room = kErrorCapacity - 1 - *used;  // keep the terminating NUL
  size_t n = std::strlen(text);
  if (n > room) {
    n = room >= 3 ? room - 3 : 0;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xc0) == 0x80) --n;  // not inside a character
    std::memcpy(t_error + *used, text, n);
    *used += n;
    const size_t dots = room - n < 3 ? room - n : 3;
    std::memcpy(t_error + *used, "...", dots);
    *used += dots;
  } else {
    std::memcpy(t_error + *used, text, n);
    *used += n;
  }
  t_error[*used] = '\0';
}

}  // namespace

mt_status status_of(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument: return MT_ERR_INVALID_ARGUMENT;
    case ErrorCode::kInvalidFormat: return MT_ERR_INVALID_FORMAT;
    case ErrorCode::kKeyNotFound: return MT_ERR_KEY_NOT_FOUND;
    case ErrorCode::kFileNotFound: return MT_ERR_FILE_NOT_FOUND;
    case ErrorCode::kIo: return MT_ERR_IO;
  }
  return MT_ERR_INTERNAL;
}

mt_status record_error(mt_status status, const char* function, const char* message) noexcept {
  size_t used = 0;
  t_error[0] = '\0';
  append(function, &used);
  append(": ", &used);
  append(message, &used);
  return status;
}

void clear_error() noexcept { t_error[0] = '\0'; }

const Model& model_of(const mt_model* model, const char* name) {
  require(model, name, "an mt_model handle from mt_model_load");
  if (model->magic != kModelMagic || !model->model)
    throw ApiError(MT_ERR_INVALID_ARGUMENT, std::string(name) + ": expected a live mt_model handle, found a pointer "
                                                                "that is not one (freed, or another type)");
  return *model->model;
}

void check_struct_size(uint32_t found, size_t expected, const char* name) {
  if (found != expected)
    throw ApiError(MT_ERR_INVALID_ARGUMENT,
                   std::string(name) + "->struct_size: expected " + std::to_string(expected) + ", found " +
                       std::to_string(found) + " (initialise the struct with its *_default_params() function, "
                                               "or set struct_size = sizeof the struct; a different size means "
                                               "the header and the library are of different versions)");
}

namespace {

GemmBackend gemm_of(int32_t gemm) {
  if (gemm == MT_GEMM_BUILTIN) return GemmBackend::kBuiltin;
  if (gemm == MT_GEMM_BLAS) {
    if (!blas_available())
      throw ApiError(MT_ERR_INVALID_ARGUMENT,
                     "params->gemm: expected MT_GEMM_BUILTIN (0), this library was built without BLAS; found "
                     "MT_GEMM_BLAS (1)");
    return GemmBackend::kBlas;
  }
  throw ApiError(MT_ERR_INVALID_ARGUMENT, "params->gemm: expected MT_GEMM_BUILTIN (0) or MT_GEMM_BLAS (1), found " +
                                              std::to_string(gemm));
}

// The size of mt_model_params before `weights` was added: still accepted (weights = F32).
constexpr size_t kModelParamsV1 = offsetof(mt_model_params, weights);
// ... and before `audio_context_ms` was added: still accepted (audio_context_ms = 0, the file's).
constexpr size_t kModelParamsV2 = offsetof(mt_model_params, audio_context_ms);

struct LoadOptions {
  GemmBackend backend = GemmBackend::kBuiltin;
  WeightStorage storage = WeightStorage::kF32;
  int64_t audio_context_ms = 0;  // 0: the file's
};

WeightStorage storage_of(int32_t weights) {
  switch (weights) {
    case MT_WEIGHTS_F32: return WeightStorage::kF32;
    case MT_WEIGHTS_BF16: return WeightStorage::kBF16;
    case MT_WEIGHTS_INT8: return WeightStorage::kInt8;
    default: break;
  }
  throw ApiError(MT_ERR_INVALID_ARGUMENT, "params->weights: expected MT_WEIGHTS_F32 (0), MT_WEIGHTS_BF16 (1) or "
                                          "MT_WEIGHTS_INT8 (2), found " + std::to_string(weights));
}

const char* weights_enum_name(WeightStorage storage) {
  switch (storage) {
    case WeightStorage::kBF16: return "MT_WEIGHTS_BF16";
    case WeightStorage::kInt8: return "MT_WEIGHTS_INT8";
    case WeightStorage::kF32: break;
  }
  return "MT_WEIGHTS_F32";
}

LoadOptions options_of(const mt_model_params* params) {
  LoadOptions o;
  if (params == nullptr) return o;
  if (params->struct_size != kModelParamsV1 && params->struct_size != kModelParamsV2)
    check_struct_size(params->struct_size, sizeof(mt_model_params), "params");
  o.backend = gemm_of(params->gemm);
  if (params->struct_size == kModelParamsV1) return o;
  o.storage = storage_of(params->weights);
  const std::string why = storage_unavailable_reason(o.storage, o.backend);
  if (!why.empty())
    throw ApiError(MT_ERR_INVALID_ARGUMENT, std::string("params->weights: ") + weights_enum_name(o.storage) +
                                                " cannot run here: " + why + " (MT_WEIGHTS_F32)");
  if (params->struct_size == kModelParamsV2) return o;
  if (params->audio_context_ms != 0 && !audio_context_supported(params->audio_context_ms))
    throw ApiError(MT_ERR_INVALID_ARGUMENT, "params->audio_context_ms: expected 0 (the file's), 1000 or 600, found " +
                                                std::to_string(params->audio_context_ms));
  o.audio_context_ms = params->audio_context_ms;
  return o;
}

mt_model* new_handle(std::shared_ptr<const Model> model) {
  auto* handle = new mt_model;
  handle->model = std::move(model);
  handle->magic = kModelMagic;
  return handle;
}

}  // namespace
}  // namespace capi
}  // namespace meshtalk

using meshtalk::capi::guard;
using meshtalk::capi::require;

extern "C" {

static_assert(sizeof(mt_status) == sizeof(int), "mt_status must be an int-sized enum");

const char* mt_status_string(mt_status status) {
  // A C caller may pass any int; in C++ a value outside the enumerators must not be read as an
  // mt_status (undefined behaviour), so its bytes are read as an int.
  int value;
  std::memcpy(&value, &status, sizeof value);
  switch (value) {
    case MT_OK: return "ok";
    case MT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case MT_ERR_INVALID_FORMAT: return "invalid format";
    case MT_ERR_KEY_NOT_FOUND: return "key not found";
    case MT_ERR_FILE_NOT_FOUND: return "file not found";
    case MT_ERR_IO: return "I/O error";
    case MT_ERR_OUT_OF_MEMORY: return "out of memory";
    case MT_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case MT_ERR_INVALID_STATE: return "invalid state";
    case MT_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* mt_last_error(void) { return meshtalk::capi::t_error; }

const char* mt_version(void) { return MESHTALK_VERSION; }

int32_t mt_api_version(void) { return MT_API_VERSION; }

mt_model_params mt_model_default_params(void) {
  mt_model_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof(mt_model_params);
  p.gemm = MT_GEMM_BUILTIN;
  p.weights = MT_WEIGHTS_F32;
  p.audio_context_ms = 0;
  return p;
}

mt_status mt_model_load(const char* path, const mt_model_params* params, mt_model** out_model) {
  if (out_model != nullptr) *out_model = nullptr;
  return guard("mt_model_load", [&] {
    require(path, "path", "a NUL-terminated file name");
    require(out_model, "out_model", "a pointer to receive the model");
    const meshtalk::capi::LoadOptions o = meshtalk::capi::options_of(params);
    const meshtalk::SafetensorsFile file = meshtalk::SafetensorsFile::open(path);
    *out_model = meshtalk::capi::new_handle(meshtalk::Model::load(file, o.backend, o.storage, o.audio_context_ms));
  });
}

mt_status mt_model_load_from_memory(const void* data, size_t size, const mt_model_params* params,
                                    mt_model** out_model) {
  if (out_model != nullptr) *out_model = nullptr;
  return guard("mt_model_load_from_memory", [&] {
    if (size != 0) require(data, "data", "a buffer of `size` bytes");
    require(out_model, "out_model", "a pointer to receive the model");
    const meshtalk::capi::LoadOptions o = meshtalk::capi::options_of(params);
    const meshtalk::SafetensorsFile file = meshtalk::SafetensorsFile::from_memory(data, size, "<memory>");
    *out_model = meshtalk::capi::new_handle(meshtalk::Model::load(file, o.backend, o.storage, o.audio_context_ms));
  });
}

void mt_model_free(mt_model* model) {
  if (model == nullptr) return;
  model->magic = 0;
  delete model;
}

mt_status mt_model_get_info(const mt_model* model, mt_model_info* info) {
  return guard("mt_model_get_info", [&] {
    const meshtalk::Model& m = meshtalk::capi::model_of(model);
    require(info, "info", "an mt_model_info with struct_size set");
    const size_t info_v1 = offsetof(mt_model_info, weights);  // the struct before `weights`
    if (info->struct_size != info_v1)
      meshtalk::capi::check_struct_size(info->struct_size, sizeof(mt_model_info), "info");
    const size_t info_size = info->struct_size;
    mt_model_info out;
    std::memset(&out, 0, sizeof out);
    out.struct_size = sizeof(mt_model_info);
    out.sample_rate = static_cast<int32_t>(meshtalk::kSampleRate);
    out.n_vertices = m.config.n_vertices;
    out.heads = m.config.heads;
    out.classes = m.config.classes;
    out.audio_dim = m.config.audio_dim;
    out.fps = static_cast<int32_t>(m.frames.fps);
    out.clock = m.frames.clock == meshtalk::Clock::kExact ? MT_CLOCK_EXACT : MT_CLOCK_RELEASED;
    out.framing = m.frames.framing == meshtalk::Framing::kStream ? MT_FRAMING_STREAM : MT_FRAMING_WINDOW;
    out.gemm = m.backend == meshtalk::GemmBackend::kBlas ? MT_GEMM_BLAS : MT_GEMM_BUILTIN;
    out.window_samples = m.frames.window;
    out.lookahead_samples = m.frames.lookahead;
    out.latency_samples = m.frames.latency_samples(0);
    out.weight_bytes = static_cast<uint64_t>(m.nbytes());
    out.weights = m.storage == meshtalk::WeightStorage::kBF16   ? MT_WEIGHTS_BF16
                  : m.storage == meshtalk::WeightStorage::kInt8 ? MT_WEIGHTS_INT8
                                                                : MT_WEIGHTS_F32;
    out.struct_size = static_cast<uint32_t>(info_size);
    std::memcpy(info, &out, info_size);
  });
}

mt_status mt_model_num_frames(const mt_model* model, int64_t n_samples, int64_t* out_frames) {
  return guard("mt_model_num_frames", [&] {
    const meshtalk::Model& m = meshtalk::capi::model_of(model);
    require(out_frames, "out_frames", "a pointer to receive the frame count");
    *out_frames = m.frames.num_frames(n_samples);
  });
}

mt_status mt_model_latency_samples(const mt_model* model, const mt_session_params* params, int64_t* out_samples) {
  return guard("mt_model_latency_samples", [&] {
    const meshtalk::Model& m = meshtalk::capi::model_of(model);
    require(out_samples, "out_samples", "a pointer to receive the latency");
    const mt_session_params p = params != nullptr ? *params : mt_session_default_params();
    meshtalk::capi::check_struct_size(p.struct_size, sizeof(mt_session_params), "params");
    int64_t delay = 0;
    if (p.smoothing != 0) {
      if (p.smoothing_delay != 4 && p.smoothing_delay != 8)
        throw meshtalk::capi::ApiError(MT_ERR_INVALID_ARGUMENT, "params->smoothing_delay: expected 4 or 8 frames, found " +
                                                                    std::to_string(p.smoothing_delay));
      delay = p.smoothing_delay;
    }
    *out_samples = m.frames.latency_samples(delay);
  });
}

mt_session_params mt_session_default_params(void) {
  mt_session_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof(mt_session_params);
  p.argmax = 0;
  p.seed = 0;
  p.template_vertices = nullptr;
  p.template_size = 0;
  p.smoothing = 0;
  p.smoothing_delay = 4;
  p.forehead_mask = nullptr;
  p.neck_mask = nullptr;
  p.mask_size = 0;
  p.threads = 1;
  return p;
}

mt_batch_params mt_batch_default_params(void) {
  mt_batch_params p;
  std::memset(&p, 0, sizeof p);
  p.struct_size = sizeof(mt_batch_params);
  p.threads = 0;
  p.max_sessions = 64;
  return p;
}

}  // extern "C"
