// The Llama 3 chat format, as the chat_template of Meta's Llama 3.x
// tokenizer_config.json renders it for plain conversations (no tools, no dates):
//   <|begin_of_text|>  then per message
//   <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
// with CONTENT trimmed as Jinja's `trim` (Python str.strip) does, then, for a
// generation prompt, <|start_header_id|>assistant<|end_header_id|>\n\n.
// The result is text: encode it with parse_special = true and add_bos = false.
#pragma once
#include <string>
#include <vector>

namespace flora {

struct ChatMessage {
  std::string role;
  std::string content;
};

std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// The Stanford Alpaca prompt, as LLM-Adapters (the paper's commonsense and
// math setups) trains and evaluates with it: the instruction, the input when
// it is not empty, then "### Response:\n", after which the answer follows.
// Training (the loss covers only what follows) and evaluation (generation
// starts there) both build prompts here.
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// Instructions of the summary tasks: `flora eval --task rouge` prompts with
// alpaca_prompt(instruction, text), and `flora data synth` writes the training
// records with the same words.
inline constexpr const char* kSummarizeDialogueInstruction = "Summarize the following dialogue.";
inline constexpr const char* kSummarizeDocumentInstruction = "Summarize the following text.";

}  // namespace flora
