// pybind11: the C API's session pipeline (session.hpp): what StreamingAnimator(backend="cpp") runs.
#include "common.hpp"

namespace meshtalk_py {
// ---------------------------------------------------------------------------------------------
// Sessions (session.hpp): the C API's pipeline, PCM in -> frames out, as engines run it.
// ---------------------------------------------------------------------------------------------
namespace {

struct PyCoreModel {
  std::shared_ptr<const meshtalk::Model> m;
};

class PySession {
 public:
  PySession(const PyCoreModel& model, const py::handle& templ, uint64_t seed, bool argmax,
            const py::object& smooth_masks, int64_t smoothing_delay, int64_t threads) {
    const int64_t V = model.m->config.n_vertices;
    py::array t = float_array(templ, "template", 2, "[V, 3]");
    expect_shape(t, "template", {V, 3});
    meshtalk::SessionParams p;
    p.seed = seed;
    p.argmax = argmax;
    p.templ.assign(static_cast<const float*>(t.data()), static_cast<const float*>(t.data()) + V * 3);
    if (!smooth_masks.is_none()) {
      auto pair = smooth_masks.cast<std::pair<py::object, py::object>>();
      py::array f = float_array(pair.first, "forehead mask", 1, "[V]");
      py::array n = float_array(pair.second, "neck mask", 1, "[V]");
      expect_shape(f, "forehead mask", {V});
      expect_shape(n, "neck mask", {V});
      p.smoothing = true;
      p.smoothing_delay = smoothing_delay;
      p.forehead.assign(static_cast<const float*>(f.data()), static_cast<const float*>(f.data()) + V);
      p.neck.assign(static_cast<const float*>(n.data()), static_cast<const float*>(n.data()) + V);
    }
    p.threads = threads;
    s_ = std::make_unique<meshtalk::Session>(model.m, std::move(p));
    V_ = V;
  }
  // samples float32 [n] -> the frames now ready [k, V, 3]
  py::array_t<float> push(const py::handle& samples) {
    py::array a = float_array(samples, "samples", 1, "[n]");
    const float* d = static_cast<const float*>(a.data());
    const int64_t n = a.shape(0);
    {
      py::gil_scoped_release release;
      s_->push_audio(d, n);
    }
    return pop();
  }
  py::array_t<float> finish() {
    {
      py::gil_scoped_release release;
      s_->finish();
    }
    return pop();
  }
  void reset() { s_->reset(); }

 private:
  py::array_t<float> pop() {
    const int64_t k = s_->frames_available();
    py::array_t<float> out({k, V_, int64_t(3)});
    s_->pop_frames(out.mutable_data(), k);
    return out;
  }
  std::unique_ptr<meshtalk::Session> s_;
  int64_t V_ = 0;
};

}  // namespace

void bind_session(py::module_& m) {
  py::class_<PyCoreModel>(m, "CoreModel", "A MeshTalk.save file loaded as the C API's model (weights, frame clock).")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& weights,
                                  int64_t audio_context_ms) {
             const meshtalk::WeightStorage storage = parse_storage(weights);
             const meshtalk::SafetensorsFile file = meshtalk::SafetensorsFile::open(path.string());
             return PyCoreModel{meshtalk::Model::load(file, meshtalk::GemmBackend::kBuiltin, storage, audio_context_ms)};
           }, py::arg("path"), py::arg("weights") = "f32", py::arg("audio_context_ms") = 0,
           "audio_context_ms: 0 accepts the file's, 1000 or 600 requires it (as mt_model_params.audio_context_ms).")
      .def_static("from_bytes", [](const py::bytes& image, int64_t audio_context_ms, const std::string& weights) {
             // A MeshTalk.save file image in memory (as mt_model_load_from_memory): validated, then copied.
             const meshtalk::WeightStorage storage = parse_storage(weights);
             char* data = nullptr;
             Py_ssize_t size = 0;
             if (PyBytes_AsStringAndSize(image.ptr(), &data, &size) != 0) throw py::error_already_set();
             const meshtalk::SafetensorsFile file =
                 meshtalk::SafetensorsFile::from_memory(data, static_cast<size_t>(size), "<memory>");
             return PyCoreModel{meshtalk::Model::load(file, meshtalk::GemmBackend::kBuiltin, storage, audio_context_ms)};
           }, py::arg("image"), py::arg("audio_context_ms") = 0, py::arg("weights") = "f32")
      .def_property_readonly("weights", [](const PyCoreModel& c) {
             return std::string(meshtalk::weight_storage_name(c.m->storage));
           })
      .def_property_readonly("nbytes", [](const PyCoreModel& c) { return c.m->nbytes(); })
      .def_property_readonly("audio_context_ms", [](const PyCoreModel& c) { return c.m->config.audio_context_ms; })
      .def_property_readonly("window_samples", [](const PyCoreModel& c) { return c.m->frames.window; })
      .def_property_readonly("lookahead_samples", [](const PyCoreModel& c) { return c.m->frames.lookahead; })
      .def("latency_samples", [](const PyCoreModel& c, int64_t smoothing_delay) {
             return c.m->frames.latency_samples(smoothing_delay);
           }, py::arg("smoothing_delay") = 0,
           "As mt_model_latency_samples: lookahead + (1 + smoothing_delay) frames, rounded up to samples.");
  py::class_<PySession>(m, "Session",
                        "One speaker's stream as mt_session: push(samples float32 [n]) -> frames [k, V, 3] ready; "
                        "finish() -> the rest; reset().")
      .def(py::init<const PyCoreModel&, const py::handle&, uint64_t, bool, const py::object&, int64_t, int64_t>(),
           py::arg("model"), py::arg("template"), py::arg("seed") = 0, py::arg("argmax") = false,
           py::arg("smooth_masks") = py::none(), py::arg("smoothing_delay") = 4, py::arg("threads") = 1)
      .def("push", &PySession::push, py::arg("samples"))
      .def("finish", &PySession::finish)
      .def("reset", &PySession::reset);
}

}  // namespace meshtalk_py
