// The C API's model part (meshtalk.h, csrc/core/capi.cpp, model.cpp) on model files written here
// (model_writer.hpp): loading from a file and from memory, the info getters, and that every bad
// argument and every malformed, truncated or hostile file is refused with a status and a message
// naming the problem (never a crash: this binary also runs under ASan + UBSan).
//
//   test_capi [NAME...]                          the tests whose name contains a NAME (all by default)
//   test_capi --model PATH KEY=VALUE...          check a model file written by Python (tests/test_capi.py)
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "meshtalk/meshtalk.h"
#include "meshtalk/model.hpp"
#include "model_writer.hpp"

using meshtalk_test::ModelSpec;
using meshtalk_test::TensorSpec;

namespace {

// A folder for this process's files, removed at exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::to_string(reinterpret_cast<uintptr_t>(this)) + "_" + std::to_string(counter++) + "_" +
                       std::to_string(std::rand());
    path = std::filesystem::temp_directory_path() / ("meshtalk_test_capi_" + stamp);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path / name).string();
    meshtalk_test::write_bytes(p, bytes);
    return p;
  }
};

const TempDir& temp() {
  static TempDir dir;
  return dir;
}

std::string last_error() { return mt_last_error(); }

// Loads from memory; returns the status and frees the model, checking the handle contract.
mt_status load_status(const std::vector<uint8_t>& bytes) {
  mt_model* model = reinterpret_cast<mt_model*>(&model);  // not NULL: must be reset on failure
  const mt_status st = mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model);
  CHECK((st == MT_OK) == (model != nullptr));
  CHECK((st == MT_OK) == last_error().empty());
  mt_model_free(model);
  return st;
}

// Expects `bytes` to be refused with `status` and a message containing each of `parts`.
void expect_refused(const std::vector<uint8_t>& bytes, mt_status status, const std::vector<std::string>& parts) {
  const mt_status st = load_status(bytes);
  CHECK_EQ(std::string(mt_status_string(st)), std::string(mt_status_string(status)));
  const std::string message = last_error();
  CHECK_CONTAINS(message, "mt_model_load_from_memory: ");
  for (const std::string& part : parts) CHECK_CONTAINS(message, part);
}

std::vector<uint8_t> with_config(const ModelSpec& spec, const std::string& config) {
  auto meta = meshtalk_test::model_metadata(spec);
  meta["config"] = config;
  return meshtalk_test::safetensors_image(meshtalk_test::model_tensors(spec), meta);
}

// The spec's config JSON with `"key": <old>` replaced by `"key": value`.
std::string config_with(const ModelSpec& spec, const std::string& key, const std::string& value) {
  std::string json = meshtalk_test::config_json(spec);
  const size_t at = json.find("\"" + key + "\": ");
  const size_t start = at + key.size() + 4;
  const size_t end = json.find_first_of(",}", start);
  return json.substr(0, start) + value + json.substr(end);
}

ModelSpec core_f16() {
  ModelSpec s;
  s.dtype = "F16";
  s.core_only = true;
  return s;
}

mt_model_info info_of(const mt_model* model) {
  mt_model_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK_EQ(mt_model_get_info(model, &info), MT_OK);
  return info;
}

// Frames of n samples counted as audio.py's audio_windows makes them: one per window centre in
// range(8000, n + 2 * pad - 8000, spf) (released clock), or per whole frame period (exact clock).
int64_t count_frames(int64_t n, int64_t fps, bool exact) {
  int64_t count = 0;
  if (exact) {
    while ((count + 1) * 16000 <= n * fps) ++count;
    return count;
  }
  const int64_t spf = 16000 / fps, pad = (16000 - spf) / 2;
  for (int64_t c = 8000; c < n + 2 * pad - 8000; c += spf) ++count;
  return count;
}

}  // namespace

// ------------------------------------------------------------------------------------------- basics

TEST(versions_and_status_strings) {
  CHECK_EQ(std::string(mt_version()), std::string(MESHTALK_TEST_VERSION));
  CHECK_EQ(mt_api_version(), MT_API_VERSION);
  std::vector<std::string> names;
  for (int s = MT_OK; s <= MT_ERR_INTERNAL; ++s) {
    const std::string name = mt_status_string(static_cast<mt_status>(s));
    CHECK(!name.empty() && name != "unknown status");
    CHECK(std::find(names.begin(), names.end(), name) == names.end());
    names.push_back(name);
  }
  CHECK_EQ(std::string(mt_status_string(MT_OK)), std::string("ok"));
  CHECK_EQ(std::string(mt_status_string(static_cast<mt_status>(77))), std::string("unknown status"));
  CHECK_EQ(std::string(mt_status_string(static_cast<mt_status>(-1))), std::string("unknown status"));
}

