// The blendshape solver (blendshapes.hpp): the Gram matrix and its condition number once per basis,
// then per frame one GEMV and an exact box-constrained QP by a primal active-set method.
#include "meshtalk/blendshapes.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

[[noreturn]] void invalid(const std::string& what, const std::string& expected, const std::string& found) {
  throw_mismatch(what, expected, found);
}

std::string num(double x) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

// The first entry of x[n] that is not finite, or -1.
int64_t first_non_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

void check_finite(const float* x, int64_t n, const std::string& name, const char* layout) {
  const int64_t bad = first_non_finite(x, n);
  if (bad >= 0)
    invalid(name, std::string("finite values ") + layout,
            num(x[bad]) + " at flat index " + std::to_string(bad));
}

// Eigenvalues of the symmetric a[n, n] (destroyed) by cyclic Jacobi rotations, in double: the
// condition number is computed once per basis, and Jacobi is short and accurate for small matrices.
void jacobi_eigenvalues(std::vector<double>& a, int64_t n, std::vector<double>& eig) {
  auto at = [&](int64_t i, int64_t j) -> double& { return a[static_cast<size_t>(i * n + j)]; };
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0, total = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) (i == j ? total : off) += at(i, j) * at(i, j);
    if (off <= 1e-30 * (total + off) || off == 0.0) break;
    for (int64_t p = 0; p < n - 1; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        const double apq = at(p, q);
        if (apq == 0.0) continue;
        const double theta = (at(q, q) - at(p, p)) / (2.0 * apq);
        const double t = std::fabs(theta) > 1e150 ? 0.5 / theta
                                                  : (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double akp = at(k, p), akq = at(k, q);
          at(k, p) = c * akp - s * akq;
          at(k, q) = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double apk = at(p, k), aqk = at(q, k);
          at(p, k) = c * apk - s * aqk;
          at(q, k) = s * apk + c * aqk;
        }
      }
    }
  }
  eig.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) eig[static_cast<size_t>(i)] = at(i, i);
}

}  // namespace

