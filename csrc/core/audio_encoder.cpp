// The AudioEncoder: weights, the batched conv stack, both framings, and the streaming encoders
// (audio_encoder.hpp).
#include "meshtalk/audio_encoder.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

constexpr float kLeakySlope = 0.2f;
constexpr int64_t C = kAudioChannels;
constexpr int64_t kRowsPerTask = 16;  // at least this many output rows per thread in a layer
constexpr int64_t kMaxStreamSamples = int64_t(1) << 40;

inline float leaky(float v) { return v > 0.0f ? v : v * kLeakySlope; }

// The dilations of the six blocks per audio context (python ops/frame_clock.py AUDIO_CONTEXTS): the
// receptive field 5 + 4 * sum is one window's mel frames, 101 (1000 ms, released) or 61 (600 ms).
int64_t block_dilation(int64_t context_ms, int64_t i) {
  static const int64_t released[kAudioBlocks] = {2, 4, 6, 2, 4, 6};
  static const int64_t short_context[kAudioBlocks] = {1, 2, 4, 1, 2, 4};
  return context_ms == 600 ? short_context[i] : released[i];
}

AudioEncoderWeights::Conv load_conv(const TensorSource& src, const std::string& key, int64_t in, int64_t dilation,
                                    GemmBackend backend) {
  const std::vector<float> w = src.get(key + ".weight", {C, in, kAudioKernel});
  AudioEncoderWeights::Conv conv;
  conv.dilation = dilation;
  conv.bias = src.get(key + ".bias", {C});
  std::vector<float> tap(static_cast<size_t>(C * in));
  for (int64_t k = 0; k < kAudioKernel; ++k) {
    for (int64_t o = 0; o < C; ++o)
      for (int64_t i = 0; i < in; ++i) tap[o * in + i] = w[(o * in + i) * kAudioKernel + k];
    conv.taps[k] = WeightMatrix(tap.data(), C, in, in, backend);
  }
  return conv;
}

// Output rows [r0, r1) of a convolution over time-major x [rows, in]: y[r] = bias + sum_k x[r + k d] W_k^T,
// then leaky (layer 0) or the residual average (x[r + 2d] + leaky(y[r])) / 2 (blocks).
void conv_rows(const AudioEncoderWeights::Conv& conv, const float* x, int64_t in, int64_t r0, int64_t r1, float* y,
               bool residual) {
  const int64_t m = r1 - r0;
  if (m <= 0) return;
  float* out = y + r0 * C;
  for (int64_t r = 0; r < m; ++r) std::memcpy(out + r * C, conv.bias.data(), C * sizeof(float));
  for (int64_t k = 0; k < kAudioKernel; ++k)
    gemm(m, x + (r0 + k * conv.dilation) * in, in, conv.taps[k], out, C, true);
  if (!residual) {
    for (int64_t i = 0; i < m * C; ++i) out[i] = leaky(out[i]);
    return;
  }
  const float* skip = x + (r0 + 2 * conv.dilation) * in;  // the symmetric crop of the block input
  for (int64_t i = 0; i < m * C; ++i) out[i] = (skip[i] + leaky(out[i])) * 0.5f;
}

void conv_layer(const AudioEncoderWeights::Conv& conv, const float* x, int64_t in, int64_t rows_out, float* y,
                bool residual, ThreadPool* pool) {
  const int64_t tasks = pool ? std::min<int64_t>(pool->size(), (rows_out + kRowsPerTask - 1) / kRowsPerTask) : 1;
  if (tasks <= 1) {
    conv_rows(conv, x, in, 0, rows_out, y, residual);
    return;
  }
  // The task captures one pointer, which std::function stores inline: a live stream's window
  // (split over the session's threads) allocates nothing here.
  struct Job {
    const AudioEncoderWeights::Conv* conv;
    const float* x;
    int64_t in, rows_out, tasks;
    float* y;
    bool residual;
  };
  const Job job{&conv, x, in, rows_out, tasks, y, residual};
  const Job* j = &job;
  pool->parallel_for(tasks, [j](int64_t t) {
    conv_rows(*j->conv, j->x, j->in, t * j->rows_out / j->tasks, (t + 1) * j->rows_out / j->tasks, j->y, j->residual);
  });
}

