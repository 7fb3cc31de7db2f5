// meshtalk_fast._core: the only pybind11 file. It checks arguments, converts arrays and calls the
// core with the GIL released; all the logic lives in csrc/core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "meshtalk/audio_encoder.hpp"
#include "meshtalk/decoder.hpp"
#include "meshtalk/gemm.hpp"
#include "meshtalk/mel.hpp"
#include "meshtalk/safetensors.hpp"
#include "meshtalk/sampler.hpp"
#include "meshtalk/session.hpp"
#include "meshtalk/smoothing.hpp"
#include "meshtalk/status.hpp"
#include "meshtalk/threads.hpp"
#include "meshtalk/weights.hpp"

namespace py = pybind11;
using meshtalk::DType;
using meshtalk::SafetensorsFile;

namespace {

// Integer and bool tensors keep their dtype; the byte order is spelled out because safetensors
// data is little-endian whatever the host is.
py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::kBool: return py::dtype("?");
    case DType::kU8: return py::dtype("u1");
    case DType::kI8: return py::dtype("i1");
    case DType::kI16: return py::dtype("<i2");
    case DType::kU16: return py::dtype("<u2");
    case DType::kI32: return py::dtype("<i4");
    case DType::kU32: return py::dtype("<u4");
    case DType::kI64: return py::dtype("<i8");
    case DType::kU64: return py::dtype("<u8");
    default: return py::dtype::of<float>();  // float dtypes are converted to float32
  }
}

// A copy of one tensor: float32 for the float dtypes, the native numpy dtype otherwise.
py::array to_numpy(const SafetensorsFile& file, const std::string& name) {
  const meshtalk::TensorInfo& info = file.info(name);
  const std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
  if (meshtalk::dtype_is_float(info.dtype)) {
    py::array_t<float> out(shape);
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release release;
      file.read_f32(name, dst, static_cast<size_t>(info.numel));
    }
    return std::move(out);
  }
  py::array out(numpy_dtype(info.dtype), shape);
  auto* dst = static_cast<uint8_t*>(out.mutable_data());
  const meshtalk::ByteView bytes = file.raw(name);
  {
    py::gil_scoped_release release;
    if (bytes.size > 0) std::memcpy(dst, bytes.data, bytes.size);
    // numpy bools must be 0 or 1; a file may store any nonzero byte for true.
    if (info.dtype == DType::kBool)
      for (size_t i = 0; i < bytes.size; ++i) dst[i] = dst[i] != 0;
  }
  return out;
}

SafetensorsFile open_file(const std::filesystem::path& path) {
  const std::string p = path.string();
  py::gil_scoped_release release;
  return SafetensorsFile::open(p);
}

void translate_error(const meshtalk::Error& e) {
  switch (e.code()) {
    case meshtalk::ErrorCode::kKeyNotFound: PyErr_SetString(PyExc_KeyError, e.what()); return;
    case meshtalk::ErrorCode::kFileNotFound: PyErr_SetString(PyExc_FileNotFoundError, e.what()); return;
    case meshtalk::ErrorCode::kIo: PyErr_SetString(PyExc_OSError, e.what()); return;
    case meshtalk::ErrorCode::kInvalidFormat:
    case meshtalk::ErrorCode::kInvalidArgument: PyErr_SetString(PyExc_ValueError, e.what()); return;
  }
  PyErr_SetString(PyExc_RuntimeError, e.what());
}

// ---------------------------------------------------------------------------------------------
// Decoding: arrays are checked here (type, dtype, layout, shape) and handed to the core as raw
// pointers, zero-copy; the core runs with the GIL released.
// ---------------------------------------------------------------------------------------------