BlendshapeSolver::BlendshapeSolver(int64_t n_vertices, int64_t n_shapes, const float* neutral, const float* deltas,
                                   const float* vertex_weights, const BlendshapeParams& params)
    : V_(n_vertices), K_(n_shapes), p_(params) {
  if (n_vertices < 1 || n_vertices > kMaxVertices)
    invalid("n_vertices", "1 .. " + std::to_string(kMaxVertices), std::to_string(n_vertices));
  if (n_shapes < 1 || n_shapes > kMaxShapes)
    invalid("n_shapes", "1 .. " + std::to_string(kMaxShapes) + " blendshapes", std::to_string(n_shapes));
  if (neutral == nullptr) invalid("neutral", "[n_vertices, 3] floats", "NULL");
  if (deltas == nullptr) invalid("deltas", "[n_shapes, n_vertices, 3] floats", "NULL");
  if (std::isnan(p_.lo) || std::isnan(p_.hi) || p_.lo > p_.hi || p_.lo == INFINITY || p_.hi == -INFINITY)
    invalid("bounds (lo, hi)", "lo <= hi, neither NaN (lo < +inf, hi > -inf)", "(" + num(p_.lo) + ", " + num(p_.hi) + ")");
  if (!std::isfinite(p_.smoothing) || p_.smoothing < 0)
    invalid("smoothing", "a finite value >= 0", num(p_.smoothing));
  const int64_t V3 = 3 * V_;
  check_finite(neutral, V3, "neutral", "[n_vertices, 3]");
  check_finite(deltas, K_ * V3, "deltas", "[n_shapes, n_vertices, 3]");
  std::vector<double> m(static_cast<size_t>(V_), 1.0);
  double total = static_cast<double>(V_);
  if (vertex_weights != nullptr) {
    total = 0.0;
    for (int64_t v = 0; v < V_; ++v) {
      const float x = vertex_weights[v];
      if (!std::isfinite(x) || x < 0)
        invalid("weights_mask[" + std::to_string(v) + "]", "a finite weight >= 0", num(x));
      m[static_cast<size_t>(v)] = x;
      total += x;
    }
    if (!(total > 0)) invalid("weights_mask", "at least one weight > 0", "all weights 0");
  }
  for (double& x : m) x /= total;  // m_v / S

  neutral_.assign(neutral, neutral + V3);
  {  // the pre-weighted deltas for the per-frame product b = (D^T M / S) r, over the vertices that
     // matter only: one with weight 0 or that no shape moves adds exactly 0 to b (rigs' shapes are
     // local and a weights mask may cut the face to a region, so this is often much of the mesh)
    used_.clear();
    for (int64_t v = 0; v < V_; ++v) {
      bool moves = false;
      for (int64_t k = 0; k < K_ && !moves; ++k)
        for (int64_t c = 0; c < 3; ++c) moves |= deltas[k * V3 + 3 * v + c] != 0.0f;
      if (moves && m[static_cast<size_t>(v)] > 0) used_.push_back(v);
    }
    const int64_t U3 = 3 * static_cast<int64_t>(used_.size());
    std::vector<float> w(static_cast<size_t>(K_ * U3));
    for (int64_t k = 0; k < K_; ++k)
      for (size_t i = 0; i < used_.size(); ++i)
        for (int64_t c = 0; c < 3; ++c)
          w[static_cast<size_t>(k * U3) + 3 * i + static_cast<size_t>(c)] = static_cast<float>(
              deltas[k * V3 + 3 * used_[i] + c] * m[static_cast<size_t>(used_[i])]);
    if (U3 > 0) weighted_ = WeightMatrix(w.data(), K_, U3, U3, GemmBackend::kBuiltin);
  }

  // G = D^T M D / S in double, over column blocks of the [K, 3V] deltas (upper triangle, mirrored).
  gram_.assign(static_cast<size_t>(K_ * K_), 0.0);
  constexpr int64_t kBlock = 384;
  std::vector<double> a(static_cast<size_t>(K_ * kBlock)), b(static_cast<size_t>(K_ * kBlock));
  for (int64_t j0 = 0; j0 < V3; j0 += kBlock) {
    const int64_t n = std::min(kBlock, V3 - j0);
    for (int64_t k = 0; k < K_; ++k)
      for (int64_t j = 0; j < n; ++j) {
        const double d = deltas[k * V3 + j0 + j];
        a[static_cast<size_t>(k * kBlock + j)] = d;
        b[static_cast<size_t>(k * kBlock + j)] = d * m[static_cast<size_t>((j0 + j) / 3)];
      }
    for (int64_t i = 0; i < K_; ++i) {
      const double* bi = &b[static_cast<size_t>(i * kBlock)];
      for (int64_t k = i; k < K_; ++k) {
        const double* ak = &a[static_cast<size_t>(k * kBlock)];
        double s = 0.0;
        for (int64_t j = 0; j < n; ++j) s += bi[j] * ak[j];
        gram_[static_cast<size_t>(i * K_ + k)] += s;
      }
    }
  }
  double max_diag = 0.0;
  for (int64_t i = 0; i < K_; ++i) {
    for (int64_t k = 0; k < i; ++k) gram_[static_cast<size_t>(i * K_ + k)] = gram_[static_cast<size_t>(k * K_ + i)];
    max_diag = std::max(max_diag, gram_[static_cast<size_t>(i * K_ + i)]);
  }
  {
    std::vector<double> copy = gram_, eig;
    jacobi_eigenvalues(copy, K_, eig);
    const double lmax = *std::max_element(eig.begin(), eig.end());
    const double lmin = *std::min_element(eig.begin(), eig.end());
    // Numerically singular (lambda_min within rounding of 0): +inf.
    condition_ = (lmax > 0 && lmin > static_cast<double>(K_) * DBL_EPSILON * lmax) ? lmax / lmin
                                                                                  : std::numeric_limits<double>::infinity();
  }
  // The ridge (see ridge()): 1e-10 * the largest diagonal entry, or 1 when every shape is zero under
  // the weights (then any w fits equally and the ridge picks the one nearest 0).
  ridge_ = max_diag > 0 ? 1e-10 * max_diag : 1.0;
  for (int64_t i = 0; i < K_; ++i) gram_[static_cast<size_t>(i * K_ + i)] += ridge_;

  const size_t K = static_cast<size_t>(K_);
  w_.assign(K, 0.0);
  status_.assign(K, 0);
  residual_.assign(3 * used_.size(), 0.0f);
  bf_.assign(K, 0.0f);
  f_.assign(K, 0.0);
  z_.assign(K, 0.0);
  rhs_.assign(K, 0.0);
  free_.assign(K, 0);
  chol_.assign(K * K, 0.0);
}

void BlendshapeSolver::solve(const float* frames, int64_t n_frames, float* out) {
  if (n_frames < 0) invalid("n_frames", "a count >= 0", std::to_string(n_frames));
  if (n_frames == 0) return;
  if (frames == nullptr) invalid("frames", "[n_frames, n_vertices, 3] floats", "NULL");
  if (out == nullptr) invalid("out", "[n_frames, n_shapes] floats", "NULL");
  for (int64_t t = 0; t < n_frames; ++t) solve_frame(frames + t * 3 * V_, t, out + t * K_);
}

