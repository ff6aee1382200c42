// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json, of the kind
// Llama 3 uses. Only that kind is accepted: any other model, normalizer,
// pre-tokenizer, post-processor or decoder is refused with the file and field
// named, because approximating it would silently produce wrong ids.
//
// Text handling: input that is not valid UTF-8 is encoded as if each ill-formed
// subpart were U+FFFD (utf8::sanitize); decode() returns valid UTF-8 in the same
// way. Decoding does no clean-up of spaces. Special tokens (added tokens) in the
// input are recognised, leftmost-longest, before pre-tokenization when
// parse_special is true.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pretokenizer.h"

namespace flora {

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // `text` is the content of a tokenizer.json; `origin` names it in errors.
  static Tokenizer from_json_text(const std::string& text, const std::string& origin);

  // add_bos prepends bos_id() (and fails if there is none). With parse_special
  // false, special added tokens written in `text` are encoded as plain text;
  // non-special added tokens are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  // Fails on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw bytes a token stands for (the content, for added tokens).
  const std::string& token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;

  // One more than the largest id of the vocabulary or the added tokens.
  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  // The ids of <|end_of_text|>, <|eot_id|> and <|eom_id|>, those present.
  std::vector<int32_t> eos_ids() const;
  // The id of a token as tokenizer.json spells it: an added token's content or a
  // vocabulary entry in the ByteLevel alphabet ("Ġworld").
  std::optional<int32_t> token_id(std::string_view token) const;
  const std::string& origin() const { return origin_; }

 private:
  struct Piece {
    enum class Kind : uint8_t { kNone, kVocab, kSpecial, kAdded };
    Kind kind = Kind::kNone;
    std::string bytes;
  };
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  // Added tokens as a byte trie, for leftmost-longest matching.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> next;  // byte -> node index
    int32_t token = -1;
  };
  using BpeCache = std::unordered_map<std::string_view, std::vector<int32_t>>;

  Tokenizer() = default;
  void encode_section(std::string_view text, BpeCache& cache, std::vector<int32_t>& out) const;
  void encode_pretoken(std::string_view bytes, std::vector<int32_t>& out) const;
  // Length of the added token matched at text[pos], 0 if none; its id in *id.
  size_t match_added(std::string_view text, size_t pos, bool parse_special, int32_t* id) const;
  void add_to_trie(const std::string& content, int32_t id);

  std::string origin_;
  std::vector<RegexSplitter> splitters_;  // applied in turn, each to the pieces of the previous
  std::unordered_map<std::string, int32_t> vocab_;  // ByteLevel spelling -> id (model vocab only)
  std::unordered_map<std::string, int32_t> added_;  // content -> id
  std::vector<Piece> pieces_;                       // by id
  std::array<int32_t, 256> byte_ids_{};             // byte -> id of its one-byte token
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> merge
  bool ignore_merges_ = false;
  std::vector<TrieNode> trie_;
  std::array<bool, 256> trie_first_{};  // bytes that can start an added token
  std::optional<int32_t> bos_id_;
};

// Turns token ids into text as they are generated: push() returns only complete
// UTF-8 characters and holds back an unfinished one; flush() returns the rest,
// with ill-formed bytes as U+FFFD. The concatenated output equals decode() of
// all the ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  std::string take(bool final);
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace flora
