// Sessions and batches (session.hpp).
#include "meshtalk/session.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

void check_threads(int64_t threads, const char* name) {
  if (threads < 0 || threads > 4096)
    throw_mismatch(name, "0 (every core) or a thread count in [1, 4096]", std::to_string(threads));
}

std::shared_ptr<const Model> checked_batch_model(std::shared_ptr<const Model> model, int64_t capacity, int64_t threads) {
  if (!model || !model->context || !model->decoder || !model->audio)
    throw_mismatch("model", "a loaded model with context, decoder and audio encoder weights", "an incomplete one");
  if (capacity < 1 || capacity > 4096)
    throw_mismatch("max_sessions", "an integer in [1, 4096]", std::to_string(capacity));
  check_threads(threads, "threads");
  return model;
}

}  // namespace

// ------------------------------------------------------------------------------------------ session
Session::Session(std::shared_ptr<const Model> model, SessionParams params) : model_(std::move(model)), p_(std::move(params)) {
  if (!model_ || !model_->context || !model_->decoder || !model_->audio)
    throw_mismatch("model", "a loaded model with context, decoder and audio encoder weights", "an incomplete one");
  const ModelConfig& c = model_->config;
  V3_ = c.n_vertices * 3;
  A_ = c.audio_dim;
  H_ = c.heads;
  if (static_cast<int64_t>(p_.templ.size()) != V3_)
    throw_mismatch("template size", std::to_string(V3_) + " floats (n_vertices * 3)", std::to_string(p_.templ.size()));
  for (size_t i = 0; i < p_.templ.size(); ++i)
    if (!std::isfinite(p_.templ[i]))
      throw_mismatch("template[" + std::to_string(i) + "]", "a finite coordinate", std::to_string(p_.templ[i]));
  check_threads(p_.threads, "threads");
  // One pool for the encoder, sampler, decoder and smoother (threads.hpp: pools that spin must not compete).
  pool_ = std::make_shared<ThreadPool>(resolve_thread_count(p_.threads));
  if (p_.smoothing) {
    if (p_.smoothing_delay < 0 || p_.smoothing_delay > kSmoothingReach)
      throw_mismatch("smoothing_delay", "4 or 8 frames", std::to_string(p_.smoothing_delay));
    for (const auto* mask : {&p_.forehead, &p_.neck}) {
      const char* name = mask == &p_.forehead ? "forehead_mask" : "neck_mask";
      if (static_cast<int64_t>(mask->size()) != c.n_vertices)
        throw_mismatch(std::string(name) + " size", std::to_string(c.n_vertices) + " weights (n_vertices)",
                       std::to_string(mask->size()));
      for (size_t i = 0; i < mask->size(); ++i)
        if (!((*mask)[i] >= 0.0f && (*mask)[i] <= 1.0f))
          throw_mismatch(std::string(name) + "[" + std::to_string(i) + "]", "a weight in [0, 1]",
                         std::to_string((*mask)[i]));
    }
    smoother_ = std::make_unique<StreamingSmoother>(c.n_vertices, p_.forehead.data(), p_.neck.data(),
                                                    p_.smoothing_delay, pool_);
  }
  encoder_ = std::make_unique<AudioStreamEncoder>(model_->audio, 1, model_->frames, model_->frames.framing, pool_);
  own_sampler_ = std::make_unique<SamplerState>(model_->context, 1, pool_);
  own_decoder_ = std::make_unique<DecoderState>(model_->decoder, 1, pool_);
  templ_ = own_decoder_->encode_template(p_.templ.data());
  labels_.assign(static_cast<size_t>(H_), 0);
  frame_.assign(static_cast<size_t>(V3_), 0.0f);
  // Room for one second of frames and the smoother's tail up front; the queue grows only beyond.
  queue_.assign(static_cast<size_t>((model_->frames.fps + kSmoothingReach + 1) * V3_), 0.0f);
  sink_ = [this](int64_t, const float* code) { on_code(code); };
  attach_own_states();
}

Session::~Session() {
  if (batch_ != nullptr) {
    try {
      batch_->detach(*this, false);
    } catch (...) {
    }
  }
}

void Session::attach_own_states() {
  // Standalone: the encoder and smoother split their work over the session's threads (in a batch the
  // batch's threads split the sessions instead, and a session's own threads would oversubscribe).
  encoder_->set_threaded(true);
  if (smoother_) smoother_->set_threaded(true);
  sampler_ = own_sampler_.get();
  decoder_ = own_decoder_.get();
  slot_ = 0;
  sampler_->reset(0, p_.seed, p_.argmax);
  decoder_->reset(0, templ_);
}

