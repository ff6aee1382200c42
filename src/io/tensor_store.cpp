#include "io/tensor_store.h"

#include <cmath>
#include <cstring>
#include <vector>
#include <filesystem>

#include "ops/formats.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace flora {

namespace fs = std::filesystem;

namespace {

// Elements per block: a constant trip count lets -O2's cheap vectoriser turn
// the loop into a compare-and-or on whole registers with no remainder loop;
// the exact index is looked for only in a block that has a bad value.
constexpr int64_t kScanBlock = 1024;

// Any element of the block whose exponent bits (`exp`) are all ones?
template <typename U, U exp>
bool block_has_nonfinite(const uint8_t* p, int64_t n) {
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U x;
    std::memcpy(&x, p + i * static_cast<int64_t>(sizeof(U)), sizeof(U));  // unaligned in safetensors
    bad |= static_cast<U>((x & exp) == exp);
  }
  return bad != 0;
}

template <typename U, U exp>
int64_t first_nonfinite_bits(const uint8_t* p, int64_t n) {
  constexpr int64_t size = sizeof(U);
  int64_t start = 0;
  for (; start + kScanBlock <= n; start += kScanBlock)
    if (block_has_nonfinite<U, exp>(p + start * size, kScanBlock)) [[unlikely]]
      break;
  for (int64_t i = start; i < n; ++i) {
    U x;
    std::memcpy(&x, p + i * size, sizeof(U));
    if ((x & exp) == exp) return i;
  }
  return -1;
}

// A block format's element is non-finite exactly when a scale of its block is:
// the quantized values are small integers, and a finite f16 scale times them
// (Q4_K: d * sc * q - dmin * m, at most 65504 * 63 * 15 + 65504 * 63) stays
// finite, while a non-finite scale makes every element of its block Inf or NaN
// (Inf * 0 is NaN). So only the scales are scanned (offsets: ops/quant.h), and
// the answer is the block's first element.
int64_t first_nonfinite_block(const uint8_t* p, DType dtype, int64_t n) {
  const WeightFormat& f = weight_format(dtype, "the non-finite scan");
  int64_t scale_at[2] = {-1, -1};  // byte offsets of the block's f16 scales
  switch (dtype) {
    case DType::Q8_0:
      scale_at[0] = q8_0::kD;
      break;
    case DType::Q4_0:
      scale_at[0] = q4_0::kD;
      break;
    case DType::Q4_K:
      scale_at[0] = q4_k::kD, scale_at[1] = q4_k::kDmin;
      break;
    case DType::Q6_K:
      scale_at[0] = q6_k::kD;
      break;
    default:
      return -1;
  }
  for (int64_t b = 0; b < n / f.block_elems; ++b)
    for (const int64_t at : scale_at) {
      if (at < 0) continue;
      uint16_t h;
      std::memcpy(&h, p + b * f.block_bytes + at, 2);
      if ((h & 0x7c00) == 0x7c00) [[unlikely]]
        return b * f.block_elems;
    }
  return -1;
}

}  // namespace

int64_t first_nonfinite(const void* data, DType dtype, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  switch (dtype) {
    case DType::F32:
      return first_nonfinite_bits<uint32_t, 0x7f800000u>(p, n);
    case DType::BF16:
      return first_nonfinite_bits<uint16_t, 0x7f80>(p, n);
    case DType::F16:
      return first_nonfinite_bits<uint16_t, 0x7c00>(p, n);
    default:
      return is_quantized(dtype) ? first_nonfinite_block(p, dtype, n) : -1;
  }
}

std::string nonfinite_name(const void* data, DType dtype, int64_t k) {
  const auto* p = static_cast<const uint8_t*>(data);
  bool negative = false, nan = false;
  if (is_quantized(dtype)) {  // the value ggml's widening gives element k
    const WeightFormat& f = weight_format(dtype, "the non-finite scan");
    std::vector<float> block(static_cast<size_t>(f.block_elems));
    dequantize_row(dtype, p + k / f.block_elems * f.block_bytes, f.block_elems, block.data());
    const float x = block[static_cast<size_t>(k % f.block_elems)];
    return std::isnan(x) ? "NaN" : x < 0 ? "-Inf" : "+Inf";
  }
  if (dtype == DType::F32) {
    uint32_t x;
    std::memcpy(&x, p + 4 * k, 4);
    negative = x >> 31, nan = (x & 0x7fffffu) != 0;
  } else {
    uint16_t x;
    std::memcpy(&x, p + 2 * k, 2);
    negative = x >> 15, nan = (x & (dtype == DType::BF16 ? 0x7f : 0x3ff)) != 0;
  }
  return nan ? "NaN" : negative ? "-Inf" : "+Inf";
}

void TensorStore::add_file_tensors(const SafetensorsFile& file, const std::string& origin) {
  for (const TensorView& t : file.tensors()) {
    auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted)
      fail("{}: tensor '{}' is in two shards: {} and {}", origin, printable(t.name), it->second->file, t.file);
    total_bytes_ += t.nbytes;
  }
}

TensorStore::TensorStore(const std::string& model_dir) : dir_(model_dir) {
  const std::string index_path = (fs::path(model_dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(model_dir) / "model.safetensors").string();

  if (!fs::exists(index_path)) {
    if (!fs::exists(single_path)) {
      if (!fs::is_directory(model_dir)) fail("{}: model directory does not exist", model_dir);
      fail("{}: no model.safetensors or model.safetensors.index.json in the model directory", model_dir);
    }
    files_.push_back(std::make_unique<SafetensorsFile>(single_path));
    add_file_tensors(*files_.back(), single_path);
    return;
  }

  // Sharded: the index maps each tensor name to a shard file in the same directory.
  const Json index = parse_json_unique_keys(read_file(index_path), index_path);
  if (!index.is_object()) fail("{}: expected a JSON object, found a {}", index_path, index.type_name());
  auto wm = index.find("weight_map");
  if (wm == index.end()) fail("{}: missing key 'weight_map'", index_path);
  if (!wm->is_object())
    fail("{}: 'weight_map': expected an object of tensor name -> shard file, found a {}", index_path, wm->type_name());

  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> listed tensors
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      fail("{}: weight_map tensor '{}': expected a shard file name, found a {}", index_path, name, shard.type_name());
    const std::string file = shard.get<std::string>();
    // Shards are plain names in the model directory; a path could escape it.
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos)
      fail("{}: weight_map tensor '{}': expected a file name in {}, found '{}'", index_path, printable(name), model_dir,
           printable(file));
    by_shard[file].push_back(name);
  }

  for (const auto& [file, listed] : by_shard) {
    const std::string shard_path = (fs::path(model_dir) / file).string();
    if (!fs::exists(shard_path))
      fail("{}: shard {} (listed for tensor '{}' and {} others) does not exist", index_path, shard_path,
           printable(listed.front()), listed.size() - 1);
    files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
    const SafetensorsFile& sf = *files_.back();
    for (const std::string& name : listed)
      if (!sf.find(name))
        fail("{}: tensor '{}' is listed in {} but absent from the shard", shard_path, printable(name), index_path);
    for (const TensorView& t : sf.tensors()) {
      auto it = wm->find(t.name);
      if (it == wm->end()) fail("{}: tensor '{}' is not listed in {}", shard_path, printable(t.name), index_path);
    }
    add_file_tensors(sf, index_path);
  }
}

TensorStore::TensorStore(const std::string& gguf_path,
                         const std::function<std::optional<std::string>(std::string_view)>& name_of)
    : dir_(gguf_path), gguf_(std::make_unique<GgufFile>(gguf_path)) {
  for (const GgufTensor& t : gguf_->tensors()) {
    const std::optional<std::string> name = name_of(t.name);
    if (!name) continue;
    const std::optional<DType> dtype = dtype_of_ggml(t.type);
    if (!dtype)
      fail("{}: tensor '{}' is {}: flora reads {} tensors", gguf_path, printable(t.name), ggml_type_name(t.type),
           ggml_types_read());
    if (by_name_.count(*name))
      fail("{}: tensors '{}' and '{}' are both {}", gguf_path, printable(file_names_[*name]), printable(t.name), *name);
    TensorView& v = gguf_views_.emplace_back();
    v.name = t.name;
    v.dtype = *dtype;
    v.shape.assign(t.ne.rbegin(), t.ne.rend());
    v.data = t.data;
    v.nbytes = t.nbytes;
    v.file = gguf_path;
    by_name_.emplace(*name, &v);
    file_names_.emplace(*name, t.name);
    total_bytes_ += t.nbytes;
  }
}

void TensorStore::drop_pages() const {
  for (const auto& f : files_) f->drop_pages();
  if (gguf_) gguf_->drop_pages();
}

void TensorStore::drop_pages(const TensorView& t) const {
  if (gguf_) return gguf_->drop_pages(t.data, t.nbytes);
  for (const auto& f : files_)
    if (f->path() == t.file) return f->drop_pages(t.data, t.nbytes);
  fail("internal error: tensor '{}' ({}) is in none of the store's files", printable(t.name), t.file);
}

const TensorView* TensorStore::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& TensorStore::get(std::string_view name) const {
  const TensorView* t = find(name);
  if (!t && gguf_)
    fail("{}: tensor '{}' not found (the file has {} tensors flora reads)", dir_, printable(name), by_name_.size());
  if (!t)
    fail("{}: tensor '{}' not found (the model directory has {} tensors)", dir_, printable(name), by_name_.size());
  return *t;
}

const TensorView& TensorStore::get(std::string_view name, const std::vector<int64_t>& expected_shape) const {
  const TensorView& t = get(name);
  if (t.shape != expected_shape)
    fail("{}: tensor '{}': expected shape {}, found {}", t.file, printable(t.name), format_shape(expected_shape),
         format_shape(t.shape));
  return t;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, view] : by_name_) out.push_back(name);
  return out;
}

}  // namespace flora
