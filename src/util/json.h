// JSON through nlohmann-json, with lookups that fail with the file and key
// named instead of nlohmann's bare type_error.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "util/error.h"

namespace flora {

using Json = nlohmann::json;

// Parses `text`; on error names `origin` (a path) and the byte offset.
Json parse_json(const std::string& text, const std::string& origin);
Json read_json_file(const std::string& path);

// The value at `key` of object `obj`, converted to T; `origin` names the file.
template <typename T>
T json_get(const Json& obj, const char* key, const std::string& origin) {
  auto it = obj.find(key);
  if (it == obj.end()) fail("{}: missing key '{}'", origin, key);
  try {
    return it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: key '{}': unexpected value {}", origin, key, it->dump());
  }
}

template <typename T>
T json_get_or(const Json& obj, const char* key, T fallback, const std::string& origin) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  return json_get<T>(obj, key, origin);
}

}  // namespace flora
