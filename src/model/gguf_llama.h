// Llama in GGUF (io/gguf.h), as llama.cpp's convert_hf_to_gguf.py writes it
// and llama.cpp reads it: the tensor names, the metadata keys of the
// configuration and the tokenizer, and the order of the rows of q and k.
// Both ways: a model path may be a .gguf file wherever a model directory is
// taken, and `flora quantize` writes one from a model directory.
//
// The row order: llama.cpp rotates pairs of adjacent elements of a head
// (x[2i], x[2i+1]), Hugging Face pairs the halves (x[i], x[i + hd/2]), so the
// converter reorders the rows of q_proj and k_proj within each head:
//   GGUF row  head * hd + 2 i + h  holds HF row  head * hd + h * hd / 2 + i
// (i < hd / 2, h in {0, 1}). flora keeps the Hugging Face order in memory and
// reorders rows when it reads or writes a GGUF; a row is whole blocks in every
// format, so this is a copy of rows whatever the tensor type.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/gguf.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace flora {

// Whether `path` names a GGUF file rather than a model directory: a regular
// file (its content is checked when it is opened).
bool is_gguf_path(const std::string& path);

// The Hugging Face name of a GGUF tensor ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"), "rope_freqs.weight" for llama3's
// RoPE factors, nullopt for a tensor flora does not read; and the reverse.
std::optional<std::string> hf_tensor_name(std::string_view gguf_name);
std::string gguf_tensor_name(std::string_view hf_name);

// The HF row that GGUF row `row` of q or k holds (see above), and its inverse.
int64_t hf_row_of_gguf_row(int64_t row, int64_t head_dim);
int64_t gguf_row_of_hf_row(int64_t row, int64_t head_dim);

// The configuration from the `llama.*` and `tokenizer.ggml.*` keys, checked as
// config.json is (LlamaConfig::from_json, with the file and key named), and
// llama3's RoPE from the rope_freqs tensor when there is one. Fails on an
// architecture other than llama and on rope scaling it does not implement.
LlamaConfig llama_config_from_gguf(const GgufFile& file);

// The tokenizer from `tokenizer.ggml.*`: a byte-level BPE (model gpt2) with
// Llama 3's pre-tokenizer (pre llama-bpe); anything else is refused by name.
Tokenizer tokenizer_from_gguf(const GgufFile& file);

// The tokenizer of a model path: DIR/tokenizer.json, or a GGUF's metadata.
Tokenizer load_model_tokenizer(const std::string& model_path);
// The configuration of a model path: DIR/config.json, or a GGUF's metadata.
LlamaConfig load_model_config(const std::string& model_path);

// What `flora quantize --type` writes (the norms and RoPE factors stay F32,
// as llama.cpp's converter keeps them). f32, f16, bf16 and q8_0: every matrix
// in that type. q4_0 and q4_k_m: llama-quantize's mix of that name (see
// gguf_matrix_type).
enum class GgufOutType { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_K_M };
std::optional<GgufOutType> parse_gguf_out_type(std::string_view name);  // "f32", ..., "q4_k_m"
std::string gguf_out_type_names();                                      // for messages

// The type of one matrix in a file of `type`, as llama-quantize (llama.cpp's
// llama_tensor_get_type, without an importance matrix) picks it for Llama:
// - the output matrix (the embedding when tied: it is the output too) is Q6_K,
//   unless the file is Q8_0 (or wider) throughout;
// - q4_k_m: attn_v and ffn_down are Q6_K in the layers use_more_bits picks
//   (the first and last eighth, and every third layer between), Q4_K elsewhere;
// - a row that is not whole blocks of the chosen type falls back: Q6_K to
//   Q8_0 (as llama.cpp), Q4_K to Q4_0 (llama.cpp picks Q5_0, which flora does
//   not have), then to F16.
// hf_name: the Hugging Face name; layer / layers: its layer and the count (the
// output and embedding: any layer).
DType gguf_matrix_type(GgufOutType type, const std::string& hf_name, int64_t cols, int64_t layer, int64_t layers,
                       bool tied);

// llama3's RoPE as llama.cpp reads it (rope_freqs): per frequency, the
// unscaled inverse frequency over the scaled one, in f32. Empty without
// llama3 scaling.
std::vector<float> llama3_rope_factors(const LlamaConfig& config);

// The tokenizer.ggml.* metadata of a tokenizer.json (its text, `origin`
// naming it), as llama.cpp's converter writes it: the vocabulary by id up to
// vocab_size (model entries normal, added tokens control when special and
// user-defined otherwise, ids left unused "[PADn]"), the merges, bos/eos/eot
// ids. Refuses what flora could not read back (tokenizer_from_gguf).
std::vector<std::pair<std::string, GgufValue>> gguf_tokenizer_metadata(const std::string& tokenizer_json,
                                                                       const std::string& origin,
                                                                       const LlamaConfig& config);

// Writes a model directory (config.json, safetensors, tokenizer.json and, if
// present, tokenizer_config.json's chat_template) as a GGUF file that
// llama.cpp loads, through a temporary name. progress (optional) is told of
// each matrix as it is converted: (done, total, Hugging Face name). threads
// convert the rows of each matrix (the file's bytes do not depend on them).
void write_llama_gguf(const std::string& model_dir, const std::string& out_path, GgufOutType type,
                      const std::function<void(int64_t, int64_t, const std::string&)>& progress = {},
                      int threads = 1);

}  // namespace flora
