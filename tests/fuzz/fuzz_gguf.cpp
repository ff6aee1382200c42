// libFuzzer target for GgufFile (GGUF headers): any input must either open
// (and then every tensor's bytes lie inside the file, and every typed read
// either answers or throws flora::Error) or throw flora::Error.
// Seeds: tests/fuzz/corpus/fuzz_gguf/ (tests/fuzz/make_corpus.py).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_common.h"
#include "io/gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = flora_fuzz::write_input(data, size, "gguf");
  try {
    flora::GgufFile f(path);
    unsigned sum = 0;
    for (const flora::GgufTensor& t : f.tensors()) {
      if (t.nbytes > size) std::abort();
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
    }
    for (const auto& [key, value] : f.metadata()) {
      try {
        (void)f.get_uint(key);
      } catch (const flora::Error&) {
      }
      try {
        (void)f.get_string(key);
      } catch (const flora::Error&) {
      }
    }
    (void)sum;
  } catch (const flora::Error&) {
  }
  return 0;
}
