// pybind11: the audio front end (log-mel, AudioEncoder, streaming encoders).
#include "common.hpp"

namespace meshtalk_py {
// ---------------------------------------------------------------------------------------------
// Audio front end: log-mel, the AudioEncoder (both framings) and the streaming classes.
// ---------------------------------------------------------------------------------------------
namespace {

struct PyAudioEncoderWeights {
  std::shared_ptr<const meshtalk::AudioEncoderWeights> w;
};

// Optional window [800] + filterbank [1025, 80] -> filters (both None: the standard ones).
std::shared_ptr<const meshtalk::MelFilters> mel_filters_from(const py::object& window, const py::object& fb) {
  if (window.is_none() && fb.is_none()) return meshtalk::MelFilters::standard();
  if (window.is_none() || fb.is_none())
    bad_argument("window and fb", "both arrays or both None", window.is_none() ? "fb only" : "window only");
  py::array w = float_array(window, "window", 1, "[800]");
  expect_shape(w, "window", {meshtalk::kWinLength});
  py::array f = float_array(fb, "fb", 2, "[1025, 80]");
  expect_shape(f, "fb", {meshtalk::kFreqBins, meshtalk::kMelBins});
  return std::make_shared<const meshtalk::MelFilters>(static_cast<const float*>(w.data()),
                                                      static_cast<const float*>(f.data()));
}

py::array_t<float> vector_array(const std::vector<float>& v, std::vector<py::ssize_t> shape) {
  py::array_t<float> out(shape);
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(float));
  return out;
}

py::array log_mel_py(const py::handle& x, const py::object& window, const py::object& fb, int64_t threads,
                     const py::object& out) {
  py::array a = float_array(x, "x", 2, "[N, L]");
  const int64_t N = a.shape(0), L = a.shape(1);
  if (L < meshtalk::kMinMelSamples)
    bad_argument("x shape", "[N, L] with L >= 1025 (the reflect padding needs more than 1024 samples)",
                 meshtalk::shape_to_string(shape_of(a)));
  const auto filters = mel_filters_from(window, fb);
  const int64_t F = meshtalk::mel_frame_count(L);
  py::array result;
  if (out.is_none()) {
    result = py::array_t<float>({N, meshtalk::kMelBins, F});
  } else {
    result = float_array(out, "out", 3, "[N, 80, F]", true);
    expect_shape(result, "out", {N, meshtalk::kMelBins, F});
  }
  const float* xd = static_cast<const float*>(a.data());
  float* od = static_cast<float*>(result.mutable_data());
  meshtalk::LogMelOptions options;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::log_mel(*filters, xd, N, L, L, od, options);
  }
  return result;
}

// [B, n] float32 samples of a lockstep stream of `batch` streams.
py::array stream_samples(const py::handle& obj, int64_t batch) {
  py::array a = float_array(obj, "samples", 2, "[B, n]");
  expect_shape(a, "samples", {batch, -1});
  return a;
}

class PyStreamingMel {
 public:
  PyStreamingMel(int64_t batch, const py::object& window, const py::object& fb)
      : mel_(mel_filters_from(window, fb), batch) {}

  py::array_t<float> push(const py::handle& samples) {
    py::array a = stream_samples(samples, mel_.batch());
    const int64_t n = a.shape(1);
    const float* data = static_cast<const float*>(a.data());
    frames_.clear();
    {
      py::gil_scoped_release release;
      mel_.push(data, n, n, collect());
    }
    return result();
  }
  py::array_t<float> close() {
    frames_.clear();
    {
      py::gil_scoped_release release;
      mel_.close(collect());
    }
    return result();
  }
  void reset() { mel_.reset(); }
  const meshtalk::StreamingMel& core() const { return mel_; }

 private:
  meshtalk::StreamingMel::FrameSink collect() {
    return [this](int64_t, const float* mel) {
      frames_.insert(frames_.end(), mel, mel + mel_.batch() * meshtalk::kMelBins);
    };
  }
  py::array_t<float> result() const {  // frames_ [F, B, 80] -> [B, 80, F]
    const int64_t B = mel_.batch(), M = meshtalk::kMelBins;
    const int64_t F = static_cast<int64_t>(frames_.size()) / (B * M);
    py::array_t<float> out({B, M, F});
    float* o = out.mutable_data();
    for (int64_t f = 0; f < F; ++f)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t m = 0; m < M; ++m) o[(b * M + m) * F + f] = frames_[(f * B + b) * M + m];
    return out;
  }
  meshtalk::StreamingMel mel_;
  std::vector<float> frames_;
};