[[noreturn]] void bad_argument(const std::string& what, const std::string& expected, const std::string& found) {
  meshtalk::throw_mismatch(what, expected, found);
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

std::string describe_dtype(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A float32, C-contiguous, aligned numpy array of `ndim` dimensions (`layout` names them in errors).
py::array float_array(const py::handle& obj, const std::string& name, py::ssize_t ndim, const std::string& layout,
                      bool writable = false) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + ": expected a numpy float32 array " + layout + ", found " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<float>()))  // native-endian float32 (">f4" is refused)
    bad_argument(name + " dtype", "float32", describe_dtype(a));
  if (a.ndim() != ndim)
    bad_argument(name + " shape", std::to_string(ndim) + " dimensions " + layout,
                 meshtalk::shape_to_string(shape_of(a)));
  if (!(a.flags() & py::array::c_style))
    bad_argument(name + " layout", "a C-contiguous array (call .contiguous() / np.ascontiguousarray)",
                 "strides " + meshtalk::shape_to_string(std::vector<int64_t>(a.strides(), a.strides() + a.ndim())));
  if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(float) != 0)
    bad_argument(name + " alignment", "4-byte aligned data", "a misaligned buffer");
  if (writable && !a.writeable()) bad_argument(name, "a writable array", "a read-only array");
  return a;
}

void expect_shape(const py::array& a, const std::string& name, const std::vector<int64_t>& expected) {
  const std::vector<int64_t> found = shape_of(a);
  bool ok = found.size() == expected.size();
  for (size_t i = 0; ok && i < found.size(); ++i) ok = expected[i] < 0 || expected[i] == found[i];
  if (!ok) bad_argument(name + " shape", meshtalk::shape_to_string(expected), meshtalk::shape_to_string(found));
}

// A 1-d integer array (any integer dtype) of `size` entries.
py::array integer_array(const py::handle& obj, const std::string& name, int64_t size) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + ": expected a 1-d numpy integer array of " + std::to_string(size) + " entries, found " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u') bad_argument(name + " dtype", "an integer dtype", describe_dtype(a));
  expect_shape(a, name, {size});
  return a;
}

// Lengths as int64 (a uint64 above 2^63 is refused rather than wrapped to a negative value).
std::vector<int64_t> int_vector(const py::handle& obj, const std::string& name, int64_t size) {
  py::array a = integer_array(obj, name, size);
  std::vector<int64_t> out(static_cast<size_t>(size));
  if (a.dtype().kind() == 'u' && a.itemsize() == 8) {
    auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    for (int64_t i = 0; i < size; ++i) {
      if (u.at(i) > static_cast<uint64_t>(INT64_MAX))
        bad_argument(name + "[" + std::to_string(i) + "]", "at most 2^63 - 1", std::to_string(u.at(i)));
      out[i] = static_cast<int64_t>(u.at(i));
    }
    return out;
  }
  auto v = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  for (int64_t i = 0; i < size; ++i) out[i] = v.at(i);
  return out;
}

// Seeds: any value in [0, 2^64).
std::vector<uint64_t> seed_vector(const py::handle& obj, int64_t size) {
  py::array a = integer_array(obj, "seeds", size);
  std::vector<uint64_t> out(static_cast<size_t>(size));
  if (a.dtype().kind() == 'u') {
    auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    for (int64_t i = 0; i < size; ++i) out[i] = u.at(i);
    return out;
  }
  auto v = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  for (int64_t i = 0; i < size; ++i) {
    if (v.at(i) < 0) bad_argument("seeds", "non-negative integers", std::to_string(v.at(i)));
    out[i] = static_cast<uint64_t>(v.at(i));
  }
  return out;
}

meshtalk::GemmBackend parse_backend(const std::string& name) {
  if (name == "builtin") return meshtalk::GemmBackend::kBuiltin;
  if (name == "blas") return meshtalk::GemmBackend::kBlas;
  bad_argument("gemm", "'builtin' or 'blas'", "'" + name + "'");
}

py::dict config_dict(const meshtalk::ModelConfig& c) {
  py::dict d;
  d["heads"] = c.heads;
  d["classes"] = c.classes;
  d["n_vertices"] = c.n_vertices;
  d["context_hidden"] = c.context_hidden;
  d["audio_dim"] = c.audio_dim;
  d["dilations"] = c.dilations;
  return d;
}

