// Log-mel spectrogram of 16 kHz speech with exactly the semantics of torchaudio's
// MelSpectrogram(sample_rate=16000, n_fft=2048, win_length=800, hop_length=160, n_mels=80) followed by
// log(max(mel, 1e-10)) -- the reference is torch_log_mel in python/meshtalk_fast/audio.py:
//   - a periodic Hann window of 800 taps centred in the 2048-point frame (the zero padding only adds a
//     phase, so a frame's power is |sum_{m<800} w[m] x[160 t - 400 + m] e^{-2 pi i k m / 2048}|^2);
//   - center=True: the signal is reflect-padded (the edge sample is not repeated), frame t covers the
//     samples [160 t - 400, 160 t + 400), 1 + L / 160 frames, L >= 1025;
//   - power spectrum, 1025 one-sided bins; an HTK filterbank of 80 triangles (no normalisation); log.
//
// Algorithm: per frame one real FFT of size 2048 (a complex FFT of size 1024 on the even/odd samples,
// then the split into the real spectrum), radix-2 decimation in frequency. The 800 nonzero taps fill
// only the first 400 of the 1024 complex inputs, so the first stage needs no additions. Frames are
// processed in groups laid across the lanes of a SIMD vector (16 on AVX-512, 8 on AVX2, 4 otherwise),
// so every butterfly is one vector operation for a whole group with no shuffles. The filterbank is
// stored sparse (each bin touches at most 2 triangles of the standard bank), and applied while the
// power of each bin is formed. Window and filterbank come from the model file when it has them
// (AudioEncoder.melspec buffers) or are the standard ones computed here.
//
// Results are identical (bit for bit) however frames are grouped, batched or streamed: a frame's
// value depends only on its 800 input samples.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace meshtalk {

constexpr int64_t kSampleRate = 16000;
constexpr int64_t kFftSize = 2048;
constexpr int64_t kWinLength = 800;
constexpr int64_t kHopLength = 160;
constexpr int64_t kMelBins = 80;
constexpr int64_t kFreqBins = kFftSize / 2 + 1;       // 1025
constexpr int64_t kMinMelSamples = kFftSize / 2 + 1;  // 1025: the reflect padding needs more than 1024
constexpr float kLogFloor = 1e-10f;

// Frames of a signal of `samples` samples: 1 + samples / 160.
inline int64_t mel_frame_count(int64_t samples) { return 1 + samples / kHopLength; }

std::vector<float> standard_hann_window();     // [800]: 0.5 - 0.5 cos(2 pi n / 800), computed in double
std::vector<float> standard_mel_filterbank();  // [1025, 80]: HTK, 0..8000 Hz, no norm (audio.mel_filterbank)

// Working memory of MelFilters::frames for one thread (about 140 KB); reuse it across calls.
class MelScratch {
 public:
  MelScratch();
  float* data() const noexcept { return data_.get(); }

 private:
  struct AlignedDelete {
    void operator()(float* p) const noexcept;
  };
  std::unique_ptr<float[], AlignedDelete> data_;
};

// Window, filterbank and FFT tables; immutable once built, share it between threads and streams.
class MelFilters {
 public:
  MelFilters();  // the standard window and filterbank
  // window: [800]; filterbank: [1025, 80] (row k = frequency bin k). Both copied. Throws
  // kInvalidArgument for a null pointer or a non-finite value.
  MelFilters(const float* window, const float* filterbank);
  static std::shared_ptr<const MelFilters> standard();  // built once per process

  const std::vector<float>& window() const noexcept { return window_; }
  std::vector<float> filterbank() const;  // dense [1025, 80] again (for checks)
  int64_t nonzeros() const noexcept { return static_cast<int64_t>(weight_.size()); }
  static int64_t lanes();                 // frames per SIMD group on this CPU
  static const char* isa();               // "avx512f", "avx2+fma" or "baseline"

  // Log-mel of `count` frames: frame i reads the 800 samples taps[i][0, 800) and writes mel m to
  // outs[i][m * mel_stride] for m < 80. Frames are computed in groups of lanes(); any count >= 0.
  void frames(const float* const* taps, float* const* outs, int64_t mel_stride, int64_t count,
              MelScratch& scratch) const;

