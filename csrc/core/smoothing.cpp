// The released post-smoothing (smoothing.hpp).
//
// Both passes go through one row function, blend_row: out = (sum_k taps[k] * rows[k]) * m +
// center * (1 - m), the sum taken in tap order. The whole-sequence function and the streaming smoother
// call it on the same rows for a frame whose window is complete, so their results are identical.
// Whole sequences are split into blocks of columns (coordinates are independent), one task per
// (sequence, block), so a block's first-pass frames stay in cache for the second pass.
#include "meshtalk/smoothing.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "meshtalk/status.hpp"
#include "meshtalk/threads.hpp"

namespace meshtalk {
namespace {

constexpr int64_t kHalf = kSmoothingTaps / 2;
constexpr int64_t kBlock = 2048;  // columns per task of the whole-sequence function
constexpr int64_t kStreamBlock = 4096;  // fewest columns per thread of a streaming push

// out[j] = (sum_k taps[k] * rows[k][j]) * m[j] + center[j] * om[j] for j < len.
//
// Vectorised, and also compiled for AVX2 (chosen at load by the CPU, GCC's target_clones): twice the lanes of
// the baseline SSE2 loop, the same operations in the same order per element. AVX2 does not include FMA, so
// nothing is contracted into a fused multiply-add and every ISA gives the same bits (AVX-512F would: not
// cloned).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(MESHTALK_NO_TARGET_CLONES)
__attribute__((target_clones("avx2", "default")))
#endif
void blend_row(const float* const* rows, const float* center, const float* m, const float* om, const float* taps,
               int64_t len, float* out) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5],
              *r6 = rows[6], *r7 = rows[7], *r8 = rows[8];
  const float w0 = taps[0], w1 = taps[1], w2 = taps[2], w3 = taps[3], w4 = taps[4], w5 = taps[5], w6 = taps[6],
              w7 = taps[7], w8 = taps[8];
  // out never overlaps a row read here (every caller writes another buffer), so the loop may be vectorised
  // (without this GCC keeps it scalar: it cannot prove the 12 pointers apart).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#elif defined(__clang__)
#pragma clang loop vectorize(assume_safety)
#endif
  for (int64_t j = 0; j < len; ++j) {
    float s = w0 * r0[j];
    s += w1 * r1[j];
    s += w2 * r2[j];
    s += w3 * r3[j];
    s += w4 * r4[j];
    s += w5 * r5[j];
    s += w6 * r6[j];
    s += w7 * r7[j];
    s += w8 * r8[j];
    out[j] = s * m[j] + center[j] * om[j];
  }
}

inline int64_t clamp(int64_t u, int64_t lo, int64_t hi) { return std::min(std::max(u, lo), hi); }

// m and 1 - m per coordinate [V * 3] (1 - m in float32, as torch's `1 - mask`).
void expand_mask(const float* mask, int64_t V, std::vector<float>* m, std::vector<float>* om) {
  m->resize(static_cast<size_t>(V * 3));
  om->resize(static_cast<size_t>(V * 3));
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < 3; ++k) {
      (*m)[v * 3 + k] = mask[v];
      (*om)[v * 3 + k] = 1.0f - mask[v];
    }
}

}  // namespace

std::array<float, kSmoothingTaps> smoothing_taps() {
  double w[kSmoothingTaps], sum = 0.0;
  for (int64_t i = 0; i < kSmoothingTaps; ++i) {
    const double x = static_cast<double>(i - kHalf);
    w[i] = std::exp(-0.5 * x * x / (2.0 * 2.0));
    sum += w[i];
  }
  std::array<float, kSmoothingTaps> taps{};
  for (int64_t i = 0; i < kSmoothingTaps; ++i) taps[i] = static_cast<float>(w[i] / sum);
  return taps;
}

