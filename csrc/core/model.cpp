// Model: a MeshTalk.save file's config, frame clock and prepared weights (model.hpp).
#include "meshtalk/model.hpp"

#include <string>
#include <utility>

#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

constexpr const char* kFormatName = "meshtalk_fast";  // checkpoint.py FORMAT_NAME
constexpr const char* kFormatVersion = "1";           // checkpoint.py FORMAT_VERSION

std::string clip(const std::string& s, size_t max = 60) { return s.size() <= max ? s : s.substr(0, max) + "..."; }

void check_metadata(const SafetensorsFile& file, const char* key, const char* expected) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end() || it->second != expected)
    throw Error(ErrorCode::kInvalidFormat,
                "safetensors '" + file.label() + "': metadata '" + key + "': expected \"" + expected +
                    "\" (a file written by MeshTalk.save), found " +
                    (it == file.metadata().end() ? std::string("none") : "\"" + clip(it->second) + "\""));
}

// MeshTalk.save writes context_model.context_layers.0 .. n-1; a file with more layers is a model this
// core cannot run (it would silently ignore them).
void check_context_layers(const SafetensorsFile& file, size_t known) {
  const std::string prefix = "context_model.context_layers.";
  for (const std::string& name : file.names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    size_t i = prefix.size(), layer = 0;
    bool digits = false;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9' && layer < 1000000) {
      layer = layer * 10 + static_cast<size_t>(name[i++] - '0');
      digits = true;
    }
    if (!digits || layer >= known)
      throw Error(ErrorCode::kInvalidFormat, "safetensors '" + file.label() + "': unexpected tensor '" +
                                                 clip(name) + "': this core runs " + std::to_string(known) +
                                                 " context layers (context_layers.0 .. " +
                                                 std::to_string(known - 1) + ")");
  }
}

}  // namespace

FrameClock read_frame_clock(const SafetensorsFile& file) {
  FrameClock c;
  const std::string where = "safetensors '" + file.label() + "': metadata 'config' entry ";
  c.fps = read_config_integer(file, "fps");
  c.window = context_window_samples(read_model_config(file).audio_context_ms);
  c.lookahead = read_config_integer(file, "lookahead");
  const std::string clock = read_config_string(file, "clock");
  const std::string framing = read_config_string(file, "framing");
  if (clock == "released") c.clock = Clock::kReleased;
  else if (clock == "exact") c.clock = Clock::kExact;
  else throw Error(ErrorCode::kInvalidFormat, where + "'clock': expected \"released\" or \"exact\", found \"" +
                                                  clip(clock) + "\"");
  if (framing == "window") c.framing = Framing::kWindow;
  else if (framing == "stream") c.framing = Framing::kStream;
  else throw Error(ErrorCode::kInvalidFormat, where + "'framing': expected \"window\" or \"stream\", found \"" +
                                                  clip(framing) + "\"");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidFormat, "safetensors '" + file.label() + "': " + e.what());
  }
  return c;
}

size_t Model::nbytes() const {
  return (context ? context->nbytes() : 0) + (decoder ? decoder->nbytes() : 0) + (audio ? audio->nbytes() : 0);
}

std::shared_ptr<const Model> Model::load(const SafetensorsFile& file, GemmBackend backend, WeightStorage storage,
                                         int64_t expected_audio_context_ms) {
  if (expected_audio_context_ms != 0 && !audio_context_supported(expected_audio_context_ms))
    throw_mismatch("expected audio_context_ms", "0 (the file's), 1000 or 600",
                   std::to_string(expected_audio_context_ms));
  if (backend == GemmBackend::kBlas && !blas_available())
    throw_mismatch("gemm backend", "builtin (this core was built without BLAS)", "blas");
  const std::string why = storage_unavailable_reason(storage, backend);
  if (!why.empty()) throw Error(ErrorCode::kInvalidArgument, why);
  const std::string label = "safetensors '" + file.label() + "'";
  auto model = std::make_shared<Model>();
  model->backend = backend;
  model->storage = storage;
  // A wrong shape or dtype, or a config value out of range, is a problem of the file here.
  auto file_errors = [&](const auto& body) {
    try {
      body();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) throw;
      const std::string what = e.what();
      throw Error(ErrorCode::kInvalidFormat, what.compare(0, label.size(), label) == 0 ? what : label + ": " + what);
    }
  };
  file_errors([&] {
    check_metadata(file, "format", kFormatName);
    check_metadata(file, "format_version", kFormatVersion);
    model->config = read_model_config(file);
    model->frames = read_frame_clock(file);
  });
  // What the caller asked for, not a problem of the file: kInvalidArgument naming both.
  if (expected_audio_context_ms != 0 && model->config.audio_context_ms != expected_audio_context_ms)
    throw Error(ErrorCode::kInvalidArgument,
                label + ": audio context mismatch: expected audio_context_ms=" +
                    std::to_string(expected_audio_context_ms) + " (asked for), found " +
                    std::to_string(model->config.audio_context_ms) + " ms in the model file's config (its audio "
                    "encoder reads " + std::to_string(model->frames.window) + "-sample windows)");
  file_errors([&] {
    check_context_layers(file, model->config.dilations.size());
    const FileSource source(file);
    model->context = ContextWeights::load(source, model->config, "context_model.", backend, storage);
    model->decoder = DecoderWeights::load(source, model->config, backend, "vertex_unet.", storage);
    model->audio = AudioEncoderWeights::load(source, model->config.audio_dim, backend, "encoder.audio_encoder.",
                                             model->config.audio_context_ms);
  });
  return model;
}

}  // namespace meshtalk