meshtalk::ModelConfig config_from_dict(const py::dict& d) {
  meshtalk::ModelConfig c;
  auto get = [&](const char* key, int64_t* dst) {
    if (!d.contains(key)) throw py::key_error(std::string("config: missing '") + key + "'");
    *dst = py::cast<int64_t>(d[key]);
  };
  get("heads", &c.heads);
  get("classes", &c.classes);
  get("n_vertices", &c.n_vertices);
  get("context_hidden", &c.context_hidden);
  get("audio_dim", &c.audio_dim);
  if (d.contains("dilations")) c.dilations = py::cast<std::vector<int64_t>>(d["dilations"]);
  c.validate();
  return c;
}

// The buffers of a {name: float32 array} dict; `keep` holds references while the GIL is released.
meshtalk::BufferSource buffer_source(const py::dict& tensors, std::vector<py::object>* keep) {
  meshtalk::BufferSource src;
  for (const auto& item : tensors) {
    const std::string key = py::cast<std::string>(item.first);
    const std::string name = "weights '" + key + "'";
    if (!py::isinstance<py::array>(item.second)) float_array(item.second, name, 0, "");  // raises TypeError
    py::array a = float_array(item.second, name, py::reinterpret_borrow<py::array>(item.second).ndim(), "");
    keep->push_back(a);
    src.add(key, static_cast<const float*>(a.data()), shape_of(a));
  }
  return src;
}

struct PyContextWeights {
  std::shared_ptr<const meshtalk::ContextWeights> w;
};
struct PyDecoderWeights {
  std::shared_ptr<const meshtalk::DecoderWeights> w;
};

template <class Loader>
auto load_from_file(const std::filesystem::path& path, Loader loader) {
  const std::string p = path.string();
  py::gil_scoped_release release;
  const SafetensorsFile file = SafetensorsFile::open(p);
  return loader(meshtalk::FileSource(file), meshtalk::read_model_config(file));
}

py::array_t<int32_t> sample_py(const PyContextWeights& weights, const py::handle& audio_code, bool argmax,
                               const py::object& seeds, const py::object& lengths, int64_t threads,
                               const py::object& one_hot) {
  const meshtalk::ContextWeights& w = *weights.w;
  const meshtalk::ModelConfig& c = w.config;
  const std::string layout = "[B, T, A=" + std::to_string(c.audio_dim) + "]";
  py::array audio = float_array(audio_code, "audio_code", 3, layout);
  expect_shape(audio, "audio_code", {-1, -1, c.audio_dim});
  const int64_t B = audio.shape(0), T = audio.shape(1);
  if (B < 1 || T < 1) bad_argument("audio_code shape", layout + " with B >= 1 and T >= 1",
                                   meshtalk::shape_to_string(shape_of(audio)));
  std::vector<uint64_t> seed_values;
  if (!seeds.is_none()) {
    seed_values = seed_vector(seeds, B);
  } else if (!argmax) {
    bad_argument("seeds", "an array of " + std::to_string(B) + " seeds for Gumbel sampling (argmax=False)", "None");
  }
  std::vector<int64_t> length_values;
  if (!lengths.is_none()) length_values = int_vector(lengths, "lengths", B);
  float* one_hot_data = nullptr;
  if (!one_hot.is_none()) {
    py::array oh = float_array(one_hot, "one_hot", 4, "[B, T, H, C]", true);
    expect_shape(oh, "one_hot", {B, T, c.heads, c.classes});
    one_hot_data = static_cast<float*>(oh.mutable_data());
  }
  py::array_t<int32_t> labels({B, T, c.heads});
  int32_t* label_data = labels.mutable_data();
  const float* audio_data = static_cast<const float*>(audio.data());
  meshtalk::SampleOptions options;
  options.argmax = argmax;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::sample(w, audio_data, B, T, length_values.empty() ? nullptr : length_values.data(),
                     seed_values.empty() ? nullptr : seed_values.data(), options, label_data, one_hot_data);
  }
  return labels;
}

