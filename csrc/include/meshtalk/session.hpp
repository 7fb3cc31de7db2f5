// Sessions: one speaker's stream, PCM in, meshes out (the C API's mt_session, meshtalk.h), and
// Batch, which steps many sessions of one model together.
//
// Pipeline of a session: AudioStreamEncoder (batch 1, the model's framing and clock) -> one slot of a
// SamplerState -> one slot of a DecoderState -> optional StreamingSmoother -> a queue of frames [V, 3].
// A standalone session owns a SamplerState and a DecoderState of capacity 1 and computes its frames
// inside push_audio / finish. A session in a Batch only stores the audio it is given; Batch::step
// encodes every session's audio, then steps the batch's shared SamplerState / DecoderState (one slot
// per session) round by round, batched over the sessions that have a frame ready in that round (the
// encoders, and the smoothing of each round's frames, run in parallel across sessions). The
// frames of a session depend only on (model, template, audio, seed, argmax, smoothing), never on the
// split of the audio into pushes or on the batch (the sampler's noise is keyed by the seed and step).
//
// Moving a session between its own states and a batch's carries no sampler or LSTM state, so a session
// may join a batch only before it has computed its first frame (since creation or reset), and a session
// that leaves a batch after computing frames there cannot continue its stream: it keeps its queued
// frames, and push_audio / finish throw StateError until reset().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "meshtalk/audio_encoder.hpp"
#include "meshtalk/decoder.hpp"
#include "meshtalk/model.hpp"
#include "meshtalk/sampler.hpp"
#include "meshtalk/smoothing.hpp"
#include "meshtalk/threads.hpp"

namespace meshtalk {

// A call that does not fit the object's state (push after finish, ...): MT_ERR_INVALID_STATE.
class StateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SessionParams {
  bool argmax = false;
  uint64_t seed = 0;
  std::vector<float> templ;          // [V * 3] float32, finite
  bool smoothing = false;
  int64_t smoothing_delay = 4;       // 4 or 8 (any of 0 .. 8 is accepted by the core)
  std::vector<float> forehead, neck;  // [V] weights in [0, 1], when smoothing
  int64_t threads = 1;               // 0: every core; else 1 .. 4096
};

class Batch;

class Session {
 public:
  // Validates params against the model (throws kInvalidArgument naming the field) and allocates all
  // state: encoder, sampler and decoder of capacity 1, smoother.
  Session(std::shared_ptr<const Model> model, SessionParams params);
  ~Session();  // leaves its batch first
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::shared_ptr<const Model>& model() const noexcept { return model_; }
  int64_t frame_floats() const noexcept { return V3_; }  // V * 3

  // pcm: [n] finite float32 (nullptr only when n == 0). Standalone: computes the frames now ready.
  // Throws kInvalidArgument (bad pcm, n, a non-finite sample, more than 2^40 samples in all; nothing
  // appended) or StateError (after finish, failed, or detached from a batch mid-stream).
  void push_audio(const float* pcm, int64_t n);
  // Ends the stream (the rest as if followed by silence). StateError when finished, failed or detached.
  void finish();
  // A new stream with the same parameters; allocates nothing.
  void reset();

  int64_t frames_available() const noexcept { return q_count_; }
  // Moves up to max_frames frames into out [max_frames, V, 3]; returns how many.
  int64_t pop_frames(float* out, int64_t max_frames);

  int64_t samples_pushed() const noexcept { return samples_; }
  int64_t frames_produced() const noexcept { return produced_; }
  bool finished() const noexcept { return finish_requested_; }
  bool failed() const noexcept { return failed_; }
  Batch* batch() const noexcept { return batch_; }

  const std::string& error() const noexcept { return error_; }
  void set_error(const std::string& message) { error_ = message; }

 private:
  friend class Batch;
  void require_open(const char* what) const;
  void on_code(const float* code);        // the encoder's sink
  void run_frame(const float* code);      // standalone: sampler + decoder + emit
  void emit(const float* frame);          // smoother (if any) -> queue
  void close_smoother();
  float* queue_room(int64_t frames);      // room for `frames` more frames at the queue's end
  void fail(const std::string& message);
  void attach_own_states();

