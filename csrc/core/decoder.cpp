// The batched VertexUnet decoder (decoder.hpp): whole sequences (`decode`) and one frame at a time
// (`DecoderState`), with the same per-frame operations.
//
// Threads (decode): the template encoder splits its products by output columns; the LSTM deals the
// sequences into one group per thread (they are independent); the skip decoder deals chunks of
// frames to the threads. DecoderState splits every product of a step by output columns. Each output
// element is computed the same way whichever thread runs it.
#include "meshtalk/decoder.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "meshtalk/status.hpp"
#include "meshtalk/threads.hpp"

namespace meshtalk {
namespace {

constexpr float kLeakySlope = 0.2f;
constexpr int64_t kHidden = 128;  // LSTM width and code size of the released VertexUnet
constexpr int64_t kColumnBlock = 64;  // panels (of 16 columns) of the last product finished at a time

inline float leaky(float v) { return v > 0.0f ? v : v * kLeakySlope; }

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// One LSTM cell update of the released layer (gate order i, f, g, o): input-projection gates gi
// and hidden-projection gates gh [4 * 128] -> new cell c and hidden h [128], in place.
void lstm_cell(const float* gi, const float* gh, float* h, float* c) {
  for (int64_t r = 0; r < kHidden; ++r) {
    const float i = sigmoid(gi[r] + gh[r]);
    const float f = sigmoid(gi[kHidden + r] + gh[kHidden + r]);
    const float g = std::tanh(gi[2 * kHidden + r] + gh[2 * kHidden + r]);
    const float o = sigmoid(gi[3 * kHidden + r] + gh[3 * kHidden + r]);
    c[r] = f * c[r] + i * g;
    h[r] = o * std::tanh(c[r]);
  }
}

// The fusion layer for one frame: x[128] = leaky(geometry + sum of code[j] * fusion column j) -- for
// a one-hot code a gather-sum of H columns (zero entries are skipped).
void fuse_frame(const float* geometry, const float* code, int64_t HC, const float* fusion_codes, float* x) {
  std::memcpy(x, geometry, kHidden * sizeof(float));
  for (int64_t j = 0; j < HC; ++j) {
    const float v = code[j];
    if (v == 0.0f) continue;
    const float* col = fusion_codes + j * kHidden;
    for (int64_t r = 0; r < kHidden; ++r) x[r] += v * col[r];
  }
  for (int64_t r = 0; r < kHidden; ++r) x[r] = leaky(x[r]);
}

void fill_bias(float* c, int64_t rows, int64_t ldc, const std::vector<float>& bias) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldc, bias.data(), bias.size() * sizeof(float));
}

// C[rows, out] = leaky(bias + A W^T), columns split over the pool.
void linear_leaky(ThreadPool& pool, int64_t rows, const float* a, int64_t lda, const Linear& lin, float* c) {
  const int64_t n = lin.out();
  fill_bias(c, rows, n, lin.bias);
  const int64_t panels = lin.weight.panels(), splits = std::min<int64_t>(pool.size(), panels);
  pool.parallel_for(splits, [&](int64_t s) {
    gemm(rows, a, lda, lin.weight, c, n, true, s * panels / splits, (s + 1) * panels / splits);
  });
  for (int64_t i = 0; i < rows * n; ++i) c[i] = leaky(c[i]);
}

struct Template {
  std::vector<float> x0, e1, e2, geometry;  // [Bt, V3], [Bt, 512], [Bt, 256], [Bt, 128] (= G)
};

