// Test support shared by the gtest files.
//
// A fresh scratch directory per test, under the build directory:
// FLORA_BINARY_DIR/scratch/<suite>/<test>, emptied before the test runs.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "util/error.h"

#ifndef FLORA_BINARY_DIR
#define FLORA_BINARY_DIR "/tmp"
#endif

class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(FLORA_BINARY_DIR) / "scratch" / info->test_suite_name() / info->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

// The message of the flora::Error that f() throws; a test failure if it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const flora::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a flora::Error";
  return "";
}
