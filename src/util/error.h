// Errors at flora's edges: one exception type whose message is complete and
// user-facing ("FILE: PLACE: expected X, found Y"). The CLI prints what() and
// exits 1; nothing below the CLI prints errors itself.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace flora {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// fail("{}: tensor '{}': expected shape {}, found {}", path, name, a, b);
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Checks an invariant of the program itself (not of user input).
#define FLORA_ASSERT(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) ::flora::fail("internal error at {}:{}: {}", __FILE__, __LINE__, #cond); \
  } while (0)

}  // namespace flora