Template encode_templates(ThreadPool& pool, const DecoderWeights& w, const float* templ, int64_t Bt) {
  const int64_t V3 = w.config.n_vertices * 3;
  Template t;
  t.x0.resize(static_cast<size_t>(Bt * V3));
  for (int64_t b = 0; b < Bt; ++b)
    for (int64_t j = 0; j < V3; ++j) t.x0[b * V3 + j] = (templ[b * V3 + j] - w.mean[j]) / w.stddev[j];
  t.e1.resize(static_cast<size_t>(Bt * 512));
  t.e2.resize(static_cast<size_t>(Bt * 256));
  std::vector<float> g(static_cast<size_t>(Bt * kHidden));
  linear_leaky(pool, Bt, t.x0.data(), V3, w.encoder[0], t.e1.data());
  linear_leaky(pool, Bt, t.e1.data(), 512, w.encoder[1], t.e2.data());
  linear_leaky(pool, Bt, t.e2.data(), 256, w.encoder[2], g.data());
  t.geometry.resize(static_cast<size_t>(Bt * kHidden));
  fill_bias(t.geometry.data(), Bt, kHidden, w.fusion_geometry.bias);
  gemm(Bt, g.data(), kHidden, w.fusion_geometry.weight, t.geometry.data(), kHidden, true);
  return t;
}

// The LSTM over sequences [b0, b1) for all T frames, writing y[b, t] ([B, T, 128]).
class LstmGroup {
 public:
  LstmGroup(const DecoderWeights& w, const Template& tp, int64_t Bt, const float* codes, int64_t T, int64_t b0,
            int64_t b1, int64_t time_chunk)
      : w_(w), tp_(tp), Bt_(Bt), codes_(codes), T_(T), b0_(b0), nb_(b1 - b0), tc_(std::min(time_chunk, T)) {
    x_.resize(static_cast<size_t>(nb_ * tc_ * kHidden));
    gates_.resize(static_cast<size_t>(nb_ * tc_ * 4 * kHidden));
    hidden_gates_.resize(static_cast<size_t>(nb_ * 4 * kHidden));
    for (int l = 0; l < 2; ++l) {
      h_[l].assign(static_cast<size_t>(nb_ * kHidden), 0.0f);
      c_[l].assign(static_cast<size_t>(nb_ * kHidden), 0.0f);
    }
    h1_.resize(x_.size());
  }

  void run(float* y) {
    const int64_t HC = w_.config.heads * w_.config.classes;
    for (int64_t t0 = 0; t0 < T_; t0 += tc_) {
      const int64_t tc = std::min(tc_, T_ - t0);
      // Fusion; rows of this chunk are (sequence, frame) = bi * tc + dt.
      for (int64_t bi = 0; bi < nb_; ++bi) {
        const int64_t b = b0_ + bi;
        const float* geometry = tp_.geometry.data() + (Bt_ == 1 ? 0 : b) * kHidden;
        for (int64_t dt = 0; dt < tc; ++dt) {
          float* x = x_.data() + (bi * tc + dt) * kHidden;
          fuse_frame(geometry, codes_ + (b * T_ + t0 + dt) * HC, HC, w_.fusion_codes.data(), x);
        }
      }
      layer(0, tc, x_.data(), [&](int64_t bi, int64_t dt) { return h1_.data() + (bi * tc + dt) * kHidden; });
      layer(1, tc, h1_.data(), [&](int64_t bi, int64_t dt) { return y + ((b0_ + bi) * T_ + t0 + dt) * kHidden; });
    }
  }

 private:
  // One LSTM layer over the chunk: input rows [nb * tc, 128] -> out(bi, dt).
  template <class Out>
  void layer(int l, int64_t tc, const float* input, Out out) {
    const int64_t G = 4 * kHidden;
    fill_bias(gates_.data(), nb_ * tc, G, w_.lstm_input[l].bias);
    gemm(nb_ * tc, input, kHidden, w_.lstm_input[l].weight, gates_.data(), G, true);
    float* h = h_[l].data();
    float* c = c_[l].data();
    for (int64_t dt = 0; dt < tc; ++dt) {
      gemm(nb_, h, kHidden, w_.lstm_hidden[l], hidden_gates_.data(), G, false);
      for (int64_t bi = 0; bi < nb_; ++bi) {
        const float* gi = gates_.data() + (bi * tc + dt) * G;
        const float* gh = hidden_gates_.data() + bi * G;
        float* hb = h + bi * kHidden;
        float* cb = c + bi * kHidden;
        lstm_cell(gi, gh, hb, cb);
        std::memcpy(out(bi, dt), hb, kHidden * sizeof(float));
      }
    }
  }

