#include "util/memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "util/error.h"

namespace flora {

AnonymousBuffer::AnonymousBuffer(size_t bytes, bool huge_pages) : size_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("cannot allocate {} bytes: {}", bytes, std::strerror(errno));
  if (huge_pages) ::madvise(p, bytes, MADV_HUGEPAGE);  // a hint: without THP support, small pages
  data_ = static_cast<uint8_t*>(p);
}

AnonymousBuffer::AnonymousBuffer(AnonymousBuffer&& other) noexcept { *this = std::move(other); }

AnonymousBuffer& AnonymousBuffer::operator=(AnonymousBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

AnonymousBuffer::~AnonymousBuffer() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace flora
