// Fuzz target of the model loader: any bytes -> mt_model_load_from_memory (the safetensors reader,
// the metadata and config, every tensor's checks, the weights' preparation), then the safetensors
// reader alone converting every tensor of a file it accepts. Nothing may crash, leak, read out of
// bounds or overflow (the target runs under ASan + UBSan); a refused file must come back as
// MT_ERR_INVALID_FORMAT or MT_ERR_KEY_NOT_FOUND with a message and no model, anything else traps.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "meshtalk/meshtalk.h"
#include "meshtalk/safetensors.hpp"
#include "meshtalk/status.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_loader: %s (last error: \"%s\")\n", what, mt_last_error());
  __builtin_trap();
}

void check_model(const mt_model* model, size_t size) {
  mt_model_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (mt_model_get_info(model, &info) != MT_OK || info.n_vertices < 1 || info.fps < 1) fail("bad model info");
  int64_t frames = -1, latency = -1;
  if (mt_model_num_frames(model, static_cast<int64_t>(size), &frames) != MT_OK || frames < 0) fail("bad num_frames");
  if (mt_model_latency_samples(model, nullptr, &latency) != MT_OK || latency < info.lookahead_samples)
    fail("bad latency");
}

void read_every_tensor(const uint8_t* data, size_t size) {
  try {
    const meshtalk::SafetensorsFile file = meshtalk::SafetensorsFile::from_memory(data, size, "<fuzz>");
    volatile uint8_t sink = 0;
    for (const std::string& name : file.names()) {
      if (meshtalk::dtype_is_float(file.dtype(name))) {
        for (float v : file.tensor_f32(name)) sink = static_cast<uint8_t>(sink + (v == v ? 1 : 0));
      } else {
        const meshtalk::ByteView bytes = file.raw(name);
        for (size_t i = 0; i < bytes.size; ++i) sink = static_cast<uint8_t>(sink + bytes.data[i]);
      }
    }
    (void)sink;
  } catch (const meshtalk::Error&) {
    // refused: fine
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mt_model* model = nullptr;
  const mt_status status = mt_model_load_from_memory(data, size, nullptr, &model);
  if (status == MT_OK) {
    if (model == nullptr || mt_last_error()[0] != '\0') fail("MT_OK without a model, or with an error text");
    check_model(model, size);
    mt_model_free(model);
  } else {
    if (model != nullptr || mt_last_error()[0] == '\0') fail("a failure with a model, or without an error text");
    if (status != MT_ERR_INVALID_FORMAT && status != MT_ERR_KEY_NOT_FOUND)
      fail(mt_status_string(status));  // e.g. MT_ERR_INTERNAL: a bug
  }
  read_every_tensor(data, size);
  return 0;
}
