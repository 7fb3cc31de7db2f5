// The cost of reduced-precision weights (mt_model_params.weights), measured against float32 on one
// model and one utterance:
//   mt_weights_precision MODEL.safetensors TEMPLATE.f32 AUDIO.f32 [THREADS]
//   mt_weights_precision --smoke      (the small test model of model_writer.hpp, 3 s of noise)
// TEMPLATE: raw float32 [V * 3]; AUDIO: raw float32 16 kHz samples, as the session takes them.
// The audio codes are computed once (the audio encoder is float32 in every mode); then, per mode, the
// prior samples every frame's codes (argmax, and Gumbel with seed 0) and the decoder turns them into
// meshes. Printed per mode (key=value lines):
//   label_agreement_{argmax,gumbel}   fraction of (frame, head) labels equal to float32's
//   vertex_error_mean / _max          |vertex - float32 vertex| (L2) over all frames and vertices,
//                                     as a fraction of the face's size (the template's bounding-box
//                                     diagonal), argmax codes of that mode
//   decoder_error_mean / _max         the same with float32's argmax codes (the decoder's own part)
// Run by CTest on the small test model (tests/cpp/CMakeLists.txt) so that it keeps working; the
// figures in benchmarks/RESULTS.md come from the full-size run documented there.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "meshtalk/audio_encoder.hpp"
#include "meshtalk/decoder.hpp"
#include "meshtalk/model.hpp"
#include "meshtalk/safetensors.hpp"
#include "meshtalk/sampler.hpp"
#include "model_writer.hpp"

namespace {

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / 4);
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

struct Run {
  std::vector<int32_t> labels;  // [T, H]
  std::vector<float> frames;    // [T, V3]
};

// The prior (argmax or Gumbel with seed 0) then the decoder, one frame at a time as a session does;
// `given` labels (if not null) replace the prior's for the decoder.
Run run(const meshtalk::Model& m, const std::vector<float>& codes, int64_t T, bool argmax, int64_t threads,
        const float* templ, const std::vector<int32_t>* given) {
  const int64_t H = m.config.heads, A = m.config.audio_dim, V3 = m.config.n_vertices * 3;
  meshtalk::SamplerState sampler(m.context, 1, threads);
  meshtalk::DecoderState decoder(m.decoder, 1, threads);
  sampler.reset(0, 0, argmax);
  decoder.reset(0, decoder.encode_template(templ));
  Run r;
  r.labels.resize(static_cast<size_t>(T * H));
  r.frames.resize(static_cast<size_t>(T * V3));
  const int64_t slot = 0;
  for (int64_t t = 0; t < T; ++t) {
    sampler.step(&slot, 1, codes.data() + t * A, r.labels.data() + t * H, nullptr);
    const int32_t* use = given ? given->data() + t * H : r.labels.data() + t * H;
    decoder.step_labels(&slot, 1, use, r.frames.data() + t * V3);
  }
  return r;
}

void errors(const std::vector<float>& a, const std::vector<float>& b, double size, double* mean, double* max) {
  double sum = 0.0, worst = 0.0;
  const size_t n = a.size() / 3;
  for (size_t i = 0; i < n; ++i) {
    const double dx = a[3 * i] - b[3 * i], dy = a[3 * i + 1] - b[3 * i + 1], dz = a[3 * i + 2] - b[3 * i + 2];
    const double d = std::sqrt(dx * dx + dy * dy + dz * dz);
    sum += d;
    worst = std::max(worst, d);
  }
  *mean = n ? sum / static_cast<double>(n) / size : 0.0;
  *max = worst / size;
}

double agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 1.0 : static_cast<double>(same) / static_cast<double>(a.size());
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc == 2 && std::string(argv[1]) == "--smoke";
  if (argc < 4 && !smoke) {
    std::fprintf(stderr, "usage: mt_weights_precision MODEL.safetensors TEMPLATE.f32 AUDIO.f32 [THREADS] | --smoke\n");
    return 2;
  }
  try {
    const int64_t threads = argc > 4 ? std::atoll(argv[4]) : 0;
    std::vector<float> templ, audio;
    std::vector<uint8_t> image;
    if (smoke) {
      meshtalk_test::ModelSpec spec;
      spec.n_vertices = 50;
      image = meshtalk_test::model_image(spec);
      uint64_t x = 99;
      auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.0f;
      };
      for (int64_t i = 0; i < spec.n_vertices * 3; ++i) templ.push_back(next());
      for (int64_t i = 0; i < 3 * 16000; ++i) audio.push_back(0.3f * next());
    } else {
      templ = read_f32(argv[2]);
      audio = read_f32(argv[3]);
    }
    const meshtalk::SafetensorsFile file = smoke ? meshtalk::SafetensorsFile::from_memory(image.data(), image.size(), "<smoke>")
                                                 : meshtalk::SafetensorsFile::open(argv[1]);
    std::shared_ptr<const meshtalk::Model> exact = meshtalk::Model::load(file);
    const int64_t V3 = exact->config.n_vertices * 3, A = exact->config.audio_dim;
    if (static_cast<int64_t>(templ.size()) != V3) throw std::runtime_error("template: expected V * 3 floats");
    double lo[3] = {1e30, 1e30, 1e30}, hi[3] = {-1e30, -1e30, -1e30};
    for (int64_t i = 0; i < V3; ++i) lo[i % 3] = std::min<double>(lo[i % 3], templ[i]), hi[i % 3] = std::max<double>(hi[i % 3], templ[i]);
    const double size = std::sqrt((hi[0] - lo[0]) * (hi[0] - lo[0]) + (hi[1] - lo[1]) * (hi[1] - lo[1]) +
                                  (hi[2] - lo[2]) * (hi[2] - lo[2]));
    // The audio codes of the whole utterance, as a session computes them.
    std::vector<float> codes;
    meshtalk::AudioStreamEncoder enc(exact->audio, 1, exact->frames, exact->frames.framing, threads);
    const meshtalk::AudioStreamEncoder::CodeSink sink = [&](int64_t, const float* c) {
      codes.insert(codes.end(), c, c + A);
    };
    enc.push(audio.data(), static_cast<int64_t>(audio.size()), static_cast<int64_t>(audio.size()), sink);
    enc.close(sink);
    const int64_t T = static_cast<int64_t>(codes.size()) / A;
    std::printf("frames=%lld\nface_size=%.6g\n", static_cast<long long>(T), size);
    const Run ref_argmax = run(*exact, codes, T, true, threads, templ.data(), nullptr);
    const Run ref_gumbel = run(*exact, codes, T, false, threads, templ.data(), nullptr);
    for (meshtalk::WeightStorage st : {meshtalk::WeightStorage::kBF16, meshtalk::WeightStorage::kInt8}) {
      const std::string name = meshtalk::weight_storage_name(st);
      std::shared_ptr<const meshtalk::Model> m = meshtalk::Model::load(file, meshtalk::GemmBackend::kBuiltin, st);
      const Run a = run(*m, codes, T, true, threads, templ.data(), nullptr);
      const Run g = run(*m, codes, T, false, threads, templ.data(), nullptr);
      const Run d = run(*m, codes, T, true, threads, templ.data(), &ref_argmax.labels);
      double mean = 0, max = 0, dmean = 0, dmax = 0;
      errors(a.frames, ref_argmax.frames, size, &mean, &max);
      errors(d.frames, ref_argmax.frames, size, &dmean, &dmax);
      std::printf("%s_weight_bytes=%zu\n%s_label_agreement_argmax=%.6f\n%s_label_agreement_gumbel=%.6f\n"
                  "%s_vertex_error_mean=%.3e\n%s_vertex_error_max=%.3e\n%s_decoder_error_mean=%.3e\n"
                  "%s_decoder_error_max=%.3e\n",
                  name.c_str(), m->nbytes(), name.c_str(), agreement(a.labels, ref_argmax.labels), name.c_str(),
                  agreement(g.labels, ref_gumbel.labels), name.c_str(), mean, name.c_str(), max, name.c_str(), dmean,
                  name.c_str(), dmax);
    }
    std::printf("f32_weight_bytes=%zu\n", exact->nbytes());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mt_weights_precision: %s\n", e.what());
    return 1;
  }
  return 0;
}