void Session::require_open(const char* what) const {
  if (failed_)
    throw StateError(std::string(what) + ": the session failed earlier (" + error_ + "); reset it first");
  if (finish_requested_)
    throw StateError(std::string(what) + ": the stream is finished; reset the session to start a new one");
  if (detached_)
    throw StateError(std::string(what) + ": the session left its batch after computing frames there and cannot "
                                         "continue that stream; reset it first");
}

void Session::fail(const std::string& message) {
  failed_ = true;
  error_ = message;
}

float* Session::queue_room(int64_t frames) {
  const int64_t needed = (q_head_ + q_count_ + frames) * V3_;
  if (needed > static_cast<int64_t>(queue_.size())) {
    if (q_head_ > 0) {  // move the waiting frames to the front first
      std::memmove(queue_.data(), queue_.data() + q_head_ * V3_, static_cast<size_t>(q_count_ * V3_) * sizeof(float));
      q_head_ = 0;
    }
    const int64_t want = (q_count_ + frames) * V3_;
    if (want > static_cast<int64_t>(queue_.size()))
      queue_.resize(static_cast<size_t>(std::max(want, 2 * static_cast<int64_t>(queue_.size()))));
  }
  return queue_.data() + (q_head_ + q_count_) * V3_;
}

void Session::emit(const float* frame) {
  float* dst = queue_room(1);
  if (smoother_) {
    if (!smoother_->push(frame, dst)) return;
  } else {
    std::memcpy(dst, frame, static_cast<size_t>(V3_) * sizeof(float));
  }
  ++q_count_;
  ++produced_;
}

void Session::close_smoother() {
  if (!smoother_) return;
  const int64_t pending = smoother_->pending();
  float* dst = queue_room(pending);
  const int64_t n = smoother_->close(dst, pending);
  q_count_ += n;
  produced_ += n;
}

void Session::run_frame(const float* code) {
  sampler_->step(&slot_, 1, code, labels_.data(), nullptr);
  decoder_->step_labels(&slot_, 1, labels_.data(), frame_.data());
  emit(frame_.data());
}

void Session::on_code(const float* code) {
  if (batch_ == nullptr) {
    run_frame(code);
    return;
  }
  const int64_t needed = (n_codes_ + 1) * A_;
  if (needed > static_cast<int64_t>(codes_.size()))
    codes_.resize(static_cast<size_t>(std::max(needed, 2 * static_cast<int64_t>(codes_.size()))));
  std::memcpy(codes_.data() + n_codes_ * A_, code, static_cast<size_t>(A_) * sizeof(float));
  ++n_codes_;
}

void Session::push_audio(const float* pcm, int64_t n) {
  if (n < 0 || n > kMaxSamples) throw_mismatch("n_samples", "a count in [0, 2^40]", std::to_string(n));
  if (n > 0 && pcm == nullptr) throw_mismatch("pcm", "a buffer of n_samples floats", "NULL");
  require_open("push_audio");
  if (samples_ + n > kMaxSamples)
    throw_mismatch("n_samples", "at most 2^40 samples per stream in all (" + std::to_string(samples_) +
                                    " pushed before)", std::to_string(n));
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(pcm[i]))
      throw_mismatch("pcm[" + std::to_string(i) + "]", "a finite sample", std::to_string(pcm[i]));
  if (n == 0) return;
  samples_ += n;
  if (batch_ != nullptr) {
    const int64_t needed = audio_n_ + n;
    if (needed > static_cast<int64_t>(audio_.size()))
      audio_.resize(static_cast<size_t>(std::max(needed, 2 * static_cast<int64_t>(audio_.size()))));
    std::memcpy(audio_.data() + audio_n_, pcm, static_cast<size_t>(n) * sizeof(float));
    audio_n_ = needed;
    return;
  }
  try {
    encoder_->push(pcm, n, n, sink_);
  } catch (const std::exception& e) {
    fail(e.what());
    throw;
  }
}

void Session::finish() {
  require_open("finish");
  finish_requested_ = true;
  if (batch_ != nullptr) return;
  try {
    encoder_->close(sink_);
    close_smoother();
    finish_done_ = true;
  } catch (const std::exception& e) {
    fail(e.what());
    throw;
  }
}

