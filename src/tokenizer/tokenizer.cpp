#include "tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <queue>

#include "tokenizer/utf8.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace flora {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A short description of a JSON component for error messages.
std::string describe(const Json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return fmt::format("type '{}'", j["type"].get<std::string>());
  }
  std::string text = j.dump();
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

bool is_null_or_missing(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null();
}

// The parts of a tokenizer.json that are checked here rather than stored.
struct Config {
  std::optional<int32_t> template_bos;
};

void check_normalizer(const Json& root, const std::string& origin) {
  if (!is_null_or_missing(root, "normalizer")) {
    fail("{}: normalizer: unsupported {} (flora supports byte-level BPE without a normalizer)",
         origin, describe(root["normalizer"]));
  }
}

void check_decoder(const Json& root, const std::string& origin) {
  if (is_null_or_missing(root, "decoder")) {
    fail("{}: decoder: missing; flora supports the ByteLevel decoder only", origin);
  }
  const Json& decoder = root["decoder"];
  if (!decoder.is_object() || decoder.value("type", "") != "ByteLevel") {
    fail("{}: decoder: unsupported {} (flora supports ByteLevel only)", origin, describe(decoder));
  }
}

// Reads the BOS token that a TemplateProcessing prepends. Any template that does
// more than "optional special token, then the text" is refused: encode() takes
// add_bos explicitly instead of interpreting templates.
void read_post_processor(const Json& pp, const std::string& path, const std::string& origin,
                         Config& config) {
  if (!pp.is_object()) fail("{}: {}: expected an object, found {}", origin, path, describe(pp));
  const std::string type = pp.value("type", "");
  if (type == "ByteLevel") return;  // affects only offsets, which flora does not report
  if (type == "Sequence") {
    const auto processors = pp.find("processors");
    if (processors == pp.end() || !processors->is_array()) {
      fail("{}: {}: missing array 'processors'", origin, path);
    }
    for (size_t i = 0; i < processors->size(); ++i) {
      read_post_processor((*processors)[i], fmt::format("{}.processors[{}]", path, i), origin,
                          config);
    }
    return;
  }
  if (type != "TemplateProcessing") {
    fail("{}: {}: unsupported {} (flora supports ByteLevel, TemplateProcessing and Sequence)",
         origin, path, describe(pp));
  }
  const auto single = pp.find("single");
  if (single == pp.end() || !single->is_array()) fail("{}: {}: missing array 'single'", origin, path);
  const auto unsupported = [&] {
    fail("{}: {}.single: {}: flora supports only an optional leading special token before the "
         "text",
         origin, path, single->dump());
  };
  size_t next = 0;
  if (next < single->size() && (*single)[next].contains("SpecialToken")) {
    const Json& special = (*single)[next]["SpecialToken"];
    const std::string name = json_get<std::string>(special, "id", origin + ": " + path + ".single[0]");
    const auto table = pp.find("special_tokens");
    if (table == pp.end() || !table->contains(name)) {
      fail("{}: {}.special_tokens: missing '{}'", origin, path, name);
    }
    const auto ids = json_get<std::vector<int32_t>>((*table)[name], "ids",
                                                    origin + ": " + path + ".special_tokens." + name);
    if (ids.size() != 1) fail("{}: {}.special_tokens.{}: expected one id", origin, path, name);
    config.template_bos = ids[0];
    ++next;
  }
  if (next + 1 != single->size() || !(*single)[next].contains("Sequence")) unsupported();
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  return from_json_text(read_file(tokenizer_json_path), tokenizer_json_path);
}

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& origin) {
  const Json root = parse_json(text, origin);
  if (!root.is_object()) fail("{}: expected a tokenizer.json object, found {}", origin, describe(root));
  Tokenizer t;
  t.origin_ = origin;
  check_normalizer(root, origin);
  check_decoder(root, origin);

  // --- model ---
  const auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) fail("{}: missing object 'model'", origin);
  const Json& model = *model_it;
  const std::string type = model.value("type", "");
  if (type != "BPE") {
    fail("{}: model.type: unsupported '{}' (flora supports byte-level BPE only)", origin,
         type.empty() ? std::string("(missing)") : type);
  }
  const std::string model_where = origin + ": model";
  if (!is_null_or_missing(model, "dropout") && json_get<double>(model, "dropout", model_where) != 0) {
    fail("{}: model.dropout: BPE dropout is not supported", origin);
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!json_get_or<std::string>(model, key, "", model_where).empty()) {
      fail("{}: model.{}: not supported by byte-level BPE in flora", origin, key);
    }
  }
  if (json_get_or<bool>(model, "byte_fallback", false, model_where)) {
    fail("{}: model.byte_fallback: not supported (byte-level BPE needs no fallback)", origin);
  }
  t.ignore_merges_ = json_get_or<bool>(model, "ignore_merges", false, model_where);

  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    fail("{}: model.vocab: missing or not an object", origin);
  }
  const auto added_it = root.find("added_tokens");
  const bool has_added = added_it != root.end() && !added_it->is_null();
  if (has_added && !added_it->is_array()) fail("{}: added_tokens: expected an array", origin);

  int64_t max_id = -1;
  // The id table has max_id + 1 entries, so ids may leave gaps but not arbitrarily large
  // ones: a single id of 2e9 would otherwise allocate tens of gigabytes (found by fuzzing).
  const int64_t id_limit =
      static_cast<int64_t>(vocab_it->size() + (has_added ? added_it->size() : 0)) + 65536;
  const auto check_id = [&](const Json& value, const std::string& where) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      fail("{}: {}: expected a token id, found {}", origin, where, value.dump());
    }
    if (value.get<int64_t>() >= id_limit) {
      fail("{}: {}: expected a token id below {} (the number of tokens plus 65536), found {}", origin, where,
           id_limit, value.dump());
    }
    max_id = std::max(max_id, value.get<int64_t>());
    return static_cast<int32_t>(value.get<int64_t>());
  };
  for (const auto& [token, id] : vocab_it->items()) check_id(id, "model.vocab." + token);
  if (has_added) {
    for (size_t i = 0; i < added_it->size(); ++i) {
      const Json& entry = (*added_it)[i];
      if (!entry.is_object() || !entry.contains("id")) {
        fail("{}: added_tokens[{}]: expected an object with 'id'", origin, i);
      }
      check_id(entry["id"], fmt::format("added_tokens[{}].id", i));
    }
  }
  t.pieces_.resize(static_cast<size_t>(max_id + 1));

  t.vocab_.reserve(vocab_it->size());
  for (const auto& [token, id_json] : vocab_it->items()) {
    const int32_t id = id_json.get<int32_t>();
    Piece& piece = t.pieces_[id];
    if (piece.kind != Piece::Kind::kNone) {
      fail("{}: model.vocab: id {} is given to two tokens, one of them '{}'", origin, id, token);
    }
    piece.kind = Piece::Kind::kVocab;
    // Characters outside the ByteLevel alphabet stand for their own UTF-8, as in HF.
    for (size_t pos = 0; pos < token.size();) {
      const size_t length = utf8::scan(token, pos).length;
      const std::string_view ch(token.data() + pos, length);
      const int byte = byte_from_byte_level(ch);
      if (byte >= 0) {
        piece.bytes.push_back(static_cast<char>(byte));
      } else {
        piece.bytes.append(ch);
      }
      pos += length;
    }
    t.vocab_.emplace(token, id);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = t.vocab_.find(byte_level_chars()[b]);
    if (it == t.vocab_.end()) {
      fail("{}: model.vocab: no token for byte 0x{:02X} ('{}'); byte-level BPE needs all 256",
           origin, b, byte_level_chars()[b]);
    }
    t.byte_ids_[b] = it->second;
  }

  const auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    fail("{}: model.merges: missing or not an array", origin);
  }
  const Json& merges = *merges_it;
  t.merges_.reserve(merges.size());
  const auto lookup = [&](const std::string& token, size_t i, const char* what) {
    const auto it = t.vocab_.find(token);
    if (it == t.vocab_.end()) {
      fail("{}: model.merges[{}]: {} '{}' is not in model.vocab", origin, i, what, token);
    }
    return it->second;
  };
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& merge = merges[i];
    std::string left, right;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        fail("{}: model.merges[{}]: expected \"left right\", found {}", origin, i, merge.dump());
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("{}: model.merges[{}]: expected \"left right\" or [left, right], found {}", origin, i,
           merge.dump());
    }
    const int32_t left_id = lookup(left, i, "token");
    const int32_t right_id = lookup(right, i, "token");
    const int32_t merged_id = lookup(left + right, i, "merged token");
    // A repeated pair takes its last rank, as in both reference implementations.
    t.merges_[pair_key(left_id, right_id)] = Merge{static_cast<int32_t>(i), merged_id};
  }

  // --- added tokens ---
  t.trie_.emplace_back();
  if (has_added) {
    for (size_t i = 0; i < added_it->size(); ++i) {
      const Json& entry = (*added_it)[i];
      const std::string where = fmt::format("{}: added_tokens[{}]", origin, i);
      const int32_t id = entry["id"].get<int32_t>();
      const auto content = json_get<std::string>(entry, "content", where);
      if (content.empty()) fail("{}: empty content", where);
      for (const char* key : {"lstrip", "rstrip", "single_word"}) {
        if (json_get_or<bool>(entry, key, false, where)) {
          fail("{} ('{}'): {} is not supported", where, content, key);
        }
      }
      const bool special = json_get_or<bool>(entry, "special", false, where);
      // An added token overrides a vocabulary entry with the same id, as in HF.
      t.pieces_[id] = Piece{special ? Piece::Kind::kSpecial : Piece::Kind::kAdded, content};
      t.added_[content] = id;
      t.add_to_trie(content, id);
    }
  }

  // --- pre-tokenizer ---
  if (is_null_or_missing(root, "pre_tokenizer")) {
    fail("{}: pre_tokenizer: missing; flora needs Split steps followed by ByteLevel", origin);
  }
  std::vector<std::pair<const Json*, std::string>> steps;
  const Json& pre = root["pre_tokenizer"];
  if (pre.is_object() && pre.value("type", "") == "Sequence") {
    const auto list = pre.find("pretokenizers");
    if (list == pre.end() || !list->is_array()) {
      fail("{}: pre_tokenizer: missing array 'pretokenizers'", origin);
    }
    for (size_t i = 0; i < list->size(); ++i) {
      steps.emplace_back(&(*list)[i], fmt::format("pre_tokenizer.pretokenizers[{}]", i));
    }
  } else {
    steps.emplace_back(&pre, "pre_tokenizer");
  }
  bool byte_level = false;
  for (const auto& [step, path] : steps) {
    const std::string where = origin + ": " + path;
    const std::string step_type = step->is_object() ? step->value("type", "") : "";
    if (byte_level) fail("{}: unsupported {} after ByteLevel", where, describe(*step));
    if (step_type == "Split") {
      const auto pattern = step->find("pattern");
      if (pattern == step->end() || !pattern->is_object() || !pattern->contains("Regex")) {
        fail("{}.pattern: flora supports {{\"Regex\": ...}} patterns only, found {}", where,
             pattern == step->end() ? std::string("nothing") : pattern->dump());
      }
      const auto behavior = json_get<std::string>(*step, "behavior", where);
      if (behavior != "Isolated") fail("{}.behavior: unsupported '{}' (flora supports Isolated)", where, behavior);
      if (json_get_or<bool>(*step, "invert", false, where)) fail("{}.invert: true is not supported", where);
      t.splitters_.emplace_back(json_get<std::string>(*pattern, "Regex", where + ".pattern"),
                                where + ".pattern");
    } else if (step_type == "ByteLevel") {
      if (json_get_or<bool>(*step, "add_prefix_space", false, where)) {
        fail("{}.add_prefix_space: true is not supported", where);
      }
      if (json_get_or<bool>(*step, "use_regex", true, where)) {
        fail("{}.use_regex: true (the GPT-2 split) is not supported; flora expects the split in a "
             "Split step",
             where);
      }
      byte_level = true;
    } else {
      fail("{}: unsupported pre-tokenizer {} (flora supports Split and ByteLevel)", where,
           describe(*step));
    }
  }
  if (!byte_level) fail("{}: pre_tokenizer: no ByteLevel step; flora supports byte-level BPE only", origin);

  // --- post-processor ---
  Config config;
  if (!is_null_or_missing(root, "post_processor")) {
    read_post_processor(root["post_processor"], "post_processor", origin, config);
  }
  if (config.template_bos) {
    if (*config.template_bos >= t.vocab_size() || t.pieces_[*config.template_bos].kind == Piece::Kind::kNone) {
      fail("{}: post_processor: BOS id {} is not a token", origin, *config.template_bos);
    }
    t.bos_id_ = config.template_bos;
  } else if (const auto it = t.added_.find("<|begin_of_text|>"); it != t.added_.end()) {
    t.bos_id_ = it->second;
  }
  return t;
}

