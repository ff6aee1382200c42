#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace flora {

std::string_view llama3_split_pattern() {
  return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
         "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
}

namespace {

std::string oniguruma_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    // Escapes are consumed in pairs so that "\\s" (a backslash, then s) stays as it is.
    const char next = pattern[++i];
    if (next == 's') {
      out += "\\p{White_Space}";
    } else if (next == 'S') {
      out += "\\P{White_Space}";
    } else {
      out.push_back('\\');
      out.push_back(next);
    }
  }
  return out;
}

}  // namespace

RegexSplitter::RegexSplitter(std::string_view pattern, const std::string& origin) : origin_(origin) {
  if (!utf8::is_valid(pattern)) fail("{}: pattern is not valid UTF-8", origin);
  const std::string translated = oniguruma_to_pcre2(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("{}: pattern '{}' does not compile with PCRE2 at offset {}: {}", origin,
         std::string(pattern), offset, reinterpret_cast<const char*>(message));
  }
  // JIT is an optimisation only: when it is unavailable pcre2_match interprets.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

RegexSplitter::RegexSplitter(RegexSplitter&& other) noexcept
    : code_(other.code_), origin_(std::move(other.origin_)) {
  other.code_ = nullptr;
}

RegexSplitter& RegexSplitter::operator=(RegexSplitter&& other) noexcept {
  if (this != &other) {
    if (code_) pcre2_code_free(code_);
    code_ = other.code_;
    origin_ = std::move(other.origin_);
    other.code_ = nullptr;
  }
  return *this;
}

RegexSplitter::~RegexSplitter() {
  if (code_) pcre2_code_free(code_);
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
  if (!match) fail("out of memory while matching the pre-tokenizer pattern of {}", origin_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // end of the previous match
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, match.get(),
                               nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail("{}: matching the pre-tokenizer pattern failed: {}", origin_,
           reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {
      // An empty match is no piece but still a boundary (as in HF); matching
      // resumes one whole character further on.
      if (begin > gap_start) out.push_back(text.substr(gap_start, begin - gap_start));
      gap_start = begin;
      pos = begin + utf8::scan(text, begin).length;
      continue;
    }
    if (begin > gap_start) out.push_back(text.substr(gap_start, begin - gap_start));
    out.push_back(text.substr(begin, end - begin));
    gap_start = pos = end;
  }
  if (gap_start < text.size()) out.push_back(text.substr(gap_start));
}

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> chars;
    char32_t next_free = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      utf8::append(chars[b], printable ? static_cast<char32_t>(b) : next_free++);
    }
    return chars;
  }();
  return table;
}

std::string to_byte_level(std::string_view bytes) {
  const auto& chars = byte_level_chars();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += chars[static_cast<uint8_t>(c)];
  return out;
}

int byte_from_byte_level(std::string_view ch) {
  // The alphabet lies below U+0144, so one- and two-byte characters cover it.
  static const std::array<int16_t, 0x144> from_code_point = [] {
    std::array<int16_t, 0x144> table;
    table.fill(-1);
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) {
      const auto& c = chars[b];
      const char32_t cp = c.size() == 1 ? static_cast<uint8_t>(c[0])
                                        : ((static_cast<uint8_t>(c[0]) & 0x1F) << 6) |
                                              (static_cast<uint8_t>(c[1]) & 0x3F);
      table[cp] = static_cast<int16_t>(b);
    }
    return table;
  }();
  char32_t cp;
  if (ch.size() == 1) {
    cp = static_cast<uint8_t>(ch[0]);
  } else if (ch.size() == 2) {
    cp = ((static_cast<uint8_t>(ch[0]) & 0x1F) << 6) | (static_cast<uint8_t>(ch[1]) & 0x3F);
  } else {
    return -1;
  }
  return cp < from_code_point.size() ? from_code_point[cp] : -1;
}

}  // namespace flora