void Session::reset() {
  encoder_->reset();
  if (smoother_) smoother_->reset();
  if (batch_ == nullptr && sampler_ != own_sampler_.get()) attach_own_states();
  sampler_->reset(slot_, p_.seed, p_.argmax);
  decoder_->reset(slot_, templ_);
  audio_n_ = n_codes_ = 0;
  q_head_ = q_count_ = 0;
  samples_ = produced_ = 0;
  finish_requested_ = finish_done_ = failed_ = detached_ = false;
  error_.clear();
}

int64_t Session::pop_frames(float* out, int64_t max_frames) {
  if (max_frames < 0) throw_mismatch("max_frames", "a count >= 0", std::to_string(max_frames));
  if (max_frames > 0 && out == nullptr) throw_mismatch("out", "a buffer of max_frames * n_vertices * 3 floats", "NULL");
  const int64_t n = std::min(max_frames, q_count_);
  if (n == 0) return 0;
  std::memcpy(out, queue_.data() + q_head_ * V3_, static_cast<size_t>(n * V3_) * sizeof(float));
  q_head_ += n;
  q_count_ -= n;
  if (q_count_ == 0) q_head_ = 0;
  return n;
}

// ------------------------------------------------------------------------------------------ batch
Batch::Batch(std::shared_ptr<const Model> model, int64_t capacity, int64_t threads)
    : model_(checked_batch_model(std::move(model), capacity, threads)),
      capacity_(capacity),
      pool_(std::make_shared<ThreadPool>(resolve_thread_count(threads))),
      sampler_(model_->context, capacity, pool_),
      decoder_(model_->decoder, capacity, pool_) {
  const int64_t H = model_->config.heads, V3 = model_->config.n_vertices * 3;
  sessions_.reserve(static_cast<size_t>(capacity));
  for (int64_t s = capacity - 1; s >= 0; --s) free_slots_.push_back(s);
  slots_.resize(static_cast<size_t>(capacity));
  code_rows_.resize(static_cast<size_t>(capacity));
  label_rows_.resize(static_cast<size_t>(capacity));
  labels_.assign(static_cast<size_t>(capacity * H), 0);
  frames_.assign(static_cast<size_t>(capacity * V3), 0.0f);
  round_.reserve(static_cast<size_t>(capacity));
  for (int64_t j = 0; j < capacity; ++j) label_rows_[j] = labels_.data() + j * H;
  was_failed_.assign(static_cast<size_t>(capacity), 0);
  // Built once: a step allocates nothing for them. A session failing in one is marked failed; step()
  // reports the first (was_failed_ tells which failed in this step).
  encode_task_ = [this](int64_t i) {
    Session& s = *sessions_[static_cast<size_t>(i)];
    if (s.failed_) return;
    try {
      if (s.audio_n_ > 0) s.encoder_->push(s.audio_.data(), s.audio_n_, s.audio_n_, s.sink_);
      s.audio_n_ = 0;
      if (s.finish_requested_ && !s.finish_done_) s.encoder_->close(s.sink_);
    } catch (const std::exception& e) {
      s.fail(e.what());
      s.n_codes_ = 0;
    }
  };
  emit_task_ = [this](int64_t j) {
    const int64_t V3 = model_->config.n_vertices * 3;
    Session& s = *round_[static_cast<size_t>(j)];
    try {
      s.emit(frames_.data() + j * V3);
    } catch (const std::exception& e) {
      s.fail(e.what());
    }
  };
}

Batch::~Batch() {
  while (!sessions_.empty()) {
    Session& s = *sessions_.back();
    try {
      detach(s, true);
    } catch (const std::exception& e) {
      s.fail(e.what());
    } catch (...) {
      s.fail("an exception of unknown type");
    }
  }
}

void Batch::add(Session& s) {
  if (s.model_ != model_)
    throw_mismatch("session", "a session of the batch's model", "a session of another model");
  if (s.batch_ == this) throw StateError("session: already in this batch");
  if (s.batch_ != nullptr) throw StateError("session: already in another batch (remove it there first)");
  if (s.sampler_->steps(s.slot_) != 0 || s.detached_)
    throw StateError("session: has computed frames since its creation or reset (" + std::to_string(s.produced_) +
                     " queued or popped); a session joins a batch at the start of a stream: reset it first");
  if (free_slots_.empty())
    throw StateError("batch: full (max_sessions " + std::to_string(capacity_) + " sessions)");
  const int64_t slot = free_slots_.back();
  sampler_.reset(slot, s.p_.seed, s.p_.argmax);
  decoder_.reset(slot, s.templ_);
  free_slots_.pop_back();
  sessions_.push_back(&s);
  s.batch_ = this;
  s.encoder_->set_threaded(false);
  if (s.smoother_) s.smoother_->set_threaded(false);
  s.sampler_ = &sampler_;
  s.decoder_ = &decoder_;
  s.slot_ = slot;
}

