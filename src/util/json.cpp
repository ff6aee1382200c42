#include "util/json.h"

#include "util/file.h"

namespace flora {

Json parse_json(const std::string& text, const std::string& origin) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON at byte {}: {}", origin, e.byte, e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    fail("{}: invalid JSON: {}", origin, e.what());
  }
}

Json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

std::string json_preview(const Json& value) {
  std::string s = value.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace flora
