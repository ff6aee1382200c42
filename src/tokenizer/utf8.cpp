#include "tokenizer/utf8.h"

#include <cstdint>

namespace flora::utf8 {

Step scan(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {Kind::kValid, 1};
  // The allowed range of the second byte excludes overlong forms, surrogates and
  // code points above U+10FFFF, so that a bad sequence is caught at the byte
  // where it goes wrong (this is what makes a "maximal subpart").
  size_t length;
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return {Kind::kInvalid, 1};
  }
  for (size_t k = 1; k < length; ++k) {
    if (pos + k >= s.size()) return {Kind::kIncomplete, k};
    const uint8_t b = byte(pos + k);
    if (b < lo || b > hi) return {Kind::kInvalid, k};
    lo = 0x80, hi = 0xBF;
  }
  return {Kind::kValid, length};
}

bool is_valid(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    // ASCII runs dominate real text; skip them without the full classification.
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Step step = scan(s, pos);
    if (step.kind != Kind::kValid) return false;
    pos += step.length;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const Step step = scan(s, pos);
    if (step.kind == Kind::kValid) {
      out.append(s.substr(pos, step.length));
    } else {
      out.append(kReplacement);
    }
    pos += step.length;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace flora::utf8
