// The whole model the C API serves (meshtalk.h): sizes, the audio frame clock and the prepared
// weights, loaded from one file written by MeshTalk.save. Immutable after loading and shared
// (std::shared_ptr<const Model>) by every session, batch and call that uses it.
//
// The frame clock is frame_clock.hpp's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "meshtalk/audio_encoder.hpp"
#include "meshtalk/frame_clock.hpp"
#include "meshtalk/gemm.hpp"
#include "meshtalk/safetensors.hpp"
#include "meshtalk/weights.hpp"

namespace meshtalk {

struct Model {
  ModelConfig config;  // sizes
  FrameClock frames;
  GemmBackend backend = GemmBackend::kBuiltin;
  WeightStorage storage = WeightStorage::kF32;  // of the prior's and the decoder's per-frame products
  std::shared_ptr<const ContextWeights> context;  // the prior (sampler.hpp)
  std::shared_ptr<const DecoderWeights> decoder;  // the VertexUnet (decoder.hpp)
  std::shared_ptr<const AudioEncoderWeights> audio;  // the AudioEncoder (audio_encoder.hpp): "encoder.audio_encoder.*"

  size_t nbytes() const;  // memory of the prepared weights

  // A file written by MeshTalk.save: metadata format "meshtalk_fast", format_version "1", the config,
  // every tensor the core needs (context_model.*, vertex_unet.*,
  // encoder.audio_encoder.* with or without its melspec buffers) with the shape the config implies, and no context layer beyond the
  // ones the core knows. A problem with the file throws kInvalidFormat (kKeyNotFound for a missing
  // tensor), naming the file, the item, the expected and the found value; a kBlas backend in a build
  // without BLAS, or a storage this CPU cannot run (storage_unavailable_reason), throws kInvalidArgument.
  // storage: the prior's and the decoder's weights (weights.hpp); the audio encoder stays float32.
  // expected_audio_context_ms: 0 accepts the file's audio context; 1000 or 600 requires it (the two
  // contexts have the same tensor shapes, only the encoder's dilations differ): another throws
  // kInvalidArgument "<file>: audio context mismatch: expected audio_context_ms=<asked> (asked for), found
  // <file's> ms in the model file's config"; a value other than 0, 1000 or 600 throws kInvalidArgument.
  static std::shared_ptr<const Model> load(const SafetensorsFile& file, GemmBackend backend = GemmBackend::kBuiltin,
                                           WeightStorage storage = WeightStorage::kF32,
                                           int64_t expected_audio_context_ms = 0);
};

// The frame clock of a MeshTalk.save file's config (its window from "audio_context_ms", 1000 when absent).
// Throws kInvalidFormat naming the file and the key.
FrameClock read_frame_clock(const SafetensorsFile& file);

}  // namespace meshtalk
