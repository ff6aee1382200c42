// UTF-8 scanning shared by encoding (input validation), decoding and streaming.
// Invalid input is never an error: each maximal ill-formed subpart becomes one
// U+FFFD, the Unicode-recommended practice that the WHATWG TextDecoder, Rust's
// String::from_utf8_lossy and therefore the reference tokenizers all follow.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace flora::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

enum class Kind {
  kValid,       // a complete, well-formed character of `length` bytes
  kIncomplete,  // a well-formed prefix of `length` bytes cut off by the end of the input
  kInvalid,     // an ill-formed subpart of `length` bytes, to be replaced by one U+FFFD
};
struct Step {
  Kind kind;
  size_t length;
};

// Classifies the bytes starting at s[pos] (pos < s.size()).
Step scan(std::string_view s, size_t pos);

bool is_valid(std::string_view s);

// `s` with every ill-formed subpart (including a truncated final one) replaced by U+FFFD.
std::string sanitize(std::string_view s);

void append(std::string& out, char32_t code_point);

}  // namespace flora::utf8
