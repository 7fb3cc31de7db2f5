// Model files for the C++ tests and the fuzzers' seeds, written without Python: the tensor names,
// shapes and metadata MeshTalk.save writes (python/meshtalk_fast/checkpoint.py), filled with
// deterministic pseudo-random values. tests/test_capi.py checks that MeshTalk.load reads such a file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace meshtalk_test {

struct ModelSpec {
  int64_t n_vertices = 5, heads = 3, classes = 4, context_hidden = 2, audio_dim = 6;
  int64_t expression_dim = 7, fusion_hidden = 9;
  int64_t fps = 30, lookahead = 8000;
  int64_t audio_context_ms = 1000;  // 1000 (released) or 600; set lookahead with it (4800: centred at 600)
  std::string clock = "released", framing = "window";
  std::string dtype = "F32";  // of every tensor: F32, F16, BF16 or F8_E4M3
  bool core_only = false;     // only the tensors the C++ core reads (context_model.*, vertex_unet.*,
                              // encoder.audio_encoder.*)
  uint64_t seed = 1;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype = "F32";  // F32, F16, BF16, F8_E4M3, I32
  bool positive = false;      // values > 0 (stddev)
};

// The tensors of MeshTalk.save in its order (state-dict order, head masks left out).
std::vector<TensorSpec> model_tensors(const ModelSpec& spec);
// json.dumps(config.__dict__, sort_keys=True) of MeshTalkConfig.
std::string config_json(const ModelSpec& spec);
// {"format": "meshtalk_fast", "format_version": "1", "config": config_json(spec)}
std::map<std::string, std::string> model_metadata(const ModelSpec& spec);

// A safetensors file image: header (8-byte aligned, as the safetensors package writes it), then the
// tensors' data in the given order.
std::vector<uint8_t> safetensors_image(const std::vector<TensorSpec>& tensors,
                                       const std::map<std::string, std::string>& metadata, uint64_t seed = 1);
std::vector<uint8_t> model_image(const ModelSpec& spec);

std::string json_string(const std::string& s);  // a JSON string literal, quotes included
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);  // throws std::runtime_error

}  // namespace meshtalk_test
