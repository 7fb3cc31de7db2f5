// The GEMM backends of gemm.hpp.
//
// Builtin kernel: W [N, K] is packed once into panels of 16 columns, panel p holding
// W[16p + j, k] at [k * 16 + j] (zero past N), so the inner loop reads 64 contiguous bytes per k and
// panel. A register tile of MR rows x NP panels keeps MR * NP * 16 accumulators in vector
// registers; each step k broadcasts A[m, k] and does one multiply-add per accumulator vector
// (sums over blocks of 256 steps, each then added to C). The
// panel loop is outside the row loop, so a block of NP panels (K * NP * 64 bytes) stays in L2
// while all rows stream past it. Vector width and tile are chosen per instruction set to fit its
// register file (a vector type wider than the ISA's registers would be lowered through memory):
//   AVX-512 (32 x 16 floats): MR=4 x NP=4 (16 accumulators), NP=8 when one row is left (GEMV:
//                             8 independent chains hide the FMA latency);
//   AVX2+FMA (16 x 8 floats): MR=6 x NP=1 (12 accumulators), NP=4 for one row;
//   baseline (SSE2/NEON, 16 x 4 floats): MR=2 x NP=1 (8 accumulators), NP=2 for one row.
// The vectors are GCC/Clang vector extensions, so one source serves every instruction set; this
// file is compiled with -ffp-contract=fast (CMakeLists.txt) so `acc += w * a` becomes an FMA where
// the target has one. Other compilers get the same loop order in plain scalar code.
#include "meshtalk/gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <type_traits>
#include <string>

#include "meshtalk/status.hpp"

#ifdef MESHTALK_HAVE_OPENBLAS
// scipy-openblas32 prefixes every symbol with scipy_ (so it cannot clash with another BLAS in the
// process); its cblas.h declares them under those names.
#include <cblas.h>
#endif

namespace meshtalk {
namespace {

constexpr int64_t P = WeightMatrix::kPanel;
constexpr int64_t kKBlock = 256;  // steps of k summed before they are added to C

#if defined(__GNUC__) || defined(__clang__)
#define MESHTALK_INLINE inline __attribute__((always_inline))
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

// v = p[0, valid) (zeros after); valid may be <= 0 or >= the vector width.
template <class V>
MESHTALK_INLINE void vload(V& v, const float* p, int64_t valid) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  if (valid >= L) {
    std::memcpy(&v, p, sizeof v);
  } else {
    float tmp[L] = {};
    if (valid > 0) std::memcpy(tmp, p, static_cast<size_t>(valid) * sizeof(float));
    std::memcpy(&v, tmp, sizeof v);
  }
}

template <class V>
MESHTALK_INLINE void vstore(float* p, const V& v, int64_t valid) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  if (valid >= L) {
    std::memcpy(p, &v, sizeof v);
  } else if (valid > 0) {
    float tmp[L];
    std::memcpy(tmp, &v, sizeof v);
    std::memcpy(p, tmp, static_cast<size_t>(valid) * sizeof(float));
  }
}

// Integer vectors of the same lane count as each float vector (for widening stored weights).
typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef int8_t I8x16 __attribute__((vector_size(16)));
typedef uint16_t U16x8 __attribute__((vector_size(16)));
typedef uint32_t U32x8 __attribute__((vector_size(32)));
typedef int8_t I8x8 __attribute__((vector_size(8)));
typedef uint16_t U16x4 __attribute__((vector_size(8)));
typedef uint32_t U32x4 __attribute__((vector_size(16)));
typedef int8_t I8x4 __attribute__((vector_size(4)));
typedef int32_t I32x16 __attribute__((vector_size(64)));
typedef int32_t I32x8 __attribute__((vector_size(32)));
typedef int32_t I32x4 __attribute__((vector_size(16)));
template <class V> struct Lanes;
template <> struct Lanes<Vec16> { typedef U16x16 H; typedef U32x16 U; typedef I8x16 Q; typedef I32x16 I; };
template <> struct Lanes<Vec8> { typedef U16x8 H; typedef U32x8 U; typedef I8x8 Q; typedef I32x8 I; };
template <> struct Lanes<Vec4> { typedef U16x4 H; typedef U32x4 U; typedef I8x4 Q; typedef I32x4 I; };

