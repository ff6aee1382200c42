#include "train/data.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/file.h"
#include "util/random.h"

namespace flora::train {

namespace {

// A JSON value in a message, shortened (as eval/score.cpp shows them).
std::string show(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// A key read from a file, for a message: control bytes as \xNN so that they cannot garble a terminal.
std::string printable_key(std::string_view key) {
  std::string out;
  for (char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += ch;
  }
  return out;
}

// Fails on the first key of `record` not in `allowed`; `form` names the record form.
void check_keys(const Json& record, std::initializer_list<std::string_view> allowed, std::string_view form) {
  for (const auto& item : record.items()) {
    if (std::find(allowed.begin(), allowed.end(), item.key()) != allowed.end()) continue;
    fail("expected only the keys {} of {} record, found unknown key '{}'", fmt::join(allowed, ", "), form,
         printable_key(item.key()));
  }
}

// The string at `key`; a missing key (or null, when optional) gives `fallback`.
std::string get_string(const Json& record, const char* key, bool required) {
  const auto it = record.find(key);
  if (it == record.end() || (!required && it->is_null())) {
    if (required) fail("expected key '{}' (a string)", key);
    return "";
  }
  if (!it->is_string()) fail("key '{}': expected a string, found {}", key, show(*it));
  return it->get<std::string>();
}

DataFormat detect(const Json& record) {
  if (record.contains("messages")) return DataFormat::Chat;
  if (record.contains("input_ids")) return DataFormat::Tokenized;
  if (record.contains("instruction") || record.contains("output")) return DataFormat::Alpaca;
  if (record.contains("text")) return DataFormat::Text;
  std::vector<std::string> keys;
  for (const auto& item : record.items()) keys.push_back("'" + printable_key(item.key()) + "'");
  fail(
      "expected a training record: 'instruction' and 'output' (Alpaca), 'messages' (chat), 'input_ids' "
      "(tokenized) or 'text', found {}",
      keys.empty() ? std::string("no keys") : fmt::format("keys {}", fmt::join(keys, ", ")));
}

int32_t eos_of(const Tokenizer& tokenizer) {
  const std::vector<int32_t> eos = tokenizer.eos_ids();
  if (eos.empty())
    fail("tokenizer {}: expected an end-of-text token (<|end_of_text|> or <|eot_id|>)", tokenizer.origin());
  return eos.front();
}

void append(Example& ex, const std::vector<int32_t>& ids, bool in_loss) {
  ex.input_ids.insert(ex.input_ids.end(), ids.begin(), ids.end());
  if (in_loss)
    ex.labels.insert(ex.labels.end(), ids.begin(), ids.end());
  else
    ex.labels.insert(ex.labels.end(), ids.size(), kIgnoreLabel);
}

void append(Example& ex, int32_t id, bool in_loss) {
  ex.input_ids.push_back(id);
  ex.labels.push_back(in_loss ? id : kIgnoreLabel);
}

Example alpaca_example(const Json& record, const Tokenizer& tokenizer) {
  check_keys(record, {"instruction", "input", "output", "answer"}, "an Alpaca");
  const std::string instruction = get_string(record, "instruction", true);
  const std::string input = get_string(record, "input", false);
  const std::string output = get_string(record, "output", true);
  Example ex;
  if (tokenizer.bos_id()) append(ex, *tokenizer.bos_id(), false);
  append(ex, tokenizer.encode(alpaca_prompt(instruction, input), false, true), false);
  append(ex, tokenizer.encode(output, false, true), true);
  append(ex, eos_of(tokenizer), true);
  return ex;
}

Example text_example(const Json& record, const Tokenizer& tokenizer) {
  check_keys(record, {"text"}, "a text");
  const std::string text = get_string(record, "text", true);
  Example ex;
  if (tokenizer.bos_id()) append(ex, *tokenizer.bos_id(), true);
  append(ex, tokenizer.encode(text, false, true), true);
  append(ex, eos_of(tokenizer), true);
  return ex;
}

// The ids of list `key`; labels also allow kIgnoreLabel.
std::vector<int32_t> id_list(const Json& list, const char* key, int32_t vocab_size, bool is_labels) {
  if (!list.is_array() || list.empty())
    fail("key '{}': expected a non-empty list of token ids, found {}", key, show(list));
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (const Json& item : list) {
    const bool integer = item.is_number_integer();
    const int64_t v = !integer ? 0
                      : item.is_number_unsigned()
                          ? static_cast<int64_t>(std::min<uint64_t>(item.get<uint64_t>(), INT64_MAX))
                          : item.get<int64_t>();
    if (!integer || !((v >= 0 && v < vocab_size) || (is_labels && v == kIgnoreLabel)))
      fail("key '{}': item {}: expected an integer id in [0, {}){}, found {}", key, ids.size() + 1, vocab_size,
           is_labels ? " or -100" : "", show(item));
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

Example tokenized_example(const Json& record, const Tokenizer& tokenizer) {
  check_keys(record, {"input_ids", "labels"}, "a tokenized");
  const auto ids_it = record.find("input_ids");
  if (ids_it == record.end()) fail("expected key 'input_ids' (a list of token ids)");
  Example ex;
  ex.input_ids = id_list(*ids_it, "input_ids", tokenizer.vocab_size(), false);
  const auto labels_it = record.find("labels");
  if (labels_it == record.end() || labels_it->is_null()) {
    ex.labels = ex.input_ids;
  } else {
    ex.labels = id_list(*labels_it, "labels", tokenizer.vocab_size(), true);
    if (ex.labels.size() != ex.input_ids.size())
      fail("key 'labels': expected {} labels (one per input id), found {}", ex.input_ids.size(), ex.labels.size());
  }
  return ex;
}

Example chat_example(const Json& record, const Tokenizer& tokenizer) {
  check_keys(record, {"messages"}, "a chat");
  const Json& list = record.at("messages");
  if (!list.is_array() || list.empty())
    fail("key 'messages': expected a non-empty list of {{\"role\", \"content\"}} objects, found {}", show(list));
  std::vector<ChatMessage> messages;
  for (const Json& item : list) {
    const size_t n = messages.size() + 1;
    try {
      if (!item.is_object()) fail("expected an object with 'role' and 'content', found {}", show(item));
      check_keys(item, {"role", "content"}, "a message");
      ChatMessage m{get_string(item, "role", true), get_string(item, "content", true)};
      if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool" && m.role != "ipython")
        fail("key 'role': expected system, user, assistant, tool or ipython, found {}", show(item.at("role")));
      messages.push_back(std::move(m));
    } catch (const Error& e) {
      fail("key 'messages': item {}: {}", n, e.what());
    }
  }

  // Render incrementally: render(0..i) = render(0..i-1) + header_i + body_i, where
  // body_i = CONTENT<|eot_id|> is what an assistant message puts in the loss. Each piece
  // is encoded on its own, so its tokens are known exactly; the pieces meet at special
  // tokens, which the tokenizer matches before pre-tokenizing, so their concatenation
  // must equal the encoding of the whole conversation (checked below).
  Example ex;
  std::vector<ChatMessage> prefix;
  std::string rendered = apply_chat_template(prefix, false);  // "<|begin_of_text|>"
  append(ex, tokenizer.encode(rendered, false, true), false);
  for (const ChatMessage& m : messages) {
    const std::string with_header = [&] {
      std::vector<ChatMessage> p = prefix;
      p.push_back({m.role, ""});
      // The empty content renders as header + <|eot_id|>; drop that token's text.
      std::string s = apply_chat_template(p, false);
      return s.substr(0, s.size() - std::string_view("<|eot_id|>").size());
    }();
    prefix.push_back(m);
    const std::string next = apply_chat_template(prefix, false);
    FLORA_ASSERT(with_header.compare(0, rendered.size(), rendered) == 0);
    FLORA_ASSERT(next.compare(0, with_header.size(), with_header) == 0);
    append(ex, tokenizer.encode(std::string_view(with_header).substr(rendered.size()), false, true), false);
    append(ex, tokenizer.encode(std::string_view(next).substr(with_header.size()), false, true), m.role == "assistant");
    rendered = next;
  }
  if (tokenizer.encode(rendered, false, true) != ex.input_ids)
    fail("expected the chat template's pieces to tokenize as the whole conversation does (tokenizer {})",
         tokenizer.origin());
  return ex;
}

}  // namespace

DataFormat parse_data_format(const std::string& name) {
  if (name == "auto") return DataFormat::Auto;
  if (name == "alpaca") return DataFormat::Alpaca;
  if (name == "chat") return DataFormat::Chat;
  if (name == "tokenized") return DataFormat::Tokenized;
  if (name == "text") return DataFormat::Text;
  fail("data format '{}': expected auto, alpaca, chat, tokenized or text", name);
}

std::string data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::Auto:
      return "auto";
    case DataFormat::Alpaca:
      return "alpaca";
    case DataFormat::Chat:
      return "chat";
    case DataFormat::Tokenized:
      return "tokenized";
    case DataFormat::Text:
      return "text";
  }
  return "?";
}

std::string DataStats::summary() const {
  std::string s =
      fmt::format("{} records: {} examples, {} tokens, {} in the loss", records, examples, tokens, target_tokens);
  if (truncated) s += fmt::format("; {} truncated", truncated);
  if (no_target) s += fmt::format("; {} skipped with nothing left in the loss", no_target);
  if (skipped_bad) s += fmt::format("; {} malformed skipped", skipped_bad);
  return s;
}

Example example_from_json(const Json& record, const Tokenizer& tokenizer, DataFormat format) {
  if (!record.is_object()) fail("expected a JSON object, found {}", show(record));
  switch (format == DataFormat::Auto ? detect(record) : format) {
    case DataFormat::Alpaca:
      return alpaca_example(record, tokenizer);
    case DataFormat::Text:
      return text_example(record, tokenizer);
    case DataFormat::Tokenized:
      return tokenized_example(record, tokenizer);
    case DataFormat::Chat:
      if (!record.contains("messages")) fail("expected key 'messages' (a list of {{\"role\", \"content\"}} objects)");
      return chat_example(record, tokenizer);
    case DataFormat::Auto:
      break;
  }
  fail("internal error: no record form detected");
}

int64_t target_count(const Example& example) {
  int64_t n = 0;
  for (size_t t = 1; t < example.labels.size(); ++t) n += example.labels[t] != kIgnoreLabel;
  return n;
}

Dataset load_jsonl(const std::string& path, const Tokenizer& tokenizer, const DataOptions& options) {
  if (options.seq_len < 0 || options.seq_len == 1)
    fail("seq_len: expected 0 (no limit) or at least 2, found {}", options.seq_len);
  const std::string text = read_file(path);
  Dataset data;
  DataStats& st = data.stats;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;
    ++st.records;
    Example ex;
    try {
      Json record;
      try {
        record = Json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        fail("expected one JSON object per line, found invalid JSON at byte {}", e.byte);
      }
      ex = example_from_json(record, tokenizer, options.format);
    } catch (const Error& e) {
      const std::string message = fmt::format("{}:{}: {}", path, line_no, e.what());
      if (!options.skip_bad) throw Error(message);
      ++st.skipped_bad;
      st.skip_messages.push_back(message);
      continue;
    }
    ex.line = line_no;
    if (options.seq_len > 0 && static_cast<int64_t>(ex.input_ids.size()) > options.seq_len) {
      ex.input_ids.resize(options.seq_len);
      ex.labels.resize(options.seq_len);
      ++st.truncated;
    }
    const int64_t targets = target_count(ex);
    if (targets == 0) {
      ++st.no_target;
      continue;
    }
    st.tokens += static_cast<int64_t>(ex.input_ids.size());
    st.target_tokens += targets;
    data.examples.push_back(std::move(ex));
  }
  st.examples = data.examples.size();
  if (st.records == 0) fail("{}: expected JSON lines of training records, found an empty file", path);
  if (data.examples.empty()) {
    std::string why;
    if (st.skipped_bad) why += fmt::format("; {} malformed (the first: {})", st.skipped_bad, st.skip_messages.front());
    if (st.no_target)
      why += fmt::format(
          "; {} with nothing in the loss{}", st.no_target,
          st.truncated ? fmt::format(" ({} truncated to seq_len {})", st.truncated, options.seq_len) : std::string());
    fail("{}: expected at least one usable record, found none ({} records{})", path, st.records, why);
  }
  return data;
}

Batch make_batch(const std::vector<Example>& examples, std::span<const size_t> indices, int32_t pad_id) {
  if (indices.empty()) fail("make_batch: expected at least one example index, found none");
  Batch batch;
  batch.B = static_cast<int64_t>(indices.size());
  for (size_t i : indices) {
    if (i >= examples.size()) fail("make_batch: expected an example index below {}, found {}", examples.size(), i);
    const Example& ex = examples[i];
    if (ex.input_ids.empty() || ex.labels.size() != ex.input_ids.size())
      fail("make_batch: example {}: expected input ids and labels of the same non-zero length, found {} and {}", i,
           ex.input_ids.size(), ex.labels.size());
    batch.T = std::max(batch.T, static_cast<int64_t>(ex.input_ids.size()));
  }
  const int64_t T = batch.T;
  batch.tokens.assign(batch.B * T, pad_id);
  batch.targets.assign(batch.B * T, -1);
  for (int64_t b = 0; b < batch.B; ++b) {
    const Example& ex = examples[indices[b]];
    const int64_t L = static_cast<int64_t>(ex.input_ids.size());
    std::copy(ex.input_ids.begin(), ex.input_ids.end(), batch.tokens.begin() + b * T);
    // Position t predicts token t + 1; the last position of the sequence has nothing to predict.
    for (int64_t t = 0; t + 1 < L; ++t) {
      const int32_t label = ex.labels[t + 1];
      if (label == kIgnoreLabel) continue;
      batch.targets[b * T + t] = label;
      ++batch.target_count;
    }
  }
  return batch;
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, uint64_t epoch) {
  // One stream per (seed, epoch): the seed's first output, offset by the epoch and mixed again.
  uint64_t state = seed;
  state = splitmix64(state) + epoch;
  state = splitmix64(state);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  for (size_t i = n; i > 1; --i) {
    // j uniform in [0, i) by the multiply-high method (bias below 2^-32 for any realistic n).
    const size_t j = static_cast<size_t>((static_cast<unsigned __int128>(splitmix64(state)) * i) >> 64);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace flora::train
