// libFuzzer target for SafetensorsFile (safetensors headers): any input must either
// open (and then every tensor's bytes lie inside the file) or throw flora::Error.
// Built by CMake with -DFLORA_FUZZ=ON and clang++ (scripts/fuzz.sh, `make fuzz`);
// seeds: tests/fuzz/corpus/fuzz_safetensors/. By hand, after scripts/fuzz.sh has built it:
//
//   ./build-fuzz/fuzz_safetensors -max_len=4096 CORPUS_COPY tests/fuzz/corpus/fuzz_safetensors
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
