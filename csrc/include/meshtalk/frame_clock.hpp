// The video frame clock of a model (MeshTalkConfig fps, clock, lookahead, framing): which audio each
// video frame reads. One definition for the whole core (the model, the audio encoders, sessions).
// Mirrors python/meshtalk_fast/audio.py (num_frames, frame_centres, stream_positions) and streaming.py
// (frame_centre): frame k's window is [centre(k) + lookahead - 16000, centre(k) + lookahead).
#pragma once

#include <cstdint>

#include "meshtalk/mel.hpp"

namespace meshtalk {

constexpr int64_t kWindowSamples = 16000;          // samples behind one frame's audio code (1 s window)
constexpr int64_t kMaxSamples = int64_t(1) << 40;  // longest stream (~2 years): keeps index math far from overflow
constexpr int64_t kReceptiveField = 101;           // mel frames per conv-stack output (= frames of one window)
constexpr int64_t kStreamPad = 16000;              // zeros each side of an utterance in the stream framing

enum class Clock { kReleased, kExact };
enum class Framing { kWindow, kStream };

const char* clock_name(Clock clock) noexcept;        // "released" | "exact" (the config spelling)
const char* framing_name(Framing framing) noexcept;  // "window" | "stream"

struct FrameClock {
  int64_t fps = 30;
  Clock clock = Clock::kReleased;  // released: 16000 // fps samples per frame (drifts); exact: drift-free
  int64_t lookahead = 8000;        // samples after a frame's centre in its window, [0, 16000]
  Framing framing = Framing::kWindow;

  // Throws kInvalidArgument naming the field unless fps is in [1, 16000] and lookahead in [0, 16000].
  void validate() const;
  // Frames of an utterance of n_samples samples; n_samples in [0, kMaxSamples] (else kInvalidArgument).
  int64_t num_frames(int64_t n_samples) const;
  // Sample index of frame k's centre; k in [0, kMaxSamples] (else kInvalidArgument).
  int64_t centre(int64_t k) const;
  // First sample of frame k's 1 s window (may be negative: zeros before the utterance).
  int64_t window_start(int64_t k) const { return centre(k) + lookahead - kWindowSamples; }
  // Stream framing: the first of the 101 mel frames of frame k (in the mel of the utterance padded
  // with kStreamPad zeros on both sides).
  int64_t stream_position(int64_t k) const;
  // lookahead + (1 + extra_frames) frames of 16000 / fps samples, rounded up; extra_frames in [0, 64].
  int64_t latency_samples(int64_t extra_frames) const;
};

}  // namespace meshtalk
