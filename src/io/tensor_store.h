// The tensors of a model directory, by name: DIR/model.safetensors, or
// DIR/model.safetensors.index.json and the shards it names (layout in
// io/safetensors.h). All files stay mapped for the store's lifetime.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/safetensors.h"

namespace flora {

// Index of the first NaN or +-Inf among the n elements at data (F32, BF16,
// F16, or ggml's block formats, n whole blocks; other dtypes have none), or
// -1. One branch-light pass on the raw bits (the exponent all ones), no
// conversion: cheap enough to run over every weight at load (see
// LlamaModel::load). A block format's scales alone are scanned: an element is
// non-finite exactly when a scale of its block is.
int64_t first_nonfinite(const void* data, DType dtype, int64_t n);
inline int64_t first_nonfinite(const TensorView& t) { return first_nonfinite(t.data, t.dtype, t.numel()); }
// "NaN", "+Inf" or "-Inf": what element k of data is, for messages.
std::string nonfinite_name(const void* data, DType dtype, int64_t k);

class TensorStore {
 public:
  // When both model.safetensors.index.json and model.safetensors exist the index
  // wins (write_model_safetensors relies on this to stay readable mid-write).
  // Validates every file's header and the index against the shards: every
  // shard exists, every listed tensor is in its shard, no tensor is in two
  // shards, and no shard holds a tensor the index does not list.
  explicit TensorStore(const std::string& model_dir);
  // The tensors of a GGUF file, under the names `name_of` gives them (nullopt:
  // a tensor the caller does not read, left out). A view's shape is the GGUF
  // ne reversed (rows first, as safetensors), its name the file's own, for
  // messages. A named tensor of a type with no DType (dtype_of_ggml) fails.
  TensorStore(const std::string& gguf_path, const std::function<std::optional<std::string>(std::string_view)>& name_of);
  const GgufFile* gguf() const { return gguf_.get(); }  // null for a model directory
  // The mapped files' resident pages back to the kernel (MappedFile::drop_pages):
  // views stay valid and read from the file again when touched.
  void drop_pages() const;
  // The same for one tensor's pages (and the pages it shares with its neighbours).
  void drop_pages(const TensorView& t) const;

  const TensorView* find(std::string_view name) const;  // nullptr if absent
  // Fails "<dir>: tensor '<name>' not found ..." if absent.
  const TensorView& get(std::string_view name) const;
  // Also checks the shape (any dtype):
  // "<file>: tensor '<name>': expected shape [2048, 64], found [64, 2048]".
  const TensorView& get(std::string_view name, const std::vector<int64_t>& expected_shape) const;

  std::vector<std::string> names() const;              // sorted
  size_t total_bytes() const { return total_bytes_; }  // sum of all tensors' nbytes
  const std::string& dir() const { return dir_; }

 private:
  void add_file_tensors(const SafetensorsFile& file, const std::string& origin);

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;  // stable addresses for the views
  std::unique_ptr<GgufFile> gguf_;
  std::deque<TensorView> gguf_views_;                           // stable addresses
  std::map<std::string, std::string, std::less<>> file_names_;  // name asked for -> the file's name (GGUF)
  std::map<std::string, const TensorView*, std::less<>> by_name_;
  size_t total_bytes_ = 0;
};

}  // namespace flora
