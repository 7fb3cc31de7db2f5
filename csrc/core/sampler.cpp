// The batched sampler (sampler.hpp): SamplerState, and `sample` as T steps of one.
//
// A step runs in two phases over the n slots stepped:
//   1. the per-step term of every context layer (bias + audio projection + both historic taps) for
//      all n rows, split by output columns across the threads (each weight read once per step);
//   2. the heads, sequential in h, split by rows across the threads (sequences are independent).
// Each output element is computed by the same operations whichever thread runs it and whichever
// other rows share the call (gemm.hpp), so results depend neither on the thread count nor on the
// batch.
//
// Rows: the slots of a step are put in order of decreasing t, so the rows that have a step t-1 (or
// t-1-d) to read are a prefix and each tap is one product on that prefix. The taps are read straight
// from the rings when the rows are consecutive slots at the same ring position (always so in
// `sample`, which gives sequence k of the length order slot k), else gathered into scratch rows; the
// layers' inputs of this step are likewise written straight into the rings or gathered and
// scattered.
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

// A row-major block of rows: row i at p + i * ld.
struct Rows {
  float* p = nullptr;
  int64_t ld = 0;
};

}  // namespace

struct SamplerState::Impl {
  Impl(const ContextWeights& weights, std::shared_ptr<const ContextWeights> keep, int64_t capacity,
       std::shared_ptr<ThreadPool> pool)
      : keep_(std::move(keep)), w_(weights), cap_(capacity), pool_(std::move(pool)) {
    if (!pool_) throw_mismatch("pool", "a thread pool", "a null pointer");
    const ModelConfig& c = w_.config;
    if (capacity < 1) throw_mismatch("capacity", "at least 1 slot", std::to_string(capacity));
    if (capacity > (int64_t(1) << 24)) throw_mismatch("capacity", "at most 2^24 slots", std::to_string(capacity));
    H_ = c.heads;
    C_ = c.classes;
    hid_ = c.context_hidden;
    A_ = c.audio_dim;
    HI_ = H_ * hid_;
    L_ = static_cast<int64_t>(w_.layers.size());
    own_ = c.inclusive_head_masks;
    const size_t cap = static_cast<size_t>(cap_), hi = static_cast<size_t>(HI_);
    seed_.assign(cap, 0);
    t_.assign(cap, 0);
    argmax_.assign(cap, 0);
    assigned_.assign(cap, 0);
    mark_.assign(cap, 0);
    for (const ContextWeights::Layer& l : w_.layers) {
      ring_.emplace_back(cap * static_cast<size_t>(l.dilation + 1) * hi, 0.0f);
      fixed_.emplace_back(cap * hi, 0.0f);
      prev_.emplace_back(cap * hi, 0.0f);
      dilated_.emplace_back(cap * hi, 0.0f);
    }
    for (int64_t l = 0; l <= L_; ++l) cur_.emplace_back(cap * hi, 0.0f);  // inputs of layer l; [L] = logits input
    taps_.assign(static_cast<size_t>(2 * L_), Rows{});
    tap_rows_.assign(static_cast<size_t>(2 * L_), 0);
    in_.assign(static_cast<size_t>(L_ + 1), Rows{});
    audio_.assign(cap * static_cast<size_t>(A_), 0.0f);
    logits_.assign(cap * static_cast<size_t>(C_), 0.0f);
    noise_.assign(cap * static_cast<size_t>(C_), 0.0f);
    current_.assign(cap * static_cast<size_t>(H_), 0);
    order_.assign(cap, 0);
    slot_.assign(cap, 0);
    audio_ptr_.assign(cap, nullptr);
    label_ptr_.assign(cap, nullptr);
    one_hot_ptr_.assign(cap, nullptr);
    const int64_t panels = (HI_ + WeightMatrix::kPanel - 1) / WeightMatrix::kPanel;
    splits_ = std::min<int64_t>(pool_->size(), panels);
    // Built once: a step allocates nothing.
    fixed_task_ = [this, panels](int64_t i) {
      const int64_t s = i % splits_;
      fixed_term(i / splits_, s * panels / splits_, (s + 1) * panels / splits_);
    };
    head_task_ = [this](int64_t i) { heads(i * n_ / row_splits_, (i + 1) * n_ / row_splits_); };
  }