#if defined(__x86_64__) || defined(__i386__)
// The widening loads of the AVX-512 and AVX2 kernels as one instruction each (vpmovzxwd / vpmovsxbd
// from memory). Written as inline assembly because GCC 12 lowers __builtin_convertvector(int8 x 16 ->
// int32 x 16) to a vpinsrd per lane (the int8 kernel then took 2.4x float32's time on the decoder's
// last product, RESULTS.md "Issue 17"), and intrinsics cannot be used here: these templates are
// compiled without the kernels' target attributes. The assembly is only reached from the kernels
// whose target has the instruction (packed_avx512: AVX-512F; packed_avx2: AVX2). Exact conversions,
// so the results are the same bits as the generic code's.
template <class V> struct Widen;
template <> struct Widen<Vec16> {
  static MESHTALK_INLINE Vec16 bf16(const uint16_t* p) {
    U32x16 u;
    asm("vpmovzxwd %1, %0" : "=v"(u) : "m"(*reinterpret_cast<const uint16_t(*)[16]>(p)));
    u <<= 16;  // the bfloat16 bits are the float's high half
    Vec16 v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
  static MESHTALK_INLINE Vec16 int8(const int8_t* p) {
    I32x16 q;
    asm("vpmovsxbd %1, %0" : "=v"(q) : "m"(*reinterpret_cast<const int8_t(*)[16]>(p)));
    return __builtin_convertvector(q, Vec16);
  }
};
template <> struct Widen<Vec8> {
  static MESHTALK_INLINE Vec8 bf16(const uint16_t* p) {
    U32x8 u;
    asm("vpmovzxwd %1, %0" : "=x"(u) : "m"(*reinterpret_cast<const uint16_t(*)[8]>(p)));
    u <<= 16;
    Vec8 v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
  static MESHTALK_INLINE Vec8 int8(const int8_t* p) {
    I32x8 q;
    asm("vpmovsxbd %1, %0" : "=x"(q) : "m"(*reinterpret_cast<const int8_t(*)[8]>(p)));
    return __builtin_convertvector(q, Vec8);
  }
};
#define MESHTALK_X86_WIDEN 1
#endif

// Weight loaders: L consecutive stored values of a panel row -> a float vector. S is the stored type
// (float, uint16_t bfloat16 bits, int8_t); `scale` is the int8 scales of those columns (else unused).
template <class V, class S>
MESHTALK_INLINE V wload(const S* p, const V& scale) {
  if constexpr (std::is_same<S, float>::value) {
    (void)scale;
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  } else if constexpr (std::is_same<S, uint16_t>::value) {
    (void)scale;
#ifdef MESHTALK_X86_WIDEN
    if constexpr (!std::is_same<V, Vec4>::value) return Widen<V>::bf16(p);
#endif
    typename Lanes<V>::H h;
    std::memcpy(&h, p, sizeof h);
    const typename Lanes<V>::U u = __builtin_convertvector(h, typename Lanes<V>::U) << 16;  // exact: the high half
    V v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  } else {
#ifdef MESHTALK_X86_WIDEN
    if constexpr (!std::is_same<V, Vec4>::value) return Widen<V>::int8(p) * scale;
#endif
    // int8 -> int32 -> float (exact), then float(q) * s[n], one rounding.
    typename Lanes<V>::Q q;
    std::memcpy(&q, p, sizeof q);
    const typename Lanes<V>::I wide = __builtin_convertvector(q, typename Lanes<V>::I);
    return __builtin_convertvector(wide, V) * scale;
  }
}

// C[MR rows, cols] (+)= A[MR rows, K] * packed panels [NP]; cols <= NP * 16 valid columns.
template <class V, class S, int MR, int NP>
MESHTALK_INLINE void tile(int64_t k, const float* a, int64_t lda, const S* w, const float* scales, int64_t pstride,
                          float* c, int64_t ldc, int64_t cols, bool accumulate) {
  constexpr int L = sizeof(V) / sizeof(float);
  constexpr int VP = P / L;  // vectors per panel row
  V acc[MR][NP * VP];
  V sc[NP * VP];
  for (int q = 0; q < NP * VP; ++q) {
    if (scales) std::memcpy(&sc[q], scales + (q / VP) * P + (q % VP) * L, sizeof(V));
    else sc[q] = V{};
  }
  // Blocks of kKBlock steps are summed from zero and then added to C: the rounding error grows with
  // the block length plus the number of blocks rather than with K (the template encoder has
  // K = V*3 = 18516). The order is fixed, so results still do not depend on M or the threads.
  for (int64_t k0 = 0; k0 < k || (k0 == 0 && !accumulate); k0 += kKBlock) {
    const int64_t k1 = std::min(k, k0 + kKBlock);
    for (int m = 0; m < MR; ++m)
      for (int q = 0; q < NP * VP; ++q) acc[m][q] = V{};
    for (int64_t kk = k0; kk < k1; ++kk) {
      V wv[NP * VP];
      for (int q = 0; q < NP * VP; ++q) wv[q] = wload<V, S>(w + (q / VP) * pstride + kk * P + (q % VP) * L, sc[q]);
      for (int m = 0; m < MR; ++m) {
        const float s = a[m * lda + kk];
        for (int q = 0; q < NP * VP; ++q) acc[m][q] += wv[q] * s;
      }
    }
    const bool add = accumulate || k0 > 0;  // the first block of a plain product overwrites C
    for (int m = 0; m < MR; ++m)
      for (int q = 0; q < NP * VP; ++q) {
        const int64_t col = (q / VP) * P + (q % VP) * L;
        if (add) {
          V old;
          vload(old, c + m * ldc + col, cols - col);
          acc[m][q] = old + acc[m][q];
        }
        vstore(c + m * ldc + col, acc[m][q], cols - col);
      }
  }
}

template <class V, class S, int MR, int NPMAX>
MESHTALK_INLINE void tile_n(int np, int64_t k, const float* a, int64_t lda, const S* w, const float* scales,
                            int64_t pstride, float* c, int64_t ldc, int64_t cols, bool accumulate) {
  // np in [1, NPMAX]; each case is a fully unrolled tile.
#define MESHTALK_TILE_CASE(NPV)                                                         \
  case NPV:                                                                             \
    if constexpr (NPMAX >= NPV) {                                                       \
      tile<V, S, MR, NPV>(k, a, lda, w, scales, pstride, c, ldc, cols, accumulate);     \
      return;                                                                           \
    }                                                                                   \
    break;
  switch (np) {
    MESHTALK_TILE_CASE(8)
    MESHTALK_TILE_CASE(7)
    MESHTALK_TILE_CASE(6)
    MESHTALK_TILE_CASE(5)
    MESHTALK_TILE_CASE(4)
    MESHTALK_TILE_CASE(3)
    MESHTALK_TILE_CASE(2)
    default: break;
  }
#undef MESHTALK_TILE_CASE
  tile<V, S, MR, 1>(k, a, lda, w, scales, pstride, c, ldc, cols, accumulate);
}

// Rows in tiles of MRMAX (the rest one by one) x NPMAX panels; NP1 panels when M = 1.
template <class V, class S, int MRMAX, int NPMAX, int NP1>
MESHTALK_INLINE void packed_driver(int64_t m, const float* a, int64_t lda, const void* packed_bytes,
                                   const float* scales, int64_t n, int64_t k, float* c, int64_t ldc, bool accumulate,
                                   int64_t p0, int64_t p1) {
  const S* packed = static_cast<const S*>(packed_bytes);
  const int64_t pstride = k * P;
  const int64_t block = m == 1 ? NP1 : NPMAX;
  for (int64_t p = p0; p < p1; p += block) {
    const int np = static_cast<int>(std::min<int64_t>(block, p1 - p));
    const int64_t col0 = p * P;
    const int64_t cols = std::min<int64_t>(np * P, n - col0);
    const S* wp = packed + p * pstride;
    const float* sp = scales ? scales + col0 : nullptr;
    if (m == 1) {
      tile_n<V, S, 1, NP1>(np, k, a, lda, wp, sp, pstride, c + col0, ldc, cols, accumulate);
      continue;
    }
    int64_t r = 0;
    for (; r + MRMAX <= m; r += MRMAX)
      tile_n<V, S, MRMAX, NPMAX>(np, k, a + r * lda, lda, wp, sp, pstride, c + r * ldc + col0, ldc, cols, accumulate);
    for (; r < m; ++r)
      tile_n<V, S, 1, NPMAX>(np, k, a + r * lda, lda, wp, sp, pstride, c + r * ldc + col0, ldc, cols, accumulate);
  }
}

#define MESHTALK_PACKED_ARGS                                                                                  \
  int64_t m, const float *a, int64_t lda, const void *packed, const float *scales, int64_t n, int64_t k, float *c, \
      int64_t ldc, bool accumulate, int64_t p0, int64_t p1
#define MESHTALK_PACKED_CALL m, a, lda, packed, scales, n, k, c, ldc, accumulate, p0, p1

#if defined(__x86_64__) || defined(__i386__)
#define MESHTALK_X86_DISPATCH 1
// AVX-512: MR=4 x NP=4 (8 panels for one row). AVX2: MR=6 x NP=1 (4 panels for one row).
template <class S>
__attribute__((target("avx512f,avx2,fma"))) void packed_avx512(MESHTALK_PACKED_ARGS) {
  packed_driver<Vec16, S, 4, 4, 8>(MESHTALK_PACKED_CALL);
}
template <class S>
__attribute__((target("avx2,fma"))) void packed_avx2(MESHTALK_PACKED_ARGS) {
  packed_driver<Vec8, S, 6, 1, 4>(MESHTALK_PACKED_CALL);
}
#endif
void packed_baseline(MESHTALK_PACKED_ARGS) {
  packed_driver<Vec4, float, 2, 1, 2>(MESHTALK_PACKED_CALL);
}

#else  // no vector extensions: the same accumulation order in scalar code

void packed_baseline(int64_t m, const float* a, int64_t lda, const void* packed_bytes, const float* scales, int64_t n,
                     int64_t k, float* c, int64_t ldc, bool accumulate, int64_t p0, int64_t p1) {
  (void)scales;
  const float* packed = static_cast<const float*>(packed_bytes);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t p = p0; p < p1; ++p) {
      const float* wp = packed + p * k * P;
      const int64_t cols = std::min<int64_t>(P, n - p * P);
      for (int64_t j = 0; j < cols; ++j) {
        float total = accumulate ? c[r * ldc + p * P + j] : 0.0f;
        for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {  // the blocking of the vector kernels
          float acc = 0.0f;
          for (int64_t kk = k0; kk < std::min(k, k0 + kKBlock); ++kk) acc += wp[kk * P + j] * a[r * lda + kk];
          total = (accumulate || k0 > 0) ? total + acc : acc;
        }
        c[r * ldc + p * P + j] = total;
      }
    }
}
#endif

using PackedFn = void (*)(int64_t, const float*, int64_t, const void*, const float*, int64_t, int64_t, float*,
                          int64_t, bool, int64_t, int64_t);

// One kernel per storage (nullptr: this instruction set has none for it).
struct Kernel {
  PackedFn f32, bf16, int8;
  const char* isa;
};

// The best kernels this CPU runs (best_cpu_isa).
Kernel select_kernel() {
#ifdef MESHTALK_X86_DISPATCH
  switch (best_cpu_isa()) {
    case CpuIsa::kAvx512:
      return {packed_avx512<float>, packed_avx512<uint16_t>, packed_avx512<int8_t>, "avx512f"};
    case CpuIsa::kAvx2: return {packed_avx2<float>, packed_avx2<uint16_t>, packed_avx2<int8_t>, "avx2+fma"};
    case CpuIsa::kBaseline: break;
  }
#endif
  return {packed_baseline, nullptr, nullptr, "baseline"};
}

PackedFn kernel_for(const Kernel& k, WeightStorage storage) {
  switch (storage) {
    case WeightStorage::kBF16: return k.bf16;
    case WeightStorage::kInt8: return k.int8;
    case WeightStorage::kF32: break;
  }
  return k.f32;
}

const Kernel& kernel() {
  static const Kernel k = select_kernel();  // thread-safe initialisation (C++11 statics)
  return k;
}

#ifdef MESHTALK_HAVE_OPENBLAS
void blas_single_thread() {
  // The core runs its own threads; OpenBLAS must not start a second pool underneath them.
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}
#endif

[[maybe_unused]] void check_int32(const char* what, int64_t v) {
  if (v > std::numeric_limits<int>::max())
    throw_mismatch(std::string("gemm: ") + what, "at most " + std::to_string(std::numeric_limits<int>::max()) +
                                                     " (32-bit BLAS)", std::to_string(v));
}

}  // namespace