// Time-major mel [F, 80] (F >= R) -> conv-stack outputs [F - R + 1, 128], in a or b (each [F - 4, 128]).
const float* conv_stack(const AudioEncoderWeights& w, const float* mel, int64_t F, float* a, float* b,
                        ThreadPool* pool) {
  int64_t rows = F - (kAudioKernel - 1);
  conv_layer(w.input, mel, kMelBins, rows, a, false, pool);
  float* x = a;
  float* y = b;
  for (const AudioEncoderWeights::Conv& conv : w.blocks) {
    rows -= (kAudioKernel - 1) * conv.dilation;
    conv_layer(conv, x, C, rows, y, true, pool);
    std::swap(x, y);
  }
  return x;
}

// codes [m, A] = bias + x [m, 128] W^T
void project(const Linear& code, const float* x, int64_t m, float* out) {
  const int64_t A = code.out();
  for (int64_t r = 0; r < m; ++r) std::memcpy(out + r * A, code.bias.data(), A * sizeof(float));
  gemm(m, x, C, code.weight, out, A, true);
}

// Per-thread memory of the window framing (sized for the largest window, 1 s).
struct WindowScratch {
  MelScratch mel_scratch;
  std::vector<float> mel = std::vector<float>(kReceptiveField * kMelBins);
  std::vector<float> a = std::vector<float>((kReceptiveField - 4) * C), b = a;
};

// pool: splits each convolution's rows over its threads (one window at a time: a live stream); the
// rows are computed the same way whichever thread runs them, so the code is the same bits.
void encode_window(const AudioEncoderWeights& w, const float* window, float* code, WindowScratch& s,
                   ThreadPool* pool = nullptr) {
  log_mel_time_major(*w.mel, window, w.window_samples(), s.mel.data(), s.mel_scratch);
  const float* x = conv_stack(w, s.mel.data(), w.receptive_field(), s.a.data(), s.b.data(), pool);
  project(w.code, x, 1, code);  // the mean over the one output position is that position
}

// Windows dealt to the pool in contiguous ranges, one scratch per task. The task captures one pointer,
// which std::function stores inline: a streaming step allocates nothing here.
void encode_windows_with(const AudioEncoderWeights& w, const float* windows, int64_t N, int64_t ldw, float* codes,
                         ThreadPool& pool, std::vector<WindowScratch>& scratch) {
  struct Job {
    const AudioEncoderWeights* w;
    const float* windows;
    int64_t N, ldw, tasks;
    float* codes;
    WindowScratch* scratch;
  };
  const Job job{&w, windows, N, ldw, std::min<int64_t>(static_cast<int64_t>(scratch.size()), N), codes, scratch.data()};
  const Job* j = &job;
  if (job.tasks == 1 && pool.size() > 1) {  // fewer windows than threads: split each one's convolutions
    for (int64_t n = 0; n < N; ++n) encode_window(w, windows + n * ldw, codes + n * w.audio_dim, scratch[0], &pool);
    return;
  }
  pool.parallel_for(job.tasks, [j](int64_t t) {
    for (int64_t n = t * j->N / j->tasks; n < (t + 1) * j->N / j->tasks; ++n)
      encode_window(*j->w, j->windows + n * j->ldw, j->codes + n * j->w->audio_dim, j->scratch[t]);
  });
}

// Points *slot at a sink for the duration of a call, even when the sink throws.
struct SinkScope {
  const AudioStreamEncoder::CodeSink** slot;
  SinkScope(const AudioStreamEncoder::CodeSink** s, const AudioStreamEncoder::CodeSink* sink) : slot(s) { *slot = sink; }
  ~SinkScope() { *slot = nullptr; }
};


}  // namespace