  void check_slot(int64_t slot, const char* what) const {
    if (slot < 0 || slot >= cap_)
      throw_mismatch(what, "a slot in [0, capacity=" + std::to_string(cap_) + ")", std::to_string(slot));
  }

  void step(const int64_t* slots, int64_t n, const float* const* audio_rows, int32_t* const* label_rows,
            float* const* one_hot_rows, bool zero_one_hot) {
    if (n < 0 || n > cap_)
      throw_mismatch("n (slots to step)", "a count in [0, capacity=" + std::to_string(cap_) + "]", std::to_string(n));
    if (n == 0) return;
    if (slots == nullptr || audio_rows == nullptr)
      throw_mismatch("slots and audio", "non-null buffers", "a null pointer");
    // Validate everything before touching any state.
    int64_t bad = -1;
    std::string why;
    for (int64_t j = 0; j < n && bad < 0; ++j) {
      const int64_t s = slots[j];
      if (s < 0 || s >= cap_) why = "a slot in [0, capacity=" + std::to_string(cap_) + ")";
      else if (!assigned_[s]) why = "an assigned slot (call reset(slot, seed) first)";
      else if (mark_[s]) why = "each slot at most once per step";
      if (!why.empty()) bad = j;
      else mark_[s] = 1;
    }
    for (int64_t j = 0; j < n; ++j)
      if (slots[j] >= 0 && slots[j] < cap_) mark_[slots[j]] = 0;
    if (bad >= 0) throw_mismatch("slots[" + std::to_string(bad) + "]", why, std::to_string(slots[bad]));
    for (int64_t j = 0; j < n; ++j)
      if (audio_rows[j] == nullptr) throw_mismatch("audio row " + std::to_string(j), "a non-null pointer", "null");

    n_ = n;
    zero_one_hot_ = zero_one_hot;
    label_rows_ = label_rows;
    one_hot_rows_ = one_hot_rows;
    // Rows in order of decreasing t (ties: the caller's order); insertion sort allocates nothing.
    for (int64_t j = 0; j < n; ++j) {
      int64_t i = j;
      while (i > 0 && t_[slots[order_[i - 1]]] < t_[slots[j]]) {
        order_[i] = order_[i - 1];
        --i;
      }
      order_[i] = j;
    }
    bool consecutive = true;
    for (int64_t i = 0; i < n; ++i) {
      slot_[i] = slots[order_[i]];
      std::memcpy(audio_.data() + i * A_, audio_rows[order_[i]], A_ * sizeof(float));
      if (i > 0 && (slot_[i] != slot_[0] + i || t_[slot_[i]] != t_[slot_[0]])) consecutive = false;
    }
    // Historic taps: rows with a step t-1 (t-1-d) form a prefix.
    for (int64_t l = 0; l < L_; ++l) {
      const int64_t d = w_.layers[l].dilation;
      tap(l, 0, 1, consecutive, prev_[l]);
      tap(l, 1, 1 + d, consecutive, dilated_[l]);
      // This step's input of layer l: into the ring when the rows are consecutive slots at one position.
      if (consecutive) in_[l] = ring_row(l, slot_[0], t_[slot_[0]]);
      else in_[l] = Rows{cur_[l].data(), HI_};
    }
    in_[L_] = Rows{cur_[L_].data(), HI_};

    if (splits_ > 1) pool_->parallel_for(L_ * splits_, fixed_task_);
    else for (int64_t l = 0; l < L_; ++l) fixed_term(l, 0, (HI_ + WeightMatrix::kPanel - 1) / WeightMatrix::kPanel);
    row_splits_ = std::min<int64_t>(pool_->size(), n);
    if (row_splits_ > 1) pool_->parallel_for(row_splits_, head_task_);
    else heads(0, n);

    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = slot_[i];
      if (!consecutive)
        for (int64_t l = 0; l < L_; ++l) {
          const Rows dst = ring_row(l, s, t_[s]);
          std::memcpy(dst.p, cur_[l].data() + i * HI_, HI_ * sizeof(float));
        }
      ++t_[s];
    }
  }

  // Row of slot s's ring of layer l holding step t, with the row stride between consecutive slots.
  Rows ring_row(int64_t l, int64_t s, int64_t t) {
    const int64_t slots = w_.layers[l].dilation + 1;
    return Rows{ring_[l].data() + (s * slots + t % slots) * HI_, slots * HI_};
  }

  // Tap k (0: step t-1, 1: step t-1-d) of layer l: the rows of the prefix whose t >= lag.
  void tap(int64_t l, int k, int64_t lag, bool consecutive, std::vector<float>& scratch) {
    int64_t m = 0;
    while (m < n_ && t_[slot_[m]] >= lag) ++m;
    tap_rows_[2 * l + k] = m;
    if (m == 0) return;
    if (consecutive) {
      taps_[2 * l + k] = ring_row(l, slot_[0], t_[slot_[0]] - lag);
      return;
    }
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(scratch.data() + i * HI_, ring_row(l, slot_[i], t_[slot_[i]] - lag).p, HI_ * sizeof(float));
    taps_[2 * l + k] = Rows{scratch.data(), HI_};
  }

  // Layer l's per-step term for columns of panels [p0, p1): bias + audio + historic taps.
  void fixed_term(int64_t l, int64_t p0, int64_t p1) {
    const ContextWeights::Layer& layer = w_.layers[l];
    float* f = fixed_[l].data();
    const int64_t c0 = p0 * WeightMatrix::kPanel, c1 = std::min(p1 * WeightMatrix::kPanel, HI_);
    if (c0 >= c1) return;
    for (int64_t i = 0; i < n_; ++i)
      std::memcpy(f + i * HI_ + c0, layer.bias.data() + c0, (c1 - c0) * sizeof(float));
    gemm(n_, audio_.data(), A_, layer.audio, f, HI_, true, p0, p1);
    const Rows& prev = taps_[2 * l];
    const Rows& dilated = taps_[2 * l + 1];
    if (tap_rows_[2 * l] > 0) gemm(tap_rows_[2 * l], prev.p, prev.ld, layer.prev, f, HI_, true, p0, p1);
    if (tap_rows_[2 * l + 1] > 0) gemm(tap_rows_[2 * l + 1], dilated.p, dilated.ld, layer.dilated, f, HI_, true, p0, p1);
  }

  // Every head of rows [r0, r1).
  void heads(int64_t r0, int64_t r1) {
    const int64_t m = r1 - r0;
    if (m <= 0) return;
    for (int64_t h = 0; h < H_; ++h) {
      // Embedding: a one-hot input, so the masked product is a sum of the columns of the labels of heads < h.
      const Rows x0 = in_[0];
      for (int64_t i = r0; i < r1; ++i) {
        float* dst = x0.p + i * x0.ld + h * hid_;
        std::memcpy(dst, w_.embedding_bias.data() + h * hid_, hid_ * sizeof(float));
        for (int64_t j = 0; j < h; ++j) {
          const float* col =
              w_.embedding_columns.data() + ((h * (h - 1) / 2 + j) * C_ + current_[i * H_ + j]) * hid_;
          for (int64_t r = 0; r < hid_; ++r) dst[r] += col[r];
        }
      }
      for (int64_t l = 0; l < L_; ++l) {
        float* f = fixed_[l].data() + r0 * HI_ + h * hid_;
        const Rows in = in_[l], out = in_[l + 1];
        // masked[h] reads a prefix of the heads of this step: those < h (released) or <= h (inclusive;
        // head h of layer l's input was written just above, at layer l - 1 or the embedding)
        if (h > 0 || own_) gemm(m, in.p + r0 * in.ld, in.ld, w_.layers[l].masked[h], f, HI_, true);
        for (int64_t i = 0; i < m; ++i) {
          float* o = out.p + (r0 + i) * out.ld + h * hid_;
          for (int64_t r = 0; r < hid_; ++r) {
            const float v = f[i * HI_ + r];
            o[r] = v > 0.0f ? v : v * kLeakySlope;  // torch's leaky_relu
          }
        }
      }
      float* z = logits_.data() + r0 * C_;
      for (int64_t i = 0; i < m; ++i) std::memcpy(z + i * C_, w_.logits_bias.data() + h * C_, C_ * sizeof(float));
      const Rows top = in_[L_];
      if (h > 0 || own_) gemm(m, top.p + r0 * top.ld, top.ld, w_.logits[h], z, C_, true);
      for (int64_t i = r0; i < r1; ++i) {
        const int32_t label = choose(logits_.data() + i * C_, i, h);
        current_[i * H_ + h] = label;
        const int64_t j = order_[i];
        if (label_rows_ && label_rows_[j]) label_rows_[j][h] = label;
        if (one_hot_rows_ && one_hot_rows_[j]) {
          float* row = one_hot_rows_[j] + h * C_;
          if (zero_one_hot_) std::fill(row, row + C_, 0.0f);
          row[label] = 1.0f;
        }
      }
    }
  }

  // log-softmax over C (as torch: (z - max) - log(sum(exp(z - max)))), + noise, argmax.
  int32_t choose(const float* z, int64_t i, int64_t h) {
    const int64_t s = slot_[i];
    const bool argmax = argmax_[s] != 0;
    float* noise = noise_.data() + i * C_;
    float m = z[0];
    for (int64_t c = 1; c < C_; ++c) m = std::max(m, z[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < C_; ++c) sum += std::exp(z[c] - m);
    const float log_sum = std::log(sum);
    if (!argmax) gumbel_row(seed_[s], t_[s], h, C_, noise);
    int32_t best = 0;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C_; ++c) {
      float v = (z[c] - m) - log_sum;
      if (!argmax) v += noise[c];
      if (c == 0 || v > best_value) {  // strict: the lowest index wins a tie, as torch.argmax
        best_value = v;
        best = static_cast<int32_t>(c);
      }
    }
    return best;
  }

  std::shared_ptr<const ContextWeights> keep_;
  const ContextWeights& w_;
  int64_t cap_;
  int64_t H_ = 0, C_ = 0, hid_ = 0, A_ = 0, HI_ = 0, L_ = 0;
  bool own_ = false;  // the layers after the embedding read head h itself (ModelConfig::inclusive_head_masks)
  std::shared_ptr<ThreadPool> pool_;
  int64_t splits_ = 1, row_splits_ = 1;
  std::function<void(int64_t)> fixed_task_, head_task_;
  // per slot
  std::vector<uint64_t> seed_;
  std::vector<int64_t> t_;
  std::vector<uint8_t> argmax_, assigned_, mark_;
  std::vector<std::vector<float>> ring_;  // per layer: [capacity, d + 1, HI], step t at t mod (d + 1)
  // per step (rows i < n_ in order of decreasing t)
  int64_t n_ = 0;
  bool zero_one_hot_ = true;
  int32_t* const* label_rows_ = nullptr;
  float* const* one_hot_rows_ = nullptr;
  std::vector<std::vector<float>> fixed_, prev_, dilated_, cur_;
  std::vector<Rows> taps_, in_;
  std::vector<int64_t> tap_rows_, order_, slot_;
  std::vector<float> audio_, logits_, noise_;
  std::vector<int32_t> current_;  // labels of this step, [n, H]
  std::vector<const float*> audio_ptr_;
  std::vector<int32_t*> label_ptr_;
  std::vector<float*> one_hot_ptr_;
};

