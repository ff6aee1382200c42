// Adapters loaded and unloaded while the server runs (vLLM's convention:
// POST /v1/load_lora_adapter {"lora_name", "lora_path"} and POST
// /v1/unload_lora_adapter {"lora_name"}), allowed only from one directory
// (--adapter-dir). No HTTP here: bodies in, the reply's text or an ApiError out.
//
// Loading reads and attaches the adapter on the calling (HTTP) thread, never
// the scheduler's: O(adapter), and the requests in flight keep running. The
// registry then hands the new adapter to requests; unloading removes it from
// the registry only, and the requests that hold it free it when they end.
#pragma once
#include <filesystem>
#include <string>

#include "adapters/config.h"
#include "model/weights.h"
#include "serve/metrics.h"
#include "serve/openai.h"

namespace flora::serve {

// Why a merged LoRA cannot be served; the start-up refusal
// (--lora-variant lora-merged) and the run-time one say the same.
std::string merged_lora_refusal();

// Resolves `path` (relative: to `root`) with every symlink followed, and
// checks that it lies inside `root` (already canonical): throws ApiError 400
// naming the path for a `..` or a symlink that leads out, and for a path that
// does not exist or is not a directory. Returns the canonical directory.
std::filesystem::path resolve_inside(const std::filesystem::path& root, const std::string& path);

class AdapterLoader {
 public:
  // root: --adapter-dir, which must exist (empty: loading at run time is off,
  // and both endpoints answer 404 saying so). execution: how LoRA adapters
  // run unless a load asks otherwise. registry, metrics (optional) and model
  // are not owned and must outlive the loader.
  AdapterLoader(const LlamaModel& model, LoraExecution execution, const std::string& root, ModelRegistry& registry,
                Metrics* metrics = nullptr);
  bool enabled() const { return !root_.empty(); }
  const std::filesystem::path& root() const { return root_; }
  // The bodies of the two endpoints; return the success text (vLLM's).
  // Throws ApiError: 400 for a bad body, a path outside the root, an adapter
  // that does not load or fit, a merged LoRA, a name taken; 404 for unloading
  // an unknown name, or either call with loading off.
  std::string load(const std::string& body);
  std::string unload(const std::string& body);

 private:
  const LlamaModel& model_;
  const LoraExecution execution_;
  std::filesystem::path root_;
  ModelRegistry& registry_;
  Metrics* metrics_;
};

}  // namespace flora::serve