// ------------------------------------------------------------------------------------------ weights
size_t AudioEncoderWeights::nbytes() const {
  size_t n = code.weight.nbytes() + code.bias.size() * sizeof(float);
  auto conv_bytes = [](const Conv& c) {
    size_t s = c.bias.size() * sizeof(float);
    for (const WeightMatrix& t : c.taps) s += t.nbytes();
    return s;
  };
  n += conv_bytes(input);
  for (const Conv& c : blocks) n += conv_bytes(c);
  return n;
}

std::shared_ptr<const AudioEncoderWeights> AudioEncoderWeights::load(const TensorSource& src, int64_t audio_dim,
                                                                     GemmBackend backend, const std::string& prefix,
                                                                     int64_t context_ms) {
  if (audio_dim < 1 || audio_dim > (int64_t(1) << 20))
    throw_mismatch("config audio_dim", "an integer in [1, 1048576]", std::to_string(audio_dim));
  check_audio_context(context_ms);
  auto w = std::make_shared<AudioEncoderWeights>();
  w->audio_dim = audio_dim;
  w->context_ms = context_ms;
  w->backend = backend;
  w->input = load_conv(src, prefix + "convert_dimensions", kMelBins, 1, backend);
  for (int64_t i = 0; i < kAudioBlocks; ++i)
    w->blocks[i] = load_conv(src, prefix + "convs." + std::to_string(i), C, block_dilation(context_ms, i), backend);
  const std::vector<float> code = src.get(prefix + "code.weight", {audio_dim, C});
  w->code = Linear{WeightMatrix(code.data(), audio_dim, C, C, backend), src.get(prefix + "code.bias", {audio_dim})};
  const std::string wkey = prefix + "melspec.spectrogram.window", fkey = prefix + "melspec.mel_scale.fb";
  const bool has_window = src.contains(wkey), has_fb = src.contains(fkey);
  if (has_window != has_fb)
    throw Error(ErrorCode::kKeyNotFound, src.label() + ": '" + (has_window ? fkey : wkey) +
                                             "' is missing while '" + (has_window ? wkey : fkey) +
                                             "' is present: the melspec buffers come as a pair");
  if (has_window) {
    const std::vector<float> window = src.get(wkey, {kWinLength});
    const std::vector<float> fb = src.get(fkey, {kFreqBins, kMelBins});
    w->mel = std::make_shared<const MelFilters>(window.data(), fb.data());
    w->mel_from_weights = true;
  } else {
    w->mel = MelFilters::standard();
  }
  return w;
}

// ------------------------------------------------------------------------------------------ batched framings
void encode_windows(const AudioEncoderWeights& w, const float* windows, int64_t N, int64_t ldw, float* codes,
                    const AudioEncodeOptions& options) {
  if (N < 0) throw_mismatch("encode_windows: window count N", "N >= 0", std::to_string(N));
  const int64_t W = w.window_samples();
  if (ldw < W)
    throw_mismatch("encode_windows: row stride ldw", ">= " + std::to_string(W), std::to_string(ldw));
  if (N > 0 && (!windows || !codes)) throw_mismatch("encode_windows: windows and codes", "non-null", "a null pointer");
  if (N > std::numeric_limits<int64_t>::max() / 4 / ldw)
    throw_mismatch("encode_windows: windows [N, " + std::to_string(W) + "]", "addressable in 64 bits",
                   "N=" + std::to_string(N));
  const int threads = resolve_thread_count(options.threads);
  if (N == 0) return;
  const int64_t tasks = std::min<int64_t>(threads, N);
  ThreadPool pool(static_cast<int>(tasks));
  std::vector<WindowScratch> scratch(static_cast<size_t>(tasks));
  encode_windows_with(w, windows, N, ldw, codes, pool, scratch);
}

