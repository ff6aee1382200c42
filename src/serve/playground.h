// The playground: one self-contained HTML page (src/serve/playground.html)
// that `flora serve` answers at GET /, to compare the base model and adapters
// side by side through the server's own API. The build embeds the file
// (tools/embed_text.cmake), so the binary serves it from anywhere.
#pragma once
#include <string_view>

namespace flora::serve {

std::string_view playground_html();

}  // namespace flora::serve
