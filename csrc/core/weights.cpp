// Loading and laying out the ContextModel and VertexUnet weights (weights.hpp).
#include "meshtalk/weights.hpp"

#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "meshtalk/frame_clock.hpp"
#include "meshtalk/status.hpp"

namespace meshtalk {
namespace {

// The metadata "config" is a flat JSON object written by json.dumps: keys map to integers,
// strings, booleans or null. Values are kept as their raw text; only the sizes the core needs are
// converted. Nested values are refused (the config has none).
class FlatJson {
 public:
  FlatJson(const std::string& text, std::string where) : s_(text), where_(std::move(where)) {}

  std::map<std::string, std::string> parse() {
    std::map<std::string, std::string> out;
    ws();
    expect('{');
    ws();
    if (peek() == '}') { ++i_; return finish(out); }
    while (true) {
      ws();
      std::string key = string();
      ws();
      expect(':');
      ws();
      std::string value = peek() == '"' ? "\"" + string() : scalar();
      out[key] = value;
      ws();
      if (peek() == ',') { ++i_; continue; }
      expect('}');
      return finish(out);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::kInvalidFormat, where_ + ": metadata 'config' is not a flat JSON object: " + what +
                                               " at byte " + std::to_string(i_));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {  // keys and values of our config need no escapes; keep them verbatim
        if (i_ + 1 >= s_.size()) break;
        out += s_[i_++];
      }
      out += s_[i_++];
    }
    expect('"');
    return out;
  }
  std::string scalar() {
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || std::strchr("+-.", s_[i_]))) ++i_;
    if (i_ == start) fail("expected a number, string, true, false or null");
    return s_.substr(start, i_ - start);
  }
  std::map<std::string, std::string> finish(std::map<std::string, std::string>& out) {
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return std::move(out);
  }

  const std::string& s_;
  std::string where_;
  size_t i_ = 0;
};

int64_t config_int(const std::map<std::string, std::string>& cfg, const std::string& key, const std::string& where) {
  const auto it = cfg.find(key);
  if (it == cfg.end())
    throw Error(ErrorCode::kInvalidFormat, where + ": metadata 'config' has no '" + key + "'");
  const std::string& v = it->second;
  bool ok = !v.empty() && v.size() <= 18;
  for (char ch : v) ok = ok && std::isdigit(static_cast<unsigned char>(ch));
  if (!ok)
    throw Error(ErrorCode::kInvalidFormat, where + ": metadata 'config' entry '" + key +
                                               "': expected a non-negative integer, found " + v);
  return std::stoll(v);
}

void check_range(const char* field, int64_t v, int64_t max) {
  if (v < 1 || v > max)
    throw_mismatch(std::string("config ") + field, "an integer in [1, " + std::to_string(max) + "]", std::to_string(v));
}

std::vector<float> transpose_taps(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t taps, int64_t tap) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = w[(r * cols + c) * taps + tap];
  return out;
}

Linear load_linear(const TensorSource& src, const std::string& key, int64_t out, int64_t in, GemmBackend backend,
                   WeightStorage storage = WeightStorage::kF32) {
  const std::vector<float> w = src.get(key + ".weight", {out, in});
  return Linear{WeightMatrix(w.data(), out, in, in, backend, storage), src.get(key + ".bias", {out})};
}

}  // namespace

void ModelConfig::validate() const {
  constexpr int64_t kMax = int64_t(1) << 20;
  check_range("heads", heads, kMax);
  check_range("classes", classes, kMax);
  check_range("context_hidden", context_hidden, kMax);
  check_range("audio_dim", audio_dim, kMax);
  check_range("n_vertices", n_vertices, int64_t(1) << 24);
  if (dilations.empty() || dilations.size() > 64)
    throw_mismatch("config dilations", "1 to 64 context layers", std::to_string(dilations.size()));
  for (int64_t d : dilations) check_range("dilations[i]", d, 1 << 16);
  // Products the kernels index with: keep every buffer size far from overflow.
  if (heads * classes > kMax || heads * context_hidden > kMax)
    throw_mismatch("config heads * classes and heads * context_hidden", "at most " + std::to_string(kMax),
                   std::to_string(heads * classes) + " and " + std::to_string(heads * context_hidden));
  check_audio_context(audio_context_ms);
}

