// ROUGE-1, ROUGE-2 and ROUGE-L (sentence level), as Google's `rouge-score`
// Python package computes them with its defaults (RougeScorer(..., use_stemmer=False)).
//
// Tokens: the text is lower-cased (ASCII), every run of characters outside
// [a-z0-9] becomes one space (so punctuation and every non-ASCII byte separate
// tokens and vanish), and the result is split on whitespace; empty tokens are
// dropped. (Python's Unicode lower() turns a few non-ASCII letters into ASCII,
// e.g. the Kelvin sign into 'k'; here every non-ASCII byte is a separator.)
// Nothing else is removed (no stop words). No stemming: rouge-score's
// use_stemmer=True (NLTK Porter on tokens longer than 3 characters) is not
// implemented.
//
// ROUGE-N (n = 1, 2): with C and R the multisets of n-grams of the candidate
// (prediction) and the reference,
//   overlap   = sum over n-grams g of min(count_C(g), count_R(g))   (clipped)
//   precision = overlap / max(|C|, 1),  recall = overlap / max(|R|, 1)
// ROUGE-L: with LCS the length of the longest common subsequence of the two token
// sequences (newlines ignored; this is `rougeL`, not the summary-level `rougeLsum`),
//   precision = LCS / |candidate tokens|,  recall = LCS / |reference tokens|,
//   and all zero when either side has no tokens.
// F1 = 2 P R / (P + R), and 0 when P + R = 0.
//
// A corpus score is the mean of the per-example F1 values (what papers report).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace flora::eval {

struct RougeScore {
  double precision = 0, recall = 0, f1 = 0;
};

struct RougeScores {
  RougeScore rouge1, rouge2, rougeL;
};

// rouge-score's default tokenizer (see above).
std::vector<std::string> rouge_tokenize(std::string_view text);

// F1 from precision and recall; 0 when both are 0.
double f_measure(double precision, double recall);

// ROUGE-N of token sequences, n >= 1.
RougeScore rouge_n(const std::vector<std::string>& candidate, const std::vector<std::string>& reference, int n);

// Length of the longest common subsequence of two token sequences.
size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b);

// ROUGE-L of token sequences.
RougeScore rouge_l(const std::vector<std::string>& candidate, const std::vector<std::string>& reference);

// ROUGE-1, ROUGE-2 and ROUGE-L of a candidate (generated text) against a reference.
RougeScores rouge(std::string_view candidate, std::string_view reference);

}  // namespace flora::eval
