// flora tokenizer train: a byte-level BPE tokenizer.json (Llama 3's format, as
// init-model --preset tiny makes) trained on text files, e.g. the synthetic corpus.
#include "tokenizer/tokenizer.h"

#include <cstdio>

#include "cli/commands.h"
#include "tokenizer/bpe_train.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"
#include "util/timer.h"

namespace flora::cli {

namespace {

// The special tokens of init-model's tiny tokenizer, in the same order, so that
// BOS is vocab - 5 and <|end_of_text|> vocab - 4 here too and the chat template works.
const std::vector<std::string> kSpecialTokens = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                 "<|end_header_id|>", "<|eot_id|>"};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The training text of one file: a .jsonl file's records ("text", else the string
// fields of an Alpaca or evaluation record), one per line; any other file as it is.
std::string training_text(const std::string& path) {
  std::string text = read_file(path);
  if (!ends_with(path, ".jsonl")) return text;
  std::string out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    const Json rec = parse_json(line, where);
    if (!rec.is_object()) fail("{}: expected a JSON object, found {}", where, rec.type_name());
    std::vector<const char*> keys = {"text"};
    if (!rec.contains("text")) keys = {"instruction", "input", "output", "dialogue", "document", "summary"};
    bool found = false;
    for (const char* key : keys) {
      auto it = rec.find(key);
      if (it == rec.end() || it->is_null()) continue;
      if (!it->is_string()) fail("{}: key '{}': expected a string, found {}", where, key, it->type_name());
      found = true;
      if (it->get_ref<const std::string&>().empty()) continue;
      out += it->get_ref<const std::string&>();
      out += '\n';
    }
    if (!found) fail("{}: expected a \"text\" field, or instruction/input/output fields", where);
  }
  return out;
}

}  // namespace

void add_tokenizer(CLI::App& app, Action& action) {
  auto* tok = app.add_subcommand("tokenizer", "Tokenizer tools");
  tok->require_subcommand(1);
  auto* cmd = tok->add_subcommand("train", "Train a byte-level BPE tokenizer.json (Llama 3's format) on text files");
  struct Options {
    std::vector<std::string> data;
    std::string out;
    int vocab = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option(
         "--data", o->data,
         "Training text (repeatable): .jsonl takes each record's \"text\" (else its instruction/input/output), "
         "any other file is read as it is")
      ->required();
  cmd->add_option("--vocab", o->vocab, "Vocabulary size, special tokens included")->required();
  cmd->add_option("--out", o->out, "Output directory: tokenizer.json is written there")->required();
  cmd->callback([&action, o] {
    action = [o] {
      const int specials = static_cast<int>(kSpecialTokens.size());
      if (o->vocab < 256 + specials)
        fail("--vocab {}: expected at least {} (256 byte tokens and {} special tokens)", o->vocab, 256 + specials,
             specials);
      const double t0 = now_seconds();
      std::string corpus;
      for (const std::string& path : o->data) {
        if (!corpus.empty() && corpus.back() != '\n') corpus += '\n';
        corpus += training_text(path);
      }
      if (corpus.empty()) fail("--data {}: expected some text, found none", fmt::join(o->data, ", "));
      std::string json;
      try {
        json = train_byte_level_bpe(corpus, o->vocab, kSpecialTokens);
      } catch (const Error& e) {
        fail("--vocab {}: {} (use a smaller vocabulary or more --data)", o->vocab, e.what());
      }
      const std::string path = o->out + "/tokenizer.json";
      try {
        make_directories(o->out);
        write_file_atomic(path, json);
      } catch (const Error& e) {
        fail("--out {}: {}", o->out, e.what());
      }
      // Loading it back checks what the file promises (its BOS and end-of-text ids).
      const Tokenizer t = Tokenizer::from_file(path);
      const int32_t bos = t.bos_id().value_or(-1);
      const int32_t eos = t.token_id("<|end_of_text|>").value_or(-1);
      FLORA_ASSERT(t.vocab_size() == o->vocab && bos == o->vocab - specials && eos == bos + 1);
      std::printf("{\"tokenizer\": %s, \"vocab_size\": %d, \"bos_token_id\": %d, \"eos_token_id\": %d}\n",
                  Json(path).dump().c_str(), o->vocab, bos, eos);
      std::fprintf(stderr, "tokenizer train: %zu bytes of text from %zu file(s), vocabulary %d, in %.1f s -> %s\n",
                   corpus.size(), o->data.size(), o->vocab, now_seconds() - t0, path.c_str());
    };
  });
}

}  // namespace flora::cli
