#include "serve/adapter_loader.h"

#include <system_error>

#include "adapters/exec.h"
#include "util/error.h"

namespace flora::serve {

namespace fs = std::filesystem;

namespace {

ApiError bad(const std::string& param, const std::string& message) {
  return ApiError(400, message, "invalid_request_error", param);
}

// Whether `path` is `root` or below it, both canonical (component by
// component: "/a/bc" is not inside "/a/b").
bool inside(const fs::path& root, const fs::path& path) {
  auto r = root.begin(), p = path.begin();
  for (; r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator of root
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

Json parse_body(const std::string& text) {
  Json body = Json::parse(text, nullptr, false);
  if (body.is_discarded()) throw bad("", "the request body is not valid JSON");
  if (!body.is_object()) throw bad("", "the request body is not a JSON object");
  return body;
}

std::string lora_name(const Json& body) {
  auto it = body.find("lora_name");
  if (it == body.end() || !it->is_string() || it->get<std::string>().empty())
    throw bad("lora_name", "'lora_name': required, a non-empty string");
  const std::string name = it->get<std::string>();
  if (name.size() > 256)
    throw bad("lora_name", fmt::format("'lora_name': {} bytes: expected at most 256", name.size()));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) throw bad("lora_name", "'lora_name': control characters are not allowed");
  return name;
}

}  // namespace

std::string merged_lora_refusal() {
  return "a merged LoRA changes the base weights that every request shares, so it cannot serve beside the base and "
         "other adapters; merge it into a model directory (flora merge) and serve that, or use lora or pf-lora";
}

fs::path resolve_inside(const fs::path& root, const std::string& path) {
  if (path.empty()) throw bad("lora_path", "'lora_path': required, a directory inside --adapter-dir");
  // A NUL would cut the path that the system sees short of the one checked here.
  for (unsigned char c : path)
    if (c < 0x20 || c == 0x7f) throw bad("lora_path", "'lora_path': control characters are not allowed");
  const fs::path given(path);
  const fs::path joined = given.is_absolute() ? given : root / given;
  std::error_code ec;
  // weakly_canonical follows every symlink of the part that exists and
  // removes `..` and `.`: what remains is where a read would really go.
  const fs::path real = fs::weakly_canonical(joined, ec);
  if (ec) throw bad("lora_path", fmt::format("'lora_path': {}: cannot be resolved: {}", path, ec.message()));
  if (!inside(root, real))
    throw bad("lora_path", fmt::format("'lora_path': {} resolves to {}, outside the adapter directory {} "
                                       "(--adapter-dir): only adapters inside it can be loaded",
                                       path, real.string(), root.string()));
  if (!fs::exists(real, ec)) throw bad("lora_path", fmt::format("'lora_path': {}: no such directory", path));
  if (!fs::is_directory(real, ec)) throw bad("lora_path", fmt::format("'lora_path': {}: not a directory", path));
  // The files read are checked too: a symlink inside that leads out would
  // read outside the directory as surely as the directory's own path.
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    const fs::path f = fs::weakly_canonical(real / file, ec);
    if (!ec && fs::exists(real / file) && !inside(root, f))
      throw bad("lora_path", fmt::format("'lora_path': {}/{} resolves to {}, outside the adapter directory {}", path,
                                         file, f.string(), root.string()));
  }
  return real;
}

AdapterLoader::AdapterLoader(const LlamaModel& model, LoraExecution execution, const std::string& root,
                             ModelRegistry& registry, Metrics* metrics)
    : model_(model), execution_(execution), registry_(registry), metrics_(metrics) {
  if (root.empty()) return;
  std::error_code ec;
  root_ = fs::canonical(root, ec);
  if (ec || !fs::is_directory(root_)) fail("--adapter-dir {}: not a directory", root);
}

std::string AdapterLoader::load(const std::string& text) {
  if (!enabled())
    throw ApiError(404, "loading adapters at run time is off: start flora serve with --adapter-dir DIR",
                   "invalid_request_error", "", "not_enabled");
  const Json body = parse_body(text);
  const std::string name = lora_name(body);
  auto path = body.find("lora_path");
  if (path == body.end() || !path->is_string())
    throw bad("lora_path", "'lora_path': required, a string naming a directory inside --adapter-dir");
  // How a LoRA runs (flora's extension; unset: the server's --lora-variant).
  LoraExecution execution = execution_;
  if (auto v = body.find("lora_variant"); v != body.end() && !v->is_null()) {
    const auto e = v->is_string() ? lora_execution_of(v->get<std::string>()) : std::nullopt;
    if (!e) throw bad("lora_variant", fmt::format("'lora_variant': expected lora or pf-lora, found {}", v->dump()));
    if (*e == LoraExecution::Merged) throw bad("lora_variant", "'lora_variant' lora-merged: " + merged_lora_refusal());
    execution = *e;
  }
  // Checked before the O(adapter) read; add_adapter checks again, for a load
  // of the same name that races this one.
  if (registry_.find(name))
    throw bad("lora_name",
              fmt::format("'lora_name': '{}' is already served: unload it first or pick another name", name));
  const fs::path dir = resolve_inside(root_, path->get<std::string>());

  std::shared_ptr<AttachedAdapter> attached;
  try {
    attached = std::make_shared<AttachedAdapter>(model_, Adapter::load(dir.string(), model_.config()), execution);
  } catch (const std::exception& e) {
    throw bad("lora_path",
              fmt::format("'lora_path': {}: the adapter does not load: {}", path->get<std::string>(), e.what()));
  }
  if (!attached->exec()) throw bad("lora_path", merged_lora_refusal());
  // The registry's pointer owns the whole AttachedAdapter, which exec() points into.
  std::shared_ptr<const AdapterExec> exec(attached, attached->exec());
  try {
    registry_.add_adapter(name, std::move(exec), attached->variant(), "lora_name", path->get<std::string>());
  } catch (const Error& e) {
    throw bad("lora_name", e.what());
  }
  if (metrics_) metrics_->add_model(name);
  return fmt::format("Success: LoRA adapter '{}' added successfully.", name);
}

std::string AdapterLoader::unload(const std::string& text) {
  if (!enabled())
    throw ApiError(404, "unloading adapters at run time is off: start flora serve with --adapter-dir DIR",
                   "invalid_request_error", "", "not_enabled");
  const Json body = parse_body(text);
  const std::string name = lora_name(body);
  if (name == registry_.base().id)
    throw bad("lora_name", fmt::format("'lora_name': '{}' is the base model, which cannot be unloaded", name));
  if (!registry_.remove_adapter(name))
    throw ApiError(404, fmt::format("'lora_name': no adapter named '{}' is served", name), "invalid_request_error",
                   "lora_name", "model_not_found");
  return fmt::format("Success: LoRA adapter '{}' removed successfully.", name);
}

}  // namespace flora::serve
