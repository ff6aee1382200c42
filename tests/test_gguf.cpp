// The GGUF container (io/gguf.h): what write_gguf writes reads back the same,
// files built byte by byte here (independently of the writer, from the
// format's description) read as the format says, and every kind of lying or
// truncated header is refused with one message naming the file and the place.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "io/gguf.h"
#include "scratch_dir.h"
#include "util/error.h"

namespace flora {
namespace {

class Gguf : public ScratchDirTest {};

// A GGUF file byte by byte.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  Bytes& put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
  Bytes& raw(size_t n, uint8_t value) {
    b.insert(b.end(), n, value);
    return *this;
  }
};

// GGUF v3 with `kv` metadata entries and `tensors` tensor infos to follow (the caller writes them).
Bytes header(uint64_t tensors, uint64_t kv) {
  Bytes h;
  h.b = {'G', 'G', 'U', 'F'};
  h.put<uint32_t>(3).put<uint64_t>(tensors).put<uint64_t>(kv);
  return h;
}
void tensor_info(Bytes& h, const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
  h.str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
  for (uint64_t d : ne) h.put<uint64_t>(d);
  h.put<uint32_t>(type).put<uint64_t>(offset);
}

std::string write_bytes(const std::filesystem::path& dir, const std::string& name, const Bytes& bytes) {
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.b.data()), bytes.b.size());
  return path;
}

// A valid file: two keys, an F32 (3, 2) tensor and a Q8_0 row of 32, at alignment 32.
Bytes small_file() {
  Bytes h = header(2, 2);
  h.str("general.architecture").put<uint32_t>(8).str("llama");
  h.str("llama.block_count").put<uint32_t>(4).put<uint32_t>(2);
  tensor_info(h, "a", {2, 3}, 0, 0);
  tensor_info(h, "q", {32}, 8, 32);
  h.pad_to(32);
  for (int i = 0; i < 6; ++i) h.put<float>(static_cast<float>(i) + 0.5f);
  h.raw(8, 0);   // to the next multiple of 32
  h.raw(34, 7);  // one Q8_0 block
  return h;
}

TEST_F(Gguf, HandBuiltFileReadsAsTheFormatSays) {
  const GgufFile f(write_bytes(dir_, "small.gguf", small_file()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 2u);
  EXPECT_FALSE(f.get_uint("missing").has_value());
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensor* a = f.find_tensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->ne, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes, 24u);
  float second;
  std::memcpy(&second, a->data + 4, 4);
  EXPECT_EQ(second, 1.5f);
  const GgufTensor* q = f.find_tensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->nbytes, 34u);
  EXPECT_EQ(q->data - a->data, 32);
  EXPECT_EQ(q->data[33], 7);
  // Typed reads fail naming the key and the type found.
  std::string message;
  try {
    f.get_uint("general.architecture");
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("small.gguf: metadata key 'general.architecture': expected an unsigned integer, found string"),
            std::string::npos)
      << message;
}

TEST_F(Gguf, WrittenFilesReadBackValueForValue) {
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"u32", GgufValue::u32(7)},
      {"u64", GgufValue::u64(1ull << 40)},
      {"i32", GgufValue::i32(-5)},
      {"f32", GgufValue::f32(0.25f)},
      {"flag", GgufValue::boolean(true)},
      {"name", GgufValue::string("h\xC3\xA9llo")},
      {"tokens", GgufValue::string_array({"a", "", "<|begin_of_text|>"})},
      {"types", GgufValue::i32_array({1, 3, -1})},
      {"scores", GgufValue::f32_array({0.5f, -2.0f})},
  };
  // Sizes of each type's blocks: a Q4_K and a Q6_K super-block of 256, two Q4_0 blocks.
  std::vector<uint8_t> f32(4 * 6), bf16(2 * 4), q4k(144 * 2), q6k(210), q40(18 * 2);
  for (size_t i = 0; i < q4k.size(); ++i) q4k[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<uint8_t>(i + 1);
  const std::vector<GgufTensorToWrite> tensors = {{"f32", 0, {3, 2}, f32.data()},
                                                  {"bf16", 30, {4}, bf16.data()},
                                                  {"q4k", 12, {256, 2}, q4k.data()},
                                                  {"q6k", 14, {256}, q6k.data()},
                                                  {"q40", 2, {64}, q40.data()}};
  for (uint32_t alignment : {32u, 64u}) {
    const std::string path = dir_.string() + "/w" + std::to_string(alignment) + ".gguf";
    write_gguf(path, kv, tensors, alignment);
    const GgufFile f(path);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.metadata().size(), kv.size() + (alignment == 32 ? 0 : 1));
    for (const auto& [key, want] : kv) {
      const GgufValue* got = f.find(key);
      ASSERT_NE(got, nullptr) << key;
      EXPECT_EQ(got->type_name(), want.type_name()) << key;
      EXPECT_EQ(got->ints, want.ints) << key;
      EXPECT_EQ(got->uints, want.uints) << key;
      EXPECT_EQ(got->floats, want.floats) << key;
      EXPECT_EQ(got->strings, want.strings) << key;
    }
    EXPECT_EQ(*f.get_strings("tokens"), kv[6].second.strings);
    EXPECT_EQ(f.get_float("f32"), 0.25);
    EXPECT_EQ(f.get_bool("flag"), true);
    ASSERT_EQ(f.tensors().size(), tensors.size());
    const uint8_t* first = f.tensors()[0].data;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensor& t = f.tensors()[i];
      EXPECT_EQ(t.name, tensors[i].name);
      EXPECT_EQ(t.type, tensors[i].type);
      EXPECT_EQ(t.ne, tensors[i].ne);
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
      EXPECT_EQ((t.data - first) % alignment, 0) << t.name;
      EXPECT_EQ(std::memcmp(t.data, tensors[i].data, t.nbytes), 0) << t.name;
    }
    EXPECT_EQ(f.find_tensor("q4k")->nbytes, 288u);
  }
}

