// Log-mel spectrogram (mel.hpp): FFT tables, the SIMD group kernel, batched and streaming framing.
//
// Group kernel, for up to L frames at once (L = lanes of the vector type), data laid out [n][lane]:
//   1. z[j] = w[2j] x[2j] + i w[2j+1] x[2j+1] for j < 400 (zero for 400 <= j < 1024);
//   2. Z = FFT_1024(z), radix-2 decimation in frequency, output in bit-reversed order. Stage 1 pairs
//      z[j] with z[j + 512] = 0: it is a copy and a twiddle product. The last two stages run as one
//      radix-4 step with trivial twiddles;
//   3. X[k] = (Z[k] + conj Z[1024-k]) / 2 - i e^{-2 pi i k/2048} (Z[k] - conj Z[1024-k]) / 2 for
//      k = 0..1024 (the spectrum of the 2048 real samples), power |X[k]|^2, added at once to the (at
//      most 2) mel triangles of bin k;
//   4. log(max(mel, 1e-10)).
// The vector types are GCC/Clang vector extensions compiled for AVX-512, AVX2+FMA and a baseline,
// picked once when the library loads (as in gemm.cpp); the lanes never interact, so a frame's result
// does not depend on which lane or group it is computed in.
#include "meshtalk/mel.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "meshtalk/gemm.hpp"
#include "meshtalk/status.hpp"
#include "meshtalk/threads.hpp"