SamplerState::SamplerState(std::shared_ptr<const ContextWeights> weights, int64_t capacity, int64_t threads)
    : SamplerState(std::move(weights), capacity, std::make_shared<ThreadPool>(resolve_thread_count(threads))) {}

SamplerState::SamplerState(std::shared_ptr<const ContextWeights> weights, int64_t capacity,
                           std::shared_ptr<ThreadPool> pool) {
  if (!weights) throw_mismatch("weights", "loaded ContextWeights", "a null pointer");
  const ContextWeights& w = *weights;
  impl_ = std::make_unique<Impl>(w, std::move(weights), capacity, std::move(pool));
}

SamplerState::SamplerState(const ContextWeights& weights, int64_t capacity, int64_t threads)
    : impl_(std::make_unique<Impl>(weights, nullptr, capacity,
                                   std::make_shared<ThreadPool>(resolve_thread_count(threads)))) {}

SamplerState::~SamplerState() = default;
SamplerState::SamplerState(SamplerState&&) noexcept = default;
SamplerState& SamplerState::operator=(SamplerState&&) noexcept = default;

int64_t SamplerState::capacity() const noexcept { return impl_->cap_; }
const ModelConfig& SamplerState::config() const noexcept { return impl_->w_.config; }

void SamplerState::reset(int64_t slot, uint64_t seed, bool argmax) {
  impl_->check_slot(slot, "slot");
  impl_->seed_[slot] = seed;
  impl_->argmax_[slot] = argmax ? 1 : 0;
  impl_->t_[slot] = 0;
  impl_->assigned_[slot] = 1;
}

