// Matrix products of the decoding core: C[M, N] (+)= A[M, K] · W^T with W a weight [N, K] in
// PyTorch's [out, in] layout.
//
// Two backends behind one type, chosen per weight when it is prepared (kBuiltin by default: it
// measured faster than OpenBLAS for every product of the sampler and the decoder on our machine,
// see benchmarks/RESULTS.md):
//   kBuiltin  our kernel over W packed once into column panels of 16 (see gemm.cpp). Every output
//             element is accumulated in the same order (blocks of 256 consecutive k, one fused
//             multiply-add each, each block's sum then added to C) whatever M, the tiling or the
//             thread split, so a row's result does not depend on which other rows share the call:
//             this makes sampling independent of batch composition.
//             Compiled for AVX-512, AVX2+FMA and a portable baseline; the best one for the CPU is
//             picked when the library loads.
//   kBlas     cblas_sgemm of the OpenBLAS in the scipy-openblas32 wheel (when the build found it,
//             see CMakeLists.txt), on the row-major weight as stored: the reference point of those
//             measurements, selectable per weight set. Called single-threaded: the core splits
//             work across its own threads (threads.hpp), so there is one thread pool.
// Which backend serves which op, and the measurements behind the choice: benchmarks/RESULTS.md.
//
// Storage (builtin backend only), chosen per weight when it is prepared:
//   kF32   the weight as given (exact).
//   kBF16  each weight rounded to bfloat16 (nearest, ties to even), half the bytes. The kernel widens
//          each value back to float32 (exact) and multiplies in float32 as kF32 does.
//   kInt8  per output channel n a scale s[n] = max_k |W[n, k]| / 127 and q[n, k] = round(W[n, k] / s[n])
//          in [-127, 127], a quarter of the bytes. The kernel computes float(q) * s[n] (one float32
//          rounding) and then multiplies in float32 as kF32 does.
// So a reduced-precision product equals, bit for bit, the kF32 product on the weight `dequantized()`
// returns (the test reference, tests/cpp/test_gemm.cpp); only the stored weights change, never the
// activations or the order of the sums. At one row per product (one live stream) the products read
// every weight once and are bound by memory bandwidth, which is what the smaller storage saves.
// Reduced storage runs on the vector kernels (AVX2+FMA, AVX-512); a CPU with only the baseline
// kernel refuses it (storage_unavailable_reason).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace meshtalk {

enum class GemmBackend { kBuiltin, kBlas };
enum class WeightStorage { kF32, kBF16, kInt8 };

const char* weight_storage_name(WeightStorage storage) noexcept;  // "f32" | "bf16" | "int8"
// Bytes per stored weight: 4, 2, 1.
int64_t weight_storage_bytes(WeightStorage storage) noexcept;
// "" when this CPU (and the MESHTALK_GEMM_ISA cap) runs `storage` on `backend`, else why not, naming
// the storage that runs ("f32").
std::string storage_unavailable_reason(WeightStorage storage, GemmBackend backend);
// float32 -> bfloat16 bits, round to nearest even (finite inputs), and back.
uint16_t float_to_bf16(float v) noexcept;
float bf16_to_float(uint16_t v) noexcept;

const char* gemm_backend_name(GemmBackend backend) noexcept;  // "builtin" | "blas"
bool blas_available() noexcept;      // true when the core was linked against OpenBLAS
const char* blas_description();      // "OpenBLAS 0.3.x ... (scipy-openblas32)" or why there is none
const char* builtin_kernel_isa();    // the instruction set the builtin kernel runs with here

// The widest vector instruction set this CPU runs that the core has kernels for (x86: AVX-512F, or
// AVX2 + FMA; anything else: baseline), capped by MESHTALK_GEMM_ISA=avx2|baseline (to test the
// narrower kernels on a bigger CPU; a cap above what the CPU has is ignored). One switch for every
// kernel of the core (GEMM, log-mel); read once per call, so callers cache their choice.
enum class CpuIsa { kBaseline, kAvx2, kAvx512 };
CpuIsa best_cpu_isa();

// A weight W [N, K] prepared for one backend (a copy: the caller's buffer may go away).
class WeightMatrix {
 public:
  static constexpr int64_t kPanel = 16;  // columns of C per packed panel (builtin layout)

  WeightMatrix() = default;
  // w: N rows of K floats, row r at w + r * ldw (ldw >= K). Throws kInvalidArgument for kBlas
  // when no BLAS was linked in, for negative sizes, and for a storage this CPU or backend cannot run
  // (storage_unavailable_reason).
  WeightMatrix(const float* w, int64_t n, int64_t k, int64_t ldw, GemmBackend backend,
               WeightStorage storage = WeightStorage::kF32);

  int64_t n() const noexcept { return n_; }
  int64_t k() const noexcept { return k_; }
  GemmBackend backend() const noexcept { return backend_; }
  int64_t panels() const noexcept { return (n_ + kPanel - 1) / kPanel; }
  WeightStorage storage() const noexcept { return storage_; }
  size_t nbytes() const noexcept {
    return size_ * static_cast<size_t>(weight_storage_bytes(storage_)) + scales_.size() * sizeof(float);
  }
  const void* data() const noexcept { return data_.get(); }
  const float* scales() const noexcept { return scales_.data(); }  // kInt8: [panels * 16], else empty
  // The weight the products use, as float32 row-major [N, K]: the input for kF32, the rounded or
  // dequantised values (float(q) * s[n]) otherwise.
  std::vector<float> dequantized() const;

 private:
  struct AlignedDelete {
    void operator()(unsigned char* p) const noexcept;
  };
  GemmBackend backend_ = GemmBackend::kBuiltin;
  WeightStorage storage_ = WeightStorage::kF32;
  int64_t n_ = 0, k_ = 0;
  size_t size_ = 0;  // stored elements
  std::unique_ptr<unsigned char[], AlignedDelete> data_;  // packed panels, or row-major [N, K]
  std::vector<float> scales_;
};

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[m, k] * W[n, k]  for m < M and the columns n of
// panels [panel_begin, panel_end) (panel p covers columns 16p .. 16p+15, clipped to N); a panel_end
// of -1 means all panels. A is row-major with row stride lda >= K, C with row stride ldc >= N.
// Column slices let threads split one product without changing any element's value.
void gemm(int64_t m, const float* a, int64_t lda, const WeightMatrix& w, float* c, int64_t ldc,
          bool accumulate, int64_t panel_begin = 0, int64_t panel_end = -1);

}  // namespace meshtalk
