// Shared by the libFuzzer targets of tests/fuzz (built by CMake with -DFLORA_FUZZ=ON and
// clang; scripts/fuzz.sh builds and runs them, `make fuzz`). The contract every target
// checks: an input parses, or it throws flora::Error. Any other exception escapes
// LLVMFuzzerTestOneInput and libFuzzer reports it as a crash, as it does a sanitizer error.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tokenizer/tokenizer.h"

namespace flora_fuzz {

// The parsers that read a path get the input through a per-process file.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = "/tmp/flora_fuzz." + std::to_string(::getpid()) + "." + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  if (std::fclose(f) != 0) std::abort();
  return path;
}

// The tiny model's byte-level BPE tokenizer (tests/fixtures), loaded once.
inline const flora::Tokenizer& tiny_tokenizer() {
  static const flora::Tokenizer tok =
      flora::Tokenizer::from_file(FLORA_SOURCE_DIR "/tests/fixtures/tokenizer/tiny_tokenizer.json");
  return tok;
}

}  // namespace flora_fuzz