// lookahead -1: centred (window / 2).
meshtalk::FrameClock frame_clock(int64_t fps, const std::string& clock, int64_t lookahead,
                                 int64_t window = meshtalk::kWindowSamples) {
  if (clock != "released" && clock != "exact") bad_argument("clock", "'released' or 'exact'", "'" + clock + "'");
  if (fps < 1 || fps > 8000) bad_argument("fps", "an integer in [1, 8000]", std::to_string(fps));
  meshtalk::FrameClock c;
  c.fps = fps;
  c.clock = clock == "released" ? meshtalk::Clock::kReleased : meshtalk::Clock::kExact;
  c.window = window;
  c.lookahead = lookahead == -1 ? window / 2 : lookahead;
  c.validate();
  return c;
}

class PyAudioStreamEncoder {
 public:
  PyAudioStreamEncoder(const PyAudioEncoderWeights& w, int64_t batch, int64_t fps, const std::string& clock,
                       int64_t lookahead, const std::string& framing, int64_t threads)
      : enc_(w.w, batch, frame_clock(fps, clock, lookahead, w.w->window_samples()), parse_framing(framing), threads) {}

  py::array_t<float> push(const py::handle& samples) {
    py::array a = stream_samples(samples, enc_.batch());
    const int64_t n = a.shape(1);
    const float* data = static_cast<const float*>(a.data());
    codes_.clear();
    {
      py::gil_scoped_release release;
      enc_.push(data, n, n, collect());
    }
    return result();
  }
  py::array_t<float> close() {
    codes_.clear();
    {
      py::gil_scoped_release release;
      enc_.close(collect());
    }
    return result();
  }
  void reset() { enc_.reset(); }
  const meshtalk::AudioStreamEncoder& core() const { return enc_; }

 private:
  static meshtalk::Framing parse_framing(const std::string& f) {
    if (f == "window") return meshtalk::Framing::kWindow;
    if (f == "stream") return meshtalk::Framing::kStream;
    bad_argument("framing", "'window' or 'stream'", "'" + f + "'");
  }
  meshtalk::AudioStreamEncoder::CodeSink collect() {
    return [this](int64_t, const float* codes) {
      codes_.insert(codes_.end(), codes, codes + enc_.batch() * enc_.audio_dim());
    };
  }
  py::array_t<float> result() const {  // codes_ [T, B, A] -> [B, T, A]
    const int64_t B = enc_.batch(), A = enc_.audio_dim();
    const int64_t T = static_cast<int64_t>(codes_.size()) / (B * A);
    py::array_t<float> out({B, T, A});
    float* o = out.mutable_data();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b) std::memcpy(o + (b * T + t) * A, codes_.data() + (t * B + b) * A, A * sizeof(float));
    return out;
  }
  meshtalk::AudioStreamEncoder enc_;
  std::vector<float> codes_;
};

py::array encode_windows_py(const PyAudioEncoderWeights& weights, const py::handle& windows, int64_t threads) {
  const int64_t W = weights.w->window_samples();
  py::array a = float_array(windows, "windows", 2, "[N, " + std::to_string(W) + "]");
  expect_shape(a, "windows", {-1, W});
  const int64_t N = a.shape(0), A = weights.w->audio_dim;
  py::array_t<float> out({N, A});
  const float* wd = static_cast<const float*>(a.data());
  float* od = out.mutable_data();
  meshtalk::AudioEncodeOptions options;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::encode_windows(*weights.w, wd, N, W, od, options);
  }
  return std::move(out);
}

py::array encode_stream_py(const PyAudioEncoderWeights& weights, const py::handle& mel, const py::handle& positions,
                           int64_t threads) {
  py::array m = float_array(mel, "mel", 3, "[B, 80, F]");
  expect_shape(m, "mel", {-1, meshtalk::kMelBins, -1});
  const int64_t B = m.shape(0), F = m.shape(2), A = weights.w->audio_dim;
  if (!py::isinstance<py::array>(positions))
    throw py::type_error("positions: expected a numpy integer array [T] or [B, T]");
  py::array p = py::reinterpret_borrow<py::array>(positions);
  if (p.dtype().kind() != 'i' && p.dtype().kind() != 'u') bad_argument("positions dtype", "an integer dtype", describe_dtype(p));
  if (p.ndim() != 1 && !(p.ndim() == 2 && (p.shape(0) == B || p.shape(0) == 1)))
    bad_argument("positions shape", "[T] or [B=" + std::to_string(B) + ", T]", meshtalk::shape_to_string(shape_of(p)));
  const int64_t Pb = p.ndim() == 1 ? 1 : p.shape(0), T = p.shape(p.ndim() - 1);
  auto pos = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(p);
  if (!pos) throw py::error_already_set();
  py::array_t<float> out({B, T, A});
  const float* md = static_cast<const float*>(m.data());
  const int64_t* pd = pos.data();
  float* od = out.mutable_data();
  meshtalk::AudioEncodeOptions options;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::encode_stream(*weights.w, md, B, F, pd, Pb, T, od, options);
  }
  return std::move(out);
}

}  // namespace

