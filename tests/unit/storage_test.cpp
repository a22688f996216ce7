#include <gtest/gtest.h>

#include <filesystem>

#include "storage/files.h"

namespace fs = std::filesystem;
namespace st = petcam::storage;

namespace {
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("petcam-storage-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::size_t entries() const { return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), {})); }
};
std::vector<std::uint8_t> bytes(const std::string& s) {
  return {s.begin(), s.end()};
}
}  // namespace

TEST(Files, AtomicWriteReplacesAndLeavesNoTemporary) {
  TempDir d;
  const auto f = (d.path / "a.jpg").string();
  st::write_file_atomic(f, bytes("first"));
  st::write_file_atomic(f, bytes("second"));
  EXPECT_EQ(st::read_file(f, 100), bytes("second"));
  EXPECT_EQ(d.entries(), 1u);
}

TEST(Files, FailedWriteLeavesNothing) {
  TempDir d;
  EXPECT_THROW(st::write_file_atomic((d.path / "missing" / "a.jpg").string(), bytes("x")), st::FileError);
  fs::create_directories(d.path / "dir");
  // Renaming onto a directory fails after the data was written: the temporary must go.
  EXPECT_THROW(st::write_file_atomic((d.path / "dir").string(), bytes("x")), st::FileError);
  EXPECT_EQ(d.entries(), 1u);
}

TEST(Files, ReadRefusesMissingLargeAndSpecialFiles) {
  TempDir d;
  const auto f = (d.path / "big").string();
  st::write_file_atomic(f, std::vector<std::uint8_t>(1000, 1));
  EXPECT_EQ(st::read_file(f, 1000).size(), 1000u);
  EXPECT_THROW(st::read_file(f, 999), st::FileError);
  EXPECT_THROW(st::read_file((d.path / "none").string(), 10), st::FileError);
  EXPECT_THROW(st::read_file(d.path.string(), 10), st::FileError);
}