ModelConfig read_model_config(const SafetensorsFile& file) {
  const std::string where = "safetensors '" + file.label() + "'";
  const auto it = file.metadata().find("config");
  if (it == file.metadata().end())
    throw Error(ErrorCode::kInvalidFormat, where + ": no metadata entry 'config' (is this a file written by "
                                                   "MeshTalk.save?)");
  const std::map<std::string, std::string> cfg = FlatJson(it->second, where).parse();
  ModelConfig c;
  c.heads = config_int(cfg, "heads", where);
  c.classes = config_int(cfg, "classes", where);
  c.n_vertices = config_int(cfg, "n_vertices", where);
  c.context_hidden = config_int(cfg, "context_hidden", where);
  c.audio_dim = config_int(cfg, "audio_dim", where);
  if (cfg.count("audio_context_ms")) c.audio_context_ms = config_int(cfg, "audio_context_ms", where);
  const auto masks = cfg.find("prior_head_masks");
  if (masks != cfg.end()) {
    if (masks->second == "\"inclusive") c.inclusive_head_masks = true;
    else if (masks->second != "\"released")  // FlatJson marks strings with a leading quote
      throw Error(ErrorCode::kInvalidFormat, where + ": metadata 'config' entry 'prior_head_masks': expected "
                                                     "\"released\" or \"inclusive\", found " + masks->second.substr(0, 40));
  }
  c.validate();
  return c;
}

namespace {

std::map<std::string, std::string> config_entries(const SafetensorsFile& file, const std::string& where) {
  const auto it = file.metadata().find("config");
  if (it == file.metadata().end())
    throw Error(ErrorCode::kInvalidFormat, where + ": no metadata entry 'config' (is this a file written by "
                                                   "MeshTalk.save?)");
  return FlatJson(it->second, where).parse();
}

}  // namespace

int64_t read_config_integer(const SafetensorsFile& file, const std::string& key) {
  const std::string where = "safetensors '" + file.label() + "'";
  return config_int(config_entries(file, where), key, where);
}

std::string read_config_string(const SafetensorsFile& file, const std::string& key) {
  const std::string where = "safetensors '" + file.label() + "'";
  const std::map<std::string, std::string> cfg = config_entries(file, where);
  const auto it = cfg.find(key);
  if (it == cfg.end())
    throw Error(ErrorCode::kInvalidFormat, where + ": metadata 'config' has no '" + key + "'");
  if (it->second.empty() || it->second[0] != '"')  // FlatJson marks strings with a leading quote
    throw Error(ErrorCode::kInvalidFormat, where + ": metadata 'config' entry '" + key +
                                               "': expected a string, found " + it->second.substr(0, 40));
  return it->second.substr(1);
}

std::vector<float> TensorSource::get(const std::string& key, const std::vector<int64_t>& expected) const {
  if (!contains(key)) throw Error(ErrorCode::kKeyNotFound, label() + ": missing tensor '" + key + "'");
  const std::vector<int64_t> found = shape(key);
  if (found != expected)
    throw Error(ErrorCode::kInvalidArgument, label() + ": '" + key + "': expected shape " +
                                                 shape_to_string(expected) + ", found " + shape_to_string(found));
  size_t n = 1;
  for (int64_t d : expected) n *= static_cast<size_t>(d);
  std::vector<float> out(n);
  read(key, out.data(), n);
  // A NaN or inf weight would make every frame non-finite while each call reports success: refuse it
  // here, where every weight of every model passes (files and caller buffers alike).
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(out[i]))
      throw Error(ErrorCode::kInvalidArgument, label() + ": tensor '" + key + "' holds a non-finite weight (" +
                                                   std::to_string(out[i]) + " at flat index " + std::to_string(i) +
                                                   "): expected finite values");
  return out;
}

void BufferSource::add(const std::string& key, const float* data, std::vector<int64_t> shape) {
  for (int64_t d : shape)
    if (d < 0) throw_mismatch("weights '" + key + "' shape", "non-negative sizes", shape_to_string(shape));
  views_[key] = View{data, std::move(shape)};
}

