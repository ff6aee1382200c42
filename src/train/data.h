// Training data: JSONL records -> token ids with per-token labels -> padded,
// shifted batches for the trainer's loss.
//
// Record forms (one JSON object per line; blank lines are ignored). The form is
// detected per line from the keys, in this order, unless DataOptions::format forces one:
//   chat       {"messages": [{"role": R, "content": TEXT}, ...]}
//              R is system, user, assistant, tool or ipython. Rendered with
//              apply_chat_template (tokenizer/chat_template.h) and encoded with
//              parse_special = true, add_bos = false (the template writes
//              <|begin_of_text|>). Only each assistant message's content and its
//              closing <|eot_id|> are in the loss.
//   tokenized  {"input_ids": [ID, ...], "labels": [ID or -100, ...]}
//              labels is optional (default: input_ids); ids must lie in the
//              vocabulary, the two lists must have the same length.
//   alpaca     {"instruction": TEXT, "input": TEXT (optional), "output": TEXT}
//              plus "answer", which LLM-Adapters' records carry and which is ignored.
//              tokens = [bos] + encode(alpaca_prompt(instruction, input)) + encode(output) + [eos];
//              only the output's tokens and eos are in the loss. Prompt and output are
//              encoded separately so that the boundary between them is exact.
//   text       {"text": TEXT}: [bos] + encode(TEXT) + [eos], every token in the loss
//              (pretraining a base model on a corpus).
// Text is encoded with parse_special = true, as Hugging Face tokenizers do by
// default and as `flora generate` encodes prompts. bos is the tokenizer's bos_id()
// (left out when it has none); eos is the first of its eos_ids().
//
// A key that does not belong to the record's form is an error naming it.
// Errors read "FILE:LINE: ..." with an "expected ..." (as eval/score.cpp words them).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace flora::train {

// The label of a token that is not in the loss, as Hugging Face writes it.
inline constexpr int32_t kIgnoreLabel = -100;

enum class DataFormat { Auto, Alpaca, Chat, Tokenized, Text };

// "auto" | "alpaca" | "chat" | "tokenized" | "text"; fails otherwise.
DataFormat parse_data_format(const std::string& name);
std::string data_format_name(DataFormat format);

struct Example {
  std::vector<int32_t> input_ids;  // (L)
  std::vector<int32_t> labels;     // (L): the token's id where it is in the loss, else kIgnoreLabel
  size_t line = 0;                 // the JSONL line it came from (1-based); 0 when built in memory
};

struct DataOptions {
  // Records longer than seq_len tokens keep their first seq_len tokens (and are
  // counted in `truncated`); 0 = no limit, otherwise at least 2 (one target).
  int64_t seq_len = 0;
  // Malformed lines are skipped and counted with their messages; otherwise the
  // first one is an error.
  bool skip_bad = false;
  DataFormat format = DataFormat::Auto;
};

struct DataStats {
  size_t records = 0;                      // non-blank lines
  size_t examples = 0;                     // records kept
  size_t skipped_bad = 0;                  // malformed lines skipped (skip_bad)
  std::vector<std::string> skip_messages;  // "FILE:LINE: ..." for each of them
  size_t truncated = 0;                    // records longer than seq_len (kept or not)
  size_t no_target = 0;                    // well-formed records skipped: no target left (after truncation)
  // Over the kept examples: tokens = sum of lengths; target_tokens = positions
  // t >= 1 whose label is not kIgnoreLabel, i.e. exactly the targets the loss sees
  // (position 0 is never predicted).
  int64_t tokens = 0;
  int64_t target_tokens = 0;

  // One line for the log: "1200 records: 1190 examples, 253,000 tokens (...)".
  std::string summary() const;
};

struct Dataset {
  std::vector<Example> examples;
  DataStats stats;
};

// The example of one parsed record (`format` may be Auto). Errors carry no
// FILE:LINE prefix (load_jsonl adds it); no truncation happens here.
Example example_from_json(const Json& record, const Tokenizer& tokenizer, DataFormat format);

// Reads a JSONL file of records. Fails (message "FILE: expected ...") on an empty
// file and when no record is usable (all malformed or with nothing in the loss).
Dataset load_jsonl(const std::string& path, const Tokenizer& tokenizer, const DataOptions& options);

// The number of targets the loss sees in `example`: labels at t >= 1 that are not kIgnoreLabel.
int64_t target_count(const Example& example);

// A batch in the shifted form the loss consumes (Hugging Face shifts labels
// inside the model; flora shifts here). Sequences are right-padded to the
// longest one of the batch: with causal attention the padding after a sequence
// cannot change its earlier positions, and its targets are ignored.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;   // (B, T): input ids, pad_id after each sequence's end
  std::vector<int32_t> targets;  // (B, T): targets[b*T + t] = labels[b][t + 1] (the token to
                                 // predict after position t), or -1 where ignored: label
                                 // kIgnoreLabel, padding, and the last position of each row
  int64_t target_count = 0;      // entries of targets that are not -1
};

// Fails on an empty `indices`, an index outside `examples`, or an empty example.
Batch make_batch(const std::vector<Example>& examples, std::span<const size_t> indices, int32_t pad_id);

// A permutation of 0..n-1 that depends only on (seed, epoch) (splitmix64 stream,
// Fisher-Yates), so that a resumed run sees the same order in each epoch.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, uint64_t epoch);

}  // namespace flora::train
