#include "api/photo_api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <span>

#include "api/idempotency.h"
#include "api/ids.h"
#include "api/photo_json.h"
#include "api/validation.h"
#include "db/repositories.h"
#include "imaging/imaging.h"
#include "imaging/outscale.h"
#include "request/download.h"
#include "storage/files.h"

namespace petcam::api {

namespace {

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
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

std::vector<const request::Part*> parts_named(const std::vector<request::Part>& parts, std::string_view name) {
  std::vector<const request::Part*> out;
  for (const auto& p : parts)
    if (p.name == name) out.push_back(&p);
  return out;
}

// A stored file's type, from the extension the store gave it.
const char* content_type_of(std::string_view path) {
  const auto ext = path.substr(path.rfind('.') + 1);
  for (const auto f : {imaging::Format::Jpeg, imaging::Format::Png, imaging::Format::Webp, imaging::Format::Heif})
    if (ext == imaging::extension(f)) return imaging::content_type(f);
  return "application/octet-stream";
}

// Strong: the bytes behind an id and type are written once (atomically) and never change, so their size and
// modification time name them; every process sharing the storage computes the same tag.
std::string etag_of(std::uint64_t size, std::int64_t mtime_ns) {
  return fmt::format("\"{:x}-{:x}\"", size, static_cast<std::uint64_t>(mtime_ns));
}

constexpr const char* kAcceptedTypes = "upload a JPEG, PNG, WebP or HEIC photo";

// FastAPI's UploadFile refuses a plain form field where a file is expected.
void require_files(const std::vector<const request::Part*>& files, const char* name) {
  if (files.empty()) throw ApiError({{{"body", name}, "Field required", "missing"}});
  for (const auto* f : files)
    if (!f->filename) throw ApiError({{{"body", name}, "Expected UploadFile, received: <class 'str'>", "value_error"}});
}

}  // namespace

PhotoApi::Coordinates PhotoApi::fields(const std::vector<request::Part>& parts, UploadOptions& options,
                                       std::vector<FieldError>& errors) const {
  Coordinates c;
  for (const auto& p : parts) {
    if (p.filename) continue;
    if (p.name == "lat") {
      if (auto v = float_value(p.data, -90, 90, {"body", "lat"}, errors)) c.lat = *v;
    } else if (p.name == "lng") {
      if (auto v = float_value(p.data, -180, 180, {"body", "lng"}, errors)) c.lng = *v;
    } else if (p.name == "outscale") {
      outscale_value(p.data, options, errors);
    } else if (p.name == "format") {
      format_value(p.data, options, errors);
    }
  }
  return c;
}

PhotoApi::Checked PhotoApi::check_and_decode(const request::Part& file, const std::string& what, bool full_size) const {
  const auto& s = ctx_.settings;
  if (file.data.empty()) throw ApiError(400, what + " is empty: " + kAcceptedTypes);
  if (static_cast<std::int64_t>(file.data.size()) > s.max_upload_bytes)
    throw ApiError(413, fmt::format("{} is too large: {} bytes; the limit is {} bytes per file", what, file.data.size(),
                                    s.max_upload_bytes));
  imaging::Limits limits;
  limits.max_pixels = s.max_image_pixels;
  const auto bytes = bytes_of(file.data);
  Checked c;
  try {
    c.header = imaging::check_header(bytes, limits);
    if (c.header.format == imaging::Format::Jpeg && !imaging::jpeg_is_complete(bytes))
      throw imaging::ImageError("JPEG is truncated: its image data has no end marker");
  } catch (const imaging::ImageTooLarge& e) {
    throw ApiError(413, fmt::format("{} is too large: {}", what, e.what()));
  } catch (const imaging::ImageError& e) {
    throw ApiError(400, fmt::format("{} is not a valid image ({}): {}", what, e.what(), kAcceptedTypes));
  }
  try {
    c.photo = full_size ? imaging::decode(bytes, limits) : imaging::decode_reduced(bytes, limits, s.thumbnail_size);
  } catch (const imaging::ImageError& e) {
    throw ApiError(400, fmt::format("{} cannot be decoded ({}): {}", what, e.what(), kAcceptedTypes));
  }
  return c;
}

void PhotoApi::check_output(const imaging::Header& header, const UploadOptions& options) const {
  const int w = header.oriented_width(), h = header.oriented_height();
  const auto result = imaging::outscaled(w, h, options.outscale);
  const std::int64_t max_pixels = ctx_.settings.max_output_pixels;
  const int side = imaging::max_output_side(*imaging::parse_output_format(options.format));
  if (result.pixels() <= max_pixels && std::max(result.width, result.height) <= side) return;
  const double fits = imaging::largest_outscale(w, h, max_pixels, side);
  const auto limit = fmt::format("the limit is {} pixels (MAX_OUTPUT_PIXELS) and {} px per side for {}", max_pixels,
                                 side, options.format);
  if (fits == 0)
    throw ApiError(
        413, fmt::format("The result of this {}x{} photo would be too large at any outscale above 1: {}", w, h, limit));
  throw ApiError(413, fmt::format("The result would be {}x{} = {} pixels; {}: use outscale {:.2f} or less",
                                  result.width, result.height, result.pixels(), limit, fits));
}

Response PhotoApi::store(const std::string& user_id, const request::Part& file, Checked& upload, Coordinates where,
                         const UploadOptions& options, std::optional<double> score, const std::string* key) {
  auto& photo = upload.photo;
  db::Photo row;
  row.id = new_uuid();
  row.user_id = user_id;
  row.original_path = storage::PhotoStore::original_path(row.id, imaging::extension(upload.header.format));
  row.status = "queued";
  row.latitude = where.lat;
  row.longitude = where.lng;
  row.created_at_ms = now_ms();
  row.score = score;
  row.outscale = options.outscale;
  row.format = options.format;
  row.width = upload.header.oriented_width();
  row.height = upload.header.oriented_height();
  const auto thumbnail_rel = storage::PhotoStore::thumbnail_path(row.id);
  cv::Mat small = imaging::fit_within(photo.rgb, ctx_.settings.thumbnail_size);
  const auto thumbnail = imaging::encode(small, photo.grayscale, imaging::OutputFormat::Jpeg, &photo.meta, 85);
  try {
    ctx_.store.write(row.original_path, bytes_of(file.data));
    ctx_.store.write(thumbnail_rel, thumbnail);
  } catch (const storage::FileError& e) {
    spdlog::error("saving {} failed: {}", row.original_path, e.what());
    ctx_.store.remove(row.original_path);
    ctx_.store.remove(thumbnail_rel);
    throw ApiError(500, "File save failed");
  }
  // The answer is known before the commit, so an Idempotency-Key's record can be finished in the same transaction.
  nlohmann::json body = {{"message", "Upload successful, processing in background"}, {"id", row.id}};
  if (score) body = {{"message", "Best cut selected, processing in background"}, {"id", row.id}, {"score", *score}};
  auto response = json_response(200, body);
  const db::PhotoRepository::Answer answer{key ? *key : std::string(), 200, response.body};
  try {
    db::PhotoRepository(ctx_.db).create_with_job(row, new_uuid(), ctx_.settings.job_max_attempts, row.created_at_ms,
                                                 key ? &answer : nullptr);
  } catch (...) {
    ctx_.store.remove(row.original_path);
    ctx_.store.remove(thumbnail_rel);
    throw;
  }
  if (ctx_.job_queued) ctx_.job_queued();
  return response;
}

Response PhotoApi::once(const std::string& user_id, std::optional<std::string_view> key, std::string_view route,
                        const std::vector<request::Part>& parts,
                        const std::function<Response(const std::string*)>& handle) {
  if (!key) return handle(nullptr);
  if (!valid_idempotency_key(*key))
    throw ApiError({{{"header", "Idempotency-Key"},
                     "Idempotency-Key must be 1 to 255 printable ASCII characters",
                     "string_pattern_mismatch"}});
  const std::string k(*key);
  const auto fingerprint = request_fingerprint(route, parts);
  const auto now = now_ms();
  db::IdempotencyRepository keys(ctx_.db);
  // A key still "in flight" after this long belonged to a process that died before committing anything.
  const auto stale_before = now - 2000ll * std::max(30, ctx_.settings.handle_timeout_s);
  if (const auto seen = keys.claim(user_id, k, fingerprint, ctx_.settings.instance_id, now,
                                   now - kIdempotencyRetentionMs, stale_before)) {
    if (seen->fingerprint != fingerprint)
      throw ApiError(422, "This Idempotency-Key was already used with a different request; use a new key");
    if (!seen->status)
      throw ApiError(409, "A request with this Idempotency-Key is still being handled; retry shortly",
                     {{"Retry-After", "1"}});
    return {*seen->status, "application/json", seen->body, {{"Idempotent-Replayed", "true"}}};
  }
  try {
    return handle(&k);
  } catch (const ApiError& e) {
    // A refusal the client must fix is the answer to this request; a busy or broken server's is not.
    const int status = e.status();
    if (status >= 400 && status < 500 && status != 409 && status != 429) {
      keys.finish(user_id, k, status, e.response().body);
    } else {
      keys.release(user_id, k);
    }
    throw;
  } catch (...) {
    keys.release(user_id, k);
    throw;
  }
}

Response PhotoApi::upscale(const std::string& user_id, const std::vector<request::Part>& parts,
                           std::optional<std::string_view> idempotency_key) {
  return once(user_id, idempotency_key, "upscale", parts, [&](const std::string* key) {
    const auto files = parts_named(parts, "file");
    std::vector<FieldError> errors;
    if (files.empty()) errors.push_back({{"body", "file"}, "Field required", "missing"});
    UploadOptions options;
    const auto where = fields(parts, options, errors);
    if (!errors.empty()) throw ApiError(std::move(errors));
    require_files(files, "file");
    auto upload = check_and_decode(*files.front(), "The file", false);
    check_output(upload.header, options);
    return store(user_id, *files.front(), upload, where, options, std::nullopt, key);
  });
}

Response PhotoApi::bestcut(const std::string& user_id, const std::vector<request::Part>& parts,
                           std::optional<std::string_view> idempotency_key) {
  return once(user_id, idempotency_key, "bestcut", parts, [&](const std::string* key) {
    const auto files = parts_named(parts, "files");
    std::vector<FieldError> errors;
    if (files.empty()) errors.push_back({{"body", "files"}, "Field required", "missing"});
    UploadOptions options;
    const auto where = fields(parts, options, errors);
    if (!errors.empty()) throw ApiError(std::move(errors));
    require_files(files, "files");
    const auto limit = ctx_.settings.max_bestcut_files;
    if (static_cast<int>(files.size()) > limit)
      throw ApiError(400, fmt::format("Too many files: {}; the limit is {} per best cut", files.size(), limit));

    const request::Part* best = nullptr;
    Checked best_upload;
    double best_score = -1;
    for (std::size_t i = 0; i < files.size(); ++i) {
      auto upload =
          check_and_decode(*files[i], fmt::format("File {} ({})", i + 1, files[i]->filename.value_or("")), true);
      const double score = imaging::sharpness(upload.photo.rgb);
      if (score > best_score) best_score = score, best = files[i], best_upload = std::move(upload);
    }
    check_output(best_upload.header, options);
    return store(user_id, *best, best_upload, where, options, best_score, key);
  });
}

Response PhotoApi::list(const std::string& user_id, std::string_view query) {
  const auto [skip, limit] = list_query(query);
  const auto photos = db::PhotoRepository(ctx_.db).list(user_id, skip, limit);
  std::string out;
  out.reserve(64 + photos.size() * 380);
  out += '[';
  for (std::size_t i = 0; i < photos.size(); ++i) {
    if (i) out += ',';
    append_photo(out, photos[i]);
  }
  out += ']';
  return {200, "application/json", std::move(out), {}};
}

Response PhotoApi::info(const std::string& user_id, std::string_view photo_id) {
  const auto id = photo_id_or_422(photo_id);
  const auto photo = db::PhotoRepository(ctx_.db).find(user_id, id);
  if (!photo) throw ApiError(404, "Photo not found");
  std::string out;
  append_photo(out, *photo);
  return {200, "application/json", std::move(out), {}};
}

FileResponse PhotoApi::download(const std::string& user_id, std::string_view photo_id, std::string_view query,
                                const DownloadHeaders& headers) {
  std::vector<FieldError> errors;
  const auto id = canonical_uuid(photo_id);
  if (!id) errors.push_back(bad_photo_id());
  const auto type = download_type(query, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));

