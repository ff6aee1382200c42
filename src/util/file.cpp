#include "util/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace flora {

namespace {

std::string parent_of(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(e));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: cannot map {} bytes: {}", path, size_, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

void MappedFile::drop_pages() const {
  // A private read-only file mapping: dropped pages are the file's, so nothing is lost.
  if (data_) ::madvise(const_cast<uint8_t*>(data_), size_, MADV_DONTNEED);
}

void MappedFile::drop_pages(const uint8_t* p, size_t n) const {
  FLORA_ASSERT(data_ && p >= data_ && n <= size_ && static_cast<size_t>(p - data_) <= size_ - n);
  // madvise wants a page-aligned start and rounds the length up to whole pages.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  if (n > 0) ::madvise(reinterpret_cast<void*>(begin), reinterpret_cast<uintptr_t>(p) + n - begin, MADV_DONTNEED);
}

MappedFile::MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return ss.str();
}

bool file_exists(const std::string& path) { return std::filesystem::exists(path); }

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write_body) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  try {
    write_body(f);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      fail("{}: write failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    fail("{}: close failed: {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    fail("{}: cannot rename from {}: {}", path, tmp, std::strerror(e));
  }
  sync_directory(parent_of(path));
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  write_file_atomic(path, [&](std::FILE* f) {
    if (!contents.empty() && std::fwrite(contents.data(), 1, contents.size(), f) != contents.size())
      fail("{}: write failed: {}", path, std::strerror(errno));
  });
}

void make_directories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail("{}: cannot create directory: {}", path, ec.message());
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open directory to sync it: {}", dir, std::strerror(errno));
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  const int e = errno;
  ::close(fd);
  // EINVAL: the file system cannot sync directories (some FUSE and network ones);
  // its renames are then as durable as it makes them, and there is nothing more to do.
  if (rc != 0 && e != EINVAL) fail("{}: cannot sync directory: {}", dir, std::strerror(e));
}

void replace_directory(const std::string& staged, const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string parent = parent_of(dir);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (std::rename(staged.c_str(), dir.c_str()) != 0)
      fail("{}: cannot rename from {}: {}", dir, staged, std::strerror(errno));
    sync_directory(parent);
    return;
  }
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    sync_directory(parent);
    fs::remove_all(staged, ec);
    if (ec) fail("{}: cannot remove the replaced version: {}", staged, ec.message());
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    fail("{}: cannot exchange with {}: {}", dir, staged, std::strerror(errno));
  const std::string old = dir + ".old";
  fs::remove_all(old, ec);
  if (ec) fail("{}: cannot remove a leftover: {}", old, ec.message());
  if (std::rename(dir.c_str(), old.c_str()) != 0)
    fail("{}: cannot rename aside to {}: {}", dir, old, std::strerror(errno));
  if (std::rename(staged.c_str(), dir.c_str()) != 0) {
    const int e = errno;
    std::rename(old.c_str(), dir.c_str());  // put the old version back: it is still complete
    fail("{}: cannot rename from {}: {}", dir, staged, std::strerror(e));
  }
  sync_directory(parent);
  fs::remove_all(old, ec);
  if (ec) fail("{}: cannot remove the replaced version: {}", old, ec.message());
}

AppendFile::AppendFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open for appending: {}", path, std::strerror(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::write(std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {}", path_, n < 0 ? std::strerror(errno) : "no progress");
    text.remove_prefix(static_cast<size_t>(n));
  }
}

void AppendFile::sync() {
  int rc;
  do rc = ::fdatasync(fd_);
  while (rc != 0 && errno == EINTR);
  // EINVAL: a file that cannot be synced (a pipe, a character device); nothing is lost by not syncing it.
  if (rc != 0 && errno != EINVAL) fail("{}: sync failed: {}", path_, std::strerror(errno));
}

}  // namespace flora
