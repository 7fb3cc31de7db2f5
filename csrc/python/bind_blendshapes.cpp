// pybind11: the blendshape solver (blendshapes.hpp), the "cpp" backend of op "solve_blendshapes".
#include <cmath>

#include "common.hpp"
#include "meshtalk/blendshapes.hpp"

namespace meshtalk_py {
namespace {

class PyBlendshapeSolver {
 public:
  PyBlendshapeSolver(const py::handle& neutral, const py::handle& deltas, const py::object& weights_mask, double lo,
                     double hi, double smoothing) {
    py::array n = float_array(neutral, "neutral", 2, "[V, 3]");
    const int64_t V = n.shape(0);
    expect_shape(n, "neutral", {V, 3});
    py::array d = float_array(deltas, "deltas", 3, "[K, V, 3]");
    const int64_t K = d.shape(0);
    expect_shape(d, "deltas", {K, V, 3});
    py::array m;
    const float* mp = nullptr;
    if (!weights_mask.is_none()) {
      m = float_array(weights_mask, "weights_mask", 1, "[V]");
      expect_shape(m, "weights_mask", {V});
      mp = static_cast<const float*>(m.data());
    }
    meshtalk::BlendshapeParams p;
    // Python floats go to float32: refuse the ones that do not fit instead of rounding them to inf.
    for (const auto& [name, value] : {std::pair<const char*, double>{"lo", lo}, {"hi", hi}, {"smoothing", smoothing}})
      if (std::isfinite(value) && std::fabs(value) > 3.4e38)
        bad_argument(name, "a value within float32's range (or +-inf for a bound)", std::to_string(value));
    p.lo = static_cast<float>(lo);
    p.hi = static_cast<float>(hi);
    p.smoothing = static_cast<float>(smoothing);
    const float* np_ = static_cast<const float*>(n.data());
    const float* dp = static_cast<const float*>(d.data());
    py::gil_scoped_release release;
    s_ = std::make_unique<meshtalk::BlendshapeSolver>(V, K, np_, dp, mp, p);
  }

  // meshes [T, V, 3] -> weights [T, K]
  py::array_t<float> solve(const py::handle& meshes) {
    py::array x = float_array(meshes, "meshes", 3, "[T, V, 3]");
    const int64_t T = x.shape(0);
    expect_shape(x, "meshes", {T, s_->n_vertices(), 3});
    py::array_t<float> out({T, s_->n_shapes()});
    const float* xp = static_cast<const float*>(x.data());
    float* op = out.mutable_data();
    {
      py::gil_scoped_release release;
      s_->solve(xp, T, op);
    }
    return out;
  }

  const meshtalk::BlendshapeSolver& core() const { return *s_; }
  void reset() { s_->reset(); }

 private:
  std::unique_ptr<meshtalk::BlendshapeSolver> s_;
};

}  // namespace

void bind_blendshapes(py::module_& m) {
  py::class_<PyBlendshapeSolver>(
      m, "BlendshapeSolver",
      "Per-frame bounded least squares of (mesh - neutral) on the deltas (op 'solve_blendshapes'):\n"
      "minimise (1/S) sum_v m_v |sum_k w_k deltas[k, v] - r[v]|^2 + smoothing |w - w_prev|^2 subject to\n"
      "lo <= w <= hi, exactly; warm-started from the previous frame, also across solve() calls until reset().")
      .def(py::init<const py::handle&, const py::handle&, const py::object&, double, double, double>(),
           py::arg("neutral"), py::arg("deltas"), py::arg("weights_mask") = py::none(), py::arg("lo") = 0.0,
           py::arg("hi") = 1.0, py::arg("smoothing") = 0.0,
           "neutral float32 [V, 3], deltas float32 [K, V, 3] (K <= 256), weights_mask float32 [V] or None.")
      .def("solve", &PyBlendshapeSolver::solve, py::arg("meshes"), "meshes float32 [T, V, 3] -> weights [T, K].")
      .def("reset", &PyBlendshapeSolver::reset, "Forget the previous frame (next one cold, no smoothing term).")
      .def_property_readonly("condition", [](const PyBlendshapeSolver& s) { return s.core().condition(); },
                             "lambda_max / lambda_min of the weighted Gram matrix; inf when singular.")
      .def_property_readonly("ridge", [](const PyBlendshapeSolver& s) { return s.core().ridge(); })
      .def_property_readonly("n_vertices", [](const PyBlendshapeSolver& s) { return s.core().n_vertices(); })
      .def_property_readonly("n_shapes", [](const PyBlendshapeSolver& s) { return s.core().n_shapes(); })
      .def_property_readonly("frames_solved", [](const PyBlendshapeSolver& s) { return s.core().frames_solved(); })
      .def_property_readonly("iterations", [](const PyBlendshapeSolver& s) { return s.core().iterations(); })
      .def_property_readonly("unconverged_frames",
                             [](const PyBlendshapeSolver& s) { return s.core().unconverged_frames(); });
}

}  // namespace meshtalk_py