void encode_stream(const AudioEncoderWeights& w, const float* mel, int64_t B, int64_t F, const int64_t* positions,
                   int64_t Pb, int64_t T, float* codes, const AudioEncodeOptions& options) {
  if (B < 1) throw_mismatch("encode_stream: mel batch B", "B >= 1", std::to_string(B));
  const int64_t R = w.receptive_field();
  if (F < R)
    throw_mismatch("encode_stream: mel frames F", "F >= " + std::to_string(R) + " (one conv-stack output)",
                   std::to_string(F));
  if (T < 0) throw_mismatch("encode_stream: positions length T", "T >= 0", std::to_string(T));
  if (Pb != 1 && Pb != B)
    throw_mismatch("encode_stream: positions batch", "1 or B=" + std::to_string(B), std::to_string(Pb));
  if (!mel || (T > 0 && (!positions || !codes)))
    throw_mismatch("encode_stream: mel, positions and codes", "non-null", "a null pointer");
  if (F > std::numeric_limits<int64_t>::max() / 4 / C / B || T > std::numeric_limits<int64_t>::max() / 4 / B / C)
    throw_mismatch("encode_stream: sizes", "addressable in 64 bits", "B=" + std::to_string(B) + ", F=" +
                                                                          std::to_string(F) + ", T=" + std::to_string(T));
  const int64_t last = F - R;
  for (int64_t i = 0; i < Pb * T; ++i)
    if (positions[i] < 0 || positions[i] > last)
      throw_mismatch("encode_stream: positions[" + std::to_string(i / T) + ", " + std::to_string(i % T) + "]",
                     "in [0, F - " + std::to_string(R) + " = " + std::to_string(last) + "]",
                     std::to_string(positions[i]));
  const int threads = resolve_thread_count(options.threads);
  if (T == 0) return;
  ThreadPool pool(threads);
  const int64_t A = w.audio_dim;
  std::vector<float> tm(static_cast<size_t>(F * kMelBins)), a(static_cast<size_t>((F - 4) * C)), b(a.size());
  std::vector<float> gathered(static_cast<size_t>(T * C));
  for (int64_t s = 0; s < B; ++s) {
    const float* m = mel + s * kMelBins * F;
    for (int64_t f = 0; f < F; ++f)
      for (int64_t k = 0; k < kMelBins; ++k) tm[f * kMelBins + k] = m[k * F + f];
    const float* x = conv_stack(w, tm.data(), F, a.data(), b.data(), &pool);
    const int64_t* pos = positions + (Pb == 1 ? 0 : s * T);
    for (int64_t t = 0; t < T; ++t) std::memcpy(gathered.data() + t * C, x + pos[t] * C, C * sizeof(float));
    project(w.code, gathered.data(), T, codes + s * T * A);
  }
}

// ------------------------------------------------------------------------------------------ streaming conv stack
StreamingConvStack::StreamingConvStack(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch)
    : w_(std::move(weights)), batch_(batch) {
  if (!w_) throw_mismatch("StreamingConvStack weights", "AudioEncoderWeights", "null");
  if (batch < 1 || batch > 4096)
    throw_mismatch("StreamingConvStack batch", "an integer in [1, 4096]", std::to_string(batch));
  for (int64_t l = 0; l <= kAudioBlocks; ++l) {
    const int64_t d = l == 0 ? 1 : w_->blocks[l - 1].dilation;
    slots_[l] = (kAudioKernel - 1) * d + 1;  // the layer's input window
    rings_[l].assign(static_cast<size_t>(slots_[l] * batch * (l == 0 ? kMelBins : C)), 0.0f);
    counts_[l] = 0;
  }
  y_.assign(static_cast<size_t>(batch * C), 0.0f);
  out_ = y_;
}

void StreamingConvStack::reset() {
  for (int64_t& c : counts_) c = 0;
  outputs_ = 0;
}

