// mt_write_test_model: writes a model file as MeshTalk.save would (model_writer.hpp), or a set of
// seed files for the fuzzers.
//
//   mt_write_test_model OUT.safetensors [--vertices N] [--heads N] [--classes N] [--hidden N]
//       [--audio-dim N] [--fps N] [--lookahead N] [--clock released|exact] [--framing window|stream]
//       [--dtype F32|F16|BF16|F8_E4M3] [--core-only] [--seed N]
//   mt_write_test_model --seeds DIR
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

#include "model_writer.hpp"

namespace {

using meshtalk_test::ModelSpec;

int usage() {
  std::fprintf(stderr,
               "usage: mt_write_test_model OUT [--vertices N] [--heads N] [--classes N] [--hidden N] [--audio-dim N]\n"
               "         [--fps N] [--lookahead N] [--audio-context-ms 1000|600] [--clock S] [--framing S] [--dtype S]\n"
               "         [--core-only] [--seed N]\n"
               "       mt_write_test_model --seeds DIR\n");
  return 2;
}

void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  ModelSpec small;  // the smallest data section: one byte per weight, only what the core reads
  small.dtype = "F8_E4M3";
  small.core_only = true;
  meshtalk_test::write_bytes(dir + "/model_f8_core.safetensors", meshtalk_test::model_image(small));
  ModelSpec other = small;
  other.dtype = "F16";
  other.heads = 2;
  other.classes = 3;
  other.clock = "exact";
  other.framing = "stream";
  other.fps = 25;
  other.lookahead = 4000;
  meshtalk_test::write_bytes(dir + "/model_f16_exact_stream.safetensors", meshtalk_test::model_image(other));
  // The metadata alone (every tensor missing) and a plain file: short inputs for the header parsers.
  meshtalk_test::write_bytes(dir + "/metadata_only.safetensors",
                             meshtalk_test::safetensors_image({}, meshtalk_test::model_metadata(small)));
  meshtalk_test::write_bytes(
      dir + "/plain.safetensors",
      meshtalk_test::safetensors_image({{"a", {2, 3}, "F32"}, {"b", {4}, "BF16"}, {"c", {}, "I32"}}, {{"k", "v"}}));
  // Call sequences for fuzz_session (csrc/fuzz/fuzz_session.cpp reads: model byte, then per call an
  // opcode, a session slot and the call's argument bytes); arbitrary bytes for the loader.
  const std::vector<uint8_t> standalone = {
      0x00,                                      // window model
      0x00, 0x00, 0x08, 0x01, 0x00,              // create, smoothing
      0x01, 0x00, 0x05, 0x15, 0x02, 0x01, 0x00, 0x05, 0x15, 0x02, 0x01, 0x00, 0x05, 0x15, 0x02,  // 3 pushes of 533
      0x03, 0x00, 0x20,                          // pop
      0x01, 0x00, 0x05, 0xa0, 0x0f,              // push 4000
      0x04, 0x00, 0x03, 0x00, 0x26,              // finish, pop
      0x05, 0x00, 0x01, 0x00, 0x07, 0x00, 0x01,  // reset, push 256
      0x0b, 0x00, 0x01, 0xa0, 0x0f, 0x0b};       // mt_animate 4000 samples, capacity 11
  const std::vector<uint8_t> batched = {
      0x01,                                                  // stream model
      0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,  // two sessions
      0x07, 0x00, 0x01, 0x03,                                // batch: 2 threads, 3 sessions
      0x08, 0x00, 0x08, 0x01,                                // add both
      0x01, 0x00, 0x03, 0x10, 0x27, 0x02, 0x01, 0x07, 0xd0, 0x07,  // pushes of 1998, 2000
      0x0a, 0x00, 0x03, 0x00, 0x10,                          // step, pop
      0x04, 0x00, 0x04, 0x01, 0x0a, 0x00,                    // finish both, step
      0x09, 0x00, 0x03, 0x01, 0x20, 0x05, 0x00, 0x08, 0x00};  // remove, pop, reset, add again
  meshtalk_test::write_bytes(dir + "/session_standalone.bin", standalone);
  meshtalk_test::write_bytes(dir + "/session_batch.bin", batched);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "--seeds") {
      write_seeds(argv[2]);
      return 0;
    }
    if (argc < 2 || argv[1][0] == '-') return usage();
    ModelSpec spec;
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "--core-only") {
        spec.core_only = true;
        continue;
      }
      if (i + 1 >= argc) return usage();
      const std::string value = argv[++i];
      if (flag == "--vertices") spec.n_vertices = std::stoll(value);
      else if (flag == "--heads") spec.heads = std::stoll(value);
      else if (flag == "--classes") spec.classes = std::stoll(value);
      else if (flag == "--hidden") spec.context_hidden = std::stoll(value);
      else if (flag == "--audio-dim") spec.audio_dim = std::stoll(value);
      else if (flag == "--fps") spec.fps = std::stoll(value);
      else if (flag == "--lookahead") spec.lookahead = std::stoll(value);
      else if (flag == "--audio-context-ms") spec.audio_context_ms = std::stoll(value);
      else if (flag == "--clock") spec.clock = value;
      else if (flag == "--framing") spec.framing = value;
      else if (flag == "--dtype") spec.dtype = value;
      else if (flag == "--seed") spec.seed = std::stoull(value);
      else return usage();
    }
    meshtalk_test::write_bytes(argv[1], meshtalk_test::model_image(spec));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mt_write_test_model: %s\n", e.what());
    return 1;
  }
}
