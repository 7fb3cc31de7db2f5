// A strict reader for safetensors files, the format the Python side writes weights in.
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (the header), then the data
// section. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the start of the data section) and may hold "__metadata__", a map of
// string -> string.
//
// Everything is validated when the file is opened, before any tensor byte is read: the header
// length, UTF-8, the JSON syntax, dtypes, shapes (checked 64-bit products), that each tensor's
// byte range matches product(shape) * itemsize, lies inside the data section and overlaps no other
// tensor, and that no key appears twice. A failure throws meshtalk::Error (kInvalidFormat) whose
// message names the file, the tensor, what was expected and what was found. Gaps between tensors
// are allowed: they are harmless and never read.
//
// Typical use by a model loader:
//   auto file = meshtalk::SafetensorsFile::open("model.safetensors");
//   std::vector<float> w = file.tensor_f32("context_layers.0.historic.weight", {1024, 1024, 2});
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "meshtalk/status.hpp"

namespace meshtalk {

enum class DType : uint8_t {
  kBool, kU8, kI8, kF8E4M3, kF8E5M2, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kI64, kU64, kF64,
};

const char* dtype_name(DType dtype) noexcept;      // the header spelling: "F32", "BF16", "F8_E4M3"
size_t dtype_size(DType dtype) noexcept;           // bytes per element
bool dtype_is_float(DType dtype) noexcept;         // F8_E4M3, F8_E5M2, F16, BF16, F32, F64
bool parse_dtype(const std::string& name, DType* out) noexcept;  // false for an unknown spelling

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // may be empty (a scalar) or hold zeros (an empty tensor)
  uint64_t numel = 1;          // product(shape)
  uint64_t begin = 0;          // data_offsets, relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const noexcept { return end - begin; }
};

// Bytes of one tensor exactly as stored: little-endian, no alignment guarantee.
struct ByteView {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

class SafetensorsFile {
 public:
  // Reads the whole file into memory and validates it. Throws kFileNotFound, kIo, kInvalidFormat.
  static SafetensorsFile open(const std::string& path);
  // Validates a file image already in memory; `label` stands in for the path in messages.
  static SafetensorsFile from_buffer(std::vector<uint8_t> bytes, std::string label = "<memory>");
  static SafetensorsFile from_memory(const void* data, size_t size,
                                     std::string label = "<memory>");  // copies the bytes

  const std::string& label() const noexcept { return label_; }  // the path, or the label
  size_t size() const noexcept { return tensors_.size(); }      // number of tensors
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted (byte order of the UTF-8 names)
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  // All of these throw kKeyNotFound naming the file and the missing key.
  const TensorInfo& info(const std::string& name) const;
  DType dtype(const std::string& name) const { return info(name).dtype; }
  const std::vector<int64_t>& shape(const std::string& name) const { return info(name).shape; }
  ByteView raw(const std::string& name) const;

  // Throws kInvalidArgument unless the tensor has `expected_shape`; an entry of -1 matches any size.
  void check_shape(const std::string& name, const std::vector<int64_t>& expected_shape) const;

  // Converts a floating-point tensor (any float dtype) to float32 into dst[0, numel).
  // Throws kInvalidArgument for an integer/bool tensor or when dst_count != numel.
  void read_f32(const std::string& name, float* dst, size_t dst_count) const;
  std::vector<float> tensor_f32(const std::string& name) const;
  // Same, after check_shape(name, expected_shape).
  std::vector<float> tensor_f32(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const;

 private:
  SafetensorsFile() = default;
  void parse();
  const TensorInfo& float_info(const std::string& name) const;  // info(), float dtypes only
  [[noreturn]] void fail(ErrorCode code, const std::string& message) const;

  std::string label_;
  std::vector<uint8_t> bytes_;  // the whole file image
  size_t data_start_ = 0;       // 8 + header length
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace meshtalk
