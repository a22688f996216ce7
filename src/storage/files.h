// Whole-file reads with a size cap, and atomic writes (temporary name, fsync, rename).
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace petcam::storage {

class FileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws FileError when missing, unreadable or larger than max_bytes.
std::vector<std::uint8_t> read_file(const std::string& path, std::size_t max_bytes);

// `path` ends up either absent or complete, never half-written; the directory entry is fsynced too.
void write_file_atomic(const std::string& path, std::span<const std::uint8_t> bytes);

}  // namespace petcam::storage