namespace meshtalk {
namespace {

constexpr int kN = 1024;          // complex FFT size (the real FFT has 2048 points)
constexpr int kHalfTaps = kWinLength / 2;  // 400 complex inputs are nonzero
constexpr int kMaxLanes = 16;
constexpr int64_t kScratchFloats = 2 * kN * kMaxLanes + kMelBins * kMaxLanes + kMaxLanes * kWinLength;
constexpr double kPi = 3.14159265358979323846;

struct Plan {
  const MelFilters::Tables* tables;
  const float* window;
  const int32_t* bin_start;
  const int32_t* mel;
  const float* weight;
};

#if defined(__GNUC__) || defined(__clang__)
#define MESHTALK_INLINE inline __attribute__((always_inline))
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

template <class V>
MESHTALK_INLINE void group_kernel(const Plan& plan, const float* const* taps, float* const* outs, int64_t mel_stride,
                                  int count, float* scratch) {
  constexpr int L = sizeof(V) / sizeof(float);
  const MelFilters::Tables& tb = *plan.tables;
  const float* cosv = tb.fft_cos.data();
  const float* sinv = tb.fft_sin.data();
  V* re = reinterpret_cast<V*>(scratch);
  V* im = re + kN;
  V* mel = im + kN;
  float* fre = scratch;
  float* fim = scratch + kN * L;

  // 1. windowed even/odd samples of each frame into its lane
  const float* w = plan.window;
  for (int l = 0; l < count; ++l) {
    const float* x = taps[l];
    for (int j = 0; j < kHalfTaps; ++j) {
      fre[j * L + l] = w[2 * j] * x[2 * j];
      fim[j * L + l] = w[2 * j + 1] * x[2 * j + 1];
    }
  }
  for (int l = count; l < L; ++l)
    for (int j = 0; j < kHalfTaps; ++j) fre[j * L + l] = fim[j * L + l] = 0.0f;

  // 2. FFT. Stage len = 512: the upper half of the input is zero.
  for (int j = 0; j < kHalfTaps; ++j) {
    const V a = re[j], b = im[j];
    const float c = cosv[j], s = sinv[j];
    re[j + 512] = a * c - b * s;
    im[j + 512] = a * s + b * c;
  }
  for (int j = kHalfTaps; j < 512; ++j) re[j] = im[j] = re[j + 512] = im[j + 512] = V{};
  // Stages len = 256 .. 4 (twiddle W^(j * 512 / len)).
  for (int len = 256, step = 2; len >= 4; len >>= 1, step <<= 1) {
    for (int s0 = 0; s0 < kN; s0 += 2 * len) {
      V* r0 = re + s0;
      V* i0 = im + s0;
      V* r1 = r0 + len;
      V* i1 = i0 + len;
      for (int j = 0; j < len; ++j) {
        const V ar = r0[j], ai = i0[j], br = r1[j], bi = i1[j];
        r0[j] = ar + br;
        i0[j] = ai + bi;
        const V dr = ar - br, di = ai - bi;
        const float c = cosv[j * step], s = sinv[j * step];
        r1[j] = dr * c - di * s;
        i1[j] = dr * s + di * c;
      }
    }
  }
  // Stages len = 2 (twiddles 1, -i) and len = 1 on each block of 4.
  for (int s0 = 0; s0 < kN; s0 += 4) {
    const V ar0 = re[s0], ai0 = im[s0], ar1 = re[s0 + 1], ai1 = im[s0 + 1];
    const V ar2 = re[s0 + 2], ai2 = im[s0 + 2], ar3 = re[s0 + 3], ai3 = im[s0 + 3];
    const V br0 = ar0 + ar2, bi0 = ai0 + ai2, br1 = ar1 + ar3, bi1 = ai1 + ai3;
    const V br2 = ar0 - ar2, bi2 = ai0 - ai2;
    const V br3 = ai1 - ai3, bi3 = ar3 - ar1;  // (x1 - x3) * (-i)
    re[s0] = br0 + br1;
    im[s0] = bi0 + bi1;
    re[s0 + 1] = br0 - br1;
    im[s0 + 1] = bi0 - bi1;
    re[s0 + 2] = br2 + br3;
    im[s0 + 2] = bi2 + bi3;
    re[s0 + 3] = br2 - br3;
    im[s0 + 3] = bi2 - bi3;
  }

  // 3. real spectrum, power, sparse filterbank
  for (int m = 0; m < kMelBins; ++m) mel[m] = V{};
  const int32_t* rev = tb.bitrev.data();
  const float* pc = tb.post_cos.data();
  const float* ps = tb.post_sin.data();
  const int32_t* bin_start = plan.bin_start;
  const int32_t* mel_index = plan.mel;
  const float* weight = plan.weight;
  for (int k = 0; k < kFreqBins; ++k) {
    const int p = rev[k & (kN - 1)], q = rev[(kN - k) & (kN - 1)];
    const V zr = re[p], zi = im[p], cr = re[q], ci = im[q];  // Z[k] and Z[1024 - k] (conjugated below)
    const V er = (zr + cr) * 0.5f, ei = (zi - ci) * 0.5f;     // even part (Z[k] + conj Z[N-k]) / 2
    const V orr = (zi + ci) * 0.5f, oi = (cr - zr) * 0.5f;    // odd part (Z[k] - conj Z[N-k]) / (2i)
    const float c = pc[k], s = ps[k];
    const V xr = er + (orr * c - oi * s);
    const V xi = ei + (orr * s + oi * c);
    const V power = xr * xr + xi * xi;
    for (int32_t e = bin_start[k]; e < bin_start[k + 1]; ++e) mel[mel_index[e]] += power * weight[e];
  }

  // 4. log, written to each frame's output
  for (int m = 0; m < kMelBins; ++m) {
    float v[L];
    std::memcpy(v, &mel[m], sizeof v);
    for (int l = 0; l < count; ++l) {
      const float x = v[l];
      outs[l][m * mel_stride] = std::log(x < kLogFloor ? kLogFloor : x);  // NaN stays NaN
    }
  }
}

using GroupFn = void (*)(const Plan&, const float* const*, float* const*, int64_t, int, float*);

#if defined(__x86_64__) || defined(__i386__)
#define MESHTALK_MEL_X86 1
__attribute__((target("avx512f,avx2,fma"))) void group_avx512(const Plan& p, const float* const* t, float* const* o,
                                                               int64_t s, int c, float* w) {
  group_kernel<Vec16>(p, t, o, s, c, w);
}
__attribute__((target("avx2,fma"))) void group_avx2(const Plan& p, const float* const* t, float* const* o, int64_t s,
                                                    int c, float* w) {
  group_kernel<Vec8>(p, t, o, s, c, w);
}
#endif
void group_baseline(const Plan& p, const float* const* t, float* const* o, int64_t s, int c, float* w) {
  group_kernel<Vec4>(p, t, o, s, c, w);
}

struct Kernel {
  GroupFn fn;
  int lanes;
  const char* isa;
};

// The widest kernel this CPU runs: best_cpu_isa (gemm.hpp), so MESHTALK_GEMM_ISA caps it too.
Kernel select_kernel() {
#ifdef MESHTALK_MEL_X86
  switch (best_cpu_isa()) {
    case CpuIsa::kAvx512: return {group_avx512, 16, "avx512f"};
    case CpuIsa::kAvx2: return {group_avx2, 8, "avx2+fma"};
    case CpuIsa::kBaseline: break;
  }
#endif
  return {group_baseline, 4, "baseline"};
}

#else  // no vector extensions: one frame at a time in scalar code, the same operations

void group_scalar(const Plan& plan, const float* const* taps, float* const* outs, int64_t mel_stride, int count,
                  float* scratch);
struct Kernel {
  void (*fn)(const Plan&, const float* const*, float* const*, int64_t, int, float*);
  int lanes;
  const char* isa;
};
Kernel select_kernel() { return {group_scalar, 1, "scalar"}; }
#endif

const Kernel& kernel() {
  static const Kernel k = select_kernel();
  return k;
}

std::shared_ptr<const MelFilters::Tables> make_tables() {
  auto t = std::make_shared<MelFilters::Tables>();
  t->fft_cos.resize(512);
  t->fft_sin.resize(512);
  for (int m = 0; m < 512; ++m) {
    t->fft_cos[m] = static_cast<float>(std::cos(2.0 * kPi * m / kN));
    t->fft_sin[m] = static_cast<float>(-std::sin(2.0 * kPi * m / kN));
  }
  t->post_cos.resize(kFreqBins);
  t->post_sin.resize(kFreqBins);
  for (int k = 0; k < kFreqBins; ++k) {
    t->post_cos[k] = static_cast<float>(std::cos(2.0 * kPi * k / kFftSize));
    t->post_sin[k] = static_cast<float>(-std::sin(2.0 * kPi * k / kFftSize));
  }
  t->bitrev.resize(kN);
  for (int i = 0; i < kN; ++i) {
    int r = 0;
    for (int b = 0; b < 10; ++b) r |= ((i >> b) & 1) << (9 - b);
    t->bitrev[i] = r;
  }
  return t;
}

std::shared_ptr<const MelFilters::Tables> shared_tables() {
  static const std::shared_ptr<const MelFilters::Tables> t = make_tables();
  return t;
}

// The 800 taps of frame t of a signal whose samples [lo, hi) lie at base[0, hi - lo): a pointer into
// base when the frame lies inside, else a copy into tmp with reflection at 0 (x[-i] = x[i]) and, when
// end >= 0, at the end (x[end + i] = x[end - 2 - i]). Throws (an internal error, never a read out of
// bounds) if a needed sample is not held.
const float* frame_taps(const float* base, int64_t lo, int64_t hi, int64_t end, int64_t t, float* tmp) {
  const int64_t s = t * kHopLength - kHalfTaps;
  if (s >= lo && s + kWinLength <= hi && (end < 0 || s + kWinLength <= end)) return base + (s - lo);
  for (int64_t m = 0; m < kWinLength; ++m) {
    int64_t i = s + m;
    if (i < 0) i = -i;
    if (end >= 0 && i >= end) i = 2 * (end - 1) - i;
    if (i < lo || i >= hi)
      throw Error(ErrorCode::kInvalidArgument, "log-mel frame " + std::to_string(t) + " needs sample " +
                                                   std::to_string(i) + ", outside the held samples [" +
                                                   std::to_string(lo) + ", " + std::to_string(hi) + ")");
    tmp[m] = base[i - lo];
  }
  return tmp;
}

[[noreturn]] void too_short(int64_t n, const std::string& what) {
  throw_mismatch(what + " is too short for the log-mel's reflect padding",
                 "at least " + std::to_string(kMinMelSamples) + " samples", std::to_string(n));
}

}  // namespace

#if !(defined(__GNUC__) || defined(__clang__))
namespace {
void group_scalar(const Plan& plan, const float* const* taps, float* const* outs, int64_t mel_stride, int count,
                  float* scratch) {
  // Portable fallback: a direct evaluation per frame (slow, only for compilers without vector extensions).
  for (int l = 0; l < count; ++l) {
    std::vector<float> mel(kMelBins, 0.0f);
    for (int k = 0; k < kFreqBins; ++k) {
      double xr = 0.0, xi = 0.0;
      for (int m = 0; m < kWinLength; ++m) {
        const double a = 2.0 * kPi * k * m / kFftSize, v = plan.window[m] * taps[l][m];
        xr += v * std::cos(a);
        xi -= v * std::sin(a);
      }
      const float power = static_cast<float>(xr * xr + xi * xi);
      for (int32_t e = plan.bin_start[k]; e < plan.bin_start[k + 1]; ++e) mel[plan.mel[e]] += power * plan.weight[e];
    }
    for (int m = 0; m < kMelBins; ++m) outs[l][m * mel_stride] = std::log(mel[m] < kLogFloor ? kLogFloor : mel[m]);
  }
  (void)scratch;
}
}  // namespace
#endif

// ------------------------------------------------------------------------------------------ tables
std::vector<float> standard_hann_window() {
  std::vector<float> w(kWinLength);
  for (int64_t n = 0; n < kWinLength; ++n)
    w[n] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * kPi * static_cast<double>(n) / kWinLength));
  return w;
}

