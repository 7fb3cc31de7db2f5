// The safetensors reader: a small strict JSON parser that only knows the header's schema, the
// validation of every tensor's byte range, and the float conversions.
#include "meshtalk/safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

namespace meshtalk {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100000000;
// No real tensor has more dimensions; the cap bounds the memory a hostile header can make us use.
constexpr size_t kMaxRank = 64;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
  bool is_float;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1, false}, {DType::kU8, "U8", 1, false}, {DType::kI8, "I8", 1, false},
    {DType::kF8E4M3, "F8_E4M3", 1, true}, {DType::kF8E5M2, "F8_E5M2", 1, true},
    {DType::kI16, "I16", 2, false}, {DType::kU16, "U16", 2, false}, {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true}, {DType::kI32, "I32", 4, false}, {DType::kU32, "U32", 4, false},
    {DType::kF32, "F32", 4, true}, {DType::kI64, "I64", 8, false}, {DType::kU64, "U64", 8, false},
    {DType::kF64, "F64", 8, true},
};

const DTypeEntry& entry_of(DType dtype) noexcept {
  for (const DTypeEntry& e : kDTypes)
    if (e.dtype == dtype) return e;
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

std::string known_dtypes() {
  std::string out;
  for (const DTypeEntry& e : kDTypes) out += (out.empty() ? "" : ", ") + std::string(e.name);
  return out;
}

// Text taken from the file is shortened in messages (cut on a UTF-8 character boundary).
std::string clip(const std::string& s, size_t max = 200) {
  if (s.size() <= max) return s;
  while (max > 0 && (static_cast<unsigned char>(s[max]) & 0xc0) == 0x80) --max;
  return s.substr(0, max) + "...";
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// Byte-wise little-endian loads: correct on any host, no alignment needed.
uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t load_le64(const uint8_t* p) { return uint64_t(load_le32(p)) | (uint64_t(load_le32(p + 4)) << 32); }

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24 is exact in float32
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// float8 e4m3 "fn" variant (what torch and safetensors call F8_E4M3): bias 7, no infinities,
// S.1111.111 is NaN.
float f8e4m3_to_float(uint8_t b) {
  const uint32_t exponent = (b >> 3) & 0xfu;
  const uint32_t mantissa = b & 0x7u;
  float magnitude;
  if (exponent == 15 && mantissa == 7) magnitude = std::numeric_limits<float>::quiet_NaN();
  else if (exponent == 0) magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  else magnitude = std::ldexp(static_cast<float>(8 + mantissa), static_cast<int>(exponent) - 10);
  return (b & 0x80u) ? -magnitude : magnitude;
}

void encode_utf8(uint32_t cp, std::string* out) {
  static const uint8_t kLead[] = {0x00, 0xc0, 0xe0, 0xf0};
  const int extra = cp < 0x80 ? 0 : cp < 0x800 ? 1 : cp < 0x10000 ? 2 : 3;  // continuation bytes
  out->push_back(static_cast<char>(kLead[extra] | (cp >> (6 * extra))));
  for (int k = extra - 1; k >= 0; --k) out->push_back(static_cast<char>(0x80 | ((cp >> (6 * k)) & 0x3f)));
}

// Returns the offset of the first byte that is not part of well-formed UTF-8 (no overlong forms,
// no surrogates, nothing above U+10FFFF), or n if all of it is well-formed.
size_t find_invalid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return i;
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return n;
}

// Recursive descent over the header text, knowing the schema: an object of tensor entries plus
// "__metadata__". Anything outside the schema is an error, so no generic JSON value is ever built
// and a hostile header cannot make us allocate more than a small multiple of its own size.
class HeaderParser {
 public:
  HeaderParser(std::string prefix, const char* text, size_t size, uint64_t data_size)
      : prefix_(std::move(prefix)), s_(text), n_(size), data_size_(data_size) {}

  void parse(std::map<std::string, TensorInfo>* tensors, std::map<std::string, std::string>* meta) {
    const size_t bad = find_invalid_utf8(reinterpret_cast<const uint8_t*>(s_), n_);
    if (bad != n_) fail("invalid JSON header: invalid UTF-8 at byte " + std::to_string(bad));
    skip_ws();
    if (peek() != '{') expected("'{' (the header must be a JSON object)");
    bool seen_metadata = false;
    parse_object([&](const std::string& key) {
      if (key == "__metadata__") {
        if (seen_metadata) fail("duplicate key '__metadata__' in the header");
        seen_metadata = true;
        parse_metadata(meta);
      } else {
        if (tensors->count(key)) fail("duplicate key '" + clip(key) + "' in the header");
        TensorInfo info = parse_tensor(key);
        tensors->emplace(key, std::move(info));
      }
    });
    skip_ws();
    if (i_ != n_) expected("the end of the header after the top-level object");
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw Error(ErrorCode::kInvalidFormat, prefix_ + message);
  }
  [[noreturn]] void expected(const std::string& what) const {
    fail("invalid JSON header at byte " + std::to_string(i_) + ": expected " + what + ", found " +
         found());
  }
  std::string found() const {
    if (i_ >= n_) return "the end of the header";
    const unsigned char c = static_cast<unsigned char>(s_[i_]);
    if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
    return buf;
  }
  // What kind of JSON value starts here, for schema errors ("found a string").
  const char* value_kind() const {
    switch (peek()) {
      case '{': return "an object";
      case '[': return "an array";
      case '"': return "a string";
      case 't': case 'f': return "a boolean";
      case 'n': return "null";
      case '\0': return "nothing";
      default: return at_number() ? "a number" : "an invalid value";
    }
  }
  // A schema error ("X must be ..., found a string"), or a syntax error if no JSON value starts here.
  [[noreturn]] void wrong_kind(const std::string& expectation) const {
    const std::string kind = value_kind();
    if (kind == "nothing" || kind == "an invalid value") expected("a JSON value");
    fail(expectation + ", found " + kind);
  }
  char peek() const { return i_ < n_ ? s_[i_] : '\0'; }
  bool at_number() const { return peek() == '-' || (peek() >= '0' && peek() <= '9'); }
  void skip_ws() {
    while (i_ < n_ && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) expected(std::string("'") + c + "'");
    ++i_;
  }

  // '{' "key": <on_member parses the value> (',' ...)* '}'. Duplicate keys are on_member's job.
  template <typename OnMember>
  void parse_object(OnMember on_member) {
    expect('{');
    skip_ws();
    if (peek() == '}') { ++i_; return; }
    while (true) {
      skip_ws();
      if (peek() != '"') expected("a string key");
      const std::string key = parse_string();
      expect(':');
      skip_ws();
      on_member(key);
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == '}') { ++i_; return; }
      expected("',' or '}'");
    }
  }

  template <typename OnItem>
  void parse_array(OnItem on_item) {
    expect('[');
    skip_ws();
    if (peek() == ']') { ++i_; return; }
    for (size_t index = 0;; ++index) {
      skip_ws();
      on_item(index);
      skip_ws();
      if (peek() == ',') { ++i_; continue; }
      if (peek() == ']') { ++i_; return; }
      expected("',' or ']'");
    }
  }

  uint32_t parse_hex4() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      const char c = peek();
      const int d = (c >= '0' && c <= '9') ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) expected("a hex digit in a \\u escape");
      v = (v << 4) | static_cast<uint32_t>(d);
    }
    return v;
  }

  std::string parse_string() {
    ++i_;  // the opening quote, checked by the caller
    std::string out;
    while (true) {
      if (i_ >= n_) expected("'\"' to close the string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') { ++i_; return out; }
      if (c < 0x20) expected("an escaped control character inside a string");
      if (c != '\\') { out.push_back(static_cast<char>(c)); ++i_; continue; }
      ++i_;  // the backslash
      static const char kEscapes[] = "\"\\/bfnrt";
      static const char kMeanings[] = "\"\\/\b\f\n\r\t";
      const char* simple = peek() != '\0' ? std::strchr(kEscapes, peek()) : nullptr;
      if (simple) { out.push_back(kMeanings[simple - kEscapes]); ++i_; continue; }
      if (peek() != 'u') expected("a valid escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      ++i_;
      uint32_t cp = parse_hex4();
      if (cp >= 0xdc00 && cp <= 0xdfff) expected("a high surrogate before a low surrogate");
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (peek() != '\\' || i_ + 1 >= n_ || s_[i_ + 1] != 'u')
          expected("a \\u low surrogate after a high surrogate");
        i_ += 2;
        const uint32_t low = parse_hex4();
        if (low < 0xdc00 || low > 0xdfff) expected("a low surrogate (\\udc00-\\udfff)");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      }
      encode_utf8(cp, &out);
    }
  }

  void skip_digits(const char* what) {  // one or more
    if (peek() < '0' || peek() > '9') expected(what);
    while (peek() >= '0' && peek() <= '9') ++i_;
  }

  // A JSON number that must be a non-negative integer no larger than `max`; `what` names it.
  uint64_t parse_count(const std::string& what, uint64_t max) {
    if (!at_number()) wrong_kind(what + " must be a non-negative integer");
    const size_t start = i_;
    const bool negative = peek() == '-';
    if (negative) ++i_;
    const size_t digits_start = i_;
    if (peek() == '0') ++i_;
    else skip_digits("a digit");
    const size_t digits_end = i_;
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++i_;
      skip_digits("a digit after '.'");
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      skip_digits("a digit in the exponent");
    }
    const std::string literal = clip(std::string(s_ + start, i_ - start), 40);
    if (negative) fail(what + " must be a non-negative integer, found " + literal + " (negative)");
    if (!integral) fail(what + " must be a non-negative integer, found " + literal + " (not an integer)");
    uint64_t v = 0;
    for (size_t k = digits_start; k < digits_end; ++k) {
      const uint64_t d = static_cast<uint64_t>(s_[k] - '0');
      if (v > (max - d) / 10)
        fail(what + " = " + literal + " overflows (the maximum is " + std::to_string(max) + ")");
      v = v * 10 + d;
    }
    return v;
  }

  void parse_metadata(std::map<std::string, std::string>* meta) {
    if (peek() != '{') wrong_kind("__metadata__ must be an object of strings");
    parse_object([&](const std::string& key) {
      if (peek() != '"') wrong_kind("__metadata__ value of key '" + clip(key) + "' must be a string");
      std::string value = parse_string();
      if (!meta->emplace(key, std::move(value)).second)
        fail("duplicate key '" + clip(key) + "' in __metadata__");
    });
  }

  TensorInfo parse_tensor(const std::string& name) {
    const std::string ctx = "tensor '" + clip(name) + "': ";
    if (peek() != '{') wrong_kind(ctx + "entry must be an object with dtype, shape and data_offsets");
    TensorInfo t;
    t.name = name;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    auto once = [&](bool* seen, const std::string& field) {
      if (*seen) fail(ctx + "duplicate field '" + field + "'");
      *seen = true;
    };
    parse_object([&](const std::string& field) {
      if (field == "dtype") {
        once(&has_dtype, field);
        if (peek() != '"') wrong_kind(ctx + "dtype must be a string");
        const std::string dtype = parse_string();
        if (!parse_dtype(dtype, &t.dtype))
          fail(ctx + "unknown dtype \"" + clip(dtype) + "\" (expected one of " + known_dtypes() + ")");
      } else if (field == "shape") {
        once(&has_shape, field);
        if (peek() != '[') wrong_kind(ctx + "shape must be an array of integers");
        parse_array([&](size_t k) {
          if (k >= kMaxRank)
            fail(ctx + "shape has more than " + std::to_string(kMaxRank) + " dimensions");
          t.shape.push_back(static_cast<int64_t>(parse_count(
              ctx + "shape[" + std::to_string(k) + "]", std::numeric_limits<int64_t>::max())));
        });
      } else if (field == "data_offsets") {
        once(&has_offsets, field);
        if (peek() != '[') wrong_kind(ctx + "data_offsets must be an array [begin, end]");
        uint64_t offsets[2] = {0, 0};
        size_t count = 0;
        parse_array([&](size_t k) {
          const uint64_t v = parse_count(ctx + "data_offsets[" + std::to_string(k) + "]",
                                         std::numeric_limits<uint64_t>::max());
          if (k < 2) offsets[k] = v;
          count = k + 1;
        });
        if (count != 2)
          fail(ctx + "data_offsets must have 2 entries [begin, end], found " + std::to_string(count));
        t.begin = offsets[0];
        t.end = offsets[1];
      } else {
        fail(ctx + "unknown field '" + clip(field) + "' (expected dtype, shape, data_offsets)");
      }
    });
    if (!has_dtype) fail(ctx + "missing field 'dtype'");
    if (!has_shape) fail(ctx + "missing field 'shape'");
    if (!has_offsets) fail(ctx + "missing field 'data_offsets'");
    validate(ctx, &t);
    return t;
  }

  void validate(const std::string& ctx, TensorInfo* t) const {
    t->numel = 1;
    for (int64_t d : t->shape)
      if (!checked_mul(t->numel, static_cast<uint64_t>(d), &t->numel))
        fail(ctx + "the element count of shape " + shape_to_string(t->shape) + " overflows 64 bits");
    uint64_t nbytes;
    if (!checked_mul(t->numel, dtype_size(t->dtype), &nbytes))
      fail(ctx + "the byte size of shape " + shape_to_string(t->shape) + " overflows 64 bits");
    const std::string offsets =
        "data_offsets [" + std::to_string(t->begin) + ", " + std::to_string(t->end) + "]";
    if (t->begin > t->end) fail(ctx + offsets + ": begin must not exceed end");
    if (t->end - t->begin != nbytes)
      fail(ctx + offsets + " span " + std::to_string(t->end - t->begin) + " bytes, but dtype " +
           dtype_name(t->dtype) + " with shape " + shape_to_string(t->shape) + " needs " +
           std::to_string(nbytes) + " bytes");
    if (t->end > data_size_)
      fail(ctx + offsets + " end past the end of the data section (" + std::to_string(data_size_) +
           " bytes; is the file truncated?)");
  }

  std::string prefix_;
  const char* s_;
  size_t n_;
  uint64_t data_size_;
  size_t i_ = 0;
};

}  // namespace