  // Internal tables (public for the kernels in mel.cpp).
  struct Tables {
    std::vector<float> fft_cos, fft_sin;    // [512]: e^{-2 pi i m / 1024} = cos + i sin
    std::vector<float> post_cos, post_sin;  // [1025]: e^{-2 pi i k / 2048}
    std::vector<int32_t> bitrev;            // [1024]
  };

 private:
  void build(const float* window, const float* filterbank);

  std::vector<float> window_;
  std::vector<int32_t> bin_start_;  // [1026]: CSR rows by frequency bin
  std::vector<int32_t> mel_;        // mel index of each nonzero
  std::vector<float> weight_;       // filterbank value of each nonzero
  std::shared_ptr<const Tables> tables_;
};

struct LogMelOptions {
  int64_t threads = 0;  // 0: every core this process may use
};

// Batched log-mel: x [N, L] (row r at x + r * ldx, ldx >= L, L >= 1025) -> out [N, 80, 1 + L / 160].
// Throws kInvalidArgument naming the argument for bad sizes, before anything is written.
void log_mel(const MelFilters& filters, const float* x, int64_t N, int64_t L, int64_t ldx, float* out,
             const LogMelOptions& options);

// One signal x [L] (L >= 1025) -> out [1 + L / 160, 80] time-major (row t = frame t), the layout of
// the audio encoder's convolutions. Single-threaded, no allocation.
void log_mel_time_major(const MelFilters& filters, const float* x, int64_t L, float* out, MelScratch& scratch);

// Streaming log-mel for `batch` streams pushed in lockstep: push samples as they arrive and get each
// frame as soon as its samples are in. The frames delivered by push and close, in order, equal
// log_mel of the whole signal (bit for bit); the semantics mirror StreamingLogMel in
// python/meshtalk_fast/streaming_mel.py:
//   - frame t covers samples [160 t - 400, 160 t + 400) and is delivered once sample 160 t + 399 has
//     arrived and at least 1025 samples are in (the whole-signal minimum); the last frames, which
//     reach past the end, come out of close() with the right edge reflected;
//   - close() on fewer than 1025 samples throws log_mel's too-short error.
// Memory is fixed at construction (about 4096 samples per stream plus a few frames): push accepts any
// number of samples, in bounded pieces, and allocates nothing.
class StreamingMel {
 public:
  // sink(t, mel): frame t of every stream, mel [batch, 80] (row b = stream b), valid during the call.
  using FrameSink = std::function<void(int64_t frame, const float* mel)>;

  explicit StreamingMel(std::shared_ptr<const MelFilters> filters, int64_t batch = 1);

  // samples: [batch, n], row b at samples + b * ld (ld >= n); n >= 0. Throws after close().
  void push(const float* samples, int64_t n, int64_t ld, const FrameSink& sink);
  void push_zeros(int64_t n, const FrameSink& sink);  // n zero samples on every stream
  void close(const FrameSink& sink);                   // the last frames; the stream is then finished
  void reset();                                        // a new, empty stream (no allocation)

  int64_t batch() const noexcept { return batch_; }
  int64_t samples_seen() const noexcept { return end_; }
  int64_t frames_emitted() const noexcept { return next_; }
  int64_t buffered_samples() const noexcept { return end_ - start_; }
  bool closed() const noexcept { return closed_; }
  const MelFilters& filters() const noexcept { return *filters_; }

 private:
  static constexpr int64_t kCapacity = 4096;  // samples held per stream
  static constexpr int64_t kGroupFrames = 16;  // frames computed per call of the kernel
  void feed(const float* samples, int64_t n, int64_t ld, const FrameSink& sink);  // samples null: zeros
  void append(const float* samples, int64_t n, int64_t ld);
  void emit(int64_t stop, bool at_end, const FrameSink& sink);
  void trim();

  std::shared_ptr<const MelFilters> filters_;
  int64_t batch_;
  std::vector<float> buffer_;  // [batch, kCapacity]: samples [start_, end_) of each stream
  std::vector<float> edges_;   // reflected taps of edge frames [kGroupFrames * batch, 800]
  std::vector<float> staging_; // [kGroupFrames, batch, 80]
  std::vector<const float*> taps_;
  std::vector<float*> outs_;
  MelScratch scratch_;
  int64_t start_ = 0, end_ = 0, next_ = 0;
  bool closed_ = false;
};

}  // namespace meshtalk
