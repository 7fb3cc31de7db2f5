// The VertexUnet decoder (template mesh + codes -> meshes), batched over sequences and frames.
//
//   1. once per template: x0 = (template - mean) / stddev; three linear + leaky layers; keep the
//      skips [x0, e1 (512), e2 (256)] and the geometry part of the fusion layer, G = bias + W_g g;
//   2. per frame: fusion = leaky(G + sum over the nonzero code entries of value * column) -- for a
//      one-hot code that is a gather-sum of H columns of fusion.weight[:, 128:];
//   3. the 2-layer LSTM (gate order i, f, g, o; bias_ih + bias_hh), sequential in time and batched
//      over the sequences; each layer's input projection is one product per chunk of frames;
//   4. the skip decoder x = skip + leaky(linear(x)) for 128 -> 256 -> 512 -> V*3 over chunks of all
//      B*T frames, the last product written straight into the output and finished there (+
//      vertex_bias, * stddev + mean) block by block while it is in cache.
// Memory besides the output: the LSTM output [B*T, 128] (1/(V*3/128) of the output) and per-thread
// chunks, independent of T.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "meshtalk/threads.hpp"
#include "meshtalk/weights.hpp"

namespace meshtalk {

struct DecodeOptions {
  int64_t threads = 0;       // 0: every core this process may use
  int64_t chunk_rows = 256;  // frames per chunk of the skip decoder (bounds its scratch memory)
  int64_t time_chunk = 64;   // frames per LSTM input projection
};

// templ: [Bt, V, 3] float32 with Bt = 1 (one template for all) or B; codes: [B, T, H, C] float32;
// out: [B, T, V, 3] float32. Throws kInvalidArgument naming the argument on a bad size.
void decode(const DecoderWeights& weights, const float* templ, int64_t Bt, const float* codes, int64_t B, int64_t T,
            float* out, const DecodeOptions& options);

// A template mesh encoded for the decoder (step 1 above): computed once, shared by any number of
// DecoderState slots (sessions animating the same face) of the weights it was encoded with.
struct EncodedTemplate {
  const DecoderWeights* weights = nullptr;  // the weights it was encoded with (identity, for checks)
  std::vector<float> x0, e1, e2, geometry;  // [V*3], [512], [256], [128] (= G)
};

// templ: [V, 3] float32. threads: 0 = every core. Throws kInvalidArgument for a null template.
std::shared_ptr<const EncodedTemplate> encode_template(const DecoderWeights& weights, const float* templ,
                                                       int64_t threads = 0);

// The decoder one frame at a time: `capacity` slots, each an independent sequence with its own
// encoded template and 2-layer LSTM state (h, c), stepped together or apart. Stepping a slot T times
// after reset(slot, template) gives what `decode` gives that sequence (the same operations per frame;
// in practice bit for bit), whichever other slots share the steps.
// Threads split the products by output columns (B = 1: the 512 -> V*3 product, ~38 MB of weights
// per frame, is read once, in parallel); all scratch is allocated by the constructor, step()
// allocates nothing. Not thread-safe: one caller steps a state at a time.
class DecoderState {
 public:
  // Keeps `weights` alive. Throws kInvalidArgument for capacity < 1 or a bad thread count.
  DecoderState(std::shared_ptr<const DecoderWeights> weights, int64_t capacity, int64_t threads = 0);
  // The same on a thread pool shared with other states (a session's or a batch's: threads.hpp).
  DecoderState(std::shared_ptr<const DecoderWeights> weights, int64_t capacity, std::shared_ptr<ThreadPool> pool);
  // The same on weights the caller keeps alive for the lifetime of this state.
  DecoderState(const DecoderWeights& weights, int64_t capacity, int64_t threads = 0);
  ~DecoderState();
  DecoderState(DecoderState&&) noexcept;
  DecoderState& operator=(DecoderState&&) noexcept;

  int64_t capacity() const noexcept;
  const ModelConfig& config() const noexcept;

  // encode_template on this state's weights and threads.
  std::shared_ptr<const EncodedTemplate> encode_template(const float* templ) const;
  // A new sequence in `slot`: zero LSTM state, frames decoded with `templ` (encoded with these
  // weights, else kInvalidArgument).
  void reset(int64_t slot, std::shared_ptr<const EncodedTemplate> templ);
  void release(int64_t slot);  // the slot is free: stepping it throws until the next reset
  bool assigned(int64_t slot) const;
  int64_t steps(int64_t slot) const;  // frames decoded since the last reset

  // One frame of each of n distinct assigned slots (any order):
  //   codes: [n, H, C] float32 (one-hot or any weights), row j for slots[j]
  //   out:   [n, V, 3] float32 output
  // Throws kInvalidArgument (argument, expected, found) for n outside [0, capacity], a slot out of
  // range, unassigned or repeated, or a null buffer, before any state changes.
  void step(const int64_t* slots, int64_t n, const float* codes, float* out);
  // The same from class labels [n, H] int32 (each in [0, C)): the one-hot codes without building them.
  void step_labels(const int64_t* slots, int64_t n, const int32_t* labels, float* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshtalk
