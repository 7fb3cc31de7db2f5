// The video frame clock of a model (MeshTalkConfig fps, clock, lookahead, framing): which audio each
// video frame reads. One definition for the whole core (the model, the audio encoders, sessions).
// Mirrors python/meshtalk_fast/audio.py (num_frames, frame_centres, stream_positions) and streaming.py
// (frame_centre): frame k's window is [centre(k) + lookahead - window, centre(k) + lookahead).
//
// The window is the model's audio context (config "audio_context_ms"): 1000 ms (released: 16000 samples,
// 101 mel frames) or 600 ms (the seed's: 9600 samples, 61 mel frames; the seed's "60 x 80" log-mel is one
// frame short of the odd receptive field of any stack of odd kernels). The frame count and centres do
// not depend on it (the released chunking pads (W - spf) / 2, which places the same centres for every
// even W), only the window's start, the look-ahead's range and the stream framing's positions do.
#pragma once

#include <cstdint>

#include "meshtalk/mel.hpp"

namespace meshtalk {

constexpr int64_t kWindowSamples = 16000;          // samples behind one frame's audio code (released 1 s window;
                                                   // the largest audio context)
constexpr int64_t kMaxSamples = int64_t(1) << 40;  // longest stream (~2 years): keeps index math far from overflow
constexpr int64_t kReceptiveField = 101;           // mel frames per conv-stack output at 1 s (= frames of one
                                                   // window; the largest receptive field)
constexpr int64_t kStreamPad = 16000;              // zeros each side of an utterance in the stream framing (every
                                                   // context)
constexpr int64_t kReleasedContextMs = 1000;       // the released audio context

// Audio contexts a model may have: 1000 (released) and 600 ms (python ops/frame_clock.py AUDIO_CONTEXTS).
bool audio_context_supported(int64_t ms) noexcept;
// Throws kInvalidArgument "config audio_context_ms: expected 1000 or 600 (ms), found <ms>" unless supported.
void check_audio_context(int64_t ms);
// Samples of one frame's window (ms * 16: 16000 or 9600) and its mel frames (1 + window / 160: 101 or 61).
constexpr int64_t context_window_samples(int64_t ms) { return ms * kSampleRate / 1000; }
constexpr int64_t context_mel_frames(int64_t ms) { return 1 + context_window_samples(ms) / kHopLength; }

enum class Clock { kReleased, kExact };
enum class Framing { kWindow, kStream };

const char* clock_name(Clock clock) noexcept;        // "released" | "exact" (the config spelling)
const char* framing_name(Framing framing) noexcept;  // "window" | "stream"

struct FrameClock {
  int64_t fps = 30;
  Clock clock = Clock::kReleased;  // released: 16000 // fps samples per frame (drifts); exact: drift-free
  int64_t lookahead = 8000;        // samples after a frame's centre in its window, [0, window]
  Framing framing = Framing::kWindow;
  int64_t window = kWindowSamples; // samples of one frame's window: context_window_samples(audio_context_ms)

  // Throws kInvalidArgument naming the field unless fps is in [1, 16000], window is the window of an
  // audio context (16000 or 9600) and lookahead in [0, window].
  void validate() const;
  int64_t audio_context_ms() const noexcept { return window * 1000 / kSampleRate; }
  int64_t receptive_field() const noexcept { return 1 + window / kHopLength; }  // mel frames of one window
  // Frames of an utterance of n_samples samples; n_samples in [0, kMaxSamples] (else kInvalidArgument).
  int64_t num_frames(int64_t n_samples) const;
  // Sample index of frame k's centre; k in [0, kMaxSamples] (else kInvalidArgument).
  int64_t centre(int64_t k) const;
  // First sample of frame k's window (may be negative: zeros before the utterance).
  int64_t window_start(int64_t k) const { return centre(k) + lookahead - window; }
  // Stream framing: the first of the receptive_field() mel frames of frame k (in the mel of the utterance
  // padded with kStreamPad zeros on both sides).
  int64_t stream_position(int64_t k) const;
  // lookahead + (1 + extra_frames) frames of 16000 / fps samples, rounded up; extra_frames in [0, 64].
  int64_t latency_samples(int64_t extra_frames) const;
};

}  // namespace meshtalk
