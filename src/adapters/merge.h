// lora-merged: W_m <- W_m + s * B_m A_m written out as a plain model directory,
// which every Llama runtime then runs at zero adapter cost.
#pragma once
#include <string>

#include "adapters/adapter.h"

namespace flora {

// Reads the model at model_dir (config.json and its weights) and writes to
// out_dir a full model directory: config.json and tokenizer files copied,
// every weight in its stored dtype, sharded as Hugging Face does (5 GB), with
// W' = W + s * B A for every adapted projection (the product and sum in double,
// then rounded once to the stored dtype). Also merges FLoRA adapters that are
// linear per projection, i.e. repeat-and-add only (ffa): W' = W + s * T A with
// T (out, r) the tiling matrix T[i][j] = (i mod r == j). Refuses adapters with
// backward adapters or carries (their sums cross projections), and out_dir
// equal to model_dir.
void merge_lora_into_model(const std::string& model_dir, const Adapter& lora, const std::string& out_dir);

}  // namespace flora