  const auto photo = db::PhotoRepository(ctx_.db).find(user_id, *id);
  if (!photo) throw ApiError(404, "Photo not found");
  const auto not_ready = [&](const char* what) {
    return ApiError(404, fmt::format("{} not ready: its status is {}; try type=original", what, photo->status));
  };
  std::string rel;
  switch (type) {
    case DownloadType::Original:
      rel = photo->original_path;
      break;
    case DownloadType::Upscaled:
      if (!photo->upscaled_path) throw not_ready("Upscaled photo");
      rel = *photo->upscaled_path;
      break;
    case DownloadType::Thumbnail:
      rel = storage::PhotoStore::thumbnail_path(*id);
      break;
    case DownloadType::Preview:
      if (!photo->upscaled_path) throw not_ready("Preview");
      rel = storage::PhotoStore::preview_path(*id);
      break;
  }
  const auto path = ctx_.store.absolute(rel);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw ApiError(404, "Photo not found");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto etag = etag_of(size, static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec);

  FileResponse r;
  r.headers = {{"ETag", etag}, {"Cache-Control", "private, max-age=86400"}, {"Accept-Ranges", "bytes"}};
  if (!headers.if_none_match.empty() && request::none_match_hits(headers.if_none_match, etag)) {
    r.status = 304;
    return r;
  }
  const auto range = headers.range.empty() ? request::ByteRange{} : request::parse_range(headers.range, size);
  if (range.kind == request::ByteRange::Kind::Unsatisfiable)
    throw ApiError(416, fmt::format("Range not satisfiable: the file has {} bytes", size),
                   {{"Content-Range", fmt::format("bytes */{}", size)}, {"Accept-Ranges", "bytes"}});
  const auto name = rel.substr(rel.rfind('/') + 1);
  r.headers.insert(r.headers.end(), {{"Content-Type", content_type_of(rel)},
                                     {"X-Content-Type-Options", "nosniff"},
                                     {"Content-Disposition", "inline; filename=\"" + name + "\""}});
  r.path = path;
  r.length = size;
  if (range.kind == request::ByteRange::Kind::Part) {
    r.status = 206;
    r.offset = range.first;
    r.length = range.last - range.first + 1;
    r.headers.emplace_back("Content-Range", fmt::format("bytes {}-{}/{}", range.first, range.last, size));
  }
  return r;
}

Response PhotoApi::remove(const std::string& user_id, std::string_view photo_id) {
  const auto id = photo_id_or_422(photo_id);
  const auto photo = db::PhotoRepository(ctx_.db).remove(user_id, id);
  if (!photo) throw ApiError(404, "Photo not found");
  // The row is gone first: a job still running on it finds no row and removes its own output.
  if (ctx_.photos_deleted) ctx_.photos_deleted({id});
  ctx_.store.remove_photo(id);
  return json_response(200, {{"message", "Deleted successfully"}});
}

}  // namespace petcam::api
