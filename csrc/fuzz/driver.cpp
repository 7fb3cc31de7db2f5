// A standalone driver for the fuzz targets (LLVMFuzzerTestOneInput) where libFuzzer is not
// available (GCC). It runs the target on every seed, then on deterministic random mutations of the
// seeds until a run or time budget is spent. The flags are spelled as libFuzzer's, so a CTest
// command runs a libFuzzer build (-DMESHTALK_FUZZ_LIBFUZZER=ON) and a driver build the same way:
//
//   fuzz_X [-runs=N] [-max_total_time=SECONDS] [-seed=K] [-max_len=BYTES] [-artifact_prefix=P] INPUT...
//
// INPUT: files, or folders whose regular files are read (seeds). Without -runs and -max_total_time
// only the inputs run (reproducing a crash: fuzz_X crash-file). A crash (a sanitizer report, a trap,
// a signal) ends the process after writing the input that caused it to <artifact_prefix>crash-input.
// Unlike libFuzzer there is no coverage feedback: the mutations are blind but aimed at the
// header-like start of an input (where a parser decides), and at the numbers in text.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#if defined(__has_include)
#if __has_include(<sanitizer/common_interface_defs.h>) && \
    (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__) || defined(__has_feature))
#include <sanitizer/common_interface_defs.h>
#define MESHTALK_HAVE_SANITIZER_INTERFACE 1
#endif
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

// The input being run, for the crash handlers (written with async-signal-safe calls only).
const uint8_t* g_current = nullptr;
size_t g_current_size = 0;
char g_artifact[4096] = "crash-input";

