// meshtalk_fast._core: the only pybind11 file. It checks arguments, converts arrays and calls the
// core with the GIL released; all the logic lives in csrc/core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "meshtalk/safetensors.hpp"
#include "meshtalk/status.hpp"

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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "meshtalk_fast._core: the C++ core of meshtalk_fast (no torch inside).\n\n"
      "SafetensorsFile / read_safetensors: a strict safetensors reader that validates the header, "
      "every shape and every byte range before reading data. Malformed contents raise ValueError, "
      "an unreadable path OSError (FileNotFoundError when missing), a missing tensor KeyError.";

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
}