bool StreamingConvStack::push(const float* mel, int64_t ld) {
  if (!mel) throw_mismatch("StreamingConvStack push: mel", "a [batch, 80] buffer", "a null pointer");
  if (ld < kMelBins) throw_mismatch("StreamingConvStack push: row stride ld", ">= 80", std::to_string(ld));
  {
    float* slot = rings_[0].data() + (counts_[0] % slots_[0]) * batch_ * kMelBins;
    for (int64_t b = 0; b < batch_; ++b) std::memcpy(slot + b * kMelBins, mel + b * ld, kMelBins * sizeof(float));
    ++counts_[0];
  }
  // Each layer whose input window just filled computes one column and passes it on.
  for (int64_t l = 0; l <= kAudioBlocks; ++l) {
    if (counts_[l] < slots_[l]) return false;
    const AudioEncoderWeights::Conv& conv = l == 0 ? w_->input : w_->blocks[l - 1];
    const int64_t in = l == 0 ? kMelBins : C, d = conv.dilation, j = counts_[l] - slots_[l];
    const float* ring = rings_[l].data();
    auto column = [&](int64_t i) { return ring + ((j + i) % slots_[l]) * batch_ * in; };
    for (int64_t b = 0; b < batch_; ++b) std::memcpy(y_.data() + b * C, conv.bias.data(), C * sizeof(float));
    for (int64_t k = 0; k < kAudioKernel; ++k) gemm(batch_, column(k * d), in, conv.taps[k], y_.data(), C, true);
    float* dst = l == kAudioBlocks ? out_.data() : rings_[l + 1].data() + (counts_[l + 1] % slots_[l + 1]) * batch_ * C;
    if (l == 0) {
      for (int64_t i = 0; i < batch_ * C; ++i) dst[i] = leaky(y_[i]);
    } else {
      const float* skip = column(2 * d);
      for (int64_t i = 0; i < batch_ * C; ++i) dst[i] = (skip[i] + leaky(y_[i])) * 0.5f;
    }
    if (l < kAudioBlocks) ++counts_[l + 1];
  }
  ++outputs_;
  return true;
}

// ------------------------------------------------------------------------------------------ PCM -> codes
struct AudioStreamEncoder::WindowWork {
  static constexpr int64_t kFrames = 4;  // video frames encoded per batch of windows
  int64_t capacity = 0;                  // samples held per stream
  int64_t start = 0;                     // first sample held
  std::vector<float> samples;            // [batch, capacity]
  std::vector<float> windows;            // [kFrames * batch, W]
  std::vector<float> codes;              // [kFrames * batch, A]
  std::vector<WindowScratch> scratch;    // one per thread
};

AudioStreamEncoder::AudioStreamEncoder(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch,
                                       const FrameClock& clock, Framing framing, int64_t threads)
    : AudioStreamEncoder(std::move(weights), batch, clock, framing,
                         std::make_shared<ThreadPool>(resolve_thread_count(threads))) {}

AudioStreamEncoder::AudioStreamEncoder(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch,
                                       const FrameClock& clock, Framing framing, std::shared_ptr<ThreadPool> pool)
    : w_(std::move(weights)), batch_(batch), clock_(clock), framing_(framing), pool_(std::move(pool)) {
  if (!pool_) throw_mismatch("AudioStreamEncoder pool", "a thread pool", "a null pointer");
  if (!w_) throw_mismatch("AudioStreamEncoder weights", "AudioEncoderWeights", "null");
  if (batch < 1 || batch > 4096)
    throw_mismatch("AudioStreamEncoder batch", "an integer in [1, 4096]", std::to_string(batch));
  // The streaming encoder needs at least 2 samples per frame (16000 / fps >= 2).
  if (clock_.fps < 1 || clock_.fps > kSampleRate / 2)
    throw_mismatch("frame clock fps", "an integer in [1, 8000]", std::to_string(clock_.fps));
  clock_.validate();
  if (clock_.window != w_->window_samples())
    throw_mismatch("AudioStreamEncoder: audio context mismatch: frame clock window",
                   std::to_string(w_->window_samples()) + " samples (the weights' audio_context_ms=" +
                       std::to_string(w_->context_ms) + ")",
                   std::to_string(clock_.window) + " samples (audio_context_ms=" +
                       std::to_string(clock_.audio_context_ms()) + ")");
  const int nthreads = pool_->size();
  const int64_t A = w_->audio_dim, period = std::max<int64_t>(1, kSampleRate / clock_.fps - 1);
  if (framing_ == Framing::kWindow) {
    window_ = std::make_unique<WindowWork>();
    // Held: the window of the next frame to encode, and the samples that may arrive before the
    // utterance is known to have that frame (at most 16000 / fps + 2), plus one piece of input.
    window_->capacity = clock_.window + kSampleRate / clock_.fps + 2 + 4096;
    window_->samples.assign(static_cast<size_t>(batch * window_->capacity), 0.0f);
    window_->windows.assign(static_cast<size_t>(WindowWork::kFrames * batch * clock_.window), 0.0f);
    window_->codes.assign(static_cast<size_t>(WindowWork::kFrames * batch * A), 0.0f);
    window_->scratch.resize(static_cast<size_t>(nthreads));
  } else {
    mel_ = std::make_unique<StreamingMel>(w_->mel, batch);
    stack_ = std::make_unique<StreamingConvStack>(w_, batch);
    // Each mel frame: one conv-stack column, the codes it completes, and the frames now known to exist
    // (after close() only frames of the utterance are computed).
    mel_sink_ = [this](int64_t, const float* mel) {
      const int64_t known = clock_.num_frames(samples_);
      if (!closed_ || computed_ < known) on_mel_frame(mel);
      deliver(std::min(computed_, known));
    };
    // A code is ready >= 320 samples after its frame centre and the frame is known to exist at most
    // 16000 / fps + 2 samples after it: codes wait for at most that span of frames.
    pending_capacity_ = (kSampleRate / clock_.fps + 2) / period + 3;
    pending_.assign(static_cast<size_t>(pending_capacity_ * batch * A), 0.0f);
  }
  reset();
}

