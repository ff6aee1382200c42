// Training data: every record form with its loss mask (checked by decoding the
// tokens in and out of the loss back to text), truncation, the errors with their
// FILE:LINE, skip_bad, batching with the label shift and padding, and the seeded
// epoch order. Tokenizer: the tiny trained one (tests/fixtures/tokenizer), whose
// specials are <|begin_of_text|> 379, <|end_of_text|> 380, <|start_header_id|> 381,
// <|end_header_id|> 382, <|eot_id|> 383 (vocabulary 384).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "scratch_dir.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

using namespace flora;
using namespace flora::train;
using Ids = std::vector<int32_t>;

namespace {

const std::string kTinyJson = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tokenizer/tiny_tokenizer.json";
constexpr int32_t kBos = 379, kEos = 380, kEot = 383, kVocab = 384;
constexpr int32_t I = kIgnoreLabel;

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::from_file(kTinyJson);
  return t;
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Ids encode(const std::string& text) { return tok().encode(text, false, true); }

// The maximal runs of positions whose label is not ignored, each decoded from its labels.
std::vector<std::string> loss_spans(const Example& ex) {
  std::vector<std::string> spans;
  Ids run;
  for (size_t t = 0; t <= ex.labels.size(); ++t) {
    if (t < ex.labels.size() && ex.labels[t] != I) {
      EXPECT_EQ(ex.labels[t], ex.input_ids[t]) << "a label in the loss is the token itself, at " << t;
      run.push_back(ex.labels[t]);
    } else if (!run.empty()) {
      spans.push_back(tok().decode(run));
      run.clear();
    }
  }
  return spans;
}

// The text of the tokens outside the loss, concatenated.
std::string masked_text(const Example& ex) {
  Ids ids;
  for (size_t t = 0; t < ex.labels.size(); ++t)
    if (ex.labels[t] == I) ids.push_back(ex.input_ids[t]);
  return tok().decode(ids);
}

Example from_json(const std::string& line, DataFormat format = DataFormat::Auto) {
  return example_from_json(Json::parse(line), tok(), format);
}

class TrainData : public ScratchDirTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string p = path(name);
    write_file_atomic(p, text);
    return p;
  }
  // The message of loading `text` as a file named `name`.
  std::string load_error(const std::string& name, const std::string& text, DataOptions options = {}) {
    const std::string p = write(name, text);
    return error_of([&] { load_jsonl(p, tok(), options); });
  }
};

}  // namespace

// ---------------------------------------------------------------- record forms

TEST(TrainRecords, AlpacaPromptIsMaskedAndOutputPlusEosIsTrained) {
  const std::string prompt = alpaca_prompt("Add the numbers.", "2 and 3");
  const Example ex =
      from_json(R"({"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5.", "answer": "5"})");
  const Ids p = encode(prompt), o = encode("The sum is 5.");
  ASSERT_FALSE(p.empty());
  ASSERT_FALSE(o.empty());
  EXPECT_EQ(ex.input_ids, concat({{kBos}, p, o, {kEos}}));
  // [bos] + prompt are out of the loss; the output and eos are in it, with their own ids.
  Ids labels(1 + p.size(), I);
  labels.insert(labels.end(), o.begin(), o.end());
  labels.push_back(kEos);
  EXPECT_EQ(ex.labels, labels);
  EXPECT_EQ(loss_spans(ex), std::vector<std::string>{"The sum is 5.<|end_of_text|>"});
  EXPECT_EQ(masked_text(ex), "<|begin_of_text|>" + prompt);
  EXPECT_EQ(target_count(ex), static_cast<int64_t>(o.size() + 1));
}

