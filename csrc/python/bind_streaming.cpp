// pybind11: the sampler and decoder one step at a time, and the post-smoothing.
#include "common.hpp"

namespace meshtalk_py {
namespace {

// ---------------------------------------------------------------------------------------------
// Streaming: SamplerState / DecoderState (one step of B slots) and the post-smoothing.
// ---------------------------------------------------------------------------------------------

// Slot indices: a 1-d integer array (or a sequence of ints) of length n.
std::vector<int64_t> slot_vector(const py::handle& obj) {
  py::object a = py::reinterpret_borrow<py::object>(obj);
  if (!py::isinstance<py::array>(a)) a = py::module_::import("numpy").attr("asarray")(a);
  py::array arr = py::reinterpret_borrow<py::array>(a);
  if (arr.ndim() != 1) bad_argument("slots shape", "[n] (one dimension)", meshtalk::shape_to_string(shape_of(arr)));
  if (arr.size() == 0) return {};
  return int_vector(arr, "slots", arr.shape(0));
}

struct PySamplerState {
  std::shared_ptr<const meshtalk::ContextWeights> weights;
  meshtalk::SamplerState state;
};

py::array_t<int32_t> sampler_step_py(PySamplerState& self, const py::handle& slots_obj, const py::handle& audio_code,
                                     const py::object& one_hot) {
  const meshtalk::ModelConfig& c = self.weights->config;
  const std::vector<int64_t> slots = slot_vector(slots_obj);
  const int64_t n = static_cast<int64_t>(slots.size());
  py::array audio = float_array(audio_code, "audio_code", 2, "[n, A=" + std::to_string(c.audio_dim) + "]");
  expect_shape(audio, "audio_code", {n, c.audio_dim});
  float* one_hot_data = nullptr;
  if (!one_hot.is_none()) {
    py::array oh = float_array(one_hot, "one_hot", 3, "[n, H, C]", true);
    expect_shape(oh, "one_hot", {n, c.heads, c.classes});
    one_hot_data = static_cast<float*>(oh.mutable_data());
  }
  py::array_t<int32_t> labels({n, c.heads});
  int32_t* label_data = labels.mutable_data();
  const float* audio_data = static_cast<const float*>(audio.data());
  {
    py::gil_scoped_release release;
    self.state.step(slots.data(), n, audio_data, label_data, one_hot_data);
  }
  return labels;
}

struct PyEncodedTemplate {
  std::shared_ptr<const meshtalk::EncodedTemplate> t;
};

struct PyDecoderState {
  std::shared_ptr<const meshtalk::DecoderWeights> weights;
  meshtalk::DecoderState state;
};

PyEncodedTemplate encode_template_py(PyDecoderState& self, const py::handle& templ) {
  const int64_t V = self.weights->config.n_vertices;
  py::array tp = float_array(templ, "template", 2, "[V=" + std::to_string(V) + ", 3]");
  expect_shape(tp, "template", {V, 3});
  const float* data = static_cast<const float*>(tp.data());
  py::gil_scoped_release release;
  return PyEncodedTemplate{self.state.encode_template(data)};
}

py::array decoder_out(const py::object& out, int64_t n, int64_t V) {
  if (out.is_none()) return py::array_t<float>({n, V, int64_t(3)});
  py::array result = float_array(out, "out", 3, "[n, V, 3]", true);
  expect_shape(result, "out", {n, V, 3});
  return result;
}

py::array decoder_step_py(PyDecoderState& self, const py::handle& slots_obj, const py::handle& one_hot,
                          const py::object& out) {
  const meshtalk::ModelConfig& c = self.weights->config;
  const std::vector<int64_t> slots = slot_vector(slots_obj);
  const int64_t n = static_cast<int64_t>(slots.size());
  py::array codes = float_array(one_hot, "one_hot", 3,
                                "[n, H=" + std::to_string(c.heads) + ", C=" + std::to_string(c.classes) + "]");
  expect_shape(codes, "one_hot", {n, c.heads, c.classes});
  py::array result = decoder_out(out, n, c.n_vertices);
  const float* codes_data = static_cast<const float*>(codes.data());
  float* out_data = static_cast<float*>(result.mutable_data());
  {
    py::gil_scoped_release release;
    self.state.step(slots.data(), n, codes_data, out_data);
  }
  return result;
}

py::array decoder_step_labels_py(PyDecoderState& self, const py::handle& slots_obj, const py::handle& labels_obj,
                                 const py::object& out) {
  const meshtalk::ModelConfig& c = self.weights->config;
  const std::vector<int64_t> slots = slot_vector(slots_obj);
  const int64_t n = static_cast<int64_t>(slots.size());
  if (!py::isinstance<py::array>(labels_obj))
    throw py::type_error("labels: expected a numpy int32 array [n, H], found " +
                         py::str(py::type::of(labels_obj).attr("__name__")).cast<std::string>());
  py::array raw = py::reinterpret_borrow<py::array>(labels_obj);
  if (!raw.dtype().equal(py::dtype::of<int32_t>())) bad_argument("labels dtype", "int32", describe_dtype(raw));
  expect_shape(raw, "labels", {n, c.heads});
  auto labels = py::array_t<int32_t, py::array::c_style>::ensure(raw);  // a copy only if not C-contiguous
  py::array result = decoder_out(out, n, c.n_vertices);
  const int32_t* label_data = labels.data();
  float* out_data = static_cast<float*>(result.mutable_data());
  {
    py::gil_scoped_release release;
    self.state.step_labels(slots.data(), n, label_data, out_data);
  }
  return result;
}

py::array post_smooth_py(const py::handle& frames_obj, const py::handle& forehead_obj, const py::handle& neck_obj,
                         int64_t threads, const py::object& out) {
  py::array frames = float_array(frames_obj, "frames", 4, "[B, T, V, 3]");
  expect_shape(frames, "frames", {-1, -1, -1, 3});
  const int64_t B = frames.shape(0), T = frames.shape(1), V = frames.shape(2);
  py::array forehead = float_array(forehead_obj, "forehead", 1, "[V=" + std::to_string(V) + "]");
  expect_shape(forehead, "forehead", {V});
  py::array neck = float_array(neck_obj, "neck", 1, "[V=" + std::to_string(V) + "]");
  expect_shape(neck, "neck", {V});
  py::array result;
  if (out.is_none()) {
    result = py::array_t<float>({B, T, V, int64_t(3)});
  } else {
    result = float_array(out, "out", 4, "[B, T, V, 3]", true);
    expect_shape(result, "out", {B, T, V, 3});
    if (result.data() == frames.data()) bad_argument("out", "a buffer other than frames", "the frames buffer");
  }
  const float* f = static_cast<const float*>(frames.data());
  const float* m1 = static_cast<const float*>(forehead.data());
  const float* m2 = static_cast<const float*>(neck.data());
  float* o = static_cast<float*>(result.mutable_data());
  {
    py::gil_scoped_release release;
    meshtalk::post_smooth(f, B, T, V, m1, m2, o, threads);
  }
  return result;
}

meshtalk::StreamingSmoother make_smoother(const py::handle& forehead_obj, const py::handle& neck_obj, int64_t delay) {
  py::array forehead = float_array(forehead_obj, "forehead", 1, "[V]");
  const int64_t V = forehead.shape(0);
  py::array neck = float_array(neck_obj, "neck", 1, "[V=" + std::to_string(V) + "]");
  expect_shape(neck, "neck", {V});
  return meshtalk::StreamingSmoother(V, static_cast<const float*>(forehead.data()),
                                     static_cast<const float*>(neck.data()), delay);
}

py::array smoother_push_py(meshtalk::StreamingSmoother& s, const py::handle& frames_obj) {
  const int64_t V = s.n_vertices();
  py::array frames = float_array(frames_obj, "frames", 3, "[k, V=" + std::to_string(V) + ", 3]");
  expect_shape(frames, "frames", {-1, V, 3});
  const int64_t k = frames.shape(0);
  py::array_t<float> out({k, V, int64_t(3)});
  const float* in = static_cast<const float*>(frames.data());
  float* o = out.mutable_data();
  int64_t emitted = 0;
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < k; ++i)
      if (s.push(in + i * V * 3, o + emitted * V * 3)) ++emitted;
  }
  return out[py::slice(0, emitted, 1)];
}