std::vector<float> standard_mel_filterbank() {
  // As audio.mel_filterbank: bin frequencies linspace(0, 8000, 1025); 82 mel points equally spaced
  // on the HTK scale between 0 and 8000 Hz; triangle m rises from point m to m+1, falls to m+2.
  const double f_max = kSampleRate / 2;
  const double mel_max = 2595.0 * std::log10(1.0 + f_max / 700.0);
  std::vector<double> hz(kMelBins + 2);
  const double step = mel_max / (kMelBins + 1);
  for (int64_t i = 0; i < kMelBins + 2; ++i) {
    const double m = i == kMelBins + 1 ? mel_max : i * step;
    hz[i] = 700.0 * (std::pow(10.0, m / 2595.0) - 1.0);
  }
  std::vector<float> fb(static_cast<size_t>(kFreqBins * kMelBins));
  const double bin_step = f_max / (kFreqBins - 1);
  for (int64_t k = 0; k < kFreqBins; ++k) {
    const double f = k == kFreqBins - 1 ? f_max : k * bin_step;
    for (int64_t m = 0; m < kMelBins; ++m) {
      const double rising = (f - hz[m]) / (hz[m + 1] - hz[m]);
      const double falling = (hz[m + 2] - f) / (hz[m + 2] - hz[m + 1]);
      fb[k * kMelBins + m] = static_cast<float>(std::max(0.0, std::min(rising, falling)));
    }
  }
  return fb;
}

