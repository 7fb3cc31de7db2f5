// Errors of the meshtalk core.
//
// One scheme everywhere: a core function that meets bad input (a malformed file, a wrong shape, a
// missing key) throws meshtalk::Error; it never aborts, asserts or returns garbage. The message
// names the argument or item, what was expected and what was found, e.g.
//   "safetensors 'model.safetensors': tensor 'w': expected shape [1024, 1024, 2], found [1024, 2]"
// The code() lets a binding pick its own error type (the pybind11 module maps kInvalidFormat and
// kInvalidArgument to ValueError, kKeyNotFound to KeyError, kFileNotFound/kIo to OSError), and a C
// API catches Error at its boundary and hands back NULL plus the message.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace meshtalk {

enum class ErrorCode {
  kInvalidArgument,  // the caller passed a bad value: a shape, a size, a null pointer
  kInvalidFormat,    // file or buffer contents are malformed
  kKeyNotFound,      // a named item (e.g. a tensor) does not exist
  kFileNotFound,     // a path does not exist
  kIo,               // the operating system could not open or read a file
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

inline const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kInvalidFormat: return "invalid format";
    case ErrorCode::kKeyNotFound: return "key not found";
    case ErrorCode::kFileNotFound: return "file not found";
    case ErrorCode::kIo: return "I/O error";
  }
  return "unknown error";
}

// "[1024, 1024, 2]"; a negative entry (a wildcard in an expected shape) prints as "*".
inline std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += shape[i] < 0 ? std::string("*") : std::to_string(shape[i]);
  }
  return out + "]";
}

// Throws kInvalidArgument "<what>: expected <expected>, found <found>".
[[noreturn]] inline void throw_mismatch(const std::string& what, const std::string& expected,
                                        const std::string& found) {
  throw Error(ErrorCode::kInvalidArgument, what + ": expected " + expected + ", found " + found);
}

}  // namespace meshtalk
