// safetensors reading/writing and the model-directory TensorStore: round trips,
// HF-style sharding, every header validation error, and robustness against
// truncated and corrupted files (must throw flora::Error, never crash).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "scratch_dir.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json.h"

namespace fs = std::filesystem;
using namespace flora;

namespace {

class Safetensors : public ScratchDirTest {};

std::string read_bytes(const std::string& p) { return read_file(p); }

void write_bytes(const std::string& p, std::string_view bytes) {
  fs::remove(p);  // unlink + create is much cheaper than truncating on some file systems
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << p;
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A raw safetensors file: length prefix, header text as given, `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<char>(i * 7 + 1);
  return u64_le(header.size()) + header + data;
}

// Expects SafetensorsFile(p) to throw flora::Error whose message has p and every `words`.
void expect_open_error(const std::string& p, const std::vector<std::string>& words) {
  try {
    SafetensorsFile f(p);
    ADD_FAILURE() << "no error for " << p;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << "message lacks the path: " << msg;
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  }
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 13);
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------
// Round trips

TEST_F(Safetensors, RoundTripManyDtypesAndShapes) {
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"w.f32", DType::F32, {2, 3}},      {"w.bf16", DType::BF16, {5}},
      {"scalar.i64", DType::I64, {}},     {"empty.f16", DType::F16, {0, 5}},
      {"u8", DType::U8, {3, 1, 2}},       {"b", DType::BOOL, {4}},
      {"f64", DType::F64, {1}},           {"i32", DType::I32, {2, 2}},
      {"i16", DType::I16, {3}},           {"i8", DType::I8, {7}},
      {"empty2.f32", DType::F32, {3, 0}},
  };
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorToWrite> tw;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    buffers.push_back(pattern(static_cast<size_t>(n) * dtype_size(specs[i].dtype), uint8_t(i)));
  }
  for (size_t i = 0; i < specs.size(); ++i)
    tw.push_back({specs[i].name, specs[i].dtype, specs[i].shape, buffers[i].empty() ? nullptr : buffers[i].data()});
  const std::string p = path("rt.safetensors");
  write_safetensors(p, tw, {{"format", "pt"}, {"note", "héllo"}});

  SafetensorsFile f(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("note"), "héllo");
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    // Data was written in the order given, so file order equals spec order
    // (empty tensors share an offset with their successor but sort first).
    const TensorView* t = f.find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->nbytes, buffers[i].size());
    EXPECT_EQ(t->file, p);
    EXPECT_EQ(t->numel() * static_cast<int64_t>(dtype_size(t->dtype)), static_cast<int64_t>(t->nbytes));
    if (t->nbytes > 0) {
      EXPECT_EQ(std::memcmp(t->data, buffers[i].data(), t->nbytes), 0) << specs[i].name;
    }
  }
  EXPECT_EQ(f.find("scalar.i64")->numel(), 1);
  EXPECT_EQ(f.find("empty.f16")->numel(), 0);
  EXPECT_EQ(f.find("absent"), nullptr);
  // tensors() is in order of offsets.
  for (size_t i = 1; i < f.tensors().size(); ++i) EXPECT_LE(f.tensors()[i - 1].data, f.tensors()[i].data);
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(Safetensors, HeaderIsPaddedTo8AndIsPlainJson) {
  const float x[3] = {1, 2, 3};
  const std::string p = path("pad.safetensors");
  write_safetensors(p, {{"x", DType::F32, {3}, x}});
  const std::string bytes = read_bytes(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 12);
  const Json h = Json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["x"]["dtype"], "F32");
  EXPECT_EQ(h["x"]["shape"], Json::array({3}));
  EXPECT_EQ(h["x"]["data_offsets"], Json::array({0, 12}));
  EXPECT_FALSE(h.contains("__metadata__"));  // omitted when empty
}

TEST_F(Safetensors, ReadsHandWrittenFileWithSpacesAndUnalignedOffsets) {
  // Offsets out of name order, 3-byte tensor first so later data is unaligned.
  const std::string header = R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]},)"
                             R"("a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"__metadata__":{"k":"v"}}     )";
  const std::string p = path("hand.safetensors");
  write_bytes(p, raw_file(header, 11));
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[1].name, "b");
  EXPECT_EQ(f.tensors()[1].data - f.tensors()[0].data, 3);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST_F(Safetensors, EmptyFileWithNoTensors) {
  const std::string p = path("none.safetensors");
  write_safetensors(p, {});
  SafetensorsFile f(p);
  EXPECT_TRUE(f.tensors().empty());
}

// ---------------------------------------------------------------------------
// Writer errors

TEST_F(Safetensors, WriteToMissingDirectoryFailsAndLeavesNothing) {
  const fs::path missing = dir_ / "no_such_dir";
  const std::string p = (missing / "x.safetensors").string();
  const float x = 1;
  const std::string msg = error_of([&] { write_safetensors(p, {{"x", DType::F32, {}, &x}}); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(missing));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(Safetensors, WriterRejectsBadInput) {
  const float x[2] = {1, 2};
  const std::string p = path("bad.safetensors");
  EXPECT_NE(error_of([&] {
              write_safetensors(p, {{"a", DType::F32, {2}, x}, {"a", DType::F32, {2}, x}});
            }).find("duplicate tensor name 'a'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(p, {{"__metadata__", DType::F32, {2}, x}});
            }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(p, {{"n", DType::F32, {2}, nullptr}}); }).find("null"), std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(p, {{"neg", DType::F32, {-1}, x}});
            }).find("invalid shape [-1]"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(p, {{"bad\xff", DType::F32, {2}, x}});
            }).find("UTF-8"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(p, {{"q", DType::Q8_0, {32}, x}});
            }).find("tensor 'q': safetensors has no dtype Q8_0"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir_));
}

// ---------------------------------------------------------------------------
// Sharding and TensorStore

namespace {
struct Tensors {
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorToWrite> list;
};
// `sizes` are F32 element counts; tensor i is "t<i>" with shape [n].
Tensors make_tensors(const std::vector<int64_t>& sizes) {
  Tensors t;
  t.buffers.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    t.buffers.push_back(pattern(static_cast<size_t>(sizes[i]) * 4, uint8_t(i * 3)));
    t.list.push_back({"t" + std::to_string(i), DType::F32, {sizes[i]}, t.buffers.back().data()});
  }
  return t;
}
std::vector<std::string> model_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST_F(Safetensors, ShardedWriteUsesHfNamesAndIndex) {
  // Five 100-byte tensors, limit 250: shards {t0,t1} {t2,t3} {t4}.
  Tensors t = make_tensors({25, 25, 25, 25, 25});
  write_model_safetensors(dir_.string(), t.list, 250);
  EXPECT_EQ(model_files(dir_),
            (std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                      "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  const Json index = read_json_file(path("model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 500);
  EXPECT_EQ(index["weight_map"]["t0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t1"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t2"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t4"], "model-00003-of-00003.safetensors");
  // Every shard carries the metadata (transformers writes {"format": "pt"}).
  EXPECT_EQ(SafetensorsFile(path("model-00002-of-00003.safetensors")).metadata().at("format"), "pt");

  TensorStore store(dir_.string());
  EXPECT_EQ(store.total_bytes(), 500u);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"}));
  for (size_t i = 0; i < 5; ++i) {
    const TensorView& v = store.get("t" + std::to_string(i), {25});
    EXPECT_EQ(std::memcmp(v.data, t.buffers[i].data(), 100), 0);
  }
  EXPECT_EQ(store.get("t3").file, path("model-00002-of-00003.safetensors"));
  EXPECT_EQ(store.find("nope"), nullptr);
}

TEST_F(Safetensors, ShardBoundaries) {
  // Exact fit stays in the shard; a tensor over the limit gets its own shard.
  Tensors t = make_tensors({10, 15, 100, 5});  // 40, 60, 400, 20 bytes; limit 100
  write_model_safetensors(dir_.string(), t.list, 100);
  const Json index = read_json_file(path("model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["t0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t1"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t2"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["t3"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(TensorStore(dir_.string()).total_bytes(), 520u);
}

TEST_F(Safetensors, SmallModelIsOneFile) {
  Tensors t = make_tensors({3, 4});
  write_model_safetensors(dir_.string(), t.list, 28);  // total 28 == limit: not exceeded
  EXPECT_EQ(model_files(dir_), (std::vector<std::string>{"model.safetensors"}));
  TensorStore store(dir_.string());
  EXPECT_EQ(store.get("t1", {4}).nbytes, 16u);
  EXPECT_EQ(SafetensorsFile(path("model.safetensors")).metadata().at("format"), "pt");
}

TEST_F(Safetensors, RewriteRemovesStaleFilesOnly) {
  write_bytes(path("config.json"), "{}");
  write_bytes(path("model_lora.safetensors"), "not ours");
  Tensors t = make_tensors({25, 25, 25, 25, 25});
  write_model_safetensors(dir_.string(), t.list, 250);   // 3 shards
  write_model_safetensors(dir_.string(), t.list, 1000);  // one file
  EXPECT_EQ(model_files(dir_),
            (std::vector<std::string>{"config.json", "model.safetensors", "model_lora.safetensors"}));
  write_model_safetensors(dir_.string(), t.list, 100);  // 5 shards
  write_model_safetensors(dir_.string(), t.list, 200);  // 3 shards
  EXPECT_EQ(model_files(dir_),
            (std::vector<std::string>{"config.json", "model-00001-of-00003.safetensors",
                                      "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                                      "model.safetensors.index.json", "model_lora.safetensors"}));
  EXPECT_EQ(TensorStore(dir_.string()).names().size(), 5u);
}

TEST_F(Safetensors, StoreGetErrors) {
  Tensors t = make_tensors({6});
  t.list[0].shape = {2, 3};
  write_model_safetensors(dir_.string(), t.list, 1 << 20);
  TensorStore store(dir_.string());
  std::string msg = error_of([&] { store.get("t0", {3, 2}); });
  EXPECT_EQ(msg, path("model.safetensors") + ": tensor 't0': expected shape [3, 2], found [2, 3]");
  msg = error_of([&] { store.get("model.missing.weight"); });
  EXPECT_NE(msg.find(dir_.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.missing.weight' not found"), std::string::npos) << msg;
}

TEST_F(Safetensors, StoreDirectoryErrors) {
  std::string msg = error_of([&] { TensorStore s(dir_.string()); });
  EXPECT_NE(msg.find("no model.safetensors"), std::string::npos) << msg;
  msg = error_of([&] { TensorStore s(path("missing")); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

namespace {
// A two-shard model in `dir` whose index the test then edits.
void write_two_shards(const fs::path& dir, Tensors& t) {
  t = make_tensors({25, 25});
  write_model_safetensors(dir.string(), t.list, 100);
}
}  // namespace

TEST_F(Safetensors, IndexErrors) {
  Tensors t;
  write_two_shards(dir_, t);
  const std::string ip = path("model.safetensors.index.json");
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  auto expect_store_error = [&](const std::string& index_text, const std::vector<std::string>& words) {
    write_bytes(ip, index_text);
    const std::string msg = error_of([&] { TensorStore s(dir_.string()); });
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  };
  expect_store_error(R"({"metadata": {}})", {ip, "missing key 'weight_map'"});
  expect_store_error(R"({"weight_map": [1]})", {ip, "'weight_map'"});
  expect_store_error(R"({"weight_map": {"t0": 5}})", {ip, "'t0'", "shard file name"});
  expect_store_error("{\"weight_map\": {\"t0\": \"" + s1 + "\", \"t1\": \"gone.safetensors\"}}",
                     {ip, path("gone.safetensors"), "does not exist"});
  expect_store_error(R"({"weight_map": {"t0": "../x.safetensors"}})", {ip, "'../x.safetensors'"});
  // t1 listed in shard 1 but lives in shard 2.
  expect_store_error("{\"weight_map\": {\"t0\": \"" + s1 + "\", \"t1\": \"" + s1 + "\"}}",
                     {path(s1), "'t1'", "absent from the shard"});
  // Same key twice in weight_map.
  expect_store_error("{\"weight_map\": {\"t0\": \"" + s1 + "\", \"t0\": \"" + s2 + "\"}}", {ip, "duplicate key 't0'"});
  expect_store_error("{\"weight_map\": {", {ip, "invalid JSON"});

  // Shard 2 also holds a tensor that the index does not list.
  const float extra = 1;
  write_safetensors(path(s2), {t.list[1], {"extra", DType::F32, {}, &extra}});
  expect_store_error("{\"weight_map\": {\"t0\": \"" + s1 + "\", \"t1\": \"" + s2 + "\"}}",
                     {path(s2), "'extra'", "not listed"});

  // The same tensor in two shards: rewrite shard 2 to hold t0 and t1.
  write_safetensors(path(s2), {t.list[0], t.list[1]});
  expect_store_error("{\"weight_map\": {\"t0\": \"" + s1 + "\", \"t1\": \"" + s2 + "\"}}",
                     {"'t0'", "two shards", path(s1), path(s2)});
}

// ---------------------------------------------------------------------------
// Header validation: each malformed header names the file and the problem.

namespace {
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}
}  // namespace

TEST_F(Safetensors, MalformedFiles) {
  int n = 0;
  // `bytes` is a whole file; every message must name it and contain all `words`.
  auto check = [&](const std::string& bytes, const std::vector<std::string>& words) {
    const std::string p = path("bad" + std::to_string(n++) + ".safetensors");
    write_bytes(p, bytes);
    SCOPED_TRACE(p);
    expect_open_error(p, words);
  };
  // Header text `h` followed by `data` bytes of data.
  auto check_h = [&](const std::string& h, size_t data, const std::vector<std::string>& words) {
    check(raw_file(h, data), words);
  };
  // One F32 tensor "a" with the given JSON texts for shape and data_offsets.
  auto a_f32 = [](const std::string& shape, const std::string& offsets) {
    return "{" + entry("a", "\"F32\"", shape, offsets) + "}";
  };
  const std::string ok_a = entry("a", "\"F32\"", "[2,3]", "[0,24]");
  auto with_a = [&](const std::string& more) { return "{" + ok_a + "," + more + "}"; };

  // Length prefix.
  check("", {"0 bytes", "at least the 8-byte"});
  check(std::string("\x05\x00\x00", 3), {"3 bytes"});
  check(u64_le(100) + "{}", {"header length 100 exceeds"});
  check(u64_le(uint64_t{1} << 62) + "{}", {"absurd"});
  check(u64_le(~uint64_t{0}) + "{}", {"absurd"});
  // JSON.
  check_h("{\"a\":", 0, {"invalid JSON"});
  check_h("", 0, {"invalid JSON"});
  check_h("{\"a\":\"\xff\"}", 0, {"invalid JSON"});  // invalid UTF-8
  check_h("[1,2]", 0, {"expected a JSON object"});
  // Entries.
  check_h(R"({"a":[1]})", 0, {"tensor 'a'", "expected an object"});
  check_h(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, {"tensor 'a'", "missing 'dtype'"});
  check_h(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4, {"tensor 'a'", "missing 'shape'"});
  check_h(R"({"a":{"dtype":"F32","shape":[1]}})", 4, {"tensor 'a'", "missing 'data_offsets'"});
  check_h("{" + entry("a", "7", "[1]", "[0,4]") + "}", 4, {"tensor 'a'", "'dtype': expected a string"});
  check_h("{" + entry("a", "\"Q4_K\"", "[1]", "[0,4]") + "}", 4, {"tensor 'a'", "unknown dtype 'Q4_K'"});
  // ggml's block formats have DType values (ops/quant.h) but no safetensors dtype.
  check_h("{" + entry("a", "\"Q8_0\"", "[32]", "[0,34]") + "}", 34, {"tensor 'a'", "unknown dtype 'Q8_0'"});
  check_h("{" + entry("a", "\"Q4_0\"", "[32]", "[0,18]") + "}", 18, {"tensor 'a'", "unknown dtype 'Q4_0'"});
  check_h("{" + entry("a", "\"Q6_K\"", "[256]", "[0,210]") + "}", 210, {"tensor 'a'", "unknown dtype 'Q6_K'"});
  // Shapes.
  check_h(a_f32("\"2x3\"", "[0,24]"), 24, {"tensor 'a'", "'shape': expected an array"});
  check_h(a_f32("[2.5]", "[0,4]"), 4, {"tensor 'a'", "non-negative integers", "2.5"});
  check_h(a_f32("[1e30]", "[0,4]"), 4, {"tensor 'a'", "non-negative integers"});
  check_h(a_f32("[2,-3]", "[0,4]"), 4, {"tensor 'a'", "negative dimension -3"});
  check_h(a_f32("[9223372036854775808]", "[0,4]"), 4, {"tensor 'a'", "too large"});
  check_h(a_f32("[18446744073709551615]", "[0,4]"), 4, {"tensor 'a'", "too large"});
  check_h(a_f32("[4294967296,4294967296]", "[0,4]"), 4, {"tensor 'a'", "overflows"});
  // Offsets.
  check_h(a_f32("[1]", "[0]"), 4, {"tensor 'a'", "'data_offsets'"});
  check_h(a_f32("[1]", "[-4,0]"), 4, {"tensor 'a'", "'data_offsets'"});
  check_h(a_f32("[1]", "[0,4.0]"), 4, {"tensor 'a'", "'data_offsets'"});
  check_h(a_f32("[1]", "{\"b\":0}"), 4, {"tensor 'a'", "'data_offsets'"});
  check_h(a_f32("[1]", "[8,4]"), 8, {"tensor 'a'", "reversed"});
  check_h(a_f32("[2,3]", "[0,24]"), 20, {"tensor 'a'", "past the end", "20 bytes"});
  check_h(a_f32("[2,3]", "[0,20]"), 20, {"tensor 'a'", "expected 24 bytes", "[2, 3]"});
  // Tiling of the data section.
  check_h(with_a(entry("b", "\"F32\"", "[2]", "[20,28]")), 28, {"overlap", "'a'", "'b'"});
  check_h(with_a(entry("b", "\"F32\"", "[2]", "[28,36]")), 36, {"gap", "'a'", "'b'"});
  check_h("{" + entry("b", "\"F32\"", "[2]", "[4,12]") + "}", 12, {"gap", "'b'", "start"});
  check_h("{" + ok_a + "}", 25, {"gap", "after the last tensor 'a'"});
  check_h("{}", 3, {"gap", "no tensors"});
  // An empty tensor inside another's region counts as overlap.
  check_h(with_a(entry("e", "\"F32\"", "[0]", "[8,8]")), 24, {"overlap", "'e'"});
  // Duplicates (nlohmann alone would keep the last silently).
  check_h(with_a(entry("a", "\"F32\"", "[2,3]", "[24,48]")), 48, {"duplicate tensor name 'a'"});
  check_h("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," + ok_a + "}", 24, {"duplicate key 'k'"});
  // Metadata.
  check_h("{\"__metadata__\":[1]," + ok_a + "}", 24, {"__metadata__", "expected an object"});
  check_h("{\"__metadata__\":{\"k\":1}," + ok_a + "}", 24, {"__metadata__", "'k'", "expected a string"});
  // Control characters in names are escaped in messages.
  check_h("{" + entry("a\\u001b[31m", "\"F32\"", "[1]", "[0,8]") + "}", 8, {"tensor 'a\\x1b[31m'", "expected 4 bytes"});
}

// ---------------------------------------------------------------------------
// Robustness: truncation and corruption never crash, only throw flora::Error.

namespace {
std::string small_valid_file(const std::string& p) {
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t b[3] = {0x3f80, 0x4000, 0x4040};
  const int64_t c = 42;
  write_safetensors(
      p, {{"layers.0.a", DType::F32, {2, 3}, a}, {"layers.0.b", DType::BF16, {3}, b}, {"c", DType::I64, {}, &c}},
      {{"format", "pt"}});
  return read_bytes(p);
}

// Opens `p`; returns true on success (after touching every tensor byte and
// checking it lies inside the file), false on flora::Error. Anything else fails.
bool open_and_touch(const std::string& p, size_t file_size) {
  try {
    SafetensorsFile f(p);
    for (const TensorView& t : f.tensors()) {
      unsigned sum = 0;
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      (void)sum;
      EXPECT_LE(t.nbytes, file_size);
    }
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return false;
  }
}
}  // namespace

TEST_F(Safetensors, EveryTruncationThrows) {
  const std::string full = small_valid_file(path("valid.safetensors"));
  ASSERT_TRUE(open_and_touch(path("valid.safetensors"), full.size()));
  const std::string p = path("cut.safetensors");
  for (size_t len = 0; len < full.size(); ++len) {
    write_bytes(p, std::string_view(full).substr(0, len));
    try {
      SafetensorsFile f(p);
      ADD_FAILURE() << "prefix of " << len << " bytes opened without error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
  // One extra byte is a gap at the end.
  write_bytes(p, full + "x");
  expect_open_error(p, {"gap"});
}

TEST_F(Safetensors, RandomByteFlipsThrowOrSucceed) {
  const std::string full = small_valid_file(path("valid.safetensors"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(full[i]);
  const std::string p = path("flip.safetensors");
  std::mt19937 rng(12345);
  // JSON-significant bytes make mutations reach deeper validation than random noise.
  const char kInteresting[] = "{}[]\":,-0123456789 eE.\\\xff\x00";
  const std::string interesting(kInteresting, sizeof(kInteresting) - 1);
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header (where the parsing is), sometimes the length prefix or data.
      const size_t pos = rng() % 10 == 0 ? rng() % bytes.size() : 8 + rng() % header_len;
      bytes[pos] = rng() % 2 ? static_cast<char>(rng()) : interesting[rng() % interesting.size()];
    }
    write_bytes(p, bytes);
    (open_and_touch(p, bytes.size()) ? opened : rejected)++;
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(opened, 0);  // e.g. flips inside the data or in padding spaces
}
