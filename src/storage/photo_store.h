// Where photos live: <storage_dir>/originals/<id>.jpg and <storage_dir>/upscaled/<id>.jpg. Paths given
// to clients and kept in the database are relative, as the original server's were:
// storage/originals/<id>.jpg.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace petcam::storage {

class PhotoStore {
 public:
  explicit PhotoStore(std::string storage_dir);  // creates the folders

  static std::string original_path(const std::string& id);  // "storage/originals/<id>.jpg"
  static std::string upscaled_path(const std::string& id);  // "storage/upscaled/<id>.jpg"
  // The file behind a relative path; throws FileError for a path outside the store.
  std::string absolute(const std::string& relative) const;

  void write(const std::string& relative, std::span<const std::uint8_t> bytes) const;  // atomic
  std::vector<std::uint8_t> read(const std::string& relative, std::size_t max_bytes) const;
  // Removes the file if present; true when nothing is left.
  bool remove(const std::string& relative) const noexcept;

  // Files whose photo id `known(id)` does not recognise, and stale temporaries; returns how many were
  // removed. For the start of a single-process server, after recovery.
  template <typename Known>
  int sweep(Known&& known) const;

  const std::string& dir() const { return dir_; }

 private:
  std::vector<std::string> list_files() const;  // relative paths of every file in the store
  std::string dir_;
};

template <typename Known>
int PhotoStore::sweep(Known&& known) const {
  int removed = 0;
  for (const auto& rel : list_files()) {
    const auto slash = rel.rfind('/');
    const auto name = rel.substr(slash + 1);
    const bool temp = name.find(".tmp") != std::string::npos;
    const auto id = name.substr(0, name.find('.'));
    if ((temp || !known(id, rel)) && remove(rel)) ++removed;
  }
  return removed;
}

}  // namespace petcam::storage
