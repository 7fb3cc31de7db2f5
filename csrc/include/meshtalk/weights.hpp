// Weights of the decoding core: the ContextModel (the prior the sampler runs) and the VertexUnet
// (the mesh decoder), prepared once for the kernels that use them.
//
// Sources: the safetensors file written by MeshTalk.save (keys "context_model.*", "vertex_unet.*",
// the config as JSON in the metadata entry "config"), or float32 buffers owned by the caller (the
// Python module hands over numpy views of the parameters, zero-copy; they are copied here). Every
// tensor's shape is checked against the config; an error names the key, the expected and the found
// shape. Keys the core does not use (the encoder, the head masks, the embedding/logits audio
// projections, which the model never applies) are not required.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "meshtalk/gemm.hpp"
#include "meshtalk/safetensors.hpp"

namespace meshtalk {

struct ModelConfig {
  int64_t heads = 16;
  int64_t classes = 128;
  int64_t n_vertices = 6172;
  int64_t context_hidden = 64;
  int64_t audio_dim = 128;
  std::vector<int64_t> dilations{1, 2, 4, 8};  // of the context layers (kernel 2 each)
  int64_t audio_context_ms = 1000;  // audio per frame: 1000 (released) or 600 (frame_clock.hpp); absent from
                                    // the files written before the option: 1000
  // The prior's head masks (config "prior_head_masks"): false, "released": every layer's output head h reads
  // the input heads < h of its step; true, "inclusive": the embedding reads heads < h, every later layer
  // heads <= h. Absent from the files written before the option: "released".
  bool inclusive_head_masks = false;

  // Throws kInvalidArgument naming the field unless every size is in [1, 2^20] (n_vertices:
  // [1, 2^24]), there is at least one dilation and audio_context_ms is 1000 or 600.
  void validate() const;
};

// The "config" JSON of a file written by MeshTalk.save (a flat object; unknown keys are ignored;
// "audio_context_ms" is optional, 1000 when absent; "prior_head_masks" is optional, "released" when absent).
// Throws kInvalidFormat naming the file when it is missing or malformed.
ModelConfig read_model_config(const SafetensorsFile& file);

// One entry of that "config" JSON: a non-negative integer, or a string (returned without quotes).
// Throw kInvalidFormat naming the file and the key when it is missing or of another kind.
int64_t read_config_integer(const SafetensorsFile& file, const std::string& key);
std::string read_config_string(const SafetensorsFile& file, const std::string& key);

// Named float tensors, read as float32.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::string label() const = 0;  // "safetensors 'path'" or "weights", for messages
  virtual bool contains(const std::string& key) const = 0;
  virtual std::vector<int64_t> shape(const std::string& key) const = 0;
  virtual void read(const std::string& key, float* dst, size_t count) const = 0;

  // The tensor `key` as float32 after checking it exists (kKeyNotFound) and has `shape`
  // (kInvalidArgument: "<label>: '<key>': expected shape [..], found [..]").
  std::vector<float> get(const std::string& key, const std::vector<int64_t>& shape) const;
};

class FileSource : public TensorSource {
 public:
  explicit FileSource(const SafetensorsFile& file) : file_(file) {}
  std::string label() const override { return "safetensors '" + file_.label() + "'"; }
  bool contains(const std::string& key) const override { return file_.contains(key); }
  std::vector<int64_t> shape(const std::string& key) const override { return file_.shape(key); }
  void read(const std::string& key, float* dst, size_t count) const override { file_.read_f32(key, dst, count); }

 private:
  const SafetensorsFile& file_;
};

// Caller-owned contiguous float32 buffers; they must stay alive while the weights are built.
class BufferSource : public TensorSource {
 public:
  struct View {
    const float* data = nullptr;
    std::vector<int64_t> shape;
  };
  void add(const std::string& key, const float* data, std::vector<int64_t> shape);
  std::string label() const override { return "weights"; }
  bool contains(const std::string& key) const override { return views_.count(key) != 0; }
  std::vector<int64_t> shape(const std::string& key) const override;
  void read(const std::string& key, float* dst, size_t count) const override;

