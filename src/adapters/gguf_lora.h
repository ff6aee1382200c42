// llama.cpp's LoRA adapters in GGUF, both ways (its convert_lora_to_gguf.py
// writes them, llama-adapter.cpp reads them):
//   metadata  general.architecture = llama, general.type = adapter,
//             adapter.type = lora, adapter.lora.alpha (f32)
//   tensors   blk.N.<target>.weight.lora_a   A, ne [in, r]  (PEFT's lora_A (r, in) as it is)
//             blk.N.<target>.weight.lora_b   B, ne [r, out] (PEFT's lora_B (out, r); for q and k
//                                            its rows in llama.cpp's order, model/gguf_llama.h)
//   targets   attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
// llama.cpp scales the product by alpha / r, as PEFT does without rsLoRA.
// FLoRA adapters have no llama.cpp counterpart: llama.cpp runs each LoRA
// as two separate products added to one projection, and FLoRA's backward
// adapter reads the sum of all the forward adapters of a sub-block.
#pragma once
#include <string>

#include "adapters/adapter.h"
#include "model/config.h"

namespace flora {

// Writes a LoRA adapter as llama.cpp's GGUF LoRA (F32 matrices), through a
// temporary name. Refuses a FLoRA adapter, saying why. rsLoRA's s = alpha /
// sqrt(r) is written as the alpha that gives it under llama.cpp's alpha / r.
void export_lora_gguf(const Adapter& adapter, const LlamaConfig& model, const std::string& out_path);

// Reads one (Adapter::load does, for a path that is a file): the rank from
// the tensors, the targets those present in layer 0, every layer holding
// the same; alpha 0 or absent is llama.cpp's "scale 1" (alpha = r).
// Everything is checked as an adapter directory is, naming the file and
// the GGUF tensor.
Adapter load_lora_gguf(const std::string& path, const LlamaConfig& model);

}  // namespace flora
