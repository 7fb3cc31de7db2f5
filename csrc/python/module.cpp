// meshtalk_fast._core: the module definition. csrc/python/ is the only place that includes pybind11;
// its files check arguments, convert arrays and call the core with the GIL released (all the logic
// lives in csrc/core): this one the safetensors reader, weights, sample and decode; bind_*.cpp the
// rest, with the shared conversions in common.hpp.
#include "common.hpp"

#include <chrono>

namespace meshtalk_py {
namespace {

// Seconds per call of gemm(m, A[m, k], W[n, k]) on random data, for the GEMM measurements of
// benchmarks/RESULTS.md (the time of the whole loop divided by reps, after one warm-up call).
double bench_gemm(int64_t m, int64_t n, int64_t k, const std::string& backend, int64_t reps, int64_t threads) {
  if (m < 1 || n < 1 || k < 1 || reps < 1) bad_argument("bench_gemm sizes", "m, n, k, reps >= 1", "smaller");
  const meshtalk::GemmBackend be = parse_backend(backend);
  py::gil_scoped_release release;
  std::vector<float> a(static_cast<size_t>(m * k)), w(static_cast<size_t>(n * k)), c(static_cast<size_t>(m * n));
  uint32_t state = 12345;
  auto next = [&] { state = state * 1664525u + 1013904223u; return static_cast<float>(state >> 8) / 16777216.0f - 0.5f; };
  for (float& v : a) v = next();
  for (float& v : w) v = next();
  const meshtalk::WeightMatrix wm(w.data(), n, k, k, be);
  meshtalk::ThreadPool pool(meshtalk::resolve_thread_count(threads));
  const int64_t panels = wm.panels(), splits = std::min<int64_t>(pool.size(), panels);
  auto once = [&] {
    pool.parallel_for(splits, [&](int64_t s) {
      meshtalk::gemm(m, a.data(), k, wm, c.data(), n, false, s * panels / splits, (s + 1) * panels / splits);
    });
  };
  once();
  const auto start = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r) once();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps;
}

}  // namespace
}  // namespace meshtalk_py

