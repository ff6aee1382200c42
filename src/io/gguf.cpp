#include "io/gguf.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <iterator>
#include <limits>

#include "util/error.h"

namespace flora {

static_assert(std::endian::native == std::endian::little, "the GGUF reader reads little-endian integers in place");

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32:
      return GgmlTypeTraits{"F32", 1, 4};
    case GgmlType::F16:
      return GgmlTypeTraits{"F16", 1, 2};
    case GgmlType::BF16:
      return GgmlTypeTraits{"BF16", 1, 2};
    case GgmlType::F64:
      return GgmlTypeTraits{"F64", 1, 8};
    case GgmlType::I8:
      return GgmlTypeTraits{"I8", 1, 1};
    case GgmlType::I16:
      return GgmlTypeTraits{"I16", 1, 2};
    case GgmlType::I32:
      return GgmlTypeTraits{"I32", 1, 4};
    case GgmlType::I64:
      return GgmlTypeTraits{"I64", 1, 8};
    // ggml's blocks (ggml-common.h): scales as f16 unless said otherwise.
    case GgmlType::Q4_0:
      return GgmlTypeTraits{"Q4_0", 32, 2 + 16};  // d, 32 nibbles
    case GgmlType::Q4_1:
      return GgmlTypeTraits{"Q4_1", 32, 2 + 2 + 16};  // d, m, 32 nibbles
    case GgmlType::Q5_0:
      return GgmlTypeTraits{"Q5_0", 32, 2 + 4 + 16};  // d, high bits, nibbles
    case GgmlType::Q5_1:
      return GgmlTypeTraits{"Q5_1", 32, 2 + 2 + 4 + 16};  // d, m, high bits, nibbles
    case GgmlType::Q8_0:
      return GgmlTypeTraits{"Q8_0", 32, 2 + 32};  // d, 32 int8
    case GgmlType::Q8_1:
      return GgmlTypeTraits{"Q8_1", 32, 2 + 2 + 32};  // d, s, 32 int8
    case GgmlType::Q2_K:
      return GgmlTypeTraits{"Q2_K", 256, 16 + 64 + 2 + 2};  // scales, 2-bit qs, d, dmin
    case GgmlType::Q3_K:
      return GgmlTypeTraits{"Q3_K", 256, 32 + 64 + 12 + 2};  // hmask, qs, scales, d
    case GgmlType::Q4_K:
      return GgmlTypeTraits{"Q4_K", 256, 2 + 2 + 12 + 128};  // d, dmin, 6-bit scales, nibbles
    case GgmlType::Q5_K:
      return GgmlTypeTraits{"Q5_K", 256, 2 + 2 + 12 + 32 + 128};
    case GgmlType::Q6_K:
      return GgmlTypeTraits{"Q6_K", 256, 128 + 64 + 16 + 2};  // ql, qh, int8 scales, d
    case GgmlType::Q8_K:
      return GgmlTypeTraits{"Q8_K", 256, 4 + 256 + 32};  // f32 d, int8 qs, i16 bsums
  }
  return std::nullopt;
}

std::string ggml_type_name(uint32_t type) {
  const auto t = ggml_type_traits(type);
  return t ? t->name : fmt::format("type {}", type);
}

namespace {
// The types flora reads, with the DType each is held in.
constexpr std::pair<GgmlType, DType> kReadTypes[] = {
    {GgmlType::F32, DType::F32},
    {GgmlType::F16, DType::F16},
    {GgmlType::BF16, DType::BF16},
    {GgmlType::Q8_0, DType::Q8_0},
    {GgmlType::Q4_0, DType::Q4_0},
    {GgmlType::Q4_K, DType::Q4_K},
    {GgmlType::Q6_K, DType::Q6_K},
};
}  // namespace

std::optional<DType> dtype_of_ggml(uint32_t type) {
  for (const auto& [g, d] : kReadTypes)
    if (static_cast<uint32_t>(g) == type) return d;
  return std::nullopt;
}

std::optional<uint32_t> ggml_type_of(DType dtype) {
  for (const auto& [g, d] : kReadTypes)
    if (d == dtype) return static_cast<uint32_t>(g);
  return std::nullopt;
}

