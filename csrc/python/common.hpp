// Shared by the pybind11 files of csrc/python/: argument checks, numpy conversions, the weight
// handles, and the bind_* functions each file defines. Only csrc/python/ includes pybind11.
#pragma once

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

namespace meshtalk_py {

using meshtalk::DType;
using meshtalk::SafetensorsFile;


// Integer and bool tensors keep their dtype; the byte order is spelled out because safetensors
// data is little-endian whatever the host is.
inline py::dtype numpy_dtype(DType dtype) {
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
inline py::array to_numpy(const SafetensorsFile& file, const std::string& name) {
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

inline SafetensorsFile open_file(const std::filesystem::path& path) {
  const std::string p = path.string();
  py::gil_scoped_release release;
  return SafetensorsFile::open(p);
}

inline void translate_error(const meshtalk::Error& e) {
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

[[noreturn]] inline void bad_argument(const std::string& what, const std::string& expected, const std::string& found) {
  meshtalk::throw_mismatch(what, expected, found);
}

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string describe_dtype(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A float32, C-contiguous, aligned numpy array of `ndim` dimensions (`layout` names them in errors).
inline py::array float_array(const py::handle& obj, const std::string& name, py::ssize_t ndim, const std::string& layout,
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

inline void expect_shape(const py::array& a, const std::string& name, const std::vector<int64_t>& expected) {
  const std::vector<int64_t> found = shape_of(a);
  bool ok = found.size() == expected.size();
  for (size_t i = 0; ok && i < found.size(); ++i) ok = expected[i] < 0 || expected[i] == found[i];
  if (!ok) bad_argument(name + " shape", meshtalk::shape_to_string(expected), meshtalk::shape_to_string(found));
}

// A 1-d integer array (any integer dtype) of `size` entries.
inline py::array integer_array(const py::handle& obj, const std::string& name, int64_t size) {
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
inline std::vector<int64_t> int_vector(const py::handle& obj, const std::string& name, int64_t size) {
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
inline std::vector<uint64_t> seed_vector(const py::handle& obj, int64_t size) {
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

inline meshtalk::GemmBackend parse_backend(const std::string& name) {
  if (name == "builtin") return meshtalk::GemmBackend::kBuiltin;
  if (name == "blas") return meshtalk::GemmBackend::kBlas;
  bad_argument("gemm", "'builtin' or 'blas'", "'" + name + "'");
}

// weights: "f32" (exact, the default) | "bf16" | "int8", as mt_model_params.weights.
inline meshtalk::WeightStorage parse_storage(const std::string& name) {
  if (name == "f32") return meshtalk::WeightStorage::kF32;
  if (name == "bf16") return meshtalk::WeightStorage::kBF16;
  if (name == "int8") return meshtalk::WeightStorage::kInt8;
  bad_argument("weights", "'f32', 'bf16' or 'int8'", "'" + name + "'");
}

inline py::dict config_dict(const meshtalk::ModelConfig& c) {
  py::dict d;
  d["heads"] = c.heads;
  d["classes"] = c.classes;
  d["n_vertices"] = c.n_vertices;
  d["context_hidden"] = c.context_hidden;
  d["audio_dim"] = c.audio_dim;
  d["dilations"] = c.dilations;
  d["prior_head_masks"] = c.inclusive_head_masks ? "inclusive" : "released";
  return d;
}

inline meshtalk::ModelConfig config_from_dict(const py::dict& d) {
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
  if (d.contains("prior_head_masks")) {
    const std::string masks = py::cast<std::string>(d["prior_head_masks"]);
    if (masks != "released" && masks != "inclusive")
      throw py::value_error("config 'prior_head_masks': expected 'released' or 'inclusive', found '" + masks + "'");
    c.inclusive_head_masks = masks == "inclusive";
  }
  c.validate();
  return c;
}

// The buffers of a {name: float32 array} dict; `keep` holds references while the GIL is released.
inline meshtalk::BufferSource buffer_source(const py::dict& tensors, std::vector<py::object>* keep) {
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
inline auto load_from_file(const std::filesystem::path& path, Loader loader) {
  const std::string p = path.string();
  py::gil_scoped_release release;
  const SafetensorsFile file = SafetensorsFile::open(p);
  return loader(meshtalk::FileSource(file), meshtalk::read_model_config(file));
}

inline py::array_t<int32_t> sample_py(const PyContextWeights& weights, const py::handle& audio_code, bool argmax,
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

inline py::array decode_py(const PyDecoderWeights& weights, const py::handle& templ, const py::handle& one_hot,
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

void bind_streaming(py::module_& m);  // bind_streaming.cpp: SamplerState, DecoderState, smoothing
void bind_audio(py::module_& m);      // bind_audio.cpp: log-mel, AudioEncoder, streaming encoders
void bind_session(py::module_& m);    // bind_session.cpp: the C API's session pipeline
void bind_blendshapes(py::module_& m);  // bind_blendshapes.cpp: BlendshapeSolver

}  // namespace meshtalk_py
