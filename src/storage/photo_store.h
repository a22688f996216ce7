// Where photos live: <storage_dir>/originals/<id>.<ext> (the upload, byte for byte),
// <storage_dir>/upscaled/<id>.<ext> (the result) and <storage_dir>/previews/<id>.thumbnail.jpg and
// <id>.preview.jpg. Paths given to clients and kept in the database are relative, as the original server's
// were: storage/originals/<id>.jpg.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace petcam::storage {

class PhotoStore {
 public:
  explicit PhotoStore(std::string storage_dir);  // creates the folders

  // `ext` without its dot: "jpg", "png", "webp", "heic".
  static std::string original_path(const std::string& id, std::string_view ext = "jpg");
  static std::string upscaled_path(const std::string& id, std::string_view ext = "jpg");
  static std::string thumbnail_path(const std::string& id);  // "storage/previews/<id>.thumbnail.jpg"
  static std::string preview_path(const std::string& id);    // "storage/previews/<id>.preview.jpg"
  // The file behind a relative path; throws FileError for a path outside the store.
  std::string absolute(const std::string& relative) const;

  void write(const std::string& relative, std::span<const std::uint8_t> bytes) const;  // atomic
  std::vector<std::uint8_t> read(const std::string& relative, std::size_t max_bytes) const;
  // Removes the file if present; true when nothing is left.
  bool remove(const std::string& relative) const noexcept;
  // Removes every file of the photo: original, result (whatever their types) and previews.
  void remove_photo(const std::string& id) const noexcept;

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