const char* dtype_name(DType dtype) noexcept { return entry_of(dtype).name; }
size_t dtype_size(DType dtype) noexcept { return entry_of(dtype).size; }
bool dtype_is_float(DType dtype) noexcept { return entry_of(dtype).is_float; }

bool parse_dtype(const std::string& name, DType* out) noexcept {
  for (const DTypeEntry& e : kDTypes)
    if (name == e.name) { *out = e.dtype; return true; }
  return false;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const std::string prefix = "safetensors '" + path + "': ";
  if (path.find('\0') != std::string::npos)
    throw Error(ErrorCode::kInvalidArgument, prefix + "path: expected no embedded NUL byte, found one");
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found)
    throw Error(ErrorCode::kFileNotFound, prefix + "no such file");
  if (ec) throw Error(ErrorCode::kIo, prefix + "cannot open: " + ec.message());
  // Only regular files (symlinks followed): reading a device such as /dev/zero would never end.
  if (!std::filesystem::is_regular_file(status))
    throw Error(ErrorCode::kIo, prefix + "cannot open: " + (std::filesystem::is_directory(status)
                                                                 ? "is a directory" : "not a regular file"));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(ErrorCode::kIo, prefix + "cannot open: " + std::strerror(errno));
  // Read in chunks until EOF rather than trusting a size queried up front, which another process
  // could change under us.
  std::vector<uint8_t> bytes;
  const uintmax_t hint = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(hint));
  constexpr size_t kChunk = size_t(1) << 20;
  while (true) {
    const size_t old = bytes.size();
    bytes.resize(old + kChunk);
    const size_t got = std::fread(bytes.data() + old, 1, kChunk, f);
    bytes.resize(old + got);
    if (got < kChunk) break;
  }
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  if (read_error) throw Error(ErrorCode::kIo, prefix + "read error");
  return from_buffer(std::move(bytes), path);
}