const char* gemm_backend_name(GemmBackend backend) noexcept {
  return backend == GemmBackend::kBlas ? "blas" : "builtin";
}

bool blas_available() noexcept {
#ifdef MESHTALK_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

const char* blas_description() {
#ifdef MESHTALK_HAVE_OPENBLAS
  static const std::string text = std::string(scipy_openblas_get_config()) + " (scipy-openblas32, core " +
                                  scipy_openblas_get_corename() + ")";
  return text.c_str();
#else
  return "none: this core was built without BLAS (MESHTALK_BLAS=OFF or scipy-openblas32 not found); "
         "the builtin kernels serve every product";
#endif
}

const char* builtin_kernel_isa() { return kernel().isa; }

const char* weight_storage_name(WeightStorage storage) noexcept {
  switch (storage) {
    case WeightStorage::kBF16: return "bf16";
    case WeightStorage::kInt8: return "int8";
    case WeightStorage::kF32: break;
  }
  return "f32";
}

int64_t weight_storage_bytes(WeightStorage storage) noexcept {
  switch (storage) {
    case WeightStorage::kBF16: return 2;
    case WeightStorage::kInt8: return 1;
    case WeightStorage::kF32: break;
  }
  return 4;
}

std::string storage_unavailable_reason(WeightStorage storage, GemmBackend backend) {
  if (storage == WeightStorage::kF32) return "";
  const std::string name = weight_storage_name(storage);
  if (backend == GemmBackend::kBlas)
    return "weights '" + name + "' run on the builtin GEMM only (BLAS multiplies float32 weights): use the builtin "
           "backend, or weights 'f32' with BLAS";
  if (kernel_for(kernel(), storage) == nullptr)
    return "weights '" + name + "' need the AVX2+FMA or AVX-512 kernels, and this CPU runs the " + kernel().isa +
           " kernel only (or MESHTALK_GEMM_ISA caps it there): use weights 'f32', which runs everywhere";
  return "";
}

uint16_t float_to_bf16(float v) noexcept {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (finite values)
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t v) noexcept {
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

void WeightMatrix::AlignedDelete::operator()(unsigned char* p) const noexcept {
  ::operator delete[](p, std::align_val_t(64));
}

WeightMatrix::WeightMatrix(const float* w, int64_t n, int64_t k, int64_t ldw, GemmBackend backend,
                           WeightStorage storage)
    : backend_(backend), storage_(storage), n_(n), k_(k) {
  if (n < 0 || k < 0 || ldw < k)
    throw_mismatch("WeightMatrix", "n >= 0, k >= 0, ldw >= k",
                   "n=" + std::to_string(n) + ", k=" + std::to_string(k) + ", ldw=" + std::to_string(ldw));
  if (backend == GemmBackend::kBlas && !blas_available())
    throw Error(ErrorCode::kInvalidArgument, std::string("gemm backend 'blas': ") + blas_description());
  const std::string why = storage_unavailable_reason(storage, backend);
  if (!why.empty()) throw Error(ErrorCode::kInvalidArgument, why);
  size_ = backend == GemmBackend::kBlas ? static_cast<size_t>(n * k) : static_cast<size_t>(panels() * k * P);
  const size_t bytes = std::max<size_t>(size_ * static_cast<size_t>(weight_storage_bytes(storage)), 1);
  data_.reset(static_cast<unsigned char*>(::operator new[](bytes, std::align_val_t(64))));
  std::memset(data_.get(), 0, bytes);
  if (backend == GemmBackend::kBlas) {
    float* d = reinterpret_cast<float*>(data_.get());
    for (int64_t r = 0; r < n; ++r) std::memcpy(d + r * k, w + r * ldw, static_cast<size_t>(k) * sizeof(float));
    return;
  }
  if (storage == WeightStorage::kInt8) {
    scales_.assign(static_cast<size_t>(panels() * P), 0.0f);
    for (int64_t r = 0; r < n; ++r) {
      float amax = 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) amax = std::max(amax, std::fabs(w[r * ldw + kk]));
      scales_[r] = amax / 127.0f;
    }
  }
  for (int64_t p = 0; p < panels(); ++p) {
    const int64_t cols = std::min<int64_t>(P, n - p * P);
    for (int64_t j = 0; j < cols; ++j) {
      const float* row = w + (p * P + j) * ldw;
      const size_t base = static_cast<size_t>(p * k * P + j);
      switch (storage) {
        case WeightStorage::kF32: {
          float* panel = reinterpret_cast<float*>(data_.get()) + base;
          for (int64_t kk = 0; kk < k; ++kk) panel[kk * P] = row[kk];
          break;
        }
        case WeightStorage::kBF16: {
          uint16_t* panel = reinterpret_cast<uint16_t*>(data_.get()) + base;
          for (int64_t kk = 0; kk < k; ++kk) panel[kk * P] = float_to_bf16(row[kk]);
          break;
        }
        case WeightStorage::kInt8: {
          int8_t* panel = reinterpret_cast<int8_t*>(data_.get()) + base;
          const float s = scales_[p * P + j];
          for (int64_t kk = 0; kk < k; ++kk) {
            const float q = s > 0.0f ? std::nearbyint(row[kk] / s) : 0.0f;
            panel[kk * P] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, q)));
          }
          break;
        }
      }
    }
  }
}