TEST(TrainRecords, AlpacaWithoutInputUsesTheShortPrompt) {
  for (const char* line :
       {R"({"instruction": "Say hi.", "output": "hi"})", R"({"instruction": "Say hi.", "input": "", "output": "hi"})",
        R"({"instruction": "Say hi.", "input": null, "output": "hi"})"}) {
    const Example ex = from_json(line);
    EXPECT_EQ(masked_text(ex), "<|begin_of_text|>" + alpaca_prompt("Say hi.", "")) << line;
    EXPECT_EQ(loss_spans(ex), std::vector<std::string>{"hi<|end_of_text|>"}) << line;
  }
  // The boundary is exact even where joint tokenization would merge across it:
  // the prompt ends in "\n" and this output starts with one.
  const Example ex = from_json(R"({"instruction": "x", "output": "\n\nyes"})");
  EXPECT_EQ(loss_spans(ex), std::vector<std::string>{"\n\nyes<|end_of_text|>"});
  // An empty output still trains eos.
  EXPECT_EQ(loss_spans(from_json(R"({"instruction": "x", "output": ""})")),
            std::vector<std::string>{"<|end_of_text|>"});
}

TEST(TrainRecords, ChatTrainsOnlyAssistantContentAndItsEot) {
  const std::vector<ChatMessage> messages = {{"system", "Be brief."},
                                             {"user", "Hello?"},
                                             {"assistant", "  Hi there!\n"},  // trimmed by the template
                                             {"user", "And now?"},
                                             {"assistant", "Second answer."}};
  const Example ex = from_json(R"({"messages": [
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
      {"role": "assistant", "content": "  Hi there!\n"}, {"role": "user", "content": "And now?"},
      {"role": "assistant", "content": "Second answer."}]})");
  // The tokens are those of the whole rendered conversation.
  EXPECT_EQ(ex.input_ids, encode(apply_chat_template(messages, false)));
  EXPECT_EQ(ex.input_ids.front(), kBos);
  EXPECT_EQ(ex.input_ids.back(), kEot);
  EXPECT_EQ(loss_spans(ex), (std::vector<std::string>{"Hi there!<|eot_id|>", "Second answer.<|eot_id|>"}));
  // Each span starts right after the assistant header that a generation prompt ends with,
  // and ends with the message: the tokens before it decode to the conversation so far.
  std::vector<size_t> starts, ends;
  for (size_t t = 0; t < ex.labels.size(); ++t) {
    if (ex.labels[t] != I && (t == 0 || ex.labels[t - 1] == I)) starts.push_back(t);
    if (ex.labels[t] != I && (t + 1 == ex.labels.size() || ex.labels[t + 1] == I)) ends.push_back(t + 1);
  }
  ASSERT_EQ(starts.size(), 2u);
  const auto prefix_text = [&](size_t n) { return tok().decode(Ids(ex.input_ids.begin(), ex.input_ids.begin() + n)); };
  EXPECT_EQ(prefix_text(starts[0]), apply_chat_template({messages.begin(), messages.begin() + 2}, true));
  EXPECT_EQ(prefix_text(ends[0]), apply_chat_template({messages.begin(), messages.begin() + 3}, false));
  EXPECT_EQ(prefix_text(starts[1]), apply_chat_template({messages.begin(), messages.begin() + 4}, true));
  EXPECT_EQ(ends[1], ex.input_ids.size());
  EXPECT_EQ(masked_text(ex),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            "<|start_header_id|>user<|end_header_id|>\n\nAnd now?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(TrainRecords, ChatWithoutAssistantHasNothingInTheLoss) {
  const Example ex = from_json(R"({"messages": [{"role": "user", "content": "only a question"}]})");
  EXPECT_TRUE(loss_spans(ex).empty());
  EXPECT_EQ(target_count(ex), 0);
  // An empty assistant message still trains its <|eot_id|>.
  const Example empty =
      from_json(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]})");
  EXPECT_EQ(loss_spans(empty), std::vector<std::string>{"<|eot_id|>"});
}

TEST(TrainRecords, TokenizedWithAndWithoutLabels) {
  Example ex = from_json(R"({"input_ids": [379, 5, 6, 383], "labels": [-100, -100, 6, 383]})");
  EXPECT_EQ(ex.input_ids, (Ids{379, 5, 6, 383}));
  EXPECT_EQ(ex.labels, (Ids{I, I, 6, 383}));
  EXPECT_EQ(target_count(ex), 2);
  ex = from_json(R"({"input_ids": [1, 2, 383]})");
  EXPECT_EQ(ex.labels, ex.input_ids);
  EXPECT_EQ(target_count(ex), 2);  // position 0 is never predicted
  ex = from_json(R"({"input_ids": [0, 383], "labels": null})");
  EXPECT_EQ(ex.labels, (Ids{0, 383}));
}

