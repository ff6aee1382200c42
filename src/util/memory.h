// Large anonymous buffers, optionally backed by transparent huge pages.
#pragma once
#include <cstddef>
#include <cstdint>

namespace flora {

// Zero-filled, page-aligned, move-only; unmapped on destruction. With
// huge_pages the kernel is asked (madvise) for 2 MiB pages: a 2.5 GB weight
// set then needs 1,200 TLB entries instead of 600,000, and on the virtual
// machines flora is measured on, reads of it stall far less often.
class AnonymousBuffer {
 public:
  AnonymousBuffer() = default;
  AnonymousBuffer(size_t bytes, bool huge_pages);
  AnonymousBuffer(AnonymousBuffer&& other) noexcept;
  AnonymousBuffer& operator=(AnonymousBuffer&& other) noexcept;
  AnonymousBuffer(const AnonymousBuffer&) = delete;
  AnonymousBuffer& operator=(const AnonymousBuffer&) = delete;
  ~AnonymousBuffer();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace flora
