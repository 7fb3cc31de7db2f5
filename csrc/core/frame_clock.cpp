// The video frame clock (frame_clock.hpp).
#include "meshtalk/frame_clock.hpp"

#include <string>

#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

const char* clock_name(Clock clock) noexcept { return clock == Clock::kExact ? "exact" : "released"; }
const char* framing_name(Framing framing) noexcept { return framing == Framing::kStream ? "stream" : "window"; }

bool audio_context_supported(int64_t ms) noexcept { return ms == 1000 || ms == 600; }

void check_audio_context(int64_t ms) {
  if (!audio_context_supported(ms))
    throw_mismatch("config audio_context_ms", "1000 or 600 (ms of audio per frame)", std::to_string(ms));
}

void FrameClock::validate() const {
  if (fps < 1 || fps > kSampleRate)
    throw_mismatch("config fps", "an integer in [1, " + std::to_string(kSampleRate) + "]", std::to_string(fps));
  if (window != context_window_samples(1000) && window != context_window_samples(600))
    throw_mismatch("frame clock window", "16000 or 9600 samples (an audio context of 1000 or 600 ms)",
                   std::to_string(window));
  if (lookahead < 0 || lookahead > window)
    throw_mismatch("config lookahead", "an integer in [0, " + std::to_string(window) + "] samples",
                   std::to_string(lookahead));
}

int64_t FrameClock::num_frames(int64_t n_samples) const {
  if (n_samples < 0 || n_samples > kMaxSamples)
    throw_mismatch("n_samples", "a sample count in [0, 2^40]", std::to_string(n_samples));
  if (clock == Clock::kExact) return n_samples * fps / kSampleRate;
  const int64_t spf = kSampleRate / fps;
  const int64_t pad = (kWindowSamples - spf) / 2;
  const int64_t span = n_samples + 2 * pad - kWindowSamples;  // window starts lie in [0, span)
  return span <= 0 ? 0 : (span + spf - 1) / spf;
}

int64_t FrameClock::centre(int64_t k) const {
  if (k < 0 || k > kMaxSamples) throw_mismatch("frame index", "an index in [0, 2^40]", std::to_string(k));
  if (clock == Clock::kExact) return ((2 * k + 1) * kSampleRate + fps) / (2 * fps);
  const int64_t spf = kSampleRate / fps;
  return kWindowSamples / 2 - (kWindowSamples - spf) / 2 + k * spf;
}

int64_t FrameClock::stream_position(int64_t k) const {
  const int64_t w = centre(k) + lookahead - window / 2;
  return floor_div(w + kStreamPad + kHopLength / 2, kHopLength) - (receptive_field() - 1) / 2;
}

int64_t FrameClock::latency_samples(int64_t extra_frames) const {
  if (extra_frames < 0 || extra_frames > 64)
    throw_mismatch("extra_frames", "an integer in [0, 64]", std::to_string(extra_frames));
  return lookahead + ((1 + extra_frames) * kSampleRate + fps - 1) / fps;
}

}  // namespace meshtalk