TEST(TrainRecords, TextIsFullyTrained) {
  const std::string text = "The cat sat on the mat. 42!";
  const Example ex = from_json(R"({"text": "The cat sat on the mat. 42!"})");
  EXPECT_EQ(ex.input_ids, concat({{kBos}, encode(text), {kEos}}));
  EXPECT_EQ(ex.labels, ex.input_ids);
  EXPECT_EQ(loss_spans(ex), std::vector<std::string>{"<|begin_of_text|>" + text + "<|end_of_text|>"});
  EXPECT_EQ(target_count(ex), static_cast<int64_t>(ex.input_ids.size()) - 1);
}

TEST(TrainRecords, ForcedFormat) {
  // Auto would take this for Alpaca; forced to text, the other keys are unknown.
  EXPECT_EQ(error_of([] { from_json(R"({"text": "t", "output": "o"})", DataFormat::Text); }),
            "expected only the keys text of a text record, found unknown key 'output'");
  EXPECT_EQ(error_of([] { from_json(R"({"text": "t"})", DataFormat::Alpaca); }),
            "expected only the keys instruction, input, output, answer of an Alpaca record, found unknown key 'text'");
  EXPECT_EQ(error_of([] { from_json(R"({"output": "o"})", DataFormat::Alpaca); }),
            "expected key 'instruction' (a string)");
  EXPECT_EQ(error_of([] { from_json(R"({"text": "t"})", DataFormat::Chat); }),
            "expected key 'messages' (a list of {\"role\", \"content\"} objects)");
  EXPECT_EQ(error_of([] { from_json(R"({"text": "t"})", DataFormat::Tokenized); }),
            "expected only the keys input_ids, labels of a tokenized record, found unknown key 'text'");
  EXPECT_EQ(error_of([] { from_json(R"({})", DataFormat::Tokenized); }),
            "expected key 'input_ids' (a list of token ids)");
  EXPECT_EQ(from_json(R"({"text": "abc"})", DataFormat::Text).input_ids, concat({{kBos}, encode("abc"), {kEos}}));
}

TEST(TrainRecords, FormatNames) {
  for (DataFormat f : {DataFormat::Auto, DataFormat::Alpaca, DataFormat::Chat, DataFormat::Tokenized, DataFormat::Text})
    EXPECT_EQ(parse_data_format(data_format_name(f)), f);
  EXPECT_EQ(error_of([] { parse_data_format("jsonl"); }),
            "data format 'jsonl': expected auto, alpaca, chat, tokenized or text");
}

