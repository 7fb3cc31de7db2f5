// The AudioEncoder of MeshTalk (speech -> one audio code per video frame), torch-free; the reference
// is AudioEncoder in python/meshtalk_fast/models/encoders.py:
//   log-mel (mel.hpp) -> Conv1d 80 -> 128 (kernel 5) + leaky 0.2 -> six blocks Conv1d 128 -> 128
//   (kernel 5, dilations 2, 4, 6, 2, 4, 6), each x = (crop(x) + leaky(conv(x))) / 2 -> Linear 128 -> A.
// The receptive field is exactly 101 mel frames: conv-stack output j sees mel frames j .. j + 100.
// A model with the 600 ms audio context (config audio_context_ms = 600) has the dilations 1, 2, 4, 1, 2, 4:
// a receptive field of exactly 61 mel frames, one 9600-sample window (same tensor shapes). Below, R is the
// weights' receptive_field() (101 or 61) and W their window_samples() (16000 or 9600).
//
// Two framings (MeshTalkConfig.framing):
//   window  the released one: each video frame's window (W samples -> R mel frames) is
//           encoded on its own -> one code (encode_windows; MeshTalk.encode_audio);
//   stream  one log-mel of the utterance padded with 16000 zeros on both sides, the conv stack run once
//           over it and read at one position per video frame (encode_stream; MeshTalk.encode_speech).
//
// Convolutions run time-major ([frames, channels], one row per frame) as five products per layer,
// one per tap, each on a row-shifted view of the input (no im2col copy): C = bias, then
// C += X[j + k d] W_k^T for k = 0..4 through gemm.hpp. Every value is computed by the same operations
// in the same order whatever the number of rows, the thread split or the framing path (batched or
// incremental), so the streaming encoders below reproduce the batched results bit for bit.
//
// Streaming (the building blocks of a push-PCM / pop-frames session), for `batch` streams in lockstep:
//   StreamingConvStack  mel frames in, conv-stack columns out; per-layer ring buffers of activations,
//                       so each mel frame costs one column per layer, independent of the stream length;
//   AudioStreamEncoder  PCM in, audio codes out, for either framing and any frame clock. Memory is fixed
//                       at construction; push and close allocate nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "meshtalk/frame_clock.hpp"
#include "meshtalk/gemm.hpp"
#include "meshtalk/mel.hpp"
#include "meshtalk/threads.hpp"
#include "meshtalk/weights.hpp"

namespace meshtalk {

constexpr int64_t kAudioChannels = 128;      // conv width of the released AudioEncoder
constexpr int64_t kAudioKernel = 5;
constexpr int64_t kAudioBlocks = 6;

struct AudioEncoderWeights {
  struct Conv {
    int64_t dilation = 1;
    WeightMatrix taps[kAudioKernel];  // weight[:, :, k]: [128, in]
    std::vector<float> bias;          // [128]
  };
  int64_t audio_dim = 128;                  // A, the code size
  GemmBackend backend = GemmBackend::kBuiltin;
  std::shared_ptr<const MelFilters> mel;    // the melspec buffers of the weights, or the standard ones
  bool mel_from_weights = false;            // whether the weights held the melspec buffers
  Conv input;                               // convert_dimensions: 80 -> 128
  Conv blocks[kAudioBlocks];                // convs.0 .. convs.5: dilations 2, 4, 6, 2, 4, 6 (600 ms: 1, 2, 4, 1, 2, 4)
  Linear code;                              // [A, 128]
  int64_t context_ms = kReleasedContextMs;  // the audio context the dilations are those of: 1000 or 600

  size_t nbytes() const;
  int64_t window_samples() const noexcept { return context_window_samples(context_ms); }  // 16000 or 9600
  int64_t receptive_field() const noexcept { return context_mel_frames(context_ms); }     // 101 or 61
  // Keys "<prefix>convert_dimensions.weight" [128, 80, 5], "<prefix>convs.{i}.weight" [128, 128, 5] and
  // biases, "<prefix>code.weight" [A, 128], and, when present, "<prefix>melspec.spectrogram.window"
  // [800] and "<prefix>melspec.mel_scale.fb" [1025, 80] (both or neither). context_ms: the model's audio
  // context (1000 or 600, else kInvalidArgument), which sets the dilations.
  static std::shared_ptr<const AudioEncoderWeights> load(const TensorSource& source, int64_t audio_dim,
                                                         GemmBackend backend = GemmBackend::kBuiltin,
                                                         const std::string& prefix = "encoder.audio_encoder.",
                                                         int64_t context_ms = kReleasedContextMs);
};

struct AudioEncodeOptions {
  int64_t threads = 0;  // 0: every core this process may use
};

// Window framing: windows [N, W] (row n at windows + n * ldw, ldw >= W) -> codes [N, A].
void encode_windows(const AudioEncoderWeights& weights, const float* windows, int64_t N, int64_t ldw, float* codes,
                    const AudioEncodeOptions& options);

// Stream framing: mel [B, 80, F] (F >= R) read at positions [Pb, T] (Pb = 1: the same positions for
// every sequence, or Pb = B), each in [0, F - R] -> codes [B, T, A].
void encode_stream(const AudioEncoderWeights& weights, const float* mel, int64_t B, int64_t F,
                   const int64_t* positions, int64_t Pb, int64_t T, float* codes, const AudioEncodeOptions& options);

// The conv stack fed one mel frame at a time, for `batch` streams in lockstep. Pushing mel frame m
// (all streams) completes conv-stack output j = m - (R - 1) once m >= R - 1.
class StreamingConvStack {
 public:
  StreamingConvStack(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch = 1);