  std::shared_ptr<const Model> model_;
  SessionParams p_;
  int64_t V3_ = 0, A_ = 0, H_ = 0;
  std::shared_ptr<ThreadPool> pool_;  // the session's threads, shared by the states below
  std::unique_ptr<AudioStreamEncoder> encoder_;
  AudioStreamEncoder::CodeSink sink_;
  std::unique_ptr<SamplerState> own_sampler_;
  std::unique_ptr<DecoderState> own_decoder_;
  std::shared_ptr<const EncodedTemplate> templ_;
  std::unique_ptr<StreamingSmoother> smoother_;
  SamplerState* sampler_ = nullptr;  // own_sampler_ or the batch's
  DecoderState* decoder_ = nullptr;
  int64_t slot_ = 0;
  Batch* batch_ = nullptr;

  std::vector<float> audio_;  // batch mode: pushed samples waiting for the next step
  int64_t audio_n_ = 0;
  std::vector<float> codes_;  // batch mode: audio codes [n_codes_, A] waiting for the next step
  int64_t n_codes_ = 0;
  std::vector<int32_t> labels_;  // [H]
  std::vector<float> frame_;     // [V3]
  std::vector<float> queue_;     // frames [.., V3]: q_count_ of them from q_head_
  int64_t q_head_ = 0, q_count_ = 0;

  int64_t samples_ = 0, produced_ = 0;
  bool finish_requested_ = false;  // finish() was called
  bool finish_done_ = false;       // the encoder and smoother are closed
  bool failed_ = false;
  bool detached_ = false;  // left a batch after computing frames there
  std::string error_;
};

// Many sessions of one model stepped together. Not thread-safe (one caller at a time).
class Batch {
 public:
  // capacity: most sessions at once, [1, 4096]; threads: 0 = every core, else 1 .. 4096.
  Batch(std::shared_ptr<const Model> model, int64_t capacity, int64_t threads);
  ~Batch();  // detaches every session (as remove, errors kept in the sessions)
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  const std::shared_ptr<const Model>& model() const noexcept { return model_; }
  int64_t size() const noexcept { return static_cast<int64_t>(sessions_.size()); }
  int64_t capacity() const noexcept { return capacity_; }

  // kInvalidArgument for another model; StateError when the session is in a batch, has computed
  // frames since its creation or reset, or the batch is full.
  void add(Session& session);
  // StateError when not in this batch. The session becomes standalone; when it had computed no frame
  // here it continues its stream (computing what is pending now), else it is detached (see above).
  void remove(Session& session);

  struct StepResult {
    int64_t frames = 0;               // frames computed in all
    Session* failed = nullptr;        // the first session that failed in this step
    int64_t failed_index = -1;        // its index in the batch
  };
  // Every frame that became ready since the last step, for every session that has not failed.
  StepResult step();

 private:
  friend class Session;
  void detach(Session& session, bool compute_pending);

  std::shared_ptr<const Model> model_;
  int64_t capacity_;
  // The batch's threads, shared by its sampler and decoder and used to run the sessions' audio
  // encoders and smoothing in parallel across sessions.
  std::shared_ptr<ThreadPool> pool_;
  SamplerState sampler_;
  DecoderState decoder_;
  std::vector<Session*> sessions_;
  std::vector<int64_t> free_slots_;
  // per-round scratch, [capacity] rows
  std::vector<int64_t> slots_;
  std::vector<const float*> code_rows_;
  std::vector<int32_t*> label_rows_;
  std::vector<int32_t> labels_;  // [capacity, H]
  std::vector<float> frames_;    // [capacity, V3]
  std::vector<Session*> round_;
  std::function<void(int64_t)> encode_task_, emit_task_;
  std::vector<uint8_t> was_failed_;  // [capacity]: which sessions had failed before this step
};

// The whole utterance at once: frames of a session with `params` (smoothing_delay 8) fed pcm [n] and
// finished. Returns the frame count; writes them to out when capacity >= the count (else nothing).
int64_t animate(std::shared_ptr<const Model> model, const SessionParams& params, const float* pcm, int64_t n,
                float* out, int64_t capacity);

}  // namespace meshtalk