void post_smooth(const float* frames, int64_t B, int64_t T, int64_t V, const float* forehead, const float* neck,
                 float* out, int64_t threads) {
  if (B < 1 || T < 1 || V < 1)
    throw_mismatch("frames [B, T, V, 3]", "B, T, V >= 1",
                   "B=" + std::to_string(B) + ", T=" + std::to_string(T) + ", V=" + std::to_string(V));
  if (!frames || !forehead || !neck || !out)
    throw_mismatch("frames, forehead, neck and out", "non-null buffers", "a null pointer");
  const int64_t limit = std::numeric_limits<int64_t>::max() / 16;
  if (V > limit / 3 || T > limit / (3 * V) || B > limit / (3 * V * T))
    throw_mismatch("frames [B, T, V, 3]", "B * T * V * 3 addressable in 64 bits",
                   "B=" + std::to_string(B) + ", T=" + std::to_string(T) + ", V=" + std::to_string(V));
  const int64_t V3 = V * 3;
  std::vector<float> m1, om1, m2, om2;
  expand_mask(forehead, V, &m1, &om1);
  expand_mask(neck, V, &m2, &om2);
  const std::array<float, kSmoothingTaps> taps = smoothing_taps();
  const int64_t blocks = (V3 + kBlock - 1) / kBlock;
  ThreadPool pool(static_cast<int>(std::min<int64_t>(resolve_thread_count(threads), B * blocks)));
  pool.parallel_for(B * blocks, [&](int64_t task) {
    const int64_t b = task / blocks, j0 = (task % blocks) * kBlock, len = std::min(kBlock, V3 - j0);
    const float* x = frames + b * T * V3 + j0;
    float* o = out + b * T * V3 + j0;
    std::vector<float> y1(static_cast<size_t>(T * len));  // first pass of this block [T, len]
    const float* rows[kSmoothingTaps];
    for (int64_t u = 0; u < T; ++u) {
      for (int64_t k = 0; k < kSmoothingTaps; ++k) rows[k] = x + clamp(u + k - kHalf, 0, T - 1) * V3;
      blend_row(rows, x + u * V3, m1.data() + j0, om1.data() + j0, taps.data(), len, y1.data() + u * len);
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < kSmoothingTaps; ++k) rows[k] = y1.data() + clamp(t + k - kHalf, 0, T - 1) * len;
      blend_row(rows, y1.data() + t * len, m2.data() + j0, om2.data() + j0, taps.data(), len, o + t * V3);
    }
  });
}

StreamingSmoother::StreamingSmoother(int64_t n_vertices, const float* forehead, const float* neck, int64_t delay,
                                     std::shared_ptr<ThreadPool> pool)
    : V_(n_vertices), V3_(n_vertices * 3), delay_(delay), taps_(smoothing_taps()), pool_(std::move(pool)) {
  if (n_vertices < 1 || n_vertices > (int64_t(1) << 24))
    throw_mismatch("n_vertices", "a vertex count in [1, 2^24]", std::to_string(n_vertices));
  if (delay < 0 || delay > kSmoothingReach)
    throw_mismatch("delay", "a delay in [0, 8] frames (8: exact)", std::to_string(delay));
  if (!forehead || !neck) throw_mismatch("forehead and neck", "non-null [V] masks", "a null pointer");
  expand_mask(forehead, V_, &m1_, &om1_);
  expand_mask(neck, V_, &m2_, &om2_);
  x_.assign(static_cast<size_t>(kSmoothingTaps * V3_), 0.0f);
  y1_.assign(static_cast<size_t>(kSmoothingTaps * V3_), 0.0f);
  provisional_.assign(static_cast<size_t>(kHalf * V3_), 0.0f);
  // Blocks of at least kStreamBlock columns, one per thread at most, starting on 16-float boundaries.
  if (pool_) blocks_ = std::max<int64_t>(1, std::min<int64_t>(pool_->size(), V3_ / kStreamBlock));
}

void StreamingSmoother::reset() noexcept {
  pushed_ = emitted_ = 0;
  closed_ = false;
  provisional_end_ = -1;
  std::fill(std::begin(provisional_at_), std::end(provisional_at_), -1);
}

const float* StreamingSmoother::x(int64_t u) const { return x_.data() + (u % kSmoothingTaps) * V3_; }

// First-pass frame u (0 <= u < end) of the sequence of frames [0, end): final once frame u + 4 exists
// (kept in the y1 ring since that push), else computed with replicate padding at end - 1 (planned into
// job->todo when not already computed for this end).
const float* StreamingSmoother::y1_row(int64_t u, int64_t end, Job* job) {
  if (u + kHalf < pushed_) return y1_.data() + (u % kSmoothingTaps) * V3_;
  if (provisional_end_ != end) {
    std::fill(std::begin(provisional_at_), std::end(provisional_at_), -1);
    provisional_end_ = end;
  }
  if (provisional_at_[u % kHalf] != u) {
    provisional_at_[u % kHalf] = u;
    job->todo[job->n_todo++] = u;
  }
  return provisional_.data() + (u % kHalf) * V3_;
}