  const DecoderWeights& w_;
  const Template& tp_;
  int64_t Bt_;
  const float* codes_;
  int64_t T_, b0_, nb_, tc_;
  std::vector<float> x_, gates_, hidden_gates_, h1_, h_[2], c_[2];
};

}  // namespace

void decode(const DecoderWeights& w, const float* templ, int64_t Bt, const float* codes, int64_t B, int64_t T,
            float* out, const DecodeOptions& options) {
  if (B < 1) throw_mismatch("one_hot batch size B", "B >= 1", std::to_string(B));
  if (T < 1) throw_mismatch("one_hot length T", "T >= 1", std::to_string(T));
  if (Bt != 1 && Bt != B)
    throw_mismatch("template batch", "1 or B=" + std::to_string(B), std::to_string(Bt));
  if (!templ || !codes || !out) throw_mismatch("template, one_hot and out", "non-null buffers", "a null pointer");
  if (options.chunk_rows < 1 || options.time_chunk < 1)
    throw_mismatch("chunk_rows and time_chunk", ">= 1",
                   std::to_string(options.chunk_rows) + " and " + std::to_string(options.time_chunk));
  const int64_t V3 = w.config.n_vertices * 3, HC = w.config.heads * w.config.classes;
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8;
  if (T > limit / B || B * T > limit / std::max(V3, HC))
    throw_mismatch("one_hot [B, T]", "B * T * V * 3 addressable in 64 bits",
                   "B=" + std::to_string(B) + ", T=" + std::to_string(T));
  const int threads = resolve_thread_count(options.threads);
  ThreadPool pool(threads);

  const Template tp = encode_templates(pool, w, templ, Bt);

  // LSTM: sequences dealt into contiguous groups, one per thread.
  std::vector<float> y(static_cast<size_t>(B * T * kHidden));
  const int64_t groups = std::min<int64_t>(threads, B);
  pool.parallel_for(groups, [&](int64_t g) {
    LstmGroup(w, tp, Bt, codes, T, g * B / groups, (g + 1) * B / groups, options.time_chunk).run(y.data());
  });

  // Skip decoder over all B*T frames in chunks; enough chunks to keep every thread busy.
  const int64_t rows = B * T;
  int64_t chunk = (rows + threads - 1) / threads;
  chunk = std::min(options.chunk_rows, (chunk + 3) / 4 * 4);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(threads, chunks);
  const Linear& d0 = w.decoder[0];
  const Linear& d1 = w.decoder[1];
  const Linear& d2 = w.decoder[2];
  pool.parallel_for(workers, [&](int64_t worker) {
    std::vector<float> a(static_cast<size_t>(chunk * 256)), b(static_cast<size_t>(chunk * 512));
    for (int64_t k = worker; k < chunks; k += workers) {
      const int64_t r0 = k * chunk, m = std::min(chunk, rows - r0);
      fill_bias(a.data(), m, 256, d0.bias);
      gemm(m, y.data() + r0 * kHidden, kHidden, d0.weight, a.data(), 256, true);
      for (int64_t i = 0; i < m; ++i) {
        const float* skip = tp.e2.data() + (Bt == 1 ? 0 : (r0 + i) / T) * 256;
        for (int64_t j = 0; j < 256; ++j) a[i * 256 + j] = skip[j] + leaky(a[i * 256 + j]);
      }
      fill_bias(b.data(), m, 512, d1.bias);
      gemm(m, a.data(), 256, d1.weight, b.data(), 512, true);
      for (int64_t i = 0; i < m; ++i) {
        const float* skip = tp.e1.data() + (Bt == 1 ? 0 : (r0 + i) / T) * 512;
        for (int64_t j = 0; j < 512; ++j) b[i * 512 + j] = skip[j] + leaky(b[i * 512 + j]);
      }
      float* o = out + r0 * V3;
      for (int64_t p = 0; p < d2.weight.panels(); p += kColumnBlock) {
        const int64_t p1 = std::min(p + kColumnBlock, d2.weight.panels());
        gemm(m, b.data(), 512, d2.weight, o, V3, false, p, p1);
        const int64_t j0 = p * WeightMatrix::kPanel, j1 = std::min(p1 * WeightMatrix::kPanel, V3);
        for (int64_t i = 0; i < m; ++i) {
          const float* skip = tp.x0.data() + (Bt == 1 ? 0 : (r0 + i) / T) * V3;
          float* row = o + i * V3;
          for (int64_t j = j0; j < j1; ++j) {
            // the reference's order: skip + leaky(linear), + vertex_bias, * stddev, + mean
            const float v = (skip[j] + leaky(row[j] + d2.bias[j])) + w.vertex_bias[j];
            row[j] = v * w.stddev[j] + w.mean[j];
          }
        }
      }
    }
  });
}