 private:
  const View& view(const std::string& key) const;
  std::map<std::string, View> views_;
};

// The ContextModel, laid out for the sampler (sampler.hpp). hidden = context_hidden, HI = H * hidden.
struct ContextWeights {
  struct Layer {                   // one context layer (kernel 2, dilation d, audio input)
    int64_t dilation = 1;
    WeightMatrix prev;             // historic.weight[..., 1]  [HI, HI]: reads step t-1
    WeightMatrix dilated;          // historic.weight[..., 0]  [HI, HI]: reads step t-1-d
    WeightMatrix audio;            // unmasked_linear.weight   [HI, A]
    std::vector<float> bias;       // masked + unmasked + historic biases, [HI]
    std::vector<WeightMatrix> masked;  // per head h: rows of head h, input columns of heads < h: [hidden, h*hidden]
  };
  ModelConfig config;
  GemmBackend backend = GemmBackend::kBuiltin;
  WeightStorage storage = WeightStorage::kF32;
  // embedding.masked_linear on a one-hot input is a gather: for output head h and earlier head j < h,
  // the hidden-vector of column j*C + c; stored at ((h*(h-1)/2 + j) * C + c) * hidden.
  std::vector<float> embedding_columns;
  std::vector<float> embedding_bias;     // [HI]
  std::vector<Layer> layers;
  std::vector<WeightMatrix> logits;      // per head h: [C, h*hidden]
  std::vector<float> logits_bias;        // [H*C]

  size_t nbytes() const;
  // Keys are "<prefix>embedding.masked_linear.weight", ...; prefix is "context_model." for a model file.
  // The sampler's products run on `backend`; kBuiltin (the default) makes every sequence's result
  // independent of the batch it is sampled in (gemm.hpp), kBlas exists for comparison.
  // storage: of every product's weight (the historic taps, the audio projection, the masked and
  // logits layers); kF32 (the default) is exact, the others trade precision for bytes (gemm.hpp).
  static std::shared_ptr<const ContextWeights> load(const TensorSource& source, const ModelConfig& config,
                                                    const std::string& prefix = "context_model.",
                                                    GemmBackend backend = GemmBackend::kBuiltin,
                                                    WeightStorage storage = WeightStorage::kF32);
};

// A linear layer y = x W^T + b of the decoder.
struct Linear {
  WeightMatrix weight;     // [out, in]
  std::vector<float> bias;  // [out]
  int64_t out() const noexcept { return weight.n(); }
  int64_t in() const noexcept { return weight.k(); }
};

// The VertexUnet, laid out for the decoder (decoder.hpp). V3 = n_vertices * 3.
struct DecoderWeights {
  ModelConfig config;
  GemmBackend backend = GemmBackend::kBuiltin;  // of every product
  WeightStorage storage = WeightStorage::kF32;  // of the per-frame products (LSTM, decoder); the
                                                // template encoder (once per face) stays float32
  std::vector<float> mean, stddev;  // [V3]
  Linear encoder[3];                // V3 -> 512 -> 256 -> 128
  Linear fusion_geometry;           // fusion.weight[:, :128], fusion.bias  [128, 128]
  std::vector<float> fusion_codes;  // fusion.weight[:, 128:] transposed: [H*C][128]
  Linear lstm_input[2];             // weight_ih_l{0,1} [512, 128], bias_ih + bias_hh
  WeightMatrix lstm_hidden[2];      // weight_hh_l{0,1} [512, 128]
  Linear decoder[3];                // 128 -> 256 -> 512 -> V3
  std::vector<float> vertex_bias;   // [V3]

  size_t nbytes() const;
  static std::shared_ptr<const DecoderWeights> load(const TensorSource& source, const ModelConfig& config,
                                                    GemmBackend backend = GemmBackend::kBuiltin,
                                                    const std::string& prefix = "vertex_unet.",
                                                    WeightStorage storage = WeightStorage::kF32);
};

}  // namespace meshtalk
