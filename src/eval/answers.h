// Answer extraction and comparison for the paper's two answer-checked task kinds:
// arithmetic word problems (GSM8K style) and multiple choice (the LLM-Adapters
// commonsense suite, and plain {question, choices, answer} items).
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flora::eval {

// ---- math ----

// The last number in `text`: digits with optional thousands groups ("1,234":
// a comma followed by exactly three digits), an optional decimal part (".5";
// a period not followed by a digit, as at the end of a sentence, is not part
// of it), an optional "$" before it, and a "-" sign when the "-" does not
// follow a letter or digit ("-3.5", "-$12"; but "3-4" is 3 and 4). nullopt
// when there is no number.
std::optional<double> extract_last_number(std::string_view text);

// The number after "####" in a GSM8K answer ("... #### 1,234" -> 1234);
// nullopt when there is no "####" or no number after it.
std::optional<double> parse_gsm8k_answer(std::string_view answer);

// |predicted - reference| <= 1e-4 * max(1, |reference|).
bool numbers_match(double predicted, double reference);

// ---- multiple choice ----

// The forms of answer an item can have. The word forms are those of the
// LLM-Adapters commonsense datasets: option1..  (WinoGrande), answer1..
// (SIQA, ARC, OBQA), solution1/2 (PIQA), ending1.. (HellaSwag), true/false
// (BoolQ); Letter is the plain form A, B, C, ...
enum class McqForm { Option, Answer, Solution, Ending, TrueFalse, Letter };

struct McqKey {
  McqForm form = McqForm::Letter;
  int index = 0;  // 0-based: option1 -> 0, "C" -> 2, true -> 0, false -> 1
  bool operator==(const McqKey&) const = default;
};

// How many options a form has when the item gives no choices list:
// option 5, answer 5, solution 2, ending 4, true/false 2, letter 5 (A-E).
int default_option_count(McqForm form);

// "option2", "answer3", "solution1", "ending4", "true", "false", or a letter
// "A".."Z"; with `choices`, also the exact text of a choice (taken as its letter).
// Surrounding whitespace is ignored. nullopt for anything else.
std::optional<McqKey> parse_mcq_reference(std::string_view reference, const std::vector<std::string>& choices);

// The predicted answer in generated text, in the reference's form.
// Word forms follow LLM-Adapters' extract_answer (commonsense_evaluate.py):
// re.findall(r'option1|option2|...', text)[0], i.e. the earliest occurrence of
// any option word, case-sensitive, with no word boundaries ("answer12" holds
// "answer1"); option words run from 1 to `n_options`. The Letter form takes the
// earliest of: a standalone capital letter among the first `n_options` (neither
// neighbour a letter or digit), or a choice's text (case-insensitive, not inside
// a longer word); at the same position the choice text wins. nullopt: unparseable.
std::optional<McqKey> extract_mcq_answer(std::string_view prediction, McqForm form, int n_options,
                                         const std::vector<std::string>& choices);

// The canonical text of an answer: "option2", "B", "true".
std::string mcq_key_text(const McqKey& key);

}  // namespace flora::eval