void MelScratch::AlignedDelete::operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t(64)); }

MelScratch::MelScratch()
    : data_(static_cast<float*>(::operator new[](kScratchFloats * sizeof(float), std::align_val_t(64)))) {
  std::fill(data_.get(), data_.get() + kScratchFloats, 0.0f);
}

namespace {
float* scratch_edges(MelScratch& s) { return s.data() + 2 * kN * kMaxLanes + kMelBins * kMaxLanes; }
}  // namespace

MelFilters::MelFilters() {
  const std::vector<float> w = standard_hann_window(), fb = standard_mel_filterbank();
  build(w.data(), fb.data());
}

MelFilters::MelFilters(const float* window, const float* filterbank) {
  if (!window || !filterbank) throw_mismatch("MelFilters window and filterbank", "non-null buffers", "a null pointer");
  build(window, filterbank);
}

void MelFilters::build(const float* window, const float* filterbank) {
  for (int64_t i = 0; i < kWinLength; ++i)
    if (!std::isfinite(window[i]))
      throw_mismatch("mel window [800] entry " + std::to_string(i), "a finite value", std::to_string(window[i]));
  window_.assign(window, window + kWinLength);
  bin_start_.assign(1, 0);
  for (int64_t k = 0; k < kFreqBins; ++k) {
    for (int64_t m = 0; m < kMelBins; ++m) {
      const float v = filterbank[k * kMelBins + m];
      if (!std::isfinite(v))
        throw_mismatch("mel filterbank [1025, 80] entry [" + std::to_string(k) + ", " + std::to_string(m) + "]",
                       "a finite value", std::to_string(v));
      if (v != 0.0f) {
        mel_.push_back(static_cast<int32_t>(m));
        weight_.push_back(v);
      }
    }
    bin_start_.push_back(static_cast<int32_t>(weight_.size()));
  }
  tables_ = shared_tables();
}

std::shared_ptr<const MelFilters> MelFilters::standard() {
  static const std::shared_ptr<const MelFilters> f = std::make_shared<const MelFilters>();
  return f;
}

std::vector<float> MelFilters::filterbank() const {
  std::vector<float> fb(static_cast<size_t>(kFreqBins * kMelBins), 0.0f);
  for (int64_t k = 0; k < kFreqBins; ++k)
    for (int32_t e = bin_start_[k]; e < bin_start_[k + 1]; ++e) fb[k * kMelBins + mel_[e]] = weight_[e];
  return fb;
}

