// JSON through nlohmann-json, with lookups that fail with the file and key
// named instead of nlohmann's bare type_error.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "util/error.h"

namespace flora {

using Json = nlohmann::json;

// Parses `text`; on error names `origin` (a path) and the byte offset.
Json parse_json(const std::string& text, const std::string& origin);
Json read_json_file(const std::string& path);

// A value as it appears in an error message: its JSON text, cut to 60 characters.
std::string json_preview(const Json& value);

// The value at `key` of object `obj`, converted to T; `origin` names the file.
template <typename T>
T json_get(const Json& obj, const char* key, const std::string& origin) {
  auto it = obj.find(key);
  if (it == obj.end()) fail("{}: missing key '{}'", origin, key);
  // Integers must be JSON integers within T's range: nlohmann would convert
  // 1e300 or 2.5 to an integer type without complaint (or with undefined behaviour).
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const bool fits =
        (it->is_number_unsigned() &&
         it->template get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())) ||
        (it->is_number_integer() && !it->is_number_unsigned() &&
         it->template get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
         (std::is_unsigned_v<T> ? it->template get<int64_t>() >= 0
                                : it->template get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max())));
    if (!fits) fail("{}: key '{}': expected an integer, found {}", origin, key, it->dump());
  }
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
