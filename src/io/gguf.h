// GGUF, llama.cpp's model file: the container only (typed metadata and
// tensors), read memory-mapped with every header field validated up front,
// and written atomically. What the keys and tensors mean for a Llama model is
// the model loader's business, not this file's.
//
// File layout (version 3; all integers little-endian):
//
//   u32  magic "GGUF"  (bytes 47 47 55 46)
//   u32  version       2 or 3, the same layout (version 1 had 32-bit counts;
//                      a big-endian file shows a byte-swapped version: both
//                      are refused by name)
//   u64  tensor_count
//   u64  metadata_kv_count
//   metadata_kv_count x { string key; u32 value_type; value }
//       string: u64 length, then that many bytes of UTF-8 (no terminator)
//       value:  the scalar of value_type, a string, or an array:
//               u32 element_type, u64 count, count elements (no arrays of arrays here)
//   tensor_count x { string name; u32 n_dims (1..4); u64 ne[n_dims]; u32 ggml_type; u64 offset }
//       ne[0] is the row length, the fastest-varying index: a Hugging Face
//       weight of shape (out, in) is ne = [in, out]. ne[0] is a multiple of the
//       type's block size; bytes = ne[0] / block * type_size * ne[1] * ...
//   padding to `general.alignment` (u32, a power of two; default 32)
//   data section: each tensor at data start + offset, offset a multiple of the
//       alignment, regions inside the file and not overlapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/dtype.h"
#include "util/file.h"

namespace flora {

// ggml's tensor types, with ggml's numbers.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct GgmlTypeTraits {
  const char* name;    // "Q4_K"
  int64_t block;       // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
};
// nullopt for a number that is not one of the types above (the IQ quants,
// removed types, garbage).
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type);
// "Q4_K", or "type 23" for a number without traits.
std::string ggml_type_name(uint32_t type);

// The DType a GGUF tensor type is held in (nullopt: a type flora does not
// read), the reverse, and the names of the types read, for messages.
std::optional<DType> dtype_of_ggml(uint32_t type);
std::optional<uint32_t> ggml_type_of(DType dtype);
std::string ggml_types_read();  // "F32, F16 or BF16"

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);  // "u32", "string", ...

// A metadata value: a scalar, or an array of scalars of one type. Integers
// and bools are held as int64 or uint64 (by signedness), floats as double.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;  // the scalar's type, or the array's element type
  bool array = false;
  std::vector<int64_t> ints;         // I8, I16, I32, I64, BOOL
  std::vector<uint64_t> uints;       // U8, U16, U32, U64
  std::vector<double> floats;        // F32, F64
  std::vector<std::string> strings;  // STRING

  size_t size() const;            // elements (1 for a scalar)
  std::string type_name() const;  // "u32", "array of string", ...

  static GgufValue u32(uint32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue i32(int32_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue i32_array(const std::vector<int32_t>& v);
  static GgufValue f32_array(const std::vector<float>& v);
};

// A tensor inside a mapped file; `data` lives as long as the GgufFile.
struct GgufTensor {
  std::string name;
  uint32_t type = 0;        // a GgmlType with traits (checked)
  std::vector<int64_t> ne;  // GGUF order: ne[0] the row length
  uint64_t offset = 0;      // from the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
};

// Bytes of a tensor of `type` and shape `ne`; fails naming `what` when ne[0]
// is not a multiple of the block, a dimension is below 1, or the size overflows.
size_t gguf_tensor_bytes(uint32_t type, const std::vector<int64_t>& ne, const std::string& what);

// One .gguf file, mapped read-only. The constructor validates the whole
// header (the layout above: every count and length against the bytes left,
// known value and tensor types, unique keys and names, dims, sizes, offsets,
// alignment) and fails with flora::Error naming the file, the byte offset,
// the key or tensor and what was expected; after that every tensor's
// [data, data + nbytes) lies inside the mapping.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::string& path() const { return file_.path(); }
  void drop_pages() const { file_.drop_pages(); }  // MappedFile::drop_pages
  void drop_pages(const uint8_t* p, size_t n) const { file_.drop_pages(p, n); }  // a range of the file
  const std::vector<GgufTensor>& tensors() const { return tensors_; }                           // in file order
  const GgufTensor* find_tensor(std::string_view name) const;                                   // nullptr if absent
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }  // in file order
  const GgufValue* find(std::string_view key) const;                                            // nullptr if absent

  // Typed reads of a scalar; each fails naming the file, the key and the type
  // found when the value has another type or is out of range, and returns
  // nullopt when the key is absent.
  std::optional<uint64_t> get_uint(std::string_view key) const;  // any integer type, >= 0
  std::optional<double> get_float(std::string_view key) const;   // F32 or F64 (or any integer)
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // An array of strings (nullptr when absent); fails on another type.
  const std::vector<std::string>* get_strings(std::string_view key) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> key_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// A tensor to write: `data` (not owned) holds gguf_tensor_bytes(type, ne) bytes.
struct GgufTensorToWrite {
  std::string name;
  uint32_t type = 0;
  std::vector<int64_t> ne;
  const void* data = nullptr;
};

// Writes a version 3 file through a temporary name (util/file.h), metadata in
// the order given, tensors packed in the order given at `alignment` (written
// as general.alignment when it is not the default 32). Fails naming the
// tensor or key on a duplicate or a size that does not match.
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, uint32_t alignment = 32);

}  // namespace flora