std::shared_ptr<const EncodedTemplate> encode_template(const DecoderWeights& w, const float* templ, int64_t threads) {
  if (!templ) throw_mismatch("template", "a non-null [V, 3] buffer", "a null pointer");
  ThreadPool pool(resolve_thread_count(threads));
  Template tp = encode_templates(pool, w, templ, 1);
  auto out = std::make_shared<EncodedTemplate>();
  out->weights = &w;
  out->x0 = std::move(tp.x0);
  out->e1 = std::move(tp.e1);
  out->e2 = std::move(tp.e2);
  out->geometry = std::move(tp.geometry);
  return out;
}

struct DecoderState::Impl {
  Impl(const DecoderWeights& weights, std::shared_ptr<const DecoderWeights> keep, int64_t capacity,
       std::shared_ptr<ThreadPool> pool)
      : keep_(std::move(keep)), w_(weights), cap_(capacity), pool_(std::move(pool)) {
    if (!pool_) throw_mismatch("pool", "a thread pool", "a null pointer");
    if (capacity < 1) throw_mismatch("capacity", "at least 1 slot", std::to_string(capacity));
    if (capacity > (int64_t(1) << 20)) throw_mismatch("capacity", "at most 2^20 slots", std::to_string(capacity));
    V3_ = w_.config.n_vertices * 3;
    HC_ = w_.config.heads * w_.config.classes;
    const size_t cap = static_cast<size_t>(cap_);
    templ_.resize(cap);
    t_.assign(cap, 0);
    assigned_.assign(cap, 0);
    mark_.assign(cap, 0);
    for (int l = 0; l < 2; ++l) {
      h_[l].assign(cap * kHidden, 0.0f);
      c_[l].assign(cap * kHidden, 0.0f);
    }
    x_.assign(cap * kHidden, 0.0f);
    y0_.assign(cap * kHidden, 0.0f);
    y1_.assign(cap * kHidden, 0.0f);
    hw_.assign(cap * kHidden, 0.0f);
    cw_.assign(cap * kHidden, 0.0f);
    gates_.assign(cap * 4 * kHidden, 0.0f);
    hidden_gates_.assign(cap * 4 * kHidden, 0.0f);
    a_.assign(cap * 256, 0.0f);
    b_.assign(cap * 512, 0.0f);
    // Built once: a step allocates nothing.
    product_task_ = [this](int64_t s) {
      const int64_t panels = job_w_->panels();
      job_gemm(s * panels / job_splits_, (s + 1) * panels / job_splits_);
    };
    last_task_ = [this](int64_t k) { last_block(k); };
  }

  void check_slot(int64_t slot) const {
    if (slot < 0 || slot >= cap_)
      throw_mismatch("slot", "a slot in [0, capacity=" + std::to_string(cap_) + ")", std::to_string(slot));
  }

