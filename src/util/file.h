// Files: read-only memory maps for weights, whole-file reads for small text
// files, atomic writes (temporary name, then rename) for every output, and the
// directory syncs and replacements that make a rename survive a crash.
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
  // Gives the mapping's resident pages back to the kernel (madvise
  // MADV_DONTNEED): the mapping stays valid, and a later read faults the pages
  // in from the file again. For files whose contents were copied elsewhere.
  void drop_pages() const;
  // The same for the pages holding [p, p + n), a range of this mapping (the
  // pages at either end are dropped whole: they re-fault from the file).
  void drop_pages(const uint8_t* p, size_t n) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);

// Writes `path` through `path.tmp.PID`: write_body receives the open FILE*,
// and the rename happens only after it returns and the data is flushed and
// synced; the directory holding `path` is synced after the rename. On any
// error the temporary file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write_body);
void write_file_atomic(const std::string& path, std::string_view contents);

// mkdir -p
void make_directories(const std::string& path);

// fsync of a directory: a rename or creation inside it is durable only once its
// directory is synced (fsync of the file alone leaves the new name in the page
// cache, and a power cut can bring back the old one). Fails naming the directory.
void sync_directory(const std::string& dir);

// Makes the complete directory `staged` (beside `dir`, on the same file system)
// the new `dir`, so that at every instant `dir` is the whole old version or the
// whole new one: an atomic exchange of the two names (renameat2 RENAME_EXCHANGE)
// when `dir` exists, then the old version, now under `staged`, is removed; a plain
// rename when it does not. Where the file system has no exchange, the old version
// is renamed aside to `dir.old` first, so for a moment only `dir.old` exists.
// The parent directory is synced before the old version is deleted.
void replace_directory(const std::string& staged, const std::string& dir);

// A file that lines are appended to (a training log). Every write goes straight
// to the kernel and is checked, so a full disk or an I/O error ends the caller
// at the line that did not fit, with the file named, instead of a log that
// silently stops. sync() makes what was written durable.
class AppendFile {
 public:
  explicit AppendFile(const std::string& path);  // created if missing
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile();

  void write(std::string_view text);
  void sync();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace flora