void bind_audio(py::module_& m) {
  m.def("mel_isa", [] { return std::string(meshtalk::MelFilters::isa()); },
        "The instruction set of the log-mel kernel here ('avx512f', 'avx2+fma' or 'baseline').");
  m.def("mel_lanes", &meshtalk::MelFilters::lanes, "Frames the log-mel kernel computes at once.");
  m.def("standard_mel_filters", [] {
    const auto f = meshtalk::MelFilters::standard();
    return py::make_tuple(vector_array(f->window(), {meshtalk::kWinLength}),
                          vector_array(f->filterbank(), {meshtalk::kFreqBins, meshtalk::kMelBins}));
  }, "The core's standard (window [800], filterbank [1025, 80]), computed in double and rounded to float32.");
  m.def("log_mel", &log_mel_py, py::arg("x"), py::arg("window") = py::none(), py::arg("fb") = py::none(),
        py::arg("threads") = 0, py::arg("out") = py::none(),
        "Log-mel with torchaudio semantics: x float32 [N, L] (L >= 1025) -> [N, 80, 1 + L // 160]. window [800] "
        "and fb [1025, 80] (both or neither) replace the standard ones.");

  py::class_<PyStreamingMel>(m, "StreamingMel",
                             "Streaming log-mel of `batch` lockstep streams: push(samples [B, n]) -> the frames "
                             "completed, [B, 80, F_new]; close() -> the last frames. Their concatenation equals "
                             "log_mel of the whole signal, bit for bit. Not thread-safe.")
      .def(py::init<int64_t, const py::object&, const py::object&>(), py::arg("batch") = 1,
           py::arg("window") = py::none(), py::arg("fb") = py::none())
      .def("push", &PyStreamingMel::push, py::arg("samples"))
      .def("close", &PyStreamingMel::close)
      .def("reset", &PyStreamingMel::reset, "Start a new, empty stream.")
      .def_property_readonly("batch", [](const PyStreamingMel& s) { return s.core().batch(); })
      .def_property_readonly("samples_seen", [](const PyStreamingMel& s) { return s.core().samples_seen(); })
      .def_property_readonly("frames_emitted", [](const PyStreamingMel& s) { return s.core().frames_emitted(); })
      .def_property_readonly("buffered_samples", [](const PyStreamingMel& s) { return s.core().buffered_samples(); })
      .def_property_readonly("closed", [](const PyStreamingMel& s) { return s.core().closed(); });

  py::class_<PyAudioEncoderWeights>(m, "AudioEncoderWeights", "The AudioEncoder laid out for the core (a copy).")
      .def(py::init([](int64_t audio_dim, const py::dict& tensors, const std::string& gemm, int64_t audio_context_ms) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyAudioEncoderWeights{meshtalk::AudioEncoderWeights::load(src, audio_dim, be, "encoder.audio_encoder.",
                                                                              audio_context_ms)};
           }),
           py::arg("audio_dim"), py::arg("tensors"), py::arg("gemm") = "builtin", py::arg("audio_context_ms") = 1000,
           "From float32 arrays keyed like MeshTalk.state_dict() ('encoder.audio_encoder.code.weight', ...); the "
           "melspec buffers are used when both are given, else the standard window and filterbank. "
           "audio_context_ms (1000 or 600, the model config's) sets the dilations.")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyAudioEncoderWeights{meshtalk::AudioEncoderWeights::load(src, c.audio_dim, be,
                                                                                "encoder.audio_encoder.",
                                                                                c.audio_context_ms)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", "From a file written by MeshTalk.save.")
      .def_property_readonly("audio_dim", [](const PyAudioEncoderWeights& w) { return w.w->audio_dim; })
      .def_property_readonly("audio_context_ms", [](const PyAudioEncoderWeights& w) { return w.w->context_ms; })
      .def_property_readonly("window_samples", [](const PyAudioEncoderWeights& w) { return w.w->window_samples(); })
      .def_property_readonly("receptive_field", [](const PyAudioEncoderWeights& w) { return w.w->receptive_field(); })
      .def_property_readonly("nbytes", [](const PyAudioEncoderWeights& w) { return w.w->nbytes(); })
      .def_property_readonly("mel_from_weights", [](const PyAudioEncoderWeights& w) { return w.w->mel_from_weights; })
      .def_property_readonly("mel_window", [](const PyAudioEncoderWeights& w) {
        return vector_array(w.w->mel->window(), {meshtalk::kWinLength});
      })
      .def_property_readonly("mel_filterbank", [](const PyAudioEncoderWeights& w) {
        return vector_array(w.w->mel->filterbank(), {meshtalk::kFreqBins, meshtalk::kMelBins});
      })
      .def_property_readonly("gemm", [](const PyAudioEncoderWeights& w) {
        return std::string(meshtalk::gemm_backend_name(w.w->backend));
      });

  m.def("encode_windows", &encode_windows_py, py::arg("weights"), py::arg("windows"), py::arg("threads") = 0,
        "Window framing: windows float32 [N, W] (W = weights.window_samples: 16000, or 9600 at 600 ms) -> audio "
        "codes [N, A] (log-mel included).");
  m.def("encode_stream", &encode_stream_py, py::arg("weights"), py::arg("mel"), py::arg("positions"),
        py::arg("threads") = 0,
        "Stream framing: the conv stack over mel float32 [B, 80, F] read at positions [T] or [B, T] (ints in "
        "[0, F - R], R = weights.receptive_field: 101, or 61 at 600 ms) -> audio codes [B, T, A].");
  py::module_ testing = m.attr("_testing").cast<py::module_>();  // made by module.cpp first
  testing.def("clock_frames", [](int64_t samples, int64_t fps, const std::string& clock, int64_t lookahead,
                                 int64_t window) {
          const meshtalk::FrameClock c = frame_clock(fps, clock, lookahead, window);
          if (samples < 0 || samples > (int64_t(1) << 32))
            bad_argument("samples", "an integer in [0, 2^32]", std::to_string(samples));
          const int64_t T = c.num_frames(samples);
          py::array_t<int64_t> centres(T), positions(T);
          for (int64_t k = 0; k < T; ++k) {
            centres.mutable_at(k) = c.centre(k);
            positions.mutable_at(k) = c.stream_position(k);
          }
          return py::make_tuple(T, centres, positions);
        }, py::arg("samples"), py::arg("fps") = 30, py::arg("clock") = "released", py::arg("lookahead") = -1,
        py::arg("window") = meshtalk::kWindowSamples,
        "The core's frame clock (lookahead -1: centred in the window of `window` samples, 16000 or 9600): (T, centres [T], stream positions [T]) for an utterance of `samples` samples.");

  py::class_<PyAudioStreamEncoder>(m, "AudioStreamEncoder",
                                   "PCM in, audio codes out, for `batch` lockstep streams: push(samples [B, n]) -> "
                                   "codes of the frames completed [B, T_new, A]; close() -> the rest. Their "
                                   "concatenation equals MeshTalk.encode_speech with the same framing and clock "
                                   "(the window: the weights' audio context; lookahead -1: centred in it). "
                                   "Not thread-safe.")
      .def(py::init<const PyAudioEncoderWeights&, int64_t, int64_t, const std::string&, int64_t, const std::string&,
                    int64_t>(),
           py::arg("weights"), py::arg("batch") = 1, py::arg("fps") = 30, py::arg("clock") = "released",
           py::arg("lookahead") = -1, py::arg("framing") = "window", py::arg("threads") = 1)
      .def("push", &PyAudioStreamEncoder::push, py::arg("samples"))
      .def("close", &PyAudioStreamEncoder::close)
      .def("reset", &PyAudioStreamEncoder::reset, "Start a new, empty stream.")
      .def_property_readonly("batch", [](const PyAudioStreamEncoder& e) { return e.core().batch(); })
      .def_property_readonly("samples_seen", [](const PyAudioStreamEncoder& e) { return e.core().samples_seen(); })
      .def_property_readonly("frames_emitted", [](const PyAudioStreamEncoder& e) { return e.core().frames_emitted(); })
      .def_property_readonly("closed", [](const PyAudioStreamEncoder& e) { return e.core().closed(); });
}

}  // namespace meshtalk_py
