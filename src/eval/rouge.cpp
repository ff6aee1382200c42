#include "eval/rouge.h"

#include <algorithm>
#include <map>

#include "util/error.h"

namespace flora::eval {

std::vector<std::string> rouge_tokenize(std::string_view text) {
  std::vector<std::string> tokens;
  std::string current;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    char lower = (u >= 'A' && u <= 'Z') ? static_cast<char>(u - 'A' + 'a') : c;
    if ((lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9')) {
      current.push_back(lower);
    } else if (!current.empty()) {
      tokens.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) tokens.push_back(std::move(current));
  return tokens;
}

double f_measure(double precision, double recall) {
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

namespace {

std::map<std::vector<std::string>, size_t> ngram_counts(const std::vector<std::string>& tokens, int n) {
  std::map<std::vector<std::string>, size_t> counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i)
    ++counts[std::vector<std::string>(tokens.begin() + i, tokens.begin() + i + n)];
  return counts;
}

size_t total(const std::map<std::vector<std::string>, size_t>& counts) {
  size_t sum = 0;
  for (const auto& [gram, count] : counts) sum += count;
  return sum;
}

}  // namespace

RougeScore rouge_n(const std::vector<std::string>& candidate, const std::vector<std::string>& reference, int n) {
  FLORA_ASSERT(n >= 1);
  const auto cand = ngram_counts(candidate, n);
  const auto ref = ngram_counts(reference, n);
  size_t overlap = 0;
  for (const auto& [gram, count] : cand) {
    auto it = ref.find(gram);
    if (it != ref.end()) overlap += std::min(count, it->second);
  }
  RougeScore s;
  s.precision = static_cast<double>(overlap) / static_cast<double>(std::max<size_t>(total(cand), 1));
  s.recall = static_cast<double>(overlap) / static_cast<double>(std::max<size_t>(total(ref), 1));
  s.f1 = f_measure(s.precision, s.recall);
  return s;
}

size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

RougeScore rouge_l(const std::vector<std::string>& candidate, const std::vector<std::string>& reference) {
  RougeScore s;
  if (candidate.empty() || reference.empty()) return s;
  const double lcs = static_cast<double>(lcs_length(candidate, reference));
  s.precision = lcs / static_cast<double>(candidate.size());
  s.recall = lcs / static_cast<double>(reference.size());
  s.f1 = f_measure(s.precision, s.recall);
  return s;
}

RougeScores rouge(std::string_view candidate, std::string_view reference) {
  const auto c = rouge_tokenize(candidate);
  const auto r = rouge_tokenize(reference);
  return {rouge_n(c, r, 1), rouge_n(c, r, 2), rouge_l(c, r)};
}

}  // namespace flora::eval
