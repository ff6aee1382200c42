// safetensors: reading (memory-mapped, whole header validated up front) and
// writing (atomic; optionally sharded the way Hugging Face transformers'
// save_pretrained shards).
//
// File layout (all integers little-endian):
//
//   1. u64   N                      length of the JSON header in bytes
//   2. u8[N] header                 UTF-8 JSON object, possibly padded with trailing
//                                   spaces (writers pad so that 8 + N is a multiple of 8):
//        {
//          "__metadata__": {"format": "pt", ...},        optional; string -> string
//          "<tensor name>": {
//            "dtype": "F32" | "F16" | "BF16" | ...,      see util/dtype.h
//            "shape": [d0, d1, ...],                     [] for a scalar; dims >= 0
//            "data_offsets": [begin, end]                relative to byte 8 + N
//          },
//          ...
//        }
//   3. u8[]  data section           from byte 8 + N to the end of the file; the
//                                   regions [begin, end) of all tensors tile it exactly:
//                                   no gap, no overlap, nothing after the last tensor.
//                                   end - begin == product(shape) * dtype_size(dtype).
//                                   Row-major, no alignment guaranteed: consumers copy
//                                   or read unaligned.
//
// A sharded model directory (write_model_safetensors, read by TensorStore in
// io/tensor_store.h) holds model-00001-of-0000N.safetensors ... and
//   model.safetensors.index.json:
//     {"metadata": {"total_size": <sum of tensor bytes>},
//      "weight_map": {"<tensor name>": "model-0000K-of-0000N.safetensors", ...}}
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/dtype.h"
#include "util/file.h"
#include "util/json.h"

namespace flora {

// A tensor inside a mapped file; `data` is NOT owned and lives as long as the
// SafetensorsFile (or TensorStore) it came from.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // [] for a scalar
  const uint8_t* data = nullptr;  // start of the tensor's bytes inside the mapping (unaligned)
  size_t nbytes = 0;
  std::string file;  // path of the file it lives in (for error messages)

  int64_t numel() const;  // product of shape; 1 for a scalar, 0 for an empty tensor
};

// One .safetensors file, mapped read-only. The constructor validates the whole
// header (see the layout above) and fails with flora::Error naming the file,
// the tensor and what was expected and found; after that every TensorView's
// [data, data + nbytes) lies inside the mapping.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::vector<TensorView>& tensors() const { return tensors_; }  // in order of offsets
  const TensorView* find(std::string_view name) const;                  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }
  void drop_pages() const { file_.drop_pages(); }  // MappedFile::drop_pages
  void drop_pages(const uint8_t* p, size_t n) const { file_.drop_pages(p, n); }  // a range of the file

 private:
  MappedFile file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write, given by pointer; `data` holds product(shape) *
// dtype_size(dtype) bytes, row-major (it may be null when that is 0).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes one file atomically (write_file_atomic). Data is laid out in the order
// given; the header is padded with spaces so that the data starts at a
// multiple of 8. Fails on duplicate or empty names, negative dims, and when the
// directory of `path` does not exist (nothing is left behind).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a model directory the way transformers' save_pretrained does (the
// directory is created if needed):
//  - all tensors fit in one shard of max_shard_bytes: DIR/model.safetensors;
//  - otherwise DIR/model-00001-of-0000N.safetensors ... and
//    DIR/model.safetensors.index.json. Tensors are never split and keep their
//    order; a shard closes when adding the next tensor would exceed the limit
//    (a tensor larger than the limit gets a shard of its own). If that yields a
//    single shard (one tensor over the limit) it is written as model.safetensors,
//    as transformers does.
// Files of a previous write (model.safetensors, model-NNNNN-of-NNNNN.safetensors,
// model.safetensors.index.json) that the new write does not produce are removed
// only after the new files are in place. The order of renames keeps the directory
// readable by TensorStore (which prefers the index) at every step, except when
// the new write has the same shard count as the old one: shards with equal names
// are replaced one by one before the new index lands.
void write_model_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             size_t max_shard_bytes,
                             const std::map<std::string, std::string>& metadata = {
                                 {"format", "pt"}});

// Parses `text` like parse_json (util/json.h) and also rejects duplicate keys in
// any object, which nlohmann would silently resolve to the last one:
// "<origin>: duplicate key '<key>'" (or "duplicate tensor name" at the top level
// when `top_level_is_tensors`).
Json parse_json_unique_keys(std::string_view text, const std::string& origin,
                            bool top_level_is_tensors = false);

// "[2048, 64]"
std::string format_shape(const std::vector<int64_t>& shape);

// `text` for an error message: control characters (and with ascii_only, every
// byte >= 0x80) as \xNN, so names read from a file cannot garble a terminal.
std::string printable(std::string_view text, bool ascii_only = false);

}  // namespace flora