py::array decode_py(const PyDecoderWeights& weights, const py::handle& templ, const py::handle& one_hot,
                    int64_t threads, const py::object& out) {
  const meshtalk::DecoderWeights& w = *weights.w;
  const meshtalk::ModelConfig& c = w.config;
  const std::string codes_layout = "[B, T, H=" + std::to_string(c.heads) + ", C=" + std::to_string(c.classes) + "]";
  py::array codes = float_array(one_hot, "one_hot", 4, codes_layout);
  expect_shape(codes, "one_hot", {-1, -1, c.heads, c.classes});
  const int64_t B = codes.shape(0), T = codes.shape(1);
  if (B < 1 || T < 1) bad_argument("one_hot shape", codes_layout + " with B >= 1 and T >= 1",
                                   meshtalk::shape_to_string(shape_of(codes)));
  py::array tp = float_array(templ, "template", 3, "[1 or B, V, 3]");
  expect_shape(tp, "template", {-1, c.n_vertices, 3});
  if (tp.shape(0) != 1 && tp.shape(0) != B)
    bad_argument("template shape", "[1 or B=" + std::to_string(B) + ", V=" + std::to_string(c.n_vertices) + ", 3]",
                 meshtalk::shape_to_string(shape_of(tp)));
  py::array result;
  if (out.is_none()) {
    result = py::array_t<float>({B, T, c.n_vertices, int64_t(3)});
  } else {
    result = float_array(out, "out", 4, "[B, T, V, 3]", true);
    expect_shape(result, "out", {B, T, c.n_vertices, 3});
  }
  const float* tp_data = static_cast<const float*>(tp.data());
  const float* codes_data = static_cast<const float*>(codes.data());
  float* out_data = static_cast<float*>(result.mutable_data());
  const int64_t Bt = tp.shape(0);
  meshtalk::DecodeOptions options;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::decode(w, tp_data, Bt, codes_data, B, T, out_data, options);
  }
  return result;
}

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

}  // namespace

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

meshtalk::FrameClock frame_clock(int64_t fps, const std::string& clock, int64_t lookahead) {
  if (clock != "released" && clock != "exact") bad_argument("clock", "'released' or 'exact'", "'" + clock + "'");
  if (fps < 1 || fps > 8000) bad_argument("fps", "an integer in [1, 8000]", std::to_string(fps));
  meshtalk::FrameClock c;
  c.fps = fps;
  c.clock = clock == "released" ? meshtalk::Clock::kReleased : meshtalk::Clock::kExact;
  c.lookahead = lookahead;
  c.validate();
  return c;
}