const BufferSource::View& BufferSource::view(const std::string& key) const {
  const auto it = views_.find(key);
  if (it == views_.end()) throw Error(ErrorCode::kKeyNotFound, "weights: missing tensor '" + key + "'");
  return it->second;
}

std::vector<int64_t> BufferSource::shape(const std::string& key) const { return view(key).shape; }

void BufferSource::read(const std::string& key, float* dst, size_t count) const {
  const View& v = view(key);
  size_t n = 1;
  for (int64_t d : v.shape) n *= static_cast<size_t>(d);
  if (n != count)
    throw_mismatch("weights '" + key + "' element count", std::to_string(count), std::to_string(n));
  if (n > 0) std::memcpy(dst, v.data, n * sizeof(float));
}

size_t ContextWeights::nbytes() const {
  size_t n = (embedding_columns.size() + embedding_bias.size() + logits_bias.size()) * sizeof(float);
  for (const WeightMatrix& m : logits) n += m.nbytes();
  for (const Layer& l : layers) {
    n += l.prev.nbytes() + l.dilated.nbytes() + l.audio.nbytes() + l.bias.size() * sizeof(float);
    for (const WeightMatrix& m : l.masked) n += m.nbytes();
  }
  return n;
}

std::shared_ptr<const ContextWeights> ContextWeights::load(const TensorSource& src, const ModelConfig& config,
                                                           const std::string& prefix, GemmBackend backend,
                                                           WeightStorage storage) {
  config.validate();
  const std::string why = storage_unavailable_reason(storage, backend);
  if (!why.empty()) throw Error(ErrorCode::kInvalidArgument, why);
  auto w = std::make_shared<ContextWeights>();
  w->config = config;
  w->backend = backend;
  w->storage = storage;
  const int64_t H = config.heads, C = config.classes, hid = config.context_hidden, A = config.audio_dim;
  const int64_t HI = H * hid, HC = H * C;
  // After the embedding, output head h reads the input heads < h (released masks) or <= h (inclusive):
  // a prefix of h * hid or (h + 1) * hid columns.
  const int64_t own = config.inclusive_head_masks ? 1 : 0;

  {  // embedding: gather columns of the earlier heads
    const std::vector<float> e = src.get(prefix + "embedding.masked_linear.weight", {HI, HC, 1});
    w->embedding_bias = src.get(prefix + "embedding.masked_linear.bias", {HI});
    w->embedding_columns.resize(static_cast<size_t>(H * (H - 1) / 2 * C * hid));
    for (int64_t h = 1; h < H; ++h)
      for (int64_t j = 0; j < h; ++j)
        for (int64_t c = 0; c < C; ++c) {
          float* dst = w->embedding_columns.data() + ((h * (h - 1) / 2 + j) * C + c) * hid;
          for (int64_t r = 0; r < hid; ++r) dst[r] = e[(h * hid + r) * HC + j * C + c];
        }
  }
  for (size_t l = 0; l < config.dilations.size(); ++l) {
    const std::string key = prefix + "context_layers." + std::to_string(l) + ".";
    Layer layer;
    layer.dilation = config.dilations[l];
    const std::vector<float> masked = src.get(key + "masked_linear.weight", {HI, HI, 1});
    const std::vector<float> audio = src.get(key + "unmasked_linear.weight", {HI, A, 1});
    const std::vector<float> historic = src.get(key + "historic.weight", {HI, HI, 2});
    layer.bias = src.get(key + "masked_linear.bias", {HI});
    const std::vector<float> audio_bias = src.get(key + "unmasked_linear.bias", {HI});
    const std::vector<float> historic_bias = src.get(key + "historic.bias", {HI});
    for (int64_t i = 0; i < HI; ++i) layer.bias[i] = layer.bias[i] + audio_bias[i] + historic_bias[i];
    layer.audio = WeightMatrix(audio.data(), HI, A, A, backend, storage);
    layer.prev = WeightMatrix(transpose_taps(historic, HI, HI, 2, 1).data(), HI, HI, HI, backend, storage);
    layer.dilated = WeightMatrix(transpose_taps(historic, HI, HI, 2, 0).data(), HI, HI, HI, backend, storage);
    for (int64_t h = 0; h < H; ++h)
      layer.masked.emplace_back(masked.data() + h * hid * HI, hid, (h + own) * hid, HI, backend, storage);
    w->layers.push_back(std::move(layer));
  }
  {
    const std::vector<float> lg = src.get(prefix + "logits.masked_linear.weight", {HC, HI, 1});
    w->logits_bias = src.get(prefix + "logits.masked_linear.bias", {HC});
    for (int64_t h = 0; h < H; ++h)
      w->logits.emplace_back(lg.data() + h * C * HI, C, (h + own) * hid, HI, backend, storage);
  }
  return w;
}