bool BlendshapeSolver::factor_free(int64_t nf) {
  double* L = chol_.data();
  for (int64_t j = 0; j < nf; ++j) {
    const int64_t fj = free_[static_cast<size_t>(j)];
    double d = hessian(fj, fj);
    for (int64_t k = 0; k < j; ++k) d -= L[j * nf + k] * L[j * nf + k];
    if (!(d > 0)) return false;
    const double ljj = std::sqrt(d);
    L[j * nf + j] = ljj;
    for (int64_t i = j + 1; i < nf; ++i) {
      double s = hessian(free_[static_cast<size_t>(i)], fj);
      for (int64_t k = 0; k < j; ++k) s -= L[i * nf + k] * L[j * nf + k];
      L[i * nf + j] = s / ljj;
    }
  }
  return true;
}

void BlendshapeSolver::solve_free(int64_t nf, const double* rhs, double* z) const {
  const double* L = chol_.data();
  for (int64_t i = 0; i < nf; ++i) {  // L y = rhs
    double s = rhs[i];
    for (int64_t k = 0; k < i; ++k) s -= L[i * nf + k] * z[k];
    z[i] = s / L[i * nf + i];
  }
  for (int64_t i = nf - 1; i >= 0; --i) {  // L^T z = y
    double s = z[i];
    for (int64_t k = i + 1; k < nf; ++k) s -= L[k * nf + i] * z[k];
    z[i] = s / L[i * nf + i];
  }
}