TEST(default_params) {
  const mt_model_params m = mt_model_default_params();
  CHECK_EQ(m.struct_size, sizeof(mt_model_params));
  CHECK_EQ(m.gemm, MT_GEMM_BUILTIN);
  const mt_session_params s = mt_session_default_params();
  CHECK_EQ(s.struct_size, sizeof(mt_session_params));
  CHECK(s.argmax == 0 && s.seed == 0 && s.smoothing == 0 && s.smoothing_delay == 4 && s.threads == 1);
  CHECK(s.template_vertices == nullptr && s.template_size == 0);
  CHECK(s.forehead_mask == nullptr && s.neck_mask == nullptr && s.mask_size == 0);
  const mt_batch_params b = mt_batch_default_params();
  CHECK_EQ(b.struct_size, sizeof(mt_batch_params));
  CHECK_EQ(b.threads, 0);
}

// ------------------------------------------------------------------------------------------- loading

TEST(load_file_and_memory_agree_on_info) {
  ModelSpec spec;  // every tensor MeshTalk.save writes, F32
  spec.n_vertices = 7;
  spec.heads = 3;
  spec.classes = 5;
  spec.audio_dim = 6;
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  const std::string path = temp().file("full.safetensors", bytes);
  mt_model* a = nullptr;
  mt_model* b = nullptr;
  CHECK_EQ(mt_model_load(path.c_str(), nullptr, &a), MT_OK);
  CHECK_EQ(last_error(), std::string());
  mt_model_params params = mt_model_default_params();
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &b), MT_OK);
  CHECK(a != nullptr && b != nullptr);
  if (!a || !b) return;
  const mt_model_info ia = info_of(a), ib = info_of(b);
  CHECK_EQ(std::memcmp(&ia, &ib, sizeof ia), 0);
  CHECK_EQ(ia.struct_size, sizeof(mt_model_info));
  CHECK_EQ(ia.sample_rate, 16000);
  CHECK_EQ(ia.n_vertices, 7);
  CHECK_EQ(ia.heads, 3);
  CHECK_EQ(ia.classes, 5);
  CHECK_EQ(ia.audio_dim, 6);
  CHECK_EQ(ia.fps, 30);
  CHECK_EQ(ia.clock, MT_CLOCK_RELEASED);
  CHECK_EQ(ia.framing, MT_FRAMING_WINDOW);
  CHECK_EQ(ia.gemm, MT_GEMM_BUILTIN);
  CHECK_EQ(ia.window_samples, 16000);
  CHECK_EQ(ia.lookahead_samples, 8000);
  CHECK_EQ(ia.latency_samples, 8000 + 534);  // one frame: 16000 / 30 = 533.3 samples, rounded up
  // At least the decoder's float32 weights: V3 -> 512 -> 256 -> 128, the LSTM, 128 -> 256 -> 512 -> V3.
  const uint64_t decoder_floats = 21 * 512 + 512 * 256 + 256 * 128 + 4 * 512 * 128 + 128 * 256 + 256 * 512 + 512 * 21;
  CHECK(ia.weight_bytes >= 4 * decoder_floats);
  mt_model_free(a);
  mt_model_free(b);
  mt_model_free(nullptr);  // ignored
}

TEST(float_dtypes_and_core_only_files_load) {
  for (const char* dtype : {"F32", "F16", "BF16", "F8_E4M3"}) {
    ModelSpec spec;
    spec.dtype = dtype;
    spec.core_only = true;
    CHECK_EQ(load_status(meshtalk_test::model_image(spec)), MT_OK);
  }
}

TEST(config_clock_framing_fps_lookahead) {
  ModelSpec spec = core_f16();
  spec.clock = "exact";
  spec.framing = "stream";
  spec.fps = 25;
  spec.lookahead = 4000;
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  const mt_model_info info = info_of(model);
  CHECK_EQ(info.clock, MT_CLOCK_EXACT);
  CHECK_EQ(info.framing, MT_FRAMING_STREAM);
  CHECK_EQ(info.fps, 25);
  CHECK_EQ(info.lookahead_samples, 4000);
  CHECK_EQ(info.latency_samples, 4000 + 640);
  int64_t frames = -1;
  CHECK_EQ(mt_model_num_frames(model, 16000, &frames), MT_OK);
  CHECK_EQ(frames, 25);
  mt_model_free(model);
}

