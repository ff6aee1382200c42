// The pieces of byte-level BPE before the merges: the regex split of the text
// into pre-tokens (HF "Split" with behavior "Isolated") and the ByteLevel
// alphabet, which spells each byte as a printable character in tokenizer.json.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;

namespace flora {

// The Llama 3 pre-tokenizer pattern (Oniguruma syntax, as in tokenizer.json).
std::string_view llama3_split_pattern();

// A tokenizer.json regex compiled with PCRE2 (UTF, UCP, JIT when available).
// The patterns are written for Oniguruma, whose \s is Unicode White_Space (as in
// tokenizers.js); PCRE2_UCP's \s also matches U+180E, which is not White_Space,
// so \s and \S are rewritten to \p{White_Space} and \P{White_Space}.
// Known remaining differences from tokenizers.js: (?i:...) folds case by Unicode
// rules in PCRE2 (as the Rust regex crate under tiktoken does), so Llama 3's
// (?i:'s) also matches "'ſ" (U+017F) where tokenizers.js folds ASCII only; and \p{L},
// \p{N} follow PCRE2's Unicode version, which may lag V8's for new characters.
class RegexSplitter {
 public:
  // `origin` names the file and field in errors, e.g. "x/tokenizer.json: pre_tokenizer".
  RegexSplitter(std::string_view pattern, const std::string& origin);
  RegexSplitter(RegexSplitter&& other) noexcept;
  RegexSplitter& operator=(RegexSplitter&& other) noexcept;
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();

  // Appends to `out` the matches of the pattern in `text` and the non-empty gaps
  // between them, in order, so that they concatenate to `text`. `text` must be
  // valid UTF-8 (it is matched with PCRE2_NO_UTF_CHECK).
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  std::string origin_;
};

// byte -> UTF-8 of the character that stands for it in byte-level vocabularies
// (GPT-2's bytes_to_unicode: printable Latin-1 stands for itself, the other
// bytes map to U+0100 onwards in byte order).
const std::array<std::string, 256>& byte_level_chars();

// `bytes` spelled in the ByteLevel alphabet.
std::string to_byte_level(std::string_view bytes);

// The byte that the single UTF-8 character `ch` stands for, or -1 if `ch` is not
// in the ByteLevel alphabet.
int byte_from_byte_level(std::string_view ch);

}  // namespace flora