void SamplerState::release(int64_t slot) {
  impl_->check_slot(slot, "slot");
  impl_->assigned_[slot] = 0;
}

bool SamplerState::assigned(int64_t slot) const {
  impl_->check_slot(slot, "slot");
  return impl_->assigned_[slot] != 0;
}

int64_t SamplerState::steps(int64_t slot) const {
  impl_->check_slot(slot, "slot");
  return impl_->t_[slot];
}

uint64_t SamplerState::seed(int64_t slot) const {
  impl_->check_slot(slot, "slot");
  return impl_->seed_[slot];
}

void SamplerState::step(const int64_t* slots, int64_t n, const float* audio, int32_t* labels, float* one_hot) {
  Impl& s = *impl_;
  if (n < 0 || n > s.cap_)
    throw_mismatch("n (slots to step)", "a count in [0, capacity=" + std::to_string(s.cap_) + "]", std::to_string(n));
  if (n > 0 && audio == nullptr) throw_mismatch("audio", "a non-null [n, A] buffer", "a null pointer");
  for (int64_t j = 0; j < n; ++j) {
    s.audio_ptr_[j] = audio + j * s.A_;
    s.label_ptr_[j] = labels ? labels + j * s.H_ : nullptr;
    s.one_hot_ptr_[j] = one_hot ? one_hot + j * s.H_ * s.C_ : nullptr;
  }
  s.step(slots, n, s.audio_ptr_.data(), s.label_ptr_.data(), s.one_hot_ptr_.data(), true);
}