int64_t MelFilters::lanes() { return kernel().lanes; }
const char* MelFilters::isa() { return kernel().isa; }

void MelFilters::frames(const float* const* taps, float* const* outs, int64_t mel_stride, int64_t count,
                        MelScratch& scratch) const {
  const Plan plan{tables_.get(), window_.data(), bin_start_.data(), mel_.data(), weight_.data()};
  const Kernel& k = kernel();
  for (int64_t i = 0; i < count; i += k.lanes) {
    const int n = static_cast<int>(std::min<int64_t>(k.lanes, count - i));
    k.fn(plan, taps + i, outs + i, mel_stride, n, scratch.data());
  }
}

// ------------------------------------------------------------------------------------------ batched
void log_mel_time_major(const MelFilters& filters, const float* x, int64_t L, float* out, MelScratch& scratch) {
  if (L < kMinMelSamples) too_short(L, "x");
  if (!x || !out) throw_mismatch("log_mel x and out", "non-null buffers", "a null pointer");
  const int64_t F = mel_frame_count(L);
  const float* taps[kMaxLanes];
  float* outs[kMaxLanes];
  float* edges = scratch_edges(scratch);
  for (int64_t t0 = 0; t0 < F; t0 += kMaxLanes) {
    const int64_t n = std::min<int64_t>(kMaxLanes, F - t0);
    for (int64_t i = 0; i < n; ++i) {
      taps[i] = frame_taps(x, 0, L, L, t0 + i, edges + i * kWinLength);
      outs[i] = out + (t0 + i) * kMelBins;
    }
    filters.frames(taps, outs, 1, n, scratch);
  }
}

void log_mel(const MelFilters& filters, const float* x, int64_t N, int64_t L, int64_t ldx, float* out,
             const LogMelOptions& options) {
  if (N < 0) throw_mismatch("log_mel x batch size N", "N >= 0", std::to_string(N));
  if (L < kMinMelSamples) too_short(L, "x");
  if (ldx < L) throw_mismatch("log_mel row stride ldx", ">= L = " + std::to_string(L), std::to_string(ldx));
  if (N > 0 && (!x || !out)) throw_mismatch("log_mel x and out", "non-null buffers", "a null pointer");
  const int64_t F = mel_frame_count(L);
  if (N > std::numeric_limits<int64_t>::max() / 4 / std::max<int64_t>(ldx, kMelBins * F))
    throw_mismatch("log_mel x [N, L]", "N * L addressable in 64 bits", "N=" + std::to_string(N));
  const int threads = resolve_thread_count(options.threads);
  if (N == 0) return;
  // Items are (row, frame) in row-major order, dealt in contiguous ranges of whole groups.
  const int64_t items = N * F, groups = (items + kMaxLanes - 1) / kMaxLanes;
  const int64_t tasks = std::min<int64_t>(threads, groups);
  ThreadPool pool(static_cast<int>(tasks));
  pool.parallel_for(tasks, [&](int64_t task) {
    MelScratch scratch;
    float* edges = scratch_edges(scratch);
    const float* taps[kMaxLanes];
    float* outs[kMaxLanes];
    const int64_t g0 = task * groups / tasks, g1 = (task + 1) * groups / tasks;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t i0 = g * kMaxLanes, n = std::min<int64_t>(kMaxLanes, items - i0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = (i0 + i) / F, t = (i0 + i) % F;
        taps[i] = frame_taps(x + r * ldx, 0, L, L, t, edges + i * kWinLength);
        outs[i] = out + r * kMelBins * F + t;
      }
      filters.frames(taps, outs, F, n, scratch);
    }
  });
}

// ------------------------------------------------------------------------------------------ streaming
StreamingMel::StreamingMel(std::shared_ptr<const MelFilters> filters, int64_t batch)
    : filters_(std::move(filters)), batch_(batch) {
  if (!filters_) throw_mismatch("StreamingMel filters", "a MelFilters", "null");
  if (batch < 1 || batch > 4096) throw_mismatch("StreamingMel batch", "an integer in [1, 4096]", std::to_string(batch));
  buffer_.assign(static_cast<size_t>(batch * kCapacity), 0.0f);
  edges_.assign(static_cast<size_t>(kGroupFrames * batch * kWinLength), 0.0f);
  staging_.assign(static_cast<size_t>(kGroupFrames * batch * kMelBins), 0.0f);
  taps_.resize(static_cast<size_t>(kGroupFrames * batch));
  outs_.resize(static_cast<size_t>(kGroupFrames * batch));
}