TEST(TrainRecords, RecordErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([1, 2])", "expected a JSON object, found [1,2]"},
      {R"({"prompt": "p", "completion": "c"})",
       "expected a training record: 'instruction' and 'output' (Alpaca), 'messages' (chat), 'input_ids' "
       "(tokenized) or 'text', found keys 'completion', 'prompt'"},
      {R"({})",
       "expected a training record: 'instruction' and 'output' (Alpaca), 'messages' (chat), 'input_ids' "
       "(tokenized) or 'text', found no keys"},
      // Alpaca
      {R"({"instruction": "i", "output": "o", "id": 7})",
       "expected only the keys instruction, input, output, answer of an Alpaca record, found unknown key 'id'"},
      {R"({"instruction": "i"})", "expected key 'output' (a string)"},
      {R"({"output": "o"})", "expected key 'instruction' (a string)"},
      {R"({"instruction": "i", "output": 5})", "key 'output': expected a string, found 5"},
      {R"({"instruction": "i", "input": ["x"], "output": "o"})", "key 'input': expected a string, found [\"x\"]"},
      {R"({"instruction": null, "output": "o"})", "key 'instruction': expected a string, found null"},
      // text
      {R"({"text": 1})", "key 'text': expected a string, found 1"},
      {R"({"text": "t", "meta": {}})", "expected only the keys text of a text record, found unknown key 'meta'"},
      // tokenized
      {R"({"input_ids": [1, 384]})", "key 'input_ids': item 2: expected an integer id in [0, 384), found 384"},
      {R"({"input_ids": [-100, 1]})", "key 'input_ids': item 1: expected an integer id in [0, 384), found -100"},
      {R"({"input_ids": [1, 2.0]})", "key 'input_ids': item 2: expected an integer id in [0, 384), found 2.0"},
      {R"({"input_ids": [1, "2"]})", "key 'input_ids': item 2: expected an integer id in [0, 384), found \"2\""},
      {R"({"input_ids": []})", "key 'input_ids': expected a non-empty list of token ids, found []"},
      {R"({"input_ids": 5})", "key 'input_ids': expected a non-empty list of token ids, found 5"},
      {R"({"input_ids": [1, 2], "labels": [1, -5]})",
       "key 'labels': item 2: expected an integer id in [0, 384) or -100, found -5"},
      {R"({"input_ids": [1, 2], "labels": [1, 2, 3]})", "key 'labels': expected 2 labels (one per input id), found 3"},
      {R"({"input_ids": [1, 2], "attention_mask": [1, 1]})",
       "expected only the keys input_ids, labels of a tokenized record, found unknown key 'attention_mask'"},
      // chat
      {R"({"messages": []})", "key 'messages': expected a non-empty list of {\"role\", \"content\"} objects, found []"},
      {R"({"messages": "hi"})",
       "key 'messages': expected a non-empty list of {\"role\", \"content\"} objects, found \"hi\""},
      {R"({"messages": [{"role": "user", "content": "q"}, "a"]})",
       "key 'messages': item 2: expected an object with 'role' and 'content', found \"a\""},
      {R"({"messages": [{"role": "robot", "content": "q"}]})",
       "key 'messages': item 1: key 'role': expected system, user, assistant, tool or ipython, found \"robot\""},
      {R"({"messages": [{"role": "user"}]})", "key 'messages': item 1: expected key 'content' (a string)"},
      {R"({"messages": [{"role": "user", "content": "q", "name": "bob"}]})",
       "key 'messages': item 1: expected only the keys role, content of a message record, found unknown key 'name'"},
      {R"({"messages": [{"role": "user", "content": "q"}], "id": 1})",
       "expected only the keys messages of a chat record, found unknown key 'id'"},
  };
  for (const auto& [line, message] : cases) EXPECT_EQ(error_of([&] { from_json(line); }), message) << line;
}

// ---------------------------------------------------------------- files

TEST_F(TrainData, MixedFileWithStats) {
  // Line 2 and 5 are blank (one with spaces and a CR); every form once.
  const std::string p =
      write("mixed.jsonl", R"({"instruction": "Add.", "input": "1 2", "output": "3", "answer": "3"})"
                           "\n\n"
                           R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"
                           "\n"
                           R"({"input_ids": [379, 7, 8, 9], "labels": [-100, -100, 8, 9]})"
                           "\n  \r\n"
                           R"({"text": "plain text"})");
  const Dataset d = load_jsonl(p, tok(), {});
  ASSERT_EQ(d.examples.size(), 4u);
  EXPECT_EQ(d.examples[0].line, 1u);
  EXPECT_EQ(d.examples[1].line, 3u);
  EXPECT_EQ(d.examples[2].line, 4u);
  EXPECT_EQ(d.examples[3].line, 6u);
  EXPECT_EQ(loss_spans(d.examples[0]), std::vector<std::string>{"3<|end_of_text|>"});
  EXPECT_EQ(loss_spans(d.examples[1]), std::vector<std::string>{"a<|eot_id|>"});
  EXPECT_EQ(d.examples[2].labels, (Ids{I, I, 8, 9}));
  EXPECT_EQ(loss_spans(d.examples[3]), std::vector<std::string>{"<|begin_of_text|>plain text<|end_of_text|>"});
  const DataStats& s = d.stats;
  EXPECT_EQ(s.records, 4u);
  EXPECT_EQ(s.examples, 4u);
  EXPECT_EQ(s.skipped_bad, 0u);
  EXPECT_EQ(s.truncated, 0u);
  EXPECT_EQ(s.no_target, 0u);
  int64_t tokens = 0, targets = 0;
  for (const Example& ex : d.examples) {
    tokens += static_cast<int64_t>(ex.input_ids.size());
    targets += target_count(ex);
  }
  EXPECT_EQ(s.tokens, tokens);
  EXPECT_EQ(s.target_tokens, targets);
  EXPECT_EQ(s.summary(), fmt::format("4 records: 4 examples, {} tokens, {} in the loss", tokens, targets));
}