std::string ggml_types_read() {
  std::string names;
  const size_t n = std::size(kReadTypes);
  for (size_t i = 0; i < n; ++i) {
    if (i) names += i + 1 == n ? " or " : ", ";
    names += ggml_type_traits(static_cast<uint32_t>(kReadTypes[i].first))->name;
  }
  return names;
}

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
      return "u8";
    case GgufValueType::I8:
      return "i8";
    case GgufValueType::U16:
      return "u16";
    case GgufValueType::I16:
      return "i16";
    case GgufValueType::U32:
      return "u32";
    case GgufValueType::I32:
      return "i32";
    case GgufValueType::F32:
      return "f32";
    case GgufValueType::BOOL:
      return "bool";
    case GgufValueType::STRING:
      return "string";
    case GgufValueType::ARRAY:
      return "array";
    case GgufValueType::U64:
      return "u64";
    case GgufValueType::I64:
      return "i64";
    case GgufValueType::F64:
      return "f64";
  }
  return "unknown";
}

namespace {

// Bytes of one scalar of type t as stored (strings: variable, 0 here).
size_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
      return 8;
    case GgufValueType::STRING:
    case GgufValueType::ARRAY:
      return 0;
  }
  return 0;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::F64); }

// Reads the header with every read checked against the bytes left.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& path) : p_(data), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const size_t at = pos_;
    const uint64_t n = get<uint64_t>(what.c_str());
    if (n > left())
      fail("{}: byte {}: {}: a string of {} bytes, but only {} bytes are left in the file", path_, at, what, n, left());
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  void need(size_t n, const char* what) const {
    if (n > left())
      fail("{}: byte {}: the file ends inside {} ({} bytes needed, {} left)", path_, pos_, what, n, left());
  }
  [[noreturn]] void bad(const std::string& message) const { fail("{}: byte {}: {}", path_, pos_, message); }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

void read_scalar(Reader& r, GgufValueType t, GgufValue& v, const std::string& what) {
  switch (t) {
    case GgufValueType::U8:
      v.uints.push_back(r.get<uint8_t>(what.c_str()));
      return;
    case GgufValueType::U16:
      v.uints.push_back(r.get<uint16_t>(what.c_str()));
      return;
    case GgufValueType::U32:
      v.uints.push_back(r.get<uint32_t>(what.c_str()));
      return;
    case GgufValueType::U64:
      v.uints.push_back(r.get<uint64_t>(what.c_str()));
      return;
    case GgufValueType::I8:
      v.ints.push_back(r.get<int8_t>(what.c_str()));
      return;
    case GgufValueType::I16:
      v.ints.push_back(r.get<int16_t>(what.c_str()));
      return;
    case GgufValueType::I32:
      v.ints.push_back(r.get<int32_t>(what.c_str()));
      return;
    case GgufValueType::I64:
      v.ints.push_back(r.get<int64_t>(what.c_str()));
      return;
    case GgufValueType::BOOL: {
      const uint8_t b = r.get<uint8_t>(what.c_str());
      if (b > 1) r.bad(fmt::format("{}: a bool of value {}: expected 0 or 1", what, b));
      v.ints.push_back(b);
      return;
    }
    case GgufValueType::F32:
      v.floats.push_back(r.get<float>(what.c_str()));
      return;
    case GgufValueType::F64:
      v.floats.push_back(r.get<double>(what.c_str()));
      return;
    case GgufValueType::STRING:
      v.strings.push_back(r.string(what));
      return;
    case GgufValueType::ARRAY:
      break;
  }
  r.bad(fmt::format("{}: arrays of arrays are not supported", what));
}

GgufValue read_value(Reader& r, const std::string& key) {
  const std::string what = fmt::format("the value of '{}'", key);
  const uint32_t type = r.get<uint32_t>(what.c_str());
  if (!known_value_type(type)) r.bad(fmt::format("'{}': value type {}: expected 0 to 12 (u8 ... f64)", key, type));
  GgufValue v;
  if (static_cast<GgufValueType>(type) != GgufValueType::ARRAY) {
    v.type = static_cast<GgufValueType>(type);
    read_scalar(r, v.type, v, what);
    return v;
  }
  v.array = true;
  const uint32_t elem = r.get<uint32_t>(what.c_str());
  if (!known_value_type(elem) || static_cast<GgufValueType>(elem) == GgufValueType::ARRAY)
    r.bad(fmt::format("'{}': array element type {}: expected 0 to 12 but not 9 (no arrays of arrays)", key, elem));
  v.type = static_cast<GgufValueType>(elem);
  const uint64_t n = r.get<uint64_t>(what.c_str());
  // Each element takes at least its scalar bytes (a string its 8-byte length):
  // a count the file cannot hold is refused before anything is reserved.
  const size_t min_bytes = v.type == GgufValueType::STRING ? 8 : scalar_bytes(v.type);
  if (n > r.left() / min_bytes)
    r.bad(fmt::format("'{}': an array of {} {} elements, but only {} bytes are left in the file", key, n,
                      gguf_value_type_name(v.type), r.left()));
  for (uint64_t i = 0; i < n; ++i) read_scalar(r, v.type, v, what);
  return v;
}

}  // namespace

