// The crash-safety primitives of util/file.h: atomic writes, directory
// replacement (the new version in whole, the old one gone, nothing left
// beside), and the checked appends of the training log, on a full device.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "util/error.h"
#include "util/file.h"

using namespace flora;
namespace fs = std::filesystem;

namespace {

class FileTest : public ScratchDirTest {};

// The names in a directory, sorted.
std::string listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += n + " ";
  return out;
}

TEST_F(FileTest, WriteFileAtomicReplacesAndLeavesNoTemporary) {
  write_file_atomic(path("a.txt"), "one");
  write_file_atomic(path("a.txt"), "two");
  EXPECT_EQ(read_file(path("a.txt")), "two");
  EXPECT_EQ(listing(dir_), "a.txt ");
}

TEST_F(FileTest, WriteFileAtomicFailureLeavesTheOldFile) {
  write_file_atomic(path("a.txt"), "one");
  const std::string msg = error_of([&] {
    write_file_atomic(path("a.txt"), [](std::FILE*) { fail("body failed"); });
  });
  EXPECT_EQ(msg, "body failed");
  EXPECT_EQ(read_file(path("a.txt")), "one");
  EXPECT_EQ(listing(dir_), "a.txt ");
}

TEST_F(FileTest, ReplaceDirectoryIntoNothing) {
  make_directories(path("d.tmp"));
  write_file_atomic(path("d.tmp/x"), "new");
  replace_directory(path("d.tmp"), path("d"));
  EXPECT_EQ(read_file(path("d/x")), "new");
  EXPECT_EQ(listing(dir_), "d ");
}

TEST_F(FileTest, ReplaceDirectoryOverAnOldVersion) {
  make_directories(path("d"));
  write_file_atomic(path("d/x"), "old");
  write_file_atomic(path("d/only-old"), "old");
  make_directories(path("d.tmp"));
  write_file_atomic(path("d.tmp/x"), "new");
  replace_directory(path("d.tmp"), path("d"));
  EXPECT_EQ(read_file(path("d/x")), "new");
  EXPECT_EQ(listing(path("d")), "x ");  // the new version, not a merge of the two
  EXPECT_EQ(listing(dir_), "d ");       // neither d.tmp nor d.old is left
}

TEST_F(FileTest, ReplaceDirectoryFailureNamesIt) {
  const std::string msg = error_of([&] { replace_directory(path("missing.tmp"), path("d")); });
  EXPECT_NE(msg.find(path("d")), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing.tmp"), std::string::npos) << msg;
}

TEST_F(FileTest, SyncDirectory) {
  sync_directory(dir_.string());
  const std::string msg = error_of([&] { sync_directory(path("missing")); });
  EXPECT_NE(msg.find(path("missing")), std::string::npos) << msg;
}

TEST_F(FileTest, AppendFileAppendsAndSyncs) {
  write_file_atomic(path("log"), "a\n");
  {
    AppendFile log(path("log"));
    log.write("b\n");
    log.write("");
    log.sync();
  }
  AppendFile(path("log")).write("c\n");
  EXPECT_EQ(read_file(path("log")), "a\nb\nc\n");
}

// A full disk: /dev/full fails every write with ENOSPC. The write that does
// not fit ends the caller, naming the file and the reason.
TEST_F(FileTest, AppendFileOnAFullDeviceFailsNamingTheFile) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  AppendFile log("/dev/full");
  const std::string msg = error_of([&] { log.write("{\"step\": 1}\n"); });
  EXPECT_NE(msg.find("/dev/full: write failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No space left on device"), std::string::npos) << msg;
}

TEST_F(FileTest, AppendFileOpenFailureNamesTheFile) {
  const std::string msg = error_of([&] { AppendFile log(path("no/such/dir/log")); });
  EXPECT_NE(msg.find(path("no/such/dir/log")), std::string::npos) << msg;
}

}  // namespace
