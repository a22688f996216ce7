#include "api/photo_api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <span>

#include "api/ids.h"
#include "api/validation.h"
#include "db/repositories.h"
#include "imaging/imaging.h"
#include "storage/files.h"

namespace petcam::api {

namespace {

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// JSON numbers for coordinates: the shortest text that reads back the same double, with ".0" kept on
// integral values so clients see floats, as Python's json does.
void append_number(std::string& out, double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc{} || !std::isfinite(v)) {
    out += "0.0";
    return;
  }
  out.append(buf, end);
  if (std::string_view(buf, static_cast<std::size_t>(end - buf)).find_first_of(".eE") == std::string_view::npos)
    out += ".0";
}

FieldError bad_photo_id() {
  return {{"path", "photo_id"},
          "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by "
          "[0-9a-fA-F-]",
          "uuid_parsing"};
}

std::string photo_id_or_422(std::string_view text) {
  if (auto id = canonical_uuid(text)) return *id;
  throw ApiError({bad_photo_id()});
}

std::vector<const http::Part*> parts_named(const std::vector<http::Part>& parts, std::string_view name) {
  std::vector<const http::Part*> out;
  for (const auto& p : parts)
    if (p.name == name) out.push_back(&p);
  return out;
}

// FastAPI's UploadFile refuses a plain form field where a file is expected.
void require_files(const std::vector<const http::Part*>& files, const char* name) {
  if (files.empty()) throw ApiError({{{"body", name}, "Field required", "missing"}});
  for (const auto* f : files)
    if (!f->filename) throw ApiError({{{"body", name}, "Expected UploadFile, received: <class 'str'>", "value_error"}});
}

}  // namespace

PhotoApi::Coordinates PhotoApi::coordinates(const std::vector<http::Part>& parts,
                                            std::vector<FieldError>& errors) const {
  Coordinates c;
  for (const auto& p : parts) {
    if (p.filename) continue;
    if (p.name == "lat") {
      if (auto v = float_value(p.data, -90, 90, {"body", "lat"}, errors)) c.lat = *v;
    } else if (p.name == "lng") {
      if (auto v = float_value(p.data, -180, 180, {"body", "lng"}, errors)) c.lng = *v;
    }
  }
  return c;
}

void PhotoApi::check_file(const http::Part& file, const std::string& what) const {
  const auto& s = ctx_.settings;
  if (file.data.empty()) throw ApiError(400, what + " is empty: upload a JPEG image");
  if (static_cast<std::int64_t>(file.data.size()) > s.max_upload_bytes)
    throw ApiError(413, fmt::format("{} is too large: {} bytes; the limit is {} bytes per file", what, file.data.size(),
                                    s.max_upload_bytes));
  imaging::Limits limits;
  limits.max_pixels = s.max_image_pixels;
  try {
    const auto h = imaging::check_header(bytes_of(file.data), limits);
    if (h.format != imaging::Format::Jpeg) throw imaging::ImageError("it is a PNG");
    if (!imaging::jpeg_is_complete(bytes_of(file.data)))
      throw imaging::ImageError("JPEG is truncated: its image data has no end marker");
  } catch (const imaging::ImageTooLarge& e) {
    throw ApiError(413, fmt::format("{} is too large: {}", what, e.what()));
  } catch (const imaging::ImageError& e) {
    throw ApiError(400, fmt::format("{} is not a valid JPEG image ({}): upload a JPEG photo", what, e.what()));
  }
}

std::string PhotoApi::store(const std::string& user_id, const http::Part& file, Coordinates where,
                            std::optional<double> score) {
  db::Photo photo;
  photo.id = new_uuid();
  photo.user_id = user_id;
  photo.original_path = storage::PhotoStore::original_path(photo.id);
  photo.status = "queued";
  photo.latitude = where.lat;
  photo.longitude = where.lng;
  photo.created_at_ms = now_ms();
  photo.score = score;
  try {
    ctx_.store.write(photo.original_path, bytes_of(file.data));
  } catch (const storage::FileError& e) {
    spdlog::error("saving {} failed: {}", photo.original_path, e.what());
    throw ApiError(500, "File save failed");
  }
  try {
    db::PhotoRepository(ctx_.db).create_with_job(photo, new_uuid(), ctx_.settings.job_max_attempts,
                                                 photo.created_at_ms);
  } catch (...) {
    ctx_.store.remove(photo.original_path);
    throw;
  }
  if (ctx_.job_queued) ctx_.job_queued();
  return photo.id;
}