void BlendshapeSolver::solve_frame(const float* frame, int64_t t, float* out) {
  const int64_t V3 = 3 * V_;
  bool finite = true;
  for (int64_t j = 0; j < V3; ++j) finite &= std::fabs(frame[j]) <= FLT_MAX;  // false for NaN and infinities
  if (!finite) {
    const int64_t bad = first_non_finite(frame, V3);
    invalid("frames[" + std::to_string(t) + "] vertex " + std::to_string(bad / 3), "finite coordinates",
            num(frame[bad]));
  }
  const size_t U = used_.size();
  for (size_t i = 0; i < U; ++i) {
    const size_t j = 3 * static_cast<size_t>(used_[i]);
    for (size_t c = 0; c < 3; ++c) residual_[3 * i + c] = frame[j + c] - neutral_[j + c];
  }
  if (U > 0) gemm(1, residual_.data(), static_cast<int64_t>(3 * U), weighted_, bf_.data(), K_, false);
  else std::fill(bf_.begin(), bf_.end(), 0.0f);

  const double lo = p_.lo, hi = p_.hi, s = p_.smoothing;
  const bool smooth = have_prev_ && s > 0;
  shift_ = smooth ? s : 0.0;
  for (int64_t k = 0; k < K_; ++k) f_[static_cast<size_t>(k)] = bf_[static_cast<size_t>(k)] + (smooth ? s * w_[static_cast<size_t>(k)] : 0.0);
  ++frames_;
  if (lo == hi) {  // nothing to solve; also keeps the loop below from freeing a fixed weight
    for (int64_t k = 0; k < K_; ++k) w_[static_cast<size_t>(k)] = lo, status_[static_cast<size_t>(k)] = -1, out[k] = p_.lo;
    have_prev_ = true;
    return;
  }
  // Start: the previous solution and active set (feasible), or cold: all free from clamp(0). On the
  // first iteration, if the face's optimum z is infeasible, jump to clamp(z) (feasible, with the
  // clamped weights bound) instead of stepping to the first bound: a start that usually leaves a few
  // iterations, where stepping would add the new bounds one per iteration. Any feasible start keeps
  // the method exact; only the first iteration jumps.
  const bool cold = !have_prev_;
  bool first = true;
  if (cold)
    for (int64_t k = 0; k < K_; ++k) w_[static_cast<size_t>(k)] = std::min(std::max(0.0, lo), hi), status_[static_cast<size_t>(k)] = 0;
  double fmax = 0.0, hmax = 0.0, wmax = 1.0;
  for (int64_t k = 0; k < K_; ++k) {
    fmax = std::max(fmax, std::fabs(f_[static_cast<size_t>(k)]));
    hmax = std::max(hmax, hessian(k, k));
    wmax = std::max(wmax, std::fabs(w_[static_cast<size_t>(k)]));
  }
  // KKT tolerance on the gradient: rounding of H w - f is ~K * 1e-16 of this scale.
  const double tol = 1e-10 * (fmax + hmax * wmax);
  const int64_t max_iterations = 10 * K_ + 100;
  bool converged = false;
  int64_t released = -1;  // the weight freed by the previous iteration, and the bound it left
  int8_t released_from = 0;
  for (int64_t it = 0; it < max_iterations && !converged; ++it) {
    ++iterations_;
    int64_t nf = 0;
    for (int64_t k = 0; k < K_; ++k)
      if (status_[static_cast<size_t>(k)] == 0) free_[static_cast<size_t>(nf++)] = k;
    bool feasible = true;
    if (nf > 0) {
      for (int64_t i = 0; i < nf; ++i) {  // rhs = f_F - H[F, B] w_B
        const int64_t fi = free_[static_cast<size_t>(i)];
        double r = f_[static_cast<size_t>(fi)];
        for (int64_t k = 0; k < K_; ++k)
          if (status_[static_cast<size_t>(k)] != 0) r -= hessian(fi, k) * w_[static_cast<size_t>(k)];
        rhs_[static_cast<size_t>(i)] = r;
      }
      if (!factor_free(nf))
        throw std::runtime_error("BlendshapeSolver: the free set's Hessian is not positive definite despite the ridge "
                                 "(frame " + std::to_string(t) + ")");
      solve_free(nf, rhs_.data(), z_.data());
      double alpha = 1.0;
      int64_t block = -1;
      for (int64_t i = 0; i < nf; ++i) {
        const double wi = w_[static_cast<size_t>(free_[static_cast<size_t>(i)])], zi = z_[static_cast<size_t>(i)];
        double a = 1.0;
        if (zi < lo) a = (wi - lo) / (wi - zi);
        else if (zi > hi) a = (hi - wi) / (zi - wi);
        if (a < alpha) alpha = a, block = i;
      }
      feasible = block < 0;
      if (feasible) {
        for (int64_t i = 0; i < nf; ++i) w_[static_cast<size_t>(free_[static_cast<size_t>(i)])] = z_[static_cast<size_t>(i)];
      } else if (first) {  // jump to the clamp of the face's optimum (see above)
        for (int64_t i = 0; i < nf; ++i) {
          const size_t fi = static_cast<size_t>(free_[static_cast<size_t>(i)]);
          const double zi = z_[static_cast<size_t>(i)];
          w_[fi] = std::min(std::max(zi, lo), hi);
          status_[fi] = zi <= lo ? -1 : zi >= hi ? 1 : 0;
        }
      } else if (free_[static_cast<size_t>(block)] == released && alpha <= 1e-12) {
        // The weight just freed cannot move into the box: its multiplier's sign was rounding noise
        // (a nearly singular basis), so the current point is optimal. Without this the loop could
        // free and fix it again until the iteration cap.
        status_[static_cast<size_t>(released)] = released_from;
        converged = true;
        continue;
      } else {  // step towards z until the first bound; that weight joins the active set
        alpha = std::max(0.0, alpha);
        for (int64_t i = 0; i < nf; ++i) {
          const size_t fi = static_cast<size_t>(free_[static_cast<size_t>(i)]);
          w_[fi] += alpha * (z_[static_cast<size_t>(i)] - w_[fi]);
          if (w_[fi] <= lo || (i == block && z_[static_cast<size_t>(i)] < lo)) w_[fi] = lo, status_[fi] = -1;
          else if (w_[fi] >= hi || i == block) w_[fi] = hi, status_[fi] = 1;
        }
      }
    }
    first = false;
    released = -1;
    if (!feasible) continue;
    // Optimal on this face: free the bound weight whose multiplier has the wrong sign the most.
    int64_t release = -1;
    double worst = tol;
    for (int64_t k = 0; k < K_; ++k) {
      const int8_t st = status_[static_cast<size_t>(k)];
      if (st == 0) continue;
      double g = -f_[static_cast<size_t>(k)];
      for (int64_t j = 0; j < K_; ++j) g += hessian(k, j) * w_[static_cast<size_t>(j)];
      const double violation = st < 0 ? -g : g;  // at lo the gradient must be >= 0, at hi <= 0
      if (violation > worst) worst = violation, release = k;
    }
    if (release < 0) {
      converged = true;
    } else {
      released = release;
      released_from = status_[static_cast<size_t>(release)];
      status_[static_cast<size_t>(release)] = 0;
    }
  }
  if (!converged) ++unconverged_;
  for (int64_t k = 0; k < K_; ++k) out[k] = static_cast<float>(std::min(std::max(w_[static_cast<size_t>(k)], lo), hi));
  have_prev_ = true;
}

}  // namespace meshtalk