class PyAudioStreamEncoder {
 public:
  PyAudioStreamEncoder(const PyAudioEncoderWeights& w, int64_t batch, int64_t fps, const std::string& clock,
                       int64_t lookahead, const std::string& framing, int64_t threads)
      : enc_(w.w, batch, frame_clock(fps, clock, lookahead), parse_framing(framing), threads) {}

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
  py::array a = float_array(windows, "windows", 2, "[N, 16000]");
  expect_shape(a, "windows", {-1, meshtalk::kWindowSamples});
  const int64_t N = a.shape(0), A = weights.w->audio_dim;
  py::array_t<float> out({N, A});
  const float* wd = static_cast<const float*>(a.data());
  float* od = out.mutable_data();
  meshtalk::AudioEncodeOptions options;
  options.threads = threads;
  {
    py::gil_scoped_release release;
    meshtalk::encode_windows(*weights.w, wd, N, meshtalk::kWindowSamples, od, options);
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
      .def(py::init([](int64_t audio_dim, const py::dict& tensors, const std::string& gemm) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyAudioEncoderWeights{meshtalk::AudioEncoderWeights::load(src, audio_dim, be)};
           }),
           py::arg("audio_dim"), py::arg("tensors"), py::arg("gemm") = "builtin",
           "From float32 arrays keyed like MeshTalk.state_dict() ('encoder.audio_encoder.code.weight', ...); the "
           "melspec buffers are used when both are given, else the standard window and filterbank.")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyAudioEncoderWeights{meshtalk::AudioEncoderWeights::load(src, c.audio_dim, be)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", "From a file written by MeshTalk.save.")
      .def_property_readonly("audio_dim", [](const PyAudioEncoderWeights& w) { return w.w->audio_dim; })
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
        "Window framing: windows float32 [N, 16000] -> audio codes [N, A] (log-mel included).");
  m.def("encode_stream", &encode_stream_py, py::arg("weights"), py::arg("mel"), py::arg("positions"),
        py::arg("threads") = 0,
        "Stream framing: the conv stack over mel float32 [B, 80, F] read at positions [T] or [B, T] (ints in "
        "[0, F - 101]) -> audio codes [B, T, A].");
  m.def("clock_frames", [](int64_t samples, int64_t fps, const std::string& clock, int64_t lookahead) {
          const meshtalk::FrameClock c = frame_clock(fps, clock, lookahead);
          if (samples < 0 || samples > (int64_t(1) << 32))
            bad_argument("samples", "an integer in [0, 2^32]", std::to_string(samples));
          const int64_t T = c.num_frames(samples);
          py::array_t<int64_t> centres(T), positions(T);
          for (int64_t k = 0; k < T; ++k) {
            centres.mutable_at(k) = c.centre(k);
            positions.mutable_at(k) = c.stream_position(k);
          }
          return py::make_tuple(T, centres, positions);
        }, py::arg("samples"), py::arg("fps") = 30, py::arg("clock") = "released", py::arg("lookahead") = 8000,
        "The core's frame clock: (T, centres [T], stream positions [T]) for an utterance of `samples` samples.");

  py::class_<PyAudioStreamEncoder>(m, "AudioStreamEncoder",
                                   "PCM in, audio codes out, for `batch` lockstep streams: push(samples [B, n]) -> "
                                   "codes of the frames completed [B, T_new, A]; close() -> the rest. Their "
                                   "concatenation equals MeshTalk.encode_speech with the same framing and clock. "
                                   "Not thread-safe.")
      .def(py::init<const PyAudioEncoderWeights&, int64_t, int64_t, const std::string&, int64_t, const std::string&,
                    int64_t>(),
           py::arg("weights"), py::arg("batch") = 1, py::arg("fps") = 30, py::arg("clock") = "released",
           py::arg("lookahead") = 8000, py::arg("framing") = "window", py::arg("threads") = 1)
      .def("push", &PyAudioStreamEncoder::push, py::arg("samples"))
      .def("close", &PyAudioStreamEncoder::close)
      .def("reset", &PyAudioStreamEncoder::reset, "Start a new, empty stream.")
      .def_property_readonly("batch", [](const PyAudioStreamEncoder& e) { return e.core().batch(); })
      .def_property_readonly("samples_seen", [](const PyAudioStreamEncoder& e) { return e.core().samples_seen(); })
      .def_property_readonly("frames_emitted", [](const PyAudioStreamEncoder& e) { return e.core().frames_emitted(); })
      .def_property_readonly("closed", [](const PyAudioStreamEncoder& e) { return e.core().closed(); });
}

// ---------------------------------------------------------------------------------------------
// Sessions (session.hpp): the C API's pipeline, PCM in -> frames out, for tests and benchmarks.
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