void write_current_input() {
  if (g_current == nullptr && g_current_size != 0) return;
  const int fd = ::open(g_artifact, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  while (done < g_current_size) {
    const ssize_t n = ::write(fd, g_current + done, g_current_size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  const char msg[] = "\nfuzz driver: the crashing input was written to the artifact file\n";
  (void)!::write(2, msg, sizeof msg - 1);
}

void on_signal(int sig) {
  write_current_input();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct Rng {  // xorshift64*: deterministic for a given -seed
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
};

// Where a parser decides: the 8-byte length and the header it announces (clamped to the input).
size_t header_end(const Bytes& d) {
  if (d.size() < 8) return d.size();
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= uint64_t(d[k]) << (8 * k);
  return n > d.size() - 8 ? d.size() : static_cast<size_t>(8 + n);
}

size_t position(const Bytes& d, Rng& r) {  // 3 in 4 inside the header
  if (d.empty()) return 0;
  const size_t h = header_end(d);
  return (r.below(4) != 0 && h > 0) ? r.below(h) : r.below(d.size());
}

const char kInterestingChars[] = "{}[]\",:0123456789-+.eE \\u\x00\xff\x80\xc3";
const char* const kInterestingNumbers[] = {
    "0", "1", "-1", "2", "255", "256", "65536", "4294967295", "4294967296", "9223372036854775807",
    "9223372036854775808", "18446744073709551615", "18446744073709551616", "99999999999999999999999",
    "1e3", "1.5", "-0", "16000", "16001", "1048576", "1048577", "16777217"};

void mutate(Bytes& d, Rng& r, const std::vector<Bytes>& seeds, size_t max_len) {
  switch (r.below(10)) {
    case 0:
      if (!d.empty()) d[position(d, r)] ^= static_cast<uint8_t>(1u << r.below(8));
      break;
    case 1:
      if (!d.empty()) d[position(d, r)] = static_cast<uint8_t>(r.next());
      break;
    case 2:
      if (!d.empty()) d[position(d, r)] = static_cast<uint8_t>(kInterestingChars[r.below(sizeof kInterestingChars - 1)]);
      break;
    case 3: {  // erase a range
      if (d.empty()) break;
      const size_t at = position(d, r), n = std::min(d.size() - at, 1 + r.below(16));
      d.erase(d.begin() + static_cast<std::ptrdiff_t>(at), d.begin() + static_cast<std::ptrdiff_t>(at + n));
      break;
    }
    case 4: {  // insert random bytes
      const size_t at = position(d, r), n = 1 + r.below(8);
      for (size_t i = 0; i < n; ++i) d.insert(d.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(r.next()));
      break;
    }
    case 5: {  // copy a range elsewhere
      if (d.size() < 2) break;
      const size_t from = position(d, r), n = std::min(d.size() - from, 1 + r.below(32));
      const Bytes chunk(d.begin() + static_cast<std::ptrdiff_t>(from), d.begin() + static_cast<std::ptrdiff_t>(from + n));
      d.insert(d.begin() + static_cast<std::ptrdiff_t>(position(d, r)), chunk.begin(), chunk.end());
      break;
    }
    case 6:  // truncate
      d.resize(r.below(d.size() + 1));
      break;
    case 7: {  // the 8-byte length field
      if (d.size() < 8) break;
      const uint64_t size = d.size() - 8, h = header_end(d) - 8;
      const uint64_t choices[] = {0, 1, size, size + 1, size - 1, h + 1, h - 1, uint64_t(1) << 63, ~uint64_t(0), r.next()};
      const uint64_t v = choices[r.below(sizeof choices / sizeof choices[0])];
      for (int k = 0; k < 8; ++k) d[k] = static_cast<uint8_t>(v >> (8 * k));
      break;
    }
    case 8: {  // a number in the text -> an interesting one
      const size_t h = header_end(d);
      if (h <= 8) break;
      size_t at = 8 + r.below(h - 8);
      while (at < h && !(d[at] >= '0' && d[at] <= '9')) ++at;
      if (at >= h) break;
      size_t end = at;
      while (end < h && d[end] >= '0' && d[end] <= '9') ++end;
      const std::string num = kInterestingNumbers[r.below(sizeof kInterestingNumbers / sizeof kInterestingNumbers[0])];
      d.erase(d.begin() + static_cast<std::ptrdiff_t>(at), d.begin() + static_cast<std::ptrdiff_t>(end));
      d.insert(d.begin() + static_cast<std::ptrdiff_t>(at), num.begin(), num.end());
      break;
    }
    default: {  // splice: this input's start, another seed's rest
      const Bytes& other = seeds[r.below(seeds.size())];
      const size_t at = r.below(std::min(d.size(), other.size()) + 1);
      d.resize(at);
      d.insert(d.end(), other.begin() + static_cast<std::ptrdiff_t>(at), other.end());
      break;
    }
  }
  if (d.size() > max_len) d.resize(max_len);
}

void run(const Bytes& d) {
  g_current = d.data();
  g_current_size = d.size();
  LLVMFuzzerTestOneInput(d.data(), d.size());
  g_current = nullptr;
  g_current_size = 0;
}

bool read_file(const std::filesystem::path& path, Bytes* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

bool flag(const std::string& arg, const char* name, std::string* value) {
  const std::string prefix = std::string("-") + name + "=";
  if (arg.compare(0, prefix.size(), prefix) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  long long runs = -1;
  double max_time = -1;
  uint64_t seed = 1;
  size_t max_len = size_t(1) << 24;
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string v;
    if (flag(arg, "runs", &v)) runs = std::atoll(v.c_str());
    else if (flag(arg, "max_total_time", &v)) max_time = std::atof(v.c_str());
    else if (flag(arg, "seed", &v)) seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (flag(arg, "max_len", &v)) max_len = static_cast<size_t>(std::atoll(v.c_str()));
    else if (flag(arg, "artifact_prefix", &v)) std::snprintf(g_artifact, sizeof g_artifact, "%scrash-input", v.c_str());
    else if (!arg.empty() && arg[0] == '-') std::fprintf(stderr, "fuzz driver: ignoring unknown flag %s\n", arg.c_str());
    else inputs.emplace_back(arg);
  }
#ifdef MESHTALK_HAVE_SANITIZER_INTERFACE
  __sanitizer_set_death_callback(write_current_input);
#endif
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::signal(sig, on_signal);

  std::vector<Bytes> seeds;
  for (const auto& in : inputs) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(in);
    }
    for (const auto& f : files) {
      Bytes b;
      if (!read_file(f, &b)) {
        std::fprintf(stderr, "fuzz driver: cannot read %s\n", f.string().c_str());
        return 2;
      }
      seeds.push_back(std::move(b));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  for (const Bytes& s : seeds) run(s);
  std::printf("fuzz driver: %zu inputs ran\n", seeds.size());
  if (runs < 0 && max_time < 0) return 0;
  if (seeds.empty()) seeds.emplace_back();

  Rng rng{seed * 0x9e3779b97f4a7c15ull + 1};
  long long done = 0;
  double last_report = 0;
  while ((runs < 0 || done < runs) && (max_time < 0 || elapsed() < max_time)) {
    Bytes d = seeds[rng.below(seeds.size())];
    const size_t edits = 1 + rng.below(4);
    for (size_t e = 0; e < edits; ++e) mutate(d, rng, seeds, max_len);
    run(d);
    ++done;
    if (elapsed() - last_report >= 10) {
      last_report = elapsed();
      std::printf("fuzz driver: %lld runs, %.0f s\n", done, last_report);
      std::fflush(stdout);
    }
  }
  const double t = elapsed();
  std::printf("fuzz driver: done, %lld mutated runs in %.1f s (%.0f/s), seed %llu, no crash\n", done, t,
              t > 0 ? done / t : 0.0, static_cast<unsigned long long>(seed));
  return 0;
}