  void validate(const int64_t* slots, int64_t n, const void* input, const char* input_name, const float* out) {
    if (n < 0 || n > cap_)
      throw_mismatch("n (slots to step)", "a count in [0, capacity=" + std::to_string(cap_) + "]", std::to_string(n));
    if (n == 0) return;
    if (!slots || !input || !out)
      throw_mismatch(std::string("slots, ") + input_name + " and out", "non-null buffers", "a null pointer");
    int64_t bad = -1;
    std::string why;
    for (int64_t j = 0; j < n && bad < 0; ++j) {
      const int64_t s = slots[j];
      if (s < 0 || s >= cap_) why = "a slot in [0, capacity=" + std::to_string(cap_) + ")";
      else if (!assigned_[s]) why = "an assigned slot (call reset(slot, template) first)";
      else if (mark_[s]) why = "each slot at most once per step";
      if (!why.empty()) bad = j;
      else mark_[s] = 1;
    }
    for (int64_t j = 0; j < n; ++j)
      if (slots[j] >= 0 && slots[j] < cap_) mark_[slots[j]] = 0;
    if (bad >= 0) throw_mismatch("slots[" + std::to_string(bad) + "]", why, std::to_string(slots[bad]));
  }

  // x[j] = leaky(G + sum of v * column over the nonzero entries of the code), as decode's fusion.
  void fuse_codes(const int64_t* slots, int64_t n, const float* codes) {
    for (int64_t j = 0; j < n; ++j) {
      fuse_frame(templ_[slots[j]]->geometry.data(), codes + j * HC_, HC_, w_.fusion_codes.data(),
                 x_.data() + j * kHidden);
    }
  }

  // The same for labels: a one-hot code's nonzero entries are the H entries h * C + label, value 1.
  void fuse_labels(const int64_t* slots, int64_t n, const int32_t* labels) {
    const int64_t H = w_.config.heads, C = w_.config.classes;
    for (int64_t j = 0; j < n; ++j) {
      float* x = x_.data() + j * kHidden;
      std::memcpy(x, templ_[slots[j]]->geometry.data(), kHidden * sizeof(float));
      for (int64_t h = 0; h < H; ++h) {
        const float v = 1.0f;
        const float* col = w_.fusion_codes.data() + (h * C + labels[j * H + h]) * kHidden;
        for (int64_t r = 0; r < kHidden; ++r) x[r] += v * col[r];
      }
      for (int64_t r = 0; r < kHidden; ++r) x[r] = leaky(x[r]);
    }
  }

  // c[n_, W.n] (+)= a W^T, split by columns over the pool when the product is worth it.
  void product(const float* a, int64_t lda, const WeightMatrix& W, float* c, int64_t ldc, bool accumulate) {
    job_a_ = a;
    job_lda_ = lda;
    job_w_ = &W;
    job_c_ = c;
    job_ldc_ = ldc;
    job_accumulate_ = accumulate;
    const int64_t work = n_ * W.n() * W.k();
    job_splits_ = work < (int64_t(1) << 17) ? 1 : std::min<int64_t>(pool_->size(), W.panels());
    if (job_splits_ > 1) pool_->parallel_for(job_splits_, product_task_);
    else job_gemm(0, W.panels());
  }

  void job_gemm(int64_t p0, int64_t p1) {
    if (p0 < p1) gemm(n_, job_a_, job_lda_, *job_w_, job_c_, job_ldc_, job_accumulate_, p0, p1);
  }

