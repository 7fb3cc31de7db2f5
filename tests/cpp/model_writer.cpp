// Model files for the tests (model_writer.hpp).
#include "model_writer.hpp"

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace meshtalk_test {
namespace {

uint64_t splitmix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

size_t itemsize(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "F8_E4M3") return 1;
  throw std::runtime_error("model_writer: unsupported dtype " + dtype);
}

// One element's little-endian bytes: small weights (|x| < 0.1 for F32/BF16, < 1 for F16/F8), or
// values in [0.5, 2) when positive.
void put_value(const TensorSpec& t, uint64_t* rng, std::vector<uint8_t>* out) {
  const uint64_t r = splitmix(rng);
  const uint32_t sign = t.positive ? 0u : static_cast<uint32_t>(r >> 63);
  if (t.dtype == "F32" || t.dtype == "BF16") {
    float v = static_cast<float>((r >> 40) & 0xffffff) / 16777216.0f;  // [0, 1)
    v = t.positive ? 0.5f + 1.5f * v : (sign ? -0.1f : 0.1f) * v;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (t.dtype == "BF16") {
      const uint16_t h = static_cast<uint16_t>(bits >> 16);
      out->push_back(static_cast<uint8_t>(h));
      out->push_back(static_cast<uint8_t>(h >> 8));
      return;
    }
    for (int k = 0; k < 4; ++k) out->push_back(static_cast<uint8_t>(bits >> (8 * k)));
  } else if (t.dtype == "F16") {
    const uint32_t exponent = t.positive ? 14 + (r & 1) : 9 + (r & 3) + ((r >> 2) & 1);  // 2^-6 .. 2^1
    const uint16_t h = static_cast<uint16_t>((sign << 15) | (exponent << 10) | ((r >> 8) & 0x3ff));
    out->push_back(static_cast<uint8_t>(h));
    out->push_back(static_cast<uint8_t>(h >> 8));
  } else if (t.dtype == "F8_E4M3") {
    const uint32_t exponent = t.positive ? 6 + (r & 1) : 3 + (r & 3);  // bias 7: 2^-4 .. 2^0
    out->push_back(static_cast<uint8_t>((sign << 7) | (exponent << 3) | ((r >> 8) & 7)));
  } else {  // I32
    const uint32_t v = static_cast<uint32_t>(r) % 1000;
    for (int k = 0; k < 4; ++k) out->push_back(static_cast<uint8_t>(v >> (8 * k)));
  }
}

std::string shape_json(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::vector<TensorSpec> model_tensors(const ModelSpec& s) {
  const std::string d = s.dtype;
  const int64_t V = s.n_vertices, V3 = V * 3, H = s.heads, C = s.classes, HC = H * C;
  const int64_t HI = H * s.context_hidden, A = s.audio_dim, E = s.expression_dim, F = s.fusion_hidden;
  std::vector<TensorSpec> t;
  auto linear = [&](const std::string& key, int64_t out, int64_t in) {
    t.push_back({key + ".weight", {out, in}, d});
    t.push_back({key + ".bias", {out}, d});
  };
  auto lstm = [&](const std::string& key, int layer) {
    const std::string l = "_l" + std::to_string(layer);
    t.push_back({key + ".weight_ih" + l, {512, 128}, d});
    t.push_back({key + ".weight_hh" + l, {512, 128}, d});
    t.push_back({key + ".bias_ih" + l, {512}, d});
    t.push_back({key + ".bias_hh" + l, {512}, d});
  };
  auto stats = [&](const std::string& key) {
    t.push_back({key + ".mean", {1, 1, V, 3}, d});
    t.push_back({key + ".stddev", {1, 1, V, 3}, d, true});
  };
  auto context_conv = [&](const std::string& key, int64_t in, int64_t out, bool historic) {
    t.push_back({key + ".unmasked_linear.weight", {out, A, 1}, d});
    t.push_back({key + ".unmasked_linear.bias", {out}, d});
    t.push_back({key + ".masked_linear.weight", {out, in, 1}, d});
    t.push_back({key + ".masked_linear.bias", {out}, d});
    if (historic) {
      t.push_back({key + ".historic.weight", {out, in, 2}, d});
      t.push_back({key + ".historic.bias", {out}, d});
    }
  };
  {
    const std::string ae = "encoder.audio_encoder.";
    t.push_back({ae + "melspec.spectrogram.window", {800}, d, true});
    t.push_back({ae + "melspec.mel_scale.fb", {1025, 80}, d, true});
    t.push_back({ae + "convert_dimensions.weight", {128, 80, 5}, d});
    t.push_back({ae + "convert_dimensions.bias", {128}, d});
    for (int i = 0; i < 6; ++i) {
      t.push_back({ae + "convs." + std::to_string(i) + ".weight", {128, 128, 5}, d});
      t.push_back({ae + "convs." + std::to_string(i) + ".bias", {128}, d});
    }
    linear(ae + "code", A, 128);
  }
  if (!s.core_only) {
    const std::string ee = "encoder.expression_encoder";
    stats(ee);
    linear(ee + ".layers.0", 256, V3);
    linear(ee + ".layers.1", 128, 256);
    lstm(ee + ".lstm", 0);
    linear(ee + ".code", E, 128);
    linear("encoder.fusion_model.mlp.0", F, E + A);
    linear("encoder.fusion_model.mlp.2", F, F);
    linear("encoder.fusion_model.mlp.4", HC, F);
  }
  t.push_back({"vertex_unet.vertex_bias", {V3}, d});
  stats("vertex_unet");
  linear("vertex_unet.encoder.0", 512, V3);
  linear("vertex_unet.encoder.1", 256, 512);
  linear("vertex_unet.encoder.2", 128, 256);
  linear("vertex_unet.fusion", 128, 128 + HC);
  lstm("vertex_unet.temporal", 0);
  lstm("vertex_unet.temporal", 1);
  linear("vertex_unet.decoder.0", 256, 128);
  linear("vertex_unet.decoder.1", 512, 256);
  linear("vertex_unet.decoder.2", V3, 512);
  context_conv("context_model.embedding", HC, HI, false);
  for (int l = 0; l < 4; ++l) context_conv("context_model.context_layers." + std::to_string(l), HI, HI, true);
  context_conv("context_model.logits", HI, HC, false);
  return t;
}

std::string config_json(const ModelSpec& s) {
  // json.dumps(..., sort_keys=True): keys sorted, ", " and ": " separators.
  return "{\"audio_context_ms\": " + std::to_string(s.audio_context_ms) +
         ", \"audio_dim\": " + std::to_string(s.audio_dim) + ", \"audio_heads\": \"fused\"" +
         ", \"audio_logit_scale\": 0.0" +
         ", \"classes\": " + std::to_string(s.classes) +
         ", \"clock\": " + json_string(s.clock) + ", \"context_hidden\": " + std::to_string(s.context_hidden) +
         ", \"expression_dim\": " + std::to_string(s.expression_dim) +
         // the runtime has no expression encoder: its files carry the released input and fusion (and the
         // released prior: a "free" one differs only by zeros in its weights)
         ", \"expression_groups\": 1, \"expression_heads\": 0, \"expression_input\": \"mesh\", "
         "\"expression_logit_scale\": 0.0, \"expression_std\": \"data\", "
         "\"fps\": " + std::to_string(s.fps) +
         ", \"framing\": " + json_string(s.framing) + ", \"fusion_hidden\": " + std::to_string(s.fusion_hidden) +
         ", \"heads\": " + std::to_string(s.heads) + ", \"lookahead\": " + std::to_string(s.lookahead) +
         ", \"n_vertices\": " + std::to_string(s.n_vertices) + ", \"prior_expression\": \"audio\"" +
         ", \"prior_head_masks\": \"released\"}";
}

std::map<std::string, std::string> model_metadata(const ModelSpec& s) {
  return {{"format", "meshtalk_fast"}, {"format_version", "1"}, {"config", config_json(s)}};
}

std::vector<uint8_t> safetensors_image(const std::vector<TensorSpec>& tensors,
                                       const std::map<std::string, std::string>& metadata, uint64_t seed) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\": {";
    bool first = true;
    for (const auto& kv : metadata) {
      header += (first ? "" : ", ") + json_string(kv.first) + ": " + json_string(kv.second);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    uint64_t n = 1;
    for (int64_t dim : t.shape) n *= static_cast<uint64_t>(dim);
    const uint64_t bytes = n * itemsize(t.dtype);
    header += (header.size() > 1 ? ", " : "") + json_string(t.name) + ": {\"dtype\": " + json_string(t.dtype) +
              ", \"shape\": " + shape_json(t.shape) + ", \"data_offsets\": [" + std::to_string(offset) + ", " +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + offset);
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * k)));
  out.insert(out.end(), header.begin(), header.end());
  uint64_t rng = seed;
  for (const TensorSpec& t : tensors) {
    uint64_t n = 1;
    for (int64_t dim : t.shape) n *= static_cast<uint64_t>(dim);
    for (uint64_t i = 0; i < n; ++i) put_value(t, &rng, &out);
  }
  return out;
}

std::vector<uint8_t> model_image(const ModelSpec& spec) {
  return safetensors_image(model_tensors(spec), model_metadata(spec), spec.seed);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  const size_t written = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool ok = std::fclose(f) == 0 && written == bytes.size();
  if (!ok) throw std::runtime_error("cannot write " + path);
}

}  // namespace meshtalk_test