TEST_F(TrainData, TruncationKeepsTheFirstSeqLenTokensAndCountsWhatIsLeft) {
  const std::string p = write("trunc.jsonl",
                              // 6 tokens, 5 targets: truncated to 4, targets at positions 1..3
                              R"({"input_ids": [1, 2, 3, 4, 5, 6]})"
                              "\n"
                              // the loss starts at position 4: nothing left after truncation
                              R"({"input_ids": [1, 2, 3, 4, 5, 6], "labels": [-100, -100, -100, -100, 5, 6]})"
                              "\n"
                              // exactly seq_len: untouched
                              R"({"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]})"
                              "\n"
                              // short, but nothing in the loss at t >= 1 (only position 0, never predicted)
                              R"({"input_ids": [1, 2], "labels": [1, -100]})"
                              "\n"
                              // a long Alpaca record cut inside its prompt
                              R"({"instruction": "a long instruction", "output": "o"})");
  DataOptions options;
  options.seq_len = 4;
  const Dataset d = load_jsonl(p, tok(), options);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(d.examples[0].input_ids, (Ids{1, 2, 3, 4}));
  EXPECT_EQ(d.examples[0].labels, (Ids{1, 2, 3, 4}));
  EXPECT_EQ(d.examples[1].input_ids, (Ids{1, 2, 3, 4}));
  EXPECT_EQ(d.examples[1].line, 3u);
  const DataStats& s = d.stats;
  EXPECT_EQ(s.records, 5u);
  EXPECT_EQ(s.examples, 2u);
  EXPECT_EQ(s.truncated, 3u);
  EXPECT_EQ(s.no_target, 3u);
  EXPECT_EQ(s.tokens, 8);
  EXPECT_EQ(s.target_tokens, 3 + 2);
  EXPECT_EQ(s.summary(),
            "5 records: 2 examples, 8 tokens, 5 in the loss; 3 truncated; 3 skipped with nothing left "
            "in the loss");

  // Without a limit the long records are whole.
  const Dataset whole = load_jsonl(p, tok(), {});
  EXPECT_EQ(whole.stats.truncated, 0u);
  EXPECT_EQ(whole.stats.no_target, 1u);
  EXPECT_EQ(whole.examples.size(), 4u);
}

TEST_F(TrainData, FileErrorsNameFileAndLine) {
  const std::string good = R"({"text": "ok"})";
  {
    // Line 2 is blank: the bad line is line 3.
    const std::string msg = load_error("json.jsonl", good + "\n\n{\"text\": \"unterminated}\n" + good);
    EXPECT_EQ(msg, path("json.jsonl") + ":3: expected one JSON object per line, found invalid JSON at byte 24");
  }
  EXPECT_EQ(load_error("key.jsonl", good + "\n" + R"({"instruction": "i", "output": "o", "foo": 1})"),
            path("key.jsonl") +
                ":2: expected only the keys instruction, input, output, answer of an Alpaca record, found unknown "
                "key 'foo'");
  EXPECT_EQ(load_error("vocab.jsonl", R"({"input_ids": [1, 2, 1000]})"),
            path("vocab.jsonl") + ":1: key 'input_ids': item 3: expected an integer id in [0, 384), found 1000");
  EXPECT_EQ(load_error("chat.jsonl", good + "\n" + good + "\n" + R"({"messages": [{"role": "user", "content": 3}]})"),
            path("chat.jsonl") + ":3: key 'messages': item 1: key 'content': expected a string, found 3");
  EXPECT_EQ(load_error("empty.jsonl", ""),
            path("empty.jsonl") + ": expected JSON lines of training records, found an empty file");
  EXPECT_EQ(load_error("blank.jsonl", "\n  \n\r\n"),
            path("blank.jsonl") + ": expected JSON lines of training records, found an empty file");
  // Well-formed, but nothing to learn from.
  DataOptions short_seq;
  short_seq.seq_len = 2;
  EXPECT_EQ(load_error("nothing.jsonl",
                       R"({"instruction": "i", "output": "o"})"
                       "\n"
                       R"({"input_ids": [5]})",
                       short_seq),
            path("nothing.jsonl") +
                ": expected at least one usable record, found none (2 records; 2 with nothing in the loss (1 "
                "truncated to seq_len 2))");
  // Options.
  DataOptions bad_seq;
  bad_seq.seq_len = 1;
  EXPECT_EQ(load_error("seq.jsonl", good, bad_seq), "seq_len: expected 0 (no limit) or at least 2, found 1");
  bad_seq.seq_len = -3;
  EXPECT_EQ(load_error("seq.jsonl", good, bad_seq), "seq_len: expected 0 (no limit) or at least 2, found -3");
  EXPECT_NE(error_of([&] { load_jsonl(path("missing.jsonl"), tok(), {}); }).find(path("missing.jsonl")),
            std::string::npos);
}

