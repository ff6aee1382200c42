#include "eval/answers.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace flora::eval {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Scans numbers left to right; calls on_number(value) for each.
template <typename F>
void scan_numbers(std::string_view t, F&& on_number) {
  size_t i = 0;
  while (i < t.size()) {
    if (!is_digit(t[i])) {
      ++i;
      continue;
    }
    // A digit that starts a number (digits already consumed never reach here).
    bool negative = false;
    size_t s = i;
    if (s > 0 && t[s - 1] == '$') --s;
    if (s > 0 && t[s - 1] == '-' && (s == 1 || !is_alnum(t[s - 2]))) negative = true;
    std::string digits = negative ? "-" : "";
    size_t j = i;
    while (j < t.size() && is_digit(t[j])) digits.push_back(t[j++]);
    while (j + 3 < t.size() + 0 && t[j] == ',' && is_digit(t[j + 1]) && is_digit(t[j + 2]) && is_digit(t[j + 3]) &&
           (j + 4 >= t.size() || !is_digit(t[j + 4]))) {
      digits.append(t.substr(j + 1, 3));
      j += 4;
    }
    if (j + 1 < t.size() && t[j] == '.' && is_digit(t[j + 1])) {
      digits.push_back('.');
      ++j;
      while (j < t.size() && is_digit(t[j])) digits.push_back(t[j++]);
    }
    on_number(std::strtod(digits.c_str(), nullptr));
    i = j;
  }
}

const char* form_word(McqForm form) {
  switch (form) {
    case McqForm::Option: return "option";
    case McqForm::Answer: return "answer";
    case McqForm::Solution: return "solution";
    case McqForm::Ending: return "ending";
    default: return "";
  }
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  return true;
}

}  // namespace

std::optional<double> extract_last_number(std::string_view text) {
  std::optional<double> last;
  scan_numbers(text, [&](double v) { last = v; });
  return last;
}

std::optional<double> parse_gsm8k_answer(std::string_view answer) {
  const size_t pos = answer.find("####");
  if (pos == std::string_view::npos) return std::nullopt;
  std::string rest;
  for (char c : answer.substr(pos + 4))
    if (c != ',') rest.push_back(c);
  std::optional<double> first;
  scan_numbers(rest, [&](double v) {
    if (!first) first = v;
  });
  return first;
}

bool numbers_match(double predicted, double reference) {
  return std::fabs(predicted - reference) <= 1e-4 * std::max(1.0, std::fabs(reference));
}

int default_option_count(McqForm form) {
  switch (form) {
    case McqForm::Option: return 5;
    case McqForm::Answer: return 5;
    case McqForm::Solution: return 2;
    case McqForm::Ending: return 4;
    case McqForm::TrueFalse: return 2;
    case McqForm::Letter: return 5;
  }
  return 0;
}

std::optional<McqKey> parse_mcq_reference(std::string_view reference, const std::vector<std::string>& choices) {
  const std::string_view r = trim(reference);
  if (r == "true") return McqKey{McqForm::TrueFalse, 0};
  if (r == "false") return McqKey{McqForm::TrueFalse, 1};
  if (r.size() == 1 && r[0] >= 'A' && r[0] <= 'Z') return McqKey{McqForm::Letter, r[0] - 'A'};
  for (McqForm form : {McqForm::Option, McqForm::Answer, McqForm::Solution, McqForm::Ending}) {
    const std::string_view word = form_word(form);
    if (r.size() > word.size() && r.substr(0, word.size()) == word) {
      const std::string_view num = r.substr(word.size());
      if (!std::all_of(num.begin(), num.end(), is_digit) || num.size() > 3 || num[0] == '0') return std::nullopt;
      return McqKey{form, std::atoi(std::string(num).c_str()) - 1};
    }
  }
  for (size_t i = 0; i < choices.size() && i < 26; ++i)
    if (!trim(choices[i]).empty() && trim(choices[i]) == r) return McqKey{McqForm::Letter, static_cast<int>(i)};
  return std::nullopt;
}

std::optional<McqKey> extract_mcq_answer(std::string_view prediction, McqForm form, int n_options,
                                         const std::vector<std::string>& choices) {
  const std::string_view t = trim(prediction);  // LLM-Adapters strips first; positions do not matter
  if (form == McqForm::TrueFalse) {
    const size_t pt = t.find("true"), pf = t.find("false");
    if (pt == std::string_view::npos && pf == std::string_view::npos) return std::nullopt;
    return McqKey{form, pt < pf ? 0 : 1};
  }
  if (form != McqForm::Letter) {
    const std::string word = form_word(form);
    for (size_t i = 0; i < t.size(); ++i) {
      if (t.compare(i, word.size(), word) != 0) continue;
      for (int k = 1; k <= n_options; ++k) {
        const std::string num = std::to_string(k);
        if (t.compare(i + word.size(), num.size(), num) == 0) return McqKey{form, k - 1};
      }
    }
    return std::nullopt;
  }
  const int n = std::min(n_options, 26);
  for (size_t i = 0; i < t.size(); ++i) {
    for (size_t c = 0; c < choices.size() && c < 26; ++c) {
      const std::string_view choice = trim(choices[c]);
      if (choice.empty() || i + choice.size() > t.size()) continue;
      if (!equals_ignore_case(t.substr(i, choice.size()), choice)) continue;
      const bool left_ok = i == 0 || !is_alnum(t[i - 1]) || !is_alnum(choice.front());
      const bool right_ok = i + choice.size() == t.size() || !is_alnum(t[i + choice.size()]) || !is_alnum(choice.back());
      if (left_ok && right_ok) return McqKey{McqForm::Letter, static_cast<int>(c)};
    }
    const char ch = t[i];
    if (ch >= 'A' && ch < 'A' + n && (i == 0 || !is_alnum(t[i - 1])) && (i + 1 == t.size() || !is_alnum(t[i + 1])))
      return McqKey{McqForm::Letter, ch - 'A'};
  }
  return std::nullopt;
}

std::string mcq_key_text(const McqKey& key) {
  switch (key.form) {
    case McqForm::TrueFalse: return key.index == 0 ? "true" : "false";
    case McqForm::Letter: return std::string(1, static_cast<char>('A' + key.index));
    default: return std::string(form_word(key.form)) + std::to_string(key.index + 1);
  }
}

}  // namespace flora::eval