  // mel: [batch, 80], row b at mel + b * ld (ld >= 80). Returns true when output() holds a new column.
  bool push(const float* mel, int64_t ld = kMelBins);
  const float* output() const noexcept { return out_.data(); }  // [batch, 128]: column outputs() - 1
  int64_t outputs() const noexcept { return outputs_; }           // columns completed so far
  int64_t frames_in() const noexcept { return counts_[0]; }       // mel frames pushed so far
  int64_t batch() const noexcept { return batch_; }
  void reset();

 private:
  std::shared_ptr<const AudioEncoderWeights> w_;
  int64_t batch_;
  std::vector<float> rings_[kAudioBlocks + 1];  // inputs of layer 0 (mel) and of each block: [slots, batch, width]
  int64_t slots_[kAudioBlocks + 1];
  int64_t counts_[kAudioBlocks + 1];            // columns written into each ring
  std::vector<float> y_, out_;                  // [batch, 128]
  int64_t outputs_ = 0;
};

// PCM in, one audio code per video frame out, for `batch` streams in lockstep. The codes delivered by
// push and close, in order, equal MeshTalk.encode_speech on the whole utterance with the same framing and
// clock (bit for bit equal to this core's batched path): frame k comes out as soon as its inputs are in
// (window framing: its whole window; stream framing: the R mel frames of its position) and the
// utterance is known to have a frame k (clock.frames(samples) > k).
//   window  keeps the last ~W samples; per frame: one window's mel and the conv stack
//           (encode_windows, on `threads` threads when several frames are ready at once);
//   stream  StreamingMel -> StreamingConvStack -> code; starts with 16000 zeros already pushed, close()
//           pushes the 16000 zeros of the end. Both framings use the weights' melspec buffers (the
//           Python stream framing uses the standard window and filterbank, which every saved model
//           holds; only a model with edited buffers would differ).
class AudioStreamEncoder {
 public:
  // sink(k, codes): frame k's codes [batch, A] (row b = stream b), valid during the call.
  using CodeSink = std::function<void(int64_t frame, const float* codes)>;

  // clock: fps, clock, lookahead and window (its framing field is not read: `framing` is); fps in [1, 8000];
  // its window must be the weights' (else kInvalidArgument: "audio context mismatch ...").
  AudioStreamEncoder(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch, const FrameClock& clock,
                     Framing framing, int64_t threads = 1);
  // The same on a thread pool shared with other states (a session's: threads.hpp).
  AudioStreamEncoder(std::shared_ptr<const AudioEncoderWeights> weights, int64_t batch, const FrameClock& clock,
                     Framing framing, std::shared_ptr<ThreadPool> pool);
  ~AudioStreamEncoder();

  // samples: [batch, n], row b at samples + b * ld (ld >= n when batch > 1).
  void push(const float* samples, int64_t n, int64_t ld, const CodeSink& sink);
  void close(const CodeSink& sink);  // the remaining frames; the stream is then finished
  void reset();                      // a new, empty stream (no allocation)
  // Off: the calling thread only (a session in a batch, whose threads already split the sessions).
  void set_threaded(bool on) noexcept { threaded_ = on; }

  int64_t batch() const noexcept { return batch_; }
  int64_t audio_dim() const noexcept { return w_->audio_dim; }
  int64_t samples_seen() const noexcept { return samples_; }
  int64_t frames_emitted() const noexcept { return emitted_; }
  bool closed() const noexcept { return closed_; }

 private:
  void push_window(const float* samples, int64_t n, int64_t ld, const CodeSink& sink);
  void encode_ready_windows(int64_t stop, const CodeSink& sink);
  void on_mel_frame(const float* mel);
  void deliver(int64_t stop);  // codes of frames [emitted_, stop) to *current_sink_

  std::shared_ptr<const AudioEncoderWeights> w_;
  int64_t batch_;
  FrameClock clock_;
  Framing framing_;
  int64_t samples_ = 0, emitted_ = 0;
  bool closed_ = false;
  std::shared_ptr<ThreadPool> pool_;
  bool threaded_ = true;
  // window framing
  struct WindowWork;
  std::unique_ptr<WindowWork> window_;
  // stream framing
  std::unique_ptr<StreamingMel> mel_;
  std::unique_ptr<StreamingConvStack> stack_;
  StreamingMel::FrameSink mel_sink_;      // built once: feeds the conv stack
  const CodeSink* current_sink_ = nullptr;  // the sink of the push or close in progress
  std::vector<float> pending_;  // codes computed but not yet known to exist: ring [capacity, batch, A]
  int64_t pending_capacity_ = 0;
  int64_t computed_ = 0;        // frames whose code is computed (stream framing)
};

}  // namespace meshtalk
