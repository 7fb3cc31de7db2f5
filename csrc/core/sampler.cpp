// The batched sampler (sampler.hpp).
//
// Work split: sequences are independent, so they are dealt (longest first, round-robin) into
// min(B, threads) groups, one per thread, and every group runs all its steps with no
// synchronisation at all. A single sequence (B = 1) on several threads is one group whose per-step
// products (the historic taps and audio projections, ~80% of the multiply-adds) are split by output
// columns across the threads once per step; the head-by-head part, which is sequential, stays on the
// calling thread. Either way each output element is computed by the same sequence of operations,
// so the result does not depend on the thread count.
//
// Mixed lengths: a group keeps its sequences sorted by length, longest first, so the sequences
// still running at step t are a prefix of its rows and every product runs on just those rows.
#include "meshtalk/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "meshtalk/status.hpp"
#include "meshtalk/threads.hpp"

namespace meshtalk {
namespace {

constexpr float kLeakySlope = 0.2f;

// Philox-4x32-10 (Salmon et al., SC'11): 10 rounds of multiply-xorshift on a 128-bit counter
// under a 64-bit key.
void philox4x32(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * ctr[0];
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * ctr[2];
    const uint32_t next[4] = {uint32_t(p1 >> 32) ^ ctr[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ k1,
                              uint32_t(p0)};
    std::memcpy(ctr, next, sizeof next);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

inline float bits_to_uniform(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// g[c] = -log(-log(max(U(seed, t, h, c), 1e-10))) for c < C.
void gumbel_row(uint64_t seed, int64_t t, int64_t h, int64_t C, float* g) {
  for (int64_t c0 = 0; c0 < C; c0 += 4) {
    uint32_t ctr[4] = {uint32_t(c0 / 4), uint32_t(h), uint32_t(uint64_t(t)), uint32_t(uint64_t(t) >> 32)};
    philox4x32(ctr, uint32_t(seed), uint32_t(seed >> 32));
    for (int64_t j = 0; j < 4 && c0 + j < C; ++j) {
      const float u = std::max(bits_to_uniform(ctr[j]), 1e-10f);
      g[c0 + j] = -std::log(-std::log(u));
    }
  }
}

struct Shared {
  const ContextWeights& w;
  const float* audio;  // [B, T, A]
  int64_t T;
  bool argmax;
  const uint64_t* seeds;
  int32_t* labels;  // [B, T, H] or null
  float* one_hot;   // [B, T, H, C] or null
};

// The state of a set of sequences, sorted by length (longest first), stepped together.
class Group {
 public:
  Group(const Shared& s, std::vector<int64_t> seqs, std::vector<int64_t> lengths)
      : s_(s), seqs_(std::move(seqs)), lengths_(std::move(lengths)) {
    const ModelConfig& c = s_.w.config;
    H_ = c.heads;
    C_ = c.classes;
    hid_ = c.context_hidden;
    A_ = c.audio_dim;
    HI_ = H_ * hid_;
    const int64_t n = static_cast<int64_t>(seqs_.size());
    for (const ContextWeights::Layer& l : s_.w.layers) {
      ring_.emplace_back(static_cast<size_t>((l.dilation + 2) * n * HI_), 0.0f);
      fixed_.emplace_back(static_cast<size_t>(n * HI_), 0.0f);
    }
    top_.assign(static_cast<size_t>(n * HI_), 0.0f);
    audio_.assign(static_cast<size_t>(n * A_), 0.0f);
    logits_.assign(static_cast<size_t>(n * C_), 0.0f);
    noise_.assign(static_cast<size_t>(C_), 0.0f);
    current_.assign(static_cast<size_t>(n * H_), 0);
  }

  // pool: threads to split the per-step products over, or null.
  void run(ThreadPool* pool) {
    const int64_t L = static_cast<int64_t>(s_.w.layers.size());
    const int64_t splits = pool ? pool->size() : 1;
    const int64_t panels = (HI_ + WeightMatrix::kPanel - 1) / WeightMatrix::kPanel;
    // Built once: no allocation per step.
    const std::function<void(int64_t)> task = [&](int64_t i) {
      const int64_t s = i % splits;
      fixed_term(i / splits, s * panels / splits, (s + 1) * panels / splits);
    };
    int64_t active = static_cast<int64_t>(seqs_.size());
    for (t_ = 0; t_ < s_.T; ++t_) {
      while (active > 0 && lengths_[active - 1] <= t_) --active;
      if (active == 0) break;
      n_ = active;
      for (int64_t i = 0; i < n_; ++i)
        std::memcpy(audio_.data() + i * A_, s_.audio + (seqs_[i] * s_.T + t_) * A_, A_ * sizeof(float));
      if (pool) pool->parallel_for(L * splits, task);
      else for (int64_t l = 0; l < L; ++l) fixed_term(l, 0, panels);
      for (int64_t h = 0; h < H_; ++h) head(h);
    }
  }

 private:
  float* ring(size_t l, int64_t t) {
    const int64_t slots = s_.w.layers[l].dilation + 2;
    return ring_[l].data() + (t % slots) * static_cast<int64_t>(seqs_.size()) * HI_;
  }

  // Layer l's per-step term for columns of panels [p0, p1): bias + audio + historic taps.
  void fixed_term(int64_t l, int64_t p0, int64_t p1) {
    const ContextWeights::Layer& layer = s_.w.layers[l];
    float* f = fixed_[l].data();
    const int64_t c0 = p0 * WeightMatrix::kPanel, c1 = std::min(p1 * WeightMatrix::kPanel, HI_);
    if (c0 >= c1) return;
    for (int64_t i = 0; i < n_; ++i)
      std::memcpy(f + i * HI_ + c0, layer.bias.data() + c0, (c1 - c0) * sizeof(float));
    gemm(n_, audio_.data(), A_, layer.audio, f, HI_, true, p0, p1);
    if (t_ >= 1) gemm(n_, ring(l, t_ - 1), HI_, layer.prev, f, HI_, true, p0, p1);
    if (t_ - 1 - layer.dilation >= 0) gemm(n_, ring(l, t_ - 1 - layer.dilation), HI_, layer.dilated, f, HI_, true, p0, p1);
  }

  void head(int64_t h) {
    const ContextWeights& w = s_.w;
    const int64_t L = static_cast<int64_t>(w.layers.size());
    // Embedding: one-hot input, so the masked product is a sum of the columns of the labels of heads < h.
    float* x0 = ring(0, t_);
    for (int64_t i = 0; i < n_; ++i) {
      float* dst = x0 + i * HI_ + h * hid_;
      std::memcpy(dst, w.embedding_bias.data() + h * hid_, hid_ * sizeof(float));
      for (int64_t j = 0; j < h; ++j) {
        const float* col = w.embedding_columns.data() + ((h * (h - 1) / 2 + j) * C_ + current_[i * H_ + j]) * hid_;
        for (int64_t r = 0; r < hid_; ++r) dst[r] += col[r];
      }
    }
    for (int64_t l = 0; l < L; ++l) {
      float* f = fixed_[l].data() + h * hid_;
      if (h > 0) gemm(n_, ring(l, t_), HI_, w.layers[l].masked[h], f, HI_, true);
      float* out = (l + 1 < L ? ring(l + 1, t_) : top_.data()) + h * hid_;
      for (int64_t i = 0; i < n_; ++i)
        for (int64_t r = 0; r < hid_; ++r) {
          const float v = f[i * HI_ + r];
          out[i * HI_ + r] = v > 0.0f ? v : v * kLeakySlope;  // torch's leaky_relu
        }
    }
    float* z = logits_.data();
    for (int64_t i = 0; i < n_; ++i) std::memcpy(z + i * C_, w.logits_bias.data() + h * C_, C_ * sizeof(float));
    if (h > 0) gemm(n_, top_.data(), HI_, w.logits[h], z, C_, true);
    for (int64_t i = 0; i < n_; ++i) {
      const int32_t label = choose(z + i * C_, i, h);
      current_[i * H_ + h] = label;
      const int64_t at = (seqs_[i] * s_.T + t_) * H_ + h;
      if (s_.labels) s_.labels[at] = label;
      if (s_.one_hot) s_.one_hot[at * C_ + label] = 1.0f;
    }
  }

  // log-softmax over C (as torch: (z - max) - log(sum(exp(z - max)))), + noise, argmax.
  int32_t choose(const float* z, int64_t i, int64_t h) {
    float m = z[0];
    for (int64_t c = 1; c < C_; ++c) m = std::max(m, z[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < C_; ++c) sum += std::exp(z[c] - m);
    const float log_sum = std::log(sum);
    if (!s_.argmax) gumbel_row(s_.seeds[seqs_[i]], t_, h, C_, noise_.data());
    int32_t best = 0;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C_; ++c) {
      float v = (z[c] - m) - log_sum;
      if (!s_.argmax) v += noise_[c];
      if (c == 0 || v > best_value) {  // strict: the lowest index wins a tie, as torch.argmax
        best_value = v;
        best = static_cast<int32_t>(c);
      }
    }
    return best;
  }

  const Shared& s_;
  std::vector<int64_t> seqs_, lengths_;
  int64_t H_ = 0, C_ = 0, hid_ = 0, A_ = 0, HI_ = 0;
  int64_t t_ = 0, n_ = 0;  // the current step and the number of sequences still running
  std::vector<std::vector<float>> ring_, fixed_;
  std::vector<float> top_, audio_, logits_, noise_;
  std::vector<int32_t> current_;  // labels of this step, [n, H]
};

}  // namespace

float counter_uniform(uint64_t seed, int64_t t, int64_t h, int64_t c) {
  uint32_t ctr[4] = {uint32_t(c / 4), uint32_t(h), uint32_t(uint64_t(t)), uint32_t(uint64_t(t) >> 32)};
  philox4x32(ctr, uint32_t(seed), uint32_t(seed >> 32));
  return bits_to_uniform(ctr[c % 4]);
}

void sample(const ContextWeights& weights, const float* audio, int64_t B, int64_t T, const int64_t* lengths,
            const uint64_t* seeds, const SampleOptions& options, int32_t* labels, float* one_hot) {
  const ModelConfig& c = weights.config;
  if (B < 1) throw_mismatch("audio_code batch size B", "B >= 1", std::to_string(B));
  if (T < 1) throw_mismatch("audio_code length T", "T >= 1", std::to_string(T));
  if (audio == nullptr) throw_mismatch("audio_code", "a non-null buffer", "null");
  if (!options.argmax && seeds == nullptr)
    throw_mismatch("seeds", "one seed per sequence for Gumbel sampling (argmax=false)", "none");
  const int threads = resolve_thread_count(options.threads);
  // Reject sizes whose buffers could not be indexed before touching anything.
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8;
  if (T > limit / B || B * T > limit / (c.heads * std::max(c.classes, c.audio_dim)))
    throw_mismatch("audio_code [B, T]", "B * T * H * C addressable in 64 bits",
                   "B=" + std::to_string(B) + ", T=" + std::to_string(T));
  std::vector<int64_t> len(static_cast<size_t>(B), T);
  if (lengths)
    for (int64_t b = 0; b < B; ++b) {
      if (lengths[b] < 0 || lengths[b] > T)
        throw_mismatch("lengths[" + std::to_string(b) + "]", "a length in [0, T=" + std::to_string(T) + "]",
                       std::to_string(lengths[b]));
      len[b] = lengths[b];
    }
  if (labels) std::fill(labels, labels + B * T * c.heads, -1);

  std::vector<int64_t> order(static_cast<size_t>(B));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  const Shared shared{weights, audio, T, options.argmax, seeds, labels, one_hot};
  const int64_t groups = std::min<int64_t>(threads, B);
  std::vector<std::vector<int64_t>> seqs(groups), lens(groups);
  for (int64_t k = 0; k < B; ++k) {  // deal longest first: the groups get similar work
    seqs[k % groups].push_back(order[k]);
    lens[k % groups].push_back(len[order[k]]);
  }
  std::vector<Group> state;
  state.reserve(groups);
  for (int64_t g = 0; g < groups; ++g) state.emplace_back(shared, std::move(seqs[g]), std::move(lens[g]));
  ThreadPool pool(threads);
  if (groups > 1) pool.parallel_for(groups, [&](int64_t g) { state[g].run(nullptr); });
  else state[0].run(threads > 1 ? &pool : nullptr);
}

}  // namespace meshtalk
