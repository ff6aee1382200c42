# Writes a C++ source whose one function returns a text file's bytes, so that
# a file kept as itself in the tree (an HTML page) ships inside the binary.
#   cmake -DIN=FILE -DOUT=FILE.cpp -DHEADER=dir/x.h -DNAMESPACE=ns -DFUNCTION=name [-DROOT=DIR] -P embed_text.cmake
# ROOT: the source tree, so that the generated comment names FILE relative to it.
# The text goes in as a raw string literal; its delimiter is checked against the
# text, so no content can end the literal early.
foreach(var IN ITEMS IN OUT HEADER NAMESPACE FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_text.cmake: -D${var}=... is missing")
  endif()
endforeach()
set(shown "${IN}")
if(DEFINED ROOT)
  file(RELATIVE_PATH shown "${ROOT}" "${IN}")
endif()
file(READ "${IN}" text)
set(delim "flora_embed")
string(FIND "${text}" ")${delim}\"" at)
if(NOT at EQUAL -1)
  message(FATAL_ERROR "${IN}: holds ')${delim}\"', the end of the raw string it is embedded as: rename it there")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${shown} by tools/embed_text.cmake at build time: edit that file, not this one.\n"
  "#include \"${HEADER}\"\n\n"
  "namespace ${NAMESPACE} {\n\n"
  "std::string_view ${FUNCTION}() {\n"
  "  static constexpr char kText[] = R\"${delim}(${text})${delim}\";\n"
  "  return {kText, sizeof(kText) - 1};\n"
  "}\n\n"
  "}  // namespace ${NAMESPACE}\n")
file(RENAME "${OUT}.tmp" "${OUT}")