  void run(const int64_t* slots, int64_t n, float* out) {
    n_ = n;
    slots_ = slots;
    out_ = out;
    // The LSTM, each layer as decode's: gates = input projection + hidden projection, then the cell.
    const float* input = x_.data();
    for (int l = 0; l < 2; ++l) {
      const int64_t G = 4 * kHidden;
      float* y = l == 0 ? y0_.data() : y1_.data();
      fill_bias(gates_.data(), n, G, w_.lstm_input[l].bias);
      product(input, kHidden, w_.lstm_input[l].weight, gates_.data(), G, true);
      for (int64_t j = 0; j < n; ++j) {
        std::memcpy(hw_.data() + j * kHidden, h_[l].data() + slots[j] * kHidden, kHidden * sizeof(float));
        std::memcpy(cw_.data() + j * kHidden, c_[l].data() + slots[j] * kHidden, kHidden * sizeof(float));
      }
      product(hw_.data(), kHidden, w_.lstm_hidden[l], hidden_gates_.data(), G, false);
      for (int64_t j = 0; j < n; ++j) {
        const float* gi = gates_.data() + j * G;
        const float* gh = hidden_gates_.data() + j * G;
        float* hb = hw_.data() + j * kHidden;
        float* cb = cw_.data() + j * kHidden;
        lstm_cell(gi, gh, hb, cb);
        std::memcpy(y + j * kHidden, hb, kHidden * sizeof(float));
        std::memcpy(h_[l].data() + slots[j] * kHidden, hb, kHidden * sizeof(float));
        std::memcpy(c_[l].data() + slots[j] * kHidden, cb, kHidden * sizeof(float));
      }
      input = y;
    }
    // The skip decoder, as decode's.
    const Linear& d0 = w_.decoder[0];
    const Linear& d1 = w_.decoder[1];
    fill_bias(a_.data(), n, 256, d0.bias);
    product(y1_.data(), kHidden, d0.weight, a_.data(), 256, true);
    for (int64_t j = 0; j < n; ++j) {
      const float* skip = templ_[slots[j]]->e2.data();
      for (int64_t k = 0; k < 256; ++k) a_[j * 256 + k] = skip[k] + leaky(a_[j * 256 + k]);
    }
    fill_bias(b_.data(), n, 512, d1.bias);
    product(a_.data(), 256, d1.weight, b_.data(), 512, true);
    for (int64_t j = 0; j < n; ++j) {
      const float* skip = templ_[slots[j]]->e1.data();
      for (int64_t k = 0; k < 512; ++k) b_[j * 512 + k] = skip[k] + leaky(b_[j * 512 + k]);
    }
    const int64_t blocks = (w_.decoder[2].weight.panels() + kColumnBlock - 1) / kColumnBlock;
    if (pool_->size() > 1 && blocks > 1) pool_->parallel_for(blocks, last_task_);
    else for (int64_t k = 0; k < blocks; ++k) last_block(k);
    for (int64_t j = 0; j < n; ++j) ++t_[slots[j]];
  }

  // Columns of panels [k * kColumnBlock, (k + 1) * kColumnBlock) of the last product, finished in place.
  void last_block(int64_t k) {
    const Linear& d2 = w_.decoder[2];
    const int64_t p = k * kColumnBlock, p1 = std::min(p + kColumnBlock, d2.weight.panels());
    gemm(n_, b_.data(), 512, d2.weight, out_, V3_, false, p, p1);
    const int64_t j0 = p * WeightMatrix::kPanel, j1 = std::min(p1 * WeightMatrix::kPanel, V3_);
    for (int64_t i = 0; i < n_; ++i) {
      const float* skip = templ_[slots_[i]]->x0.data();
      float* row = out_ + i * V3_;
      for (int64_t j = j0; j < j1; ++j) {
        // the reference's order: skip + leaky(linear), + vertex_bias, * stddev, + mean
        const float v = (skip[j] + leaky(row[j] + d2.bias[j])) + w_.vertex_bias[j];
        row[j] = v * w_.stddev[j] + w_.mean[j];
      }
    }
  }

  std::shared_ptr<const DecoderWeights> keep_;
  const DecoderWeights& w_;
  int64_t cap_;
  std::shared_ptr<ThreadPool> pool_;
  int64_t V3_ = 0, HC_ = 0;
  std::vector<std::shared_ptr<const EncodedTemplate>> templ_;
  std::vector<int64_t> t_;
  std::vector<uint8_t> assigned_, mark_;
  std::vector<float> h_[2], c_[2];  // per slot LSTM state [capacity, 128]
  // per step
  int64_t n_ = 0;
  const int64_t* slots_ = nullptr;
  float* out_ = nullptr;
  std::vector<float> x_, y0_, y1_, hw_, cw_, gates_, hidden_gates_, a_, b_;
  const float* job_a_ = nullptr;
  int64_t job_lda_ = 0, job_ldc_ = 0, job_splits_ = 1;
  const WeightMatrix* job_w_ = nullptr;
  float* job_c_ = nullptr;
  bool job_accumulate_ = false;
  std::function<void(int64_t)> product_task_, last_task_;
};