size_t GgufValue::size() const { return ints.size() + uints.size() + floats.size() + strings.size(); }

std::string GgufValue::type_name() const {
  return array ? fmt::format("array of {}", gguf_value_type_name(type)) : gguf_value_type_name(type);
}

GgufValue GgufValue::u32(uint32_t v) { return GgufValue{GgufValueType::U32, false, {}, {v}, {}, {}}; }
GgufValue GgufValue::u64(uint64_t v) { return GgufValue{GgufValueType::U64, false, {}, {v}, {}, {}}; }
GgufValue GgufValue::i32(int32_t v) { return GgufValue{GgufValueType::I32, false, {v}, {}, {}, {}}; }
GgufValue GgufValue::f32(float v) { return GgufValue{GgufValueType::F32, false, {}, {}, {v}, {}}; }
GgufValue GgufValue::boolean(bool v) { return GgufValue{GgufValueType::BOOL, false, {v ? 1 : 0}, {}, {}, {}}; }
GgufValue GgufValue::string(std::string v) {
  return GgufValue{GgufValueType::STRING, false, {}, {}, {}, {std::move(v)}};
}
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  return GgufValue{GgufValueType::STRING, true, {}, {}, {}, std::move(v)};
}
GgufValue GgufValue::i32_array(const std::vector<int32_t>& v) {
  return GgufValue{GgufValueType::I32, true, std::vector<int64_t>(v.begin(), v.end()), {}, {}, {}};
}
GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  return GgufValue{GgufValueType::F32, true, {}, {}, std::vector<double>(v.begin(), v.end()), {}};
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

size_t gguf_tensor_bytes(uint32_t type, const std::vector<int64_t>& ne, const std::string& what) {
  const auto traits = ggml_type_traits(type);
  if (!traits) fail("{}: tensor type {}: not a ggml type that flora knows", what, type);
  if (ne.empty() || ne.size() > 4) fail("{}: {} dimensions: expected 1 to 4", what, ne.size());
  for (size_t i = 0; i < ne.size(); ++i)
    if (ne[i] < 1) fail("{}: ne[{}] is {}: expected at least 1", what, i, ne[i]);
  if (ne[0] % traits->block != 0)
    fail("{}: a row of {} elements: {} stores blocks of {}, so ne[0] must be a multiple of {}", what, ne[0],
         traits->name, traits->block, traits->block);
  // Checked in unsigned 64-bit against the largest size_t, factor by factor.
  uint64_t bytes = static_cast<uint64_t>(ne[0] / traits->block) * traits->block_bytes;
  for (size_t i = 1; i < ne.size(); ++i) {
    if (bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(ne[i]))
      fail("{}: the size of shape [{}] overflows", what, fmt::join(ne, ", "));
    bytes *= static_cast<uint64_t>(ne[i]);
  }
  if (bytes > std::numeric_limits<size_t>::max()) fail("{}: the size overflows", what);
  return static_cast<size_t>(bytes);
}

