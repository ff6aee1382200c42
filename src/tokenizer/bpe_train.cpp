#include "tokenizer/bpe_train.h"

#include <cstdint>
#include <map>
#include <set>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace flora {

namespace {

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

void apply_merge(Word& word, int32_t left, int32_t right, int32_t merged) {
  std::vector<int32_t>& s = word.symbols;
  size_t out = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
      s[out++] = merged;
      ++i;
    } else {
      s[out++] = s[i];
    }
  }
  s.resize(out);
}

nlohmann::ordered_json special_token_ref(const std::string& name, int type_id) {
  return {{"SpecialToken", {{"id", name}, {"type_id", type_id}}}};
}

nlohmann::ordered_json sequence_ref(const char* name, int type_id) {
  return {{"Sequence", {{"id", name}, {"type_id", type_id}}}};
}

}  // namespace

std::string train_byte_level_bpe(const std::string& corpus, int vocab_size,
                                 const std::vector<std::string>& special_tokens) {
  const char* origin = "train_byte_level_bpe";
  std::set<std::string> seen;
  for (const std::string& special : special_tokens) {
    if (special.empty() || !utf8::is_valid(special) || !seen.insert(special).second) {
      fail("{}: special token '{}' is empty, invalid UTF-8 or repeated", origin, special);
    }
  }
  const int num_special = static_cast<int>(special_tokens.size());
  const int model_vocab = vocab_size - num_special;
  if (model_vocab < 256) {
    fail("{}: vocab_size {} leaves {} ids for the vocabulary after {} special tokens; at least "
         "256 (one per byte) are needed",
         origin, vocab_size, model_vocab, num_special);
  }

  const std::string text = utf8::is_valid(corpus) ? corpus : utf8::sanitize(corpus);
  std::vector<std::string_view> pieces;
  RegexSplitter(llama3_split_pattern(), origin).split(text, pieces);
  std::map<std::string_view, int64_t> counts;  // ordered, so that training is deterministic
  for (std::string_view piece : pieces) ++counts[piece];
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [piece, count] : counts) {
    Word word{{}, count};
    for (char c : piece) word.symbols.push_back(static_cast<uint8_t>(c));
    words.push_back(std::move(word));
  }

  std::vector<std::string> tokens;  // id -> bytes
  std::map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(1, static_cast<char>(b));
    ids.emplace(tokens.back(), b);
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  while (static_cast<int>(tokens.size()) < model_vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pair_counts;
    for (const Word& word : words) {
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        pair_counts[{word.symbols[i], word.symbols[i + 1]}] += word.count;
      }
    }
    if (pair_counts.empty()) {
      fail("{}: the corpus ({} bytes) yields only {} tokens, fewer than the {} requested", origin,
           corpus.size(), tokens.size(), model_vocab);
    }
    auto best = pair_counts.begin();
    for (auto it = std::next(best); it != pair_counts.end(); ++it) {
      if (it->second != best->second) {
        if (it->second > best->second) best = it;
        continue;
      }
      const auto key = [&](const auto& entry) {
        return std::pair<const std::string&, const std::string&>(tokens[entry->first.first],
                                                                 tokens[entry->first.second]);
      };
      if (key(it) < key(best)) best = it;
    }
    const auto [left, right] = best->first;
    const std::string merged_bytes = tokens[left] + tokens[right];
    auto [it, inserted] = ids.emplace(merged_bytes, static_cast<int32_t>(tokens.size()));
    if (inserted) tokens.push_back(merged_bytes);
    merges.emplace_back(left, right);
    for (Word& word : words) apply_merge(word, left, right, it->second);
  }

  using OJson = nlohmann::ordered_json;
  OJson vocab = OJson::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[to_byte_level(tokens[id])] = id;
  OJson merge_list = OJson::array();
  for (const auto& [left, right] : merges) {
    merge_list.push_back({to_byte_level(tokens[left]), to_byte_level(tokens[right])});
  }
  OJson added = OJson::array();
  for (int i = 0; i < num_special; ++i) {
    added.push_back({{"id", model_vocab + i},
                     {"content", special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  OJson processors = OJson::array();
  processors.push_back(
      {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}});
  if (num_special > 0) {
    const std::string& bos = special_tokens[0];
    OJson special_map = OJson::object();
    special_map[bos] = {{"id", bos}, {"ids", {model_vocab}}, {"tokens", {bos}}};
    processors.push_back({{"type", "TemplateProcessing"},
                          {"single", {special_token_ref(bos, 0), sequence_ref("A", 0)}},
                          {"pair",
                           {special_token_ref(bos, 0), sequence_ref("A", 0), special_token_ref(bos, 1),
                            sequence_ref("B", 1)}},
                          {"special_tokens", special_map}});
  }

  OJson root = OJson::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", std::string(llama3_split_pattern())}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  root["post_processor"] = {{"type", "Sequence"}, {"processors", processors}};
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", true},
                   {"vocab", vocab},
                   {"merges", merge_list}};
  return root.dump(2) + "\n";
}

const char* tiny_tokenizer_corpus() {
  return R"corpus(The little lighthouse stood at the end of a long stone pier. Every evening, when the sun
went down behind the hills, the keeper climbed the ninety-two steps and lit the lamp. Ships
that passed in the night saw the light and knew where the rocks were. Nobody thanked the
keeper, but she didn't mind; she liked the quiet, the wind, and the smell of the sea.

One morning a boy called Tom knocked on her door. "I've lost my dog," he said. "He ran
along the beach and I can't find him anywhere." The keeper put on her coat. "We'll look
together," she said. "Dogs like the rock pools. They're full of crabs." They walked for an
hour and found the dog asleep in the sun, next to a bucket that somebody had left behind.

How to make a simple loaf of bread:
1. Mix 500 grams of flour, 10 grams of salt and 7 grams of dried yeast in a large bowl.
2. Add 350 ml of warm water and stir until the dough comes together.
3. Knead it for ten minutes, then leave it to rise for about 1 hour.
4. Shape the loaf, let it rise again, and bake it at 220 degrees for 30 to 35 minutes.
It's done when the bottom sounds hollow if you tap it.

The weather today will be cloudy in the north, with light rain spreading from the west in
the afternoon. Temperatures will reach 14 degrees in the south. Tomorrow should be brighter
and warmer, although there's a small chance of showers near the coast.

Q: What is the capital of France?
A: The capital of France is Paris.
Q: How many days are there in a leap year?
A: There are 366 days in a leap year.
Q: Who wrote the story about the old man and the sea?
A: Ernest Hemingway wrote it in 1951, and it was published in 1952.

Learning a new language takes time. Start with the words you use every day: hello, thank
you, please, water, bread, left, right, today and tomorrow. Read short stories, listen to
songs, and don't be afraid of making mistakes. Most people are happy to help when you try.

The train to the city leaves at 08:15 from platform 3. A return ticket costs $12.50, or
$9.75 if you travel after ten o'clock. On Sundays the trains run every thirty minutes.

In the garden there were apples, pears and plums. The children picked the fruit that had
fallen on the grass and carried it to the kitchen in baskets. Their grandmother made jam,
pies and a cake that they ate in the evening, sitting outside while the stars came out.

"Where are you going?" asked the cat.
"To the market," said the fox. "I'm going to sell my old hat."
"Why would anybody buy an old hat?" asked the cat.
"Because it's a magic hat," said the fox, and he smiled. "It makes you invisible."
"Then how do you know you're wearing it?" The fox thought about that for a long time.

Science tells us that water boils at 100 degrees Celsius at sea level, but at a lower
temperature on top of a mountain, because the air pressure is lower there. Light from the
Sun takes about eight minutes to reach the Earth. The Moon is roughly 384,400 kilometres away.

Dear Sam,
Thank you for your letter. I was very pleased to hear that you have started your new job
and that you like the people you work with. We're all well here. The weather has been
terrible, but the garden looks lovely. Please come and visit us when you have some time.
Best wishes,
Anna

Rules for the library: speak quietly, return books on time, and never write in them. You
may borrow up to five books at once. If you lose a book, you'll have to pay for a new one.
The library opens at nine and closes at six, except on Saturdays, when it closes at one.
)corpus";
}

}  // namespace flora