Response PhotoApi::upscale(const std::string& user_id, const std::vector<http::Part>& parts) {
  const auto files = parts_named(parts, "file");
  std::vector<FieldError> errors;
  if (files.empty()) errors.push_back({{"body", "file"}, "Field required", "missing"});
  const auto where = coordinates(parts, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));
  require_files(files, "file");
  check_file(*files.front(), "The file");
  const auto id = store(user_id, *files.front(), where, std::nullopt);
  return json_response(200, {{"message", "Upload successful, processing in background"}, {"id", id}});
}

Response PhotoApi::bestcut(const std::string& user_id, const std::vector<http::Part>& parts) {
  const auto files = parts_named(parts, "files");
  std::vector<FieldError> errors;
  if (files.empty()) errors.push_back({{"body", "files"}, "Field required", "missing"});
  const auto where = coordinates(parts, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));
  require_files(files, "files");
  const auto limit = ctx_.settings.max_bestcut_files;
  if (static_cast<int>(files.size()) > limit)
    throw ApiError(400, fmt::format("Too many files: {}; the limit is {} per best cut", files.size(), limit));

  imaging::Limits limits;
  limits.max_pixels = ctx_.settings.max_image_pixels;
  const http::Part* best = nullptr;
  double best_score = -1;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto what = fmt::format("File {} ({})", i + 1, files[i]->filename.value_or(""));
    check_file(*files[i], what);
    double score = 0;
    try {
      score = imaging::sharpness(imaging::decode(bytes_of(files[i]->data), limits).rgb);
    } catch (const imaging::ImageError& e) {
      throw ApiError(400, fmt::format("{} is not a valid JPEG image ({}): upload a JPEG photo", what, e.what()));
    }
    if (score > best_score) best_score = score, best = files[i];
  }
  const auto id = store(user_id, *best, where, best_score);
  nlohmann::json body = {{"message", "Best cut selected, processing in background"}, {"id", id}, {"score", best_score}};
  return json_response(200, body);
}

Response PhotoApi::list(const std::string& user_id, std::string_view query) {
  const auto [skip, limit] = list_query(query);
  const auto photos = db::PhotoRepository(ctx_.db).list(user_id, skip, limit);
  // Written by hand: this is the hottest JSON we produce, and every string in it is ours (UUIDs, our
  // paths, fixed status words), so nothing needs escaping.
  std::string out;
  out.reserve(64 + photos.size() * 280);
  out += '[';
  for (std::size_t i = 0; i < photos.size(); ++i) {
    const auto& p = photos[i];
    out += i ? ",{\"id\":\"" : "{\"id\":\"";
    out += p.id;
    out += "\",\"original_path\":\"";
    out += p.original_path;
    out += "\",\"upscaled_path\":";
    if (p.upscaled_path) {
      out += '"';
      out += *p.upscaled_path;
      out += '"';
    } else {
      out += "null";
    }
    out += ",\"status\":\"";
    out += p.status;
    out += "\",\"latitude\":";
    append_number(out, p.latitude);
    out += ",\"longitude\":";
    append_number(out, p.longitude);
    out += ",\"created_at\":\"";
    out += iso8601_utc(p.created_at_ms);
    out += "\"}";
  }
  out += ']';
  return {200, "application/json", std::move(out), {}};
}

FileResponse PhotoApi::download(const std::string& user_id, std::string_view photo_id, std::string_view query) {
  std::vector<FieldError> errors;
  const auto id = canonical_uuid(photo_id);
  if (!id) errors.push_back(bad_photo_id());
  const bool original = wants_original(query, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));

  const auto photo = db::PhotoRepository(ctx_.db).find(user_id, *id);
  if (!photo) throw ApiError(404, "Photo not found");
  std::string rel = photo->original_path;
  if (!original) {
    if (!photo->upscaled_path)
      throw ApiError(404, "Upscaled photo not ready: its status is " + photo->status + "; try type=original");
    rel = *photo->upscaled_path;
  }
  const auto path = ctx_.store.absolute(rel);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw ApiError(404, "Photo not found");
  return {path,
          {{"Content-Type", "image/jpeg"},
           {"X-Content-Type-Options", "nosniff"},
           {"Content-Disposition", "inline; filename=\"" + *id + ".jpg\""}}};
}

Response PhotoApi::remove(const std::string& user_id, std::string_view photo_id) {
  const auto id = photo_id_or_422(photo_id);
  const auto photo = db::PhotoRepository(ctx_.db).remove(user_id, id);
  if (!photo) throw ApiError(404, "Photo not found");
  // The row is gone first: a job still running on it finds no row and removes its own output.
  ctx_.store.remove(photo->original_path);
  ctx_.store.remove(storage::PhotoStore::upscaled_path(id));
  return json_response(200, {{"message", "Deleted successfully"}});
}

}  // namespace petcam::api