GgufFile::GgufFile(const std::string& path) : file_(path) {
  Reader r(file_.data(), file_.size(), path);
  const uint32_t magic = r.get<uint32_t>("the magic");
  if (std::memcmp(file_.data(), "GGUF", 4) != 0)
    fail("{}: not a GGUF file: the first 4 bytes are {:08x}, expected 47475546 (\"GGUF\")", path,
         __builtin_bswap32(magic));
  version_ = r.get<uint32_t>("the version");
  if (version_ == 1) fail("{}: GGUF version 1 (32-bit counts) is not supported: expected version 2 or 3", path);
  if (version_ != 2 && version_ != 3) {
    if (__builtin_bswap32(version_) == 2 || __builtin_bswap32(version_) == 3)
      fail("{}: a big-endian GGUF file: only little-endian files are supported", path);
    fail("{}: GGUF version {}: expected 2 or 3", path, version_);
  }
  const uint64_t n_tensors = r.get<uint64_t>("the tensor count");
  const uint64_t n_kv = r.get<uint64_t>("the metadata count");
  // A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
  if (n_kv > r.left() / 13)
    fail("{}: {} metadata entries, but only {} bytes are left in the file", path, n_kv, r.left());
  if (n_tensors > r.left() / 32)
    fail("{}: {} tensors, but only {} bytes are left in the file", path, n_tensors, r.left());

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.string(fmt::format("metadata key {}", i));
    if (key.empty()) r.bad(fmt::format("metadata key {} is empty", i));
    if (key_index_.count(key)) r.bad(fmt::format("metadata key '{}' appears twice", key));
    GgufValue v = read_value(r, key);
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (a->array || a->type != GgufValueType::U32)
      fail("{}: metadata key 'general.alignment': expected a u32, found {}", path, a->type_name());
    const uint64_t al = a->uints[0];
    if (al == 0 || (al & (al - 1)) != 0)
      fail("{}: metadata key 'general.alignment': {}: expected a power of two", path, al);
    alignment_ = static_cast<uint32_t>(al);
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.string(fmt::format("the name of tensor {}", i));
    const std::string what = fmt::format("tensor '{}'", t.name);
    if (tensor_index_.count(t.name)) r.bad(fmt::format("{} appears twice", what));
    const uint32_t n_dims = r.get<uint32_t>(what.c_str());
    if (n_dims < 1 || n_dims > 4) r.bad(fmt::format("{}: {} dimensions: expected 1 to 4", what, n_dims));
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = r.get<uint64_t>(what.c_str());
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        r.bad(fmt::format("{}: ne[{}] is {}: out of range", what, d, n));
      t.ne.push_back(static_cast<int64_t>(n));
    }
    t.type = r.get<uint32_t>(what.c_str());
    if (!ggml_type_traits(t.type)) r.bad(fmt::format("{}: type {}: not a ggml type that flora reads", what, t.type));
    t.offset = r.get<uint64_t>(what.c_str());
    t.nbytes = gguf_tensor_bytes(t.type, t.ne, fmt::format("{}: {}", path, what));
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = r.pos();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > file_.size() && !tensors_.empty())
    fail("{}: the header ends at byte {} and the data section at byte {} is past the end of the file ({} bytes)", path,
         header_end, data_start, file_.size());
  const uint64_t data_size = data_start <= file_.size() ? file_.size() - data_start : 0;
  std::vector<size_t> by_offset(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    by_offset[i] = i;
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}': offset {} is not a multiple of the alignment {}", path, t.name, t.offset, alignment_);
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail(
          "{}: tensor '{}': {} bytes at offset {} of the data section, which holds {} bytes (the file is truncated or "
          "the header lies)",
          path, t.name, t.nbytes, t.offset, data_size);
    t.data = file_.data() + data_start + t.offset;
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensor& prev = tensors_[by_offset[k - 1]];
    const GgufTensor& t = tensors_[by_offset[k]];
    if (prev.offset + prev.nbytes > t.offset)
      fail("{}: tensor '{}' (offset {}) overlaps tensor '{}' ({} bytes at offset {})", path, t.name, t.offset,
           prev.name, prev.nbytes, prev.offset);
  }
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->array && v->uints.size() == 1 && v->type != GgufValueType::BOOL) return v->uints[0];
  if (!v->array && v->ints.size() == 1 && v->type != GgufValueType::BOOL) {
    if (v->ints[0] < 0) fail("{}: metadata key '{}': {}: expected a non-negative integer", path(), key, v->ints[0]);
    return static_cast<uint64_t>(v->ints[0]);
  }
  fail("{}: metadata key '{}': expected an unsigned integer, found {}", path(), key, v->type_name());
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->array && v->floats.size() == 1) return v->floats[0];
  if (!v->array && v->type != GgufValueType::BOOL && v->uints.size() == 1) return static_cast<double>(v->uints[0]);
  if (!v->array && v->type != GgufValueType::BOOL && v->ints.size() == 1) return static_cast<double>(v->ints[0]);
  fail("{}: metadata key '{}': expected a number, found {}", path(), key, v->type_name());
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->array || v->type != GgufValueType::BOOL)
    fail("{}: metadata key '{}': expected a bool, found {}", path(), key, v->type_name());
  return v->ints[0] != 0;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->array || v->type != GgufValueType::STRING)
    fail("{}: metadata key '{}': expected a string, found {}", path(), key, v->type_name());
  return v->strings[0];
}

const std::vector<std::string>* GgufFile::get_strings(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return nullptr;
  if (!v->array || v->type != GgufValueType::STRING)
    fail("{}: metadata key '{}': expected an array of strings, found {}", path(), key, v->type_name());
  return &v->strings;
}

// ---- writing ----

