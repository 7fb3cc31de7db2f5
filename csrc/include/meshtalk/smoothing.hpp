// The released post-smoothing of decoded meshes, whole-sequence and streaming.
//
// One pass: every coordinate is smoothed over time with the 9-tap Gaussian (sigma 2, taps
// exp(-x^2 / 8) / sum for x in -4..4, computed in double and rounded to float), replicate padding at
// both ends, then blended per vertex: y = smoothed * m + x * (1 - m). post_smooth is a pass blended
// by the forehead mask followed by a pass blended by the neck mask (python/meshtalk_fast/smoothing.py).
//
// Streaming (StreamingSmoother, the semantics of python/meshtalk_fast/streaming.py): frame t is
// emitted when frame t + delay has been pushed, computed from frames max(0, t - 8) .. t + delay as if
// the sequence ended at t + delay; close() emits the rest as if it ended at the last frame pushed.
// With delay 8 every frame equals post_smooth of the whole sequence bit for bit (each is computed by
// the same operations); with delay 4 it differs only at vertices in both masks (streaming.py's bound).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "meshtalk/threads.hpp"

namespace meshtalk {

constexpr int64_t kSmoothingTaps = 9;
constexpr int64_t kSmoothingReach = 8;  // frames either side two chained passes read

// The 9 normalised Gaussian taps (sigma 2), as gaussian_kernel(9, 2.0) in float32.
std::array<float, kSmoothingTaps> smoothing_taps();

// frames: [B, T, V, 3] float32; forehead, neck: [V] float32; out: [B, T, V, 3] (may not alias frames).
// threads: 0 = every core. Throws kInvalidArgument (argument, expected, found) on a bad size or a null buffer.
void post_smooth(const float* frames, int64_t B, int64_t T, int64_t V, const float* forehead, const float* neck,
                 float* out, int64_t threads = 0);

// One stream of frames [V, 3]. Memory: 22 frames of [V, 3] (the last 9 pushed, 9 first-pass
// results, 4 provisional ones), allocated by the constructor; push() and close() allocate nothing.
class StreamingSmoother {
 public:
  // forehead, neck: [V] (copied); delay in [0, 8] (streaming.py offers 4 and 8).
  // pool (optional): each push's rows are split into blocks of columns over its threads (the same
  // bits: every column is blended on its own).
  StreamingSmoother(int64_t n_vertices, const float* forehead, const float* neck, int64_t delay,
                    std::shared_ptr<ThreadPool> pool = nullptr);

  int64_t n_vertices() const noexcept { return V_; }
  int64_t delay() const noexcept { return delay_; }
  int64_t pushed() const noexcept { return pushed_; }    // frames pushed since the last reset
  int64_t emitted() const noexcept { return emitted_; }  // frames emitted since the last reset
  int64_t pending() const noexcept { return pushed_ - emitted_; }
  bool closed() const noexcept { return closed_; }

  // Appends frame [V, 3]; when frame t = pushed - 1 - delay becomes ready, writes it to out [V, 3]
  // and returns true (else out is untouched). Throws kInvalidArgument after close() or on null buffers.
  bool push(const float* frame, float* out);
  // End of the stream: writes the pending frames to out [max_frames, V, 3] and returns how many
  // (pending() <= delay of them); throws kInvalidArgument if max_frames < pending().
  int64_t close(float* out, int64_t max_frames);
  // A new stream (the masks and delay stay).
  void reset() noexcept;
  // Off: the calling thread only (a session in a batch, whose threads already split the sessions).
  void set_threaded(bool on) noexcept { threaded_ = on; }

 private:
  const float* x(int64_t u) const;         // pushed frame u (one of the last 9)
  // The rows a push or close computes, planned first (bookkeeping), then blended in blocks of columns.
  struct Job {
    int64_t final_u = -1;          // first-pass frame that became final (-1: none)
    int64_t end = 0;               // frames of the sequence so far
    int64_t todo[4] = {0, 0, 0, 0};  // provisional first-pass frames to compute
    int n_todo = 0;
    const float* rows[kSmoothingTaps] = {};  // first-pass rows of the output frame
    const float* center = nullptr;
    float* out = nullptr;          // null: no output frame
  };
  const float* y1_row(int64_t u, int64_t end, Job* job);  // plans first-pass frame u
  void plan_emit(int64_t t, int64_t end, float* out, Job* job);
  void run(const Job& job);
  void columns(const Job& job, int64_t j0, int64_t j1);

  int64_t V_, V3_, delay_;
  std::array<float, kSmoothingTaps> taps_;
  std::vector<float> m1_, om1_, m2_, om2_;  // masks and 1 - mask per coordinate [V * 3]
  std::vector<float> x_;                    // ring of the last 9 pushed frames
  std::vector<float> y1_;                   // ring of first-pass frames that are final
  std::vector<float> provisional_;          // [4, V3]: first-pass frames within 4 of the end
  int64_t provisional_at_[4] = {-1, -1, -1, -1};
  int64_t provisional_end_ = -1;
  int64_t pushed_ = 0, emitted_ = 0;
  bool closed_ = false;
  std::shared_ptr<ThreadPool> pool_;
  bool threaded_ = true;
  int64_t blocks_ = 1;  // column blocks per push when threaded
  const Job* job_ = nullptr;  // the job of the running push, for the column tasks
};

}  // namespace meshtalk