TEST_F(TrainData, SkipBadCountsMalformedLinesWithTheirMessages) {
  const std::string text = R"({"text": "one"})"
                           "\n"
                           R"({"txt": "typo"})"
                           "\n"
                           "not json\n"
                           R"({"text": "two"})"
                           "\n";
  const std::string p = write("skip.jsonl", text);
  EXPECT_EQ(error_of([&] { load_jsonl(p, tok(), {}); }),
            p + ":2: expected a training record: 'instruction' and 'output' (Alpaca), 'messages' (chat), "
                "'input_ids' (tokenized) or 'text', found keys 'txt'");
  DataOptions options;
  options.skip_bad = true;
  const Dataset d = load_jsonl(p, tok(), options);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(d.examples[0].line, 1u);
  EXPECT_EQ(d.examples[1].line, 4u);
  EXPECT_EQ(d.stats.records, 4u);
  EXPECT_EQ(d.stats.examples, 2u);
  EXPECT_EQ(d.stats.skipped_bad, 2u);
  ASSERT_EQ(d.stats.skip_messages.size(), 2u);
  EXPECT_EQ(d.stats.skip_messages[0],
            p + ":2: expected a training record: 'instruction' and 'output' (Alpaca), 'messages' (chat), "
                "'input_ids' (tokenized) or 'text', found keys 'txt'");
  EXPECT_EQ(d.stats.skip_messages[1], p + ":3: expected one JSON object per line, found invalid JSON at byte 2");
  EXPECT_NE(d.stats.summary().find("; 2 malformed skipped"), std::string::npos);

  // All malformed: an error that names the first.
  const std::string bad = write("allbad.jsonl", "[]\n{\"text\": 5}\n");
  EXPECT_EQ(error_of([&] { load_jsonl(bad, tok(), options); }),
            bad + ": expected at least one usable record, found none (2 records; 2 malformed (the first: " + bad +
                ":1: expected a JSON object, found []))");
}

// ---------------------------------------------------------------- batches

TEST(TrainBatch, ShiftsLabelsAndPadsToTheLongest) {
  std::vector<Example> examples(3);
  examples[0] = {{10, 11, 12}, {I, 11, 12}, 0};
  examples[1] = {{20, 21, 22, 23, 24}, {I, I, 22, I, 24}, 0};
  examples[2] = {{30, 31}, {30, 31}, 0};
  const std::vector<size_t> indices = {0, 1, 2};
  const Batch b = make_batch(examples, indices, /*pad_id=*/7);
  EXPECT_EQ(b.B, 3);
  EXPECT_EQ(b.T, 5);
  // (B, T) = (3, 5), right-padded with 7
  EXPECT_EQ(b.tokens, (Ids{10, 11, 12, 7, 7,    //
                           20, 21, 22, 23, 24,  //
                           30, 31, 7, 7, 7}));
  // targets[b, t] = labels[b][t + 1]; -1 for ignored labels, padding and each row's last position
  EXPECT_EQ(b.targets, (Ids{11, 12, -1, -1, -1,  //
                            -1, 22, -1, 24, -1,  //
                            31, -1, -1, -1, -1}));
  EXPECT_EQ(b.target_count, 2 + 2 + 1);

  // Order follows the indices; one example needs no padding.
  const std::vector<size_t> one = {2};
  const Batch single = make_batch(examples, one, 0);
  EXPECT_EQ(single.B, 1);
  EXPECT_EQ(single.T, 2);
  EXPECT_EQ(single.tokens, (Ids{30, 31}));
  EXPECT_EQ(single.targets, (Ids{31, -1}));
  EXPECT_EQ(single.target_count, 1);
  const std::vector<size_t> reversed = {2, 0};
  const Batch r = make_batch(examples, reversed, 0);
  EXPECT_EQ(r.tokens, (Ids{30, 31, 0, 10, 11, 12}));
  EXPECT_EQ(r.targets, (Ids{31, -1, -1, 11, 12, -1}));
}

