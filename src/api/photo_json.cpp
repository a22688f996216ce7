#include "api/photo_json.h"

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "api/ids.h"

namespace petcam::api {

namespace {

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

}  // namespace

// Written by hand: the list is the hottest JSON we produce, and every string in it but `error` is ours (UUIDs,
// our paths, fixed words), so only that one needs escaping.
void append_photo(std::string& out, const db::Photo& p) {
  const auto optional_int = [&](const std::optional<int>& v) {
    if (v)
      out += std::to_string(*v);
    else
      out += "null";
  };
  out += "{\"id\":\"";
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
  out += "\",\"outscale\":";
  append_number(out, p.outscale);
  out += ",\"format\":\"";
  out += p.format;
  out += "\",\"width\":";
  optional_int(p.width);
  out += ",\"height\":";
  optional_int(p.height);
  out += ",\"upscaled_width\":";
  optional_int(p.upscaled_width);
  out += ",\"upscaled_height\":";
  optional_int(p.upscaled_height);
  out += ",\"progress\":";
  append_number(out, p.progress);
  out += ",\"error\":";
  out += p.error ? nlohmann::json(*p.error).dump() : std::string("null");
  const auto optional_time = [&](const char* name, const std::optional<std::int64_t>& ms) {
    out += name;
    if (ms) {
      out += '"';
      out += iso8601_utc(*ms);
      out += '"';
    } else {
      out += "null";
    }
  };
  optional_time(",\"started_at\":", p.started_at_ms);
  optional_time(",\"completed_at\":", p.completed_at_ms);
  out += '}';
}

}  // namespace petcam::api