void SamplerState::step_rows(const int64_t* slots, int64_t n, const float* const* audio_rows,
                             int32_t* const* label_rows, float* const* one_hot_rows, bool zero_one_hot) {
  impl_->step(slots, n, audio_rows, label_rows, one_hot_rows, zero_one_hot);
}

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

  // Sequence order[k] (longest first) runs in slot k: the sequences still running at step t are
  // slots [0, active), consecutive and at one step, so the state reads its rings in place.
  std::vector<int64_t> order(static_cast<size_t>(B));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  SamplerState state(weights, B, threads);
  for (int64_t k = 0; k < B; ++k) state.reset(k, options.argmax ? 0 : seeds[order[k]], options.argmax);
  std::vector<int64_t> slots(static_cast<size_t>(B));
  std::iota(slots.begin(), slots.end(), 0);
  std::vector<const float*> audio_rows(static_cast<size_t>(B));
  std::vector<int32_t*> label_rows(static_cast<size_t>(B), nullptr);
  std::vector<float*> one_hot_rows(static_cast<size_t>(B), nullptr);
  const int64_t H = c.heads, C = c.classes, A = c.audio_dim;
  int64_t active = B;
  for (int64_t t = 0; t < T; ++t) {
    while (active > 0 && len[order[active - 1]] <= t) --active;
    if (active == 0) break;
    for (int64_t k = 0; k < active; ++k) {
      const int64_t row = order[k] * T + t;
      audio_rows[k] = audio + row * A;
      if (labels) label_rows[k] = labels + row * H;
      if (one_hot) one_hot_rows[k] = one_hot + row * H * C;
    }
    state.step_rows(slots.data(), active, audio_rows.data(), label_rows.data(), one_hot_rows.data(), false);
  }
}

}  // namespace meshtalk