void Tokenizer::add_to_trie(const std::string& content, int32_t id) {
  trie_first_[static_cast<uint8_t>(content[0])] = true;
  int32_t node = 0;
  for (char c : content) {
    const auto byte = static_cast<uint8_t>(c);
    auto& next = trie_[node].next;
    const auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == byte; });
    if (it != next.end()) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(trie_.size());
      next.emplace_back(byte, child);
      trie_.emplace_back();  // invalidates `next`; not used again in this iteration
      node = child;
    }
  }
  trie_[node].token = id;
}

size_t Tokenizer::match_added(std::string_view text, size_t pos, bool parse_special, int32_t* id) const {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& next = trie_[node].next;
    const auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == byte; });
    if (it == next.end()) break;
    node = it->second;
    const int32_t token = trie_[node].token;
    if (token >= 0 && (parse_special || pieces_[token].kind != Piece::Kind::kSpecial)) {
      best = i + 1 - pos;
      *id = token;
    }
  }
  return best;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::string sanitized;
  if (!utf8::is_valid(text)) {
    sanitized = utf8::sanitize(text);
    text = sanitized;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) {
    if (!bos_id_) fail("{}: a BOS token was requested, but the tokenizer defines none", origin_);
    out.push_back(*bos_id_);
  }
  // The cache lives for one call: it keys on views into `text`, and needs no lock.
  BpeCache cache;
  size_t section_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    int32_t id = -1;
    const size_t length =
        trie_first_[static_cast<uint8_t>(text[pos])] ? match_added(text, pos, parse_special, &id) : 0;
    if (length == 0) {
      ++pos;
      continue;
    }
    encode_section(text.substr(section_start, pos - section_start), cache, out);
    out.push_back(id);
    pos += length;
    section_start = pos;
  }
  encode_section(text.substr(section_start), cache, out);
  return out;
}