SafetensorsFile SafetensorsFile::from_buffer(std::vector<uint8_t> bytes, std::string label) {
  SafetensorsFile file;
  file.label_ = std::move(label);
  file.bytes_ = std::move(bytes);
  file.parse();
  return file;
}

SafetensorsFile SafetensorsFile::from_memory(const void* data, size_t size, std::string label) {
  if (data == nullptr && size != 0)
    throw Error(ErrorCode::kInvalidArgument,
                "data: expected a non-null pointer for size " + std::to_string(size) + ", found null");
  const uint8_t* p = static_cast<const uint8_t*>(data);
  return from_buffer(std::vector<uint8_t>(p, p + size), std::move(label));
}

void SafetensorsFile::fail(ErrorCode code, const std::string& message) const {
  throw Error(code, "safetensors '" + label_ + "': " + message);
}

void SafetensorsFile::parse() {
  const uint64_t size = bytes_.size();
  const ErrorCode bad = ErrorCode::kInvalidFormat;
  if (size < 8)
    fail(bad, "file is " + std::to_string(size) + " bytes, expected at least 8 (the header length)");
  const uint64_t header = load_le64(bytes_.data());
  if (header > size - 8)
    fail(bad, "header length " + std::to_string(header) + " exceeds the " + std::to_string(size - 8) +
                  " bytes that follow it (is the file truncated?)");
  if (header > kMaxHeaderBytes)
    fail(bad, "header length " + std::to_string(header) + " exceeds the limit of " +
                  std::to_string(kMaxHeaderBytes) + " bytes");
  data_start_ = static_cast<size_t>(8 + header);
  HeaderParser parser("safetensors '" + label_ + "': ", reinterpret_cast<const char*>(bytes_.data() + 8),
                      static_cast<size_t>(header), size - data_start_);
  parser.parse(&tensors_, &metadata_);

  // Overlaps: sort the non-empty ranges by start; each must begin at or after the previous end.
  std::vector<const TensorInfo*> ranges;
  for (const auto& kv : tensors_)
    if (kv.second.nbytes() > 0) ranges.push_back(&kv.second);
  std::sort(ranges.begin(), ranges.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t k = 1; k < ranges.size(); ++k) {
    const TensorInfo& a = *ranges[k - 1];
    const TensorInfo& b = *ranges[k];
    if (b.begin < a.end)
      fail(bad, "tensors '" + clip(a.name) + "' (data_offsets [" + std::to_string(a.begin) + ", " +
                    std::to_string(a.end) + "]) and '" + clip(b.name) + "' (data_offsets [" +
                    std::to_string(b.begin) + ", " + std::to_string(b.end) + "]) overlap");
  }
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end())
    fail(ErrorCode::kKeyNotFound, "no tensor named '" + name + "' (the file has " +
                                      std::to_string(tensors_.size()) + " tensors)");
  return it->second;
}