void bind_session(py::module_& m) {
  py::class_<PyCoreModel>(m, "CoreModel", "A MeshTalk.save file loaded as the C API's model (weights, frame clock).")
      .def_static("from_file", [](const std::filesystem::path& path) {
             const meshtalk::SafetensorsFile file = meshtalk::SafetensorsFile::open(path.string());
             return PyCoreModel{meshtalk::Model::load(file)};
           }, py::arg("path"))
      .def_property_readonly("nbytes", [](const PyCoreModel& c) { return c.m->nbytes(); });
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

}  // namespace

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
  m.def("gumbel_uniform", &meshtalk::counter_uniform, py::arg("seed"), py::arg("t"), py::arg("h"), py::arg("c"),
        "The uniform U(seed, t, h, c) in [0, 1) behind the sampler's Gumbel noise.");
  m.def("bench_gemm", &bench_gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("backend"),
        py::arg("reps") = 10, py::arg("threads") = 1,
        "Seconds per product C[m, n] = A[m, k] W[n, k]^T on random data with backend 'builtin' or 'blas'.");

  py::class_<PyContextWeights>(m, "ContextWeights",
                               "The ContextModel laid out for the sampler (a copy of the weights).")
      .def(py::init([](const py::dict& config, const py::dict& tensors, const std::string& gemm) {
             const meshtalk::ModelConfig c = config_from_dict(config);
             const meshtalk::GemmBackend be = parse_backend(gemm);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyContextWeights{meshtalk::ContextWeights::load(src, c, "context_model.", be)};
           }),
           py::arg("config"), py::arg("tensors"), py::arg("gemm") = "builtin",
           "From float32 arrays keyed like MeshTalk.state_dict() ('context_model.logits.masked_linear.weight', ...) "
           "and a config {heads, classes, n_vertices, context_hidden, audio_dim[, dilations]}. gemm: 'builtin' "
           "(our kernel: faster, and results independent of batch composition) or 'blas' (OpenBLAS, to compare).")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyContextWeights{meshtalk::ContextWeights::load(src, c, "context_model.", be)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", "From a file written by MeshTalk.save.")
      .def_property_readonly("config", [](const PyContextWeights& w) { return config_dict(w.w->config); })
      .def_property_readonly("nbytes", [](const PyContextWeights& w) { return w.w->nbytes(); })
      .def_property_readonly("gemm", [](const PyContextWeights& w) {
        return std::string(meshtalk::gemm_backend_name(w.w->backend));
      });

  py::class_<PyDecoderWeights>(m, "DecoderWeights", "The VertexUnet laid out for the decoder (a copy of the weights).")
      .def(py::init([](const py::dict& config, const py::dict& tensors, const std::string& gemm) {
             const meshtalk::ModelConfig c = config_from_dict(config);
             const meshtalk::GemmBackend be = parse_backend(gemm);
             std::vector<py::object> keep;
             const meshtalk::BufferSource src = buffer_source(tensors, &keep);
             py::gil_scoped_release release;
             return PyDecoderWeights{meshtalk::DecoderWeights::load(src, c, be)};
           }),
           py::arg("config"), py::arg("tensors"), py::arg("gemm") = "builtin",
           "From float32 arrays keyed like MeshTalk.state_dict() ('vertex_unet.fusion.weight', ...) and a config. "
           "gemm: 'builtin' (our kernel, the faster one measured) or 'blas' (OpenBLAS, when linked in).")
      .def_static("from_file", [](const std::filesystem::path& path, const std::string& gemm) {
             const meshtalk::GemmBackend be = parse_backend(gemm);
             return load_from_file(path, [&](const meshtalk::TensorSource& src, const meshtalk::ModelConfig& c) {
               return PyDecoderWeights{meshtalk::DecoderWeights::load(src, c, be)};
             });
           }, py::arg("path"), py::arg("gemm") = "builtin", "From a file written by MeshTalk.save.")
      .def_property_readonly("config", [](const PyDecoderWeights& w) { return config_dict(w.w->config); })
      .def_property_readonly("nbytes", [](const PyDecoderWeights& w) { return w.w->nbytes(); })
      .def_property_readonly("gemm", [](const PyDecoderWeights& w) {
        return std::string(meshtalk::gemm_backend_name(w.w->backend));
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
}
