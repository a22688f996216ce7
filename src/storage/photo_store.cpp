#include "storage/photo_store.h"

#include <chrono>
#include <filesystem>

#include "storage/files.h"

namespace petcam::storage {

namespace fs = std::filesystem;

namespace {
constexpr std::string_view kPrefix = "storage/";
constexpr const char* kFolders[] = {"originals", "upscaled", "previews"};
// Every extension an original or a result can have.
constexpr const char* kExtensions[] = {"jpg", "png", "webp", "heic"};
}  // namespace

PhotoStore::PhotoStore(std::string storage_dir) : dir_(std::move(storage_dir)) {
  std::error_code ec;
  for (const char* sub : kFolders) {
    fs::create_directories(fs::path(dir_) / sub, ec);
    if (ec) throw FileError("cannot create " + (fs::path(dir_) / sub).string() + ": " + ec.message());
  }
}

std::string PhotoStore::original_path(const std::string& id, std::string_view ext) {
  return std::string(kPrefix) + "originals/" + id + "." + std::string(ext);
}
std::string PhotoStore::upscaled_path(const std::string& id, std::string_view ext) {
  return std::string(kPrefix) + "upscaled/" + id + "." + std::string(ext);
}
std::string PhotoStore::thumbnail_path(const std::string& id) {
  return std::string(kPrefix) + "previews/" + id + ".thumbnail.jpg";
}
std::string PhotoStore::preview_path(const std::string& id) {
  return std::string(kPrefix) + "previews/" + id + ".preview.jpg";
}

std::string PhotoStore::absolute(const std::string& relative) const {
  const std::string_view rel(relative);
  if (rel.substr(0, kPrefix.size()) != kPrefix || rel.find("..") != std::string_view::npos)
    throw FileError("not a path in the photo store: " + relative);
  return (fs::path(dir_) / rel.substr(kPrefix.size())).string();
}

void PhotoStore::write(const std::string& relative, std::span<const std::uint8_t> bytes) const {
  write_file_atomic(absolute(relative), bytes);
}

std::vector<std::uint8_t> PhotoStore::read(const std::string& relative, std::size_t max_bytes) const {
  return read_file(absolute(relative), max_bytes);
}

bool PhotoStore::remove(const std::string& relative) const noexcept {
  try {
    std::error_code ec;
    fs::remove(absolute(relative), ec);
    return !ec;
  } catch (...) {
    return false;
  }
}

void PhotoStore::remove_photo(const std::string& id) const noexcept {
  for (const char* ext : kExtensions) {
    remove(original_path(id, ext));
    remove(upscaled_path(id, ext));
  }
  remove(thumbnail_path(id));
  remove(preview_path(id));
}

std::vector<std::string> PhotoStore::list_files(int min_age_s) const {
  std::vector<std::string> out;
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::seconds(min_age_s);
  for (const char* sub : kFolders) {
    std::error_code ec;
    for (fs::directory_iterator it(fs::path(dir_) / sub, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code ec2;
      if (!it->is_regular_file(ec2) || it->last_write_time(ec2) > cutoff || ec2) continue;
      out.push_back(std::string(kPrefix) + sub + "/" + it->path().filename().string());
    }
  }
  return out;
}

}  // namespace petcam::storage
