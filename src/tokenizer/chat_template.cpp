#include "tokenizer/chat_template.h"

#include <string_view>

#include "tokenizer/utf8.h"

namespace flora {

namespace {

// The code point at s[pos] (valid UTF-8) and its length.
std::pair<char32_t, size_t> code_point_at(std::string_view s, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<char32_t>(static_cast<uint8_t>(s[pos + i])); };
  const size_t length = utf8::scan(s, pos).length;
  switch (length) {
    case 1: return {b(0), 1};
    case 2: return {((b(0) & 0x1F) << 6) | (b(1) & 0x3F), 2};
    case 3: return {((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F), 3};
    default: return {((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F), 4};
  }
}

// Python's str.isspace(), which Jinja's trim uses.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string trim(const std::string& raw) {
  const std::string text = utf8::is_valid(raw) ? raw : utf8::sanitize(raw);
  size_t begin = 0;
  while (begin < text.size()) {
    const auto [cp, length] = code_point_at(text, begin);
    if (!is_python_space(cp)) break;
    begin += length;
  }
  // Scanning forwards keeps the decoding simple; `end` follows the last non-space.
  size_t end = begin;
  for (size_t pos = begin; pos < text.size();) {
    const auto [cp, length] = code_point_at(text, pos);
    pos += length;
    if (!is_python_space(cp)) end = pos;
  }
  return text.substr(begin, end - begin);
}

}  // namespace

std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out = "<|begin_of_text|>";
  for (const ChatMessage& message : messages) {
    out += "<|start_header_id|>";
    out += message.role;
    out += "<|end_header_id|>\n\n";
    out += trim(message.content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  if (input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\n" +
           instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
         "response that appropriately completes the request.\n\n### Instruction:\n" +
         instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n";
}

}  // namespace flora