void StreamingSmoother::plan_emit(int64_t t, int64_t end, float* out, Job* job) {
  job->end = end;
  for (int64_t k = 0; k < kSmoothingTaps; ++k) job->rows[k] = y1_row(clamp(t + k - kHalf, 0, end - 1), end, job);
  job->center = y1_row(t, end, job);
  job->out = out;
}

// Columns [j0, j1) of the job's rows, in the order the rows depend on each other.
void StreamingSmoother::columns(const Job& job, int64_t j0, int64_t j1) {
  const int64_t len = j1 - j0;
  if (len <= 0) return;
  const float* rows[kSmoothingTaps];
  const auto first_pass = [&](int64_t u, int64_t end, float* dst) {
    for (int64_t k = 0; k < kSmoothingTaps; ++k) rows[k] = x(clamp(u + k - kHalf, 0, end - 1)) + j0;
    blend_row(rows, x(u) + j0, m1_.data() + j0, om1_.data() + j0, taps_.data(), len, dst + j0);
  };
  if (job.final_u >= 0)
    first_pass(job.final_u, job.final_u + kHalf + 1, y1_.data() + (job.final_u % kSmoothingTaps) * V3_);
  for (int i = 0; i < job.n_todo; ++i)
    first_pass(job.todo[i], job.end, provisional_.data() + (job.todo[i] % kHalf) * V3_);
  if (job.out == nullptr) return;
  for (int64_t k = 0; k < kSmoothingTaps; ++k) rows[k] = job.rows[k] + j0;
  blend_row(rows, job.center + j0, m2_.data() + j0, om2_.data() + j0, taps_.data(), len, job.out + j0);
}

void StreamingSmoother::run(const Job& job) {
  if (threaded_ && blocks_ > 1) {
    // The task captures one pointer, which std::function stores inline: a push allocates nothing (and
    // a moved smoother has no task pointing at its old self).
    job_ = &job;
    pool_->parallel_for(blocks_, [this](int64_t b) {
      const int64_t j0 = (V3_ * b / blocks_) & ~int64_t(15);
      const int64_t j1 = b + 1 == blocks_ ? V3_ : (V3_ * (b + 1) / blocks_) & ~int64_t(15);
      columns(*job_, j0, j1);
    });
    job_ = nullptr;
  } else {
    columns(job, 0, V3_);
  }
}

bool StreamingSmoother::push(const float* frame, float* out) {
  if (closed_) throw_mismatch("push", "an open stream (call reset() to start a new one)", "a closed stream");
  if (!frame || !out) throw_mismatch("frame and out", "non-null [V, 3] buffers", "a null pointer");
  const int64_t K = pushed_ + 1;  // frames known after this push
  std::memcpy(x_.data() + (pushed_ % kSmoothingTaps) * V3_, frame, V3_ * sizeof(float));
  pushed_ = K;
  provisional_end_ = -1;  // the end moved: provisional first-pass frames are stale
  Job job;
  job.final_u = K - 1 - kHalf;  // the first-pass frame that just became final (its window: frames .. K - 1)
  const int64_t t = K - 1 - delay_;
  if (t >= 0) plan_emit(t, K, out, &job);
  run(job);
  if (t < 0) return false;
  ++emitted_;
  return true;
}

int64_t StreamingSmoother::close(float* out, int64_t max_frames) {
  if (closed_) throw_mismatch("close", "an open stream (call reset() to start a new one)", "a closed stream");
  const int64_t n = pending();
  if (max_frames < n)
    throw_mismatch("close max_frames", "room for the " + std::to_string(n) + " pending frames",
                   std::to_string(max_frames));
  if (n > 0 && !out) throw_mismatch("out", "a non-null [pending, V, 3] buffer", "a null pointer");
  closed_ = true;
  for (int64_t i = 0; i < n; ++i) {
    Job job;
    plan_emit(emitted_, pushed_, out + i * V3_, &job);
    run(job);
    ++emitted_;
  }
  return n;
}

}  // namespace meshtalk