TEST(num_frames_counts_the_windows) {
  for (int64_t fps : {30, 25, 60, 7, 16000}) {
    for (const char* clock : {"released", "exact"}) {
      ModelSpec spec = core_f16();
      spec.fps = fps;
      spec.clock = clock;
      const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
      mt_model* model = nullptr;
      CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
      if (!model) continue;
      const bool exact = std::string(clock) == "exact";
      for (int64_t n : {0, 1, 532, 533, 534, 1066, 1067, 15999, 16000, 16001, 48000, 48533, 160000, 160001}) {
        int64_t frames = -1;
        CHECK_EQ(mt_model_num_frames(model, n, &frames), MT_OK);
        CHECK_EQ(frames, count_frames(n, fps, exact));
      }
      int64_t frames = -1;
      CHECK_EQ(mt_model_num_frames(model, int64_t(1) << 40, &frames), MT_OK);  // the largest allowed
      CHECK(frames > 0);
      CHECK_EQ(mt_model_num_frames(model, (int64_t(1) << 40) + 1, &frames), MT_ERR_INVALID_ARGUMENT);
      CHECK_CONTAINS(last_error(), "n_samples: expected a sample count in [0, 2^40], found 1099511627777");
      CHECK_EQ(mt_model_num_frames(model, -1, &frames), MT_ERR_INVALID_ARGUMENT);
      mt_model_free(model);
    }
  }
}

TEST(frame_clock_centres_match_the_frame_count) {
  // Released clock: audio_windows takes window k = padded[c - 8000 : c + 8000] for the centres
  // c in range(8000, n + 2 * pad - 8000, spf) of the padded signal, so centre(k) = c - pad and frame k
  // exists iff centre(k) + 8000 < n + pad. Exact clock: centre(k) is (k + 1/2) periods rounded, and
  // frame k exists iff its whole period has arrived.
  for (int64_t fps : {30, 25, 60, 7}) {
    meshtalk::FrameClock c;
    c.fps = fps;
    c.clock = meshtalk::Clock::kReleased;
    const int64_t spf = 16000 / fps, pad = (16000 - spf) / 2;
    CHECK_EQ(c.centre(0), 8000 - pad);
    for (int64_t k = 0; k < 50; ++k) CHECK_EQ(c.centre(k + 1) - c.centre(k), spf);
    for (int64_t n : {0, 1, 533, 534, 9000, 16000, 40000}) {
      int64_t exist = 0;
      while (c.centre(exist) + 8000 < n + pad) ++exist;
      CHECK_EQ(c.num_frames(n), exist);
    }
    c.clock = meshtalk::Clock::kExact;
    for (int64_t k = 0; k < 50; ++k) {
      const int64_t twice = 2 * c.centre(k) * fps, ideal = (2 * k + 1) * 16000;  // both x 2 fps
      CHECK(twice >= ideal - fps && twice <= ideal + fps);
    }
    for (int64_t n : {0, 1, 533, 534, 9000, 16000, 40000}) {
      int64_t exist = 0;
      while ((exist + 1) * 16000 <= n * fps) ++exist;
      CHECK_EQ(c.num_frames(n), exist);
    }
  }
}

TEST(latency_samples) {
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(core_f16());
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  int64_t latency = -1;
  CHECK_EQ(mt_model_latency_samples(model, nullptr, &latency), MT_OK);
  CHECK_EQ(latency, 8000 + 534);
  mt_session_params p = mt_session_default_params();
  p.smoothing = 1;
  CHECK_EQ(mt_model_latency_samples(model, &p, &latency), MT_OK);
  CHECK_EQ(latency, 8000 + 2667);  // 5 frames = 2666.7 samples
  p.smoothing_delay = 8;
  CHECK_EQ(mt_model_latency_samples(model, &p, &latency), MT_OK);
  CHECK_EQ(latency, 8000 + 4800);  // 9 frames
  p.smoothing_delay = 5;
  CHECK_EQ(mt_model_latency_samples(model, &p, &latency), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "params->smoothing_delay: expected 4 or 8 frames, found 5");
  p.smoothing = 0;  // the delay is not used then
  CHECK_EQ(mt_model_latency_samples(model, &p, &latency), MT_OK);
  CHECK_EQ(latency, 8000 + 534);
  p.struct_size = 8;
  CHECK_EQ(mt_model_latency_samples(model, &p, &latency), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "params->struct_size: expected " + std::to_string(sizeof(mt_session_params)) +
                                   ", found 8");
  mt_model_free(model);
}

