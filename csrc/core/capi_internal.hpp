// Plumbing shared by the C API's implementation files (capi*.cpp); not installed.
//
// Every entry point is `return guard("mt_x", [&] { ... });`: the body throws on any problem and
// guard() turns the exception into an mt_status and the calling thread's error text
// ("mt_x: <message>"), or clears the text on success. Arguments are checked with require_* before
// anything is touched; messages name the argument, the expected and the found value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "meshtalk/blendshapes.hpp"
#include "meshtalk/meshtalk.h"
#include "meshtalk/model.hpp"
#include "meshtalk/session.hpp"
#include "meshtalk/status.hpp"

// The handle behind mt_model*: the caller's reference to a shared, immutable model.
struct mt_model {
  uint32_t magic = 0;
  std::shared_ptr<const meshtalk::Model> model;
};

// The handle behind mt_blendshape_solver*: the solver and the frame buffer of mt_session_pop_weights.
struct mt_blendshape_solver {
  uint32_t magic = 0;
  std::unique_ptr<meshtalk::BlendshapeSolver> solver;
  std::vector<float> frame;  // [V * 3]
};

namespace meshtalk {
namespace capi {

constexpr uint32_t kModelMagic = 0x4c444f4du;  // "MODL"; cleared when the handle is freed

// An error with a status that has no meshtalk::ErrorCode (buffer too small, invalid state, ...).
class ApiError : public std::exception {
 public:
  ApiError(mt_status status, std::string message) : status_(status), message_(std::move(message)) {}
  mt_status status() const noexcept { return status_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  mt_status status_;
  std::string message_;
};

mt_status status_of(ErrorCode code) noexcept;

// Sets the calling thread's error text to "<function>: <message>" (cut at a UTF-8 character
// boundary when longer than the fixed buffer; never allocates) and returns `status`.
mt_status record_error(mt_status status, const char* function, const char* message) noexcept;
void clear_error() noexcept;

// Runs body(); MT_OK and a cleared error text, or the status and text of what it threw.
template <class Body>
mt_status guard(const char* function, Body&& body) noexcept {
  try {
    body();
    clear_error();
    return MT_OK;
  } catch (const ApiError& e) {
    return record_error(e.status(), function, e.what());
  } catch (const Error& e) {
    return record_error(status_of(e.code()), function, e.what());
  } catch (const StateError& e) {
    return record_error(MT_ERR_INVALID_STATE, function, e.what());
  } catch (const std::bad_alloc&) {
    return record_error(MT_ERR_OUT_OF_MEMORY, function, "out of memory");
  } catch (const std::exception& e) {
    return record_error(MT_ERR_INTERNAL, function, e.what());
  } catch (...) {
    return record_error(MT_ERR_INTERNAL, function, "an exception of unknown type");
  }
}

// Throws MT_ERR_INVALID_ARGUMENT "<name>: expected <what>, found NULL" when p is NULL.
template <class T>
T* require(T* p, const char* name, const char* what = "a non-NULL pointer") {
  if (p == nullptr) throw ApiError(MT_ERR_INVALID_ARGUMENT, std::string(name) + ": expected " + what + ", found NULL");
  return p;
}

// The model behind a handle; refuses NULL and a pointer that is not a live mt_model.
const Model& model_of(const mt_model* model, const char* name = "model");

// The solver behind a handle (capi_blendshapes.cpp); refuses NULL and a pointer that is not a live one.
mt_blendshape_solver& blendshape_solver_of(const mt_blendshape_solver* solver, const char* name = "solver");

// Refuses a parameter/info struct from another header version: struct_size must equal `expected`.
void check_struct_size(uint32_t found, size_t expected, const char* name);

}  // namespace capi
}  // namespace meshtalk