void Batch::remove(Session& s) {
  if (s.batch_ != this) throw StateError("session: not in this batch");
  detach(s, true);
}

void Batch::detach(Session& s, bool compute_pending) {
  const bool started = sampler_.steps(s.slot_) != 0;
  sampler_.release(s.slot_);
  decoder_.release(s.slot_);
  free_slots_.push_back(s.slot_);
  sessions_.erase(std::find(sessions_.begin(), sessions_.end(), &s));
  s.batch_ = nullptr;
  s.attach_own_states();
  s.n_codes_ = 0;
  if (started) {
    s.detached_ = true;
    s.audio_n_ = 0;
    return;
  }
  if (!compute_pending || s.failed_) return;
  // Nothing computed in the batch: the stream continues standalone from the audio waiting here.
  const int64_t n = s.audio_n_;
  s.audio_n_ = 0;
  try {
    if (n > 0) s.encoder_->push(s.audio_.data(), n, n, s.sink_);
    if (s.finish_requested_ && !s.finish_done_) {
      s.encoder_->close(s.sink_);
      s.close_smoother();
      s.finish_done_ = true;
    }
  } catch (const std::exception& e) {
    s.fail(e.what());
    throw;
  }
}

Batch::StepResult Batch::step() {
  StepResult result;
  const int64_t V3 = model_->config.n_vertices * 3, A = model_->config.audio_dim;
  const int64_t before = [&] {
    int64_t total = 0;
    for (Session* s : sessions_) total += s->produced_;
    return total;
  }();
  // 1. Each session's audio -> its audio codes, sessions in parallel on the batch's threads (each
  //    encoder is its session's own state; the encoders hold different amounts of audio).
  for (size_t i = 0; i < sessions_.size(); ++i) was_failed_[i] = sessions_[i]->failed_ ? 1 : 0;
  if (pool_->size() > 1 && sessions_.size() > 1) pool_->parallel_for(size(), encode_task_);
  else for (int64_t i = 0; i < size(); ++i) encode_task_(i);
  // 2. Round r steps the sampler and the decoder once for every session with more than r codes.
  for (int64_t r = 0;; ++r) {
    round_.clear();
    for (Session* s : sessions_)
      if (!s->failed_ && s->n_codes_ > r) {
        slots_[round_.size()] = s->slot_;
        code_rows_[round_.size()] = s->codes_.data() + r * A;
        round_.push_back(s);
      }
    const int64_t n = static_cast<int64_t>(round_.size());
    if (n == 0) break;
    sampler_.step_rows(slots_.data(), n, code_rows_.data(), label_rows_.data(), nullptr);
    decoder_.step_labels(slots_.data(), n, labels_.data(), frames_.data());
    // Smoothing and queueing, per session (independent), in parallel.
    if (pool_->size() > 1 && n > 1) pool_->parallel_for(n, emit_task_);
    else for (int64_t j = 0; j < n; ++j) emit_task_(j);
    (void)V3;
  }
  // 3. Finished streams: the smoother's tail.
  for (Session* s : sessions_) {
    s->n_codes_ = 0;
    if (!s->failed_ && s->finish_requested_ && !s->finish_done_) {
      s->close_smoother();
      s->finish_done_ = true;
    }
  }
  for (size_t i = 0; i < sessions_.size() && result.failed == nullptr; ++i)
    if (sessions_[i]->failed_ && !was_failed_[i]) {
      result.failed = sessions_[i];
      result.failed_index = static_cast<int64_t>(i);
    }
  int64_t after = 0;
  for (Session* s : sessions_) after += s->produced_;
  result.frames = after - before;
  return result;
}

// ------------------------------------------------------------------------------------------ offline
int64_t animate(std::shared_ptr<const Model> model, const SessionParams& params, const float* pcm, int64_t n,
                float* out, int64_t capacity) {
  if (!model) throw_mismatch("model", "a loaded model", "null");
  const int64_t frames = model->frames.num_frames(n);
  if (capacity < frames) return frames;
  SessionParams p = params;
  p.smoothing_delay = kSmoothingReach;  // delay 8: exactly the whole-sequence smoothing
  Session session(std::move(model), std::move(p));
  session.push_audio(pcm, n);
  session.finish();
  const int64_t got = session.pop_frames(out, frames);
  if (got != frames)
    throw std::logic_error("animate: produced " + std::to_string(got) + " frames, expected " + std::to_string(frames));
  return frames;
}

}  // namespace meshtalk