DecoderState::DecoderState(std::shared_ptr<const DecoderWeights> weights, int64_t capacity, int64_t threads)
    : DecoderState(std::move(weights), capacity, std::make_shared<ThreadPool>(resolve_thread_count(threads))) {}

DecoderState::DecoderState(std::shared_ptr<const DecoderWeights> weights, int64_t capacity,
                           std::shared_ptr<ThreadPool> pool) {
  if (!weights) throw_mismatch("weights", "loaded DecoderWeights", "a null pointer");
  const DecoderWeights& w = *weights;
  impl_ = std::make_unique<Impl>(w, std::move(weights), capacity, std::move(pool));
}

DecoderState::DecoderState(const DecoderWeights& weights, int64_t capacity, int64_t threads)
    : impl_(std::make_unique<Impl>(weights, nullptr, capacity,
                                   std::make_shared<ThreadPool>(resolve_thread_count(threads)))) {}

DecoderState::~DecoderState() = default;
DecoderState::DecoderState(DecoderState&&) noexcept = default;
DecoderState& DecoderState::operator=(DecoderState&&) noexcept = default;

int64_t DecoderState::capacity() const noexcept { return impl_->cap_; }
const ModelConfig& DecoderState::config() const noexcept { return impl_->w_.config; }

std::shared_ptr<const EncodedTemplate> DecoderState::encode_template(const float* templ) const {
  if (!templ) throw_mismatch("template", "a non-null [V, 3] buffer", "a null pointer");
  Template tp = encode_templates(*impl_->pool_, impl_->w_, templ, 1);
  auto out = std::make_shared<EncodedTemplate>();
  out->weights = &impl_->w_;
  out->x0 = std::move(tp.x0);
  out->e1 = std::move(tp.e1);
  out->e2 = std::move(tp.e2);
  out->geometry = std::move(tp.geometry);
  return out;
}

void DecoderState::reset(int64_t slot, std::shared_ptr<const EncodedTemplate> templ) {
  Impl& s = *impl_;
  s.check_slot(slot);
  if (!templ) throw_mismatch("template", "an EncodedTemplate", "a null pointer");
  if (templ->weights != &s.w_ || static_cast<int64_t>(templ->x0.size()) != s.V3_)
    throw_mismatch("template", "a template encoded with this state's weights (encode_template)",
                   "one encoded with other weights");
  s.templ_[slot] = std::move(templ);
  for (int l = 0; l < 2; ++l) {
    std::fill_n(s.h_[l].data() + slot * kHidden, kHidden, 0.0f);
    std::fill_n(s.c_[l].data() + slot * kHidden, kHidden, 0.0f);
  }
  s.t_[slot] = 0;
  s.assigned_[slot] = 1;
}

void DecoderState::release(int64_t slot) {
  impl_->check_slot(slot);
  impl_->assigned_[slot] = 0;
  impl_->templ_[slot].reset();
}

bool DecoderState::assigned(int64_t slot) const {
  impl_->check_slot(slot);
  return impl_->assigned_[slot] != 0;
}

int64_t DecoderState::steps(int64_t slot) const {
  impl_->check_slot(slot);
  return impl_->t_[slot];
}

void DecoderState::step(const int64_t* slots, int64_t n, const float* codes, float* out) {
  Impl& s = *impl_;
  s.validate(slots, n, codes, "codes", out);
  if (n == 0) return;
  s.fuse_codes(slots, n, codes);
  s.run(slots, n, out);
}

void DecoderState::step_labels(const int64_t* slots, int64_t n, const int32_t* labels, float* out) {
  Impl& s = *impl_;
  s.validate(slots, n, labels, "labels", out);
  if (n == 0) return;
  const int64_t H = s.w_.config.heads, C = s.w_.config.classes;
  for (int64_t i = 0; i < n * H; ++i)
    if (labels[i] < 0 || labels[i] >= C)
      throw_mismatch("labels[" + std::to_string(i / H) + ", " + std::to_string(i % H) + "]",
                     "a class in [0, C=" + std::to_string(C) + ")", std::to_string(labels[i]));
  s.fuse_labels(slots, n, labels);
  s.run(slots, n, out);
}

}  // namespace meshtalk
