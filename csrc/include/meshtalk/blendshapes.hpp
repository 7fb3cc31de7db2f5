// Blendshape weights from meshes: a live, exact, bounded least-squares solver (op "solve_blendshapes").
//
// Per frame t, with r_t = frame_t - neutral, m the per-vertex weights (ones when none) and S = sum(m):
//   E_t(w) = (1/S) sum_v m_v || sum_k w_k deltas[k, v] - r_t[v] ||^2 + smoothing || w - w_{t-1} ||^2,
//   minimised subject to lo <= w_k <= hi; the first frame after construction or reset() has no
//   smoothing term. Causal: frame t needs only frames <= t, so it runs live.
// Expanded, E_t(w) = w^T (G + s I) w - 2 w^T (b_t + s w_{t-1}) + const with the Gram matrix
// G = D^T M D / S ([K, K], computed once per basis, in double) and b_t = D^T M r_t / S (per frame:
// one product of the pre-weighted deltas [K, 3V] with r_t on the core's GEMM kernel, gemm.hpp; the
// vertices with weight 0 or that no shape moves are left out of it, as they add exactly 0).
// Each frame is then an exact box-constrained QP solved with a primal active-set method (Cholesky of
// the free set's Hessian, in double), warm-started from the previous frame's solution and active set,
// so a steady stream usually needs one factorisation per frame.
// Memory: everything is allocated by the constructor; solve() allocates nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "meshtalk/gemm.hpp"

namespace meshtalk {

struct BlendshapeParams {
  float lo = 0.0f;         // lower bound of every weight (may be -inf)
  float hi = 1.0f;         // upper bound (may be +inf); lo <= hi
  float smoothing = 0.0f;  // s >= 0, the weight of || w - w_{t-1} ||^2
};

class BlendshapeSolver {
 public:
  static constexpr int64_t kMaxShapes = 256;
  static constexpr int64_t kMaxVertices = int64_t(1) << 24;

  // neutral: [V, 3]; deltas: [K, V, 3]; vertex_weights: [V] finite, >= 0, not all 0, or nullptr
  // (all ones). All copied. Throws meshtalk::Error (kInvalidArgument) naming the argument, what was
  // expected and what was found: sizes out of range, a NULL buffer, a value that is not finite,
  // lo > hi, a negative smoothing.
  BlendshapeSolver(int64_t n_vertices, int64_t n_shapes, const float* neutral, const float* deltas,
                   const float* vertex_weights, const BlendshapeParams& params);

  int64_t n_vertices() const noexcept { return V_; }
  int64_t n_shapes() const noexcept { return K_; }
  const BlendshapeParams& params() const noexcept { return p_; }
  // lambda_max / lambda_min of G (the 2-norm condition number of G = the square of the weighted
  // basis'); +inf when G is singular (a zero or linearly dependent shape). Large values mean the
  // weights are not well determined by the meshes; the solver still returns an optimum (see ridge).
  double condition() const noexcept { return condition_; }
  // The tiny ridge added to G's diagonal (1e-10 * its largest entry) so that a singular basis still
  // has a unique, bounded solution; its effect on a well-conditioned basis is ~1e-10 * condition.
  double ridge() const noexcept { return ridge_; }

  // frames: [T, V, 3] -> out: [T, K]; frame t is warm-started from (and smoothed towards) frame
  // t - 1, the first from the last frame of the previous call unless reset() came in between.
  // Throws kInvalidArgument for a NULL buffer, T < 0 or a coordinate that is not finite (naming the
  // frame and vertex; the frames before it were solved and written, the state is that after them).
  void solve(const float* frames, int64_t n_frames, float* out);
  // Forgets the previous frame: the next one is solved cold, without the smoothing term.
  void reset() noexcept { have_prev_ = false; }

  int64_t frames_solved() const noexcept { return frames_; }       // since construction
  int64_t iterations() const noexcept { return iterations_; }      // active-set iterations in all
  // Frames whose active-set loop hit its iteration cap (10 K + 100; never seen in tests): their
  // weights are the last feasible iterate, whose objective is below the warm start's.
  int64_t unconverged_frames() const noexcept { return unconverged_; }

 private:
  void solve_frame(const float* frame, int64_t t, float* out);
  bool factor_free(int64_t nf);                       // Cholesky of H[F, F] into chol_
  void solve_free(int64_t nf, const double* rhs, double* z) const;
  double hessian(int64_t i, int64_t j) const { return gram_[i * K_ + j] + (i == j ? shift_ : 0.0); }

  int64_t V_ = 0, K_ = 0;
  BlendshapeParams p_;
  std::vector<float> neutral_;    // [3V]
  std::vector<int64_t> used_;     // the vertices with weight > 0 that some shape moves, [U]
  WeightMatrix weighted_;         // deltas * m_v / S over those vertices, [K, 3U]
  std::vector<double> gram_;      // G + ridge I, [K, K]
  double condition_ = 0.0, ridge_ = 0.0;
  double shift_ = 0.0;            // ridge + s (frames with a predecessor) or ridge

  // per-frame state and scratch, sized by the constructor
  bool have_prev_ = false;
  std::vector<double> w_;         // [K] the current iterate / last solution
  std::vector<int8_t> status_;    // [K] 0 free, -1 at lo, +1 at hi
  std::vector<float> residual_;   // [3U]
  std::vector<float> bf_;         // [K] float product
  std::vector<double> f_, z_, rhs_;  // [K]
  std::vector<int64_t> free_;     // [K] indices of the free set
  std::vector<double> chol_;      // [K, K]
  int64_t frames_ = 0, iterations_ = 0, unconverged_ = 0;
};

}  // namespace meshtalk