py::array smoother_close_py(meshtalk::StreamingSmoother& s) {
  const int64_t n = s.pending(), V = s.n_vertices();
  py::array_t<float> out({n, V, int64_t(3)});
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  s.close(o, n);
  return out;
}

}  // namespace

void bind_streaming(py::module_& m) {
  py::class_<PySamplerState>(m, "SamplerState",
                             "The sampler one step at a time: `capacity` slots, each an independent sequence with "
                             "its own seed and step counter (sampler.hpp). Stepping a slot T times equals "
                             "`sample` on that sequence with its seed, bit for bit.")
      .def(py::init([](const PyContextWeights& w, int64_t capacity, int64_t threads) {
             return std::make_unique<PySamplerState>(PySamplerState{w.w, meshtalk::SamplerState(w.w, capacity, threads)});
           }),
           py::arg("weights"), py::arg("capacity"), py::arg("threads") = 0)
      .def_property_readonly("capacity", [](const PySamplerState& s) { return s.state.capacity(); })
      .def("reset", [](PySamplerState& s, int64_t slot, uint64_t seed, bool argmax) { s.state.reset(slot, seed, argmax); },
           py::arg("slot"), py::arg("seed") = 0, py::arg("argmax") = false,
           "Start a new sequence in `slot`: t = 0, Gumbel noise from `seed` (unused with argmax).")
      .def("release", [](PySamplerState& s, int64_t slot) { s.state.release(slot); }, py::arg("slot"))
      .def("assigned", [](const PySamplerState& s, int64_t slot) { return s.state.assigned(slot); }, py::arg("slot"))
      .def("steps", [](const PySamplerState& s, int64_t slot) { return s.state.steps(slot); }, py::arg("slot"))
      .def("seed", [](const PySamplerState& s, int64_t slot) { return s.state.seed(slot); }, py::arg("slot"))
      .def("step", &sampler_step_py, py::arg("slots"), py::arg("audio_code"), py::arg("one_hot") = py::none(),
           "One step of n distinct assigned slots: audio_code float32 [n, A] -> labels int32 [n, H]; "
           "one_hot: optional float32 [n, H, C] array that receives the one-hot codes (rows overwritten).");

  py::class_<PyEncodedTemplate>(m, "EncodedTemplate", "A template mesh encoded for one DecoderWeights (shareable).");

  py::class_<PyDecoderState>(m, "DecoderState",
                             "The decoder one frame at a time: `capacity` slots, each with its own encoded template "
                             "and LSTM state (decoder.hpp).")
      .def(py::init([](const PyDecoderWeights& w, int64_t capacity, int64_t threads) {
             return std::make_unique<PyDecoderState>(PyDecoderState{w.w, meshtalk::DecoderState(w.w, capacity, threads)});
           }),
           py::arg("weights"), py::arg("capacity"), py::arg("threads") = 0)
      .def_property_readonly("capacity", [](const PyDecoderState& s) { return s.state.capacity(); })
      .def("encode_template", &encode_template_py, py::arg("template"),
           "template float32 [V, 3] -> an EncodedTemplate for reset().")
      .def("reset", [](PyDecoderState& s, int64_t slot, const PyEncodedTemplate& t) { s.state.reset(slot, t.t); },
           py::arg("slot"), py::arg("template"), "Start a new sequence in `slot` (zero LSTM state) with `template`.")
      .def("release", [](PyDecoderState& s, int64_t slot) { s.state.release(slot); }, py::arg("slot"))
      .def("assigned", [](const PyDecoderState& s, int64_t slot) { return s.state.assigned(slot); }, py::arg("slot"))
      .def("steps", [](const PyDecoderState& s, int64_t slot) { return s.state.steps(slot); }, py::arg("slot"))
      .def("step", &decoder_step_py, py::arg("slots"), py::arg("one_hot"), py::arg("out") = py::none(),
           "One frame of n distinct assigned slots: one_hot float32 [n, H, C] -> meshes float32 [n, V, 3].")
      .def("step_labels", &decoder_step_labels_py, py::arg("slots"), py::arg("labels"), py::arg("out") = py::none(),
           "One frame from class labels int32 [n, H] -> meshes float32 [n, V, 3].");

  m.def("post_smooth", &post_smooth_py, py::arg("frames"), py::arg("forehead"), py::arg("neck"),
        py::arg("threads") = 0, py::arg("out") = py::none(),
        "The released post-smoothing: frames float32 [B, T, V, 3], masks float32 [V] -> [B, T, V, 3].");
  py::class_<meshtalk::StreamingSmoother>(m, "StreamingSmoother",
                                          "The post-smoothing of one stream: frame t comes out when frame t + delay "
                                          "is pushed (smoothing.hpp).")
      .def(py::init(&make_smoother), py::arg("forehead"), py::arg("neck"), py::arg("delay"))
      .def("push", &smoother_push_py, py::arg("frames"),
           "Append frames float32 [k, V, 3]; returns the frames that became ready [j, V, 3].")
      .def("close", &smoother_close_py, "End of the stream: the pending frames [pending, V, 3].")
      .def("reset", &meshtalk::StreamingSmoother::reset, "Start a new stream.")
      .def_property_readonly("delay", &meshtalk::StreamingSmoother::delay)
      .def_property_readonly("n_vertices", &meshtalk::StreamingSmoother::n_vertices)
      .def_property_readonly("pushed", &meshtalk::StreamingSmoother::pushed)
      .def_property_readonly("emitted", &meshtalk::StreamingSmoother::emitted)
      .def_property_readonly("pending", &meshtalk::StreamingSmoother::pending);
}

}  // namespace meshtalk_py