std::vector<float> WeightMatrix::dequantized() const {
  std::vector<float> out(static_cast<size_t>(n_ * k_));
  if (backend_ == GemmBackend::kBlas) {
    if (!out.empty()) std::memcpy(out.data(), data_.get(), out.size() * sizeof(float));
    return out;
  }
  for (int64_t r = 0; r < n_; ++r)
    for (int64_t kk = 0; kk < k_; ++kk) {
      const size_t at = static_cast<size_t>((r / P) * k_ * P + kk * P + r % P);
      float v = 0.0f;
      switch (storage_) {
        case WeightStorage::kF32: v = reinterpret_cast<const float*>(data_.get())[at]; break;
        case WeightStorage::kBF16: v = bf16_to_float(reinterpret_cast<const uint16_t*>(data_.get())[at]); break;
        case WeightStorage::kInt8:
          v = static_cast<float>(reinterpret_cast<const int8_t*>(data_.get())[at]) * scales_[r];
          break;
      }
      out[r * k_ + kk] = v;
    }
  return out;
}

void gemm(int64_t m, const float* a, int64_t lda, const WeightMatrix& w, float* c, int64_t ldc, bool accumulate,
          int64_t panel_begin, int64_t panel_end) {
  const int64_t n = w.n(), k = w.k();
  if (panel_end < 0) panel_end = w.panels();
  if (m < 0 || lda < k || ldc < n || panel_begin < 0 || panel_begin > panel_end || panel_end > w.panels())
    throw_mismatch("gemm", "m >= 0, lda >= K, ldc >= N and 0 <= panel_begin <= panel_end <= panels",
                   "m=" + std::to_string(m) + ", lda=" + std::to_string(lda) + ", ldc=" + std::to_string(ldc) +
                       ", panels [" + std::to_string(panel_begin) + ", " + std::to_string(panel_end) + ") of " +
                       std::to_string(w.panels()) + " (K=" + std::to_string(k) + ", N=" + std::to_string(n) + ")");
  if (m == 0 || panel_begin == panel_end) return;
  if (w.backend() == GemmBackend::kBuiltin) {
    kernel_for(kernel(), w.storage())(m, a, lda, w.data(), w.storage() == WeightStorage::kInt8 ? w.scales() : nullptr,
                                      n, k, c, ldc, accumulate, panel_begin, panel_end);
    return;
  }
#ifdef MESHTALK_HAVE_OPENBLAS
  const int64_t col0 = panel_begin * P;
  const int64_t cols = std::min(panel_end * P, n) - col0;
  if (k == 0) {  // BLAS leaves C alone for K = 0 with beta = 1; we define the result as 0 or C.
    if (!accumulate)
      for (int64_t r = 0; r < m; ++r) std::fill(c + r * ldc + col0, c + r * ldc + col0 + cols, 0.0f);
    return;
  }
  check_int32("m", m);
  check_int32("n", n);
  check_int32("k", k);
  check_int32("lda", lda);
  check_int32("ldc", ldc);
  blas_single_thread();
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(cols),
                    static_cast<int>(k), 1.0f, a, static_cast<int>(lda), static_cast<const float*>(w.data()) + col0 * k, static_cast<int>(k),
                    accumulate ? 1.0f : 0.0f, c + col0, static_cast<int>(ldc));
#endif
}

CpuIsa best_cpu_isa() {
  const char* cap_env = std::getenv("MESHTALK_GEMM_ISA");
  const std::string cap = cap_env ? cap_env : "";
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma"), avx2 = __builtin_cpu_supports("avx2");
  if (cap != "avx2" && cap != "baseline" && __builtin_cpu_supports("avx512f") && avx2 && fma) return CpuIsa::kAvx512;
  if (cap != "baseline" && avx2 && fma) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kBaseline;
}

}  // namespace meshtalk