void Tokenizer::encode_section(std::string_view text, BpeCache& cache, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text}, next;
  for (const RegexSplitter& splitter : splitters_) {
    next.clear();
    for (std::string_view piece : pieces) splitter.split(piece, next);
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) {
    const auto [it, inserted] = cache.try_emplace(piece);
    if (inserted) encode_pretoken(piece, it->second);
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

void Tokenizer::encode_pretoken(std::string_view bytes, std::vector<int32_t>& out) const {
  const size_t n = bytes.size();
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    const auto it = vocab_.find(to_byte_level(bytes));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols form a linked list over positions 0..n-1; a merged symbol keeps the
  // position of its left part. The lowest rank merges first, the leftmost on a
  // tie, which is the order of the Rust and JS references.
  std::vector<int32_t> ids(n), next(n), prev(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = byte_ids_[static_cast<uint8_t>(bytes[i])];
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t left) {
    const int32_t right = next[left];
    if (right < 0) return;
    const auto it = merges_.find(pair_key(ids[left], ids[right]));
    if (it != merges_.end()) {
      queue.push({it->second.rank, left, right, ids[left], ids[right], it->second.id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(n); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // Entries go stale when a neighbour merged after they were queued.
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || ids[c.left] != c.left_id ||
        ids[c.right] != c.right_id) {
      continue;
    }
    ids[c.left] = c.merged_id;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    if (prev[c.left] >= 0) consider(prev[c.left]);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    const std::string& piece = token_bytes(id);
    if (skip_special && pieces_[id].kind == Piece::Kind::kSpecial) continue;
    bytes += piece;
  }
  return utf8::is_valid(bytes) ? bytes : utf8::sanitize(bytes);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || pieces_[id].kind == Piece::Kind::kNone) {
    fail("{}: token id {} is not in the vocabulary (size {})", origin_, id, vocab_size());
  }
  return pieces_[id].bytes;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && pieces_[id].kind == Piece::Kind::kSpecial;
}

std::vector<int32_t> Tokenizer::eos_ids() const {
  std::vector<int32_t> ids;
  for (const char* name : {"<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"}) {
    if (const auto it = added_.find(name); it != added_.end()) ids.push_back(it->second);
  }
  return ids;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  const std::string key(token);
  if (const auto it = added_.find(key); it != added_.end()) return it->second;
  if (const auto it = vocab_.find(key); it != vocab_.end()) return it->second;
  return std::nullopt;
}

std::string StreamDecoder::push(int32_t id) {
  const std::string& bytes = tokenizer_->token_bytes(id);
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += bytes;
  return take(false);
}

std::string StreamDecoder::flush() { return take(true); }

std::string StreamDecoder::take(bool final) {
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const utf8::Step step = utf8::scan(pending_, pos);
    if (step.kind == utf8::Kind::kIncomplete && !final) break;  // the next token may complete it
    if (step.kind == utf8::Kind::kValid) {
      out.append(pending_, pos, step.length);
    } else {
      out.append(utf8::kReplacement);
    }
    pos += step.length;
  }
  pending_.erase(0, pos);
  return out;
}

}  // namespace flora