void StreamingMel::reset() {
  start_ = end_ = next_ = 0;
  closed_ = false;
}

void StreamingMel::append(const float* samples, int64_t n, int64_t ld) {
  const int64_t held = end_ - start_;
  for (int64_t b = 0; b < batch_; ++b) {
    float* dst = buffer_.data() + b * kCapacity + held;
    if (samples)
      std::memcpy(dst, samples + b * ld, static_cast<size_t>(n) * sizeof(float));
    else
      std::fill(dst, dst + n, 0.0f);
  }
  end_ += n;
}

void StreamingMel::emit(int64_t stop, bool at_end, const FrameSink& sink) {
  while (next_ < stop) {
    const int64_t count = std::min(kGroupFrames, stop - next_);
    for (int64_t f = 0; f < count; ++f)
      for (int64_t b = 0; b < batch_; ++b) {
        const int64_t i = f * batch_ + b;
        taps_[i] = frame_taps(buffer_.data() + b * kCapacity, start_, end_, at_end ? end_ : -1, next_ + f,
                              edges_.data() + i * kWinLength);
        outs_[i] = staging_.data() + i * kMelBins;
      }
    filters_->frames(taps_.data(), outs_.data(), 1, count * batch_, scratch_);
    for (int64_t f = 0; f < count; ++f) {
      ++next_;  // counted before the call, so a sink that throws leaves a consistent stream
      if (sink) sink(next_ - 1, staging_.data() + f * batch_ * kMelBins);
    }
  }
}

void StreamingMel::trim() {
  // Later frames start at 160 * next_ - 400 or later; frames 0..2 also need samples 1..400 (the left
  // reflection), and until the first frame is out every sample is kept.
  if (end_ < kMinMelSamples) return;
  const int64_t keep_from = std::max<int64_t>(0, next_ * kHopLength - kHalfTaps);
  const int64_t shift = keep_from - start_;
  if (shift <= 0) return;
  const int64_t held = end_ - keep_from;
  for (int64_t b = 0; b < batch_; ++b) {
    float* row = buffer_.data() + b * kCapacity;
    std::memmove(row, row + shift, static_cast<size_t>(held) * sizeof(float));
  }
  start_ = keep_from;
}

void StreamingMel::push(const float* samples, int64_t n, int64_t ld, const FrameSink& sink) {
  if (n > 0 && !samples) throw_mismatch("StreamingMel push: samples", "a non-null buffer", "a null pointer");
  if (n > 0 && batch_ > 1 && ld < n)
    throw_mismatch("StreamingMel push: row stride ld", ">= n = " + std::to_string(n), std::to_string(ld));
  feed(samples, n, ld, sink);
}

void StreamingMel::push_zeros(int64_t n, const FrameSink& sink) { feed(nullptr, n, 0, sink); }

void StreamingMel::feed(const float* samples, int64_t n, int64_t ld, const FrameSink& sink) {
  if (closed_) throw Error(ErrorCode::kInvalidArgument, "StreamingMel: push() called after close(); reset() it first");
  if (n < 0) throw_mismatch("StreamingMel push: sample count n", "n >= 0", std::to_string(n));
  if (n == 0) return;
  if (end_ > std::numeric_limits<int64_t>::max() / 2 - n)
    throw_mismatch("StreamingMel push: total samples", "below 2^62", std::to_string(end_));
  int64_t done = 0;
  while (done < n) {
    const int64_t room = kCapacity - (end_ - start_);
    if (room <= 0) throw Error(ErrorCode::kInvalidArgument, "StreamingMel: internal error, the sample buffer is full");
    const int64_t piece = std::min(room, n - done);
    append(samples ? samples + done : nullptr, piece, ld);
    done += piece;
    if (end_ >= kMinMelSamples) {
      emit((end_ - kHalfTaps) / kHopLength + 1, false, sink);  // frames t with 160 t + 400 <= end_
      trim();
    }
  }
}

void StreamingMel::close(const FrameSink& sink) {
  if (closed_) throw Error(ErrorCode::kInvalidArgument, "StreamingMel: close() called twice; reset() it first");
  closed_ = true;
  if (end_ < kMinMelSamples) too_short(end_, "the stream");
  emit(mel_frame_count(end_), true, sink);
}

}  // namespace meshtalk