using namespace meshtalk_py;

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "meshtalk_fast._core: the C++ core of meshtalk_fast (no torch inside).\n\n"
      "SafetensorsFile / read_safetensors: a strict safetensors reader that validates the header, "
      "every shape and every byte range before reading data. Malformed contents raise ValueError, "
      "an unreadable path OSError (FileNotFoundError when missing), a missing tensor KeyError.\n\n"
      "ContextWeights / sample: the batched autoregressive sampler; DecoderWeights / decode: the batched "
      "VertexUnet decoder. Bad arguments raise ValueError (KeyError for a missing weight).";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const meshtalk::Error& e) {
      translate_error(e);
    }
  });

  m.attr("__version__") = MESHTALK_VERSION;
  m.def("core_version", [] { return std::string(MESHTALK_VERSION); },
        "The version of the C++ core (the same as the meshtalk_fast package).");

  py::class_<SafetensorsFile>(m, "SafetensorsFile",
                              "A validated safetensors file held in memory.\n\n"
                              "Float tensors (F8_E4M3, F8_E5M2, F16, BF16, F32, F64) are returned as "
                              "float32; integer and BOOL tensors keep their dtype.")
      .def(py::init(&open_file), py::arg("path"),
           "Read and validate the file at `path` (str or os.PathLike).")
      .def_static(
          "from_bytes",
          [](const py::bytes& data, const std::string& label) {
            char* buffer = nullptr;
            py::ssize_t size = 0;
            if (PyBytes_AsStringAndSize(data.ptr(), &buffer, &size) != 0) throw py::error_already_set();
            // The bytes object is immutable and kept alive by the caller's reference.
            py::gil_scoped_release release;
            return SafetensorsFile::from_memory(buffer, static_cast<size_t>(size), label);
          },
          py::arg("data"), py::arg("label") = "<bytes>",
          "Validate a file image in memory; `label` stands in for the path in error messages.")
      .def_property_readonly("path", &SafetensorsFile::label, "The path, or the label of a buffer.")
      .def("keys", &SafetensorsFile::names, "Tensor names, sorted.")
      .def("dtype", [](const SafetensorsFile& f, const std::string& name) {
             return std::string(meshtalk::dtype_name(f.dtype(name)));
           }, py::arg("name"), "The stored dtype as spelled in the header, e.g. 'BF16'.")
      .def("shape", [](const SafetensorsFile& f, const std::string& name) {
             return py::tuple(py::cast(f.shape(name)));
           }, py::arg("name"), "The shape as a tuple of ints.")
      .def("metadata", &SafetensorsFile::metadata, "The __metadata__ map (empty if absent).")
      .def("get",
           [](const SafetensorsFile& f, const std::string& name,
              const std::optional<std::vector<int64_t>>& shape) {
             if (shape) f.check_shape(name, *shape);
             return to_numpy(f, name);
           },
           py::arg("name"), py::arg("shape") = py::none(),
           "A copy of tensor `name` as a numpy array. With `shape` (-1 matches any size), raise "
           "ValueError unless the tensor has that shape.")
      .def("__getitem__", &to_numpy, py::arg("name"))
      .def("__contains__", &SafetensorsFile::contains, py::arg("name"))
      .def("__len__", &SafetensorsFile::size)
      .def("__iter__", [](const SafetensorsFile& f) { return py::iter(py::cast(f.names())); })
      .def("__repr__", [](const SafetensorsFile& f) {
        return "SafetensorsFile('" + f.label() + "', " + std::to_string(f.size()) + " tensors)";
      });

  m.def(
      "read_safetensors",
      [](const std::filesystem::path& path) {
        const SafetensorsFile file = open_file(path);
        py::dict out;
        for (const std::string& name : file.names()) out[py::str(name)] = to_numpy(file, name);
        return out;
      },
      py::arg("path"), "Read every tensor of a safetensors file: {name: numpy array}, sorted by name.");

  // ------------------------------------------------------------------------------------------- decoding
  m.def("default_threads", &meshtalk::default_thread_count,
        "The number of cores this process may run on (the default `threads`).");
  m.def("gemm_info", [] {
    py::dict d;
    d["blas_available"] = meshtalk::blas_available();
    d["blas"] = std::string(meshtalk::blas_description());
    d["builtin_isa"] = std::string(meshtalk::builtin_kernel_isa());
    return d;
  }, "Which GEMM backends this core has: {'blas_available', 'blas', 'builtin_isa'}.");
  // Test and benchmark helpers live apart from the public API, in the submodule _core._testing.
  py::module_ testing = m.def_submodule("_testing", "Helpers for the tests and benchmarks (not part of the API).");
  testing.def("gumbel_uniform", &meshtalk::counter_uniform, py::arg("seed"), py::arg("t"), py::arg("h"), py::arg("c"),
        "The uniform U(seed, t, h, c) in [0, 1) behind the sampler's Gumbel noise.");
  testing.def("bench_gemm", &bench_gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("backend"),
        py::arg("reps") = 10, py::arg("threads") = 1,
        "Seconds per product C[m, n] = A[m, k] W[n, k]^T on random data with backend 'builtin' or 'blas'.");

  py::class_<PyContextWeights>(m, "ContextWeights",
                               "The ContextModel laid out for the sampler (a copy of the weights).")
      .def(py::init([](const py::dict& config, const py::dict& tensors, const std::string& gemm,
                       const std::string& weights) {
             const meshtalk::ModelConfig c = config_from_dict(config);
             const meshtalk::GemmBackend be = parse_backend(gemm);
             const meshtalk::WeightStorage st = parse_storage(weights);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyContextWeights{meshtalk::ContextWeights::load(src, c, "context_model.", be, st)};
           }),
           py::arg("config"), py::arg("tensors"), py::arg("gemm") = "builtin", py::arg("weights") = "f32",
           "From float32 arrays keyed like MeshTalk.state_dict() ('context_model.logits.masked_linear.weight', ...) "
           "and a config {heads, classes, n_vertices, context_hidden, audio_dim[, dilations]}. gemm: 'builtin' "
           "(our kernel: faster, and results independent of batch composition) or 'blas' (OpenBLAS, to compare). "
           "weights: 'f32' (exact, default), 'bf16' or 'int8' storage of the per-frame products (builtin only).")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm,
                                  const std::string& weights) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             const meshtalk::WeightStorage st = parse_storage(weights);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyContextWeights{meshtalk::ContextWeights::load(src, c, "context_model.", be, st)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", py::arg("weights") = "f32",
           "From a file written by MeshTalk.save.")
      .def_property_readonly("config", [](const PyContextWeights& w) { return config_dict(w.w->config); })
      .def_property_readonly("nbytes", [](const PyContextWeights& w) { return w.w->nbytes(); })
      .def_property_readonly("gemm", [](const PyContextWeights& w) {
        return std::string(meshtalk::gemm_backend_name(w.w->backend));
      })
      .def_property_readonly("weights", [](const PyContextWeights& w) {
        return std::string(meshtalk::weight_storage_name(w.w->storage));
      });

  py::class_<PyDecoderWeights>(m, "DecoderWeights", "The VertexUnet laid out for the decoder (a copy of the weights).")
      .def(py::init([](const py::dict& config, const py::dict& tensors, const std::string& gemm,
                       const std::string& weights) {
             const meshtalk::ModelConfig c = config_from_dict(config);
             const meshtalk::GemmBackend be = parse_backend(gemm);
             const meshtalk::WeightStorage st = parse_storage(weights);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyDecoderWeights{meshtalk::DecoderWeights::load(src, c, be, "vertex_unet.", st)};
           }),
           py::arg("config"), py::arg("tensors"), py::arg("gemm") = "builtin", py::arg("weights") = "f32",
           "From float32 arrays keyed like MeshTalk.state_dict() ('vertex_unet.fusion.weight', ...) and a config. "
           "gemm: 'builtin' (our kernel, the faster one measured) or 'blas' (OpenBLAS, when linked in). weights: "
           "'f32' (exact, default), 'bf16' or 'int8' storage of the per-frame products (builtin only).")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm,
                                  const std::string& weights) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             const meshtalk::WeightStorage st = parse_storage(weights);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyDecoderWeights{meshtalk::DecoderWeights::load(src, c, be, "vertex_unet.", st)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", py::arg("weights") = "f32",
           "From a file written by MeshTalk.save.")
      .def_property_readonly("config", [](const PyDecoderWeights& w) { return config_dict(w.w->config); })
      .def_property_readonly("nbytes", [](const PyDecoderWeights& w) { return w.w->nbytes(); })
      .def_property_readonly("gemm", [](const PyDecoderWeights& w) {
        return std::string(meshtalk::gemm_backend_name(w.w->backend));
      })
      .def_property_readonly("weights", [](const PyDecoderWeights& w) {
        return std::string(meshtalk::weight_storage_name(w.w->storage));
      });

  m.def("sample", &sample_py, py::arg("weights"), py::arg("audio_code"), py::arg("argmax") = false,
        py::arg("seeds") = py::none(), py::arg("lengths") = py::none(), py::arg("threads") = 0,
        py::arg("one_hot") = py::none(),
        "Sample codes: audio_code float32 [B, T, A] -> labels int32 [B, T, H] (-1 past a sequence's length).\n\n"
        "seeds: [B] non-negative ints (required unless argmax); lengths: [B] ints in [0, T]; threads: 0 = all "
        "cores; one_hot: optional zero-filled float32 [B, T, H, C] array that receives 1.0 at each label.");
  m.def("decode", &decode_py, py::arg("weights"), py::arg("template"), py::arg("one_hot"), py::arg("threads") = 0,
        py::arg("out") = py::none(),
        "Decode meshes: template float32 [1 or B, V, 3], one_hot float32 [B, T, H, C] -> [B, T, V, 3] (written "
        "into `out` when given).");

  bind_audio(m);  // log-mel, the AudioEncoder and the streaming classes
  bind_streaming(m);
  bind_session(m);  // the C API session pipeline (session.hpp)
  bind_blendshapes(m);  // the blendshape solver (blendshapes.hpp)
}
