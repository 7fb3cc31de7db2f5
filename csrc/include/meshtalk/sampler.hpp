// The autoregressive sampler of the ContextModel, batched over B independent sequences: whole
// sequences (`sample`) or one step at a time (`SamplerState`, the same code).
//
// Per step t and head h (heads in order): embedding (a gather of the one-hot columns of heads < h)
// -> the context layers (masked part reading heads < h of this step, plus a per-step term) -> logits
// -> log-softmax over C -> + Gumbel noise (unless argmax) -> argmax (lowest index on ties).
//
// State per sequence, preallocated (nothing is allocated per step, nothing grows with T):
//   - for each context layer l (dilation d_l), a ring of d_l + 1 entries of its INPUT activations
//     [H * hidden]: the historic conv of step t reads the entries of t-1 and t-1-d_l, then step t's
//     inputs replace the entry of t-1-d_l (position t mod (d_l+1));
//   - the per-step term of each context layer, computed once per step for all heads and all active
//     sequences: bias + audio projection + both historic taps (the bulk of the work);
//   - the logits layer's input (the last context layer's output) for the current step.
// So a step costs the same at t = 10 and t = 10 000.
//
// Gumbel noise: U(seed, t, h, c) = 24 bits of Philox-4x32-10 (key = the sequence's 64-bit seed,
// counter = (c / 4, h, t mod 2^32, t / 2^32), lane c mod 4) scaled to [0, 1), then
// g = -log(-log(max(U, 1e-10))) as in the released code. It depends on nothing but (seed, t, h, c),
// so a sequence's sample depends only on (weights, its audio code, its seed), not on the batch.
#pragma once

#include <cstdint>
#include <memory>

#include "meshtalk/threads.hpp"
#include "meshtalk/weights.hpp"

namespace meshtalk {

struct SampleOptions {
  bool argmax = false;  // true: no noise, the mode of each conditional
  int64_t threads = 0;  // 0: every core this process may use; 1: the calling thread only
};

// The uniform behind the Gumbel noise of (seed, t, h, c), in [0, 1) with 24 random bits.
float counter_uniform(uint64_t seed, int64_t t, int64_t h, int64_t c);

// Samples codes for B sequences of up to T steps.
//   audio:   [B, T, A] float32 audio codes, row-major
//   lengths: [B] steps to sample per sequence, each in [0, T]; nullptr: all T
//   seeds:   [B] noise seeds; required unless options.argmax (ignored then)
//   labels:  [B, T, H] int32 output or nullptr: the class per (b, t, h); -1 past the length
//   one_hot: [B, T, H, C] float32 output or nullptr, zero-filled by the caller: 1.0 at each label
// Throws kInvalidArgument (naming the argument, expected and found) on a bad size or length,
// before anything is written.
void sample(const ContextWeights& weights, const float* audio, int64_t B, int64_t T, const int64_t* lengths,
            const uint64_t* seeds, const SampleOptions& options, int32_t* labels, float* one_hot);

// The sampler one step at a time: `capacity` slots, each an independent sequence with its own seed,
// argmax flag and step counter t, stepped together or apart (a live stream per slot, or a server
// batch whose sessions join and leave at any time). Stepping a slot T times after reset(slot, seed,
// argmax) gives exactly what `sample` gives that sequence with that seed, bit for bit (argmax and
// Gumbel alike: `sample` runs this code), whichever other slots share the steps, whatever their t,
// and whatever the thread count.
//
// Memory: per slot the rings of the context layers' inputs ((d_l + 1) steps of [H * hidden] per
// layer, 76 KiB at the released sizes) and per-step scratch rows (~70 KiB), all allocated by the
// constructor; step() allocates nothing. The capacity is fixed: a batch that outgrows it needs a new
// state. Not thread-safe: one caller steps a state at a time; its own threads (a pool made once)
// split each step.
class SamplerState {
 public:
  // Keeps `weights` alive. threads: 0 = every core this process may use, 1 = the calling thread only.
  // Throws kInvalidArgument for capacity < 1 or a bad thread count.
  SamplerState(std::shared_ptr<const ContextWeights> weights, int64_t capacity, int64_t threads = 0);
  // The same on a thread pool shared with other states (a session's or a batch's: threads.hpp).
  SamplerState(std::shared_ptr<const ContextWeights> weights, int64_t capacity, std::shared_ptr<ThreadPool> pool);
  // The same on weights the caller keeps alive for the lifetime of this state.
  SamplerState(const ContextWeights& weights, int64_t capacity, int64_t threads = 0);
  ~SamplerState();
  SamplerState(SamplerState&&) noexcept;
  SamplerState& operator=(SamplerState&&) noexcept;

  int64_t capacity() const noexcept;
  const ModelConfig& config() const noexcept;

  // A new sequence in `slot` (a session joining): t = 0, noise from `seed` (unused with argmax).
  void reset(int64_t slot, uint64_t seed, bool argmax = false);
  // The slot is free: stepping it throws until the next reset.
  void release(int64_t slot);
  bool assigned(int64_t slot) const;
  int64_t steps(int64_t slot) const;  // t: steps taken since the last reset
  uint64_t seed(int64_t slot) const;

  // One step of each of n distinct assigned slots (any order, any mix of step counters):
  //   slots:   [n] slot indices
  //   audio:   [n, A] float32, row j the audio code of slots[j] for its step t
  //   labels:  [n, H] int32 output or nullptr
  //   one_hot: [n, H, C] float32 output or nullptr (whole rows written: zeros and a 1.0 per head)
  // Throws kInvalidArgument (naming the argument, expected and found) for n outside [0, capacity],
  // a slot out of range, unassigned or repeated, or a null audio buffer, before any state changes.
  void step(const int64_t* slots, int64_t n, const float* audio, int32_t* labels, float* one_hot);
  // The same with one pointer per row (row j of each at audio_rows[j], ...; label_rows / one_hot_rows
  // may be null, as may their entries); zero_one_hot = false writes only the 1.0 entries.
  void step_rows(const int64_t* slots, int64_t n, const float* const* audio_rows, int32_t* const* label_rows,
                 float* const* one_hot_rows, bool zero_one_hot = true);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshtalk
