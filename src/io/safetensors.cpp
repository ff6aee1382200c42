#include "io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "util/error.h"

namespace flora {

namespace {

namespace fs = std::filesystem;

// Same limit as Hugging Face's safetensors: a larger header is a corrupt length
// field, not a real model (Llama 3 405B's headers are a few tens of kB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// A JSON value for an error message, cut to a readable length (at a UTF-8
// character boundary, so the message stays valid UTF-8).
std::string brief(const Json& value) {
  std::string s = value.dump();
  constexpr size_t kMax = 60;
  if (s.size() <= kMax) return s;
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

std::string dtype_list() {
  std::string s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

// product(shape) * dtype_size, or false on overflow of size_t.
bool checked_nbytes(const std::vector<int64_t>& shape, DType dtype, size_t* out) {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// model.safetensors, model.safetensors.index.json, model-NNNNN-of-NNNNN.safetensors:
// the files a write_model_safetensors may have left in a directory.
bool is_model_weights_file(const std::string& name) {
  if (name == "model.safetensors" || name == "model.safetensors.index.json") return true;
  size_t i = 0;  // parse position
  auto digits = [&] {  // at least 5, as "{:05d}" writes them
    const size_t start = i;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
    return i - start >= 5;
  };
  auto lit = [&](std::string_view s) {
    if (name.compare(i, s.size(), s) != 0) return false;
    i += s.size();
    return true;
  };
  return lit("model-") && digits() && lit("-of-") && digits() && lit(".safetensors") &&
         i == name.size();
}

}  // namespace

std::string printable(std::string_view text, bool ascii_only) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || (ascii_only && c >= 0x80)) out += fmt::format("\\x{:02x}", c);
    else out += ch;
  }
  return out;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // cannot overflow: validated on load (nbytes fits)
  return n;
}

Json parse_json_unique_keys(std::string_view text, const std::string& origin,
                            bool top_level_is_tensors) {
  // The parser callback sees every key; one set of seen keys per open object.
  // The first duplicate is remembered and reported after parsing rather than
  // thrown from inside nlohmann's parser.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_at_top = false;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case Json::parse_event_t::object_end: open_objects.pop_back(); break;
      case Json::parse_event_t::key:
        if (duplicate.empty() && !open_objects.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second) {
          duplicate = parsed.get<std::string>();
          duplicate_at_top = open_objects.size() == 1;
        }
        break;
      default: break;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann quotes the bytes it last read, which may be anything.
    fail("{}: invalid JSON at byte {}: {}", origin, e.byte, printable(e.what(), true));
  }
  if (!duplicate.empty()) {
    if (duplicate_at_top && top_level_is_tensors)
      fail("{}: duplicate tensor name '{}'", origin, printable(duplicate));
    fail("{}: duplicate key '{}'", origin, printable(duplicate));
  }
  return j;
}

// ---------------------------------------------------------------------------
// Reading

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const uint8_t* bytes = file_.data();
  const size_t file_size = file_.size();

  // 1. Header length.
  if (file_size < 8)
    fail("{}: not a safetensors file: {} bytes, expected at least the 8-byte header length",
         path, file_size);
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is absurd (limit {} bytes): corrupt or not a safetensors file",
         path, header_len, kMaxHeaderBytes);
  if (header_len > file_size - 8)
    fail("{}: header length {} exceeds the {} bytes that follow it (file is {} bytes; truncated?)",
         path, header_len, file_size - 8, file_size);
  const uint8_t* data_section = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  // 2. Header JSON.
  const std::string origin = fmt::format("{}: header", path);
  const Json header = parse_json_unique_keys(
      std::string_view(reinterpret_cast<const char*>(bytes + 8), header_len), origin, true);
  if (!header.is_object())
    fail("{}: header: expected a JSON object, found {}", path, brief(header));

  // Tensors with their offsets, before the tiling check.
  struct Entry {
    uint64_t begin, end;
    TensorView view;
  };
  std::vector<Entry> entries;
  entries.reserve(header.size());

  for (const auto& item : header.items()) {
    // Plain references, not a structured binding: clang 14 cannot capture those.
    const std::string& key_name = item.key();
    const std::string name = printable(key_name);  // for messages
    const Json& value = item.value();
    if (key_name == "__metadata__") {
      if (!value.is_object())
        fail("{}: __metadata__: expected an object of strings, found {}", path, brief(value));
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          fail("{}: __metadata__ key '{}': expected a string, found {}", path, printable(key),
               brief(v));
        metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object())
      fail("{}: tensor '{}': expected an object with dtype, shape and data_offsets, found {}",
           path, name, brief(value));
    auto field = [&](const char* key) -> const Json& {
      auto it = value.find(key);
      if (it == value.end()) fail("{}: tensor '{}': missing '{}'", path, name, key);
      return *it;
    };

    // dtype
    const Json& dtype_json = field("dtype");
    if (!dtype_json.is_string())
      fail("{}: tensor '{}': 'dtype': expected a string, found {}", path, name,
           brief(dtype_json));
    const std::string dtype_str = dtype_json.get<std::string>();
    const auto dtype = parse_dtype(dtype_str);
    if (!dtype)
      fail("{}: tensor '{}': unknown dtype '{}' (expected one of {})", path, name,
           printable(dtype_str), dtype_list());

    // shape
    const Json& shape_json = field("shape");
    if (!shape_json.is_array())
      fail("{}: tensor '{}': 'shape': expected an array of non-negative integers, found {}", path,
           name, brief(shape_json));
    std::vector<int64_t> shape;
    shape.reserve(shape_json.size());
    for (const Json& d : shape_json) {
      // nlohmann stores non-negative integers as unsigned, negative ones as signed.
      if (d.is_number_unsigned()) {
        if (d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail("{}: tensor '{}': 'shape' {}: dimension {} is too large", path, name,
               brief(shape_json), d.get<uint64_t>());
        shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
      } else if (d.is_number_integer()) {
        if (d.get<int64_t>() < 0)
          fail("{}: tensor '{}': 'shape' {}: negative dimension {}", path, name,
               brief(shape_json), d.get<int64_t>());
        shape.push_back(d.get<int64_t>());  // "-0"
      } else {
        fail("{}: tensor '{}': 'shape' {}: expected non-negative integers, found {}", path, name,
             brief(shape_json), brief(d));
      }
    }
    size_t nbytes = 0;
    if (!checked_nbytes(shape, *dtype, &nbytes))
      fail("{}: tensor '{}': shape {} of {} overflows: product of dimensions times {} bytes "
           "does not fit in 64 bits",
           path, name, format_shape(shape), dtype_str, dtype_size(*dtype));

    // data_offsets
    const Json& off_json = field("data_offsets");
    if (!off_json.is_array() || off_json.size() != 2 || !off_json[0].is_number_unsigned() ||
        !off_json[1].is_number_unsigned())
      fail("{}: tensor '{}': 'data_offsets': expected [begin, end] (two non-negative integers), "
           "found {}",
           path, name, brief(off_json));
    const uint64_t begin = off_json[0].get<uint64_t>(), end = off_json[1].get<uint64_t>();
    if (begin > end)
      fail("{}: tensor '{}': data_offsets [{}, {}] are reversed (expected begin <= end)", path,
           name, begin, end);
    if (end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] end past the end of the data section ({} "
           "bytes; truncated file?)",
           path, name, begin, end, data_size);
    if (end - begin != nbytes)
      fail("{}: tensor '{}': expected {} bytes (shape {} x {} bytes of {}), found data_offsets "
           "[{}, {}] spanning {} bytes",
           path, name, nbytes, format_shape(shape), dtype_size(*dtype), dtype_str, begin, end,
           end - begin);

    TensorView view;
    view.name = key_name;
    view.dtype = *dtype;
    view.shape = std::move(shape);
    view.data = data_section + begin;  // begin <= data_size: inside the mapping or one past it
    view.nbytes = nbytes;
    view.file = path;
    entries.push_back(Entry{begin, end, std::move(view)});
  }

  // 3. Data regions tile [0, data_size): sort by offsets, then each region must
  // start where the previous one ended (empty tensors sit between neighbours).
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected_begin = 0;
  const std::string* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin > expected_begin) {
      if (previous)
        fail("{}: gap of {} bytes in the data section between tensor '{}' (ends at {}) and "
             "tensor '{}' (starts at {})",
             path, e.begin - expected_begin, printable(*previous), expected_begin,
             printable(e.view.name), e.begin);
      fail("{}: gap of {} bytes at the start of the data section before tensor '{}' (expected "
           "it to start at 0)",
           path, e.begin, printable(e.view.name));
    }
    if (e.begin < expected_begin)
      fail("{}: tensor '{}' (data_offsets [{}, {}]) and tensor '{}' (ends at {}) overlap", path,
           printable(e.view.name), e.begin, e.end, printable(*previous), expected_begin);
    expected_begin = e.end;
    previous = &e.view.name;
  }
  if (expected_begin != data_size) {
    if (previous)
      fail("{}: gap: {} bytes after the last tensor '{}' (data section is {} bytes, tensors "
           "end at {})",
           path, data_size - expected_begin, printable(*previous), data_size, expected_begin);
    fail("{}: gap: {} bytes of data after the header but no tensors", path, data_size);
  }

  tensors_.reserve(entries.size());
  for (Entry& e : entries) {
    index_.emplace(e.view.name, tensors_.size());
    tensors_.push_back(std::move(e.view));
  }
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------
// Writing

namespace {

// Checks names, shapes and pointers; returns each tensor's byte size.
std::vector<size_t> validate_for_writing(const std::string& path,
                                         const std::vector<TensorToWrite>& tensors) {
  std::vector<size_t> sizes;
  sizes.reserve(tensors.size());
  std::set<std::string_view> seen;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty()) fail("{}: cannot write a tensor with an empty name", path);
    if (t.name == "__metadata__")
      fail("{}: cannot write a tensor named '__metadata__' (reserved by safetensors)", path);
    if (!seen.insert(t.name).second)
      fail("{}: duplicate tensor name '{}'", path, printable(t.name));
    size_t n = 0;
    if (is_quantized(t.dtype))  // dtype_size 0: it would write a header no reader accepts
      fail("{}: tensor '{}': safetensors has no dtype {} (ggml's block formats go into GGUF files)", path, t.name,
           dtype_name(t.dtype));
    if (!checked_nbytes(t.shape, t.dtype, &n))
      fail("{}: tensor '{}': invalid shape {} (negative dimension or size overflow)", path,
           t.name, format_shape(t.shape));
    if (n > 0 && t.data == nullptr)
      fail("{}: tensor '{}': no data for {} bytes (null pointer)", path, t.name, n);
    sizes.push_back(n);
  }
  return sizes;
}

void write_all(std::FILE* f, const void* p, size_t n, const std::string& path) {
  if (n > 0 && std::fwrite(p, 1, n, f) != n)
    fail("{}: write failed: {}", path, std::strerror(errno));
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // A clearer message than the temporary file's "cannot create".
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::is_directory(parent, ec))
    fail("{}: cannot write: directory '{}' does not exist", path, parent.string());

  const std::vector<size_t> sizes = validate_for_writing(path, tensors);

  // Header in data order (ordered_json keeps insertion order), metadata first.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    if (__builtin_add_overflow(offset, sizes[i], &offset))
      fail("{}: total tensor size overflows 64 bits", path);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset - sizes[i], offset}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error& e) {
    fail("{}: a tensor name or metadata string is not valid UTF-8: {}", path, e.what());
  }
  // Pad with spaces so that the data section starts 8-byte aligned, as HF's writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  write_file_atomic(path, [&](std::FILE* f) {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));
    write_all(f, len, 8, path);
    write_all(f, text.data(), text.size(), path);
    for (size_t i = 0; i < tensors.size(); ++i) write_all(f, tensors[i].data, sizes[i], path);
  });
}

void write_model_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             size_t max_shard_bytes,
                             const std::map<std::string, std::string>& metadata) {
  make_directories(dir);
  const std::vector<size_t> sizes = validate_for_writing(dir, tensors);

  // Greedy split in the given order (transformers / huggingface_hub do the same).
  std::vector<std::vector<TensorToWrite>> shards;
  uint64_t total = 0, shard_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t grown = 0;
    if (shards.empty() ||
        (!shards.back().empty() &&
         (__builtin_add_overflow(shard_bytes, sizes[i], &grown) || grown > max_shard_bytes))) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(tensors[i]);
    shard_bytes += sizes[i];
    if (__builtin_add_overflow(total, sizes[i], &total))
      fail("{}: total tensor size overflows 64 bits", dir);
  }

  const std::string index_name = "model.safetensors.index.json";
  std::set<std::string> written;
  if (shards.size() <= 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, metadata);
    written.insert("model.safetensors");
  } else {
    Json weight_map = Json::object();
    const size_t n = shards.size();
    for (size_t k = 0; k < n; ++k) {
      const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, n);
      write_safetensors((fs::path(dir) / name).string(), shards[k], metadata);
      for (const TensorToWrite& t : shards[k]) weight_map[t.name] = name;
      written.insert(name);
    }
    // The index goes last: it is what makes the new shards the model.
    Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
    write_file_atomic((fs::path(dir) / index_name).string(), index.dump(2) + "\n");
    written.insert(index_name);
  }

  // Remove a previous write's files. A stale index goes first: while it exists
  // TensorStore would read it instead of a new model.safetensors.
  auto remove = [&](const fs::path& p) {
    std::error_code rm_ec;
    if (!fs::remove(p, rm_ec) && rm_ec)
      fail("{}: cannot remove stale file: {}", p.string(), rm_ec.message());
  };
  if (!written.count(index_name) && fs::exists(fs::path(dir) / index_name))
    remove(fs::path(dir) / index_name);
  std::vector<fs::path> stale;
  std::error_code it_ec;
  for (const auto& entry : fs::directory_iterator(dir, it_ec)) {
    const std::string name = entry.path().filename().string();
    if (is_model_weights_file(name) && !written.count(name)) stale.push_back(entry.path());
  }
  if (it_ec) fail("{}: cannot list directory: {}", dir, it_ec.message());
  for (const fs::path& p : stale) remove(p);
}

}  // namespace flora
