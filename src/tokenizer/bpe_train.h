// Byte-level BPE training for small vocabularies (test and demo models).
#pragma once
#include <string>
#include <vector>

namespace flora {

// Trains on `corpus` and returns the text of a tokenizer.json in Llama 3's
// format: Llama 3's Split regex then ByteLevel, a BPE model with ignore_merges,
// merges written as [left, right] pairs, and `special_tokens` as special added
// tokens with the last ids (vocab_size - N .. vocab_size - 1). The first special
// token is BOS: a TemplateProcessing post-processor prepends it.
//
// Ids 0..255 are the single bytes in byte order (id b is byte b); the merges add
// the ids after them. Each step merges the pair of adjacent symbols occurring
// most often, counted over pre-tokens; ties go to the pair whose (left bytes,
// right bytes) sorts first, so the output depends only on the arguments.
// A merge whose result is already a token adds a merge but no id. Fails if the
// corpus runs out of pairs before the vocabulary is full.
std::string train_byte_level_bpe(const std::string& corpus, int vocab_size,
                                 const std::vector<std::string>& special_tokens);

// A few KB of varied English prose for `flora init-model --preset tiny`.
const char* tiny_tokenizer_corpus();

}  // namespace flora
