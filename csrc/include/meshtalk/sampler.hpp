// The autoregressive sampler of the ContextModel, batched over B independent sequences.
//
// Per step t and head h (heads in order): embedding (a gather of the one-hot columns of heads < h)
// -> the context layers (masked part reading heads < h of this step, plus a per-step term) -> logits
// -> log-softmax over C -> + Gumbel noise (unless argmax) -> argmax (lowest index on ties).
//
// State per sequence, preallocated (nothing is allocated per step, nothing grows with T):
//   - for each context layer l (dilation d_l), a ring of d_l + 2 slots of its INPUT activations
//     [H * hidden]: step t writes slot t mod (d_l+2) head by head and its historic conv reads the
//     slots of t-1 and t-1-d_l;
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

}  // namespace meshtalk