AudioStreamEncoder::~AudioStreamEncoder() = default;

void AudioStreamEncoder::reset() {
  samples_ = emitted_ = computed_ = 0;
  closed_ = false;
  if (framing_ == Framing::kWindow) {
    window_->start = 0;
    return;
  }
  mel_->reset();
  stack_->reset();
  mel_->push_zeros(kStreamPad, mel_sink_);  // the utterance's left padding (no code can be ready yet)
}

void AudioStreamEncoder::push(const float* samples, int64_t n, int64_t ld, const CodeSink& sink) {
  if (closed_) throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: push() called after close(); reset() it first");
  if (n < 0) throw_mismatch("AudioStreamEncoder push: sample count n", "n >= 0", std::to_string(n));
  if (n == 0) return;
  if (!samples) throw_mismatch("AudioStreamEncoder push: samples", "a non-null buffer", "a null pointer");
  if (batch_ > 1 && ld < n)
    throw_mismatch("AudioStreamEncoder push: row stride ld", ">= n = " + std::to_string(n), std::to_string(ld));
  if (n > kMaxStreamSamples - samples_)  // keeps the frame clock's arithmetic far from overflow
    throw_mismatch("AudioStreamEncoder push: total samples", "at most 2^40 (about 2 years at 16 kHz)",
                   std::to_string(samples_) + " + " + std::to_string(n));
  if (framing_ == Framing::kWindow) {
    push_window(samples, n, ld, sink);
    return;
  }
  samples_ += n;  // the utterance has these samples (frame existence) before the mel has consumed them
  SinkScope scope(&current_sink_, &sink);
  mel_->push(samples, n, ld, mel_sink_);
  deliver(std::min(computed_, clock_.num_frames(samples_)));  // waiting codes whose frames now exist
}

void AudioStreamEncoder::close(const CodeSink& sink) {
  if (closed_) throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: close() called twice; reset() it first");
  closed_ = true;
  const int64_t total = clock_.num_frames(samples_);
  if (framing_ == Framing::kWindow) {
    encode_ready_windows(total, sink);
  } else {
    SinkScope scope(&current_sink_, &sink);
    mel_->push_zeros(kStreamPad, mel_sink_);  // the utterance's right padding
    mel_->close(mel_sink_);
    deliver(std::min(computed_, total));
  }
  if (emitted_ != total)
    throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: only " + std::to_string(emitted_) + " of " +
                                                 std::to_string(total) + " frames could be encoded");
}

void AudioStreamEncoder::on_mel_frame(const float* mel) {
  if (!stack_->push(mel)) return;
  const int64_t j = stack_->outputs() - 1, A = w_->audio_dim;
  while (true) {
    const int64_t p = clock_.stream_position(computed_);
    if (p > j) return;
    if (p < j)
      throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: frame " + std::to_string(computed_) +
                                                   " reads conv-stack output " + std::to_string(p) + ", already gone");
    if (computed_ - emitted_ >= pending_capacity_)
      throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: more than " + std::to_string(pending_capacity_) +
                                                   " codes wait for their frames to be known to exist");
    project(w_->code, stack_->output(), batch_, pending_.data() + (computed_ % pending_capacity_) * batch_ * A);
    ++computed_;
  }
}

void AudioStreamEncoder::deliver(int64_t stop) {
  const int64_t A = w_->audio_dim;
  while (emitted_ < stop) {
    const float* codes = pending_.data() + (emitted_ % pending_capacity_) * batch_ * A;
    ++emitted_;
    if (current_sink_ && *current_sink_) (*current_sink_)(emitted_ - 1, codes);
  }
}

void AudioStreamEncoder::push_window(const float* samples, int64_t n, int64_t ld, const CodeSink& sink) {
  WindowWork& ww = *window_;
  int64_t done = 0;
  while (done < n) {
    const int64_t room = ww.capacity - (samples_ - ww.start);
    if (room <= 0) throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: internal error, the sample buffer is full");
    const int64_t piece = std::min(room, n - done);
    for (int64_t b = 0; b < batch_; ++b)
      std::memcpy(ww.samples.data() + b * ww.capacity + (samples_ - ww.start), samples + b * ld + done,
                  static_cast<size_t>(piece) * sizeof(float));
    samples_ += piece;
    done += piece;
    // frames whose window is complete and which the utterance is known to have
    int64_t stop = emitted_;
    const int64_t known = clock_.num_frames(samples_);
    while (stop < known && clock_.window_start(stop) + clock_.window <= samples_) ++stop;
    encode_ready_windows(stop, sink);
    const int64_t keep_from = std::min(samples_, std::max(ww.start, clock_.window_start(emitted_)));
    if (keep_from > ww.start) {
      const int64_t shift = keep_from - ww.start, held = samples_ - keep_from;
      for (int64_t b = 0; b < batch_; ++b) {
        float* row = ww.samples.data() + b * ww.capacity;
        std::memmove(row, row + shift, static_cast<size_t>(held) * sizeof(float));
      }
      ww.start = keep_from;
    }
  }
}

void AudioStreamEncoder::encode_ready_windows(int64_t stop, const CodeSink& sink) {
  WindowWork& ww = *window_;
  const int64_t A = w_->audio_dim;
  while (emitted_ < stop) {
    const int64_t count = std::min(WindowWork::kFrames, stop - emitted_);
    for (int64_t f = 0; f < count; ++f) {
      const int64_t s = clock_.window_start(emitted_ + f);
      for (int64_t b = 0; b < batch_; ++b) {
        const int64_t W = clock_.window;
        float* dst = ww.windows.data() + (f * batch_ + b) * W;
        const float* row = ww.samples.data() + b * ww.capacity;
        // samples [s, s + W): zeros outside the utterance [0, samples_)
        const int64_t lo = std::max<int64_t>(s, 0), hi = std::min(s + W, samples_);
        if (hi > lo && lo < ww.start)
          throw Error(ErrorCode::kInvalidArgument, "AudioStreamEncoder: internal error, window samples dropped");
        std::fill(dst, dst + W, 0.0f);
        if (hi > lo) std::memcpy(dst + (lo - s), row + (lo - ww.start), static_cast<size_t>(hi - lo) * sizeof(float));
      }
    }
    if (threaded_) {
      encode_windows_with(*w_, ww.windows.data(), count * batch_, clock_.window, ww.codes.data(), *pool_, ww.scratch);
    } else {
      for (int64_t n = 0; n < count * batch_; ++n)
        encode_window(*w_, ww.windows.data() + n * clock_.window, ww.codes.data() + n * w_->audio_dim, ww.scratch[0]);
    }
    for (int64_t f = 0; f < count; ++f) {
      ++emitted_;
      if (sink) sink(emitted_ - 1, ww.codes.data() + f * batch_ * A);
    }
  }
}

}  // namespace meshtalk