// The 600 ms audio context (config audio_context_ms = 600): a 9600-sample window, look-ahead 300 ms
// centred; the latency is the look-ahead plus the frames, as for 1 s. The caller may require a context
// (mt_model_params.audio_context_ms): the other one is refused naming both.
TEST(audio_context_600ms_window_latency_and_mismatch) {
  ModelSpec spec = core_f16();
  spec.audio_context_ms = 600;
  spec.lookahead = 4800;
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(spec);
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  const mt_model_info info = info_of(model);
  CHECK_EQ(info.window_samples, 9600);
  CHECK_EQ(info.lookahead_samples, 4800);
  CHECK_EQ(info.latency_samples, 4800 + 534);  // 300 ms + one frame
  int64_t latency = -1;
  CHECK_EQ(mt_model_latency_samples(model, nullptr, &latency), MT_OK);
  CHECK_EQ(latency, 4800 + 534);
  mt_session_params sp = mt_session_default_params();
  sp.smoothing = 1;
  CHECK_EQ(mt_model_latency_samples(model, &sp, &latency), MT_OK);
  CHECK_EQ(latency, 4800 + 2667);
  mt_model_free(model);
  model = nullptr;

  mt_model_params params = mt_model_default_params();
  CHECK_EQ(params.audio_context_ms, 0);
  params.audio_context_ms = 600;  // asked for what the file has
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &model), MT_OK);
  mt_model_free(model);
  params.audio_context_ms = 1000;  // asked for the released context: refused, naming both
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK(model == nullptr);
  CHECK_CONTAINS(last_error(), "audio context mismatch: expected audio_context_ms=1000 (asked for), found 600 ms "
                               "in the model file's config");
  const std::vector<uint8_t> released = meshtalk_test::model_image(core_f16());
  params.audio_context_ms = 600;
  CHECK_EQ(mt_model_load_from_memory(released.data(), released.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "expected audio_context_ms=600 (asked for), found 1000 ms");
  params.audio_context_ms = 700;
  CHECK_EQ(mt_model_load_from_memory(released.data(), released.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "params->audio_context_ms: expected 0 (the file's), 1000 or 600, found 700");
  params.audio_context_ms = 600;
  params.struct_size = 12;  // the header before audio_context_ms: the file's context is accepted
  CHECK_EQ(mt_model_load_from_memory(released.data(), released.size(), &params, &model), MT_OK);
  mt_model_free(model);
  // A file without the key (written before the option) is a 1 s model; a context the core does not
  // know, or a look-ahead beyond the 600 ms window, is a bad file.
  std::string no_key = meshtalk_test::config_json(core_f16());
  no_key.replace(no_key.find("\"audio_context_ms\": 1000, "), 26, "");
  CHECK_EQ(load_status(with_config(core_f16(), no_key)), MT_OK);
  expect_refused(with_config(spec, config_with(spec, "audio_context_ms", "500")), MT_ERR_INVALID_FORMAT,
                 {"config audio_context_ms: expected 1000 or 600 (ms of audio per frame), found 500"});
  expect_refused(with_config(spec, config_with(spec, "lookahead", "9601")), MT_ERR_INVALID_FORMAT,
                 {"config lookahead: expected an integer in [0, 9600] samples, found 9601"});
}

// ------------------------------------------------------------------------------------------- arguments

TEST(null_and_bad_arguments_are_named) {
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(core_f16());
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load(nullptr, nullptr, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_EQ(last_error(), std::string("mt_model_load: path: expected a NUL-terminated file name, found NULL"));
  CHECK_EQ(mt_model_load("x.safetensors", nullptr, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_load: out_model: expected a pointer to receive the model, found NULL");
  CHECK_EQ(mt_model_load_from_memory(nullptr, 10, nullptr, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_load_from_memory: data: expected a buffer of `size` bytes, found NULL");
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "out_model");
  CHECK_EQ(mt_model_load_from_memory(nullptr, 0, nullptr, &model), MT_ERR_INVALID_FORMAT);  // an empty file
  CHECK_CONTAINS(last_error(), "file is 0 bytes, expected at least 8");
  CHECK(model == nullptr);

  mt_model_params params = mt_model_default_params();
  params.struct_size = 4;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "params->struct_size: expected " + std::to_string(sizeof(mt_model_params)) +
                                   ", found 4");
  params = mt_model_default_params();
  params.gemm = 7;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "params->gemm: expected MT_GEMM_BUILTIN (0) or MT_GEMM_BLAS (1), found 7");
  params.gemm = MT_GEMM_BLAS;  // the tests link the installed core, which has no BLAS
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), &params, &model), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "built without BLAS");
  CHECK(model == nullptr);

  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  mt_model_info info;
  std::memset(&info, 0, sizeof info);
  CHECK_EQ(mt_model_get_info(nullptr, &info), MT_ERR_INVALID_ARGUMENT);
  CHECK_EQ(last_error(), std::string("mt_model_get_info: model: expected an mt_model handle from mt_model_load, "
                                     "found NULL"));
  CHECK_EQ(mt_model_get_info(model, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_get_info: info: expected an mt_model_info with struct_size set, found NULL");
  CHECK_EQ(mt_model_get_info(model, &info), MT_ERR_INVALID_ARGUMENT);  // struct_size 0
  CHECK_CONTAINS(last_error(), "info->struct_size: expected " + std::to_string(sizeof(mt_model_info)) + ", found 0");
  CHECK_EQ(info.n_vertices, 0);  // nothing written on failure
  int64_t n = 0;
  CHECK_EQ(mt_model_num_frames(nullptr, 100, &n), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_num_frames: model: expected");
  CHECK_EQ(mt_model_num_frames(model, 100, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_num_frames: out_frames: expected");
  CHECK_EQ(mt_model_latency_samples(nullptr, nullptr, &n), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_latency_samples: model: expected");
  CHECK_EQ(mt_model_latency_samples(model, nullptr, nullptr), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "mt_model_latency_samples: out_samples: expected");

  // A pointer to memory that is not a model handle.
  alignas(64) unsigned char junk[256] = {0};
  CHECK_EQ(mt_model_num_frames(reinterpret_cast<const mt_model*>(junk), 100, &n), MT_ERR_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "model: expected a live mt_model handle");
  mt_model_free(model);
}

// ------------------------------------------------------------------------------------------- files

TEST(missing_file_folder_and_device) {
  mt_model* model = nullptr;
  const std::string missing = (temp().path / "absent.safetensors").string();
  CHECK_EQ(mt_model_load(missing.c_str(), nullptr, &model), MT_ERR_FILE_NOT_FOUND);
  CHECK_CONTAINS(last_error(), "mt_model_load: safetensors '" + missing + "': no such file");
  CHECK_EQ(mt_model_load(temp().path.string().c_str(), nullptr, &model), MT_ERR_IO);
  CHECK_CONTAINS(last_error(), "is a directory");
  CHECK_EQ(mt_model_load("/dev/zero", nullptr, &model), MT_ERR_IO);
  CHECK_CONTAINS(last_error(), "not a regular file");
  CHECK(model == nullptr);
}

TEST(truncated_files_are_refused) {
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(core_f16());
  uint64_t header = 0;
  for (int k = 0; k < 8; ++k) header |= uint64_t(bytes[k]) << (8 * k);
  const size_t end = 8 + static_cast<size_t>(header);
  for (size_t cut : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), end / 2, end - 1, end, end + 1,
                     end + 1000, bytes.size() / 2, bytes.size() - 1}) {
    const std::vector<uint8_t> part(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    const mt_status st = load_status(part);
    CHECK_EQ(st, MT_ERR_INVALID_FORMAT);
    const std::string m = last_error();
    CHECK(m.find("expected at least 8") != std::string::npos || m.find("is the file truncated?") != std::string::npos);
  }
  // The same through a file: the message names the path.
  const std::vector<uint8_t> part(bytes.begin(), bytes.end() - 3);
  const std::string path = temp().file("truncated.safetensors", part);
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load(path.c_str(), nullptr, &model), MT_ERR_INVALID_FORMAT);
  CHECK_CONTAINS(last_error(), "safetensors '" + path + "'");
  CHECK_CONTAINS(last_error(), "past the end of the data section");
  CHECK(model == nullptr);
}

TEST(hostile_headers_are_refused) {
  auto blob = [](const std::string& header, size_t data, uint64_t length = UINT64_MAX) {
    const uint64_t n = length == UINT64_MAX ? header.size() : length;
    std::vector<uint8_t> out;
    for (int k = 0; k < 8; ++k) out.push_back(static_cast<uint8_t>(n >> (8 * k)));
    out.insert(out.end(), header.begin(), header.end());
    out.resize(out.size() + data, 0);
    return out;
  };
  const mt_status bad = MT_ERR_INVALID_FORMAT;
  expect_refused(blob("{}", 0, uint64_t(1) << 63), bad, {"header length 9223372036854775808 exceeds"});
  expect_refused(blob("{}", 64, UINT64_MAX - 1), bad, {"header length 18446744073709551614 exceeds"});
  expect_refused(blob("", 0), bad, {"invalid JSON header at byte 0"});
  expect_refused(blob("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
                      "\"data_offsets\": [0, 16]}}", 16),
                 bad, {"overflows 64 bits"});
  expect_refused(blob("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [18446744073709551608, "
                      "18446744073709551615]}}", 16),
                 bad, {"tensor 'a'"});
  expect_refused(blob("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, "
                      "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16),
                 bad, {"overlap"});
  expect_refused(blob("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 12), bad,
                 {"past the end of the data section"});
  expect_refused(blob(std::string(200, '['), 0), bad, {"invalid JSON header"});
  // A valid safetensors file that MeshTalk.save did not write.
  expect_refused(meshtalk_test::safetensors_image({{"a", {2, 2}, "F32"}}, {}), bad,
                 {"metadata 'format': expected \"meshtalk_fast\"", "found none"});
}

TEST(bad_metadata_and_config_are_refused) {
  const ModelSpec spec = core_f16();
  const mt_status bad = MT_ERR_INVALID_FORMAT;
  auto meta_image = [&](const std::string& key, const std::string& value) {
    auto meta = meshtalk_test::model_metadata(spec);
    meta[key] = value;
    return meshtalk_test::safetensors_image(meshtalk_test::model_tensors(spec), meta);
  };
  expect_refused(meta_image("format", "pt"), bad, {"metadata 'format': expected \"meshtalk_fast\"", "found \"pt\""});
  expect_refused(meta_image("format_version", "2"), bad, {"metadata 'format_version': expected \"1\"", "found \"2\""});
  expect_refused(with_config(spec, "{"), bad, {"metadata 'config' is not a flat JSON object"});
  expect_refused(with_config(spec, "[1, 2]"), bad, {"metadata 'config' is not a flat JSON object"});
  expect_refused(with_config(spec, "{\"heads\": {\"x\": 1}}"), bad, {"metadata 'config' is not a flat JSON object"});
  expect_refused(with_config(spec, "{}"), bad, {"metadata 'config' has no 'heads'"});
  std::string no_fps = meshtalk_test::config_json(spec);
  no_fps.replace(no_fps.find("\"fps\": 30, "), 11, "");
  expect_refused(with_config(spec, no_fps), bad, {"metadata 'config' has no 'fps'"});
  expect_refused(with_config(spec, config_with(spec, "heads", "-3")), bad,
                 {"entry 'heads': expected a non-negative integer, found -3"});
  expect_refused(with_config(spec, config_with(spec, "heads", "\"3\"")), bad, {"entry 'heads'"});
  expect_refused(with_config(spec, config_with(spec, "heads", "0")), bad,
                 {"config heads: expected an integer in [1, 1048576], found 0"});
  expect_refused(with_config(spec, config_with(spec, "n_vertices", "99999999")), bad, {"config n_vertices"});
  expect_refused(with_config(spec, config_with(spec, "heads", "999999999999999999999")), bad, {"entry 'heads'"});
  expect_refused(with_config(spec, config_with(spec, "classes", "1048576")), bad, {"heads * classes"});
  expect_refused(with_config(spec, config_with(spec, "fps", "0")), bad, {"config fps: expected an integer in [1, 16000], found 0"});
  expect_refused(with_config(spec, config_with(spec, "fps", "16001")), bad, {"config fps"});
  expect_refused(with_config(spec, config_with(spec, "lookahead", "16001")), bad,
                 {"config lookahead: expected an integer in [0, 16000] samples, found 16001"});
  expect_refused(with_config(spec, config_with(spec, "fps", "30.5")), bad, {"entry 'fps'"});
  expect_refused(with_config(spec, config_with(spec, "clock", "\"fast\"")), bad,
                 {"'clock': expected \"released\" or \"exact\", found \"fast\""});
  expect_refused(with_config(spec, config_with(spec, "clock", "1")), bad, {"entry 'clock': expected a string, found 1"});
  expect_refused(with_config(spec, config_with(spec, "framing", "\"both\"")), bad,
                 {"'framing': expected \"window\" or \"stream\", found \"both\""});
  // The config disagrees with the tensors.
  expect_refused(with_config(spec, config_with(spec, "n_vertices", "6")), bad,
                 {"'vertex_unet.mean': expected shape [1, 1, 6, 3], found [1, 1, 5, 3]"});
  expect_refused(with_config(spec, config_with(spec, "heads", "4")), bad, {"context_model."});
}

TEST(bad_tensors_are_refused) {
  const ModelSpec spec = core_f16();
  const auto meta = meshtalk_test::model_metadata(spec);
  auto image = [&](const std::vector<TensorSpec>& t) { return meshtalk_test::safetensors_image(t, meta); };
  std::vector<TensorSpec> t = meshtalk_test::model_tensors(spec);
  auto find = [&](std::vector<TensorSpec>& v, const std::string& name) -> TensorSpec& {
    return *std::find_if(v.begin(), v.end(), [&](const TensorSpec& x) { return x.name == name; });
  };
  {
    auto v = t;
    v.erase(std::find_if(v.begin(), v.end(), [](const TensorSpec& x) { return x.name == "vertex_unet.fusion.bias"; }));
    expect_refused(image(v), MT_ERR_KEY_NOT_FOUND, {"missing tensor 'vertex_unet.fusion.bias'"});
  }
  {
    auto v = t;
    find(v, "vertex_unet.decoder.1.weight").shape = {256, 512};
    expect_refused(image(v), MT_ERR_INVALID_FORMAT,
                   {"'vertex_unet.decoder.1.weight': expected shape [512, 256], found [256, 512]"});
  }
  {
    auto v = t;
    find(v, "context_model.context_layers.2.historic.weight").shape = {6, 6, 1};
    expect_refused(image(v), MT_ERR_INVALID_FORMAT, {"context_layers.2.historic.weight': expected shape [6, 6, 2]"});
  }
  {
    auto v = t;
    find(v, "vertex_unet.vertex_bias").dtype = "I32";
    expect_refused(image(v), MT_ERR_INVALID_FORMAT,
                   {"tensor 'vertex_unet.vertex_bias': expected a floating-point dtype", "found I32"});
  }
  {
    auto v = t;
    v.push_back({"context_model.context_layers.4.historic.weight", {6, 6, 2}, "F16"});
    expect_refused(image(v), MT_ERR_INVALID_FORMAT,
                   {"unexpected tensor 'context_model.context_layers.4.historic.weight'", "runs 4 context layers"});
  }
  {
    auto v = t;
    v.push_back({"context_model.context_layers.x", {1}, "F16"});
    expect_refused(image(v), MT_ERR_INVALID_FORMAT, {"unexpected tensor 'context_model.context_layers.x'"});
  }
  {  // keys the core does not read are fine (the encoder, or anything else)
    auto v = t;
    v.push_back({"something.else", {3}, "I32"});
    CHECK_EQ(load_status(image(v)), MT_OK);
  }
}

// Element `index` of the float32 tensor `name` in a safetensors image set to `value` (little-endian host).
void poke_f32(std::vector<uint8_t>* bytes, const std::string& name, size_t index, float value) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t((*bytes)[i]) << (8 * i);
  const std::string header(bytes->begin() + 8, bytes->begin() + 8 + static_cast<std::ptrdiff_t>(n));
  size_t at = header.find("\"" + name + "\"");
  CHECK(at != std::string::npos);
  at = header.find('[', header.find("\"data_offsets\"", at)) + 1;
  const uint64_t begin = std::stoull(header.substr(at));
  std::memcpy(bytes->data() + 8 + n + begin + 4 * index, &value, sizeof value);
}

TEST(non_finite_weights_are_refused) {
  ModelSpec spec;
  spec.core_only = true;
  const std::vector<uint8_t> good = meshtalk_test::model_image(spec);
  CHECK_EQ(load_status(good), MT_OK);
  const float bad[2] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()};
  for (float value : bad) {
    for (const char* name : {"vertex_unet.decoder.2.weight", "context_model.logits.masked_linear.bias",
                             "encoder.audio_encoder.code.weight"}) {
      std::vector<uint8_t> bytes = good;
      poke_f32(&bytes, name, 3, value);
      expect_refused(bytes, MT_ERR_INVALID_FORMAT, {std::string("tensor '") + name + "' holds a non-finite weight",
                                                    "at flat index 3", "expected finite values"});
    }
  }
}

TEST(random_corruptions_never_crash) {
  // A few hundred seeded corruptions of a valid file: each loads or is refused with a message.
  // (The fuzz target csrc/fuzz/fuzz_loader.cpp does this at length.)
  ModelSpec spec;
  spec.dtype = "F8_E4M3";
  spec.core_only = true;
  const std::vector<uint8_t> base = meshtalk_test::model_image(spec);
  uint64_t header = 0;
  for (int k = 0; k < 8; ++k) header |= uint64_t(base[k]) << (8 * k);
  uint64_t state = 12345;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int loaded = 0, refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> b = base;
    const int edits = 1 + static_cast<int>(next() % 3);
    for (int e = 0; e < edits; ++e) {
      const uint64_t op = next() % 10;
      const size_t at = static_cast<size_t>(next() % (8 + header));  // mostly the header
      if (op < 6) b[at] = static_cast<uint8_t>(next());
      else if (op < 8) b.erase(b.begin() + static_cast<std::ptrdiff_t>(at));
      else b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(next()));
    }
    const mt_status st = load_status(b);
    if (st == MT_OK) ++loaded;
    else ++refused;
    CHECK(st == MT_OK || st == MT_ERR_INVALID_FORMAT || st == MT_ERR_KEY_NOT_FOUND);
  }
  CHECK(refused > 0);
  std::printf("  corruptions: %d loaded, %d refused\n", loaded, refused);
}

// ------------------------------------------------------------------------------------------- errors

TEST(error_text_is_per_thread) {
  const std::vector<uint8_t> good = meshtalk_test::model_image(core_f16());
  std::vector<uint8_t> truncated(good.begin(), good.begin() + 100);
  // This thread's error survives the other threads' successes and failures.
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load(nullptr, nullptr, &model), MT_ERR_INVALID_ARGUMENT);
  const std::string mine = last_error();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      if (mt_last_error()[0] != '\0') ++wrong;  // a new thread starts with no error
      for (int i = 0; i < 6; ++i) {
        mt_model* m = nullptr;
        const bool fail = (i + t) % 2 == 0;
        const std::vector<uint8_t>& bytes = fail ? truncated : good;
        const mt_status st = mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &m);
        const std::string text = mt_last_error();
        if (fail != (st == MT_ERR_INVALID_FORMAT) || fail == text.empty()) ++wrong;
        if (fail && text.find("is the file truncated?") == std::string::npos) ++wrong;
        mt_model_free(m);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  CHECK_EQ(wrong.load(), 0);
  CHECK_EQ(last_error(), mine);
  // A success clears it.
  int64_t frames = 0;
  CHECK_EQ(mt_model_load_from_memory(good.data(), good.size(), nullptr, &model), MT_OK);
  CHECK_EQ(last_error(), std::string());
  CHECK_EQ(mt_model_num_frames(model, -5, &frames), MT_ERR_INVALID_ARGUMENT);
  CHECK(!last_error().empty());
  CHECK_EQ(mt_model_num_frames(model, 5, &frames), MT_OK);
  CHECK_EQ(last_error(), std::string());
  mt_model_free(model);
}

TEST(one_model_many_threads) {
  // A model is immutable: concurrent queries from many threads see the same answers.
  const std::vector<uint8_t> bytes = meshtalk_test::model_image(core_f16());
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load_from_memory(bytes.data(), bytes.size(), nullptr, &model), MT_OK);
  if (!model) return;
  const mt_model_info expected = info_of(model);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        mt_model_info info;
        std::memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        int64_t frames = 0;
        if (mt_model_get_info(model, &info) != MT_OK || std::memcmp(&info, &expected, sizeof info) != 0) ++wrong;
        if (mt_model_num_frames(model, 16000 * (i + 1), &frames) != MT_OK || frames != count_frames(16000 * (i + 1), 30, false))
          ++wrong;
      }
    });
  for (std::thread& th : threads) th.join();
  CHECK_EQ(wrong.load(), 0);
  mt_model_free(model);
}