namespace {

class Out {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &v, sizeof(T));
  }
  void string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void scalar(const GgufValue& v, size_t i) {
    switch (v.type) {
      case GgufValueType::U8:
        return put<uint8_t>(static_cast<uint8_t>(v.uints[i]));
      case GgufValueType::U16:
        return put<uint16_t>(static_cast<uint16_t>(v.uints[i]));
      case GgufValueType::U32:
        return put<uint32_t>(static_cast<uint32_t>(v.uints[i]));
      case GgufValueType::U64:
        return put<uint64_t>(v.uints[i]);
      case GgufValueType::I8:
        return put<int8_t>(static_cast<int8_t>(v.ints[i]));
      case GgufValueType::I16:
        return put<int16_t>(static_cast<int16_t>(v.ints[i]));
      case GgufValueType::I32:
        return put<int32_t>(static_cast<int32_t>(v.ints[i]));
      case GgufValueType::I64:
        return put<int64_t>(v.ints[i]);
      case GgufValueType::BOOL:
        return put<uint8_t>(v.ints[i] ? 1 : 0);
      case GgufValueType::F32:
        return put<float>(static_cast<float>(v.floats[i]));
      case GgufValueType::F64:
        return put<double>(v.floats[i]);
      case GgufValueType::STRING:
        return string(v.strings[i]);
      case GgufValueType::ARRAY:
        break;
    }
    FLORA_ASSERT(false);
  }
  std::vector<uint8_t> bytes;
};

}  // namespace

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    fail("{}: alignment {}: expected a power of two", path, alignment);
  std::vector<std::pair<std::string, GgufValue>> kv = metadata;
  const bool has_alignment =
      std::any_of(kv.begin(), kv.end(), [](const auto& e) { return e.first == "general.alignment"; });
  if (alignment != 32 && !has_alignment) kv.emplace_back("general.alignment", GgufValue::u32(alignment));
  for (size_t i = 0; i < kv.size(); ++i) {
    const GgufValue& v = kv[i].second;
    if (kv[i].first.empty()) fail("{}: metadata key {} is empty", path, i);
    for (size_t j = 0; j < i; ++j)
      if (kv[j].first == kv[i].first) fail("{}: metadata key '{}' given twice", path, kv[i].first);
    if (v.type == GgufValueType::ARRAY || (!v.array && v.size() != 1))
      fail("{}: metadata key '{}': a {} holding {} values", path, kv[i].first, v.type_name(), v.size());
    if (kv[i].first == "general.alignment" && (v.array || v.type != GgufValueType::U32 || v.uints[0] != alignment))
      fail("{}: metadata key 'general.alignment' must be the u32 {} the tensors are written at", path, alignment);
  }

  Out h;
  h.put<uint32_t>(0x46554747);  // "GGUF" as a little-endian u32
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(kv.size());
  for (const auto& [key, v] : kv) {
    h.string(key);
    if (v.array) {
      h.put<uint32_t>(static_cast<uint32_t>(GgufValueType::ARRAY));
      h.put<uint32_t>(static_cast<uint32_t>(v.type));
      h.put<uint64_t>(v.size());
    } else {
      h.put<uint32_t>(static_cast<uint32_t>(v.type));
    }
    for (size_t i = 0; i < v.size(); ++i) h.scalar(v, i);
  }
  std::vector<size_t> sizes;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorToWrite& t = tensors[i];
    for (size_t j = 0; j < i; ++j)
      if (tensors[j].name == t.name) fail("{}: tensor '{}' given twice", path, t.name);
    sizes.push_back(gguf_tensor_bytes(t.type, t.ne, fmt::format("{}: tensor '{}'", path, t.name)));
    if (!t.data && sizes.back() > 0) fail("{}: tensor '{}': no data", path, t.name);
    h.string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) h.put<uint64_t>(static_cast<uint64_t>(d));
    h.put<uint32_t>(t.type);
    h.put<uint64_t>(offset);
    offset = (offset + sizes.back() + alignment - 1) / alignment * alignment;
  }
  write_file_atomic(path, [&](std::FILE* f) {
    static const std::vector<uint8_t> zeros(4096, 0);
    auto write = [&](const void* p, size_t n) {
      if (n > 0 && std::fwrite(p, 1, n, f) != n) fail("{}: write failed", path);
    };
    auto pad = [&](uint64_t n) {
      const uint64_t r = n % alignment;
      for (uint64_t left = r ? alignment - r : 0; left > 0;) {
        const size_t k = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
        write(zeros.data(), k);
        left -= k;
      }
    };
    write(h.bytes.data(), h.bytes.size());
    pad(h.bytes.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      write(tensors[i].data, sizes[i]);
      if (i + 1 < tensors.size()) pad(sizes[i]);
    }
  });
}

}  // namespace flora
