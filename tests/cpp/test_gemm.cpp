// The GEMM kernels of gemm.hpp with reduced-precision weights: each storage's product equals, bit for
// bit, the float32 product on the weight its dequantized() returns (the reference), for odd shapes,
// row counts that exercise every tile, column slices and accumulation; the rounding itself (bf16:
// nearest even; int8: per-channel scale max|w|/127) is checked against a plain reimplementation.
// Run once more with MESHTALK_GEMM_ISA=baseline (CMakeLists.txt), where reduced storage is refused.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "meshtalk/gemm.hpp"
#include "meshtalk/status.hpp"

namespace {

using meshtalk::GemmBackend;
using meshtalk::WeightMatrix;
using meshtalk::WeightStorage;

std::vector<float> random_values(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> out(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = scale * (static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.0f);
  }
  return out;
}

bool reduced_available() { return std::string(meshtalk::builtin_kernel_isa()) != "baseline"; }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST(bf16_rounding_is_nearest_even) {
  CHECK_EQ(meshtalk::bf16_to_float(meshtalk::float_to_bf16(1.0f)), 1.0f);
  CHECK_EQ(meshtalk::bf16_to_float(meshtalk::float_to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
  CHECK_EQ(meshtalk::bf16_to_float(meshtalk::float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  CHECK_EQ(meshtalk::bf16_to_float(meshtalk::float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  const std::vector<float> v = random_values(1000, 7, 3.0f);
  for (float x : v) {
    const float r = meshtalk::bf16_to_float(meshtalk::float_to_bf16(x));
    CHECK(std::fabs(r - x) <= std::fabs(x) * (1.0f / 256));  // half an ulp of an 8-bit mantissa
  }
}

TEST(dequantized_weights_follow_the_documented_rounding) {
  if (!reduced_available()) return;
  const int64_t n = 37, k = 29;
  std::vector<float> w = random_values(static_cast<size_t>(n * k), 3, 0.7f);
  for (int64_t j = 0; j < k; ++j) w[5 * k + j] = 0.0f;  // an all-zero output channel
  const WeightMatrix f32(w.data(), n, k, k, GemmBackend::kBuiltin, WeightStorage::kF32);
  const WeightMatrix bf(w.data(), n, k, k, GemmBackend::kBuiltin, WeightStorage::kBF16);
  const WeightMatrix q8(w.data(), n, k, k, GemmBackend::kBuiltin, WeightStorage::kInt8);
  CHECK(same_bits(f32.dequantized(), w));
  const std::vector<float> b = bf.dequantized(), q = q8.dequantized();
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0.0f;
    for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(w[r * k + j]));
    const float s = amax / 127.0f;
    for (int64_t j = 0; j < k; ++j) {
      const size_t i = static_cast<size_t>(r * k + j);
      CHECK_EQ(b[i], meshtalk::bf16_to_float(meshtalk::float_to_bf16(w[i])));
      const float qi = s > 0.0f ? std::nearbyint(w[i] / s) : 0.0f;
      CHECK_EQ(q[i], qi * s);
      CHECK(std::fabs(q[i] - w[i]) <= 0.5001f * s);
    }
  }
  CHECK_EQ(f32.nbytes(), static_cast<size_t>(f32.panels() * 16 * k * 4));
  CHECK_EQ(bf.nbytes(), static_cast<size_t>(bf.panels() * 16 * k * 2));
  CHECK_EQ(q8.nbytes(), static_cast<size_t>(q8.panels() * 16 * (k + 4)));
}

// Every storage's kernel against the float32 kernel on its dequantised weight: bit for bit.
TEST(reduced_storage_products_equal_float32_on_the_dequantised_weight) {
  if (!reduced_available()) return;
  const int64_t shapes[][2] = {{1, 1}, {15, 7}, {16, 16}, {33, 300}, {130, 257}, {300, 513}, {7, 1}};
  const int64_t rows[] = {1, 2, 3, 5, 7, 13};
  uint64_t seed = 11;
  for (const auto& nk : shapes) {
    const int64_t n = nk[0], k = nk[1], ldw = k + 3;
    const std::vector<float> w = random_values(static_cast<size_t>(n * ldw), ++seed);
    for (WeightStorage st : {WeightStorage::kBF16, WeightStorage::kInt8}) {
      const WeightMatrix fast(w.data(), n, k, ldw, GemmBackend::kBuiltin, st);
      const std::vector<float> deq = fast.dequantized();
      const WeightMatrix ref(deq.data(), n, k, k, GemmBackend::kBuiltin, WeightStorage::kF32);
      for (int64_t m : rows) {
        const int64_t lda = k + 1, ldc = n + 2;
        const std::vector<float> a = random_values(static_cast<size_t>(m * lda), ++seed);
        for (bool accumulate : {false, true}) {
          std::vector<float> c_fast = random_values(static_cast<size_t>(m * ldc), seed + 1000);
          std::vector<float> c_ref = c_fast;
          meshtalk::gemm(m, a.data(), lda, fast, c_fast.data(), ldc, accumulate);
          meshtalk::gemm(m, a.data(), lda, ref, c_ref.data(), ldc, accumulate);
          if (!same_bits(c_fast, c_ref)) {
            CHECK(false && "reduced-storage product differs from float32 on the dequantised weight");
            std::printf("  storage %s n=%lld k=%lld m=%lld accumulate=%d\n", meshtalk::weight_storage_name(st),
                        static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m),
                        static_cast<int>(accumulate));
          }
        }
        // Column slices (how threads split a product) give the same values.
        if (fast.panels() >= 3) {
          std::vector<float> whole(static_cast<size_t>(m * ldc), 0.0f), parts = whole;
          meshtalk::gemm(m, a.data(), lda, fast, whole.data(), ldc, false);
          meshtalk::gemm(m, a.data(), lda, fast, parts.data(), ldc, false, 0, 1);
          meshtalk::gemm(m, a.data(), lda, fast, parts.data(), ldc, false, 1, fast.panels());
          CHECK(same_bits(whole, parts));
        }
      }
    }
  }
}

// The reduced products stay near the exact float32 ones: relative to sum_k |a| |w|, bf16 within
// 2^-8 and int8 within half a quantisation step (1/254 of the channel's largest weight).
TEST(reduced_storage_products_are_close_to_float32) {
  if (!reduced_available()) return;
  const int64_t n = 200, k = 333, m = 3;
  const std::vector<float> w = random_values(static_cast<size_t>(n * k), 5);
  const std::vector<float> a = random_values(static_cast<size_t>(m * k), 6);
  const WeightMatrix exact(w.data(), n, k, k, GemmBackend::kBuiltin);
  std::vector<float> ce(static_cast<size_t>(m * n));
  meshtalk::gemm(m, a.data(), k, exact, ce.data(), n, false);
  for (WeightStorage st : {WeightStorage::kBF16, WeightStorage::kInt8}) {
    const WeightMatrix fast(w.data(), n, k, k, GemmBackend::kBuiltin, st);
    std::vector<float> c(static_cast<size_t>(m * n));
    meshtalk::gemm(m, a.data(), k, fast, c.data(), n, false);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double bound = 0.0, amax = 0.0;
        for (int64_t kk = 0; kk < k; ++kk) amax = std::max<double>(amax, std::fabs(w[j * k + kk]));
        for (int64_t kk = 0; kk < k; ++kk)
          bound += std::fabs(a[i * k + kk]) * (st == WeightStorage::kBF16 ? std::fabs(w[j * k + kk]) / 256.0
                                                                            : amax / 254.0);
        CHECK(std::fabs(c[i * n + j] - ce[i * n + j]) <= bound * 1.01 + 1e-5);
      }
  }
}

// With only the baseline kernel (MESHTALK_GEMM_ISA=baseline), reduced storage is refused with a
// reason that names the mode that runs; float32 still works. BLAS never takes reduced storage.
TEST(unavailable_storage_is_refused_with_the_mode_that_runs) {
  const float w[4] = {1, 2, 3, 4};
  for (WeightStorage st : {WeightStorage::kBF16, WeightStorage::kInt8}) {
    const std::string why = meshtalk::storage_unavailable_reason(st, GemmBackend::kBlas);
    CHECK_CONTAINS(why, "builtin GEMM only");
    if (reduced_available()) {
      CHECK_EQ(meshtalk::storage_unavailable_reason(st, GemmBackend::kBuiltin), std::string());
      continue;
    }
    const std::string reason = meshtalk::storage_unavailable_reason(st, GemmBackend::kBuiltin);
    CHECK_CONTAINS(reason, meshtalk::weight_storage_name(st));
    CHECK_CONTAINS(reason, "use weights 'f32'");
    bool threw = false;
    try {
      WeightMatrix m(w, 2, 2, 2, GemmBackend::kBuiltin, st);
    } catch (const meshtalk::Error& e) {
      threw = true;
      CHECK_CONTAINS(std::string(e.what()), "use weights 'f32'");
    }
    CHECK(threw);
  }
  WeightMatrix ok(w, 2, 2, 2, GemmBackend::kBuiltin, WeightStorage::kF32);
  CHECK_EQ(ok.n(), 2);
}

}  // namespace

int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
