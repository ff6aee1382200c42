// libFuzzer target for SafetensorsFile: any input must either open (and then
// every tensor's bytes lie inside the file) or throw flora::Error.
// Not built by CMake. Build and run from the repository root:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
//     tests/fuzz/fuzz_safetensors.cpp src/io/safetensors.cpp src/util/file.cpp \
//     src/util/json.cpp src/util/dtype.cpp -lfmt -o fuzz_safetensors
//   mkdir -p corpus && ./fuzz_safetensors -max_len=4096 corpus
//
// (A seed file written by write_safetensors helps it reach the tensor checks.)
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SafetensorsFile maps a path, so the input goes through a per-process file.
  static const std::string path = "/tmp/fuzz_safetensors." + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  try {
    flora::SafetensorsFile st(path);
    unsigned sum = 0;
    for (const flora::TensorView& t : st.tensors()) {
      // ASan reports any byte outside the mapping... which is page-granular, so
      // also check the bounds explicitly.
      if (t.nbytes > size) std::abort();
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
    }
    (void)sum;
  } catch (const flora::Error&) {
  }
  return 0;
}
