// The whole model the C API serves (meshtalk.h): sizes, the audio frame clock and the prepared
// weights, loaded from one file written by MeshTalk.save. Immutable after loading and shared
// (std::shared_ptr<const Model>) by every session, batch and call that uses it.
//
// The frame clock mirrors python/meshtalk_fast/audio.py (num_frames) and streaming.py
// (frame_centre): frame k's audio window is [centre(k) + lookahead - 16000, centre(k) + lookahead).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "meshtalk/gemm.hpp"
#include "meshtalk/safetensors.hpp"
#include "meshtalk/weights.hpp"

namespace meshtalk {

constexpr int64_t kSampleRate = 16000;     // samples per second of the audio every model reads
constexpr int64_t kWindowSamples = 16000;  // samples behind one frame's audio code (1 s)
constexpr int64_t kMaxSamples = int64_t(1) << 40;  // longest stream (~2 years): keeps index math far from overflow

enum class Clock { kReleased, kExact };
enum class Framing { kWindow, kStream };

const char* clock_name(Clock clock) noexcept;        // "released" | "exact" (the config spelling)
const char* framing_name(Framing framing) noexcept;  // "window" | "stream"

// MeshTalkConfig's fps, clock, lookahead and framing.
struct FrameClock {
  int64_t fps = 30;
  Clock clock = Clock::kReleased;
  int64_t lookahead = 8000;  // samples after a frame's centre in its window, [0, 16000]
  Framing framing = Framing::kWindow;

  // Throws kInvalidArgument naming the field unless fps is in [1, 16000] and lookahead in [0, 16000].
  void validate() const;
  // Frames of an utterance of n_samples samples; n_samples in [0, kMaxSamples] (else kInvalidArgument).
  int64_t num_frames(int64_t n_samples) const;
  // Sample index of frame k's centre; k in [0, kMaxSamples] (else kInvalidArgument).
  int64_t centre(int64_t k) const;
  // lookahead + (1 + extra_frames) frames of 16000 / fps samples, rounded up; extra_frames in [0, 64].
  int64_t latency_samples(int64_t extra_frames) const;
};

struct Model {
  ModelConfig config;  // sizes
  FrameClock frames;
  GemmBackend backend = GemmBackend::kBuiltin;
  std::shared_ptr<const ContextWeights> context;  // the prior (sampler.hpp)
  std::shared_ptr<const DecoderWeights> decoder;  // the VertexUnet (decoder.hpp)

  size_t nbytes() const;  // memory of the prepared weights

  // A file written by MeshTalk.save: metadata format "meshtalk_fast", format_version "1", the config,
  // every tensor the core needs with the shape the config implies, and no context layer beyond the
  // ones the core knows. A problem with the file throws kInvalidFormat (kKeyNotFound for a missing
  // tensor), naming the file, the item, the expected and the found value; a kBlas backend in a build
  // without BLAS throws kInvalidArgument.
  static std::shared_ptr<const Model> load(const SafetensorsFile& file, GemmBackend backend = GemmBackend::kBuiltin);
};

// The frame clock of a MeshTalk.save file's config. Throws kInvalidFormat naming the file and the key.
FrameClock read_frame_clock(const SafetensorsFile& file);

}  // namespace meshtalk
