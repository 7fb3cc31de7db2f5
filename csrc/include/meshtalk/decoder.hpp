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

}  // namespace meshtalk