TEST(long_messages_are_cut_on_a_character_boundary) {
  std::string path = (temp().path / "").string();
  for (int i = 0; i < 1500; ++i) path += (i % 100 == 99) ? "\xc3\xa9/" : "\xc3\xa9";  // "é": two bytes each
  path += ".safetensors";
  mt_model* model = nullptr;
  CHECK_EQ(mt_model_load(path.c_str(), nullptr, &model), MT_ERR_FILE_NOT_FOUND);
  const std::string m = last_error();
  CHECK(m.size() <= 2047 && m.size() > 2000);
  CHECK(m.size() >= 3 && m.compare(m.size() - 3, 3, "...") == 0);
  // Every "é" is whole: the byte before "..." ends a character (0xa9, or a '/'), never starts one (0xc3).
  const std::string body = m.substr(0, m.size() - 3);
  const unsigned char last = static_cast<unsigned char>(body.back());
  CHECK(last == 0xa9 || last == '/');
}

// ------------------------------------------------------------------------------------------- Python's files

namespace {

// `test_capi --model PATH KEY=VALUE...`: the info of a model file written by Python equals the
// values Python computed (keys: n_vertices heads classes audio_dim fps clock framing window lookahead
// latency latency4 latency8 frames:N).
int check_python_model(int argc, char** argv) {
  mt_model* model = nullptr;
  if (mt_model_load(argv[2], nullptr, &model) != MT_OK) {
    std::fprintf(stderr, "FAILED: %s\n", mt_last_error());
    return 1;
  }
  const mt_model_info info = info_of(model);
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "bad argument %s (expected KEY=VALUE)\n", argv[i]);
      return 2;
    }
    const std::string key = arg.substr(0, eq), value = arg.substr(eq + 1);
    std::string got;
    if (key == "n_vertices") got = std::to_string(info.n_vertices);
    else if (key == "heads") got = std::to_string(info.heads);
    else if (key == "classes") got = std::to_string(info.classes);
    else if (key == "audio_dim") got = std::to_string(info.audio_dim);
    else if (key == "fps") got = std::to_string(info.fps);
    else if (key == "clock") got = info.clock == MT_CLOCK_EXACT ? "exact" : "released";
    else if (key == "framing") got = info.framing == MT_FRAMING_STREAM ? "stream" : "window";
    else if (key == "window") got = std::to_string(info.window_samples);
    else if (key == "lookahead") got = std::to_string(info.lookahead_samples);
    else if (key == "latency") got = std::to_string(info.latency_samples);
    else if (key == "latency4" || key == "latency8") {
      mt_session_params p = mt_session_default_params();
      p.smoothing = 1;
      p.smoothing_delay = key == "latency4" ? 4 : 8;
      int64_t samples = -1;
      CHECK_EQ(mt_model_latency_samples(model, &p, &samples), MT_OK);
      got = std::to_string(samples);
    } else if (key.compare(0, 7, "frames:") == 0) {
      int64_t frames = -1;
      CHECK_EQ(mt_model_num_frames(model, std::stoll(key.substr(7)), &frames), MT_OK);
      got = std::to_string(frames);
    } else {
      std::fprintf(stderr, "unknown key %s\n", key.c_str());
      return 2;
    }
    if (got != value) meshtalk_test::fail(__FILE__, __LINE__, key + ": expected " + value + ", found " + got);
  }
  mt_model_free(model);
  const int failed = meshtalk_test::failures();
  std::printf("%s: %d checks, %d failed\n", argv[2], argc - 3, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--model") return check_python_model(argc, argv);
  return meshtalk_test::run_all(argc, argv);
}