// The fuzz seeds, written by tests/fuzz/make_corpus.py (a third writer, in Python), open.
TEST_F(Gguf, FuzzSeedsWrittenInPythonOpen) {
  const std::string dir = FLORA_SOURCE_DIR "/tests/fuzz/corpus/fuzz_gguf";
  const GgufFile f(dir + "/llama_small");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 500000.0);
  EXPECT_EQ(*f.get_strings("tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "b", "<s>"}));
  EXPECT_EQ(f.find("tokenizer.ggml.token_type")->ints, (std::vector<int64_t>{1, 1, 3}));
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.find_tensor("k4")->nbytes, 144u);
  EXPECT_EQ(f.find_tensor("b")->ne, (std::vector<int64_t>{4}));
  EXPECT_EQ(GgufFile(dir + "/aligned_64").alignment(), 64u);
  EXPECT_EQ(GgufFile(dir + "/header_only").get_uint("k"), 7u);
}

TEST_F(Gguf, EveryTruncationIsRefusedNamingTheFile) {
  const Bytes whole = small_file();
  for (size_t n = 0; n < whole.b.size(); ++n) {
    Bytes cut;
    cut.b.assign(whole.b.begin(), whole.b.begin() + static_cast<int64_t>(n));
    const std::string message = error_of([&] { GgufFile f(write_bytes(dir_, "cut.gguf", cut)); });
    EXPECT_NE(message.find("cut.gguf: "), std::string::npos) << n << " bytes: '" << message << "'";
  }
}