ByteView SafetensorsFile::raw(const std::string& name) const {
  const TensorInfo& t = info(name);
  return ByteView{bytes_.data() + data_start_ + t.begin, static_cast<size_t>(t.nbytes())};
}

void SafetensorsFile::check_shape(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const TensorInfo& t = info(name);
  bool match = t.shape.size() == expected_shape.size();
  for (size_t k = 0; match && k < t.shape.size(); ++k)
    match = expected_shape[k] < 0 || expected_shape[k] == t.shape[k];
  if (!match)
    fail(ErrorCode::kInvalidArgument, "tensor '" + name + "': expected shape " +
                                          shape_to_string(expected_shape) + ", found " +
                                          shape_to_string(t.shape));
}

const TensorInfo& SafetensorsFile::float_info(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (!dtype_is_float(t.dtype))
    fail(ErrorCode::kInvalidArgument, "tensor '" + name +
                                          "': expected a floating-point dtype to read as float32, found " +
                                          dtype_name(t.dtype));
  return t;
}

void SafetensorsFile::read_f32(const std::string& name, float* dst, size_t dst_count) const {
  const TensorInfo& t = float_info(name);
  if (dst_count != t.numel)
    fail(ErrorCode::kInvalidArgument, "tensor '" + name + "': dst_count: expected " +
                                          std::to_string(t.numel) + " (the element count of shape " +
                                          shape_to_string(t.shape) + "), found " + std::to_string(dst_count));
  if (dst == nullptr && dst_count != 0)
    fail(ErrorCode::kInvalidArgument, "tensor '" + name + "': dst: expected a non-null pointer");
  const uint8_t* src = bytes_.data() + data_start_ + t.begin;
  const size_t n = static_cast<size_t>(t.numel);
  switch (t.dtype) {
    case DType::kF32:
      for (size_t i = 0; i < n; ++i) dst[i] = float_from_bits(load_le32(src + 4 * i));
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(load_le16(src + 2 * i));
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) dst[i] = float_from_bits(uint32_t(load_le16(src + 2 * i)) << 16);
      break;
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) {
        const uint64_t bits = load_le64(src + 8 * i);
        double d;
        std::memcpy(&d, &bits, sizeof d);
        dst[i] = static_cast<float>(d);  // IEEE rounding; out-of-range values become +-inf
      }
      break;
    case DType::kF8E5M2:  // the top byte of a float16
      for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(static_cast<uint16_t>(src[i] << 8));
      break;
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_float(src[i]);
      break;
    default:
      break;  // integer dtypes were rejected above
  }
}

std::vector<float> SafetensorsFile::tensor_f32(const std::string& name) const {
  std::vector<float> out(static_cast<size_t>(float_info(name).numel));
  read_f32(name, out.data(), out.size());
  return out;
}

std::vector<float> SafetensorsFile::tensor_f32(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  check_shape(name, expected_shape);
  return tensor_f32(name);
}

}  // namespace meshtalk
