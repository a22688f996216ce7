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

  // Removes files whose photo `known(id)` does not recognise, and stale temporaries, if they are at least
  // `min_age_s` old (another process may be between writing a file and committing its row). Returns how
  // many were removed. Run at start, before the job workers.
  template <typename Known>
  int sweep(Known&& known, int min_age_s) const;

  const std::string& dir() const { return dir_; }

 private:
  std::vector<std::string> list_files(int min_age_s) const;  // relative paths of files at least that old
  std::string dir_;
};

template <typename Known>
int PhotoStore::sweep(Known&& known, int min_age_s) const {
  int removed = 0;
  for (const auto& rel : list_files(min_age_s)) {
    const auto name = rel.substr(rel.rfind('/') + 1);
    const bool temp = name.find(".tmp") != std::string::npos;
    if ((temp || !known(name.substr(0, name.find('.')))) && remove(rel)) ++removed;
  }
  return removed;
}

}  // namespace petcam::storage