TEST(TrainBatch, FromLoadedAlpacaRecordTheTargetsAreTheOutput) {
  std::vector<Example> examples = {from_json(R"({"instruction": "Name a colour.", "output": "Blue"})")};
  const std::vector<size_t> indices = {0};
  const Batch b = make_batch(examples, indices, 0);
  Ids predicted;
  for (int32_t t : b.targets)
    if (t != -1) predicted.push_back(t);
  EXPECT_EQ(tok().decode(predicted), "Blue<|end_of_text|>");
  EXPECT_EQ(b.target_count, static_cast<int64_t>(predicted.size()));
  EXPECT_EQ(b.target_count, target_count(examples[0]));
  // The first target sits at the last prompt position (it predicts the first output token).
  const size_t prompt_len = 1 + encode(alpaca_prompt("Name a colour.", "")).size();
  EXPECT_EQ(b.targets[prompt_len - 2], -1);
  EXPECT_NE(b.targets[prompt_len - 1], -1);
}

TEST(TrainBatch, Errors) {
  std::vector<Example> examples = {{{1, 2}, {1, 2}, 0}, {{}, {}, 0}};
  EXPECT_EQ(error_of([&] { make_batch(examples, std::vector<size_t>{}, 0); }),
            "make_batch: expected at least one example index, found none");
  EXPECT_EQ(error_of([&] {
              make_batch(examples, std::vector<size_t>{0, 2}, 0);
            }),
            "make_batch: expected an example index below 2, found 2");
  EXPECT_EQ(error_of([&] { make_batch(examples, std::vector<size_t>{1}, 0); }),
            "make_batch: example 1: expected input ids and labels of the same non-zero length, found 0 and 0");
}

// ---------------------------------------------------------------- epoch order

TEST(TrainOrder, EpochOrderIsASeededPermutation) {
  for (size_t n : {0u, 1u, 2u, 7u, 1000u}) {
    const std::vector<size_t> order = epoch_order(n, 42, 3);
    ASSERT_EQ(order.size(), n);
    std::vector<size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(sorted[i], i);
    EXPECT_EQ(epoch_order(n, 42, 3), order) << "same (seed, epoch), same order";
  }
  const std::vector<size_t> base = epoch_order(1000, 42, 0);
  EXPECT_NE(epoch_order(1000, 42, 1), base);
  EXPECT_NE(epoch_order(1000, 43, 0), base);
  std::vector<size_t> identity(1000);
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = i;
  EXPECT_NE(base, identity);
  // Seed and epoch are not interchangeable.
  EXPECT_NE(epoch_order(1000, 1, 2), epoch_order(1000, 2, 1));
}

TEST(TrainOrder, AllPermutationsOfThreeAreAboutEquallyLikely) {
  std::map<std::vector<size_t>, int> counts;
  const int epochs = 6000;
  for (int e = 0; e < epochs; ++e) ++counts[epoch_order(3, 7, e)];
  ASSERT_EQ(counts.size(), 6u);
  // Expected 1000 each; binomial sd ~ 29, so +-150 is over 5 sd.
  for (const auto& [perm, count] : counts) EXPECT_NEAR(count, 1000, 150);
}
