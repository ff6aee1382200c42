// Files: read-only memory maps for weights, whole-file reads for small text
// files, and atomic writes (temporary name, then rename) for every output.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace flora {

// A read-only mapping of a whole file. Move-only; unmaps on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);

// Writes `path` through `path.tmp.PID`: write_body receives the open FILE*,
// and the rename happens only after it returns and the data is flushed and
// synced. On any error the temporary file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write_body);
void write_file_atomic(const std::string& path, std::string_view contents);

// mkdir -p
void make_directories(const std::string& path);

}  // namespace flora