size_t DecoderWeights::nbytes() const {
  size_t n = (mean.size() + stddev.size() + fusion_codes.size() + vertex_bias.size()) * sizeof(float);
  auto lin = [](const Linear& l) { return l.weight.nbytes() + l.bias.size() * sizeof(float); };
  for (const Linear& l : encoder) n += lin(l);
  for (const Linear& l : decoder) n += lin(l);
  for (int i = 0; i < 2; ++i) n += lin(lstm_input[i]) + lstm_hidden[i].nbytes();
  return n + lin(fusion_geometry);
}

std::shared_ptr<const DecoderWeights> DecoderWeights::load(const TensorSource& src, const ModelConfig& config,
                                                           GemmBackend backend, const std::string& prefix,
                                                           WeightStorage storage) {
  config.validate();
  const std::string why = storage_unavailable_reason(storage, backend);
  if (!why.empty()) throw Error(ErrorCode::kInvalidArgument, why);
  auto w = std::make_shared<DecoderWeights>();
  w->config = config;
  w->backend = backend;
  w->storage = storage;
  const int64_t V3 = config.n_vertices * 3, HC = config.heads * config.classes;
  w->mean = src.get(prefix + "mean", {1, 1, config.n_vertices, 3});
  w->stddev = src.get(prefix + "stddev", {1, 1, config.n_vertices, 3});
  const int64_t enc[4] = {V3, 512, 256, 128};
  for (int i = 0; i < 3; ++i)
    w->encoder[i] = load_linear(src, prefix + "encoder." + std::to_string(i), enc[i + 1], enc[i], backend);
  {
    const std::vector<float> f = src.get(prefix + "fusion.weight", {128, 128 + HC});
    w->fusion_geometry = Linear{WeightMatrix(f.data(), 128, 128, 128 + HC, backend),
                                src.get(prefix + "fusion.bias", {128})};
    w->fusion_codes.resize(static_cast<size_t>(HC * 128));
    for (int64_t r = 0; r < 128; ++r)
      for (int64_t j = 0; j < HC; ++j) w->fusion_codes[j * 128 + r] = f[r * (128 + HC) + 128 + j];
  }
  for (int l = 0; l < 2; ++l) {
    const std::string key = prefix + "temporal.", s = "_l" + std::to_string(l);
    const std::vector<float> wih = src.get(key + "weight_ih" + s, {512, 128});
    const std::vector<float> whh = src.get(key + "weight_hh" + s, {512, 128});
    std::vector<float> bias = src.get(key + "bias_ih" + s, {512});
    const std::vector<float> bias_hh = src.get(key + "bias_hh" + s, {512});
    for (int64_t i = 0; i < 512; ++i) bias[i] += bias_hh[i];
    w->lstm_input[l] = Linear{WeightMatrix(wih.data(), 512, 128, 128, backend, storage), std::move(bias)};
    w->lstm_hidden[l] = WeightMatrix(whh.data(), 512, 128, 128, backend, storage);
  }
  const int64_t dec[4] = {128, 256, 512, V3};
  for (int i = 0; i < 3; ++i)
    w->decoder[i] = load_linear(src, prefix + "decoder." + std::to_string(i), dec[i + 1], dec[i], backend, storage);
  w->vertex_bias = src.get(prefix + "vertex_bias", {V3});
  return w;
}

}  // namespace meshtalk
