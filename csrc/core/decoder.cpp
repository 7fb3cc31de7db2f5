// The batched VertexUnet decoder (decoder.hpp).
//
// Threads: the template encoder splits its products by output columns; the LSTM deals the
// sequences into one group per thread (they are independent); the skip decoder deals chunks of
// frames to the threads. Each output element is computed the same way whichever thread runs it.
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
          std::memcpy(x, geometry, kHidden * sizeof(float));
          const float* code = codes_ + (b * T_ + t0 + dt) * HC;
          for (int64_t j = 0; j < HC; ++j) {
            const float v = code[j];
            if (v == 0.0f) continue;
            const float* col = w_.fusion_codes.data() + j * kHidden;
            for (int64_t r = 0; r < kHidden; ++r) x[r] += v * col[r];
          }
          for (int64_t r = 0; r < kHidden; ++r) x[r] = leaky(x[r]);
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
        for (int64_t r = 0; r < kHidden; ++r) {
          const float i = sigmoid(gi[r] + gh[r]);
          const float f = sigmoid(gi[kHidden + r] + gh[kHidden + r]);
          const float g = std::tanh(gi[2 * kHidden + r] + gh[2 * kHidden + r]);
          const float o = sigmoid(gi[3 * kHidden + r] + gh[3 * kHidden + r]);
          cb[r] = f * cb[r] + i * g;
          hb[r] = o * std::tanh(cb[r]);
        }
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

}  // namespace meshtalk