TEST_F(Gguf, LyingHeadersAreRefusedWithThePlace) {
  struct Case {
    std::string name;
    std::function<Bytes()> make;
    std::string says;
  };
  auto one_tensor = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data_bytes) {
    Bytes h = header(1, 0);
    tensor_info(h, "w", std::move(ne), type, offset);
    h.pad_to(32).raw(data_bytes, 0);
    return h;
  };
  const std::vector<Case> cases = {
      {"magic",
       [] {
         Bytes h = header(0, 0);
         h.b[0] = 'X';
         return h;
       },
       "not a GGUF file: the first 4 bytes are 58475546"},
      {"v1",
       [] {
         Bytes h = header(0, 0);
         h.b[4] = 1;
         return h;
       },
       "GGUF version 1 (32-bit counts) is not supported"},
      {"big-endian",
       [] {
         Bytes h = header(0, 0);
         h.b[4] = 0;
         h.b[7] = 3;
         return h;
       },
       "a big-endian GGUF file"},
      {"v9",
       [] {
         Bytes h = header(0, 0);
         h.b[4] = 9;
         return h;
       },
       "GGUF version 9: expected 2 or 3"},
      {"many-tensors", [] { return header(1ull << 60, 0); }, "1152921504606846976 tensors, but only 0 bytes are left"},
      {"many-keys", [] { return header(0, 1ull << 40); }, "1099511627776 metadata entries, but only 0 bytes"},
      {"long-key",
       [] {
         Bytes h = header(0, 1);
         h.put<uint64_t>(1ull << 50).raw(13, 0);
         return h;
       },
       "byte 24: metadata key 0: a string of 1125899906842624 bytes, but only 13 bytes are left"},
      {"empty-key",
       [] {
         Bytes h = header(0, 1);
         h.str("").put<uint32_t>(0).put<uint8_t>(1);
         return h;
       },
       "metadata key 0 is empty"},
      {"value-type",
       [] {
         Bytes h = header(0, 1);
         h.str("k").put<uint32_t>(13).put<uint8_t>(0);
         return h;
       },
       "'k': value type 13: expected 0 to 12"},
      {"array-of-arrays",
       [] {
         Bytes h = header(0, 1);
         h.str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(1);
         return h;
       },
       "'k': array element type 9"},
      {"long-array",
       [] {
         Bytes h = header(0, 1);
         h.str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1000).raw(8, 0);
         return h;
       },
       "'k': an array of 1000 u32 elements, but only 8 bytes are left"},
      {"bool",
       [] {
         Bytes h = header(0, 1);
         h.str("k").put<uint32_t>(7).put<uint8_t>(2);
         return h;
       },
       "a bool of value 2: expected 0 or 1"},
      {"dup-key",
       [] {
         Bytes h = header(0, 2);
         h.str("k").put<uint32_t>(0).put<uint8_t>(1).str("k").put<uint32_t>(0).put<uint8_t>(1);
         return h;
       },
       "metadata key 'k' appears twice"},
      {"alignment-type",
       [] {
         Bytes h = header(0, 1);
         h.str("general.alignment").put<uint32_t>(10).put<uint64_t>(32);
         return h;
       },
       "'general.alignment': expected a u32, found u64"},
      {"alignment-pow2",
       [] {
         Bytes h = header(0, 1);
         h.str("general.alignment").put<uint32_t>(4).put<uint32_t>(24);
         return h;
       },
       "'general.alignment': 24: expected a power of two"},
      {"dims-0", [&] { return one_tensor({}, 0, 0, 0); }, "tensor 'w': 0 dimensions: expected 1 to 4"},
      {"dims-5",
       [&] {
         return one_tensor({1, 1, 1, 1, 1}, 0, 0, 4);
       },
       "tensor 'w': 5 dimensions: expected 1 to 4"},
      {"dim-0",
       [&] {
         return one_tensor({4, 0}, 0, 0, 0);
       },
       "tensor 'w': ne[1] is 0: expected at least 1"},
      {"type", [&] { return one_tensor({4}, 23, 0, 16); }, "tensor 'w': type 23: not a ggml type that flora reads"},
      {"block", [&] { return one_tensor({48}, 12, 0, 1024); },
       "tensor 'w': a row of 48 elements: Q4_K stores blocks of 256"},
      {"overflow",
       [&] {
         return one_tensor({1ull << 40, 1ull << 40}, 0, 0, 0);
       },
       "tensor 'w': the size of shape"},
      {"misaligned", [&] { return one_tensor({4}, 0, 8, 64); },
       "tensor 'w': offset 8 is not a multiple of the alignment 32"},
      {"past-end", [&] { return one_tensor({16}, 0, 0, 60); },
       "tensor 'w': 64 bytes at offset 0 of the data section, which holds 60 bytes"},
      {"dup-tensor",
       [] {
         Bytes h = header(2, 0);
         tensor_info(h, "w", {4}, 0, 0);
         tensor_info(h, "w", {4}, 0, 32);
         h.pad_to(32).raw(64, 0);
         return h;
       },
       "tensor 'w' appears twice"},
      {"overlap",
       [] {
         Bytes h = header(2, 0);
         tensor_info(h, "a", {16}, 0, 0);
         tensor_info(h, "b", {4}, 0, 32);
         h.pad_to(32).raw(64, 0);
         return h;
       },
       "tensor 'b' (offset 32) overlaps tensor 'a' (64 bytes at offset 0)"},
  };
  for (const Case& c : cases) {
    const std::string path = write_bytes(dir_, c.name + ".gguf", c.make());
    const std::string message = error_of([&] { GgufFile f(path); });
    EXPECT_NE(message.find(path + ": "), std::string::npos) << c.name << ": '" << message << "'";
    EXPECT_NE(message.find(c.says), std::string::npos) << c.name << ": '" << message << "'";
  }
}

TEST_F(Gguf, WriterRefusesWhatItCannotWriteTruthfully) {
  const std::string path = dir_.string() + "/bad.gguf";
  std::vector<uint8_t> data(64);
  EXPECT_NE(error_of([&] {
              write_gguf(path, {}, {{"w", 0, {4}, data.data()}, {"w", 0, {4}, data.data()}});
            }).find("tensor 'w' given twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_gguf(path, {}, {{"w", 8, {16}, data.data()}});
            }).find("ne[0] must be a multiple of 32"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_gguf(path, {{"k", GgufValue::u32(1)}, {"k", GgufValue::u32(2)}}, {});
            }).find("metadata key 'k' given twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_gguf(path, {}, {}, 24); }).find("alignment 24: expected a power of two"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing written by a refused call
}

}  // namespace
}  // namespace flora
